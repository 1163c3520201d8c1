"""Baseline methods: selection logic on constructed inputs, and the shared integration matrix."""

from __future__ import annotations


import pytest
import torch

import sharpv
from sharpv.core.baselines import (
    budget_total,
    dycoke_keep,
    evs_keep,
    pool_features,
    pooling_keep,
    pooling_windows,
    random_keep,
    vidcom2_keep,
)
from sharpv.layer_pruning import AttentionPolicy, LayerView, PruningReport, last_token_attention
from sharpv.methods import METHODS, PruningMethod, create

from conftest import Family
from reference import run_layers, stage1_by_hand, with_encoder_attention
from sharpv.compat import output_cache

PRE_LLM = ["random", "pooling", "evs", "dycoke", "vidcom2", "divprune", "visionzip", "fastvid", "flashvid", "holitom"]


def test_registry_lists_every_method_with_a_docstring_and_config():
    assert list(METHODS) == ["dense", "sharpv", "random", "pooling", "evs", "dycoke", "vidcom2", "divprune", "visionzip",
                             "fastvid", "flashvid", "holitom", "vtw", "fastv", "pyramiddrop"]
    for name, cls in METHODS.items():
        assert cls.name == name and len((cls.__doc__ or "").split()) > 15
        assert create(name).config.to_dict()["positions"] == "original"
    assert create("fastv", keep_ratio=0.5).config.keep_ratio == 0.5
    with pytest.raises(sharpv.SharpVError, match="registered methods"):
        create("magic")
    with pytest.raises(ValueError, match="keep_ratio"):
        create("evs", keep_ratio=0.0)
    with pytest.raises(ValueError, match="keep_ratio does not apply to dense"):
        create("dense", keep_ratio=0.5)


# --- budgets: every pre-LLM method keeps exactly budget_total, never zero tokens ---------------

#: (T, f, d, (h, w)) grids, h * w = f (pooling needs the frame's grid)
GRIDS = [(1, 1, 1, (1, 1)), (1, 4, 3, (2, 2)), (3, 6, 2, (2, 3)), (8, 16, 4, (4, 4)), (5, 9, 8, (3, 3))]


def _pre_llm_variants():
    """Every registered method that selects before the LLM, with its budget-relevant variants."""
    names = [name for name, cls in METHODS.items() if cls.select_visual is not PruningMethod.select_visual]
    assert names == ["sharpv", "random", "pooling", "evs", "dycoke", "vidcom2", "divprune", "visionzip", "fastvid",
                     "flashvid", "holitom"]  # a new method joins the test
    extra = {"sharpv": [{"min_tokens_per_frame": 0}, {"min_tokens_per_frame": 3}], "random": [{"counts": "sharpv"}],
             "vidcom2": [{"min_tokens_per_frame": 0}]}
    return [(name, settings) for name in names for settings in [{}] + extra.get(name, [])]


@pytest.mark.parametrize("name,settings", _pre_llm_variants())
def test_every_pre_llm_method_keeps_the_exact_budget_and_never_zero_tokens(name, settings):
    for t, f, d, spatial in GRIDS:
        grid = torch.randn(t, f, d, generator=torch.Generator().manual_seed(t * 31 + f))
        for ratio in (0.001, 1e-6, 0.05, 0.3, 0.77, 1.0):
            keep = create(name, keep_ratio=ratio, **settings).select_visual(grid, spatial).keep
            assert keep.shape == (t, f) and keep.dtype == torch.bool
            want = budget_total(ratio, t, f)
            assert want == max(1, round(ratio * t * f))
            assert int(keep.sum()) == want >= 1, (name, settings, t, f, ratio)


@pytest.mark.parametrize("name", ["sharpv", "pooling", "evs"])
def test_a_tiny_budget_keeps_one_token_end_to_end(family, name):
    """keep_ratio=0.001 leaves one visual token of the video (the floor) and the model still runs,
    equal to the hand-pruned reference."""
    inputs = family.inputs()
    method = create(name, keep_ratio=0.001, **({"kv": False} if name == "sharpv" else {}))
    red = stage1_by_hand(family, inputs, with_encoder_attention(family, inputs, method))
    assert int(red.keep.sum()) == 1
    ref, _, _ = run_layers(family, red, [], None)
    with method(family.model) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
        gen = family.model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    assert handle.stats.visual_tokens_kept == 1
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-4)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 2


def test_random_is_seeded_and_reproducible():
    a = random_keep(6, 10, torch.Generator().manual_seed(3), total=17)
    b = random_keep(6, 10, torch.Generator().manual_seed(3), total=17)
    c = random_keep(6, 10, torch.Generator().manual_seed(4), total=17)
    assert torch.equal(a, b) and not torch.equal(a, c) and int(a.sum()) == 17
    per_frame = random_keep(3, 10, torch.Generator().manual_seed(0), counts=[1, 5, 10])
    assert per_frame.sum(1).tolist() == [1, 5, 10]
    grid = torch.randn(4, 9, 8)
    m1, m2 = create("random", keep_ratio=0.3, seed=7), create("random", keep_ratio=0.3, seed=7)
    assert torch.equal(m1.select_visual(grid, (3, 3)).keep, m2.select_visual(grid, (3, 3)).keep)
    sharpv_counts = sharpv.core.select_tokens(grid).counts
    ablation = create("random", keep_ratio=None, counts="sharpv").select_visual(grid, (3, 3)).keep
    assert torch.equal(ablation.sum(1), sharpv_counts)


def test_pooling_returns_the_grid_means():
    x = torch.arange(2 * 16 * 3, dtype=torch.float32).view(2, 16, 3)
    keep, assign = pooling_keep(2, 4, 4, total=8)  # 4 windows of 2 x 2 per frame
    assert keep.sum(1).tolist() == [4, 4]
    pooled = pool_features(x, assign)
    grid = x.view(2, 4, 4, 3)
    for t in range(2):
        means = grid[t].unfold(0, 2, 2).unfold(1, 2, 2).mean((-1, -2)).reshape(4, 3)
        assert torch.allclose(pooled[t][keep[t]], means)
    for k in range(1, 197):
        assert pooling_windows(14, 14, k).unique().numel() == k


def test_evs_drops_exact_repeats_first_and_keeps_frame_one_whole():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 5, generator=g)
    x[2] = x[1]  # frame 3 repeats frame 2 exactly
    x[3, :3] = x[2, :3]  # half of frame 4 repeats too
    keep = evs_keep(x, total=6 + 6 + 3)
    assert keep[0].all() and keep[1].all() and keep[3, 3:].all()
    assert not keep[2].any() and not keep[3, :3].any()


def test_dycoke_keeps_the_first_frame_of_each_window_whole():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 8, 4, generator=g)
    keep = dycoke_keep(x, total=budget_total(0.5, 9, 8))
    assert int(keep.sum()) == 36
    assert keep[0].all() and keep[4].all() and keep[8].all()
    later = keep[[1, 2, 3, 5, 6, 7]].sum(1)
    assert later.max() - later.min() <= 1
    # a later token identical to its window's first frame goes before any that changed
    x[2, 5] = x[0, 5]
    keep = dycoke_keep(x, total=24 + 6 * 7)
    assert not keep[2, 5] and int(keep[2].sum()) == 7


def test_vidcom2_gives_unique_frames_larger_budgets():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(1, 20, 16, generator=g)
    x = base.repeat(6, 1, 1) + 0.01 * torch.randn(6, 20, 16, generator=g)
    x[4] = torch.randn(20, 16, generator=g)
    keep = vidcom2_keep(x, total=30)
    assert int(keep.sum()) == 30
    assert keep.sum(1)[4] == keep.sum(1).max() and keep.sum(1)[4] > keep.sum(1)[0]


def test_fastv_scores_equal_the_models_own_attention(tiny_dirs):
    """The scores FastV computes from q and k equal eager attention's probabilities."""
    fam = Family("qwen2.5-vl", tiny_dirs["qwen2.5-vl"], attn="eager")
    red = stage1_by_hand(fam, fam.inputs(), create("dense"))
    lm = fam.model.model.language_model
    with torch.no_grad():
        out = lm(inputs_embeds=red.embeds, position_ids=red.positions, output_attentions=True)
        want = out.attentions[1][:, :, -1, :].mean(1)
        captured = {}

        def grab(module, args, kwargs):
            captured["got"] = last_token_attention(module, args[0] if args else kwargs["hidden_states"],
                                                   kwargs["position_embeddings"], torch.ones_like(red.ids, dtype=torch.bool))

        handle = lm.layers[1].self_attn.register_forward_pre_hook(grab, with_kwargs=True)
        lm(inputs_embeds=red.embeds, position_ids=red.positions)
        handle.remove()
    torch.testing.assert_close(captured["got"], want, atol=1e-5, rtol=1e-4)


def test_fastv_keeps_the_most_attended_tokens():
    policy = AttentionPolicy(layer=2, keep_ratio=0.5)
    policy.start(PruningReport("withdraw"))
    visual = torch.tensor([[False, True, True, True, True, False]])
    policy._scores = torch.tensor([[0.3, 0.05, 0.4, 0.01, 0.2, 0.04]])
    drop = policy.drop(LayerView(2, torch.zeros(1, 6, 4), torch.zeros(1, 6, 4), visual, torch.ones_like(visual)))
    assert drop.tolist() == [[False, True, False, True, False, False]]


# --- the integration matrix: every method, every family ------------------------------------


@pytest.mark.parametrize("name", PRE_LLM + ["dense"])
def test_pre_llm_method_prefill_equals_reference_and_budget_is_exact(family, name):
    inputs = family.inputs()
    method = create(name) if name == "dense" else create(name, keep_ratio=0.3)
    red = stage1_by_hand(family, inputs, with_encoder_attention(family, inputs, method))
    ref, _, _ = run_layers(family, red, [], None)
    with method(family.model) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
        gen = family.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    stats = handle.stats
    expected = stats.visual_tokens_in if name == "dense" else budget_total(0.3, stats.frames, stats.tokens_per_frame)
    assert stats.visual_tokens_kept == expected == int(red.keep.sum())
    assert stats.method == name
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-4)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 4


@pytest.mark.parametrize("name", PRE_LLM)
def test_pre_llm_method_generate_equals_teacher_forced_reference(family, name):
    inputs = family.inputs()
    method = create(name, keep_ratio=0.4, positions="compact" if name == "pooling" else "original")
    with method(family.model), torch.no_grad():
        out = family.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    red = stage1_by_hand(family, inputs, with_encoder_attention(family, inputs, method))
    ref, _, _ = run_layers(family, red, tokens[:-1], None)
    n = red.ids.shape[1]
    for step, got in enumerate(out.logits):
        torch.testing.assert_close(got[0], ref[0, n - 1 + step], atol=1e-5, rtol=1e-4)


def test_vtw_withdraws_every_visual_token_at_layer_k(family):
    inputs = family.inputs()
    method = create("vtw", layer=2)
    red = stage1_by_hand(family, inputs, create("dense"))
    ref, _, keep_rows = run_layers(family, red, [], None, slice_at=2)
    with method(family.model) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
        out = family.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-4)
    n, n_vis = red.ids.shape[1], int(red.visual.sum())
    assert handle.stats.kv_withdraw_layer == 2
    assert [layer.keys.shape[-2] for layer in output_cache(out).layers] == [n + 2, n + 2, n - n_vis + 2, n - n_vis + 2]
    layers = family.model.config.get_text_config().num_hidden_layers
    assert create("vtw", keep_ratio=0.75).resolve_layer(layers) == 3


@pytest.mark.parametrize("ratio", [0.3, 0.001])
def test_fastv_keeps_its_budget_and_matches_a_reference_from_eager_attention(family, tiny_dirs, ratio):
    inputs = family.inputs()
    method = create("fastv", keep_ratio=ratio, layer=2)
    eager = Family(family.arch, tiny_dirs[family.arch], attn="eager")
    red = stage1_by_hand(family, inputs, create("dense"))
    with torch.no_grad():
        lm = eager.model.model.language_model
        extra = {}
        if red.deepstack is not None:
            extra = dict(visual_pos_masks=red.visual[None], deepstack_visual_embeds=red.deepstack)
        att = lm(inputs_embeds=red.embeds, position_ids=red.positions, output_attentions=True, **extra).attentions
        scores = att[1][0, :, -1, :].mean(0)
    vis = red.visual.nonzero().squeeze(1)
    n_keep = budget_total(ratio, 1, vis.numel())
    assert n_keep >= 1  # the floor: a row never loses every visual token
    kept = vis[torch.sort(scores[vis], descending=True, stable=True).indices[:n_keep]]
    dropped = red.visual.clone()
    dropped[kept] = False
    ref, _, _ = run_layers(family, red, [], None, slice_at=2, slice_rows=dropped)
    with method(family.model) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
        out = family.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-4)
    n = red.ids.shape[1]
    lengths = [layer.keys.shape[-2] for layer in output_cache(out).layers]
    assert lengths == [n + 2, n + 2, n - vis.numel() + n_keep + 2, n - vis.numel() + n_keep + 2]
    assert handle.stats.extra_seconds > 0


def _hooks(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("name", [n for n in METHODS if n != "dense"])
def test_methods_are_reversible(family, name):
    inputs = family.inputs()
    hooks = _hooks(family.model)
    with torch.no_grad():
        before = family.model(**inputs).logits
        with create(name, keep_ratio=0.3)(family.model):
            assert _hooks(family.model) > hooks
            family.model(**inputs)
        after = family.model(**inputs).logits
    assert torch.equal(before, after) and _hooks(family.model) == hooks
