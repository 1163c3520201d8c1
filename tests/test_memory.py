"""Stage 2 (Memory SharpV) on every supported family, against hand-built references."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import sharpv
from sharpv import SharpVConfig

from conftest import Family
from reference import run_layers, stage1_by_hand
from sharpv.compat import cache_kwargs, output_cache

ATOL = 1e-5
NEW = 5


def forced_layer(fam: Family) -> int:
    return 2  # Qwen3-VL's tiny model injects deepstack after layers 0 and 1


def test_threshold_below_any_similarity_reproduces_stage1_exactly(family):
    inputs = family.inputs()
    with torch.no_grad():
        with sharpv.apply(family.model, keep_ratio=0.3, kv=False):
            ref_logits = family.model(**inputs).logits
            ref_gen = family.model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
        with sharpv.apply(family.model, keep_ratio=0.3, kv_threshold=-1.0, kv_min_layer=1) as handle:
            logits = family.model(**inputs).logits
            gen = family.model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    assert torch.equal(logits, ref_logits) and torch.equal(gen, ref_gen)
    stats = handle.stats
    assert stats.kv_withdraw_layer is None
    assert len(stats.layer_similarity) == family.model.config.get_text_config().num_hidden_layers
    assert stats.layer_similarity[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("layer", [2, 3])
def test_forced_withdrawal_equals_running_later_layers_without_visual_tokens(family, layer):
    inputs = family.inputs()
    config = SharpVConfig(keep_ratio=0.5, kv_threshold=2.0, kv_min_layer=layer)
    red = stage1_by_hand(family, inputs, config)
    ref, _, keep_rows = run_layers(family, red, [], None, slice_at=layer)
    with sharpv.apply(family.model, config) as handle, torch.no_grad():
        logits = family.model(**inputs).logits
    assert handle.stats.kv_withdraw_layer == layer
    assert len(handle.stats.layer_similarity) == layer + 1  # nothing visual is left to measure after l*
    assert logits.shape[1] == int(keep_rows.sum())
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=1e-4)


CASES = [
    ("withdraw", "layer", 2.0),
    ("withdraw", "token", None),
    ("layerwise", "layer", 2.0),
    ("layerwise", "token", None),
]


def _threshold_between(family, inputs, config_kwargs) -> float:
    """A threshold that splits the visual tokens at some layer, so token granularity has work."""
    with sharpv.apply(family.model, kv_threshold=-1.0, **config_kwargs) as handle, torch.no_grad():
        family.model(**inputs)
    sims = handle.stats.layer_similarity
    return float(sims[2]) if len(sims) > 2 else 0.5


@pytest.mark.parametrize("mode,granularity,threshold", CASES)
def test_generate_matches_teacher_forced_reference_with_hidden_keys(family, mode, granularity, threshold):
    inputs = family.inputs()
    base = dict(keep_ratio=0.5, kv_mode=mode, kv_granularity=granularity, kv_min_layer=2)
    if threshold is None:
        threshold = _threshold_between(family, inputs, {k: v for k, v in base.items()})
    config = SharpVConfig(kv_threshold=threshold, **base)
    with sharpv.apply(family.model, config) as handle, torch.no_grad():
        out = family.model.generate(
            **inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    n_prompt_in = inputs["input_ids"].shape[1]
    tokens = out.sequences[0, n_prompt_in:].tolist()
    red = stage1_by_hand(family, inputs, config)
    n = red.ids.shape[1]
    ref, hidden_keys, _ = run_layers(family, red, tokens[:-1], config)
    for step, got in enumerate(out.logits):
        torch.testing.assert_close(got[0], ref[0, n - 1 + step], atol=ATOL, rtol=1e-4)
    # per-layer cache lengths after prefill and after NEW - 1 decode steps are exactly as intended
    stats = handle.stats
    pruned = [int(h[:n].sum()) for h in hidden_keys]
    assert any(pruned), "the case must prune something"
    assert stats.kv_cache_lengths == [n - p for p in pruned]
    cache = output_cache(out)
    assert [layer.keys.shape[-2] for layer in cache.layers] == [n - p + NEW - 1 for p in pruned]
    # reported bytes: sum over layers of length x kv heads x head dim x 2 x dtype size
    text = family.model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = text.num_key_value_heads * head_dim * 2 * 4
    assert stats.kv_cache_bytes == sum(stats.kv_cache_lengths) * per_token
    assert stats.kv_cache_bytes_per_layer == [length * per_token for length in stats.kv_cache_lengths]
    assert stats.kv_cache_bytes_dense == n_prompt_in * text.num_hidden_layers * per_token
    assert stats.kv_mode == mode and stats.kv_withdraw_layer == next(i for i, p in enumerate(pruned) if p)


def test_manual_decode_loop_equals_generate_with_stage2(family):
    inputs = family.inputs()
    config = SharpVConfig(keep_ratio=0.5, kv_threshold=2.0, kv_min_layer=2)
    with sharpv.apply(family.model, config), torch.no_grad():
        gen = family.model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        out = family.model(**inputs, use_cache=True)
        cache, tokens = output_cache(out), []
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(NEW):
            tokens.append(int(nxt))
            out = family.model(input_ids=nxt, **cache_kwargs(cache), use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    assert gen[0, inputs["input_ids"].shape[1]:].tolist() == tokens


@pytest.mark.parametrize("mode,granularity", [("withdraw", "layer"), ("withdraw", "token"), ("layerwise", "token")])
def test_materialised_masks_padding_batch_equals_single_runs(family, mode, granularity):
    items = [family.inputs("what color is the square ?", seed=0), family.inputs("where is it at the end of the video ?", seed=3)]
    batch = family.batch(items)
    config = SharpVConfig(kv_mode=mode, kv_granularity=granularity, kv_threshold=0.6 if granularity == "token" else 2.0, kv_min_layer=2)
    with sharpv.apply(family.model, config), torch.no_grad():
        singles = [family.model.generate(**x, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, output_logits=True,
                                         return_dict_in_generate=True) for x in items]
        batched = family.model.generate(**batch, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, output_logits=True,
                                        return_dict_in_generate=True)
    for i in range(2):
        assert batched.sequences[i, -NEW:].tolist() == singles[i].sequences[0, -NEW:].tolist()
        for got, want in zip(batched.logits, singles[i].logits):
            torch.testing.assert_close(got[i], want[0], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def eager_models(tiny_dirs):
    return {}


@pytest.mark.parametrize("mode,granularity", [("withdraw", "layer"), ("withdraw", "token"), ("layerwise", "layer")])
def test_eager_attention_agrees_with_sdpa(family, tiny_dirs, eager_models, mode, granularity):
    if family.arch not in eager_models:
        eager_models[family.arch] = Family(family.arch, tiny_dirs[family.arch], attn="eager")
    inputs = family.inputs()
    config = SharpVConfig(keep_ratio=0.5, kv_mode=mode, kv_granularity=granularity,
                          kv_threshold=0.6 if granularity == "token" else 2.0, kv_min_layer=2)
    results = []
    for fam in (family, eager_models[family.arch]):
        with sharpv.apply(fam.model, config), torch.no_grad():
            results.append(fam.model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                              output_logits=True, return_dict_in_generate=True))
    assert results[0].sequences.tolist() == results[1].sequences.tolist()
    for a, b in zip(results[0].logits, results[1].logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_similarity_needs_no_attention_weights(family, tiny_dirs):
    fam = Family(family.arch, tiny_dirs[family.arch], attn="sdpa_without_weights")
    inputs = fam.inputs()
    config = SharpVConfig(keep_ratio=0.5, kv_threshold=2.0, kv_min_layer=2)
    with sharpv.apply(fam.model, config) as handle, torch.no_grad():
        got = fam.model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    with sharpv.apply(family.model, config), torch.no_grad():
        want = family.model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    assert handle.stats.kv_withdraw_layer == 2 and len(handle.stats.layer_similarity) == 3
    assert torch.equal(got, want)


def test_remove_takes_the_layer_hooks_off(family):
    inputs = family.inputs()
    with torch.no_grad():
        before = family.model(**inputs).logits
        handle = sharpv.apply(family.model, kv_threshold=2.0)
        assert any(layer._forward_pre_hooks for layer in family.model.model.language_model.layers)
        handle.remove()
        after = family.model(**inputs).logits
    assert not any(layer._forward_pre_hooks for layer in family.model.model.language_model.layers)
    assert torch.equal(before, after)


@pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available(),
    reason="FlashAttention-2 is not installed (or no GPU)",
)
def test_flash_attention_2_matches_sdpa(tiny_dirs):  # pragma: no cover - GPU only
    from transformers import AutoModelForImageTextToText

    path = tiny_dirs["llava-onevision"]
    fam = Family("llava-onevision", path)
    inputs = {k: v.cuda() for k, v in fam.inputs().items()}
    outs = []
    for attn in ("sdpa", "flash_attention_2"):
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=attn, dtype=torch.bfloat16).cuda()
        with sharpv.apply(model, kv_threshold=2.0, kv_min_layer=2), torch.no_grad():
            outs.append(model.generate(**inputs, max_new_tokens=NEW, do_sample=False))
    assert torch.equal(outs[0], outs[1])
