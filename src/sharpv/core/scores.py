"""Stage 1 scores: spatial and temporal importance, token scores, per-frame keep ratios.

All functions take visual features shaped ``(T, f, d)`` (frames, tokens per frame, channels) of
any float dtype on any device and return float32 tensors on the same device. Cost is O(T*f*d).
"""

from __future__ import annotations

import math

import torch

from sharpv.core.dissimilarity import dissimilarity


def _check(features: torch.Tensor) -> None:
    if features.dim() != 3:
        raise ValueError(f"features must be shaped (T, f, d), got {tuple(features.shape)}")
    if features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"features need at least one frame and one token, got {tuple(features.shape)}")


def spatial_importance(features: torch.Tensor) -> torch.Tensor:
    """``S_t[i] = Dissim(F_t[i], mean_j F_t[j])``, shaped (T, f)."""
    _check(features)
    f32 = features.float()
    return dissimilarity(f32, f32.mean(dim=1, keepdim=True))


def temporal_importance(features: torch.Tensor) -> torch.Tensor:
    """``T_t[i] = Dissim(F_t[i], F_{t-1}[i])`` for t >= 2, shaped (T - 1, f)."""
    _check(features)
    return dissimilarity(features[1:], features[:-1])


def token_scores(features: torch.Tensor, spatial_weight: float = 1.0) -> torch.Tensor:
    """``I_t = T_t + w * S_t`` (frame 1: ``I_1 = S_1``), shaped (T, f)."""
    spatial = spatial_importance(features)
    scores = spatial * spatial_weight
    scores[0] = spatial[0]
    if features.shape[0] > 1:
        scores[1:] += temporal_importance(features)
    return scores


def frame_keep_ratios(features: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Adaptive keep ratio per frame: ``min(1, scale * ||T_t||_2 / (2 sqrt(f)))``, shaped (T,).

    Frame 1 has no temporal term and uses ``||S_1||_2`` instead. The unscaled value is half the
    RMS dissimilarity, so it lies in [0, 1].
    """
    _check(features)
    f = features.shape[1]
    norm = features.new_empty(features.shape[0], dtype=torch.float32)
    norm[0] = spatial_importance(features[:1])[0].norm()
    if features.shape[0] > 1:
        norm[1:] = temporal_importance(features).norm(dim=1)
    return (scale * norm / (2.0 * math.sqrt(f))).clamp(0.0, 1.0)
