"""What sharpv supports of transformers' attention implementations and KV caches, checked once.

Pruning cuts tokens out of the prompt and, inside the LLM, cuts entries out of the KV cache and
gives every layer an attention mask for exactly the columns it holds. That fixes what works:

- attention: ``sdpa`` and ``eager`` (4-D boolean / additive masks), ``flash_attention_2/3/4``
  (2-D padding masks), and attention functions registered by the user under a new name (they get
  boolean 4-D masks, as SDPA does). ``flex_attention`` takes ``BlockMask`` objects, which
  per-layer pruning does not build: it works with methods that prune before the LLM only.
  ``paged|...`` implementations serve continuous batching (``generate_batch``), which bypasses
  the hooks: refused.
- caches: the dynamic cache (``cache_implementation`` unset or ``"dynamic"``). ``"offloaded"``
  (a dynamic cache that moves layers to the CPU between uses) needs CUDA and has not been tested
  with pruning (no GPU in CI): refused until it is. Static caches (``"static"``, ``"offloaded_static"`` and the deprecated sliding-window/hybrid
  names) preallocate fixed-size tensors indexed by position, quantized caches store packed
  tensors, sliding-window layers evict by count: none of them can hold a shortened prompt.

Unsupported choices are refused with one line naming them and what works instead: at
``apply()`` when the model's configuration already says so, else at the first pruned call.
"""

from __future__ import annotations

from typing import Any

import torch

from sharpv.errors import SharpVError

DYNAMIC_CACHES = (None, "dynamic")
_WORKS = "load the model with attn_implementation='sdpa' (or 'eager', 'flash_attention_2')"


def attention_implementation(model: torch.nn.Module) -> str:
    """The language model's attention implementation (``"sdpa"`` when unset)."""
    text = model.config.get_text_config()
    return str(getattr(text, "_attn_implementation", None) or "sdpa")


def mask_kind(model: torch.nn.Module) -> str:
    """How this model's attention takes masks: ``"2d"`` (FlashAttention), ``"additive"``
    (eager) or ``"bool"`` (SDPA and user-registered functions)."""
    impl = attention_implementation(model)
    if impl.startswith("flash_attention"):
        return "2d"
    return "additive" if impl == "eager" else "bool"


def check_attention(model: torch.nn.Module, prunes_in_llm: bool) -> None:
    impl = attention_implementation(model)
    if impl.startswith("paged"):
        raise SharpVError(f"attn_implementation={impl!r} serves continuous batching, which sharpv cannot hook; {_WORKS}")
    if impl == "flex_attention" and prunes_in_llm:
        raise SharpVError(
            "attn_implementation='flex_attention' takes BlockMask masks, which pruning inside the LLM does not build; "
            f"{_WORKS}, or use a method that prunes before the LLM only (e.g. sharpv with kv=False)"
        )


def check_generation_config(model: torch.nn.Module) -> None:
    config = getattr(model, "generation_config", None)
    impl = getattr(config, "cache_implementation", None)
    if impl not in DYNAMIC_CACHES:
        raise SharpVError(_cache_message(repr(impl)))


def check_cache(cache: Any) -> None:
    """Refuse a cache that cannot hold a pruned prompt (see the module docstring)."""
    if cache is None:
        return
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if layers is None:
        raise SharpVError(_cache_message(type(cache).__name__))
    if getattr(cache, "offloading", False):
        raise SharpVError(_cache_message("'offloaded'"))
    for layer in layers:
        if type(layer) is not DynamicLayer:
            raise SharpVError(_cache_message(f"{type(cache).__name__} with {type(layer).__name__} layers"))


def _cache_message(what: str) -> str:
    return (
        f"cache {what} is not supported: pruning cuts entries out of the KV cache, which needs the dynamic cache; "
        "leave cache_implementation unset (or 'dynamic')"
    )
