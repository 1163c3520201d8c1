"""FastV: keep the visual tokens the last prompt token attends to most, from layer K on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sharpv.methods.base import MethodConfig, PruningMethod, check_int


@dataclass(frozen=True)
class FastVConfig(MethodConfig):
    """``layer``: K, the first layer that sees only the kept visual tokens (FastV's K = 2);
    ``keep_ratio``: share of visual tokens kept from layer K on."""

    layer: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.layer, "layer", 1)


class FastV(PruningMethod):
    """FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024): after layer
    K-1, rank the visual tokens by the attention the last prompt token pays them (averaged over
    heads) and drop all but the top ``keep_ratio`` share for layers >= K. FastV needs attention
    scores of that one layer; here they are computed from layer K-1's own queries and keys in a
    hook (attention everywhere keeps running in SDPA/FlashAttention) and their time is reported as
    ``extra_seconds`` in the stats. Change for the shared interface: the budget is the share of
    visual tokens kept after K (FastV's R is the share dropped)."""

    name = "fastv"
    config_class = FastVConfig

    def layer_policy(self, adapter: Any):
        from sharpv.layer_pruning import AttentionPolicy

        return AttentionPolicy(self.config.layer, self.config.keep_ratio), "withdraw"
