"""FastVID: dynamic temporal segmentation, then density-based spatiotemporal pruning."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core.baselines import budget_total
from sharpv.core.density_pruning import density_pruning_keep
from sharpv.core.merging import merge_onto_representatives
from sharpv.core.temporal_segments import segment_lengths
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection, check_int
from sharpv.methods.visionzip import check_share


@dataclass(frozen=True)
class FastVIDConfig(MethodConfig):
    """FastVID's settings, official defaults: ``min_segments`` c = 8 (DySeg_c), ``cut_threshold``
    tau = 0.9 (DySeg_tau, cosine of adjacent frames' global features), ``contextual_share`` d = 0.4
    (STPrune_d: share of each frame's budget given to density-based contextual tokens, the rest
    are salient tokens), ``anchor_stride`` p = 4 (DTM_p), ``anchor_weight`` beta = 0.6 (DTM_beta),
    ``knn`` = 4 neighbours of the DPC-kNN density."""

    min_segments: int = 8
    cut_threshold: float = 0.9
    contextual_share: float = 0.4
    anchor_stride: int = 4
    anchor_weight: float = 0.6
    knn: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.min_segments, "min_segments", 1)
        if isinstance(self.cut_threshold, bool) or not isinstance(self.cut_threshold, (int, float)) or not -1.0 <= float(self.cut_threshold) <= 1.0:
            raise ValueError(f"cut_threshold must be a number in [-1, 1], got {self.cut_threshold!r}")
        check_share(self.contextual_share, "contextual_share")
        check_int(self.anchor_stride, "anchor_stride", 1)
        check_share(self.anchor_weight, "anchor_weight")
        check_int(self.knn, "knn", 1)


class FastVID(PruningMethod):
    """FastVID (Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language
    Models", NeurIPS 2025). DySeg: frames are cut into consecutive segments after every transition
    whose cosine similarity of adjacent frames' global features is below ``cut_threshold`` and
    after the ``min_segments - 1`` least similar transitions. STPrune inside each segment: each
    frame keeps its salient tokens (the ``1 - contextual_share`` part of its budget, by received
    attention), and the segment's contextual budget goes to anchor frames (every
    ``anchor_stride``-th frame from the segment's end), whose DPC-kNN density peaks become anchor
    tokens; every other non-salient token of the segment is merged into its most cosine-similar
    anchor token, written by ``transform`` as ``w * anchor + (1 - w) * mean(group)``,
    ``w = max(1 / (n + 1), anchor_weight)``.

    Attention weights: the official code takes the salient scores from the vision encoder's
    attention (for LLaVA-OneVision the attention of SigLIP's pooling-head probe over the patches)
    and the frame's global feature from that pooling head (the Qwen2.5-VL port uses the mean of the
    frame's projected features). Here the salient score is the attention the token receives in the
    vision encoder's last layer feeding the video features (``vision_attention = -1``), averaged over
    heads and over the query rows that see it (the frame's patches; a Qwen temporal step), which
    the runtime recomputes from that layer's own q and k (the encoder keeps SDPA / FlashAttention)
    and maps to the LLM tokens as the family maps patch features. SigLIP's pooling-head probe is
    not used: LLaVA-OneVision's tower has no head in transformers (the official code keeps the
    head it deletes from the tower only for this). Fallback, when the video features were
    precomputed without the method applied: a feature self-attention proxy, ``softmax(X X^T /
    sqrt(d))`` over the frame's projected features, column means
    (:func:`sharpv.core.attention_proxy.received_attention`); ``VideoStats.attention_source`` says
    which was used. The global feature is the frame's mean projected feature.

    Differences from the official code: the scores and global feature above; the total is the shared exact budget
    ``budget_total(keep_ratio, T, f)``, split evenly over frames (the official keeps
    ``int(f * ratio)`` per frame), and a segment's contextual budget is split evenly over its
    anchor frames with any part that does not fit spread over its other frames (the official
    gives each anchor frame ``pool // anchors`` and can overflow or lose the remainder); the
    number of forced cuts is ``min(min_segments, T) - 1``, so short videos work; density ties are
    broken by token index instead of random jitter (deterministic); each non-salient token of a
    segment is merged into exactly one anchor token, its nearest over all anchor frames of the
    segment (the official merges every segment token into its nearest anchor of each anchor frame
    separately, so one token can feed several anchor frames); anchor tokens are written at their
    own positions, with their original position ids."""

    name = "fastvid"
    config_class = FastVIDConfig
    vision_attention = -1

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int],
                      attention: torch.Tensor | None = None) -> VisualSelection:
        cfg = self.config
        n_frames, f = grid.shape[:2]
        total = budget_total(cfg.keep_ratio, n_frames, f)
        segments = segment_lengths(grid.float().mean(dim=1), cfg.min_segments, cfg.cut_threshold)
        result = density_pruning_keep(
            grid, total, segments, contextual_share=cfg.contextual_share, anchor_stride=cfg.anchor_stride, knn=cfg.knn,
            attention=attention,
        )
        assign = result.assign
        return VisualSelection(
            result.keep, transform=lambda x: merge_onto_representatives(x, assign, anchor_weight=cfg.anchor_weight)
        )
