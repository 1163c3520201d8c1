"""Stage 2 at run time: decoder-layer hooks that measure similarities and withdraw visual tokens.

Owned by :class:`sharpv.runtime.AppliedSharpV`, which tells it when a pruned prompt's prefill
starts (which columns are visual), when it ends (the cache it filled) and when decode steps run.
Nothing here reads attention weights: the decision uses the hidden states entering each layer.

- ``withdraw``: at the first layer l >= the earliest allowed layer where ``s_l < M`` (or, with
  token granularity, per token), the visual tokens leave the hidden states, so that layer and
  every later one neither computes nor caches them.
- ``layerwise``: every layer whose ``s_l < M`` (or per token) has its visual entries cut out of its
  cache after the prefill; hidden states flow on unchanged, so only memory and decode cost shrink.

Layers then hold caches of different lengths; every layer's attention mask (when one is
materialised: padding, eager attention) is rebuilt for exactly the columns it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sharpv.core.kv import Layout, gather_seq, layer_similarity, layout_mask, token_similarity
from sharpv.core.positions import take


@dataclass
class KVReport:
    mode: str
    granularity: str
    threshold: float
    withdraw_layer: int | None = None
    layer_similarity: list[float] = field(default_factory=list)


@dataclass
class _Prefill:
    visual: torch.Tensor  # (B, L') bool: visual columns of the prompt
    valid: torch.Tensor  # (B, L') bool: non-padding columns
    current: Layout
    shrunk: bool = False
    embeds: torch.Tensor | None = None
    drops: dict[int, torch.Tensor] = field(default_factory=dict)


def cache_sizes(cache: Any, full_length: int) -> tuple[list[int], list[int], int]:
    """Bytes and lengths per layer of a filled cache, and the bytes an unpruned prompt of
    ``full_length`` tokens would take (length x kv heads x head dim x 2 x dtype size, per layer)."""
    layers = [layer for layer in cache.layers if getattr(layer, "keys", None) is not None and layer.keys.numel()]
    sizes = [int(l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size()) for l in layers]
    lengths = [int(l.keys.shape[-2]) for l in layers]
    dense = 0
    if layers:
        k = layers[0].keys
        dense = 2 * k.shape[0] * k.shape[1] * k.shape[3] * k.element_size() * full_length * len(layers)
    return sizes, lengths, dense


class MemorySharpV:
    """Decoder-layer hooks implementing stage 2 for one model (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, adapter: Any, config: Any):
        self.config = config
        self.layers = adapter.decoder_layers()
        self.min_layer = config.kv_min_layer
        if config.kv_mode == "withdraw":
            self.min_layer = max(self.min_layer, adapter.min_withdraw_layer())
        text_config = model.config.get_text_config()
        impl = str(getattr(text_config, "_attn_implementation", None) or "sdpa")
        self.mask_kind = "2d" if "flash" in impl else ("additive" if impl == "eager" else "bool")
        self.report: KVReport | None = None
        self._prefill: _Prefill | None = None
        self._layouts: list[Layout | None] = []
        self._prompt_length = 0
        self._appended = 0
        self._query = 0
        self._decoding = False
        self._handles = [
            layer.register_forward_pre_hook(self._hook_for(i), with_kwargs=True) for i, layer in enumerate(self.layers)
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.reset()

    def reset(self) -> None:
        """Forget the current prompt: later calls run untouched until the next pruned prefill."""
        self._prefill = None
        self._decoding = False

    # --- phases driven by the stage 1 runtime -----------------------------------------------
    def begin_prefill(self, visual: torch.Tensor, valid: torch.Tensor) -> None:
        cfg = self.config
        self.report = KVReport(cfg.kv_mode, cfg.kv_granularity, cfg.kv_threshold)
        self._prefill = _Prefill(visual.bool(), valid.bool(), Layout.identity(valid))
        self._layouts = [None] * len(self.layers)
        self._prompt_length = visual.shape[1]
        self._decoding = False

    def end_prefill(self, cache: Any) -> None:
        state, self._prefill = self._prefill, None
        if state is None:
            return
        if cache is None or not hasattr(cache, "layers"):
            self._decoding = False
            return
        for idx, drop in state.drops.items():
            layout, plan = Layout.identity(state.valid).shrink(~drop)
            layer = cache.layers[idx]
            layer.keys = gather_seq(layer.keys, plan.index, dim=-2, batch_dim=0)
            layer.values = gather_seq(layer.values, plan.index, dim=-2, batch_dim=0)
            self._layouts[idx] = layout
        self._appended = 0
        self._decoding = True

    def begin_step(self, new_tokens: int) -> None:
        self._appended += new_tokens
        self._query = new_tokens

    # --- layer hooks ------------------------------------------------------------------------
    def _hook_for(self, idx: int):
        def hook(module, args, kwargs):
            if self._prefill is not None:
                return self._prefill_layer(idx, args, kwargs)
            if self._decoding and self._layouts[idx] is not None:
                return self._decode_layer(idx, args, kwargs)
            return None

        return hook

    def _hidden(self, args, kwargs) -> tuple[torch.Tensor, bool]:
        if args:
            return args[0], True
        return kwargs["hidden_states"], False

    def _prefill_layer(self, idx: int, args, kwargs):
        cfg, state = self.config, self._prefill
        hidden, positional = self._hidden(args, kwargs)
        if idx == 0:
            state.embeds = hidden.detach()
        cur = state.current
        visual = torch.gather(state.visual, 1, cur.index) & cur.valid
        if bool(visual.any()):
            embeds = gather_seq(state.embeds, cur.index, dim=-2) if state.shrunk else state.embeds
            sim = token_similarity(hidden, embeds)
            per_row = layer_similarity(sim, visual)
            rows = visual.any(-1)
            self.report.layer_similarity.append(float(per_row[rows].mean()))
            drop = torch.zeros_like(visual)
            if idx >= self.min_layer:
                if cfg.kv_granularity == "layer":
                    drop = visual & (per_row < cfg.kv_threshold)[:, None]
                else:
                    drop = visual & (sim < cfg.kv_threshold)
            if bool(drop.any()):
                if self.report.withdraw_layer is None:
                    self.report.withdraw_layer = idx
                if cfg.kv_mode == "withdraw":
                    state.current, plan = cur.shrink(~drop)
                    state.shrunk = True
                    hidden = take(hidden, plan)
                else:
                    state.drops[idx] = drop
        if not state.shrunk:
            return None
        layout = state.current
        self._layouts[idx] = layout
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = layout_mask(
            layout, layout, 0, 0, kwargs.get("attention_mask"), self._prompt_length, self.mask_kind, hidden.dtype
        )
        if kwargs.get("position_embeddings") is not None:
            kwargs["position_embeddings"] = tuple(gather_seq(t, layout.index, dim=-2) for t in kwargs["position_embeddings"])
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = gather_seq(kwargs["position_ids"], layout.index, dim=-1)
        if positional:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _decode_layer(self, idx: int, args, kwargs):
        hidden, _ = self._hidden(args, kwargs)
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = layout_mask(
            self._layouts[idx], None, self._appended, self._query, kwargs.get("attention_mask"),
            self._prompt_length, self.mask_kind, hidden.dtype,
        )
        return args, kwargs
