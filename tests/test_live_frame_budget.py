"""Qwen3-VL's pixel budget covers the whole clip, so a live stream (frame size pinned at its first
chunk) equals the one-shot path only while the one-shot clip fits that budget (docs/api.md, "Live
video"). Run with -s to see the counts the docs quote."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText

import sharpv
from sharpv.streaming import LiveVideo
from sharpv.video import SampledVideo, build_inputs, load_processor

FRAMES = 8


def frames_of(height: int, width: int, n: int = FRAMES) -> np.ndarray:
    """A red square moving over a random texture."""
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)[None], n, axis=0).copy()
    side = max(8, min(height, width) // 4)
    for t in range(n):
        x = (t * width // (2 * n)) % (width - side)
        frames[t, height // 3: height // 3 + side, x: x + side] = (255, 0, 0)
    return frames


def held(model, processor, frames: np.ndarray) -> dict:
    """Visual tokens SharpV (adaptive, stage 2 off) keeps one-shot, and a live stream holds after
    every frame was pushed in chunks of 2, 4 and 8; with the frame size each one used."""
    n, height, width = frames.shape[:3]
    out = {}
    with torch.no_grad():
        with sharpv.apply(model, kv=False) as handle:
            model(**build_inputs(processor, "what moves ?", SampledVideo(frames, list(range(n)), n, 2.0)))
            out["one-shot"] = (handle.stats.videos[0].tokens_kept, processor.input_size(height, width, n))
        for chunk in (2, 4, 8):
            with sharpv.apply(model, kv=False) as handle:
                live = LiveVideo(handle, processor, fps=2.0, chunk_frames=chunk)
                live.push(frames)
                out[f"chunks of {chunk}"] = (live.visual_tokens, live._size)
    return out


@pytest.fixture(scope="module")
def qwen3(tiny_dirs):
    path = tiny_dirs["qwen3-vl"]
    return AutoModelForImageTextToText.from_pretrained(path).eval(), load_processor(path, "qwen3-vl")


def test_within_the_budget_every_chunk_size_holds_the_one_shot_tokens(qwen3):
    model, processor = qwen3
    counts = held(model, processor, frames_of(64, 64))  # 8 x 64 x 64 pixels: within the tiny model's budget
    print(counts)
    assert len({c for c in counts.values()}) == 1, counts


def test_past_the_budget_a_stream_pinned_on_a_shorter_first_chunk_holds_more(qwen3):
    model, processor = qwen3
    budget = processor.resolved["size"]["longest_edge"]
    assert FRAMES * 576 * 768 > budget >= 2 * 64 * 64 * FRAMES  # 8 frames of 768x576 are over it
    counts = held(model, processor, frames_of(576, 768))
    print(counts)
    one_shot, size = counts["one-shot"]
    assert counts["chunks of 8"] == (one_shot, size)  # the first chunk held the whole clip: same size
    for chunk in (2, 4):  # sized for fewer frames: larger frames, more tokens than one-shot
        tokens, pinned = counts[f"chunks of {chunk}"]
        assert pinned[0] * pinned[1] > size[0] * size[1] and tokens > one_shot, counts
