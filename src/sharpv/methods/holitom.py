"""HoliTom: holistic temporal segmentation and spatio-temporal token merging before the LLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core.holitom import holitom_select
from sharpv.core.merge_plan import apply_merge_plan
from sharpv.core.selection import budget_total
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection, check_int
from sharpv.methods.flashvid import check_unit_interval


@dataclass(frozen=True)
class HoliTomConfig(MethodConfig):
    """HoliTom's settings, with the official defaults (environment variables T, BETA, D, K and
    MAX_WINDOW_SIZE of the official code).

    ``temporal_threshold`` (tau): same-position cosine above which consecutive tokens count as
    static, in [-1, 1] (the paper's scripts use 0.8, and 0.65 at a 10% budget). ``beta``: weight of
    a cluster's centre in its merged value, in [0, 1]. ``contextual_share`` (D): share of each
    frame's dynamic budget given to DPC-kNN clusters instead of the most attended tokens, in [0, 1].
    ``dpc_k``: neighbours of the DPC-kNN density. ``max_window``: the longest temporal window, in
    frames (1 turns temporal merging off).
    """

    temporal_threshold: float = 0.8
    beta: float = 0.6
    contextual_share: float = 0.0
    dpc_k: int = 7
    max_window: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval(self.temporal_threshold, "temporal_threshold", -1.0, 1.0)
        check_unit_interval(self.beta, "beta", 0.0, 1.0)
        check_unit_interval(self.contextual_share, "contextual_share", 0.0, 1.0)
        check_int(self.dpc_k, "dpc_k", 1)
        check_int(self.max_window, "max_window", 1)


class HoliTom(PruningMethod):
    """HoliTom (Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models",
    NeurIPS 2025; github.com/cokeshao/HoliTom), its outer-LLM stage. Global redundancy-aware
    temporal segmentation: dynamic programming over the whole video chooses the windows of frames
    that remove the most tokens, a position being static in a window when its same-position cosine
    stays above ``temporal_threshold`` between all consecutive frames. Temporal merging: each static
    position's tokens are averaged into their first occurrence (the window's first frame). Spatial
    merging, at one common ratio over what remains: each window's merged static tokens are clustered
    by DPC-kNN; each frame's dynamic tokens keep the most attended ones, with a share
    ``contextual_share`` clustered by DPC-kNN instead; a cluster's value is ``beta * centre + (1 -
    beta) * mean(other members)``, written on its centre through ``transform``.

    Attention: as the official code, dynamic tokens are ranked by the last vision-encoder layer
    feeding the video features (``vision_attention = -1``), mean over heads and over the query rows
    that see the token (the frame's patches; a Qwen temporal step), recomputed by the runtime from
    that layer's own q and k (the encoder keeps SDPA / FlashAttention) and mapped to the LLM tokens
    as the family maps patch features. Fallback, when the video features were precomputed without
    the method applied: a feature proxy, the attention token j receives in ``softmax(X X^T /
    sqrt(d))`` over its frame of projected features
    (:func:`sharpv.core.attention_proxy.received_attention`); ``VideoStats.attention_source`` says
    which was used.

    Not included: HoliTom's inner-LLM merging (attention-guided merging of similar visual tokens
    inside the LLM at layer K). sharpv's shared in-LLM interface prunes by dropping tokens (and
    their KV entries), not by merging hidden states, and that code is owned elsewhere; this method
    is the paper's "HoliTom (w/o M)".

    Differences from the official code: (1) the shared exact budget ``budget_total(keep_ratio, T,
    f)``: the official retain ratio ``r / (remaining share)`` with ``ceil``/``round`` per frame is
    replaced by a largest-remainder split of the exact total over the same units (each window's
    static tokens, each frame's dynamic tokens) in proportion to their sizes; and when temporal
    merging alone would leave fewer tokens than the budget, only the most static positions (largest
    minimum similarity over their window) are merged, as many as leave at least the budget (the
    official then keeps fewer tokens than asked). (2) DPC-kNN breaks density ties by index, not
    random noise. (3) Merged static tokens stand at their first occurrence and keep its position
    ids, as every sharpv method keeps original positions; the official also places them in the
    window's first frame.
    """

    name = "holitom"
    config_class = HoliTomConfig
    vision_attention = -1

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int],
                      attention: torch.Tensor | None = None) -> VisualSelection:
        cfg = self.config
        n_frames, f = grid.shape[:2]
        keep, plan = holitom_select(
            grid, budget_total(cfg.keep_ratio, n_frames, f), threshold=cfg.temporal_threshold, beta=cfg.beta,
            contextual_share=cfg.contextual_share, dpc_k=cfg.dpc_k, max_window=cfg.max_window, attention=attention,
        )
        return VisualSelection(keep, transform=lambda x: apply_merge_plan(x, plan))
