"""Pure-torch functional core of SharpV: scores, budgets, selections and positions.

Nothing in this package imports transformers; every function takes and returns tensors.
"""

from sharpv.core.dissimilarity import dissimilarity
from sharpv.core.positions import Shortening, compact_positions, gather_positions, shorten, take
from sharpv.core.scores import (
    frame_keep_ratios,
    spatial_importance,
    temporal_importance,
    token_scores,
)
from sharpv.core.selection import Selection, select_adaptive, select_budget, select_tokens

__all__ = [
    "Selection",
    "Shortening",
    "compact_positions",
    "dissimilarity",
    "frame_keep_ratios",
    "gather_positions",
    "select_adaptive",
    "select_budget",
    "select_tokens",
    "shorten",
    "spatial_importance",
    "temporal_importance",
    "take",
    "token_scores",
]
