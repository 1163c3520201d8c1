"""Position bookkeeping for shortened sequences (pure torch).

A prompt row keeps the tokens where ``keep`` is True; rows may end up with different lengths, so
the shortened batch is left-padded again (the convention of decoder-only generation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shortening:
    """How a (B, L) batch maps onto its shortened (B, L') form."""

    index: torch.Tensor  # (B, L') long: source column of every kept slot (0 on padding slots)
    valid: torch.Tensor  # (B, L') bool: False on the left padding added by shortening

    @property
    def length(self) -> int:
        return self.index.shape[1]


def shorten(keep: torch.Tensor) -> Shortening:
    """Plan the shortened, left-padded layout of a (B, L) batch from its keep mask."""
    if keep.dim() != 2:
        raise ValueError(f"keep must be (batch, length), got {tuple(keep.shape)}")
    lengths = keep.sum(dim=1)
    new_len = int(lengths.max()) if keep.shape[0] else 0
    # Stable sort puts dropped columns first and kept columns last, each in original order.
    order = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices[:, keep.shape[1] - new_len :]
    slots = torch.arange(new_len, device=keep.device)
    valid = slots[None, :] >= (new_len - lengths)[:, None]
    return Shortening(index=torch.where(valid, order, torch.zeros_like(order)), valid=valid)


def take(x: torch.Tensor, plan: Shortening, fill: int | float = 0) -> torch.Tensor:
    """Apply a shortening plan to ``x`` shaped (B, L, ...): kept columns, ``fill`` on new padding."""
    if x.dim() < 2 or x.shape[0] != plan.index.shape[0]:
        raise ValueError(f"cannot shorten a tensor shaped {tuple(x.shape)} with a plan for {tuple(plan.index.shape)}")
    trailing = [1] * (x.dim() - 2)
    idx = plan.index.view(*plan.index.shape, *trailing).expand(-1, -1, *x.shape[2:])
    out = torch.gather(x, 1, idx)
    return torch.where(plan.valid.view(*plan.valid.shape, *trailing), out, torch.full_like(out, fill))


def gather_positions(position_ids: torch.Tensor, plan: Shortening) -> torch.Tensor:
    """Original positions of the kept tokens: ``position_ids`` is (B, L) or (P, B, L)."""
    if position_ids.dim() == 2:
        return take(position_ids, plan, fill=1)
    planes = [take(p, plan, fill=1) for p in position_ids]
    return torch.stack(planes, dim=0)


def compact_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Renumbered positions ``0..n-1`` over the non-padding tokens of every row (padding gets 1)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)
