"""Largest-remainder apportionment of an exact token count over parts with capacities."""

from __future__ import annotations

import torch

__all__ = ["apportion"]


def apportion(total: int, sizes: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Split ``total`` into integer counts (one per part), ``0 <= count <= size``, summing to
    ``min(total, sum(sizes))``, proportional to ``weights`` (default: the sizes themselves).

    Each part first gets the floor of its proportional target (capped at its size); the rest goes
    one token at a time to the parts with the largest remainder ``target - count`` that still have
    room (ties: the earlier part), in rounds, until the total is met.
    """
    sizes = sizes.long().cpu()
    total = int(min(max(total, 0), int(sizes.sum())))
    w = (sizes if weights is None else weights.cpu()).double().clamp_min(0)
    w = torch.where(sizes > 0, w, torch.zeros_like(w))
    if float(w.sum()) <= 0:
        w = sizes.double()
    target = (total * w / w.sum()).clamp(max=sizes.double()) if total else torch.zeros_like(w)
    counts = torch.minimum(torch.floor(target + 1e-9).long(), sizes)
    deficit = total - int(counts.sum())
    while deficit > 0:
        room = counts < sizes
        remainder = (target - counts.double()).masked_fill(~room, float("-inf"))
        chosen = torch.sort(remainder, descending=True, stable=True).indices[: min(deficit, int(room.sum()))]
        counts[chosen] += 1
        deficit -= int(chosen.numel())
    return counts
