"""Pruning inside the LLM: decoder-layer hooks that withdraw visual tokens or cut them out of the
cache, driven by a policy that decides, layer by layer, which visual tokens go.

Policies: :class:`SimilarityPolicy` (SharpV stage 2: hidden states against their own input
embeddings, no attention weights), :class:`FixedLayerPolicy` (VTW: all visual tokens at layer K)
and :class:`AttentionPolicy` (FastV: the visual tokens the last prompt token attends to least, at
layer K, from scores computed from layer K-1's queries and keys).

- ``withdraw``: dropped tokens leave the hidden states, so that layer and every later one neither
  computes nor caches them (prefill compute, KV memory and decode cost shrink).
- ``layerwise``: dropped tokens are cut out of that layer's cache after the prefill; hidden states
  flow on unchanged (only memory and decode cost shrink).

Layers then hold caches of different lengths; every layer's attention mask (when one is
materialised: padding, eager attention) is rebuilt for exactly the columns it holds.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from sharpv.compat import mask_kind
from sharpv.core.kv import Layout, gather_seq, layer_similarity, layout_mask, token_similarity
from sharpv.core.positions import take
from sharpv.core.selection import budget_total
from sharpv.errors import SharpVError


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


@dataclass
class LayerView:
    """What a policy sees at the entrance of a layer during the prefill."""

    index: int
    hidden: torch.Tensor  # (B, L_l, d) hidden states entering the layer
    embeds: torch.Tensor  # (B, L_l, d) input embeddings of the same columns
    visual: torch.Tensor  # (B, L_l) bool: visual columns still present
    valid: torch.Tensor  # (B, L_l) bool: non-padding columns


@dataclass
class PruningReport:
    """What the in-LLM pruning did during the last prefill."""

    mode: str
    withdraw_layer: int | None = None  # first layer that dropped anything
    layer_similarity: list[float] = field(default_factory=list)
    extra_seconds: float = 0.0  # policy work beyond the model's own (e.g. FastV's scores)


class LayerPolicy:
    """Decides which visual tokens a layer drops. Subclasses implement :meth:`drop`."""

    #: earliest layer the policy may drop at (the pruner also applies the model's own limit)
    min_layer: int = 1

    def bind(self, pruner: "LayerPruner") -> None:
        """Called once with the pruner: register extra hooks here if needed."""

    def start(self, report: PruningReport) -> None:
        self.report = report

    def drop(self, view: LayerView) -> torch.Tensor | None:
        raise NotImplementedError


class SimilarityPolicy(LayerPolicy):
    """SharpV stage 2: drop where ``cos(hidden, own input embedding)`` is below ``threshold``
    (the mean over the row's visual tokens for granularity "layer", each token for "token")."""

    def __init__(self, threshold: float, granularity: str, min_layer: int):
        self.threshold, self.granularity, self.min_layer = threshold, granularity, min_layer

    def drop(self, view: LayerView) -> torch.Tensor | None:
        sim = token_similarity(view.hidden, view.embeds)
        per_row = layer_similarity(sim, view.visual)
        self.report.layer_similarity.append(float(per_row[view.visual.any(-1)].mean()))
        if view.index < self.min_layer:
            return None
        if self.granularity == "layer":
            return view.visual & (per_row < self.threshold)[:, None]
        return view.visual & (sim < self.threshold)


class FixedLayerPolicy(LayerPolicy):
    """VTW: every visual token leaves at layer ``layer``."""

    def __init__(self, layer: int):
        self.layer = self.min_layer = layer

    def drop(self, view: LayerView) -> torch.Tensor | None:
        return view.visual if view.index == self.layer else None


class AttentionPolicy(LayerPolicy):
    """FastV: at layer K keep the ``keep_ratio`` share of each row's visual tokens that the last
    prompt token attends to most, averaged over heads, in layer K-1's attention (at least one
    token per row: :func:`~sharpv.core.selection.budget_total`).

    The scores are computed from layer K-1's own queries and keys (a pre-hook on its attention
    module recomputes q for the last token and k for all tokens, with the module's own projections,
    norms and rotary embedding); attention itself keeps running in SDPA. Their cost is reported as
    ``extra_seconds``.
    """

    def __init__(self, layer: int, keep_ratio: float):
        if layer < 1:
            raise ValueError(f"FastV's layer K must be >= 1, got {layer}")
        self.layer = self.min_layer = layer
        self.keep_ratio = keep_ratio
        self._scores: torch.Tensor | None = None

    def bind(self, pruner: "LayerPruner") -> None:
        attn = pruner.layers[self.layer - 1].self_attn
        pruner.extra_handles.append(attn.register_forward_pre_hook(self._score_hook(pruner), with_kwargs=True))

    def _score_hook(self, pruner: "LayerPruner"):
        def hook(module, args, kwargs):
            if not pruner.in_prefill:
                return None
            start = time.perf_counter()
            hidden = args[0] if args else kwargs["hidden_states"]
            self._scores = last_token_attention(module, hidden, kwargs["position_embeddings"], pruner.current_valid())
            self.report.extra_seconds += time.perf_counter() - start
            return None

        return hook

    def drop(self, view: LayerView) -> torch.Tensor | None:
        if view.index != self.layer or self._scores is None:
            return None
        scores, self._scores = self._scores, None
        drop = torch.zeros_like(view.visual)
        for row in range(view.visual.shape[0]):
            cols = view.visual[row].nonzero().squeeze(1)
            keep_n = budget_total(self.keep_ratio, 1, cols.numel()) if cols.numel() else 0
            order = torch.sort(scores[row, cols], descending=True, stable=True).indices
            drop[row, cols[order[keep_n:]]] = True
        return drop


def last_token_attention(attn: torch.nn.Module, hidden: torch.Tensor, position_embeddings, valid: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention probabilities of the last token over all tokens, (B, L), computed
    the way ``attn`` computes them (its projections, optional q/k norms and rotary function)."""
    b, n, _ = hidden.shape
    hd = attn.head_dim
    q = attn.q_proj(hidden[:, -1:]).view(b, 1, -1, hd)
    k = attn.k_proj(hidden).view(b, n, -1, hd)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    cos, sin = position_embeddings
    rotary = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb")
    q, _ = rotary(q, q, cos[..., -1:, :], sin[..., -1:, :])
    _, k = rotary(k, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q.float() @ k.float().transpose(-1, -2)).squeeze(2) * attn.scaling  # (B, H, L)
    logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1).mean(1)


@dataclass
class _Prefill:
    visual: torch.Tensor  # (B, L') bool: visual columns of the prompt
    valid: torch.Tensor  # (B, L') bool: non-padding columns
    current: Layout
    shrunk: bool = False
    embeds: torch.Tensor | None = None
    drops: dict[int, torch.Tensor] = field(default_factory=dict)
    cut_from: int | None = None  # a piece withdrawn whole: computed on, cut from the cache from here


@dataclass(frozen=True)
class DecodeStep:
    """One forward call that continues a pruned cache: which columns every layer holds."""

    layouts: list[Layout | None]  # per layer: the prompt columns it holds (None: all of them)
    prompt_length: int  # L', the prompt as fed after stage 1
    appended: int  # tokens after the prompt in the cache once this call has run (these included)
    query: int  # tokens this call feeds


class LayerPruner:
    """Decoder-layer hooks applying a :class:`LayerPolicy` in ``withdraw`` or ``layerwise`` mode.

    The pruner holds no state between calls: the runtime starts a prefill with
    :meth:`begin_prefill`, receives the per-layer layouts from :meth:`end_prefill` (it keeps them
    with the cache they describe), and hands them back for every call that continues that cache
    with :meth:`begin_step` / :meth:`end_step`. Several pruned caches can be alive at once.
    """

    def __init__(self, model: torch.nn.Module, adapter: Any, policy: LayerPolicy, mode: str = "withdraw"):
        self.policy, self.mode = policy, mode
        self.layers = adapter.decoder_layers()
        self.min_layer = policy.min_layer
        if mode == "withdraw":
            floor = adapter.min_withdraw_layer()
            if isinstance(policy, (FixedLayerPolicy, AttentionPolicy)) and policy.layer < floor:
                raise SharpVError(f"this model's visual tokens cannot leave before layer {floor}; pick a layer >= {floor}")
            self.min_layer = max(self.min_layer, floor)
        if isinstance(policy, (FixedLayerPolicy, AttentionPolicy)) and policy.layer >= len(self.layers):
            raise SharpVError(f"layer {policy.layer} does not exist: the model has {len(self.layers)} layers")
        self.mask_kind = mask_kind(model)
        self.report: PruningReport | None = None
        self._prefill: _Prefill | None = None
        self._step: DecodeStep | None = None
        self.extra_handles: list[Any] = []
        self._handles = [
            layer.register_forward_pre_hook(self._hook_for(i), with_kwargs=True) for i, layer in enumerate(self.layers)
        ]
        policy.bind(self)

    @property
    def in_prefill(self) -> bool:
        return self._prefill is not None

    def current_valid(self) -> torch.Tensor:
        return self._prefill.current.valid

    def remove(self) -> None:
        for h in self._handles + self.extra_handles:
            h.remove()
        self._handles, self.extra_handles = [], []
        self._prefill, self._step = None, None

    # --- phases driven by the runtime -------------------------------------------------------
    def begin_prefill(self, visual: torch.Tensor, valid: torch.Tensor, cached: list[int] | None = None) -> None:
        """Start a prefill of a prompt whose visual columns are ``visual`` (B, L'). ``cached``:
        the entries every layer already holds when the prompt is one piece of a chunked prefill
        (batch of one); the piece's own decisions then apply to its own visual tokens."""
        self.report = PruningReport(self.mode)
        self.policy.start(self.report)
        self._prefill = _Prefill(visual.bool(), valid.bool(), Layout.identity(valid))
        self._layouts: list[Layout | None] = [None] * len(self.layers)
        self._cached = list(cached) if cached is not None and any(cached) else None
        self._step = None

    def end_prefill(self, cache: Any) -> list[Layout | None] | None:
        """Finish the prefill: cut layerwise drops out of ``cache`` and return every layer's
        layout (None when the prefill did not run or left no cache)."""
        state, self._prefill = self._prefill, None
        if state is None or cache is None:
            return None
        for idx, drop in state.drops.items():
            layout, plan = Layout.identity(state.valid).shrink(~drop)
            layer = cache.layers[idx]
            before = self._cached[idx] if self._cached else 0  # entries of earlier pieces stay
            for name in ("keys", "values"):
                tensor = getattr(layer, name)
                piece = gather_seq(tensor[..., before:, :], plan.index, dim=-2, batch_dim=0)
                setattr(layer, name, torch.cat([tensor[..., :before, :], piece], dim=-2))
            self._layouts[idx] = layout
        if state.cut_from is not None:
            for idx in range(state.cut_from, len(cache.layers)):
                layer, before = cache.layers[idx], self._cached[idx] if self._cached else 0
                layer.keys, layer.values = layer.keys[..., :before, :], layer.values[..., :before, :]
        return list(self._layouts)

    def begin_step(self, step: DecodeStep) -> None:
        self._step = step

    def end_step(self) -> None:
        self._step = None

    # --- layer hooks ------------------------------------------------------------------------
    def _hook_for(self, idx: int):
        def hook(module, args, kwargs):
            if self._prefill is not None:
                return self._prefill_layer(idx, args, kwargs)
            if self._step is not None and self._step.layouts[idx] is not None:
                return self._decode_layer(idx, args, kwargs)
            return None

        return hook

    def _prefill_layer(self, idx: int, args, kwargs):
        state = self._prefill
        positional = bool(args)
        hidden = args[0] if positional else kwargs["hidden_states"]
        if idx == 0:
            state.embeds = hidden.detach()
        cur = state.current
        visual = torch.gather(state.visual, 1, cur.index) & cur.valid
        if state.cut_from is None and bool(visual.any()):
            embeds = gather_seq(state.embeds, cur.index, dim=-2) if state.shrunk else state.embeds
            drop = self.policy.drop(LayerView(idx, hidden, embeds, visual, cur.valid))
            if drop is not None and idx >= self.min_layer and bool(drop.any()):
                if self.report.withdraw_layer is None:
                    self.report.withdraw_layer = idx
                if self.mode == "withdraw" and not bool((cur.valid & ~drop).any()):
                    # A chunked-prefill piece made only of video tokens leaves whole: no column
                    # would remain to compute, so it is computed on (nothing after it in the piece
                    # could see the difference) and cut out of the cache from this layer on.
                    state.cut_from = idx
                elif self.mode == "withdraw":
                    state.current, plan = cur.shrink(~drop)
                    state.shrunk = True
                    hidden = take(hidden, plan)
                else:
                    state.drops[idx] = drop
        cached = self._cached[idx] if self._cached else None
        if not state.shrunk and (cached is None or cached == self._cached[0]):
            return None  # the model's own mask is right for this layer
        layout = state.current
        if state.shrunk:
            self._layouts[idx] = layout
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = layout_mask(
            layout, layout, 0, 0, kwargs.get("attention_mask"), state.visual.shape[1], self.mask_kind, hidden.dtype,
            cached=cached,
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
        hidden = args[0] if args else kwargs["hidden_states"]
        kwargs = dict(kwargs)
        step = self._step
        kwargs["attention_mask"] = layout_mask(
            step.layouts[idx], None, step.appended, step.query, kwargs.get("attention_mask"),
            step.prompt_length, self.mask_kind, hidden.dtype,
        )
        return args, kwargs
