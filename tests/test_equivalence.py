"""Stage 1 (stage 2 off) on every supported family, proven by equivalence with hand-built references."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import sharpv
from sharpv import SharpVConfig

from conftest import ATTENTION_CALLS, Family
from reference import stage1_by_hand
from sharpv.compat import cache_kwargs, output_cache

ATOL = 1e-5


def reference(fam: Family, inputs: dict, config: SharpVConfig, new_tokens: int = 0):
    """Stage 1 by hand, then the language model on the reduced sequence with a manual greedy
    decode loop that continues at the position the unpruned sequence would have reached
    (``positions="original"``) or where the shortened one ends (``"compact"``)."""
    model = fam.model
    red = stage1_by_hand(fam, inputs, config)
    n = red.ids.shape[1]
    extra = {}
    if red.deepstack is not None:
        extra = dict(visual_pos_masks=red.visual[None], deepstack_visual_embeds=red.deepstack)
    lm = model.model.language_model
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad():
        hidden = lm(inputs_embeds=red.embeds, position_ids=red.positions, attention_mask=torch.ones(1, n, dtype=torch.long),
                    **cache_kwargs(cache), use_cache=True, **extra).last_hidden_state
        prefill = model.lm_head(hidden)
        tokens, steps = [], []
        logits = prefill[:, -1]
        for step in range(new_tokens):
            nxt = logits.argmax(-1, keepdim=True)
            tokens.append(int(nxt))
            if step == new_tokens - 1:
                break
            p = red.positions[..., -1:] + step + 1
            hidden = lm(inputs_embeds=model.get_input_embeddings()(nxt), position_ids=p,
                        attention_mask=torch.ones(1, n + step + 1, dtype=torch.long),
                        **cache_kwargs(cache), use_cache=True).last_hidden_state
            logits = model.lm_head(hidden)[:, -1]
            steps.append(logits)
    return prefill, tokens, steps, red.keep


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_pruned_prefill_equals_reference_on_reduced_sequence(family, positions):
    inputs = family.inputs()
    config = SharpVConfig(keep_ratio=0.3, positions=positions, kv=False)
    ref, _, _, sel = reference(family, inputs, config)
    with sharpv.apply(family.model, config) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
    assert handle.stats.visual_tokens_kept == int(sel.sum()) == round(0.3 * handle.stats.visual_tokens_in)
    assert handle.stats.kept_per_frame == sel.sum(1).tolist()
    assert logits.shape == ref.shape and logits.shape[1] < inputs["input_ids"].shape[1]
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_pruned_generate_equals_manual_decode_loop(family, positions):
    inputs = family.inputs()
    config = SharpVConfig(keep_ratio=0.3, positions=positions, kv=False)
    _, tokens, steps, _ = reference(family, inputs, config, new_tokens=6)
    with sharpv.apply(family.model, config), torch.no_grad():
        out = family.model.generate(
            **inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6, output_logits=True, return_dict_in_generate=True
        )
    assert out.sequences[0, inputs["input_ids"].shape[1]:].tolist() == tokens
    for got, want in zip(out.logits[1:], steps):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)


def test_manual_loop_without_positions_equals_generate(family):
    """A user's own decode loop on the pruned cache: the runtime supplies mask and positions."""
    inputs = family.inputs()
    with sharpv.apply(family.model, keep_ratio=0.4, kv=False), torch.no_grad():
        gen = family.model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        out = family.model(**inputs, use_cache=True)
        cache, tokens = output_cache(out), []
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(5):
            tokens.append(int(nxt))
            out = family.model(input_ids=nxt, **cache_kwargs(cache), use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    assert gen[0, inputs["input_ids"].shape[1]:].tolist() == tokens


def test_keep_all_reproduces_the_unmodified_model_exactly(family):
    inputs = family.inputs()
    with torch.no_grad():
        dense = family.model(**inputs).logits
        dense_gen = family.model.generate(**inputs, max_new_tokens=6, do_sample=False)
        with sharpv.apply(family.model, keep_ratio=1.0, kv=False) as handle:
            kept = family.model(**inputs).logits
            kept_gen = family.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert handle.stats.visual_tokens_kept == handle.stats.visual_tokens_in
    assert torch.equal(kept, dense)
    assert torch.equal(kept_gen, dense_gen)


def test_sampling_generate_runs_and_is_seeded(family):
    inputs = family.inputs()
    runs = []
    with sharpv.apply(family.model), torch.no_grad():
        for _ in range(2):
            torch.manual_seed(7)
            runs.append(family.model.generate(**inputs, max_new_tokens=4, do_sample=True, top_k=5))
    assert torch.equal(runs[0], runs[1])


def test_remove_restores_the_model(family):
    inputs = family.inputs()
    with torch.no_grad():
        before = family.model(**inputs).logits
        handle = sharpv.apply(family.model, keep_ratio=0.2, kv=False)
        pruned = family.model(**inputs).logits
        handle.remove()
        after = family.model(**inputs).logits
    assert pruned.shape[1] < before.shape[1]
    assert torch.equal(before, after)
    assert not handle.active
    assert not family.model._forward_pre_hooks and not family.model._forward_hooks


def test_applying_twice_is_refused(family):
    with sharpv.apply(family.model):
        with pytest.raises(sharpv.SharpVError, match="already applied"):
            sharpv.apply(family.model)


@pytest.fixture(scope="module")
def eager_families(tiny_dirs):
    return {}


def test_sdpa_and_eager_agree(family, tiny_dirs, eager_families):
    if family.arch not in eager_families:
        eager_families[family.arch] = Family(family.arch, tiny_dirs[family.arch], attn="eager")
    eager = eager_families[family.arch]
    inputs = family.inputs()
    results = []
    for fam in (family, eager):
        with sharpv.apply(fam.model, keep_ratio=0.3, kv=False), torch.no_grad():
            results.append(fam.model(**inputs).logits)
    torch.testing.assert_close(results[0], results[1], atol=ATOL, rtol=1e-4)


def test_no_code_path_requests_attention_weights(family, tiny_dirs):
    fam = Family(family.arch, tiny_dirs[family.arch], attn="sdpa_without_weights")
    inputs = fam.inputs()
    ATTENTION_CALLS["n"] = 0
    with sharpv.apply(fam.model, keep_ratio=0.3, kv=False), torch.no_grad():
        logits = fam.model(**inputs).logits
        fam.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert ATTENTION_CALLS["n"] > 0
    with sharpv.apply(family.model, keep_ratio=0.3, kv=False), torch.no_grad():
        expected = family.model(**inputs).logits
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("keep_ratio", [None, 0.3])
def test_batch_with_left_padding_equals_single_runs(family, keep_ratio):
    items = [family.inputs("what color is the square ?", seed=0), family.inputs("where is it at the end of the video ?", seed=3)]
    batch = family.batch(items)
    assert (batch["attention_mask"] == 0).any()
    with sharpv.apply(family.model, keep_ratio=keep_ratio, kv=False) as handle, torch.no_grad():
        singles = [family.model(**x).logits[:, -1] for x in items]
        single_gen = [family.model.generate(**x, max_new_tokens=5, min_new_tokens=5, do_sample=False) for x in items]
        batched = family.model(**batch).logits[:, -1]
        assert len(handle.stats.videos) == 2
        batch_gen = family.model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    for i in range(2):
        torch.testing.assert_close(batched[i], singles[i][0], atol=1e-4, rtol=1e-4)
        assert batch_gen[i, -5:].tolist() == single_gen[i][0, -5:].tolist()


def test_adaptive_mode_prunes_the_static_background(family):
    inputs = family.inputs(n_frames=8)
    with sharpv.apply(family.model) as handle, torch.no_grad():
        family.model(**inputs)
    stats = handle.stats
    assert stats.mode == "adaptive" and stats.positions == "original"
    assert 0 < stats.visual_tokens_kept < stats.visual_tokens_in
    assert stats.pruning_seconds > 0
    assert stats.sequence_length_in - stats.sequence_length_out == stats.visual_tokens_in - stats.visual_tokens_kept
