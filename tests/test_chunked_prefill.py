"""Incremental prefill (issue 11, point 4, stage 1): the text before the video, each chunk's kept
tokens, then the rest, into one cache, equals the one-shot pruned prefill on every family."""

from __future__ import annotations

import pytest
import torch

import sharpv
from sharpv.errors import SharpVError
from sharpv.streaming import ChunkedPrefill
from sharpv.compat import cache_kwargs

NEW = 4


def chunk_outputs(family, inputs, chunk_frames: int):
    """The model's own get_video_features on every chunk of frames (and the chunk's grid)."""
    model = family.model
    with torch.no_grad():
        if family.arch == "llava-onevision":
            pixels = inputs["pixel_values_videos"]
            for start in range(0, pixels.shape[1], chunk_frames):
                yield model.get_video_features(pixel_values_videos=pixels[:, start : start + chunk_frames], return_dict=True), None
        else:
            t, h, w = inputs["video_grid_thw"][0].tolist()
            steps = max(1, chunk_frames // 2)
            rows = h * w
            for start in range(0, t, steps):
                grid = torch.tensor([[min(steps, t - start), h, w]])
                patches = inputs["pixel_values_videos"][start * rows : (start + int(grid[0, 0])) * rows]
                yield model.get_video_features(pixel_values_videos=patches, video_grid_thw=grid, return_dict=True), grid


@pytest.mark.parametrize("keep_ratio", [None, 0.3], ids=["adaptive", "budget"])
@pytest.mark.parametrize("positions", ["original", "compact"])
@pytest.mark.parametrize("chunk_frames", [2, 6])
def test_chunked_prefill_equals_one_shot_pruned_prefill(family, positions, chunk_frames, keep_ratio):
    inputs = family.inputs(n_frames=8)
    with sharpv.apply(family.model, kv=False, positions=positions, keep_ratio=keep_ratio) as handle, torch.no_grad():
        want = family.model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                     output_logits=True, return_dict_in_generate=True)
        kept = list(handle.stats.videos[0].kept_per_frame)
        prefill = ChunkedPrefill(handle, inputs)
        for output, grid in chunk_outputs(family, inputs, chunk_frames):
            prefill.push(output, grid)
        cache = prefill.finish()
        assert prefill.kept_per_frame == kept
        assert cache.get_seq_length() == handle.stats.sequence_length_out - 1
        rest = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
        got = family.model.generate(**rest, **cache_kwargs(cache), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True)
    assert got.sequences.tolist() == want.sequences.tolist()
    for a, b in zip(got.logits, want.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_chunked_prefill_refuses_what_it_does_not_define(family):
    inputs = family.inputs()
    from sharpv.methods import create

    with create("evs", keep_ratio=0.5)(family.model) as handle:
        with pytest.raises(SharpVError, match="chunked prefill runs SharpV"):
            ChunkedPrefill(handle, inputs)


def chunk_groups(family, red, chunk_frames: int) -> torch.Tensor:
    """The chunk (piece) of every token of the pruned prompt: a video token's chunk from its
    frame, LLaVA-OneVision's image_newline its own piece, text -1."""
    frames_per_step = 1 if family.arch == "llava-onevision" else 2
    per_chunk = max(1, chunk_frames // frames_per_step)
    frame_of = torch.repeat_interleave(torch.arange(red.keep.shape[0]), red.keep.sum(1))
    groups = torch.full((red.ids.shape[1],), -1, dtype=torch.long)
    visual = red.visual.nonzero().squeeze(1)
    chunk = frame_of // per_chunk
    if family.arch == "llava-onevision":
        chunk = torch.cat([chunk, torch.tensor([int(chunk.max()) + 1])])  # the newline
    groups[visual] = chunk
    return groups


@pytest.mark.parametrize("mode,granularity", [("withdraw", "layer"), ("withdraw", "token"), ("layerwise", "layer")])
def test_stage2_per_chunk_equals_its_layer_by_layer_reference(family, mode, granularity):
    from sharpv import SharpVConfig
    from reference import run_layers, stage1_by_hand

    inputs = family.inputs(n_frames=8)
    chunk_frames = 4
    base = dict(kv_mode=mode, kv_granularity=granularity, kv_min_layer=2)
    # thresholds from the measured similarities, so chunks (and tokens) decide differently
    with sharpv.apply(family.model, kv_threshold=-1.0, **base) as handle, torch.no_grad():
        family.model(**inputs)
    sims = handle.stats.layer_similarity
    threshold = float(sims[2]) if granularity == "token" else float(sum(sims[2:4]) / 2)
    config = SharpVConfig(kv_threshold=threshold, **base)
    with sharpv.apply(family.model, config) as handle, torch.no_grad():
        prefill = ChunkedPrefill(handle, inputs)
        for output, grid in chunk_outputs(family, inputs, chunk_frames):
            prefill.push(output, grid)
        cache = prefill.finish()
        rest = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
        out = family.model.generate(**rest, **cache_kwargs(cache), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True)
    assert any(r.withdraw_layer is not None for r in prefill.chunk_reports), "the case must prune inside the LLM"
    red = stage1_by_hand(family, inputs, SharpVConfig(kv=False))
    groups = chunk_groups(family, red, chunk_frames)
    tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    ref, hidden_keys, _ = run_layers(family, red, tokens[:-1], config, groups=groups)
    n = red.ids.shape[1]
    for step, got in enumerate(out.logits):
        torch.testing.assert_close(got[0], ref[0, n - 1 + step], atol=1e-5, rtol=1e-4)
