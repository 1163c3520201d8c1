"""HoliTom's outer-LLM merging in plain torch: global temporal segmentation, temporal merging of
static tokens, and spatial merging (attention-dominant tokens and DPC-kNN clusters).

HoliTom (Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models",
NeurIPS 2025), on a (T, f, d) grid:

1. Same-position similarity ``s_t[i] = cos(x_t[i], x_{t+1}[i])``. A window of frames [a, b] can
   merge position i when ``s_t[i] > tau`` for every t in [a, b); merging removes ``b - a`` copies.
   Dynamic programming over the whole video picks the partition into windows that removes the most
   tokens (:func:`static_windows`): the global, redundancy-aware segmentation.
2. Temporal merging: in every window, each static position's tokens are averaged into their first
   occurrence (the window's first frame).
3. Spatial merging, on what is left, at one common ratio: the merged static tokens of a window are
   clustered with DPC-kNN; each frame's other (dynamic) tokens keep their most attended tokens
   ("dominant"), and a share ``contextual_share`` of the frame's count goes to DPC-kNN clusters of
   the rest ("contextual"). A cluster's value is ``beta * centre + (1 - beta) * mean(other
   members)`` (the centre alone when it has no other member), written on the centre.
"""

from __future__ import annotations

import torch

from sharpv.core.apportionment import apportion
from sharpv.core.attention_proxy import received_attention
from sharpv.core.dissimilarity import unit
from sharpv.core.dpc_clustering import dpc_knn
from sharpv.core.merge_plan import MergePlan, join_plans

__all__ = ["beta_cluster_weights", "holitom_select", "same_position_similarity", "static_windows"]


def same_position_similarity(features: torch.Tensor) -> torch.Tensor:
    """(T, f, d) -> (T - 1, f): cosine of every token with the same position in the next frame."""
    u = unit(features)
    return (u[1:] * u[:-1]).sum(-1)


def static_windows(similarity: torch.Tensor, threshold: float, max_window: int = 1024) -> list[tuple[int, int]]:
    """Partition T frames into windows ``(first, last)`` (inclusive) that maximise the number of
    tokens temporal merging removes, given ``similarity`` (T - 1, f) from
    :func:`same_position_similarity`.

    A window [a, b] removes ``(b - a) * #{i : similarity[t, i] > threshold for all a <= t < b}``
    tokens. ``dp[b] = max(dp[b - 1], max over windows [a, b] of at most max_window frames of
    dp[a - 1] + removed(a, b))``; on ties the shorter choice wins (a single frame first).
    """
    n = similarity.shape[0] + 1
    static = (similarity > threshold).long()
    removed = [[0] * n for _ in range(n)]
    for a in range(n - 1):
        runs = torch.cumprod(static[a:], dim=0).sum(-1)  # windows [a, a + 1], [a, a + 2], ...
        gains = (runs * torch.arange(1, n - a, device=runs.device)).tolist()
        removed[a][a + 1:] = gains
    best = [0] * n
    start = [0] * n
    for b in range(n):
        value, first = (best[b - 1] if b > 0 else 0), b
        for size in range(2, min(b + 1, max_window) + 1):
            a = b - size + 1
            candidate = (best[a - 1] if a > 0 else 0) + removed[a][b]
            if candidate > value:
                value, first = candidate, a
        best[b], start[b] = value, first
    windows = []
    b = n - 1
    while b >= 0:
        windows.append((start[b], b))
        b = start[b] - 1
    return windows[::-1]


def beta_cluster_weights(assign: torch.Tensor, centres: torch.Tensor, beta: float) -> torch.Tensor:
    """Weight of every member in its cluster's merged value ``beta * centre + (1 - beta) *
    mean(other members)`` (a lone centre keeps weight 1). ``assign`` (n,) cluster ids,
    ``centres`` (c,) member indices of the centres."""
    sizes = torch.bincount(assign, minlength=centres.numel()).float()[assign]
    weights = torch.where(sizes > 1, (1.0 - beta) / (sizes - 1).clamp_min(1), torch.ones_like(sizes))
    weights[centres] = torch.where(sizes[centres] > 1, torch.full_like(weights[centres], beta), weights[centres])
    return weights


def _cluster_plan(points: torch.Tensor, members: torch.Tensor, anchors: torch.Tensor, count: int, beta: float,
                  dpc_k: int) -> tuple[torch.Tensor, MergePlan]:
    """DPC-kNN of ``points`` (n, d) into ``count`` clusters; returns the centres' anchor flat indices
    and the plan. ``anchors`` (n,) where each point's value lives; ``members`` (n, m) the flat tokens
    each point averages (equal weights 1/m; m = 1 for plain tokens)."""
    centres, assign = dpc_knn(points, count, min(dpc_k, count))
    weights = beta_cluster_weights(assign, centres, beta)
    m = members.shape[1]
    src = members.reshape(-1)
    dst = anchors[centres][assign][:, None].expand(-1, m).reshape(-1)
    w = (weights / m)[:, None].expand(-1, m).reshape(-1)
    return anchors[centres], MergePlan(src.cpu(), dst.cpu(), w.cpu())


def holitom_select(features: torch.Tensor, total: int, threshold: float = 0.8, beta: float = 0.6,
                   contextual_share: float = 0.0, dpc_k: int = 7,
                   max_window: int = 1024, attention: torch.Tensor | None = None) -> tuple[torch.Tensor, MergePlan]:
    """HoliTom's outer-LLM stage on ``features`` (T, f, d) with exactly ``total`` kept tokens.

    Exact budget: when temporal merging alone would leave fewer than ``total`` tokens, only the most
    static positions (largest minimum similarity over their window) are merged, as many as keep at
    least ``total`` tokens. The ``total`` is then split over the units (each window's merged static
    tokens; each frame's dynamic tokens) in proportion to their sizes, as HoliTom's common retain
    ratio does, by largest remainders. Attention is ``attention`` (T, f) when given, else
    :func:`~sharpv.core.attention_proxy.received_attention`.
    Returns the (T, f) keep mask and the merge plan.
    """
    x = features.float()
    n_frames, f, _ = x.shape
    device = x.device
    similarity = same_position_similarity(x) if n_frames > 1 else x.new_zeros(0, f)
    windows = static_windows(similarity, threshold, max_window)
    # candidate merges: (window, position), strength = min similarity over the window
    static = torch.zeros(len(windows), f, dtype=torch.bool, device=device)
    strength, removes, owner, position = [], [], [], []
    for w, (a, b) in enumerate(windows):
        if b > a:
            span = similarity[a:b]
            mask = (span > threshold).all(0)
            idx = mask.nonzero().squeeze(1)
            strength.append(span.min(0).values[idx])
            removes.append(torch.full_like(idx, b - a))
            owner.append(torch.full_like(idx, w))
            position.append(idx)
    if strength:
        strength, removes, owner, position = map(torch.cat, (strength, removes, owner, position))
        order = torch.sort(strength, descending=True, stable=True).indices
        chosen = order[n_frames * f - torch.cumsum(removes[order], 0) >= total]
        static[owner[chosen], position[chosen]] = True
    # units: one per window with static tokens, one per frame (its dynamic tokens)
    frame_window = torch.zeros(n_frames, dtype=torch.long)
    for w, (a, b) in enumerate(windows):
        frame_window[a:b + 1] = w
    n_static = static.sum(1).cpu()
    dyn_sizes = f - n_static[frame_window]
    counts = apportion(total, torch.cat([n_static, dyn_sizes]))
    static_counts, dyn_counts = counts[: len(windows)], counts[len(windows):]
    keep = torch.zeros(n_frames, f, dtype=torch.bool, device=device)
    flat_keep = keep.view(-1)
    plans = []
    for w, (a, b) in enumerate(windows):
        c = int(static_counts[w])
        if c == 0:
            continue
        pos = static[w].nonzero().squeeze(1)
        members = (torch.arange(a, b + 1, device=device)[None, :] * f + pos[:, None])  # (n, L)
        kept, plan = _cluster_plan(x[a:b + 1, pos].mean(0), members, a * f + pos, c, beta, dpc_k)
        flat_keep[kept] = True
        plans.append(plan)
    attention = received_attention(x) if attention is None else attention.to(device, torch.float32)
    for t in range(n_frames):
        k = int(dyn_counts[t])
        if k == 0:
            continue
        dyn = (~static[int(frame_window[t])]).nonzero().squeeze(1)
        dominant = round(k * (1.0 - contextual_share))
        ranked = dyn[torch.sort(attention[t, dyn], descending=True, stable=True).indices]
        keep[t, ranked[:dominant]] = True
        if k > dominant:
            rest = torch.sort(ranked[dominant:]).values
            kept, plan = _cluster_plan(x[t, rest], (t * f + rest)[:, None], t * f + rest, k - dominant, beta, dpc_k)
            flat_keep[kept] = True
            plans.append(plan)
    return keep, join_plans(plans)
