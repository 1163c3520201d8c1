"""FlashVID's pre-LLM compression in plain torch: segmentation, ADTS and tree-based merging.

FlashVID (Fan et al., "FlashVID: Efficient Video Large Language Models via Training-free
Tree-based Spatiotemporal Token Merging", ICLR 2026) compresses a (T, f, d) video grid in three
steps, all reproduced here on an exact token count:

1. Dynamic segmentation (DySeg): consecutive frames whose mean features have cosine similarity
   below a threshold start a new segment; if that gives fewer than ``min_segments`` segments, the
   lowest remaining transitions are cut as well (:func:`segment_lengths`).
2. Attention and diversity-based token selection (ADTS): in every frame, a calibrated max-min
   diversity problem solved greedily: the distance ``1 - cos(x_i, x_j)`` to a candidate j is scaled
   by the attention j receives, the first pick is the token with the largest scaled distance to its
   nearest neighbour, each next pick the token with the largest scaled distance to the picks so far
   (:func:`adts_select`).
3. Tree-based spatiotemporal token merging (TSTM) on the tokens ADTS left: every token links to its
   most similar token of the previous frame (any position) when their cosine exceeds a threshold;
   the links form trees rooted at the tokens that did not link, and each tree is averaged onto its
   root. The roots of each frame are then clustered with DPC-kNN and each cluster's mean lands on its
   centre (:func:`tree_merge_segment`).

The result is a keep mask and a :class:`~sharpv.core.merge_plan.MergePlan` that writes the merged
features on the kept tokens.
"""

from __future__ import annotations

import math

import torch

from sharpv.core.apportionment import apportion
from sharpv.core.attention_proxy import received_attention
from sharpv.core.baselines import even_split
from sharpv.core.dissimilarity import unit
from sharpv.core.dpc_clustering import dpc_knn
from sharpv.core.merge_plan import MergePlan, join_plans

__all__ = ["adts_select", "flashvid_select", "segment_lengths", "tree_merge_segment"]


def segment_lengths(frame_features: torch.Tensor, threshold: float, min_segments: int = 1) -> list[int]:
    """DySeg: split T frames (``frame_features`` (T, d), one vector per frame) into segments.

    A cut falls between frames t and t+1 when ``cos(frame_t, frame_t+1) < threshold``; while fewer
    than ``min_segments`` segments exist, the most dissimilar uncut transitions are cut too (ties:
    the earlier transition). Returns the segment lengths in frame order (they sum to T).
    """
    n = frame_features.shape[0]
    if n == 1:
        return [1]
    u = unit(frame_features)
    sims = (u[:-1] * u[1:]).sum(-1)
    cuts = sims < threshold
    missing = min(min_segments - 1 - int(cuts.sum()), int((~cuts).sum()))
    if missing > 0:
        extra = torch.sort(sims.masked_fill(cuts, float("inf")), stable=True).indices[:missing]
        cuts[extra] = True
    ends = torch.cat([cuts.nonzero().squeeze(1) + 1, torch.tensor([n], device=cuts.device)])
    return torch.diff(ends, prepend=ends.new_zeros(1)).tolist()


def adts_select(features: torch.Tensor, attention: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """ADTS: keep ``counts[t]`` tokens of every frame of ``features`` (T, f, d) by the calibrated
    max-min diversity greedy, with ``attention`` (T, f) the attention every token receives.

    The calibrated distance from a picked token i to a candidate j is ``(1 - cos(x_i, x_j)) * a_j``.
    Pick 1: the largest calibrated distance to the nearest other token; pick n: the largest minimum
    calibrated distance to picks 1..n-1 (ties: the lower index). Greedy picks are nested, so all
    frames run together for ``max(counts)`` steps. Returns (T, f) bool.
    """
    n_frames, f = features.shape[:2]
    device = features.device
    counts = counts.to(device)
    keep = torch.zeros(n_frames, f, dtype=torch.bool, device=device)
    steps = int(counts.max()) if counts.numel() else 0
    if steps == 0:
        return keep
    u = unit(features)
    dist = (1.0 - u @ u.transpose(-1, -2)).clamp_min(0.0) * attention.float().to(device)[:, None, :]
    eye = torch.eye(f, dtype=torch.bool, device=device)
    nearest = dist.masked_fill(eye, float("inf")).min(dim=1).values
    score = torch.where(torch.isinf(nearest), torch.zeros_like(nearest), nearest)  # f == 1
    frames = torch.arange(n_frames, device=device)
    for step in range(steps):
        pick = torch.argmax(score.masked_fill(keep, float("-inf")), dim=-1)
        active = counts > step
        keep[frames[active], pick[active]] = True
        row = dist[frames, pick]  # calibrated distance from the new pick to every candidate
        score = row if step == 0 else torch.minimum(score, row)
    return keep


def tree_merge_segment(features: torch.Tensor, available: torch.Tensor, budget: int, threshold: float,
                       dpc_k: int = 7) -> tuple[torch.Tensor, MergePlan]:
    """TSTM on one segment ``features`` (L, f, d): merge the ``available`` (L, f) tokens into exactly
    ``budget`` kept tokens. Flat indices of the returned plan are local to the segment.

    Links: a token of frame t >= 1 links to its most similar available token of frame t - 1 when
    the cosine exceeds ``threshold``. Tokens of the segment's first frame, and tokens with no
    available predecessor, are roots. If fewer roots than ``budget`` remain, the least similar
    linked tokens become roots too (FlashVID's soft threshold). Each tree's mean goes to its root;
    the ``budget`` kept tokens are then split over frames proportionally to their roots, and each
    frame's roots are clustered with DPC-kNN (``k = min(dpc_k, clusters)``); every cluster's mean of
    tree means lands on its centre. Returns the (L, f) keep mask and the plan.
    """
    length, f, _ = features.shape
    device = features.device
    keep = torch.zeros(length, f, dtype=torch.bool, device=device)
    if budget <= 0:
        return keep, MergePlan.empty()
    u = unit(features)
    best = torch.full((length, f), float("-inf"), device=device)
    parent = torch.zeros(length, f, dtype=torch.long, device=device)
    if length > 1:
        sims = u[1:] @ u[:-1].transpose(-1, -2)  # (L-1, f, f): frame t+1 against frame t
        sims = sims.masked_fill(~available[:-1, None, :], float("-inf"))
        best[1:], parent[1:] = sims.max(dim=-1)
    is_root = available & ((best <= threshold) | torch.isneginf(best))
    shortfall = budget - int(is_root.sum())
    if shortfall > 0:
        linked = (available & ~is_root).reshape(-1)
        order = torch.sort(best.reshape(-1).masked_fill(~linked, float("inf")), stable=True).indices[:shortfall]
        is_root.view(-1)[order] = True
    # every available token's root (flat index), resolved frame by frame along the links
    local = torch.arange(length * f, device=device).view(length, f)
    root = torch.full((length, f), -1, dtype=torch.long, device=device)
    for t in range(length):
        inherited = root[t - 1][parent[t]] if t > 0 else root[0]
        root[t] = torch.where(is_root[t], local[t], torch.where(available[t], inherited, -1))
    members = local[available]
    roots_of = root[available]
    flat = features.reshape(length * f, -1).float()
    tree_size = torch.bincount(roots_of, minlength=length * f).float()
    tree_mean = torch.zeros_like(flat).index_add_(0, roots_of, flat[members]) / tree_size.clamp_min(1)[:, None]
    # spatial merge of each frame's roots
    clusters = apportion(budget, is_root.sum(1))
    centre_of = torch.full((length * f,), -1, dtype=torch.long, device=device)
    cluster_size = torch.ones(length * f, device=device)
    for t in range(length):
        c = int(clusters[t])
        if c == 0:
            continue
        roots = local[t][is_root[t]]
        centres, assign = dpc_knn(tree_mean[roots], c, min(dpc_k, c))
        centre_of[roots] = roots[centres][assign]
        cluster_size[roots] = torch.bincount(assign, minlength=c).float()[assign]
        keep.view(-1)[roots[centres]] = True
    merged = centre_of[roots_of] >= 0
    src, via = members[merged], roots_of[merged]
    plan = MergePlan(src.cpu(), centre_of[via].cpu(), (1.0 / (tree_size[via] * cluster_size[via])).cpu())
    return keep, plan


def flashvid_select(features: torch.Tensor, total: int, alpha: float = 0.7, temporal_threshold: float = 0.8,
                    segment_threshold: float = 0.9, min_segments: int = 8,
                    dpc_k: int = 7, attention: torch.Tensor | None = None) -> tuple[torch.Tensor, MergePlan]:
    """FlashVID on ``features`` (T, f, d) with exactly ``total`` kept tokens.

    Frame t's share of the budget is ``even_split(total, T)[t]``; ``ceil(alpha * share)`` of it goes
    to ADTS (attention from :func:`~sharpv.core.attention_proxy.received_attention`), the rest,
    summed over each DySeg segment, to TSTM on the tokens ADTS did not pick. Returns the (T, f) keep
    mask and the merge plan (flat indices over the whole grid). ``attention`` (T, f), when given,
    replaces the proxy as ADTS's attention.
    """
    n_frames, f = features.shape[:2]
    share = torch.tensor(even_split(int(total), n_frames), dtype=torch.long)
    adts = torch.tensor([min(s, math.ceil(round(alpha * s, 9))) for s in share.tolist()], dtype=torch.long)
    rest = share - adts
    scores = received_attention(features) if attention is None else attention.to(features.device, torch.float32)
    keep = adts_select(features, scores, adts)
    plans = []
    start = 0
    for length in segment_lengths(features.float().mean(1), segment_threshold, min_segments):
        stop = start + length
        seg_keep, plan = tree_merge_segment(features[start:stop], ~keep[start:stop], int(rest[start:stop].sum()),
                                            temporal_threshold, dpc_k)
        keep[start:stop] |= seg_keep
        offset = start * f
        plans.append(plan.shifted(offset))
        start = stop
    return keep, join_plans(plans)
