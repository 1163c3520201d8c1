"""Stage 1 token selection: adaptive per-frame counts, or an exact total in budget mode.

Ties are broken deterministically: among equal scores the earlier token wins. Kept tokens keep
their original order (the result is a boolean mask over the (T, f) grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core.scores import combine, importance, keep_ratios

_BISECTION_STEPS = 60


@dataclass(frozen=True)
class Selection:
    """What stage 1 keeps: ``keep[t, i]`` is True for kept token i of frame t."""

    keep: torch.Tensor  # (T, f) bool
    scores: torch.Tensor  # (T, f) float32
    ratios: torch.Tensor  # (T,) float32, adaptive ratios before any budget scaling

    @property
    def counts(self) -> torch.Tensor:
        """Kept tokens per frame, shaped (T,)."""
        return self.keep.sum(dim=1)

    @property
    def total(self) -> int:
        return int(self.keep.sum())

    def flat_indices(self) -> torch.Tensor:
        """Indices of kept tokens in the flattened (T * f) order, ascending."""
        return self.keep.reshape(-1).nonzero().squeeze(1)


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every token inside its frame (0 = highest score; ties: lower index first)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks


def _counts(ratios: torch.Tensor, f: int, min_tokens: int) -> torch.Tensor:
    return torch.round(ratios * f).long().clamp(min=min(min_tokens, f), max=f)


def select_adaptive(scores: torch.Tensor, ratios: torch.Tensor, min_tokens: int = 1) -> torch.Tensor:
    """Keep the ``max(min_tokens, round(ratio_t * f))`` best tokens of every frame. Returns (T, f) bool."""
    f = scores.shape[1]
    counts = _counts(ratios, f, min_tokens)
    return _ranks(scores) < counts[:, None]


def select_budget(scores: torch.Tensor, ratios: torch.Tensor, total: int, min_tokens: int = 1) -> torch.Tensor:
    """Keep exactly ``total`` tokens, split across frames adaptively.

    Searches the scale K of ``min(1, K * ratio_t)`` by bisection for the largest count not above
    ``total``, then adds the remaining few tokens by score (each frame's next-best tokens compete
    globally). The per-frame floor is ``min(min_tokens, total // T)`` so that the total stays exact.
    """
    n_frames, f = scores.shape
    total = int(max(0, min(total, n_frames * f)))
    floor = min(min_tokens, total // n_frames)

    def count(k: float) -> torch.Tensor:
        return _counts((ratios * k).clamp(max=1.0), f, floor)

    lo, hi = 0.0, 1.0
    while int(count(hi).sum()) < total and hi < 1e12:
        lo, hi = hi, hi * 2.0
    if int(count(hi).sum()) <= total:
        lo = hi
    else:
        for _ in range(_BISECTION_STEPS):
            mid = (lo + hi) / 2.0
            if int(count(mid).sum()) <= total:
                lo = mid
            else:
                hi = mid
    counts = count(lo)
    ranks = _ranks(scores)
    keep = ranks < counts[:, None]
    deficit = total - int(counts.sum())
    if deficit > 0:
        # Candidates: every unkept token. Within a frame a higher score means a lower rank, so a
        # global top-k by score (ties: frame order, then rank) takes each frame's next ranks in order.
        key = scores.masked_fill(keep, float("-inf")).reshape(-1)
        flat_order = torch.sort(key, descending=True, stable=True).indices[:deficit]
        keep.view(-1)[flat_order] = True
    return keep


def select_tokens(
    features: torch.Tensor,
    *,
    keep_ratio: float | None = None,
    spatial_weight: float = 1.0,
    ratio_scale: float = 1.0,
    min_tokens_per_frame: int = 1,
) -> Selection:
    """Score ``features`` (T, f, d) and select tokens: adaptive when ``keep_ratio`` is None,
    otherwise budget mode with exactly ``round(keep_ratio * T * f)`` tokens."""
    spatial, temporal = importance(features)
    scores = combine(spatial, temporal, spatial_weight)
    # Budget mode searches the scale itself, so it starts from the unscaled ratios.
    ratios = keep_ratios(spatial, temporal, ratio_scale if keep_ratio is None else 1.0)
    if keep_ratio is None:
        keep = select_adaptive(scores, ratios, min_tokens_per_frame)
    else:
        n_frames, f = scores.shape
        keep = select_budget(scores, ratios, round(keep_ratio * n_frames * f), min_tokens_per_frame)
    return Selection(keep=keep, scores=scores, ratios=ratios)
