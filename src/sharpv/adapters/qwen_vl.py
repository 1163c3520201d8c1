"""Qwen2.5-VL and Qwen3-VL: M-RoPE positions, per-video feature tuples, Qwen3-VL deepstack.

Video features: ``get_video_features`` returns ``pooler_output`` as one (t*h*w / merge**2, d)
tensor per video, in (t, h, w) raster order. A "frame" for stage 1 is one temporal grid step
(two video frames for both families, ``temporal_patch_size = 2``), so f = h*w / merge**2.
Qwen3-VL also returns ``deepstack_features`` (one tuple per deepstack layer, one tensor per
video) that are added to the visual tokens' hidden states inside the LLM: they are pruned with the
same indices so they stay aligned with the kept tokens.

Positions are the model's own M-RoPE (t, h, w) triples from ``get_rope_index`` (or the
``position_ids`` that ``generate()`` prepared, which carry an extra leading text-position plane).

Chunked encoding (:meth:`QwenVLAdapter.encode_chunked`): the vision towers of both families
(transformers 5.23, ``Qwen2_5_VisionTransformerPretrainedModel`` and ``Qwen3VLVisionModel``) never
mix temporal steps, so a video can be encoded a few steps at a time:

- patch embedding: a Conv3d whose kernel and stride are ``temporal_patch_size`` (2) frames, on each
  patch row alone; rows of one temporal step are contiguous in ``pixel_values_videos``;
- attention: ``cu_seqlens`` has one segment per temporal step (``h*w`` patches, repeated ``t``
  times); Qwen2.5-VL's window attention splits windows inside each step (its window index is per
  step and only offset across steps, so its permutation is block-diagonal per step);
- positions: the vision rotary embedding uses (h, w) only, repeated for every step, and Qwen3-VL's
  learned position embedding is interpolated per (row, column), also repeated for every step;
- the patch mergers (and Qwen3-VL's deepstack mergers) act on 2x2 spatial blocks of one step.

Chunks are therefore cut on temporal-step boundaries: ``chunk_frames`` is rounded down to whole
steps of ``temporal_patch_size`` frames (at least one step).

Vision-encoder attention (:meth:`QwenVLAdapter.token_attention`): the chosen block's attention is
the one it really computes, over its ``cu_seqlens`` segments: one temporal step (h*w patches) in
Qwen3-VL and in Qwen2.5-VL's full-attention blocks (``fullatt_block_indexes``), one window of
``window_size`` pixels otherwise. A patch's value is the mean over heads and over the query rows
of its own segment (a window's rows, in a window block: edge windows are smaller, so their patches
get larger means). Qwen2.5-VL's blocks see the patches permuted into window order, in groups of
``spatial_merge_size**2``; the record is put back into the input order (the inverse of the window
index, as the tower does to the merger's output). Patches to tokens as the merger does: every
``spatial_merge_size**2`` consecutive patches form one token (the mean of their values), tokens in
(t, h, w) raster order; the temporal patch already holds two frames.
"""

from __future__ import annotations

import copy

import sys
from typing import Any

import torch

from sharpv.adapters.base import (
    ATTENTION_ATTR, DEFAULT_CHUNK_FRAMES, VideoGrids, VideoLLMAdapter, concat_fields, join_patch_attention,
)
from sharpv.core.vision_attention import received_attention_qk
from sharpv.errors import SharpVError


class QwenVLAdapter(VideoLLMAdapter):
    family = "qwen2.5-vl"
    model_types = ("qwen2_5_vl",)
    default_frames = 32

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self._last_grids: list[torch.Tensor] = []

    @property
    def merge(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    def observed_modules(self):
        # generate() encodes the video before prefill and drops `video_grid_thw` from the kwargs it
        # forwards, so the grid is read where the vision tower is called (a hook, not a patch).
        def record(module, args, kwargs):
            grid = kwargs.get("grid_thw")
            if grid is not None:
                self._last_grids.append(grid.detach())
                del self._last_grids[:-2]

        return [(self.model.model.visual, record)]

    def encode(self, kwargs: dict[str, Any]) -> Any:
        grid = kwargs["video_grid_thw"]
        out = self.model.get_video_features(pixel_values_videos=kwargs["pixel_values_videos"], video_grid_thw=grid, return_dict=True)
        out.video_grid_thw = grid  # generate() drops `video_grid_thw` next to precomputed features: the output carries it
        return out

    @property
    def temporal_patch_size(self) -> int:
        return int(self.model.config.vision_config.temporal_patch_size)

    def encode_chunked(self, kwargs: dict[str, Any], chunk_frames: int = DEFAULT_CHUNK_FRAMES, *, all_fields: bool = False) -> Any:
        """:meth:`encode` over ``chunk_frames`` frames at a time (see the base class and the module
        docstring for why temporal steps are independent). ``chunk_frames`` is rounded down to whole
        temporal steps (``temporal_patch_size`` = 2 frames; at least one step). Each video's patch
        rows are split on step boundaries, each chunk goes through the model's own
        ``get_video_features`` with its own ``video_grid_thw`` (steps, h, w), and the chunks'
        ``pooler_output`` (and Qwen3-VL's ``deepstack_features``, layer by layer) are concatenated
        back into one tensor per video. The output carries the full ``video_grid_thw`` as an
        attribute, which :meth:`grids` reads when ``generate()`` has dropped it from the inputs."""
        if chunk_frames < 1:
            raise SharpVError(f"chunk_frames must be at least 1, got {chunk_frames}")
        steps = max(1, chunk_frames // self.temporal_patch_size)
        pixels, grid = kwargs["pixel_values_videos"], kwargs["video_grid_thw"]
        if int(grid.prod(-1).sum()) != pixels.shape[0]:
            raise SharpVError(f"video_grid_thw covers {int(grid.prod(-1).sum())} patch rows but pixel_values_videos has {pixels.shape[0]}")
        pooled: list[torch.Tensor] = []
        deepstack: list[list[torch.Tensor]] | None = None
        outputs, cls, row, records = [], None, 0, []
        for t, h, w in grid.tolist():
            parts, layers = [], None
            for start in range(0, t, steps):
                n = min(steps, t - start)
                rows = self._on_model(pixels[row + start * h * w : row + (start + n) * h * w])
                out = self.model.get_video_features(
                    pixel_values_videos=rows, video_grid_thw=self._on_model(grid.new_tensor([[n, h, w]])), return_dict=True
                )
                cls = cls or type(out)
                records.append(self.patch_record(out))
                parts.append(out.pooler_output[0])
                if getattr(out, "deepstack_features", None) is not None:
                    layers = layers or [[] for _ in out.deepstack_features]
                    for acc, layer in zip(layers, out.deepstack_features):
                        acc.append(layer[0])
                if all_fields:
                    outputs.append(out)
                del out, rows
            row += t * h * w
            pooled.append(torch.cat(parts) if len(parts) > 1 else parts[0])
            if layers is not None:
                deepstack = deepstack or [[] for _ in layers]
                for acc, layer in zip(deepstack, layers):
                    acc.append(torch.cat(layer) if len(layer) > 1 else layer[0])
        fields = concat_fields(outputs, skip=("pooler_output", "deepstack_features")) if all_fields else {}
        if deepstack is not None:
            fields["deepstack_features"] = [tuple(layer) for layer in deepstack]
        result = cls(pooler_output=tuple(pooled), **fields)
        result.video_grid_thw = grid
        record = join_patch_attention(records)  # patch rows in input order, chunk after chunk
        if record is not None:
            setattr(result, ATTENTION_ATTR, record)
        return result

    def _video_grid(self, encoder_output: Any, kwargs: dict[str, Any]) -> torch.Tensor:
        grid = kwargs.get("video_grid_thw")
        sizes = [int(x.shape[0]) for x in encoder_output.pooler_output]
        carried = getattr(encoder_output, "video_grid_thw", None)  # set by encode / encode_chunked
        candidates = [g for g in (grid, carried) if g is not None] + self._last_grids[::-1]
        for cand in candidates:
            expanded = self._expanded_grid(cand, sizes, kwargs.get("input_ids"))
            if expanded is not None:
                return expanded
        raise SharpVError(
            "cannot tell the video's frame grid: pass `video_grid_thw` along with precomputed video features"
        )

    def _expanded_grid(self, grid: torch.Tensor, sizes: list[int], input_ids: torch.Tensor | None) -> torch.Tensor | None:
        """``grid`` as it matches features of ``sizes`` tokens per video. generate() encodes each
        video once and then repeats every prompt's features for its beams / returned sequences
        (``num_beams``, ``num_return_sequences``); the rows of ``input_ids`` tell which videos
        belong to one prompt, so the grid is repeated the same way."""
        grid_sizes = (grid.prod(-1) // self.merge**2).tolist()
        if grid_sizes == sizes:
            return grid
        if input_ids is None or not grid_sizes or len(sizes) % len(grid_sizes):
            return None
        repeat = len(sizes) // len(grid_sizes)
        per_row = (input_ids == self.video_token_id).sum(-1).tolist()
        rows, start = [], 0
        for row in range(0, len(per_row), repeat):
            end, total = start, 0
            while total < per_row[row] and end < len(grid_sizes):
                total, end = total + grid_sizes[end], end + 1
            if total != per_row[row]:
                return None
            rows.extend([grid[start:end]] * repeat)
            start = end
        expanded = torch.cat(rows) if rows else grid[:0]
        return expanded if (expanded.prod(-1) // self.merge**2).tolist() == sizes else None

    def grids(self, encoder_output: Any, kwargs: dict[str, Any]) -> VideoGrids:
        grid = self._video_grid(encoder_output, kwargs)
        grids, spatial = [], []
        for feats, (t, h, w) in zip(encoder_output.pooler_output, grid.tolist()):
            grids.append(feats.reshape(t, h * w // self.merge**2, -1))
            spatial.append((h // self.merge, w // self.merge))
        return VideoGrids(grids, encoder_output, spatial, self.extra_tokens_per_video)

    # --- vision-encoder attention ------------------------------------------------------------
    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.visual

    def vision_layers(self) -> list[torch.nn.Module]:
        return list(self.vision_tower().blocks)

    def vision_attention_module(self, layer: int) -> torch.nn.Module:
        return self.vision_layers()[layer].attn

    def patch_attention(self, module, args, kwargs, tower_args, tower_kwargs) -> torch.Tensor:
        """(patches,): q and k from the block's ``qkv`` projection of its input, the module's own
        ``apply_rotary_pos_emb_vision`` with the cos/sin it was given, ``softmax(q k^T * scaling)``
        one ``cu_seqlens`` segment at a time, mean over heads and the segment's rows; put back from
        window order into input order where the tower permuted it."""
        hidden = args[0] if args else kwargs["hidden_states"]  # (patches, width)
        cu_seqlens = kwargs["cu_seqlens"]
        cos, sin = kwargs["position_embeddings"]
        n = hidden.shape[0]
        query, key, _ = module.qkv(hidden).reshape(n, 3, module.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        rotary = sys.modules[type(module).__module__].apply_rotary_pos_emb_vision
        query, key = rotary(query, key, cos, sin)
        values = received_attention_qk(query.transpose(0, 1), key.transpose(0, 1), module.scaling, cu_seqlens.diff().tolist())
        return self._unwindow(values, tower_kwargs)

    def _unwindow(self, values: torch.Tensor, tower_kwargs: dict[str, Any]) -> torch.Tensor:
        """Patch values in a Qwen2.5-VL block's window order back in the tower's input order."""
        vision = self.model.config.vision_config
        if getattr(vision, "window_size", None) is None or not hasattr(self.vision_tower(), "fullatt_block_indexes"):
            return values  # Qwen3-VL: no window permutation
        from transformers.vision_utils import get_vision_window_index

        tower = self.vision_tower()
        window_index, _ = get_vision_window_index(
            tower_kwargs["grid_thw"], spatial_merge_size=tower.spatial_merge_size, window_size=tower.window_size,
            patch_size=tower.patch_size, kwargs=dict(tower_kwargs),
        )
        unit = self.merge**2
        inverse = torch.argsort(window_index.to(values.device))
        return values.reshape(-1, unit)[inverse].reshape(-1)

    def token_attention(self, encoder_output: Any, grids: VideoGrids, kwargs: dict[str, Any]) -> list[torch.Tensor] | None:
        record = self.patch_record(encoder_output)
        if record is None:
            return None
        unit = self.merge**2
        sizes = [g.shape[0] * g.shape[1] * unit for g in grids.grids]
        if record.values.dim() != 1 or record.values.shape[0] != sum(sizes):
            return None  # e.g. videos repeated for beams after encoding
        return [
            part.reshape(-1, unit).mean(-1).reshape(grid.shape[:2]).to(grid.device)
            for part, grid in zip(record.values.split(sizes), grids.grids)
        ]

    def pruned_output(self, grids: VideoGrids, keeps: list[torch.Tensor], transforms: list[Any]) -> Any:
        src = grids.encoder_output
        out = copy.copy(src)

        def prune(tensors):
            return tuple(
                self._apply(feats, grid.shape, transform, keep)
                for feats, grid, transform, keep in zip(tensors, grids.grids, transforms, keeps)
            )

        out.pooler_output = prune(src.pooler_output)
        deepstack = getattr(src, "deepstack_features", None)
        if deepstack is not None:
            out.deepstack_features = [prune(layer) for layer in deepstack]
        return out

    def full_positions(self, kwargs, input_ids, attention_mask):
        if kwargs.get("mm_token_type_ids") is None:
            raise SharpVError("Qwen-VL inputs need `mm_token_type_ids`: pass everything the processor returned")
        grid = kwargs.get("video_grid_thw")
        if grid is None and self._last_grids:
            grid = self._last_grids[-1]
        positions, _ = self.model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=kwargs["mm_token_type_ids"],
            image_grid_thw=kwargs.get("image_grid_thw"),
            video_grid_thw=grid,
            second_per_grid_ts=kwargs.get("second_per_grid_ts"),
            attention_mask=attention_mask,
        )
        return positions

    def sequence_keyed_kwargs(self) -> tuple[str, ...]:
        return ("mm_token_type_ids",)


class Qwen3VLAdapter(QwenVLAdapter):
    family = "qwen3-vl"
    model_types = ("qwen3_vl",)

    def min_withdraw_layer(self) -> int:
        # Deepstack adds visual features to the visual tokens' hidden states after each of the
        # first len(deepstack_visual_indexes) layers, at the prompt's visual positions: the tokens
        # stay in the sequence until the last injection has happened.
        return max(1, len(self.model.config.vision_config.deepstack_visual_indexes))
