"""DivPrune: diversity-based visual token pruning (max-min diversity subset)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpv.core.baselines import budget_total, even_split
from sharpv.core.diversity import cosine_distance_matrix, max_min_select
from sharpv.methods.base import (
    MethodConfig,
    PruningMethod,
    VisualSelection,
    check_choice,
)

DIVPRUNE_SCOPES = ("video", "frame")


@dataclass(frozen=True)
class DivPruneConfig(MethodConfig):
    """``scope``: "video" solves one max-min diversity problem over all T x f tokens (default);
    "frame" solves one per frame, the total split evenly over frames."""

    scope: str = "video"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.scope, "scope", DIVPRUNE_SCOPES)


class DivPrune(PruningMethod):
    """DivPrune (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal
    Models", CVPR 2025): keep the subset of visual tokens that solves the max-min diversity
    problem (maximise the smallest pairwise cosine distance ``1 - cos`` among kept tokens),
    greedily as in the official code: first the most isolated token (whose nearest other token is
    farthest), then repeatedly the token whose minimum distance to the kept set is largest. Needs
    no attention weights (features only), so it runs with SDPA / FlashAttention unchanged.

    Scope: the official code runs DivPrune once over the whole visual token sequence of the input
    (all tokens of an image, every crop of LLaVA-1.6 included, or of a video, all frames
    concatenated), not per frame; the default here does the same over the video's T x f projected
    tokens (``scope="video"``), and ``scope="frame"`` is an option (one problem per frame, the
    total split evenly over frames).

    Differences from the official code: the kept count is the shared exact budget
    ``budget_total(keep_ratio, T, f)`` instead of ``round(ratio * n)`` (the same except the floor
    of one token); a token is never picked twice (the official argmax can re-pick an already kept
    token once every remaining token duplicates a kept one); zero vectors are guarded in the cosine;
    selection runs on the features before they are scattered into the prompt, not on the embedded
    sequence at a fixed offset. Cost: an (n, n) distance matrix (n = T * f) plus one O(n) update
    per kept token."""

    name = "divprune"
    config_class = DivPruneConfig

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int]) -> VisualSelection:
        n_frames, f = grid.shape[:2]
        total = budget_total(self.config.keep_ratio, n_frames, f)
        if self.config.scope == "video":
            dist = cosine_distance_matrix(grid.reshape(1, n_frames * f, -1))
            keep, _ = max_min_select(dist, torch.tensor([total]))
            return VisualSelection(keep.view(n_frames, f))
        keep, _ = max_min_select(cosine_distance_matrix(grid), torch.tensor(even_split(total, n_frames)))
        return VisualSelection(keep)
