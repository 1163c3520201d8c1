"""What the last pruned call did."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class VideoStats:
    """One video of a pruned prompt. ``keep``: the stage-1 (pre-LLM) keep mask, (T, f) bool on
    the CPU, frame-major in the order the model lays the video's tokens out (True: the token entered
    the LLM; all True for a method that selects nothing before the LLM); None when not known. Which
    tokens in-LLM pruning dropped later is not in it (see ``PruningStats.visual_tokens_per_layer``).
    ``to_dict()`` leaves the tensor out unless asked for ``keep_mask`` (nested lists of bools).
    ``attention_source``: what a method that ranks tokens by vision-encoder attention read for this
    video, "vision encoder" (the layer's own attention, recomputed from its q and k) or "feature
    proxy" (no encoder pass to read, e.g. precomputed features); None for other methods."""

    frames: int
    tokens_per_frame: int
    kept_per_frame: list[int]
    keep: torch.Tensor | None = field(default=None, repr=False, compare=False)
    attention_source: str | None = None

    @property
    def tokens_in(self) -> int:
        return self.frames * self.tokens_per_frame

    @property
    def tokens_kept(self) -> int:
        return sum(self.kept_per_frame)

    def to_dict(self, keep_mask: bool = False) -> dict[str, Any]:
        """JSON-serialisable fields; with ``keep_mask=True`` also ``keep_mask``: ``keep`` as T
        lists of f bools (None when the mask is not known). The tensor itself is never included."""
        out: dict[str, Any] = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "keep"}
        if keep_mask:
            out["keep_mask"] = self.keep.bool().tolist() if self.keep is not None else None
        return out


@dataclass
class PruningStats:
    """Stats of the last prefill the method pruned (one entry in ``videos`` per video)."""

    method: str  # registry name of the method
    mode: str  # "adaptive" or "budget"
    positions: str  # "original" or "compact"
    videos: list[VideoStats] = field(default_factory=list)
    pruning_seconds: float = 0.0  # scoring + selection + rebuilding the shortened inputs
    sequence_length_in: int = 0
    sequence_length_out: int = 0
    # pruning inside the LLM (SharpV stage 2, FastV, VTW); kv_mode is None when there is none
    kv_mode: str | None = None
    kv_withdraw_layer: int | None = None  # first layer that pruned anything, None if none
    # attention maps a method computes beyond the model's own work: FastV's in-LLM scores, and the
    # vision-encoder attention VisionZip / FastVID / FlashVID / HoliTom read (recomputed from the
    # layer's q and k while the video is encoded, plus mapping it to the token grid)
    extra_seconds: float = 0.0
    layer_similarity: list[float] = field(default_factory=list)  # s_l for every layer computed
    kv_cache_bytes: int = 0  # after the prefill, summed over layers (0 if no cache was built)
    kv_cache_bytes_dense: int = 0  # what the unpruned prompt would have cached
    kv_cache_bytes_per_layer: list[int] = field(default_factory=list)
    kv_cache_lengths: list[int] = field(default_factory=list)
    # per decoder layer: the visual tokens of the videos' T x f grids that layer computes during the
    # prefill, after stage 1 and after the layer's own in-LLM withdrawal, summed over the batch
    # ("layerwise" drops only shorten the cache: those layers still compute every token). Without
    # in-LLM pruning every entry is visual_tokens_kept. Always-kept extra tokens (LLaVA-OneVision's
    # newline after each video) are not counted, as they are not in visual_tokens_in either.
    visual_tokens_per_layer: list[int] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(v.frames for v in self.videos)

    @property
    def visual_tokens_in(self) -> int:
        return sum(v.tokens_in for v in self.videos)

    @property
    def visual_tokens_kept(self) -> int:
        return sum(v.tokens_kept for v in self.videos)

    @property
    def kept_per_frame(self) -> list[int]:
        return [k for v in self.videos for k in v.kept_per_frame]

    @property
    def tokens_per_frame(self) -> int:
        return self.videos[0].tokens_per_frame if self.videos else 0

    @property
    def kept_share(self) -> float:
        return self.visual_tokens_kept / self.visual_tokens_in if self.visual_tokens_in else 1.0

    @property
    def equivalent_retention(self) -> float:
        """Mean over decoder layers of ``visual_tokens_per_layer`` / ``visual_tokens_in`` (the
        videos' tokens before any pruning): the share of dense visual-token compute the layers
        spend, as FlashVID and HoliTom report it for in-LLM methods. Equals ``kept_share`` for a
        method that prunes only before the LLM (and when the per-layer counts are not known)."""
        if not self.visual_tokens_in:
            return 1.0
        if not self.visual_tokens_per_layer:
            return self.kept_share
        return sum(self.visual_tokens_per_layer) / len(self.visual_tokens_per_layer) / self.visual_tokens_in

    def to_dict(self, keep_masks: bool = False) -> dict:
        """JSON-serialisable fields and derived values. The videos' keep-mask tensors are left out;
        ``keep_masks=True`` adds each video's mask as ``keep_mask`` (T lists of f bools)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "videos"}
        out["videos"] = [v.to_dict(keep_mask=keep_masks) for v in self.videos]
        out.update(
            frames=self.frames,
            tokens_per_frame=self.tokens_per_frame,
            visual_tokens_in=self.visual_tokens_in,
            visual_tokens_kept=self.visual_tokens_kept,
            kept_per_frame=self.kept_per_frame,
            kept_share=self.kept_share,
            equivalent_retention=self.equivalent_retention,
        )
        return out
