"""PyramidDrop: attention-ranked visual token dropping at several layers (a pyramid of stages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sharpv.methods.base import MethodConfig, PruningMethod, check_int

#: the model's depth is cut into this many stages when ``layers`` is not given (the paper's default)
DEFAULT_STAGES = 4


@dataclass(frozen=True)
class PyramidDropConfig(MethodConfig):
    """``layers``: the boundary layers, strictly increasing, each the first layer of a new stage
    (>= 1: its scores come from the layer before it). None: the quarter points of the model's depth
    L, ``round(L/4), round(L/2), round(3L/4)``, each kept within [the model's earliest withdrawal
    layer, L - 1] and merged where two coincide (resolved with the model, as VTW's K).
    ``keep_ratio``: the share of the video's visual tokens still present after the last boundary;
    every boundary keeps the same share lambda = keep_ratio ** (1 / len(layers)) of the tokens still
    present, so from the s-th boundary on a row holds ``budget_total(keep_ratio ** (s / len(layers)),
    1, n)`` of its n visual tokens (exact, never zero)."""

    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers is not None:
            if isinstance(self.layers, int) or not isinstance(self.layers, (tuple, list)) or not self.layers:
                raise ValueError(f"layers must be a non-empty sequence of layer indices or None, got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(self.layers))
            for k in self.layers:
                check_int(k, "layers", 1)
            if any(b <= a for a, b in zip(self.layers, self.layers[1:])):
                raise ValueError(f"layers must increase strictly, got {self.layers!r}")


class PyramidDrop(PruningMethod):
    """PyramidDrop (Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via
    Pyramid Visual Redundancy Reduction", CVPR 2025): the LLM is cut into stages (4 by default, at
    L/4, L/2, 3L/4); at each boundary the visual tokens still present are ranked by the attention
    the last prompt token pays them (averaged over heads) and only a share lambda goes on, so deeper
    stages hold geometrically fewer visual tokens. It needs attention scores of one query row at
    each boundary: they are computed from the previous layer's own queries and keys in a hook,
    SDPA/FlashAttention keeps running everywhere, and their time is reported as ``extra_seconds``
    in the stats. Visual tokens leave the hidden states and the cache from each boundary on.

    Differences from the official code (Cooperx521/PyramidDrop, LLaVA): the budget is the shared
    one (``keep_ratio`` = share left after the last stage, lambda = keep_ratio ** (1 / stages that
    drop)) instead of lambda itself; counts are rounded (at least one token) instead of truncated;
    the ranking at boundary K uses layer K-1's attention, as this project's FastV does, where the
    official code recomputes layer K's own q/k on the hidden states entering K; kept tokens keep
    their original position ids (the official code renumbers the shortened sequence); ties are
    broken by position (stable sort) instead of ``topk``; only inference (the training variant,
    which ranks by every answer-preceding token, is not implemented); and the default boundaries
    are clamped to the model's earliest withdrawal layer (Qwen3-VL's deepstack layers).
    """

    name = "pyramiddrop"
    config_class = PyramidDropConfig

    def resolve_layers(self, n_layers: int, floor: int = 1) -> tuple[int, ...]:
        """The boundary layers: the configured ones, else the quarter points of ``n_layers``
        within [``floor``, n_layers - 1], duplicates merged (fewer stages on very shallow models)."""
        if self.config.layers is not None:
            return self.config.layers
        points = (round(s * n_layers / DEFAULT_STAGES) for s in range(1, DEFAULT_STAGES))
        return tuple(sorted({min(n_layers - 1, max(floor, 1, k)) for k in points}))

    def stage_shares(self, n_layers: int, floor: int = 1) -> tuple[float, ...]:
        """Cumulative share of visual tokens present from each boundary on (the last is keep_ratio)."""
        count = len(self.resolve_layers(n_layers, floor))
        return tuple(self.config.keep_ratio ** (s / count) for s in range(1, count + 1))

    def layer_policy(self, adapter: Any):
        from sharpv.layer_pruning import AttentionPolicy

        n_layers, floor = len(adapter.decoder_layers()), adapter.min_withdraw_layer()
        layers = self.resolve_layers(n_layers, floor)
        shares = list(self.stage_shares(n_layers, floor))
        shares[-1] = self.config.keep_ratio  # exactly, not a float power's round trip
        return AttentionPolicy(layers, tuple(shares)), "withdraw"
