"""DyCoke's temporal token merging."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core.baselines import budget_total, dycoke_keep
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection, check_int


@dataclass(frozen=True)
class DyCokeConfig(MethodConfig):
    """``window``: frames per temporal window (DyCoke uses 4)."""

    window: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.window, "window", 1)


class DyCoke(PruningMethod):
    """DyCoke (Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language
    Models", CVPR 2025), stage 1 only (temporal token merging, TTM): frames are grouped in windows
    of 4; the first frame of each window is kept whole; each later frame keeps its tokens least
    similar (same-position cosine) to the window's first frame, the same count in every later frame.
    Changes for the shared interface: redundant tokens are dropped rather than averaged into their
    match (their match is kept, as in DyCoke's pruning of duplicates), the per-frame count is set by
    the common budget instead of DyCoke's similarity threshold, and DyCoke's decode-time dynamic
    KV pruning (stage 2) is not included."""

    name = "dycoke"
    config_class = DyCokeConfig

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int]) -> VisualSelection:
        n_frames, f = grid.shape[:2]
        total = budget_total(self.config.keep_ratio, n_frames, f)
        return VisualSelection(dycoke_keep(grid, total, self.config.window))
