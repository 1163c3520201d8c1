"""Stage 1 on a video that arrives in chunks of frames (pure torch).

SharpV's adaptive mode is causal: frame t's scores and keep ratio need only frames t-1 and t
(``T_t = Dissim(F_t, F_{t-1})``, ``S_t`` within frame t). :class:`StreamingSelector` scores and
selects each chunk as it arrives, carrying the previous frame's unit vectors across the chunk
boundary, so only the kept features of past chunks need to be held. Its selections equal
:func:`~sharpv.core.selection.select_tokens` on the whole video exactly, chunk boundaries
anywhere.

One rule of the one-shot selection is not causal: with ``min_tokens_per_frame=0`` a video whose
every frame rounds to zero tokens keeps the best token of its highest-ratio frame. The selector
tracks that candidate (its frame, token and feature) and :meth:`StreamingSelector.finish` returns
it when nothing was kept by the end.

Budget mode needs every frame's scores before it can split the total, so it cannot select early:
hold the features (or re-encode) and call ``select_tokens`` at the end; the scores alone cost
``T * f`` floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sharpv.core.dissimilarity import unit
from sharpv.core.selection import select_adaptive


@dataclass(frozen=True)
class ChunkSelection:
    """What stage 1 keeps of one chunk: ``keep`` (T_c, f) bool, its ``scores`` and ``ratios``, and
    ``first_frame``, the chunk's first frame index in the video (0-based)."""

    keep: torch.Tensor
    scores: torch.Tensor
    ratios: torch.Tensor
    first_frame: int


@dataclass(frozen=True)
class FloorToken:
    """The token the one-video floor adds when nothing else was kept: frame, token index, feature."""

    frame: int
    token: int
    feature: torch.Tensor


class StreamingSelector:
    """Adaptive SharpV stage 1 over chunks: ``push(chunk)`` for every (T_c, f, d) chunk in order,
    then ``finish()``. See the module docstring."""

    def __init__(self, *, spatial_weight: float = 1.0, ratio_scale: float = 1.0, min_tokens_per_frame: int = 1):
        self.spatial_weight = spatial_weight
        self.ratio_scale = ratio_scale
        self.min_tokens_per_frame = min_tokens_per_frame
        self.frames_seen = 0
        self.kept = 0
        self._previous: torch.Tensor | None = None  # (f, d) unit vectors of the last frame seen
        self._best: tuple[float, FloorToken] | None = None

    def push(self, features: torch.Tensor) -> ChunkSelection:
        if features.dim() != 3 or features.shape[0] < 1 or features.shape[1] < 1:
            raise ValueError(f"a chunk must be shaped (T, f, d) with T, f >= 1, got {tuple(features.shape)}")
        if self._previous is not None and features.shape[1:] != self._previous.shape:
            raise ValueError(f"chunk frames have {tuple(features.shape[1:])} tokens x channels, earlier ones {tuple(self._previous.shape)}")
        x = features.float()
        u = unit(x)
        spatial = (u - unit(x.mean(dim=1, keepdim=True))).norm(dim=-1)
        scores = spatial * self.spatial_weight
        if self._previous is None:  # the video's first frame has no temporal term: I_1 = S_1
            temporal = (u[1:] - u[:-1]).norm(dim=-1)
            scores[0] = spatial[0]
            scores[1:] += temporal
            norms = torch.cat([spatial[:1].norm(dim=1), temporal.norm(dim=1)])
        else:  # the chunk's first frame is compared with the previous chunk's last one
            temporal = (u - torch.cat([self._previous.to(u)[None], u[:-1]])).norm(dim=-1)
            scores += temporal
            norms = temporal.norm(dim=1)
        ratios = (self.ratio_scale * norms / (2.0 * math.sqrt(features.shape[1]))).clamp(0.0, 1.0)
        keep = select_adaptive(scores, ratios, self.min_tokens_per_frame)
        if self.min_tokens_per_frame == 0:  # the floor below is the only non-causal rule
            keep = self._without_floor(keep, scores, ratios, features)
        first = self.frames_seen
        self.frames_seen += features.shape[0]
        self.kept += int(keep.sum())
        self._previous = u[-1].detach().clone()
        return ChunkSelection(keep, scores, ratios, first)

    def _without_floor(self, keep, scores, ratios, features) -> torch.Tensor:
        """``select_adaptive`` adds one token when a chunk alone rounds to zero; the floor belongs to
        the whole video, so take it back and remember the best candidate instead."""
        counts = torch.round(ratios * scores.shape[1]).long()
        if int(counts.sum()) == 0:
            keep = torch.zeros_like(keep)
        frame = int(torch.sort(ratios, descending=True, stable=True).indices[0])
        ratio = float(ratios[frame])
        if self._best is None or ratio > self._best[0]:
            token = int(torch.sort(scores[frame], descending=True, stable=True).indices[0])
            self._best = (ratio, FloorToken(self.frames_seen + frame, token, features[frame, token].detach().clone()))
        return keep

    def finish(self) -> FloorToken | None:
        """The one token to add when the whole video kept nothing (``min_tokens_per_frame=0``), else None."""
        if self.kept == 0 and self._best is not None:
            return self._best[1]
        return None
