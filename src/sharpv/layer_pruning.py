"""Pruning inside the LLM: decoder-layer hooks that withdraw visual tokens or cut them out of the
cache, driven by a policy that decides, layer by layer, which visual tokens go.

Policies: :class:`SimilarityPolicy` (SharpV stage 2: hidden states against their own input
embeddings, no attention weights), :class:`FixedLayerPolicy` (VTW: all visual tokens at layer K)
and :class:`AttentionPolicy` (FastV at one layer K, PyramidDrop at several: the visual tokens the
last prompt token attends to least, from scores computed from layer K-1's queries and keys).

- ``withdraw``: dropped tokens leave the hidden states, so that layer and every later one neither
  computes nor caches them (prefill compute, KV memory and decode cost shrink).
- ``layerwise``: dropped tokens are cut out of that layer's cache after the prefill; hidden states
  flow on unchanged (only memory and decode cost shrink).

Layers then hold caches of different lengths; every layer's attention mask (when one is
materialised: padding, eager attention) is rebuilt for exactly the columns it holds.

The pruner also counts, for every decoder layer, the visual tokens that layer computes during the
prefill (:attr:`PruningReport.visual_tokens_per_layer`, the basis of "equivalent retention").
"""

from __future__ import annotations

import itertools
import numbers
import sys
import time
from collections.abc import Sequence
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
    # per decoder layer, in order: the counted visual tokens (``begin_prefill``'s ``counted``, by
    # default every visual column) that layer computes, after its own withdrawal, summed over the
    # batch. Layerwise drops do not lower it (the layer still computes those tokens).
    visual_tokens_per_layer: list[int] = field(default_factory=list)


class LayerPolicy:
    """Decides which visual tokens a layer drops. Subclasses implement :meth:`drop`."""

    #: earliest layer the policy may drop at (the pruner also applies the model's own limit)
    min_layer: int = 1
    #: the layer whose entering hidden states :attr:`LayerView.embeds` holds from that layer on (0:
    #: the input embeddings)
    reference_layer: int = 0

    def bind(self, pruner: "LayerPruner") -> None:
        """Called once with the pruner: register extra hooks here if needed."""

    def start(self, report: PruningReport) -> None:
        self.report = report

    def drop(self, view: LayerView) -> torch.Tensor | None:
        raise NotImplementedError


class SimilarityPolicy(LayerPolicy):
    """SharpV stage 2: drop where ``cos(hidden, own input embedding)`` is below ``threshold``
    (the mean over the row's visual tokens for granularity "layer", each token for "token");
    ``ignore_channels`` are left out of the cosine (a model's massive-activation channels);
    ``reference_layer`` > 0 compares with the hidden states entering that layer instead of the
    input embeddings (layers before it report similarity 1 and never drop)."""

    def __init__(self, threshold: float, granularity: str, min_layer: int, ignore_channels: tuple[int, ...] = (),
                 reference_layer: int = 0):
        self.threshold, self.granularity, self.min_layer = threshold, granularity, min_layer
        if reference_layer >= min_layer:
            raise ValueError(f"reference_layer ({reference_layer}) must be below min_layer ({min_layer})")
        self.reference_layer = reference_layer
        self.ignore_channels = tuple(ignore_channels)
        self._ignore = torch.tensor(self.ignore_channels, dtype=torch.long) if self.ignore_channels else None

    def drop(self, view: LayerView) -> torch.Tensor | None:
        if self._ignore is not None and max(self.ignore_channels) >= view.hidden.shape[-1]:
            raise SharpVError(f"kv_ignore_channels holds channel {max(self.ignore_channels)}, but the language model's "
                              f"hidden size is {view.hidden.shape[-1]}; find the model's channels with `sharpv similarity`")
        if view.index < self.reference_layer:
            self.report.layer_similarity.append(1.0)
            return None
        sim = token_similarity(view.hidden, view.embeds, ignore=self._ignore)
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
        self.layers = (layer,)

    def drop(self, view: LayerView) -> torch.Tensor | None:
        return view.visual if view.index == self.layer else None


class AttentionPolicy(LayerPolicy):
    """Attention-ranked withdrawal at one layer (FastV) or several (PyramidDrop).

    ``layer``: K, or the increasing boundary layers K_1 < K_2 < ...; ``keep_ratio``: the share of
    each row's visual tokens kept from K on, or one cumulative share per boundary (non-increasing).
    At boundary K_s a row keeps, of the visual tokens it still holds, the ``budget_total(share_s, 1,
    n)`` (at least one) that the last prompt token attends to most, averaged over heads, in layer
    K_s - 1's attention; ``n`` is the number of visual tokens the row had entering the LLM, so the
    count after every boundary is exact relative to the input, not compounded from rounded counts.

    The scores are computed from layer K_s - 1's own queries and keys (a pre-hook on its attention
    module recomputes q for the last token and k for all tokens still present, with the module's
    own projections, norms and rotary embedding); attention itself keeps running in SDPA. Their
    cost is reported as ``extra_seconds``.
    """

    def __init__(self, layer: int | Sequence[int], keep_ratio: float | Sequence[float]):
        layers = (layer,) if isinstance(layer, numbers.Integral) else tuple(layer)
        shares = (keep_ratio,) if isinstance(keep_ratio, numbers.Real) else tuple(keep_ratio)
        if not layers or len(layers) != len(shares):
            raise ValueError(f"one keep share per boundary layer: got layers {layers} and shares {shares}")
        if any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in layers):
            raise ValueError(f"attention-ranked layers must be integers >= 1 (scores come from the layer before), got {layers}")
        if any(b <= a for a, b in itertools.pairwise(layers)):
            raise ValueError(f"boundary layers must increase strictly, got {layers}")
        if any(not 0.0 < float(r) <= 1.0 for r in shares) or any(b > a for a, b in itertools.pairwise(shares)):
            raise ValueError(f"keep shares must lie in (0, 1] and not increase, got {shares}")
        self.layers = tuple(int(k) for k in layers)
        self.shares = tuple(float(r) for r in shares)
        self.layer = self.min_layer = self.layers[0]
        self.keep_ratio = self.shares[-1]
        self._scores: torch.Tensor | None = None
        self._entering: torch.Tensor | None = None  # (B,) visual tokens per row entering the LLM

    def start(self, report: PruningReport) -> None:
        super().start(report)
        self._scores, self._entering = None, None

    def bind(self, pruner: "LayerPruner") -> None:
        for k in self.layers:
            attn = pruner.layers[k - 1].self_attn
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

    def keep_counts(self, entering: int) -> list[int]:
        """Visual tokens a row that entered the LLM with ``entering`` of them holds from each
        boundary on (the exact per-stage counts)."""
        return [min(entering, budget_total(r, 1, entering)) if entering else 0 for r in self.shares]

    def drop(self, view: LayerView) -> torch.Tensor | None:
        if self._entering is None:  # the first layer a prefill shows the policy: nothing dropped yet
            self._entering = view.visual.sum(-1)
        if view.index not in self.layers or self._scores is None:
            return None
        stage = self.layers.index(view.index)
        scores, self._scores = self._scores, None
        drop = torch.zeros_like(view.visual)
        for row in range(view.visual.shape[0]):
            cols = view.visual[row].nonzero().squeeze(1)
            if not cols.numel():
                continue
            keep_n = min(cols.numel(), self.keep_counts(int(self._entering[row]))[stage])
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
    counted: torch.Tensor | None = None  # (B, L') bool: columns counted in visual_tokens_per_layer
    computed: list[torch.Tensor] = field(default_factory=list)  # per layer: counted columns it computes


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
        named = tuple(getattr(policy, "layers", ()))  # the layers a policy drops at, when it names them
        if mode == "withdraw":
            floor = adapter.min_withdraw_layer()
            if named and min(named) < floor:
                raise SharpVError(f"this model's visual tokens cannot leave before layer {floor}; pick a layer >= {floor}")
            self.min_layer = max(self.min_layer, floor)
        if named and max(named) >= len(self.layers):
            raise SharpVError(f"layer {max(named)} does not exist: the model has {len(self.layers)} layers")
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
    def begin_prefill(self, visual: torch.Tensor, valid: torch.Tensor, cached: list[int] | None = None,
                      counted: torch.Tensor | None = None) -> None:
        """Start a prefill of a prompt whose visual columns are ``visual`` (B, L'). ``cached``:
        the entries every layer already holds when the prompt is one piece of a chunked prefill
        (batch of one); the piece's own decisions then apply to its own visual tokens.
        ``counted`` (B, L') bool: the columns :attr:`PruningReport.visual_tokens_per_layer` counts
        (default: ``visual``; the runtime leaves out always-kept extra tokens such as LLaVA-OneVision's
        newline after each video, which are not part of the video's T x f grid)."""
        self.report = PruningReport(self.mode)
        self.policy.start(self.report)
        self._prefill = _Prefill(visual.bool(), valid.bool(), Layout.identity(valid))
        self._prefill.counted = (counted if counted is not None else visual).bool() & valid.bool()
        self._layouts: list[Layout | None] = [None] * len(self.layers)
        self._cached = list(cached) if cached is not None and any(cached) else None
        self._step = None

    def end_prefill(self, cache: Any) -> list[Layout | None] | None:
        """Finish the prefill: cut layerwise drops out of ``cache`` and return every layer's
        layout (None when the prefill did not run or left no cache)."""
        state, self._prefill = self._prefill, None
        if state is not None and state.computed and self.report is not None:
            self.report.visual_tokens_per_layer = torch.stack(state.computed).tolist()
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
        if idx == 0 or idx == self.policy.reference_layer:
            state.embeds = hidden.detach()  # the reference of SimilarityPolicy (no column has left before it)
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
        # what this layer computes: the counted columns still in its hidden states (one host sync
        # for all layers, in end_prefill)
        state.computed.append((torch.gather(state.counted, 1, state.current.index) & state.current.valid).sum())
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
