"""Model-family adapters, chosen by ``config.model_type``."""

from __future__ import annotations

import torch

from sharpv.adapters.base import VideoGrids, VideoLLMAdapter
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


__all__ = [
    "ADAPTERS",
    "LlavaOnevisionAdapter",
    "Qwen3VLAdapter",
    "QwenVLAdapter",
    "VideoGrids",
    "VideoLLMAdapter",
    "adapter_class_for",
    "adapter_for",
    "supported_model_types",
]
