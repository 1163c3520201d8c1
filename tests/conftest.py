"""Shared fixtures: one tiny random-weight model per supported family, saved and loaded back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AttentionInterface

from sharpv.tiny import ARCHES, build_tiny_model
from sharpv.video import SampledVideo, build_inputs, load_processor

torch.set_num_threads(2)

ATTENTION_CALLS = {"n": 0}


def _sdpa_without_weights(module, query, key, value, attention_mask, **kwargs):
    """SDPA that fails if anyone asks for attention weights, and never returns them."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    assert not kwargs.get("output_attentions"), "attention weights were requested"
    ATTENTION_CALLS["n"] += 1
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return out, None


AttentionInterface.register("sdpa_without_weights", _sdpa_without_weights)

FAMILIES = ARCHES  # every supported family runs the same matrix


def moving_square_video(n_frames: int = 8, seed: int = 0, size: int = 64) -> SampledVideo:
    """A textured static background with a square that moves: redundant and informative tokens."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    frames = np.repeat(background[None], n_frames, axis=0).copy()
    colour = rng.integers(0, 255, 3, dtype=np.uint8)
    for t in range(n_frames):
        x = (4 + 5 * t) % (size - 16)
        frames[t, 20:36, x : x + 16] = colour
    return SampledVideo(frames, list(range(n_frames)), n_frames, 4.0)


def extend(inputs: dict, tokens: torch.Tensor) -> dict:
    """``inputs`` with ``tokens`` (1, n) appended to the prompt (mask and token types follow)."""
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], tokens], dim=1)
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if "mm_token_type_ids" in inputs:
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(tokens)], dim=1)
    return out


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(root / arch, arch, seed=1) for arch in ARCHES}


class Family:
    """A loaded tiny model of one family, with helpers to build its inputs."""

    def __init__(self, arch: str, path, attn: str = "sdpa"):
        from transformers import AutoModelForImageTextToText

        self.arch = arch
        self.path = path
        self.model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=attn).eval()
        self.processor = load_processor(path, arch)

    def inputs(self, question: str = "what color is the square ?", n_frames: int = 8, seed: int = 0):
        return build_inputs(self.processor, question, moving_square_video(n_frames, seed))

    def batch(self, items: list[dict]) -> dict:
        """Left-pad single-sample inputs into one batch (the convention of decoder-only generation)."""
        pad = self.processor.tokenizer.pad_token_id
        length = max(x["input_ids"].shape[1] for x in items)
        out: dict = {}
        for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            if key not in items[0]:
                continue
            fill = pad if key == "input_ids" else 0
            rows = []
            for x in items:
                row = x[key]
                rows.append(torch.cat([row.new_full((1, length - row.shape[1]), fill), row], dim=1))
            out[key] = torch.cat(rows)
        for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
            if key in items[0]:
                out[key] = torch.cat([x[key] for x in items])
        return out


@pytest.fixture(scope="session", params=FAMILIES)
def family(request, tiny_dirs) -> Family:
    return Family(request.param, tiny_dirs[request.param])
