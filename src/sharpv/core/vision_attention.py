"""Attention a vision-encoder patch receives, recomputed from one layer's queries and keys.

VisionZip, FastVID, FlashVID and HoliTom rank tokens by the attention the vision encoder pays them.
The encoder keeps running its own attention kernel (SDPA / FlashAttention, which never return
weights); a forward pre-hook on the chosen layer's attention module recomputes that layer's q and k
with the module's own projections (and rotary embedding) and calls :func:`received_attention_qk`,
which materialises one attention map at a time: one image / frame, or one ``cu_seqlens`` segment
(a Qwen temporal step, or a Qwen2.5-VL window).

Pure torch, float32, no model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class PatchAttention:
    """What one vision-tower call recorded: ``values``, the attention every patch received (float32;
    (N, P) for a tower that encodes N images of P patches, (P,) for a packed tower), in the order of
    the tower's input patches; ``seconds``: the time spent recomputing it; ``layer``: the encoder
    layer it was read from (non-negative index)."""

    values: torch.Tensor
    seconds: float
    layer: int


def received_attention_qk(
    query: torch.Tensor, key: torch.Tensor, scale: float, segments: Sequence[int] | None = None
) -> torch.Tensor:
    """Mean attention each position receives: ``query``/``key`` (H, n, hd) -> (n,) float32.

    The attention is ``softmax(q k^T * scale)`` per head over the keys of the query's segment
    (``segments``: lengths summing to n, block-diagonal attention as with ``cu_seqlens``; None: one
    segment). Position j's value is the mean over heads and over the query rows that can see it
    (the rows of its own segment) of the weight they give j. Every row sums to 1, so a segment's
    values sum to 1. Only one segment's (H, s, s) map exists at a time.

    A batch ``(B, H, n, hd)`` is B independent sequences (images); the result is (B, n)."""
    if query.dim() == 4:
        return torch.stack([received_attention_qk(q, k, scale, segments) for q, k in zip(query, key)])
    n = query.shape[-2]
    lengths = [n] if segments is None else [int(s) for s in segments]
    if sum(lengths) != n:
        raise ValueError(f"segment lengths {lengths} do not add up to {n} positions")
    out = []
    start = 0
    for length in lengths:
        q = query[:, start : start + length].float()
        k = key[:, start : start + length].float()
        weights = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)  # (H, s, s)
        out.append(weights.mean(dim=(0, 1)))
        start += length
    return torch.cat(out) if out else query.new_zeros(0, dtype=torch.float32)
