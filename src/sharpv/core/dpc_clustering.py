"""Density-peak clustering with k nearest neighbours (DPC-kNN), deterministic.

DPC-kNN (Du et al., 2016; used for token merging by TCFormer, PruneVid, HoliTom and FlashVID):
local density ``rho_i = exp(-mean of the squared distances to the k nearest tokens)`` (the token
itself counts among them), ``delta_i`` the distance to the nearest token of higher density (the
densest token gets the largest distance), centres are the ``n`` tokens with the largest
``rho * delta``, and every token joins its nearest centre. Distances are Euclidean divided by
``sqrt(d)``. The official implementations break density ties with random noise (1e-6); here a tie
goes to the lower index, so the result is reproducible.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dpc_knn"]


def dpc_knn(features: torch.Tensor, n_clusters: int, k: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``features`` (n, d) into ``n_clusters`` groups (1 <= n_clusters <= n).

    Returns ``centres`` (n_clusters,) token indices in ascending order and ``assign`` (n,) the
    cluster of every token (an index into ``centres``); a centre always belongs to its own cluster.
    ``k`` is clamped to ``[1, n]``.
    """
    n, d = features.shape
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be between 1 and {n}, got {n_clusters}")
    x = features.float()
    dist = torch.cdist(x, x) / math.sqrt(d)
    k = max(1, min(int(k), n))
    nearest = torch.topk(dist, k, dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(-1))
    # rank 0 = densest; equal densities: the lower index ranks first
    order = torch.sort(density, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=order.device)
    higher = rank[None, :] < rank[:, None]  # higher[i, j]: j is denser than i
    delta = torch.where(higher, dist, dist.max()).min(-1).values
    score = delta * density
    centres = torch.sort(torch.sort(score, descending=True, stable=True).indices[:n_clusters]).values
    assign = torch.argmin(dist[:, centres], dim=-1)
    assign[centres] = torch.arange(n_clusters, device=assign.device)
    return centres, assign
