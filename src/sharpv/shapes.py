"""Real models' shapes with random weights, and synthetic inputs for them (nothing downloaded).

``build_shape_model("llava-onevision-0.5b")`` builds the architecture of that checkpoint from its
config values with random weights, so prefill and decode cost what the real model costs.
``synthetic_inputs`` makes a prompt (random token ids around the video placeholders) and either
precomputed visual features (the vision tower is skipped) or pixel inputs (it runs).

Precomputed features are synthetic and say so: each video is a static random frame repeated over
time plus per-frame noise of relative size ``noise`` and a block of tokens that moves every frame,
so temporal redundancy (what video token pruning exploits) is present but controlled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

SIGLIP_SO400M = dict(
    model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
    num_attention_heads=16, image_size=384, patch_size=14,
)
QWEN25_VISION = dict(
    depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
    temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2,
)


def _qwen2_text(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, tie: bool) -> dict:
    return dict(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=32768, tie_word_embeddings=tie,
        rms_norm_eps=1e-6,
    )


@dataclass(frozen=True)
class Shape:
    family: str  # adapter family
    text: dict
    source: str  # the checkpoint whose config these values come from


SHAPES: dict[str, Shape] = {
    "llava-onevision-0.5b": Shape("llava-onevision", _qwen2_text(896, 4864, 24, 14, 2, 152000, True),
                                  "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"),
    "llava-onevision-7b": Shape("llava-onevision", _qwen2_text(3584, 18944, 28, 28, 4, 152128, False),
                                "llava-hf/llava-onevision-qwen2-7b-ov-hf"),
    "qwen2.5-vl-3b": Shape("qwen2.5-vl", _qwen2_text(2048, 11008, 36, 16, 2, 151936, True), "Qwen/Qwen2.5-VL-3B-Instruct"),
    "qwen2.5-vl-7b": Shape("qwen2.5-vl", _qwen2_text(3584, 18944, 28, 28, 4, 152064, False), "Qwen/Qwen2.5-VL-7B-Instruct"),
}


def shape_config(name: str, tokens_per_frame: int = 196, vision_layers: int | None = None):
    """The transformers config of shape ``name``; the vision input size is set so that every
    frame (LLaVA-OneVision) or temporal step (Qwen2.5-VL) yields ``tokens_per_frame`` tokens.
    ``vision_layers`` keeps only that many encoder layers of the vision tower (the long-video
    bench uses it to reach 1024 frames on a CPU: every layer's activations have the full shape,
    so memory per chunk is unchanged, but vision time is not the real model's)."""
    from transformers import LlavaOnevisionConfig, Qwen2_5_VLConfig

    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; known shapes: {', '.join(SHAPES)}")
    side = math.isqrt(tokens_per_frame)
    if side * side != tokens_per_frame:
        raise ValueError(f"tokens per frame must be a square number (a square frame grid), got {tokens_per_frame}")
    shape = SHAPES[name]
    if vision_layers is not None and vision_layers < 1:
        raise ValueError(f"vision_layers must be at least 1, got {vision_layers}")
    depth = {} if vision_layers is None else {"depth" if shape.family != "llava-onevision" else "num_hidden_layers": vision_layers}
    if shape.family == "llava-onevision":
        # LLaVA-OneVision pools the patch grid 2x2 (rounding up): side s needs 2s - 1 or 2s patches.
        vision = dict(SIGLIP_SO400M, image_size=14 * (2 * side - 1) if side > 1 else 14, **depth)
        return LlavaOnevisionConfig(
            text_config=dict(shape.text, model_type="qwen2", rope_theta=1e6),
            vision_config=vision,
            image_token_index=151646, video_token_index=151647,
            vision_feature_layer=-1, vision_feature_select_strategy="full",
        )
    text = dict(shape.text, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(QWEN25_VISION, out_hidden_size=shape.text["hidden_size"], **depth),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    )


def build_shape_model(name: str, tokens_per_frame: int = 196, dtype: torch.dtype = torch.bfloat16,
                      device: str = "cpu", attn_implementation: str = "sdpa", seed: int = 0,
                      vision_layers: int | None = None):
    """A random-weight model with the architecture of shape ``name`` (``vision_layers``: see
    :func:`shape_config`). The weights are allocated and initialised on ``device`` itself (a 7B
    shape on a GPU takes seconds, not the minutes of a CPU initialisation and copy)."""
    from transformers import AutoModelForImageTextToText

    config = shape_config(name, tokens_per_frame, vision_layers)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    return model.to(device).eval()  # anything made on another device on purpose follows


def synthetic_features(frames: int, tokens: int, dim: int, noise: float = 0.3, seed: int = 0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(frames, tokens, dim) features: a static frame + per-frame noise + a moving block."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(tokens, dim, generator=g)
    video = base.expand(frames, -1, -1) + noise * torch.randn(frames, tokens, dim, generator=g)
    block = max(1, tokens // 16)
    for t in range(frames):
        start = (t * block) % tokens
        video[t, start : start + block] = torch.randn(min(block, tokens - start), dim, generator=g)
    return (video * 0.02 / video.std()).to(dtype)


def synthetic_inputs(model: torch.nn.Module, frames: int, tokens_per_frame: int, *, vision: str = "precomputed",
                     prefix: int = 14, question: int = 20, noise: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """Model inputs for one video of ``frames`` frames.

    ``vision="precomputed"`` passes ``mm_encoder_outputs`` (synthetic features, the vision tower is
    skipped); ``"real"`` passes pixels (random) that the vision tower encodes; ``"none"`` only the
    prompt (ids, mask and, for Qwen-VL, the video grid): the caller brings the pixels
    (:func:`synthetic_pixels`, frame range by frame range).
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    config = model.config
    family = "llava-onevision" if config.model_type == "llava_onevision" else "qwen"
    g = torch.Generator().manual_seed(seed + 1)
    vocab = min(config.get_text_config().vocab_size, 150000)
    dim = config.get_text_config().hidden_size
    device, dtype = model.device, model.dtype
    if family == "llava-onevision":
        steps, n_visual = frames, frames * tokens_per_frame + 1
    else:
        steps = max(1, frames // 2)
        n_visual = steps * tokens_per_frame
    if config.model_type == "qwen3_vl":
        # Qwen3-VL's layout: every temporal step is "<t seconds><vision_start> tokens <vision_end>".
        video = torch.cat([
            torch.cat([torch.randint(0, vocab, (3,), generator=g), torch.tensor([config.vision_start_token_id]),
                       torch.full((tokens_per_frame,), config.video_token_id), torch.tensor([config.vision_end_token_id])])
            for _ in range(steps)
        ])
    else:
        video = torch.full((n_visual,), config.video_token_id)
    ids = torch.cat([
        torch.randint(0, vocab, (prefix,), generator=g), video, torch.randint(0, vocab, (question,), generator=g),
    ])[None].to(device)
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    side = math.isqrt(tokens_per_frame)
    if family == "qwen":
        merge = config.vision_config.spatial_merge_size
        inputs["video_grid_thw"] = torch.tensor([[steps, side * merge, side * merge]], device=device)
        inputs["mm_token_type_ids"] = (ids == config.video_token_id).long() * 2
    if vision == "precomputed":
        feats = synthetic_features(steps, tokens_per_frame, dim, noise, seed, dtype).to(device)
        if family == "llava-onevision":
            newline = torch.zeros(1, 1, dim, dtype=dtype, device=device)
            pooled = torch.cat([feats.reshape(1, -1, dim), newline], dim=1)
        else:
            pooled = (feats.reshape(-1, dim),)
        output = BaseModelOutputWithPooling(pooler_output=pooled)
        if config.model_type == "qwen3_vl":
            from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

            deepstack = [(0.5 * pooled[0],) for _ in config.vision_config.deepstack_visual_indexes]
            output = BaseModelOutputWithDeepstackFeatures(pooler_output=pooled, deepstack_features=deepstack)
        inputs["mm_encoder_outputs"] = {"video": output}
    elif vision == "real":
        if family == "llava-onevision":
            size = config.vision_config.image_size
            inputs["pixel_values_videos"] = torch.randn(1, frames, 3, size, size, generator=g).to(device, dtype)
        else:
            vc = config.vision_config
            patches = steps * (side * merge) ** 2
            dim_in = 3 * vc.temporal_patch_size * vc.patch_size**2
            inputs["pixel_values_videos"] = torch.randn(patches, dim_in, generator=g).to(device, dtype)
    elif vision != "none":
        raise ValueError(f"vision must be precomputed, real or none, got {vision!r}")
    return inputs


def synthetic_pixels(model: torch.nn.Module, start: int, stop: int, tokens_per_frame: int, *, noise: float = 0.3,
                     seed: int = 0) -> dict[str, Any]:
    """Pixel inputs of frames ``[start, stop)`` of one synthetic video, in the model's own layout:
    ``pixel_values_videos`` (1, T, 3, S, S) for LLaVA-OneVision; patch rows and ``video_grid_thw``
    of the temporal steps ``[start // 2, stop // 2)`` for Qwen-VL (``start`` and ``stop`` even).

    Every frame is a function of (``seed``, its index) alone, so a video made chunk by chunk equals
    the video made at once. A frame is a static random image, plus per-frame noise of relative size
    ``noise``, plus a block that moves every frame (about 1/16 of the frame): temporal redundancy,
    as in :func:`synthetic_features`, but before the vision tower.
    """
    config = model.config
    device, dtype = model.device, model.dtype

    def frame(index: int, shape: tuple[int, ...]) -> torch.Tensor:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 7))  # the static image
        g = torch.Generator().manual_seed(seed * 1_000_003 + 11 + index)
        x += noise * torch.randn(shape, generator=g)
        if len(shape) == 3:  # (3, S, S): a square of a quarter of each side
            block = max(1, shape[1] // 4)
            at = (index * block) % shape[1]
            region = (slice(None), slice(at, at + block), slice(at, at + block))
        else:  # (patch rows, dim): 1/16 of the rows
            block = max(1, shape[0] // 16)
            at = (index * block) % shape[0]
            region = (slice(at, at + block),)
        x[region] = torch.randn(x[region].shape, generator=g)
        return x

    if config.model_type == "llava_onevision":
        size = config.vision_config.image_size
        frames = [frame(t, (3, size, size)).to(dtype) for t in range(start, stop)]  # never all in float32
        return {"pixel_values_videos": torch.stack(frames)[None].to(device)}
    vc = config.vision_config
    merge = vc.spatial_merge_size
    side = math.isqrt(tokens_per_frame) * merge
    dim_in = 3 * vc.temporal_patch_size * vc.patch_size**2
    steps = range(start // 2, max(start // 2 + 1, stop // 2))
    rows = torch.cat([frame(t, (side * side, dim_in)).to(dtype) for t in steps])
    return {"pixel_values_videos": rows.to(device),
            "video_grid_thw": torch.tensor([[len(steps), side, side]], device=device)}
