"""VidCom2: frame budgets from uniqueness, tokens by uniqueness."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core.baselines import budget_total, vidcom2_keep
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection, check_int


@dataclass(frozen=True)
class VidCom2Config(MethodConfig):
    """``temperature`` of the softmax over frame uniqueness; ``min_tokens_per_frame`` floor."""

    temperature: float = 0.1
    min_tokens_per_frame: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ValueError(f"temperature must be a number > 0, got {self.temperature!r}")
        check_int(self.min_tokens_per_frame, "min_tokens_per_frame", 0)


class VidCom2(PruningMethod):
    """VidCom2 (Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for
    Video Large Language Models", 2025): frames that are more unique against the whole video get
    larger budgets (softmax of ``1 - cos(frame mean, video mean)``), and inside a frame tokens are
    ranked by uniqueness against their frame and the video. Changes for the shared interface: the
    frame budgets are scaled to hit ``budget_total(keep_ratio, T, f) = max(1, round(keep_ratio * T *
    f))`` exactly (same search and largest-remainder top-up as SharpV's budget mode) and the
    uniqueness scores use plain cosine distances to the means."""

    name = "vidcom2"
    config_class = VidCom2Config

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int]) -> VisualSelection:
        cfg = self.config
        n_frames, f = grid.shape[:2]
        total = budget_total(cfg.keep_ratio, n_frames, f)
        return VisualSelection(vidcom2_keep(grid, total, cfg.temperature, cfg.min_tokens_per_frame))
