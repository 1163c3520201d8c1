"""Merging tokens onto kept representatives: nearest-representative assignment and group means.

A merge is described by ``assign`` (N,) long over the flattened tokens of a video (N = T * f):
``assign[i]`` is the flat index of the kept representative token i is merged into (a kept token
points at itself), or -1 when token i is dropped without being merged. Applying it to any feature
grid of the same (T, f) layout writes each group's merged feature onto its representative and
leaves every other position as it was, so one decision serves every grid a model derives from the
same tokens (e.g. Qwen3-VL's deepstack features).
"""

from __future__ import annotations

import torch

from sharpv.core.dissimilarity import unit


def nearest_representative(features: torch.Tensor, members: torch.Tensor, representatives: torch.Tensor) -> torch.Tensor:
    """For each flat index in ``members``, the flat index (taken from ``representatives``) of the
    representative with the highest cosine similarity; ties go to the earlier representative.
    ``features`` (N, d)."""
    if members.numel() == 0:
        return members.clone()
    sim = unit(features[members]) @ unit(features[representatives]).T
    return representatives[sim.argmax(dim=1)]


def merge_onto_representatives(grid: torch.Tensor, assign: torch.Tensor, anchor_weight: float | None = None) -> torch.Tensor:
    """Write each merge group's feature onto its representative; ``grid`` (T, f, d) -> same shape.

    A group is a representative r and every token i with ``assign[i] == r`` (r itself included,
    since a kept representative points at itself); n is its size and ``mean`` its plain mean.
    With ``anchor_weight`` None the representative gets ``mean`` (VisionZip's contextual tokens).
    With a number beta it gets ``w * x_r + (1 - w) * mean`` where ``w = max(1 / (n + 1), beta)``:
    FastVID's density-based token merging, which keeps at least the share beta of the anchor
    token itself. A singleton group (n = 1) is unchanged either way. Computed in float32 and
    returned in the grid's dtype; tokens that are not representatives keep their values.
    """
    n_frames, f, d = grid.shape
    flat = grid.reshape(n_frames * f, d)
    x = flat.float()
    assign = assign.to(grid.device)
    valid = assign >= 0
    target = assign[valid]
    sums = torch.zeros_like(x).index_add_(0, target, x[valid])
    counts = torch.zeros(x.shape[0], device=grid.device).index_add_(0, target, torch.ones_like(target, dtype=torch.float32))
    reps = counts > 0
    n = counts[reps][:, None]
    mean = sums[reps] / n
    if anchor_weight is None:
        merged = mean
    else:
        w = (1.0 / (n + 1.0)).clamp(min=float(anchor_weight))
        merged = w * x[reps] + (1.0 - w) * mean
    out = flat.clone()
    out[reps] = merged.to(grid.dtype)
    return out.view(n_frames, f, d)
