"""Max-min diversity selection (DivPrune): keep the subset whose closest pair is as far apart as
possible, by the greedy rule of the official DivPrune code. Pure torch."""

from __future__ import annotations

import torch

from sharpv.core.dissimilarity import unit


def cosine_distance_matrix(features: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between every pair of tokens: (B, n, d) -> (B, n, n), float32 (zero vectors are
    guarded: their distance to anything is 1, to themselves 0)."""
    u = unit(features)
    dist = 1.0 - u @ u.transpose(-1, -2)
    dist.diagonal(dim1=-2, dim2=-1).zero_()
    return dist


def max_min_select(dist: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy max-min diversity on each of B distance matrices ``dist`` (B, n, n), keeping
    ``counts[b]`` tokens of problem b.

    First pick (as in DivPrune's code): the token whose nearest other token is farthest (the most
    isolated one). Every later pick: the not-yet-selected token whose minimum distance to the
    selected set is largest. Ties go to the lower index (``argmax``), so the result is
    deterministic; a token is never picked twice, even when all remaining tokens duplicate picked
    ones. Cost: one (B, n) update per pick, on top of the distance matrix.

    Returns ``keep`` (B, n) bool and ``order`` (B, max(counts)) long: the picks in pick order
    (-1 after a problem's count is reached).
    """
    n_problems, n, _ = dist.shape
    counts = counts.to(dist.device).long().clamp(0, n)
    rows = torch.arange(n_problems, device=dist.device)
    max_count = int(counts.max()) if n_problems else 0
    keep = torch.zeros(n_problems, n, dtype=torch.bool, device=dist.device)
    order = torch.full((n_problems, max_count), -1, dtype=torch.long, device=dist.device)
    if max_count == 0:
        return keep, order
    if n > 1:
        eye = torch.eye(n, dtype=torch.bool, device=dist.device)
        isolation = dist.masked_fill(eye, float("inf")).min(dim=-1).values
    else:
        isolation = torch.zeros(n_problems, n, device=dist.device)
    pick = isolation.argmax(dim=-1)
    min_dist = dist[rows, pick].clone()
    for step in range(max_count):
        if step > 0:
            pick = min_dist.masked_fill(keep, float("-inf")).argmax(dim=-1)
            min_dist = torch.minimum(min_dist, dist[rows, pick])
        active = counts > step
        keep[rows[active], pick[active]] = True
        order[active, step] = pick[active]
    return keep, order
