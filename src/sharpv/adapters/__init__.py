"""Model-family adapters, chosen by ``config.model_type``."""

from __future__ import annotations

import torch

from sharpv.adapters.base import DEFAULT_CHUNK_FRAMES, VideoGrids, VideoLLMAdapter
from sharpv.adapters.llava_onevision import LlavaOnevisionAdapter
from sharpv.adapters.qwen_vl import Qwen3VLAdapter, QwenVLAdapter
from sharpv.errors import UnsupportedModelError

ADAPTERS: tuple[type[VideoLLMAdapter], ...] = (LlavaOnevisionAdapter, QwenVLAdapter, Qwen3VLAdapter)


def supported_model_types() -> list[str]:
    return [t for cls in ADAPTERS for t in cls.model_types]


def adapter_class_for(model_type: str) -> type[VideoLLMAdapter]:
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls
    families = ", ".join(f"{cls.family} ({'/'.join(cls.model_types)})" for cls in ADAPTERS)
    raise UnsupportedModelError(f"model_type '{model_type}' is not supported; supported families: {families}")


def adapter_for(model: torch.nn.Module) -> VideoLLMAdapter:
    """The adapter for ``model``, chosen by ``model.config.model_type``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnsupportedModelError("the model has no `config.model_type`; pass a transformers video LLM")
    return adapter_class_for(model_type)(model)


def precompute_video_features(model: torch.nn.Module, inputs: dict, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> dict:
    """``inputs`` (processor outputs) with ``pixel_values_videos`` replaced by
    ``mm_encoder_outputs={"video": ...}``: the model's own video features, encoded
    ``chunk_frames`` frames at a time (:meth:`VideoLLMAdapter.encode_chunked`), one chunk at a time
    on the model's device. ``model.generate(**result, ...)`` (with or without a method applied)
    gives what ``model.generate(**inputs, ...)`` gives; the vision tower's peak memory is one
    chunk's. Every other input (``video_grid_thw`` included) is kept as it is."""
    if inputs.get("pixel_values_videos") is None:
        return dict(inputs)
    with torch.no_grad():
        features = adapter_for(model).encode_chunked(inputs, chunk_frames)
    out = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    out["mm_encoder_outputs"] = {**(inputs.get("mm_encoder_outputs") or {}), "video": features}
    return out


__all__ = [
    "ADAPTERS",
    "DEFAULT_CHUNK_FRAMES",
    "LlavaOnevisionAdapter",
    "Qwen3VLAdapter",
    "QwenVLAdapter",
    "VideoGrids",
    "VideoLLMAdapter",
    "adapter_class_for",
    "adapter_for",
    "precompute_video_features",
    "supported_model_types",
]
