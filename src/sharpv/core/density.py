"""Density-peak scores (DPC-kNN): tokens that are both dense and far from any denser token.

For tokens x_1..x_n of one set (Euclidean distances scaled by 1/sqrt(d), as FastVID and
DPC-kNN token clustering compute them):

- local density ``rho_i = exp(-mean of the squared distances to its k nearest tokens)`` (the
  token itself, at distance 0, counts among them, as in the reference code);
- ``delta_i`` = distance to the nearest token of higher density, or the largest distance in the
  set for the densest token;
- score ``rho_i * delta_i``: cluster centres ("density peaks") score highest.

Ties in density are broken by index (the earlier token counts as denser) instead of the reference
code's random jitter, so the result is deterministic. Pure torch, batched over sets.
"""

from __future__ import annotations

import math

import torch


def density_peak_scores(features: torch.Tensor, valid: torch.Tensor | None = None, knn: int = 4) -> torch.Tensor:
    """DPC-kNN scores of every token: features (B, n, d) -> (B, n) float32.

    ``valid`` (B, n) bool marks the tokens that take part (the others neither count as neighbours
    nor as denser tokens, and score ``-inf``); a set with fewer than ``knn`` valid tokens averages
    over the ones it has.
    """
    x = features.float()
    n_sets, n, d = x.shape
    if valid is None:
        valid = torch.ones(n_sets, n, dtype=torch.bool, device=x.device)
    valid = valid.to(x.device)
    dist = torch.cdist(x, x) / math.sqrt(d)
    pair = valid[:, :, None] & valid[:, None, :]
    k = max(1, min(knn, n))
    near = dist.masked_fill(~valid[:, None, :], float("inf")).topk(k, dim=-1, largest=False).values
    finite = torch.isfinite(near)
    mean_sq = (near.nan_to_num(posinf=0.0) ** 2 * finite).sum(-1) / finite.sum(-1).clamp_min(1)
    density = torch.exp(-mean_sq).masked_fill(~valid, float("-inf"))
    # rank 0 = densest; equal densities: lower index first
    order = torch.sort(density, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(n, device=x.device).expand_as(order))
    denser = (rank[:, None, :] < rank[:, :, None]) & valid[:, None, :]
    max_dist = dist.masked_fill(~pair, 0.0).flatten(1).max(dim=-1).values[:, None, None]
    delta = torch.where(denser, dist, max_dist).min(dim=-1).values
    return (delta * density).masked_fill(~valid, float("-inf"))
