"""Dense: the unmodified model (the reference every other method is compared with)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sharpv.methods.base import PruningMethod


@dataclass(frozen=True)
class DenseConfig:
    """Dense takes no settings: every visual token reaches every layer."""

    keep_ratio: None = None
    positions: str = "original"

    def __post_init__(self) -> None:
        if self.keep_ratio is not None:
            raise ValueError("keep_ratio does not apply to dense: it keeps every visual token")

    def to_dict(self) -> dict:
        return asdict(self)


class Dense(PruningMethod):
    """No pruning. Applying it still records stats (token counts, KV bytes), so dense runs are
    measured by the same code path as every other method."""

    name = "dense"
    config_class = DenseConfig
