"""Incremental prefill (issue 11, point 4, stage 1): the text before the video, each chunk's kept
tokens, then the rest, into one cache, equals the one-shot pruned prefill on every family."""

from __future__ import annotations

import pytest
import torch

import sharpv
from sharpv.errors import SharpVError
from sharpv.streaming import ChunkedPrefill

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
        got = family.model.generate(**rest, past_key_values=cache, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True)
    assert got.sequences.tolist() == want.sequences.tolist()
    for a, b in zip(got.logits, want.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_chunked_prefill_refuses_what_it_does_not_define(family):
    inputs = family.inputs()
    for settings in (dict(keep_ratio=0.5), dict()):
        with sharpv.apply(family.model, **settings) as handle:
            with pytest.raises(SharpVError, match="stage 1 only"):
                ChunkedPrefill(handle, inputs)
