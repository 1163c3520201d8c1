"""VTW: withdraw every visual token after a fixed layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sharpv.methods.base import PruningMethod, check_choice, check_int, check_ratio


@dataclass(frozen=True)
class VTWConfig:
    """``layer``: K, the first layer without visual tokens. If None, K = round(keep_ratio * layers)
    so that visual tokens take ``keep_ratio`` of their dense layer compute (the shared budget), or
    half the layers when ``keep_ratio`` is None too; a derived K is kept within [the model's
    earliest withdrawal layer, layers - 1]."""

    keep_ratio: float | None = None
    layer: int | None = None
    positions: str = "original"

    def __post_init__(self) -> None:
        check_ratio(self.keep_ratio)
        if self.layer is not None:
            check_int(self.layer, "layer", 1)
        check_choice(self.positions, "positions", ("original", "compact"))

    def to_dict(self) -> dict:
        return asdict(self)


class VTW(PruningMethod):
    """VTW (Lin et al., "Boosting Multimodal Large Language Models with Visual Tokens Withdrawal
    for Rapid Inference", AAAI 2025): all visual tokens are withdrawn after layer K, so deeper
    layers neither compute nor cache them. Change for the shared interface: K is given directly (or
    derived from the budget) instead of being searched with the paper's KL-divergence criterion."""

    name = "vtw"
    config_class = VTWConfig

    def resolve_layer(self, n_layers: int, floor: int = 1) -> int:
        """K: the configured layer, else derived from the budget (never below the model's
        earliest withdrawal layer ``floor``, e.g. after Qwen3-VL's deepstack layers)."""
        cfg = self.config
        if cfg.layer is not None:
            return cfg.layer
        share = cfg.keep_ratio if cfg.keep_ratio is not None else 0.5
        return min(n_layers - 1, max(floor, round(share * n_layers)))

    def layer_policy(self, adapter: Any):
        from sharpv.layer_pruning import FixedLayerPolicy

        layer = self.resolve_layer(len(adapter.decoder_layers()), adapter.min_withdraw_layer())
        return FixedLayerPolicy(layer), "withdraw"
