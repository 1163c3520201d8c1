"""LLaVA-OneVision (and LLaVA-Video checkpoints, which use the same architecture in transformers).

Video features: ``get_video_features`` returns ``pooler_output`` shaped (B, T*f + 1, d): T frames of
f pooled tokens (``ceil(image_size / patch_size / 2) ** 2``, 196 for SigLIP-384) followed by one
``image_newline`` token, which stage 1 always keeps. Positions are 1-D RoPE indices.
"""

from __future__ import annotations

import copy

import math
from typing import Any

import torch

from sharpv.adapters.base import VideoGrids, VideoLLMAdapter


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
