"""SharpV (Qin et al., "Sharp Eyes and Memory for VideoLLMs", arXiv 2511.08003, AAAI 2026).

Stage 1 ("Visual SharpV") keeps, in every frame, the tokens with the highest spatial + temporal
dissimilarity, as many as the frame's own change warrants (adaptive ratio) or split adaptively
under an exact budget. Stage 2 ("Memory SharpV") withdraws the visual tokens inside the LLM from
the first layer where their hidden states no longer resemble their own input embeddings. Neither
stage reads attention weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from sharpv.core import select_tokens
from sharpv.methods.base import POSITION_MODES, PruningMethod, VisualSelection

KV_MODES = ("withdraw", "layerwise")
KV_GRANULARITIES = ("layer", "token")


@dataclass(frozen=True)
class SharpVConfig:
    """Stage 1 ("Visual SharpV") settings.

    Attributes:
        keep_ratio: None for the adaptive ratio (the total kept depends on the video); a value in
            (0, 1] selects budget mode, which keeps exactly ``max(1, round(keep_ratio * T * f))``
            tokens (``sharpv.core.selection.budget_total``; the floor of one token binds only when
            ``keep_ratio * T * f <= 0.5``: no video ever loses all its tokens).
        spatial_weight: w in ``I_t = T_t + w * S_t`` (>= 0).
        ratio_scale: K in ``rho_t = min(1, K * ||T_t|| / (2 sqrt(f)))`` (> 0; the paper's manual
            mode uses 1.6). Ignored in budget mode, which searches K itself.
        min_tokens_per_frame: floor on the tokens kept in every frame (>= 0). In budget mode the
            floor is lowered to ``total // T`` when the budget is smaller than T floors. With 0,
            the adaptive mode still keeps one token of the video (the best token of the frame
            with the largest ratio) when every frame's count rounds to zero.
        positions: "original" keeps every kept token's original position id (and text after the
            video keeps the position it had); "compact" renumbers the shortened sequence 0..n-1
            (for M-RoPE models all three planes take that number).

    Stage 2 ("Memory SharpV") settings:
        kv: run stage 2 (True) or stage 1 only (False).
        kv_threshold: M; a layer (or token) whose similarity to the input embedding is below M
            is pruned. In [-1, 2]: -1 never prunes, 2 always prunes.
        kv_mode: "withdraw" (visual tokens leave the sequence at the first such layer: saves
            prefill compute, KV memory and decode cost) or "layerwise" (every such layer drops its
            visual KV entries after the prefill: saves memory and decode cost only).
        kv_granularity: "layer" (the mean similarity decides for all visual tokens) or "token"
            (each token decides for itself, giving a pyramid of cache sizes).
        kv_min_layer: no layer below this one is pruned (>= 1; layer 0 sees the embeddings
            themselves). Qwen3-VL never withdraws before its last deepstack layer.
        kv_ignore_channels: hidden-state channels left out of the cosine (default none: the
            paper's rule). A language model with massive activations (a few channels hundreds of
            times larger than the rest, in every token) has its raw cosine dominated by them;
            ``sharpv similarity`` finds them on calibration videos and writes a config with them.
            A sequence of channel indices, or on the command line ``507+247``.
        kv_reference_layer: the hidden states the similarity compares with: those entering this
            decoder layer (0, the default: the input embeddings, the paper's rule; must be below
            ``kv_min_layer``). Layers before it count as similarity 1. A language model whose
            first layer moves every token away from its embedding (SmolLM2: s_l about 0.2 after
            layer 1, for text and visual tokens alike) makes the paper's s_l fall below M at once;
            a reference after that layer measures the later drift (docs/pretrained-model.md).
    """

    keep_ratio: float | None = None
    spatial_weight: float = 1.0
    ratio_scale: float = 1.0
    min_tokens_per_frame: int = 1
    positions: Literal["original", "compact"] = "original"
    kv: bool = True
    kv_threshold: float = 0.2
    kv_mode: Literal["withdraw", "layerwise"] = "withdraw"
    kv_granularity: Literal["layer", "token"] = "layer"
    kv_min_layer: int = 2
    kv_ignore_channels: tuple[int, ...] = ()
    kv_reference_layer: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_ignore_channels", _channels(self.kv_ignore_channels))
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
        if not isinstance(self.kv, bool):
            raise ValueError(f"kv must be True or False, got {self.kv!r}")
        if isinstance(self.kv_threshold, bool) or not isinstance(self.kv_threshold, (int, float)) or not -1.0 <= self.kv_threshold <= 2.0:
            raise ValueError(f"kv_threshold must be a number in [-1, 2], got {self.kv_threshold!r}")
        if self.kv_mode not in KV_MODES:
            raise ValueError(f"kv_mode must be one of {', '.join(KV_MODES)}, got {self.kv_mode!r}")
        if self.kv_granularity not in KV_GRANULARITIES:
            raise ValueError(f"kv_granularity must be one of {', '.join(KV_GRANULARITIES)}, got {self.kv_granularity!r}")
        if isinstance(self.kv_min_layer, bool) or not isinstance(self.kv_min_layer, int) or self.kv_min_layer < 1:
            raise ValueError(f"kv_min_layer must be an integer >= 1, got {self.kv_min_layer!r}")
        if isinstance(self.kv_reference_layer, bool) or not isinstance(self.kv_reference_layer, int) or self.kv_reference_layer < 0:
            raise ValueError(f"kv_reference_layer must be an integer >= 0, got {self.kv_reference_layer!r}")
        if self.kv_reference_layer >= self.kv_min_layer:
            raise ValueError(f"kv_reference_layer ({self.kv_reference_layer}) must be below kv_min_layer ({self.kv_min_layer}): "
                             f"no layer may withdraw before the reference it is compared with")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kv_ignore_channels"] = list(self.kv_ignore_channels)
        return out

    @property
    def mode(self) -> str:
        return "adaptive" if self.keep_ratio is None else "budget"



def _channels(value: Any) -> tuple[int, ...]:
    """``kv_ignore_channels`` as a sorted tuple of distinct channel indices >= 0."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(",", "+").split("+") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"kv_ignore_channels takes channel indices joined by '+', e.g. 507+247, got {value!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in value):
        raise ValueError(f"kv_ignore_channels must be channel indices (integers >= 0), got {value!r}")
    return tuple(sorted(set(int(c) for c in value)))


class SharpV(PruningMethod):
    """SharpV: information-aware visual token pruning (arXiv 2511.08003), both stages.

    Stage 1 scores tokens by temporal change plus spatial distinctiveness and keeps a per-frame
    share equal to half the frame's RMS temporal dissimilarity (or an exact budget split the same
    way); stage 2 withdraws visual tokens inside the LLM at the first layer whose mean
    hidden-to-embedding cosine falls below M. Use: ``with SharpV(keep_ratio=0.3)(model): ...``.
    """

    name = "sharpv"
    adaptive = True
    config_class = SharpVConfig

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int]) -> VisualSelection:
        cfg = self.config
        sel = select_tokens(
            grid,
            keep_ratio=cfg.keep_ratio,
            spatial_weight=cfg.spatial_weight,
            ratio_scale=cfg.ratio_scale,
            min_tokens_per_frame=cfg.min_tokens_per_frame,
        )
        return VisualSelection(sel.keep)

    def layer_policy(self, adapter: Any):
        from sharpv.layer_pruning import SimilarityPolicy

        cfg = self.config
        if not cfg.kv:
            return None
        return SimilarityPolicy(cfg.kv_threshold, cfg.kv_granularity, cfg.kv_min_layer, cfg.kv_ignore_channels,
                                cfg.kv_reference_layer), cfg.kv_mode
