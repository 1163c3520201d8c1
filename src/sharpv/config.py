"""Configuration of SharpV, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

POSITION_MODES = ("original", "compact")


@dataclass(frozen=True)
class SharpVConfig:
    """Stage 1 ("Visual SharpV") settings.

    Attributes:
        keep_ratio: None for the adaptive ratio (the total kept depends on the video); a value in
            (0, 1] selects budget mode, which keeps exactly ``round(keep_ratio * T * f)`` tokens.
        spatial_weight: w in ``I_t = T_t + w * S_t`` (>= 0).
        ratio_scale: K in ``rho_t = min(1, K * ||T_t|| / (2 sqrt(f)))`` (> 0; the paper's manual
            mode uses 1.6). Ignored in budget mode, which searches K itself.
        min_tokens_per_frame: floor on the tokens kept in every frame (>= 0). In budget mode the
            floor is lowered to ``total // T`` when the budget is smaller than T floors.
        positions: "original" keeps every kept token's original position id (and text after the
            video keeps the position it had); "compact" renumbers the shortened sequence 0..n-1
            (for M-RoPE models all three planes take that number).
    """

    keep_ratio: float | None = None
    spatial_weight: float = 1.0
    ratio_scale: float = 1.0
    min_tokens_per_frame: int = 1
    positions: Literal["original", "compact"] = "original"

    def __post_init__(self) -> None:
        if self.keep_ratio is not None and not (
            isinstance(self.keep_ratio, (int, float)) and 0.0 < float(self.keep_ratio) <= 1.0
        ):
            raise ValueError(f"keep_ratio must be None (adaptive) or in (0, 1], got {self.keep_ratio!r}")
        if not isinstance(self.spatial_weight, (int, float)) or not self.spatial_weight >= 0.0:
            raise ValueError(f"spatial_weight must be a number >= 0, got {self.spatial_weight!r}")
        if not isinstance(self.ratio_scale, (int, float)) or not self.ratio_scale > 0.0:
            raise ValueError(f"ratio_scale must be a number > 0, got {self.ratio_scale!r}")
        if isinstance(self.min_tokens_per_frame, bool) or not isinstance(self.min_tokens_per_frame, int) or self.min_tokens_per_frame < 0:
            raise ValueError(f"min_tokens_per_frame must be an integer >= 0, got {self.min_tokens_per_frame!r}")
        if self.positions not in POSITION_MODES:
            raise ValueError(f"positions must be one of {', '.join(POSITION_MODES)}, got {self.positions!r}")

    @property
    def mode(self) -> str:
        return "adaptive" if self.keep_ratio is None else "budget"

    def to_dict(self) -> dict:
        return asdict(self)
