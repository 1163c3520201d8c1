"""LLaVA-OneVision (and LLaVA-Video checkpoints, which use the same architecture in transformers).

Video features: ``get_video_features`` returns ``pooler_output`` shaped (B, T*f + 1, d): T frames of
f pooled tokens (``ceil(image_size / patch_size / 2) ** 2``, 196 for SigLIP-384) followed by one
``image_newline`` token, which stage 1 always keeps. Positions are 1-D RoPE indices.

Chunked encoding: every step of ``get_video_features`` works on one frame at a time (the vision
tower sees the B*T frames as a batch of images, the projector is per token, the 2x2 pooling per
frame); only the ``image_newline`` parameter is appended once per video at the end. So chunks of
frames are encoded independently, their frame tokens concatenated, and one newline appended.
"""

from __future__ import annotations

import copy

import math
from typing import Any

import torch

from sharpv.adapters.base import DEFAULT_CHUNK_FRAMES, VideoGrids, VideoLLMAdapter, concat_fields
from sharpv.errors import SharpVError


class LlavaOnevisionAdapter(VideoLLMAdapter):
    family = "llava-onevision"
    model_types = ("llava_onevision",)
    default_frames = 32
    extra_tokens_per_video = 1

    @property
    def tokens_per_frame(self) -> int:
        vision = self.model.config.vision_config
        side = math.ceil(vision.image_size // vision.patch_size / 2)
        return side * side

    def encode(self, kwargs: dict[str, Any]) -> Any:
        return self.model.get_video_features(
            pixel_values_videos=kwargs["pixel_values_videos"],
            vision_feature_layer=kwargs.get("vision_feature_layer"),
            vision_feature_select_strategy=kwargs.get("vision_feature_select_strategy"),
            return_dict=True,
        )

    def encode_chunked(self, kwargs: dict[str, Any], chunk_frames: int = DEFAULT_CHUNK_FRAMES, *, all_fields: bool = False) -> Any:
        """:meth:`encode` over ``chunk_frames`` frames at a time (see the base class). Each chunk's
        ``pooler_output`` ends with an ``image_newline``; the frame tokens of all chunks are
        concatenated per video and the newline is appended once, as in the one-shot output
        (B, T*f + 1, d). A video of at most ``chunk_frames`` frames is encoded in one call."""
        if chunk_frames < 1:
            raise SharpVError(f"chunk_frames must be at least 1, got {chunk_frames}")
        pixels = kwargs["pixel_values_videos"]  # (B, T, 3, H, W)
        batch, frames = pixels.shape[:2]
        outputs, rows, cls = [], [], None
        for b in range(batch):
            parts, newline = [], None
            for start in range(0, frames, chunk_frames):
                out = self.encode({**kwargs, "pixel_values_videos": self._on_model(pixels[b : b + 1, start : start + chunk_frames])})
                parts.append(out.pooler_output[:, :-1])
                newline = out.pooler_output[:, -1:]
                cls = cls or type(out)
                if all_fields:
                    outputs.append(out)
                else:
                    del out  # frees the chunk's per-patch hidden states now
            rows.append(torch.cat([*parts, newline], dim=1))
            del parts
        fields = concat_fields(outputs, skip=("pooler_output",)) if all_fields else {}
        return cls(pooler_output=torch.cat(rows, dim=0), **fields)

    def grids(self, encoder_output: Any, kwargs: dict[str, Any]) -> VideoGrids:
        feats = encoder_output.pooler_output
        if isinstance(feats, (list, tuple)):
            feats = torch.stack(list(feats))
        f = self.tokens_per_frame
        n = feats.shape[1] - 1
        if n % f:
            raise ValueError(f"LLaVA-OneVision video features have {n} tokens, not a multiple of {f} per frame")
        grids = [video[:n].reshape(n // f, f, -1) for video in feats]
        side = math.isqrt(f)
        return VideoGrids(grids, encoder_output, [(side, side)] * len(grids), self.extra_tokens_per_video)

    def pruned_output(self, grids: VideoGrids, keeps: list[torch.Tensor], transforms: list[Any]) -> Any:
        feats = grids.encoder_output.pooler_output
        if isinstance(feats, (list, tuple)):
            feats = torch.stack(list(feats))
        kept = [
            self._apply(video, grid.shape, transform, keep)
            for video, grid, transform, keep in zip(feats, grids.grids, transforms, keeps)
        ]
        out = copy.copy(grids.encoder_output)
        # The model flattens (B, N) before scattering into the placeholders, so one row holding
        # every video's kept tokens in order is equivalent and allows ragged per-video counts.
        out.pooler_output = torch.cat(kept, dim=0).unsqueeze(0)
        return out
