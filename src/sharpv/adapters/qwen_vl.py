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
"""

from __future__ import annotations

import copy

from typing import Any

import torch

from sharpv.adapters.base import DEFAULT_CHUNK_FRAMES, VideoGrids, VideoLLMAdapter, concat_fields
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
        outputs, cls, row = [], None, 0
        for t, h, w in grid.tolist():
            parts, layers = [], None
            for start in range(0, t, steps):
                n = min(steps, t - start)
                rows = self._on_model(pixels[row + start * h * w : row + (start + n) * h * w])
                out = self.model.get_video_features(
                    pixel_values_videos=rows, video_grid_thw=self._on_model(grid.new_tensor([[n, h, w]])), return_dict=True
                )
                cls = cls or type(out)
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
