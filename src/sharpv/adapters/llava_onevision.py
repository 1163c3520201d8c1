"""LLaVA-OneVision (and LLaVA-Video checkpoints, which use the same architecture in transformers).

Video features: ``get_video_features`` returns ``pooler_output`` shaped (B, T*f + 1, d): T frames of
f pooled tokens (``ceil(image_size / patch_size / 2) ** 2``, 196 for SigLIP-384) followed by one
``image_newline`` token, which stage 1 always keeps. Positions are 1-D RoPE indices.

Chunked encoding: every step of ``get_video_features`` works on one frame at a time (the vision
tower sees the B*T frames as a batch of images, the projector is per token, the 2x2 pooling per
frame); only the ``image_newline`` parameter is appended once per video at the end. So chunks of
frames are encoded independently, their frame tokens concatenated, and one newline appended.

Vision-encoder attention (:meth:`LlavaOnevisionAdapter.token_attention`): the SigLIP layer's
attention is per frame (every patch attends to every patch of its frame, no [CLS]); a patch's
value is the mean over heads and all the frame's query rows. It is mapped to the tokens exactly as
``get_video_features`` maps patch features: the ``default`` strategy's first patch dropped (when
set), the (side, side) patch map bilinearly interpolated to (ceil(side/2), ceil(side/2)) as
``apply_pooling`` does (``F.interpolate(mode="bilinear")``, a linear map, so the token value is the
same weighted average of its patches that its feature is).
"""

from __future__ import annotations

import copy

import math
from typing import Any

import torch

from sharpv.adapters.base import (
    ATTENTION_ATTR, DEFAULT_CHUNK_FRAMES, VideoGrids, VideoLLMAdapter, concat_fields, join_patch_attention,
)
from sharpv.core.vision_attention import received_attention_qk
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
        outputs, rows, cls, records = [], [], None, []
        for b in range(batch):
            parts, newline = [], None
            for start in range(0, frames, chunk_frames):
                out = self.encode({**kwargs, "pixel_values_videos": self._on_model(pixels[b : b + 1, start : start + chunk_frames])})
                parts.append(out.pooler_output[:, :-1])
                newline = out.pooler_output[:, -1:]
                records.append(self.patch_record(out))
                cls = cls or type(out)
                if all_fields:
                    outputs.append(out)
                else:
                    del out  # frees the chunk's per-patch hidden states now
            rows.append(torch.cat([*parts, newline], dim=1))
            del parts
        fields = concat_fields(outputs, skip=("pooler_output",)) if all_fields else {}
        result = cls(pooler_output=torch.cat(rows, dim=0), **fields)
        record = join_patch_attention(records)  # frames in video order, video after video
        if record is not None:
            setattr(result, ATTENTION_ATTR, record)
        return result

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

    # --- vision-encoder attention ------------------------------------------------------------
    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_tower

    def vision_layers(self) -> list[torch.nn.Module]:
        """The encoder layers (SigLIP's ``encoder.layers``, DINOv2's ``encoder.layer``) up to the one
        whose output ``vision_feature_layer`` selects (the largest, for a list): ``hidden_states[i]``
        is the output of layer ``i - 1``."""
        tower = self.vision_tower()
        encoder = getattr(tower, "vision_model", tower).encoder
        layers = list(encoder.layers if hasattr(encoder, "layers") else encoder.layer)
        selected = self.model.config.vision_feature_layer
        selected = max((len(layers) + 1 + s) if s < 0 else s for s in (selected if isinstance(selected, (list, tuple)) else [selected]))
        return layers[:selected]

    def vision_attention_module(self, layer: int) -> torch.nn.Module:
        block = self.vision_layers()[layer]
        return block.self_attn if hasattr(block, "self_attn") else block.attention  # SigLIP / DINOv2

    def patch_attention(self, module, args, kwargs, tower_args, tower_kwargs) -> torch.Tensor:
        """(frames, tokens): the tower's q and k from ``q_proj`` / ``k_proj`` of the layer's
        normalized input, ``softmax(q k^T * scale)`` one frame at a time, mean over heads and query
        rows. DINOv2's class token is among the tokens; ``token_attention`` drops it as the
        "default" feature strategy drops its feature."""
        hidden = args[0] if args else kwargs["hidden_states"]  # (frames, tokens, width)
        if (args[1] if len(args) > 1 else kwargs.get("attention_mask")) is not None:
            raise SharpVError("the vision layer got an attention mask; received attention assumes full attention per frame")
        shape = (*hidden.shape[:-1], -1, module.head_dim)
        query = module.q_proj(hidden).view(shape).transpose(1, 2)
        key = module.k_proj(hidden).view(shape).transpose(1, 2)
        scale = module.scale if hasattr(module, "scale") else module.scaling  # SigLIP / DINOv2
        return received_attention_qk(query, key, scale)

    def token_attention(self, encoder_output: Any, grids: VideoGrids, kwargs: dict[str, Any]) -> list[torch.Tensor] | None:
        record = self.patch_record(encoder_output)
        if record is None:
            return None
        values = record.values  # (frames of all videos, patches)
        strategy = kwargs.get("vision_feature_select_strategy") or self.model.config.vision_feature_select_strategy
        if strategy == "default":
            values = values[:, 1:]
        vision = self.model.config.vision_config
        side = vision.image_size // vision.patch_size
        frames = sum(g.shape[0] for g in grids.grids)
        if values.shape != (frames, side * side):
            return None
        pooled = torch.nn.functional.interpolate(
            values.reshape(frames, 1, side, side), size=[math.ceil(side / 2), math.ceil(side / 2)], mode="bilinear"
        ).reshape(frames, -1)
        if pooled.shape[1] != grids.grids[0].shape[1]:
            return None
        return [part.to(grid.device) for part, grid in zip(pooled.split([g.shape[0] for g in grids.grids]), grids.grids)]

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
