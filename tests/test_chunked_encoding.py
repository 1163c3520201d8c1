"""Chunked vision encoding (issue 11): ``adapter.encode_chunked(inputs, chunk_frames)`` runs the
model's own ``get_video_features`` a few frames at a time and assembles the one-shot output.

For every family, with frame counts that do not divide into the chunks: the assembled
``pooler_output`` (and Qwen3-VL's ``deepstack_features``; with ``all_fields`` also the per-patch
fields) equals the one-shot output to 1e-5, for one video and for a batch of two; and
``generate()`` with the chunked output as ``mm_encoder_outputs`` under ``sharpv.apply`` gives the
tokens that passing the pixel values gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sharpv
from sharpv import SharpVError
from sharpv.adapters import adapter_for, precompute_video_features
from sharpv.adapters.base import DEFAULT_CHUNK_FRAMES
from sharpv.synthetic.model import shipped_model_path
from sharpv.video import SampledVideo, TorchVideoInputs, build_inputs

from conftest import Family, moving_square_video

QUESTION = "what color is the square ?"
ATOL = 1e-5


def _per_video(x) -> list[torch.Tensor]:
    return list(x) if isinstance(x, (list, tuple)) else list(x.unbind(0))


def assert_close_outputs(one, chunked, all_fields: bool, label: str) -> None:
    a, b = _per_video(one.pooler_output), _per_video(chunked.pooler_output)
    assert len(a) == len(b), label
    for x, y in zip(a, b):
        assert x.shape == y.shape, (label, x.shape, y.shape)
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0, msg=lambda m: f"{label}: pooler_output {m}")
    deep = getattr(one, "deepstack_features", None)
    if deep is not None:
        assert len(chunked.deepstack_features) == len(deep), label
        for layer_a, layer_b in zip(deep, chunked.deepstack_features):
            for x, y in zip(layer_a, layer_b):
                torch.testing.assert_close(y, x, atol=ATOL, rtol=0, msg=lambda m: f"{label}: deepstack {m}")
    for key in one.keys():
        if key in ("pooler_output", "deepstack_features"):
            continue
        if not all_fields:
            assert chunked.get(key) is None, (label, key)  # per-patch fields are left out by default
            continue
        x, y = one[key], chunked[key]
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(y, x, atol=ATOL, rtol=0, msg=lambda m: f"{label}: {key} {m}")
        else:
            for u, v in zip(x, y):
                if u is not None:
                    torch.testing.assert_close(v, u, atol=ATOL, rtol=0, msg=lambda m: f"{label}: {key} {m}")


def textured_video(n: int, height: int, width: int, seed: int = 0) -> SampledVideo:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height + 4 * n, width + 4 * n, 3), dtype=np.uint8)
    frames = np.stack([base[2 * t : 2 * t + height, 3 * t : 3 * t + width] for t in range(n)])
    return SampledVideo(frames, list(range(n)), n, 10.0)


def big_grid_processor(family: Family) -> TorchVideoInputs:
    """The tiny model's processor with a larger pixel budget, so that a Qwen temporal step is a
    14 x 18 patch grid (7 x 9 merged): several attention windows, some cut by the grid's edge."""
    proc = family.processor
    if family.arch == "llava-onevision":
        return proc
    size = {"shortest_edge": 16 * 16, "longest_edge": 112 * 144 * 64}
    return TorchVideoInputs(proc.tokenizer, proc.family, {**proc.settings, "size": size}, proc.processor_settings, proc.chat_template)


#: (frames, chunk_frames): counts that leave a short last chunk, chunks of one frame (one step on
#: Qwen), odd chunk sizes (rounded down to whole steps on Qwen), and a chunk larger than the video
CASES = [(11, 4), (9, 1), (13, 5), (7, 16)]


def test_default_chunk_is_sixteen_frames():
    assert DEFAULT_CHUNK_FRAMES == 16


@pytest.mark.parametrize("frames,chunk", CASES)
def test_chunked_equals_one_shot(family, frames, chunk):
    adapter = adapter_for(family.model)
    for label, proc, video in (
        ("tiny frames", family.processor, moving_square_video(frames, seed=frames)),
        ("big grid", big_grid_processor(family), textured_video(frames, 112, 144, seed=frames)),
    ):
        inputs = build_inputs(proc, QUESTION, video)
        with torch.inference_mode():
            one = adapter.encode(inputs)
            for all_fields in (False, True):
                chunked = adapter.encode_chunked(inputs, chunk, all_fields=all_fields)
                assert_close_outputs(one, chunked, all_fields, f"{family.arch} {label} T={frames} chunk={chunk}")


def test_chunked_batch_of_two_videos(family):
    adapter = adapter_for(family.model)
    items = [family.inputs(n_frames=9, seed=1), family.inputs("what moves ?", n_frames=9, seed=2)]
    if family.arch != "llava-onevision":  # Qwen: videos of different lengths in one call
        items[1] = family.inputs("what moves ?", n_frames=5, seed=2)
    batch = family.batch(items)
    with torch.inference_mode():
        one = adapter.encode(batch)
        chunked = adapter.encode_chunked(batch, 4, all_fields=True)
    assert_close_outputs(one, chunked, True, f"{family.arch} batch")


def test_a_video_within_one_chunk_is_encoded_exactly_as_before(family):
    adapter = adapter_for(family.model)
    inputs = family.inputs(n_frames=DEFAULT_CHUNK_FRAMES)
    with torch.inference_mode():
        one, chunked = adapter.encode(inputs), adapter.encode_chunked(inputs)
    for x, y in zip(_per_video(one.pooler_output), _per_video(chunked.pooler_output)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("applied_first", [False, True], ids=["encoded-before-apply", "encoded-while-applied"])
def test_generate_with_chunked_features_gives_the_same_tokens(family, applied_first):
    """``generate(**inputs_without_pixels, mm_encoder_outputs={"video": chunked})`` under SharpV
    equals ``generate(**inputs)``. Qwen keeps ``video_grid_thw`` in the inputs (generate() drops it
    next to precomputed features; the chunked output carries the grid for the runtime). Encoding
    while the method is applied runs the vision tower on chunk grids under the runtime's hooks."""
    model = family.model
    adapter = adapter_for(model)
    inputs = family.inputs(n_frames=11, seed=3)
    rest = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    settings = dict(max_new_tokens=6, do_sample=False)
    with torch.inference_mode():
        with sharpv.apply(model, keep_ratio=0.5) as handle:
            expected = model.generate(**inputs, **settings)
            kept = handle.stats.visual_tokens_kept
        if not applied_first:
            chunked = adapter.encode_chunked(inputs, 4)
        with sharpv.apply(model, keep_ratio=0.5) as handle:
            if applied_first:
                chunked = adapter.encode_chunked(inputs, 4)
            got = model.generate(**rest, mm_encoder_outputs={"video": chunked}, **settings)
            assert handle.stats.visual_tokens_kept == kept
    assert torch.equal(got, expected), (got.tolist(), expected.tolist())


def test_generate_without_sharpv_takes_the_chunked_features(family):
    model = family.model
    inputs = family.inputs(n_frames=10, seed=4)
    rest = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    with torch.inference_mode():
        chunked = adapter_for(model).encode_chunked(inputs, 3)
        expected = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        got = model.generate(**rest, mm_encoder_outputs={"video": chunked}, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, expected)


def test_shipped_model_chunked():
    shipped = Family("llava-onevision", shipped_model_path())
    adapter = adapter_for(shipped.model)
    inputs = build_inputs(shipped.processor, "what color is the square ?", textured_video(21, 64, 64))
    rest = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    with torch.inference_mode():
        one = adapter.encode(inputs)
        chunked = adapter.encode_chunked(inputs, 8)
        assert_close_outputs(one, chunked, False, "shipped")
        with sharpv.apply(shipped.model, keep_ratio=0.5):
            expected = shipped.model.generate(**inputs, max_new_tokens=8, do_sample=False)
        with sharpv.apply(shipped.model, keep_ratio=0.5):
            got = shipped.model.generate(**rest, mm_encoder_outputs={"video": chunked}, max_new_tokens=8, do_sample=False)
    assert torch.equal(got, expected)


def test_bad_chunk_sizes_and_grids_are_refused(family):
    adapter = adapter_for(family.model)
    inputs = family.inputs(n_frames=4)
    with pytest.raises(SharpVError, match="chunk_frames must be at least 1"):
        adapter.encode_chunked(inputs, 0)
    if family.arch != "llava-onevision":
        bad = {**inputs, "video_grid_thw": inputs["video_grid_thw"] * torch.tensor([[2, 1, 1]])}
        with pytest.raises(SharpVError, match="patch rows"):
            adapter.encode_chunked(bad, 4)


def test_precompute_video_features_is_a_drop_in_for_the_pixels(family):
    """The one call the answer job needs: inputs with the pixels swapped for chunked features."""
    model = family.model
    inputs = family.inputs(n_frames=12, seed=5)
    ready = precompute_video_features(model, inputs, chunk_frames=4)
    assert "pixel_values_videos" not in ready and set(ready) == set(inputs) - {"pixel_values_videos"} | {"mm_encoder_outputs"}
    if "video_grid_thw" in inputs:
        assert ready["video_grid_thw"] is inputs["video_grid_thw"]
    with torch.inference_mode():
        with sharpv.apply(model, keep_ratio=0.5):
            expected = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        with sharpv.apply(model, keep_ratio=0.5):
            got = model.generate(**ready, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, expected)
