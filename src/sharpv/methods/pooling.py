"""Uniform spatial pooling of every frame's token grid."""

from __future__ import annotations

import torch

from sharpv.core.baselines import budget_total, pool_features, pooling_keep
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection


class Pooling(PruningMethod):
    """Uniform spatial average pooling, the content-blind baseline used by LLaVA-OneVision and
    LLaVA-Video themselves (bilinear/average pooling of the frame grid, Li et al. 2024; Zhang et al.
    2024). To hit the budget exactly, frame t is pooled into ``even_split(total, T)`` near-uniform
    rectangular windows (rows of windows with equal counts, the grid's aspect kept); each window's
    mean stands at the position of its centre token (the grid's shape comes from the adapter)."""

    name = "pooling"
    config_class = MethodConfig

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int]) -> VisualSelection:
        n_frames, f = grid.shape[:2]
        height, width = spatial
        keep, assign = pooling_keep(n_frames, height, width, budget_total(self.config.keep_ratio, n_frames, f))
        return VisualSelection(keep.to(grid.device), transform=lambda x: pool_features(x, assign))
