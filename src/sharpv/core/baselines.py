"""Token selections of the baseline methods, in plain torch, on (T, f, d) feature grids.

Every function returns a boolean keep mask (T, f) holding exactly the budget it is given, in the
original token order, so all methods line up at equal budgets. The methods compute that budget
with :func:`budget_total` (``max(1, round(keep_ratio * T * f))``: never zero tokens for a video),
re-exported here from :mod:`sharpv.core.selection`. Pooling also returns the pooled features
placed at each window's representative token.
"""

from __future__ import annotations

import math

import torch

from sharpv.core.dissimilarity import unit
from sharpv.core.selection import budget_total, select_budget

__all__ = [
    "budget_total", "dycoke_keep", "even_split", "evs_keep", "pool_features", "pooling_keep", "pooling_windows",
    "random_keep", "same_position_dissimilarity", "vidcom2_keep",
]


def even_split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers differing by at most one, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` highest ``scores`` (any shape; ties: lower flat index first)."""
    flat = scores.reshape(-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    return keep.view(scores.shape)


def random_keep(n_frames: int, f: int, generator: torch.Generator, total: int | None = None,
                counts: list[int] | None = None) -> torch.Tensor:
    """Uniformly random tokens: ``total`` over the whole video, or ``counts[t]`` in frame t."""
    if (total is None) == (counts is None):
        raise ValueError("pass exactly one of total or counts")
    keep = torch.zeros(n_frames * f, dtype=torch.bool)
    if total is not None:
        keep[torch.randperm(n_frames * f, generator=generator)[:total]] = True
        return keep.view(n_frames, f)
    keep = keep.view(n_frames, f)
    for t, k in enumerate(counts):
        keep[t, torch.randperm(f, generator=generator)[:k]] = True
    return keep


def pooling_windows(height: int, width: int, k: int) -> torch.Tensor:
    """Split an ``height x width`` grid into exactly ``k`` near-uniform rectangular windows.

    Returns, for every token (raster order), the raster index of its window's representative
    (the token at the window's centre). Rows of windows get ``k // a`` or ``k // a + 1`` windows,
    with ``a`` rows chosen to keep the windows close to the grid's aspect ratio.
    """
    if not 1 <= k <= height * width:
        raise ValueError(f"cannot pool a {height}x{width} grid into {k} windows")
    rows = min(height, max(1, round(math.sqrt(k * height / width))))
    while math.ceil(k / rows) > width:
        rows += 1
    assign = torch.empty(height, width, dtype=torch.long)
    per_row = even_split(k, rows)
    for r, cells in enumerate(per_row):
        top, bottom = (r * height) // rows, ((r + 1) * height) // rows
        for c in range(cells):
            left, right = (c * width) // cells, ((c + 1) * width) // cells
            centre = ((top + bottom - 1) // 2) * width + (left + right - 1) // 2
            assign[top:bottom, left:right] = centre
    return assign.view(-1)


def pooling_keep(n_frames: int, height: int, width: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform spatial pooling with an exact total: frame t is pooled into ``even_split`` windows.

    Returns the keep mask (the representatives) and the assignment (T, f) of every token to its
    representative, to average the features with :func:`pool_features`.
    """
    counts = even_split(total, n_frames)
    windows = {k: pooling_windows(height, width, k) if k else torch.full((height * width,), -1) for k in set(counts)}
    assign = torch.stack([windows[k] for k in counts])
    keep = torch.zeros(n_frames, height * width, dtype=torch.bool)
    rows = torch.arange(n_frames)[:, None].expand_as(assign)
    valid = assign >= 0
    keep[rows[valid], assign[valid]] = True
    return keep, assign


def pool_features(features: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Average ``features`` (T, f, d) over each window; the mean lands on the representative."""
    valid = assign >= 0
    idx = assign.clamp_min(0).to(features.device)
    sums = torch.zeros_like(features, dtype=torch.float32).scatter_add_(
        1, idx[..., None].expand(-1, -1, features.shape[-1]), features.float() * valid[..., None].to(features.device)
    )
    counts = torch.zeros(features.shape[:2], device=features.device).scatter_add_(1, idx, valid.float().to(features.device))
    pooled = sums / counts.clamp_min(1)[..., None]
    return torch.where((counts > 0)[..., None], pooled, features.float()).to(features.dtype)


def same_position_dissimilarity(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between each token and the token at the same position of ``reference``."""
    return 1.0 - (unit(features) * unit(reference)).sum(-1)


def evs_keep(features: torch.Tensor, total: int) -> torch.Tensor:
    """Efficient Video Sampling (temporal only): frame 1 whole, then the tokens least similar to the
    same position in the previous frame, ranked over the whole video (content-independent total)."""
    scores = torch.full(features.shape[:2], float("inf"), device=features.device)
    if features.shape[0] > 1:
        scores[1:] = same_position_dissimilarity(features[1:], features[:-1])
    return _top_k_mask(scores, total)


def dycoke_keep(features: torch.Tensor, total: int, window: int = 4) -> torch.Tensor:
    """DyCoke's temporal token merging: in windows of ``window`` frames the first frame stays
    whole; every later frame keeps its least-similar tokens (same position, against the window's
    first frame), the same count in every later frame (split evenly to hit ``total`` exactly)."""
    n_frames, f = features.shape[:2]
    firsts = list(range(0, n_frames, window))
    later = [t for t in range(n_frames) if t not in firsts]
    keep = torch.zeros(n_frames, f, dtype=torch.bool, device=features.device)
    first_budget = min(total, len(firsts) * f)
    for t, k in zip(firsts, even_split(first_budget, len(firsts))):
        # Only when the budget is below the first frames' size: evenly spaced tokens.
        keep[t, torch.linspace(0, f - 1, k).round().long().unique() if k < f else slice(None)] = True
    for t, k in zip(later, even_split(total - int(keep.sum()), len(later)) if later else []):
        ref = features[(t // window) * window]
        keep[t] = _top_k_mask(same_position_dissimilarity(features[t], ref), k)
    return keep


def vidcom2_keep(features: torch.Tensor, total: int, temperature: float = 0.1, min_tokens: int = 1) -> torch.Tensor:
    """VidCom2: frame budgets from each frame's uniqueness against the whole video (softmax of
    ``1 - cos(frame mean, video mean)`` / temperature), tokens by uniqueness against their frame
    and the video (``(1 - cos(x, frame mean)) + (1 - cos(x, video mean))``); exact total."""
    x = features.float()
    frame_mean = x.mean(1)
    video_mean = frame_mean.mean(0, keepdim=True)
    uniqueness = 1.0 - (unit(frame_mean) * unit(video_mean)).sum(-1)
    weights = torch.softmax(uniqueness / temperature, dim=0)
    scores = same_position_dissimilarity(x, frame_mean[:, None]) + same_position_dissimilarity(x, video_mean[:, None])
    return select_budget(scores, weights, total, min_tokens)
