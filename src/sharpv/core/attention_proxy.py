"""A feature-only stand-in for "attention a token receives" inside its frame.

Pruners such as VisionZip and FastVID rank tokens by the attention the vision encoder pays them
(the [CLS] / pooling-probe row, or the mean over all query rows). Only the projected features
reach a pre-LLM method here, so the attention is re-created from the features themselves: one
head of plain self-attention over the frame, ``softmax(X X^T / sqrt(d))``, and a token's score is
its column mean (the attention it receives, averaged over all query tokens). Float32, no weights,
no learned parameters.
"""

from __future__ import annotations

import math

import torch


def received_attention(frames: torch.Tensor) -> torch.Tensor:
    """Mean attention each token receives in its frame: frames (..., n, d) -> (..., n), float32.

    ``softmax(X X^T / sqrt(d))`` row-wise over the frame's n tokens, then the mean over rows (the
    columns sum to n over a frame, so the scores of a frame sum to 1)."""
    x = frames.float()
    logits = x @ x.transpose(-1, -2) / math.sqrt(x.shape[-1])
    return torch.softmax(logits, dim=-1).mean(dim=-2)


def top_counts_mask(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per row of ``scores`` (B, n), a mask of the ``counts[b]`` highest entries (ties: lower index
    first). ``-inf`` entries are chosen only if the count exceeds the finite entries."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return ranks < counts.to(scores.device)[:, None]
