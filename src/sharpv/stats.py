"""What the last pruned call did."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class VideoStats:
    frames: int
    tokens_per_frame: int
    kept_per_frame: list[int]

    @property
    def tokens_in(self) -> int:
        return self.frames * self.tokens_per_frame

    @property
    def tokens_kept(self) -> int:
        return sum(self.kept_per_frame)


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
    extra_seconds: float = 0.0  # in-LLM policy work beyond the model's own (FastV's scores)
    layer_similarity: list[float] = field(default_factory=list)  # s_l for every layer computed
    kv_cache_bytes: int = 0  # after the prefill, summed over layers (0 if no cache was built)
    kv_cache_bytes_dense: int = 0  # what the unpruned prompt would have cached
    kv_cache_bytes_per_layer: list[int] = field(default_factory=list)
    kv_cache_lengths: list[int] = field(default_factory=list)

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

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(
            frames=self.frames,
            tokens_per_frame=self.tokens_per_frame,
            visual_tokens_in=self.visual_tokens_in,
            visual_tokens_kept=self.visual_tokens_kept,
            kept_per_frame=self.kept_per_frame,
            kept_share=self.kept_share,
        )
        return out
