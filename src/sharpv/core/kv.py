"""Stage 2 ("Memory SharpV") in plain torch: self-calibrated similarities and per-layer layouts.

A visual token's hidden state entering layer l is compared with its own input embedding (the
"original visual feature"): ``cos(H_l[i], E[i])``, in float32. The layer similarity ``s_l`` is the
mean over the visual tokens. No attention weights are involved.

A *layout* says which columns of the prompt (after stage 1) a layer holds: ``index`` (B, L_l)
into the prompt, ``valid`` (B, L_l) False on left padding. Withdrawing tokens shrinks a layout;
the helpers below apply a layout to hidden states, rotary tables and attention masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core.positions import Shortening, shorten


def token_similarity(hidden: torch.Tensor, embeds: torch.Tensor, eps: float = 1e-6,
                     ignore: torch.Tensor | None = None) -> torch.Tensor:
    """``cos(hidden[..., i, :], embeds[..., i, :])`` in float32 (zero vectors give 0, not NaN).

    ``ignore``: channel indices left out of both vectors (e.g. a model's massive-activation
    channels, which can dominate the raw cosine of every hidden state; see :func:`massive_channels`).
    """
    h, e = hidden.float(), embeds.float()
    if ignore is not None and ignore.numel():
        keep = torch.ones(h.shape[-1], dtype=torch.bool, device=h.device)
        keep[ignore.to(h.device)] = False
        h, e = h[..., keep], e[..., keep]
    return (h * e).sum(-1) / (h.norm(dim=-1) * e.norm(dim=-1)).clamp_min(eps)


def channel_magnitudes(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Largest ``|hidden|`` per channel over the valid positions (``valid`` (B, L) bool): (d,)."""
    h = hidden.float().abs() * valid[..., None]
    return h.reshape(-1, h.shape[-1]).amax(0)


def massive_channels(peaks: torch.Tensor, median: torch.Tensor | float, *, ratio: float = 100.0,
                     floor: float = 50.0) -> torch.Tensor:
    """The massive-activation channels of one layer: those whose peak magnitude ``peaks`` (d,)
    exceeds both ``floor`` and ``ratio`` times the layer's median magnitude ``median`` (Sun et al.,
    "Massive Activations in Large Language Models", 2024, flag values about 1,000x the median and
    above 100; the defaults here are looser so that the second tier of such channels counts too).
    Sorted channel indices (int64)."""
    limit = torch.maximum(torch.as_tensor(float(floor)), torch.as_tensor(median, dtype=torch.float32) * ratio)
    return torch.nonzero(peaks.float() > limit).flatten()


def layer_similarity(similarity: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Per-row mean of ``similarity`` (B, L) over the visual columns ``visual`` (B, L) bool; NaN-free
    (a row without visual tokens gets 1, i.e. nothing degraded)."""
    count = visual.sum(-1)
    total = (similarity * visual).sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))


@dataclass(frozen=True)
class Layout:
    """Columns of the prompt a layer holds (see the module docstring)."""

    index: torch.Tensor  # (B, L_l) long
    valid: torch.Tensor  # (B, L_l) bool

    @classmethod
    def identity(cls, valid: torch.Tensor) -> "Layout":
        b, n = valid.shape
        return cls(torch.arange(n, device=valid.device).expand(b, n), valid.bool())

    @property
    def length(self) -> int:
        return self.index.shape[1]

    def shrink(self, keep: torch.Tensor) -> tuple["Layout", Shortening]:
        """The layout holding only the valid columns where ``keep`` (B, L_l) is True."""
        plan = shorten(keep & self.valid)
        index = torch.gather(self.index, 1, plan.index)
        return Layout(torch.where(plan.valid, index, torch.zeros_like(index)), plan.valid), plan


def gather_seq(x: torch.Tensor, index: torch.Tensor, dim: int, batch_dim: int | None = None) -> torch.Tensor:
    """Gather ``x`` along sequence dim ``dim`` with a per-row ``index`` (B, L'). The batch dim is
    ``batch_dim`` (default: the dim right before ``dim``); size 1 there broadcasts to B."""
    dim = dim % x.dim()
    batch_dim = dim - 1 if batch_dim is None else batch_dim % x.dim()
    b, n = index.shape
    shape = list(x.shape)
    shape[batch_dim] = b
    x = x.expand(*shape)
    view = [1] * x.dim()
    view[batch_dim], view[dim] = b, n
    shape[dim] = n
    return torch.gather(x, dim, index.view(view).expand(shape))


def layout_mask(
    layout: Layout,
    queries: Layout | None,
    new_tokens: int,
    query_new: int,
    incoming: torch.Tensor | None,
    prompt_length: int,
    kind: str,
    dtype: torch.dtype = torch.float32,
    cached: int | None = None,
) -> torch.Tensor | None:
    """Attention mask for one layer that holds ``layout`` plus ``new_tokens`` appended tokens.

    ``cached`` (not None): the prefill of a prompt piece on top of ``cached`` entries this layer already
    holds (chunked prefill, batch of one without padding): every cached entry is visible and the
    piece's held columns are causal among themselves.

    ``queries`` is the layout of the query rows during prefill (None while decoding, where the
    queries are the last ``query_new`` appended tokens). ``incoming`` is the mask the model built
    for the unpruned layout (4-D, or 2-D for FlashAttention, or None). ``kind``: "bool" (SDPA),
    "additive" (eager) or "2d" (FlashAttention).
    """
    b = layout.index.shape[0]
    device = layout.index.device
    if cached is not None:
        return _after_cache_mask(layout, cached, kind, dtype)
    if incoming is None and kind != "2d" and bool(layout.valid.all()):
        # No padding anywhere: plain causal attention over the held columns, which the kernel
        # does without a mask (prefill) or needs no mask for (one new token).
        if queries is not None or query_new == 1:
            return None
    if kind == "2d":
        return torch.cat([layout.valid, layout.valid.new_ones(b, new_tokens)], dim=1).long()
    if incoming is not None:
        allowed = incoming if incoming.dtype == torch.bool else incoming == 0
        allowed = allowed.expand(b, *allowed.shape[1:])
        prefix = gather_seq(allowed[..., :prompt_length], layout.index, dim=-1, batch_dim=0) & layout.valid[:, None, None, :]
        cols = torch.cat([prefix, allowed[..., prompt_length:]], dim=-1)
        if queries is not None:
            cols = gather_seq(cols, queries.index, dim=-2, batch_dim=0)
    else:
        if queries is not None:
            causal = queries.index[:, :, None] >= layout.index[:, None, :]
            prefix = causal & layout.valid[:, None, :]
            cols = prefix[:, None]
        else:
            prefix = layout.valid[:, None, None, :].expand(b, 1, query_new, layout.length)
            steps = torch.arange(new_tokens, device=device)
            rows = torch.arange(query_new, device=device) + (new_tokens - query_new)
            cols = torch.cat([prefix, (steps[None, :] <= rows[:, None]).expand(b, 1, -1, -1)], dim=-1)
    if queries is not None:
        # Padding query rows attend to themselves only, so no row is fully masked (no NaN).
        eye = torch.eye(cols.shape[-2], cols.shape[-1], dtype=torch.bool, device=device)
        cols = cols | (~queries.valid[:, None, :, None] & eye)
    if kind == "bool":
        return cols
    out = torch.zeros(cols.shape, dtype=incoming.dtype if incoming is not None else dtype, device=device)
    return out.masked_fill(~cols, torch.finfo(out.dtype).min)


def _after_cache_mask(layout: Layout, cached: int, kind: str, dtype: torch.dtype) -> torch.Tensor:
    if layout.index.shape[0] != 1 or not bool(layout.valid.all()):
        raise ValueError("a prompt piece after cached entries must be one row without padding")
    n = layout.length
    device = layout.index.device
    if kind == "2d":
        return torch.ones(1, cached + n, dtype=torch.long, device=device)
    causal = layout.index[0][:, None] >= layout.index[0][None, :]
    cols = torch.cat([causal.new_ones(n, cached), causal], dim=-1)[None, None]
    if kind == "bool":
        return cols
    return torch.zeros(cols.shape, dtype=dtype, device=device).masked_fill(~cols, torch.finfo(dtype).min)
