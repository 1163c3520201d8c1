"""Random: uniformly random visual tokens, seeded (the paper's ablation baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core import select_tokens
from sharpv.core.baselines import budget_total, random_keep
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection, check_choice, check_int, check_ratio


@dataclass(frozen=True)
class RandomConfig(MethodConfig):
    """``counts="global"``: ``budget_total(keep_ratio, T, f) = max(1, round(keep_ratio * T * f))``
    tokens drawn over the whole video (never zero).
    ``counts="sharpv"``: in each frame, as many random tokens as SharpV keeps there (adaptive when
    ``keep_ratio`` is None): the paper's "random tokens at SharpV's per-frame ratios" ablation.
    ``seed`` makes every call reproducible."""

    counts: str = "global"
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.counts, "counts", ("global", "sharpv"))
        check_ratio(self.keep_ratio, allow_none=self.counts == "sharpv")
        check_choice(self.positions, "positions", ("original", "compact"))
        check_int(self.seed, "seed", 0)


class RandomTokens(PruningMethod):
    """Random token selection (uniform, seeded). Source: the random-token and random-ratio
    ablations of SharpV (arXiv 2511.08003, Sec. 4); with ``counts="sharpv"`` it isolates the value
    of SharpV's token choice from that of its per-frame budgets."""

    name = "random"
    config_class = RandomConfig

    @classmethod
    def has_adaptive(cls, settings: dict) -> bool:
        """Adaptive at SharpV's own per-frame counts only (``counts="sharpv"``)."""
        return settings.get("counts", RandomConfig.counts) == "sharpv"

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int]) -> VisualSelection:
        cfg = self.config
        n_frames, f = grid.shape[:2]
        generator = torch.Generator().manual_seed(cfg.seed)
        if cfg.counts == "global":
            keep = random_keep(n_frames, f, generator, total=budget_total(cfg.keep_ratio, n_frames, f))
        else:
            counts = select_tokens(grid, keep_ratio=cfg.keep_ratio).counts.tolist()
            keep = random_keep(n_frames, f, generator, counts=counts)
        return VisualSelection(keep.to(grid.device))
