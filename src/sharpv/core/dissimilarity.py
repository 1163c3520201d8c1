"""The SharpV dissimilarity: distance between unit-normalised vectors."""

from __future__ import annotations

import torch

EPS = 1e-6


def unit(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``x / max(|x|, eps)`` along the last dim, in float32 (a zero vector stays zero, never NaN)."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def dissimilarity(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``|| a/|a| - b/|b| ||_2 = sqrt(2 - 2 cos(a, b))`` along the last dim, in [0, 2], float32.

    Broadcasts like ``a - b``. A zero vector is treated as the origin of the unit sphere, so its
    dissimilarity to any unit vector is 1 and to another zero vector 0 (no NaN).
    """
    return (unit(a, eps) - unit(b, eps)).norm(dim=-1)
