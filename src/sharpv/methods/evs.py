"""Temporal-only pruning, as in vLLM's Efficient Video Sampling."""

from __future__ import annotations

import torch

from sharpv.core.baselines import budget_total, evs_keep
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection


class EVS(PruningMethod):
    """Efficient Video Sampling (Bagrov et al., "Efficient Video Sampling: Pruning Temporally
    Redundant Tokens for Faster VLM Inference", 2025; shipped in vLLM): the first frame is kept
    whole and the tokens most similar to the same position in the previous frame are dropped first,
    ranked over the whole video, down to a content-independent total ``budget_total(keep_ratio, T,
    f) = max(1, round(keep_ratio * T * f))``. If the budget is below one frame, the first frame's
    earliest tokens fill it."""

    name = "evs"
    config_class = MethodConfig

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int]) -> VisualSelection:
        n_frames, f = grid.shape[:2]
        return VisualSelection(evs_keep(grid, budget_total(self.config.keep_ratio, n_frames, f)))
