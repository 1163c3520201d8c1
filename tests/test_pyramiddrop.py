"""PyramidDrop (multi-stage attention ranking), per-layer visual token counts ("equivalent
retention") and the stage-1 keep masks in the stats."""

from __future__ import annotations

import json

import pytest
import torch

import sharpv
from sharpv.layer_pruning import AttentionPolicy, LayerView, PruningReport
from sharpv.methods import create
from sharpv.methods.pyramiddrop import PyramidDrop, PyramidDropConfig
from sharpv.stats import PruningStats, VideoStats

from conftest import Family
from reference import is_qwen, run_ranked, stage1_by_hand
from sharpv.compat import output_cache

N_LAYERS = 4  # the tiny models' depth


_EAGER: dict[str, Family] = {}


def _eager(family, tiny_dirs):
    """The family's model loaded again with eager attention (same weights), once per session."""
    if family.arch not in _EAGER:
        _EAGER[family.arch] = Family(family.arch, tiny_dirs[family.arch], attn="eager")
    return _EAGER[family.arch]


def _floor(family) -> int:
    return 2 if family.arch == "qwen3-vl" else 1  # Qwen3-VL: after its two deepstack layers


def _grid_columns(family, red) -> torch.Tensor:
    """The prompt columns of the video's T x f grid (LLaVA-OneVision's newline token after the
    grid is a video placeholder but not part of the grid)."""
    grid = red.visual.clone()
    if not is_qwen(family):
        grid[red.visual.nonzero().max()] = False
    return grid


def _by_hand_counts(ratio: float, stages: int, n: int) -> list[int]:
    return [max(1, round(ratio ** (s / stages) * n)) for s in range(1, stages + 1)]


# --- settings and budgets --------------------------------------------------------------------


def test_config_and_docstring():
    assert PyramidDrop.name == "pyramiddrop"
    doc = PyramidDrop.__doc__
    assert "PyramidDrop" in doc and "CVPR 2025" in doc and "extra_seconds" in doc and "official" in doc
    cfg = PyramidDropConfig()
    assert cfg.layers is None and cfg.keep_ratio == 0.3 and cfg.positions == "original"
    assert PyramidDrop(layers=[1, 3]).config.layers == (1, 3)
    json.dumps(PyramidDrop(layers=[1, 3]).config.to_dict())
    for bad in [(), (0, 2), (2, 2), (3, 1), 2, (1.5,)]:
        with pytest.raises(ValueError):
            PyramidDropConfig(layers=bad)
    with pytest.raises(ValueError, match="keep_ratio"):
        PyramidDropConfig(keep_ratio=0.0)


def test_stage_layers_resolve_to_the_quarter_points_within_the_models_limits():
    method = PyramidDrop()
    assert method.resolve_layers(32) == (8, 16, 24)
    assert method.resolve_layers(28) == (7, 14, 21)
    assert method.resolve_layers(24) == (6, 12, 18)
    assert method.resolve_layers(4) == (1, 2, 3)
    assert method.resolve_layers(4, floor=2) == (2, 3)  # Qwen3-VL's deepstack layers come first
    assert method.resolve_layers(36, floor=3) == (9, 18, 27)
    assert method.resolve_layers(3, floor=2) == (2,)
    assert PyramidDrop(layers=(2, 5)).resolve_layers(32, floor=3) == (2, 5)  # configured: as given
    # lambda = keep_ratio ** (1 / boundaries): keep_ratio is what is left after the last one
    shares = PyramidDrop(keep_ratio=0.125).stage_shares(32)
    assert shares == pytest.approx((0.5, 0.25, 0.125))
    assert PyramidDrop(keep_ratio=0.25).stage_shares(4, floor=2) == pytest.approx((0.5, 0.25))


def test_the_applied_policy_uses_the_resolved_layers_and_exact_shares(family):
    from sharpv.adapters import adapter_for

    policy, mode = PyramidDrop(keep_ratio=0.3).layer_policy(adapter_for(family.model))
    assert mode == "withdraw" and isinstance(policy, AttentionPolicy)
    assert policy.layers == ((2, 3) if family.arch == "qwen3-vl" else (1, 2, 3))
    assert policy.shares[-1] == 0.3
    assert policy.shares == pytest.approx(tuple(0.3 ** (s / len(policy.layers)) for s in range(1, len(policy.layers) + 1)))


def test_layers_the_model_refuses_are_refused(family):
    with pytest.raises(sharpv.SharpVError, match="does not exist"):
        PyramidDrop(layers=(2, N_LAYERS))(family.model)
    if family.arch == "qwen3-vl":
        with pytest.raises(sharpv.SharpVError, match="cannot leave before layer 2"):
            PyramidDrop(layers=(1, 2))(family.model)


@pytest.mark.parametrize("ratio", [0.3, 0.125, 0.01, 1e-6, 1.0])
@pytest.mark.parametrize("n", [1, 7, 100, 6273])
def test_per_stage_counts_are_exact_and_never_zero(ratio, n):
    for stages in (1, 2, 3):
        shares = tuple(ratio ** (s / stages) for s in range(1, stages + 1))
        policy = AttentionPolicy(tuple(range(1, stages + 1)), shares)
        counts = policy.keep_counts(n)
        assert counts == [min(n, c) for c in _by_hand_counts(ratio, stages, n)]
        assert all(c >= 1 for c in counts) and counts == sorted(counts, reverse=True)
    assert AttentionPolicy(2, ratio).keep_counts(n)[-1] == max(1, round(ratio * n))


def _view(index, visual, valid=None):
    visual = torch.tensor(visual)
    return LayerView(index, torch.zeros(*visual.shape, 4), torch.zeros(*visual.shape, 4), visual,
                     torch.ones_like(visual) if valid is None else torch.tensor(valid))


def test_multi_stage_ranking_keeps_the_tokens_each_stage_ranks_highest():
    """Two boundaries, shares 1/2 and 1/4 of 8 visual tokens: 4 then 2 stay. The second stage
    ranks with its own (new) scores over the 4 survivors only: the token the first stage liked
    best is dropped at the second, and a dropped token's high second-stage score does not matter."""
    policy = AttentionPolicy((1, 3), (0.5, 0.25))
    policy.start(PruningReport("withdraw"))
    # columns: text, 8 visual, text
    vis = [[False] + [True] * 8 + [False]]
    assert policy.drop(_view(0, vis)) is None  # layer 0: the row's visual count is recorded
    policy._scores = torch.tensor([[0.2, 0.30, 0.01, 0.10, 0.02, 0.09, 0.03, 0.20, 0.04, 0.0]])
    drop = policy.drop(_view(1, vis))
    kept = [c for c in range(1, 9) if not drop[0, c]]
    assert kept == [1, 3, 5, 7] and not drop[0, 0] and not drop[0, 9]
    # layer 3 sees the shrunk sequence: text, the 4 survivors (columns 1, 3, 5, 7), text
    vis2 = [[False, True, True, True, True, False]]
    assert policy.drop(_view(2, vis2)) is None  # not a boundary
    policy._scores = torch.tensor([[0.1, 0.01, 0.3, 0.2, 0.05, 0.3]])
    drop = policy.drop(_view(3, vis2))
    assert drop.tolist() == [[False, True, False, False, True, False]]  # columns 3 and 5 stay


def test_stage_counts_come_from_the_entering_count_not_from_compounded_rounding():
    """keep_ratio 0.2 over 3 stages on 10 tokens: round(10 * 0.2 ** (s / 3)) = 6, 3, 2, where
    rounding each stage's share of the survivors would give 6, 4, 2."""
    shares = tuple(0.2 ** (s / 3) for s in (1, 2, 3))
    policy = AttentionPolicy((1, 2, 3), shares)
    policy.start(PruningReport("withdraw"))
    n = 10
    policy.drop(_view(0, [[True] * n + [False]]))
    present = n
    for layer, want in zip((1, 2, 3), (6, 3, 2)):
        policy._scores = torch.rand(1, present + 1)
        drop = policy.drop(_view(layer, [[True] * present + [False]]))
        present -= int(drop.sum())
        assert present == want


def test_multi_stage_counts_are_per_row_relative_to_the_tokens_entering_the_llm():
    policy = AttentionPolicy((1, 2), (0.5, 0.25))
    policy.start(PruningReport("withdraw"))
    vis = [[True] * 8 + [False], [False] * 5 + [True] * 4]
    policy.drop(_view(0, vis))
    policy._scores = torch.arange(18, dtype=torch.float32).view(2, 9)
    d1 = policy.drop(_view(1, vis))
    assert d1.sum(1).tolist() == [4, 2]  # keep 4 of 8 and 2 of 4: the highest scores (later columns)
    assert d1[0, :4].all() and not d1[0, 4:].any() and d1[1, 5:7].all()
    vis2 = [[True] * 4 + [False], [False] * 3 + [True] * 2]
    policy._scores = torch.tensor([[5.0, 1, 4, 2, 0], [0, 0, 0, 1.0, 2]])
    d2 = policy.drop(_view(2, vis2))
    assert d2.tolist() == [[False, True, False, True, False], [False, False, False, True, False]]


# --- end to end: equal to a hand-computed reference on every family ----------------------------


@pytest.mark.parametrize("ratio", [0.3, 0.001])
def test_pyramiddrop_equals_a_reference_ranked_from_eager_attention(family, tiny_dirs, ratio):
    inputs = family.inputs()
    method = PyramidDrop(keep_ratio=ratio)
    layers = [2, 3] if family.arch == "qwen3-vl" else [1, 2, 3]
    red = stage1_by_hand(family, inputs, create("dense"))
    n, n_vis = red.ids.shape[1], int(red.visual.sum())
    counts = _by_hand_counts(ratio, len(layers), n_vis)
    eager = _eager(family, tiny_dirs)
    ref, computed = run_ranked(family, eager, red, [], layers, counts)
    with method(family.model) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
        out = family.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-4)
    # the cache: every stage holds exactly its count of visual tokens
    stage_of = [sum(1 for k in layers if k <= layer) for layer in range(N_LAYERS)]
    want = [n - n_vis + ([n_vis] + counts)[s] + 2 for s in stage_of]
    assert [layer.keys.shape[-2] for layer in output_cache(out).layers] == want
    stats = handle.stats
    assert stats.kv_withdraw_layer == layers[0] and stats.extra_seconds > 0 and stats.method == "pyramiddrop"
    # generated tokens: teacher-forced reference (the ranking is the prompt's, so the same tokens go)
    tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    ref_gen, _ = run_ranked(family, eager, red, tokens[:-1], layers, counts)
    last_prompt_row = ref_gen.shape[1] - len(tokens)
    for step, got in enumerate(out.logits):
        torch.testing.assert_close(got[0], ref_gen[0, last_prompt_row + step], atol=1e-5, rtol=1e-4)
    # per-layer counts: the grid tokens the reference computes at every layer
    grid = _grid_columns(family, red)
    assert stats.visual_tokens_per_layer == [int((c[:n] & grid).sum()) for c in computed]
    assert stats.visual_tokens_in == int(grid.sum())


def test_pyramiddrop_is_reversible(family):
    inputs = family.inputs()
    attn = [layer.self_attn for layer in family.model.model.language_model.layers]
    hooks_before = [len(a._forward_pre_hooks) for a in attn]
    with torch.no_grad():
        before = family.model(**inputs).logits
        with PyramidDrop(keep_ratio=0.2)(family.model):
            pruned = family.model(**inputs).logits
        after = family.model(**inputs).logits
    assert torch.equal(before, after) and not torch.equal(before[:, -1], pruned[:, -1])
    assert [len(a._forward_pre_hooks) for a in attn] == hooks_before


def test_pyramiddrop_is_refused_for_shared_prefixes(family):
    from sharpv.adapters import adapter_for
    from sharpv.answer import shared_prefix_refusal

    assert "last token" in shared_prefix_refusal(PyramidDrop(), adapter_for(family.model))


# --- visual tokens per layer and equivalent retention ------------------------------------------


def _run(family, method, inputs=None):
    inputs = inputs or family.inputs()
    with method(family.model) as handle, torch.no_grad():
        family.model(**inputs)
    return handle.stats


def test_per_layer_counts_of_a_pre_llm_method_equal_its_kept_tokens(family):
    stats = _run(family, create("pooling", keep_ratio=0.3))
    assert stats.visual_tokens_per_layer == [stats.visual_tokens_kept] * N_LAYERS
    assert stats.visual_tokens_kept < stats.visual_tokens_in
    assert stats.equivalent_retention == pytest.approx(stats.kept_share)
    dense = _run(family, create("dense"))
    assert dense.visual_tokens_per_layer == [dense.visual_tokens_in] * N_LAYERS and dense.equivalent_retention == 1.0
    # a batch of two: summed over the rows
    batch = family.batch([family.inputs(), family.inputs("what moves here ?", seed=1)])
    both = _run(family, create("pooling", keep_ratio=0.3), batch)
    assert both.visual_tokens_per_layer == [both.visual_tokens_kept] * N_LAYERS == [2 * stats.visual_tokens_kept] * N_LAYERS
    assert both.equivalent_retention == pytest.approx(both.kept_share)


def test_per_layer_counts_of_vtw_and_fastv(family):
    vtw = _run(family, create("vtw", layer=2))
    t_f = vtw.visual_tokens_in
    assert vtw.visual_tokens_per_layer == [t_f, t_f, 0, 0]
    assert vtw.equivalent_retention == pytest.approx(0.5) and vtw.kept_share == 1.0
    fastv = _run(family, create("fastv", keep_ratio=0.25, layer=2))
    per = fastv.visual_tokens_per_layer
    assert per[:2] == [t_f, t_f] and per[2] == per[3]
    # FastV keeps budget_total(0.25, 1, visual columns); LLaVA-OneVision's newline may be one of them
    n_vis = t_f + (0 if is_qwen(family) else 1)
    assert max(1, round(0.25 * n_vis)) - per[2] in ((0,) if is_qwen(family) else (0, 1))
    assert fastv.equivalent_retention == pytest.approx((2 * t_f + 2 * per[2]) / (4 * t_f))


@pytest.mark.parametrize("kv_mode", ["withdraw", "layerwise"])
def test_per_layer_counts_of_sharpv_stage_two(family, kv_mode):
    """kv_threshold=2 puts every layer below M: withdraw takes the visual tokens out at
    kv_min_layer (2); layerwise only cuts caches, so every layer still computes them all."""
    method = create("sharpv", keep_ratio=0.5, kv_threshold=2.0, kv_min_layer=2, kv_mode=kv_mode)
    stats = _run(family, method)
    kept = stats.visual_tokens_kept
    assert kept == max(1, round(0.5 * stats.visual_tokens_in))
    if kv_mode == "withdraw":
        assert stats.kv_withdraw_layer == 2
        assert stats.visual_tokens_per_layer == [kept, kept, 0, 0]
        assert stats.equivalent_retention == pytest.approx(stats.kept_share / 2)
    else:
        assert stats.visual_tokens_per_layer == [kept] * N_LAYERS
        assert stats.equivalent_retention == pytest.approx(stats.kept_share)
    # nothing crosses M = -1: no withdrawal, every layer computes what stage 1 kept
    none = _run(family, create("sharpv", keep_ratio=0.5, kv_threshold=-1.0, kv_mode=kv_mode))
    assert none.kv_withdraw_layer is None and none.visual_tokens_per_layer == [kept] * N_LAYERS


def test_stats_dict_is_json_and_carries_the_new_fields():
    keep = torch.tensor([[True, False, True], [False, False, True]])
    video = VideoStats(2, 3, [2, 1], keep=keep)
    stats = PruningStats("fastv", "budget", "original", videos=[video], visual_tokens_per_layer=[6, 6, 3, 0])
    assert stats.equivalent_retention == pytest.approx(15 / 24)
    out = stats.to_dict()
    json.dumps(out)
    assert out["visual_tokens_per_layer"] == [6, 6, 3, 0]
    assert out["equivalent_retention"] == pytest.approx(15 / 24) and out["kept_share"] == pytest.approx(0.5)
    assert "keep" not in out["videos"][0] and "keep_mask" not in out["videos"][0]
    with_masks = stats.to_dict(keep_masks=True)
    json.dumps(with_masks)
    assert with_masks["videos"][0]["keep_mask"] == keep.tolist()
    # unknown per-layer counts (or mask): fall back to kept_share, no mask
    bare = PruningStats("dense", "budget", "original", videos=[VideoStats(2, 3, [3, 3])])
    assert bare.equivalent_retention == 1.0 and bare.to_dict(keep_masks=True)["videos"][0]["keep_mask"] is None
    assert video == VideoStats(2, 3, [2, 1])  # the mask does not take part in comparisons


# --- keep masks ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pooling", "dycoke", "sharpv"])
def test_keep_masks_equal_the_pre_llm_selection(family, name):
    inputs = family.inputs()
    method = create(name, keep_ratio=0.3, **({"kv": False} if name == "sharpv" else {}))
    red = stage1_by_hand(family, inputs, method)
    stats = _run(family, method, inputs)
    keep = stats.videos[0].keep
    assert keep is not None and keep.dtype == torch.bool and keep.device.type == "cpu"
    assert keep.shape == (stats.frames, stats.tokens_per_frame)
    assert torch.equal(keep, red.keep)
    assert int(keep.sum()) == stats.visual_tokens_kept and keep.sum(1).tolist() == stats.kept_per_frame


def test_keep_masks_of_in_llm_methods_keep_everything_before_the_llm(family):
    stats = _run(family, PyramidDrop(keep_ratio=0.3))
    keep = stats.videos[0].keep
    assert keep.all() and int(keep.sum()) == stats.visual_tokens_kept == stats.visual_tokens_in
    assert stats.equivalent_retention < 1.0
