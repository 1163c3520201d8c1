"""VisionZip's token selection per frame: dominant tokens plus contextual merge centres.

In a frame that keeps k tokens, ``n_ctx = round(k * contextual_share)`` are contextual and the
other ``k - n_ctx`` are dominant:

- dominant: the tokens receiving the most attention (:func:`received_attention`; ties: lower
  index), kept unchanged;
- contextual: the remaining tokens, in raster order, are split into ``n_ctx`` centres taken at a
  uniform stride (every ``max(1, m // n_ctx)``-th of the m remaining tokens, the first n_ctx of
  them) and the others, each merged into the centre it is most cosine-similar to (ties: the
  earlier centre); a centre's feature becomes the plain mean of its group (itself included).

Returns the keep mask and the merge assignment for
:func:`sharpv.core.merging.merge_onto_representatives`.
"""

from __future__ import annotations

import torch

from sharpv.core.attention_proxy import received_attention, top_counts_mask
from sharpv.core.merging import nearest_representative


def contextual_count(keep: int, contextual_share: float) -> int:
    """How many of a frame's ``keep`` tokens are contextual centres: ``round(keep * share)``."""
    return min(keep, round(keep * contextual_share))


def dominant_contextual_keep(
    features: torch.Tensor, counts: list[int], contextual_share: float, attention: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame t of ``features`` (T, f, d) keeps ``counts[t]`` tokens. Returns ``keep`` (T, f) bool
    and ``assign`` (T * f,) long (flat index of each token's representative, -1 if dropped).
    ``attention`` (T, f): the attention each token receives (None: :func:`received_attention`)."""
    n_frames, f, _ = features.shape
    device = features.device
    contextual = torch.tensor([contextual_count(k, contextual_share) for k in counts], device=device)
    dominant_counts = torch.tensor(counts, device=device) - contextual
    scores = received_attention(features) if attention is None else attention.to(device, torch.float32)
    dominant = top_counts_mask(scores, dominant_counts)
    keep = dominant.clone()
    assign = torch.full((n_frames * f,), -1, dtype=torch.long, device=device)
    flat_ids = torch.arange(n_frames * f, device=device).view(n_frames, f)
    assign[flat_ids[dominant]] = flat_ids[dominant]
    flat = features.reshape(n_frames * f, -1)
    for t in range(n_frames):
        n_ctx = int(contextual[t])
        if n_ctx == 0:
            continue
        remaining = flat_ids[t][~dominant[t]]  # raster order
        step = max(1, remaining.numel() // n_ctx)
        centres = remaining[::step][:n_ctx]
        others = remaining[~torch.isin(remaining, centres)]
        assign[centres] = centres
        assign[others] = nearest_representative(flat, others, centres)
        keep.view(-1)[centres] = True
    return keep, assign
