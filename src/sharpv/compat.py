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

The KV cache's name moves between transformers releases: up to 5.24 ``generate()`` hands it to the
model as ``past_key_values=`` and outputs carry ``.past_key_values``; from 5.25 both are ``cache``
(the old name is still accepted, with a deprecation warning, until 5.40). :func:`cache_key` finds
the installed release's name by feature (the field of transformers' own output class), every call
sharpv makes uses it, and the runtime reads a cache under each name the installed release
understands (:func:`cache_keys`). A cache that arrives under any other name, or in a form the
runtime was not built for, while a pruned cache is live is refused (:func:`check_cache_handover`):
a continuation sharpv cannot map would run at the wrong positions and answer wrongly, silently.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def cache_key() -> str:
    """The keyword (and output field) under which the installed transformers passes the KV cache:
    ``"cache"`` from 5.25 on, ``"past_key_values"`` before. Found by feature, not by version."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def cache_keys() -> tuple[str, ...]:
    """Every keyword under which the installed transformers' models take a cache: the current
    name first, then ``past_key_values`` while it is still accepted as a deprecated alias."""
    key = cache_key()
    return (key,) if key == "past_key_values" else (key, "past_key_values")


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model(...)`` / ``generate(...)`` under the installed release's name."""
    return {cache_key(): cache}


def output_cache(output: Any) -> Any:
    """The cache a forward or ``generate()`` output carries (None when it carries none), read
    under the installed release's name (no deprecation warning)."""
    if output is None:
        return None
    if isinstance(output, dict):  # ModelOutput is a dict that skips None fields
        return output.get(cache_key())
    return getattr(output, cache_key(), None)


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def is_cache(value: Any) -> bool:
    """Whether ``value`` looks like a KV cache: a transformers ``Cache``, anything with a
    ``get_seq_length()``, or the legacy tuple of per-layer (key, value) tensors."""
    from transformers.cache_utils import Cache

    if isinstance(value, Cache) or callable(getattr(value, "get_seq_length", None)):
        return True
    return (
        isinstance(value, (tuple, list)) and len(value) > 0 and isinstance(value[0], (tuple, list))
        and len(value[0]) >= 2 and all(isinstance(t, torch.Tensor) for t in value[0][:2])
    )


def check_cache_handover(kwargs: dict[str, Any], pruned_live: bool) -> Any:
    """The cache a forward call continues, read under the names the installed transformers uses
    (:func:`cache_keys`). Raises when ``pruned_live`` (a pruned cache exists, or the call brings a
    video to prune) and a cache came in a way the runtime does not read: under another keyword,
    or as something other than a ``Cache`` with layers."""
    names = cache_keys()
    found = [(name, kwargs[name]) for name in names if kwargs.get(name) is not None]
    if not pruned_live:
        return found[0][1] if found else None
    stray = [name for name, value in kwargs.items() if name not in names and is_cache(value)]
    if stray:
        raise SharpVError(_drift_message(f"a KV cache as {stray[0]!r}, a name sharpv does not read (it reads {' or '.join(map(repr, names))})"))
    if len(found) > 1:
        raise SharpVError(_drift_message(f"two caches ({', '.join(repr(n) for n, _ in found)})"))
    cache = found[0][1] if found else None
    if cache is not None and (not callable(getattr(cache, "get_seq_length", None)) or getattr(cache, "layers", None) is None):
        raise SharpVError(_drift_message(f"a cache of type {type(cache).__name__} under {found[0][0]!r}, a form sharpv was not built for (a transformers Cache with layers)"))
    return cache


def _drift_message(what: str) -> str:
    return (
        f"this forward call passed {what}, while a pruned cache is live, on transformers {transformers_version()}: "
        "sharpv cannot map it onto the pruned prompt and it would run at the wrong positions; pass the cache as "
        f"{cache_key()}=..., or install a transformers release sharpv supports ({supported_transformers()})"
    )


def supported_transformers() -> str:
    """The transformers range this sharpv declares (and tests), from its installed metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        for requirement in requires("sharpv") or []:
            name = requirement.split(";")[0].strip()
            if name.lower().startswith("transformers") and not name[len("transformers"):][:1].isalnum():
                return name.replace(" ", "")
    except PackageNotFoundError:
        pass
    return "see sharpv's pyproject.toml"
