"""The paths users take after the first prefill, on every family: further chat turns on a pruned
cache, ``cache.crop()`` and speculative decoding, beam search, image + video prompts, and the
caches and attention kernels transformers offers."""

from __future__ import annotations

import pytest
import torch

import sharpv
from sharpv import SharpVConfig
from sharpv.compat import cache_kwargs, output_cache
from sharpv.errors import SharpVError

from conftest import Family, extend
from reference import run_layers, stage1_by_hand

NEW = 4
STAGE2 = {
    "stage1": dict(keep_ratio=0.5, kv=False),
    "withdraw": dict(keep_ratio=0.5, kv_threshold=2.0, kv_min_layer=2),
    "withdraw-token": dict(keep_ratio=0.5, kv_threshold=0.6, kv_granularity="token", kv_min_layer=2),
}


def greedy(model, **kwargs):
    return model.generate(**kwargs, do_sample=False, output_logits=True, return_dict_in_generate=True)


def text_ids(fam: Family, text: str) -> torch.Tensor:
    return fam.processor.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


# --- 1. conversations --------------------------------------------------------------------------
@pytest.mark.parametrize("setting", list(STAGE2))
@pytest.mark.parametrize("with_video_again", [True, False], ids=["video-again", "ids-only"])
def test_second_turn_on_pruned_cache_equals_fresh_prefill(family, setting, with_video_again):
    inputs = family.inputs("what color is the square ?")
    config = SharpVConfig(**STAGE2[setting])
    turn2 = text_ids(family, "where is the square at the end ?")
    with sharpv.apply(family.model, config) as handle, torch.no_grad():
        first = greedy(family.model, **inputs, max_new_tokens=NEW, min_new_tokens=NEW)
        history = extend(inputs, torch.cat([first.sequences[:, inputs["input_ids"].shape[1]:], turn2], dim=1))
        if not with_video_again:
            history = {k: v for k, v in history.items() if k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        cache = output_cache(first)
        lengths_before = [layer.keys.shape[-2] for layer in cache.layers]
        second = greedy(family.model, **history, **cache_kwargs(cache), max_new_tokens=NEW, min_new_tokens=NEW)
        fed = [layer.keys.shape[-2] for layer in cache.layers]
        fresh = greedy(family.model, **extend(inputs, history["input_ids"][:, inputs["input_ids"].shape[1]:]),
                       max_new_tokens=NEW, min_new_tokens=NEW)
    n_hist = history["input_ids"].shape[1]
    assert second.sequences[0, n_hist:].tolist() == fresh.sequences[0, n_hist:].tolist()
    for got, want in zip(second.logits, fresh.logits):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # the second turn fed only its own tokens: the last answer token, turn 2, and NEW - 1 decode steps
    assert [b - a for a, b in zip(lengths_before, fed)] == [1 + turn2.shape[1] + NEW - 1] * len(fed)
    assert handle.stats is not None


def test_second_turn_refuses_a_history_that_is_not_the_cache(family):
    inputs = family.inputs("what color is the square ?")
    other = family.inputs("what color is the square ?", seed=5)
    with sharpv.apply(family.model, keep_ratio=0.5) as handle, torch.no_grad():
        first = greedy(family.model, **inputs, max_new_tokens=2)
        history = extend(other, text_ids(family, "and now ?"))
        history["input_ids"][0, -8] = 3  # a different question word inside the cached span
        if family.arch != "llava-onevision":
            history["input_ids"][0, inputs["input_ids"].shape[1] - 3] = 5
        with pytest.raises(SharpVError, match="differ from the prompt"):
            family.model.generate(**{k: history[k] for k in ("input_ids", "attention_mask")},
                                  **cache_kwargs(output_cache(first)), max_new_tokens=2)
    assert handle.stats is not None


def test_a_new_video_in_a_later_turn_is_refused(family):
    inputs = family.inputs("what color is the square ?")
    with sharpv.apply(family.model, keep_ratio=0.5), torch.no_grad():
        out = family.model(**inputs, use_cache=True)
        again = {k: v for k, v in family.inputs("and this one ?", seed=4).items() if k != "attention_mask"}
        with pytest.raises(SharpVError, match="new video"):
            family.model(**again, **cache_kwargs(output_cache(out)))
        # a placeholder id without video features is just a token, as in the unmodified model
        family.model(input_ids=torch.full((1, 1), family.model.config.video_token_id), **cache_kwargs(output_cache(out)))


def test_layerwise_second_turn_equals_reference_without_dropped_entries(family):
    """Layerwise drops entries from the cache after the prefill: every later token, a second turn
    included, attends without them (a fresh prefill of the whole conversation would not)."""
    inputs = family.inputs()
    config = SharpVConfig(keep_ratio=0.5, kv_mode="layerwise", kv_threshold=2.0, kv_min_layer=2)
    turn2 = text_ids(family, "where is it ?")
    with sharpv.apply(family.model, config), torch.no_grad():
        first = greedy(family.model, **inputs, max_new_tokens=NEW, min_new_tokens=NEW)
        answer = first.sequences[:, inputs["input_ids"].shape[1]:]
        history = extend(inputs, torch.cat([answer, turn2], dim=1))
        second = greedy(family.model, input_ids=history["input_ids"], attention_mask=history["attention_mask"],
                        **cache_kwargs(output_cache(first)), max_new_tokens=NEW, min_new_tokens=NEW)
    new = second.sequences[0, history["input_ids"].shape[1]:].tolist()
    red = stage1_by_hand(family, inputs, config)
    fed = answer[0].tolist() + turn2[0].tolist() + new[:-1]
    ref, _, _ = run_layers(family, red, fed, config)
    start = red.ids.shape[1] - 1 + answer.shape[1] + turn2.shape[1]
    for step, got in enumerate(second.logits):
        torch.testing.assert_close(got[0], ref[0, start + step], atol=1e-5, rtol=1e-4)


# --- 2. crop and speculative decoding -----------------------------------------------------------
@pytest.mark.parametrize("setting", ["stage1", "withdraw"])
def test_crop_then_continue_equals_never_feeding_the_rejected_tokens(family, setting):
    items = [family.inputs("what color is the square ?", seed=0), family.inputs("where is it at the end of the video ?", seed=3)]
    batch = family.batch(items)
    config = SharpVConfig(**STAGE2[setting])
    drafts = torch.cat([text_ids(family, "red green blue"), text_ids(family, "the square is")])
    with sharpv.apply(family.model, config), torch.no_grad():
        runs = []
        for speculate in (False, True):
            out = family.model(**batch, use_cache=True)
            cache, mask = output_cache(out), batch["attention_mask"]
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            logits = []
            for _ in range(3):
                if speculate:  # three draft tokens go in and are all rejected
                    mask_d = torch.cat([mask, torch.ones_like(drafts)], dim=1)
                    family.model(input_ids=drafts, attention_mask=mask_d, **cache_kwargs(cache))
                    cache.crop(-drafts.shape[1])
                mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
                out = family.model(input_ids=nxt, attention_mask=mask, **cache_kwargs(cache))
                logits.append(out.logits[:, -1])
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            runs.append(torch.stack(logits))
    torch.testing.assert_close(runs[1], runs[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("setting", ["stage1", "withdraw"])
def test_speculative_decoding_equals_greedy(family, tiny_dirs, tmp_path_factory, setting):
    from sharpv.tiny import build_tiny_model

    draft_dir = build_tiny_model(tmp_path_factory.mktemp("draft") / family.arch, family.arch, seed=7)
    draft = Family(family.arch, draft_dir).model
    inputs = family.inputs()
    with sharpv.apply(family.model, **STAGE2[setting]), torch.no_grad():
        plain = family.model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        assisted = family.model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                         assistant_model=draft)
    assert assisted.tolist() == plain.tolist()


# --- 3. beams and several sequences per prompt -------------------------------------------------
BEAMS = [dict(num_beams=2), dict(num_return_sequences=2, num_beams=2), dict(num_beams=3, num_return_sequences=2)]


@pytest.mark.parametrize("beams", BEAMS, ids=["beams2", "beams2-return2", "beams3-return2"])
def test_beams_at_keep_all_equal_the_unmodified_model(family, beams):
    items = [family.inputs("what color is the square ?", seed=0), family.inputs("where is it at the end of the video ?", seed=3)]
    batch = family.batch(items)
    with torch.no_grad():
        want = family.model.generate(**batch, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **beams)
        with sharpv.apply(family.model, keep_ratio=1.0, kv_threshold=-1.0):
            got = family.model.generate(**batch, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **beams)
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("setting", ["stage1", "withdraw"])
def test_pruned_beam_search_equals_exhaustive_two_step_search(family, setting):
    """Two beams, two tokens: the best two sequences among every (first, second) token pair, scored
    with the pruned model's own forward calls (their exactness is tested against hand-built
    references elsewhere), must be what beam search returns, with its summed log-probabilities."""
    inputs = family.inputs()
    with sharpv.apply(family.model, **STAGE2[setting]), torch.no_grad():
        out = family.model.generate(**inputs, num_beams=2, num_return_sequences=2, max_new_tokens=2, min_new_tokens=2,
                                    do_sample=False, length_penalty=0.0, output_scores=True, return_dict_in_generate=True)
        first = torch.log_softmax(family.model(**inputs).logits[0, -1].float(), -1)
        candidates = []
        for score, token in zip(*first.topk(2)):
            prefill = family.model(**inputs, use_cache=True)
            step = family.model(input_ids=token.view(1, 1), **cache_kwargs(output_cache(prefill)))
            second = torch.log_softmax(step.logits[0, -1].float(), -1)
            candidates += [(float(score + s), [int(token), int(t)]) for s, t in zip(*second.topk(2))]
    best = sorted(candidates, key=lambda c: -c[0])[:2]
    assert out.sequences[:, -2:].tolist() == [tokens for _, tokens in best]
    torch.testing.assert_close(out.sequences_scores, torch.tensor([s for s, _ in best]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("setting", ["stage1", "withdraw"])
def test_pruned_beams_in_a_batch_equal_each_prompt_alone(family, setting):
    items = [family.inputs("what color is the square ?", seed=0), family.inputs("where is it at the end of the video ?", seed=3)]
    kwargs = dict(num_beams=2, num_return_sequences=2, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    with sharpv.apply(family.model, **STAGE2[setting]), torch.no_grad():
        batched = family.model.generate(**family.batch(items), **kwargs)
        singles = [family.model.generate(**x, **kwargs) for x in items]
    for i, single in enumerate(singles):
        assert batched[2 * i : 2 * i + 2, -NEW:].tolist() == single[:, -NEW:].tolist()


# --- 4. an image and a video in one prompt ------------------------------------------------------
def with_image(fam: Family, inputs: dict, seed: int = 0) -> dict:
    """``inputs`` with a random image placed at the start of the prompt, laid out as the family's
    processor lays out images (placeholder count taken from the model's own image encoder)."""
    model, cfg = fam.model, fam.model.config
    g = torch.Generator().manual_seed(seed)
    out = dict(inputs)
    if fam.arch == "llava-onevision":
        side = cfg.vision_config.image_size
        pixels = torch.randn(1, 2, 3, side, side, generator=g)
        sizes = torch.tensor([[side, side]])
        with torch.no_grad():
            n = model.model.get_image_features(pixel_values=pixels, image_sizes=sizes, return_dict=True).pooler_output[0].shape[0]
        tokens = torch.full((1, n), cfg.image_token_id)
        out.update(pixel_values=pixels, image_sizes=sizes)
        types = None
    else:
        vision = cfg.vision_config
        m, p, tp = vision.spatial_merge_size, vision.patch_size, vision.temporal_patch_size
        h = w = 2 * m
        out.update(pixel_values=torch.randn(h * w, 3 * tp * p * p, generator=g), image_grid_thw=torch.tensor([[1, h, w]]))
        tok = fam.processor.tokenizer.convert_tokens_to_ids
        n = h * w // (m * m)
        tokens = torch.tensor([[tok("<|vision_start|>")] + [cfg.image_token_id] * n + [tok("<|vision_end|>")]])
        types = torch.tensor([[0] + [1] * n + [0]])
    out["input_ids"] = torch.cat([tokens, inputs["input_ids"]], dim=1)
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if types is not None:
        out["mm_token_type_ids"] = torch.cat([types, inputs["mm_token_type_ids"]], dim=1)
    return out


def image_and_pruned_video_by_hand(fam: Family, inputs: dict, keep_ratio: float):
    """The unmodified model's logits on the prompt with only the video's dropped placeholders
    removed: SharpV's selection on the model's own video features, image features untouched,
    original positions."""
    from sharpv import SharpV

    model, ids = fam.model, inputs["input_ids"]
    video_id = model.config.video_token_id
    with torch.no_grad():
        if fam.arch == "llava-onevision":
            video = model.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"], return_dict=True)
            image = model.model.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"], return_dict=True)
            feats = video.pooler_output[0]
            f = fam.model.config.vision_config.image_size // fam.model.config.vision_config.patch_size // 2
            grid = feats[:-1].view(-1, f * f, feats.shape[-1])
            positions = torch.arange(ids.shape[1])[None]
        else:
            video = model.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"],
                                                   video_grid_thw=inputs["video_grid_thw"], return_dict=True)
            image = model.model.get_image_features(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
                                                   return_dict=True)
            feats = video.pooler_output[0]
            t = int(inputs["video_grid_thw"][0, 0])
            grid = feats.view(t, -1, feats.shape[-1])
            positions = model.model.get_rope_index(ids, mm_token_type_ids=inputs["mm_token_type_ids"],
                                                   image_grid_thw=inputs["image_grid_thw"], video_grid_thw=inputs["video_grid_thw"],
                                                   second_per_grid_ts=inputs.get("second_per_grid_ts"),
                                                   attention_mask=inputs["attention_mask"])[0]
        keep = SharpV(keep_ratio=keep_ratio, kv=False).select_visual(grid, (1, grid.shape[1])).keep.reshape(-1)
        keep = torch.cat([keep, torch.ones(feats.shape[0] - keep.numel(), dtype=torch.bool)])
        seq_keep = torch.ones(ids.shape[1], dtype=torch.bool)
        seq_keep[ids[0] == video_id] = keep
        video.pooler_output = (feats[keep],) if fam.arch != "llava-onevision" else feats[keep][None]
        if getattr(video, "deepstack_features", None) is not None:
            video.deepstack_features = [(layer[0][keep],) for layer in video.deepstack_features]
        kwargs = {"input_ids": ids[:, seq_keep], "attention_mask": torch.ones(1, int(seq_keep.sum()), dtype=torch.long),
                  "position_ids": positions[..., seq_keep], "mm_encoder_outputs": {"image": image, "video": video}}
        if "mm_token_type_ids" in inputs:
            kwargs["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, seq_keep]
        return model(**kwargs).logits, int(keep.sum())


def test_image_and_video_only_the_video_is_pruned(family):
    inputs = with_image(family, family.inputs())
    with torch.no_grad():
        want, kept = image_and_pruned_video_by_hand(family, inputs, keep_ratio=0.5)
        with sharpv.apply(family.model, keep_ratio=0.5, kv=False) as handle:
            got = family.model(**inputs).logits
            gen = greedy(family.model, **inputs, max_new_tokens=NEW, min_new_tokens=NEW)
    assert handle.stats.videos[0].tokens_kept + (family.arch == "llava-onevision") == kept
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gen.logits[0], want[:, -1], atol=1e-5, rtol=1e-4)


def test_image_and_video_at_keep_all_equal_the_unmodified_model(family):
    inputs = with_image(family, family.inputs())
    with torch.no_grad():
        want = family.model(**inputs).logits
        want_gen = family.model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
        with sharpv.apply(family.model, keep_ratio=1.0, kv_threshold=-1.0):
            got = family.model(**inputs).logits
            got_gen = family.model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert got_gen.tolist() == want_gen.tolist()


# --- 5. caches and attention implementations ----------------------------------------------------
@pytest.mark.parametrize("implementation", ["static", "offloaded_static", "sliding_window"])
def test_static_caches_are_refused_at_the_first_call(family, implementation):
    inputs = family.inputs()
    with sharpv.apply(family.model, keep_ratio=0.5), torch.no_grad():
        with pytest.raises(SharpVError, match="is not supported: pruning cuts entries out of the KV cache") as err:
            family.model.generate(**inputs, max_new_tokens=2, cache_implementation=implementation)
    assert "\n" not in str(err.value)


def test_cache_implementation_in_the_generation_config_is_refused_when_applied(family):
    config = family.model.generation_config
    before = config.cache_implementation
    config.cache_implementation = "static"
    try:
        with pytest.raises(SharpVError, match="cache 'static' is not supported"):
            sharpv.apply(family.model, keep_ratio=0.5)
        assert not family.model._forward_pre_hooks  # nothing was left applied
    finally:
        config.cache_implementation = before


def test_caches_that_cannot_hold_a_pruned_prompt_are_refused():
    from transformers.cache_utils import DynamicCache, DynamicSlidingWindowLayer

    from sharpv.compat import check_cache

    check_cache(DynamicCache())
    sliding = DynamicCache()
    sliding.layers = [DynamicSlidingWindowLayer(sliding_window=8)]
    with pytest.raises(SharpVError, match="DynamicSlidingWindowLayer"):
        check_cache(sliding)
    offloaded = DynamicCache()
    offloaded.offloading = True
    with pytest.raises(SharpVError, match="'offloaded'"):
        check_cache(offloaded)


def test_dynamic_cache_passed_explicitly_equals_the_default(family):
    from transformers.cache_utils import DynamicCache

    inputs = family.inputs()
    with sharpv.apply(family.model, keep_ratio=0.5, kv_threshold=2.0), torch.no_grad():
        want = family.model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
        got = family.model.generate(**inputs, max_new_tokens=NEW, do_sample=False, **cache_kwargs(DynamicCache()))
        named = family.model.generate(**inputs, max_new_tokens=NEW, do_sample=False, cache_implementation="dynamic")
    assert got.tolist() == want.tolist() == named.tolist()


@pytest.mark.parametrize("attn", ["paged|eager", "flex_attention"])
def test_attention_implementations_that_cannot_take_pruned_masks_are_refused(tiny_dirs, attn):
    fam = Family("llava-onevision", tiny_dirs["llava-onevision"], attn=attn)
    with pytest.raises(SharpVError, match=attn.replace("|", r"\|")):
        sharpv.apply(fam.model, keep_ratio=0.5)  # stage 2 prunes inside the LLM
    if attn.startswith("paged"):
        with pytest.raises(SharpVError, match="continuous batching"):
            sharpv.apply(fam.model, keep_ratio=0.5, kv=False)


def test_flex_attention_with_pre_llm_pruning_equals_sdpa(family, tiny_dirs):
    """flex_attention compiles a kernel per shape on the CPU (about 30 s here): one family."""
    if family.arch != "llava-onevision":
        pytest.skip("flex_attention compiles per shape; one family keeps the suite short")
    fam = Family(family.arch, tiny_dirs[family.arch], attn="flex_attention")
    inputs = family.inputs()
    runs = []
    for model in (fam.model, family.model):
        with sharpv.apply(model, keep_ratio=0.5, kv=False), torch.no_grad():
            runs.append(greedy(model, **inputs, max_new_tokens=3, min_new_tokens=3))
    assert runs[0].sequences.tolist() == runs[1].sequences.tolist()
    for a, b in zip(runs[0].logits, runs[1].logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_a_prompt_ending_on_a_video_token_continues_where_a_longer_prefill_puts_the_text(family, positions):
    """Tokens generated after a pruned prompt that ends on a video token take the positions a
    prefill of the prompt plus those tokens gives them (original positions: where the unpruned
    conversation has them, after the whole video, not after the last kept video token)."""
    inputs = family.inputs(n_frames=4)
    ids = inputs["input_ids"]
    last = int((ids[0] == family.model.config.video_token_id).nonzero().max()) + 1
    sequence_keys = ("input_ids", "attention_mask", "mm_token_type_ids")
    cut = {k: (v[:, :last] if k in sequence_keys else v) for k, v in inputs.items()}
    with sharpv.apply(family.model, kv=False, positions=positions), torch.no_grad():
        out = family.model.generate(**cut, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, output_logits=True,
                                    return_dict_in_generate=True)
        new = out.sequences[:, last:]
        longer = {k: (torch.cat([v, new if k == "input_ids" else torch.full_like(new, 1 if k == "attention_mask" else 0)], dim=1)
                      if k in sequence_keys else v) for k, v in cut.items()}
        logits = family.model(**longer).logits[0]
    for step in range(NEW):
        # the pruned forward returns the shortened sequence: the new tokens' rows are its last
        torch.testing.assert_close(out.logits[step][0], logits[logits.shape[0] - NEW - 1 + step], atol=1e-5, rtol=1e-4)
