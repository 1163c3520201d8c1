"""FastVID's density-based spatiotemporal pruning (STPrune) with an exact token total.

Given a video's features (T, f, d), a total and the temporal segments (see
:mod:`sharpv.core.temporal_segments`):

1. Frame budgets: the total is split evenly over frames (``k_t``, larger ones first). Each frame
   keeps ``s_t = k_t - floor(k_t * contextual_share)`` salient tokens, the ones receiving the most
   attention (:func:`received_attention`), unchanged; the remaining ``c_t = floor(k_t * share)``
   go to its segment's contextual pool.
2. Anchor frames: in a segment of L frames, every ``anchor_stride``-th frame counted from the
   segment's last frame (frames i with ``(L - 1 - i) % stride == 0``). The segment's pool
   ``sum c_t`` is split evenly over its anchor frames, each holding at most its non-salient
   tokens; whatever does not fit there (only at large keep ratios) is spread evenly over the
   segment's other frames.
3. Anchor tokens: in each frame, its share of the pool goes to the non-salient tokens with the
   highest density-peak (DPC-kNN) score (:func:`density_peak_scores`, computed per frame over the
   non-salient tokens).
4. Merging: every other non-salient token of the segment is merged into the anchor token of the
   segment it is most cosine-similar to; the anchor's feature becomes
   ``w * anchor + (1 - w) * mean(group)``, ``w = max(1 / (n + 1), anchor_weight)``
   (:func:`merge_onto_representatives`). Segments without anchor tokens (tiny budgets) drop
   their non-salient tokens.

The kept tokens are the salient plus the anchor tokens: exactly the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sharpv.core.attention_proxy import received_attention, top_counts_mask
from sharpv.core.baselines import even_split
from sharpv.core.density import density_peak_scores
from sharpv.core.merging import nearest_representative


@dataclass(frozen=True)
class DensityPruning:
    """What STPrune keeps: ``keep`` (T, f) bool = ``salient | anchors``; ``assign`` (T * f,) the
    merge of every token into its representative (-1 dropped); ``segments`` the segment lengths."""

    keep: torch.Tensor
    salient: torch.Tensor
    anchors: torch.Tensor
    assign: torch.Tensor
    segments: list[int]


def capped_split(total: int, caps: list[int]) -> list[int]:
    """``total`` split as evenly as possible over parts that can take at most ``caps[i]`` each
    (water filling; earlier parts get the remainder first). Gives ``min(total, sum(caps))``."""
    out = [0] * len(caps)
    remaining = int(total)
    open_parts = [i for i, cap in enumerate(caps) if cap > 0]
    while remaining > 0 and open_parts:
        for i, share in zip(open_parts, even_split(remaining, len(open_parts))):
            give = min(share, caps[i] - out[i])
            out[i] += give
            remaining -= give
        open_parts = [i for i in open_parts if out[i] < caps[i]]
    return out


def anchor_frames(length: int, stride: int) -> list[int]:
    """Anchor frames of a segment of ``length`` frames: every ``stride``-th counted from its end."""
    return [i for i in range(length) if (length - 1 - i) % stride == 0]


def density_pruning_keep(
    features: torch.Tensor,
    total: int,
    segments: list[int],
    *,
    contextual_share: float = 0.4,
    anchor_stride: int = 4,
    knn: int = 4,
    attention: torch.Tensor | None = None,
) -> DensityPruning:
    """Exactly ``total`` kept tokens of ``features`` (T, f, d) with FastVID's STPrune inside the
    given ``segments`` (lengths summing to T); see the module docstring. ``attention`` (T, f): the
    salient scores (None: :func:`received_attention` of the features)."""
    n_frames, f, _ = features.shape
    if sum(segments) != n_frames:
        raise ValueError(f"segment lengths {segments} do not add up to {n_frames} frames")
    device = features.device
    counts = even_split(int(total), n_frames)
    contextual = [math.floor(k * contextual_share) for k in counts]
    salient_counts = torch.tensor([k - c for k, c in zip(counts, contextual)], device=device)
    scores = received_attention(features) if attention is None else attention.to(device, torch.float32)
    salient = top_counts_mask(scores, salient_counts)

    anchor_counts = [0] * n_frames
    start = 0
    for length in segments:
        frames = list(range(start, start + length))
        caps = [f - int(salient_counts[t]) for t in frames]
        pool = sum(contextual[t] for t in frames)
        firsts = anchor_frames(length, anchor_stride)
        given = capped_split(pool, [caps[i] for i in firsts])
        rest = [i for i in range(length) if i not in firsts]
        spill = capped_split(pool - sum(given), [caps[i] for i in rest])
        for i, n in list(zip(firsts, given)) + list(zip(rest, spill)):
            anchor_counts[frames[i]] = n
        start += length

    scores = density_peak_scores(features, valid=~salient, knn=knn)
    anchors = top_counts_mask(scores, torch.tensor(anchor_counts, device=device)) & ~salient
    keep = salient | anchors

    flat_ids = torch.arange(n_frames * f, device=device).view(n_frames, f)
    assign = torch.full((n_frames * f,), -1, dtype=torch.long, device=device)
    assign[flat_ids[keep]] = flat_ids[keep]
    flat = features.reshape(n_frames * f, -1)
    start = 0
    for length in segments:
        seg = slice(start, start + length)
        reps = flat_ids[seg][anchors[seg]]
        members = flat_ids[seg][~keep[seg]]
        if reps.numel() and members.numel():
            assign[members] = nearest_representative(flat, members, reps)
        start += length
    return DensityPruning(keep=keep, salient=salient, anchors=anchors, assign=assign, segments=list(segments))
