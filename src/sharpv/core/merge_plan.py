"""Weighted token merges on (T, f, d) feature grids, as a reusable plan.

A merging method decides, from one grid, which tokens are kept and which weighted combination of
tokens each kept representative receives. :class:`MergePlan` stores that decision as flat
``(src, dst, weight)`` triples over the ``T * f`` tokens, independent of the feature width, so the
same plan applies to the projected features and to any other grid of the same video (Qwen3-VL's
deepstack features): ``out[dst] = sum(weight * x[src])`` for every ``dst`` named in the plan, every
other token unchanged. Unlike a one-representative-per-token assignment, a plan can express
weighted merges such as a mean of tree means (FlashVID) or ``beta * centre + (1 - beta) * mean of
the others`` (HoliTom). All arithmetic is float32; the result has the input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MergePlan", "apply_merge_plan", "join_plans"]


@dataclass(frozen=True)
class MergePlan:
    """``out[dst[m]] += weight[m] * x[src[m]]`` over flat token indices, for the named ``dst``."""

    src: torch.Tensor  # (M,) long
    dst: torch.Tensor  # (M,) long
    weight: torch.Tensor  # (M,) float32

    @staticmethod
    def empty() -> MergePlan:
        return MergePlan(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0))

    def __len__(self) -> int:
        return int(self.src.numel())

    def shifted(self, offset: int) -> MergePlan:
        """The same plan with every flat index moved by ``offset`` (a segment's first token)."""
        return MergePlan(self.src + offset, self.dst + offset, self.weight)


def join_plans(plans: list[MergePlan]) -> MergePlan:
    """One plan from several with disjoint destinations."""
    plans = [p for p in plans if len(p)]
    if not plans:
        return MergePlan.empty()
    return MergePlan(
        torch.cat([p.src.cpu() for p in plans]),
        torch.cat([p.dst.cpu() for p in plans]),
        torch.cat([p.weight.float().cpu() for p in plans]),
    )


def apply_merge_plan(features: torch.Tensor, plan: MergePlan) -> torch.Tensor:
    """``features`` (T, f, d) with the plan's weighted sums written on its destinations."""
    if not len(plan):
        return features
    shape = features.shape
    flat = features.reshape(shape[0] * shape[1], -1).float()
    src, dst = plan.src.to(flat.device), plan.dst.to(flat.device)
    out = flat.clone()
    out[dst] = 0.0
    out.index_add_(0, dst, flat[src] * plan.weight.to(flat.device)[:, None])
    return out.to(features.dtype).view(shape)
