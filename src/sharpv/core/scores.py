"""Stage 1 scores: spatial and temporal importance, token scores, per-frame keep ratios.

All functions take visual features shaped ``(T, f, d)`` (frames, tokens per frame, channels) of
any float dtype on any device and return float32 tensors on the same device. Cost is O(T*f*d).
"""

from __future__ import annotations

import math

import torch

from sharpv.core.dissimilarity import unit


def _check(features: torch.Tensor) -> None:
    if features.dim() != 3:
        raise ValueError(f"features must be shaped (T, f, d), got {tuple(features.shape)}")
    if features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"features need at least one frame and one token, got {tuple(features.shape)}")


def importance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial (T, f) and temporal (T - 1, f) importance in one pass: every token is normalised
    once and both dissimilarities are read off the unit vectors."""
    _check(features)
    x = features.float()
    u = unit(x)
    spatial = (u - unit(x.mean(dim=1, keepdim=True))).norm(dim=-1)
    temporal = (u[1:] - u[:-1]).norm(dim=-1)
    return spatial, temporal


def spatial_importance(features: torch.Tensor) -> torch.Tensor:
    """``S_t[i] = Dissim(F_t[i], mean_j F_t[j])``, shaped (T, f)."""
    return importance(features)[0]


def temporal_importance(features: torch.Tensor) -> torch.Tensor:
    """``T_t[i] = Dissim(F_t[i], F_{t-1}[i])`` for t >= 2, shaped (T - 1, f)."""
    return importance(features)[1]


def combine(spatial: torch.Tensor, temporal: torch.Tensor, spatial_weight: float = 1.0) -> torch.Tensor:
    """``I_t = T_t + w * S_t`` (frame 1: ``I_1 = S_1``), shaped (T, f)."""
    scores = spatial * spatial_weight
    scores[0] = spatial[0]
    scores[1:] += temporal
    return scores


def keep_ratios(spatial: torch.Tensor, temporal: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``min(1, scale * ||T_t||_2 / (2 sqrt(f)))`` per frame (frame 1: ``||S_1||``), shaped (T,)."""
    norms = torch.cat([spatial[:1].norm(dim=1), temporal.norm(dim=1)])
    return (scale * norms / (2.0 * math.sqrt(spatial.shape[1]))).clamp(0.0, 1.0)


def token_scores(features: torch.Tensor, spatial_weight: float = 1.0) -> torch.Tensor:
    """``I_t = T_t + w * S_t`` (frame 1: ``I_1 = S_1``), shaped (T, f)."""
    return combine(*importance(features), spatial_weight)


def frame_keep_ratios(features: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Adaptive keep ratio per frame: ``min(1, scale * ||T_t||_2 / (2 sqrt(f)))``, shaped (T,).

    Frame 1 has no temporal term and uses ``||S_1||_2`` instead. The unscaled value is half the
    RMS dissimilarity, so it lies in [0, 1].
    """
    return keep_ratios(*importance(features), scale)
