"""Stage 1 token selection: adaptive per-frame counts, or an exact total in budget mode.

Ties are broken deterministically: among equal scores the earlier token wins. Kept tokens keep
their original order (the result is a boolean mask over the (T, f) grid).

No video ever loses all its tokens: a budget keeps ``budget_total(r, T, f) = max(1, round(r*T*f))``
tokens (every pre-LLM method computes its total there), and the adaptive mode keeps one token
even when every frame's count rounds to zero (possible only with ``min_tokens_per_frame=0``).
"""

from __future__ import annotations

import numbers
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


def budget_total(keep_ratio: float, n_frames: int, tokens_per_frame: int) -> int:
    """The exact number of visual tokens a budget ``keep_ratio`` keeps in a video of ``n_frames``
    frames of ``tokens_per_frame`` tokens: ``max(1, round(keep_ratio * T * f))``.

    The floor of one token means no video ever disappears: it binds only when the rounded share
    is zero, i.e. ``keep_ratio * T * f <= 0.5`` (e.g. ``keep_ratio=0.001`` on 8 frames of 16
    tokens keeps 1 token, not 0); above that the total is the plain rounded share (Python's
    ``round``, half to even). This is the one place the total is computed: SharpV's budget mode
    and every pre-LLM baseline go through it.
    """
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, numbers.Real) or not 0.0 < float(keep_ratio) <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio!r}")
    for name, value in (("n_frames", n_frames), ("tokens_per_frame", tokens_per_frame)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    n = int(n_frames) * int(tokens_per_frame)
    return min(n, max(1, round(float(keep_ratio) * n)))


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every token inside its frame (0 = highest score; ties: lower index first)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks


def _counts(ratios: torch.Tensor, f: int, min_tokens: int) -> torch.Tensor:
    return torch.round(ratios * f).long().clamp(min=min(min_tokens, f), max=f)


def select_adaptive(scores: torch.Tensor, ratios: torch.Tensor, min_tokens: int = 1) -> torch.Tensor:
    """Keep the ``max(min_tokens, round(ratio_t * f))`` best tokens of every frame. Returns (T, f) bool.

    Video floor: if every frame's count is zero (only possible with ``min_tokens=0``), the frame
    with the largest ``ratio_t`` (ties: the earlier frame) keeps its best token, so the video never
    loses all its tokens.
    """
    f = scores.shape[1]
    counts = _counts(ratios, f, min_tokens)
    if int(counts.sum()) == 0:
        counts[int(torch.sort(ratios.float(), descending=True, stable=True).indices[0])] = 1
    return _ranks(scores) < counts[:, None]


def _top_up(counts: torch.Tensor, targets: torch.Tensor, deficit: int, f: int) -> torch.Tensor:
    """Largest-remainder apportionment of ``deficit`` extra tokens: in rounds, each frame with room
    (count < f) gets at most one, the frames with the largest ``target - count`` first (ties: the
    earlier frame)."""
    counts = counts.clone()
    while deficit > 0:
        room = counts < f
        n_room = int(room.sum())
        if n_room == 0:
            break
        remainder = (targets - counts).masked_fill(~room, float("-inf"))
        chosen = torch.sort(remainder, descending=True, stable=True).indices[: min(deficit, n_room)]
        counts[chosen] += 1
        deficit -= int(chosen.numel())
    return counts


def select_budget(scores: torch.Tensor, ratios: torch.Tensor, total: int, min_tokens: int = 1) -> torch.Tensor:
    """Keep exactly ``total`` tokens, split across frames adaptively.

    Searches the scale K of ``min(1, K * ratio_t)`` by bisection for the largest count not above
    ``total`` (frame t keeps ``round(min(1, K * ratio_t) * f)``). The few tokens still missing at
    that K (several frames can round up at the same K) are then added by a top-up that compares
    frames on one scale: the scale the split itself uses, the frame's scaled target
    ``min(1, K * ratio_t) * f``, not the raw token scores (frame 1's score ``S_1`` lies in [0, 2],
    later frames' ``T_t + w * S_t`` in [0, 4], so raw scores would starve frame 1). The deficit
    goes to the frames whose target has the largest remainder above their current count
    (largest-remainder apportionment: the frames closest to rounding up at the found K), ties by
    frame order, at most one extra token per frame per round (more rounds if the deficit exceeds
    the frames with room), never above f. Within a frame the extra token is the frame's next-best
    by its own score.

    The per-frame floor is ``min(min_tokens, total // T)`` so that the total stays exact. ``total``
    is taken as given (clamped to [0, T * f]); methods compute it with :func:`budget_total`, which
    never returns less than one token.
    """
    n_frames, f = scores.shape
    total = int(max(0, min(total, n_frames * f)))
    floor = min(min_tokens, total // n_frames)

    def scaled(k: float) -> torch.Tensor:
        return (ratios * k).clamp(max=1.0)

    def count(k: float) -> torch.Tensor:
        return _counts(scaled(k), f, floor)

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
    deficit = total - int(counts.sum())
    if deficit > 0:
        counts = _top_up(counts, scaled(lo) * f, deficit, f)
    return _ranks(scores) < counts[:, None]


def select_tokens(
    features: torch.Tensor,
    *,
    keep_ratio: float | None = None,
    spatial_weight: float = 1.0,
    ratio_scale: float = 1.0,
    min_tokens_per_frame: int = 1,
) -> Selection:
    """Score ``features`` (T, f, d) and select tokens: adaptive when ``keep_ratio`` is None,
    otherwise budget mode with exactly ``budget_total(keep_ratio, T, f) = max(1, round(keep_ratio
    * T * f))`` tokens (at least one token per video, see :func:`budget_total`)."""
    spatial, temporal = importance(features)
    scores = combine(spatial, temporal, spatial_weight)
    # Budget mode searches the scale itself, so it starts from the unscaled ratios.
    ratios = keep_ratios(spatial, temporal, ratio_scale if keep_ratio is None else 1.0)
    if keep_ratio is None:
        keep = select_adaptive(scores, ratios, min_tokens_per_frame)
    else:
        n_frames, f = scores.shape
        keep = select_budget(scores, ratios, budget_total(keep_ratio, n_frames, f), min_tokens_per_frame)
    return Selection(keep=keep, scores=scores, ratios=ratios)


def select_count(
    features: torch.Tensor, total: int, *, spatial_weight: float = 1.0, min_tokens_per_frame: int = 1
) -> Selection:
    """Budget mode with an exact token count: exactly ``total`` of the T x f tokens of ``features``
    (T, f, d), split over frames as :func:`select_tokens` splits a budget. For engines that fix the
    count themselves before the vision tower runs (vLLM's ``video_pruning_rate``)."""
    n_frames, f = features.shape[:2]
    if not 1 <= total <= n_frames * f:
        raise ValueError(f"total must be between 1 and {n_frames * f} (the video's tokens), got {total}")
    spatial, temporal = importance(features)
    scores = combine(spatial, temporal, spatial_weight)
    ratios = keep_ratios(spatial, temporal, 1.0)
    return Selection(keep=select_budget(scores, ratios, total, min_tokens_per_frame), scores=scores, ratios=ratios)
