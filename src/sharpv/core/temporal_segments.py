"""Dynamic temporal segmentation (FastVID's DySeg): cut a video where adjacent frames differ.

The transition similarity between frames t and t+1 is the cosine of their global features. A
cut goes after every transition below a threshold, and after the ``min_segments - 1`` least
similar transitions whatever their value, so a video has at least ``min(min_segments, T)``
segments and every scene change (similarity below the threshold) starts a new segment.
"""

from __future__ import annotations

from itertools import pairwise

import torch

from sharpv.core.dissimilarity import unit


def transition_similarity(global_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each frame's global feature with the next one's: (T, d) -> (T - 1,)."""
    g = unit(global_features)
    return (g[:-1] * g[1:]).sum(-1)


def segment_lengths(global_features: torch.Tensor, min_segments: int = 8, threshold: float = 0.9) -> list[int]:
    """Lengths of the consecutive segments of a video's frames, in order (they sum to T).

    Cuts: the ``min(min_segments, T) - 1`` lowest transition similarities (ties: the earlier
    transition) together with every transition whose similarity is below ``threshold``."""
    n_frames = global_features.shape[0]
    if n_frames <= 1:
        return [n_frames]
    sim = transition_similarity(global_features)
    forced = min(min_segments, n_frames) - 1
    cut = sim < threshold
    if forced > 0:
        cut[torch.sort(sim, stable=True).indices[:forced]] = True
    bounds = [0] + [int(i) + 1 for i in cut.nonzero().flatten().tolist()] + [n_frames]
    return [b - a for a, b in pairwise(bounds)]
