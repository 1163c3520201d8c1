"""FlashVID: attention- and diversity-based token selection plus tree-based spatiotemporal merging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sharpv.core.flashvid import flashvid_select
from sharpv.core.merge_plan import apply_merge_plan
from sharpv.core.selection import budget_total
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection, check_int


def check_unit_interval(value: Any, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")


@dataclass(frozen=True)
class FlashVIDConfig(MethodConfig):
    """FlashVID's settings, with the official defaults.

    ``alpha``: share of every frame's budget picked by ADTS (the rest comes from tree merging), in
    [0, 1]. ``temporal_threshold``: cosine above which a token joins the tree of its most similar
    token in the previous frame, in [-1, 1]. ``segment_threshold``: cosine of consecutive frame
    means below which DySeg cuts, in [-1, 1]. ``min_segments``: DySeg cuts the weakest remaining
    transitions until at least this many segments exist (1 turns the complement off).
    ``dpc_k``: neighbours of the DPC-kNN density (``min(dpc_k, clusters)`` are used).
    """

    alpha: float = 0.7
    temporal_threshold: float = 0.8
    segment_threshold: float = 0.9
    min_segments: int = 8
    dpc_k: int = 7

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval(self.alpha, "alpha", 0.0, 1.0)
        check_unit_interval(self.temporal_threshold, "temporal_threshold", -1.0, 1.0)
        check_unit_interval(self.segment_threshold, "segment_threshold", -1.0, 1.0)
        check_int(self.min_segments, "min_segments", 1)
        check_int(self.dpc_k, "dpc_k", 1)


class FlashVID(PruningMethod):
    """FlashVID (Fan et al., "FlashVID: Efficient Video Large Language Models via Training-free
    Tree-based Spatiotemporal Token Merging", ICLR 2026; github.com/Fanziyang-v/FlashVID), its
    vision-side compression. DySeg cuts the video where consecutive frame means are less similar
    than ``segment_threshold`` (and at the weakest transitions until ``min_segments`` segments
    exist). In every frame, ADTS picks ``ceil(alpha * share)`` tokens by a greedy max-min diversity
    problem whose cosine distances are scaled by the attention each candidate receives. The other
    tokens of a segment form spatiotemporal redundancy trees (each links to its most similar token
    of the previous frame, any position, when the cosine exceeds ``temporal_threshold``); each tree's
    mean goes to its root, and every frame's roots are clustered by DPC-kNN, each cluster's mean (of
    tree means) written on its centre through ``transform``.

    Attention: as the official code, the last vision-encoder layer feeding the video features
    (``vision_attention = -1``), mean over heads and over the query rows that see the token (the
    frame's patches; a Qwen temporal step), recomputed by the runtime from that layer's own q and k
    (the encoder keeps SDPA / FlashAttention) and mapped to the LLM tokens as the family maps patch
    features. Fallback, when the video features were precomputed without the method applied: a
    feature proxy, the attention token j receives in ``softmax(X X^T / sqrt(d))`` over its frame of
    projected features (:func:`sharpv.core.attention_proxy.received_attention`);
    ``VideoStats.attention_source`` says which was used.

    Differences from the official code: (1) the shared exact budget: ``budget_total(keep_ratio, T,
    f)`` tokens, frame t's share ``even_split(total, T)[t]`` instead of ``ceil(f * retention_ratio
    * expansion)`` per frame, and per-frame cluster counts split by largest remainders instead of
    ``ceil`` (which overshoots); when too few tree roots remain, the least similar links are cut
    until the budget can be met (the official's soft threshold, on the exact count). (2) FlashVID's
    inner-LLM stage (FastV-style pruning at layer 20 of the ``expansion = 1.25`` surplus) is not
    included: this method keeps the budget before the LLM. (3) DPC-kNN breaks density ties by index,
    not random noise, so results are deterministic. (4) A one-frame segment merges only the tokens
    ADTS did not pick (the official passes the whole frame, so ADTS tokens could be counted twice).
    (5) Only the default selector ("attn_div", ADTS v1) is implemented.
    """

    name = "flashvid"
    config_class = FlashVIDConfig
    vision_attention = -1

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int],
                      attention: torch.Tensor | None = None) -> VisualSelection:
        cfg = self.config
        n_frames, f = grid.shape[:2]
        keep, plan = flashvid_select(
            grid, budget_total(cfg.keep_ratio, n_frames, f), alpha=cfg.alpha,
            temporal_threshold=cfg.temporal_threshold, segment_threshold=cfg.segment_threshold,
            min_segments=cfg.min_segments, dpc_k=cfg.dpc_k, attention=attention,
        )
        return VisualSelection(keep, transform=lambda x: apply_merge_plan(x, plan))
