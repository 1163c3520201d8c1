"""vLLM's Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision with SharpV's stage 1 as the video pruning step. Imported only by
vLLM (the registry loads it lazily by name); see :mod:`sharpv.integrations.vllm`."""

from __future__ import annotations

import re

import torch
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration
from vllm.model_executor.models.utils import WeightsMapper
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.video_prune.evs import compute_mrope_for_media, compute_retained_tokens_count

from sharpv.core.selection import select_count
from sharpv.errors import SharpVError
from sharpv.integrations.vllm import check_vllm, logger
from sharpv.integrations.vllm.workarounds import without_outer_vision_start


def retention_mask(embeds: torch.Tensor, frames: int, per_frame: int, rate: float, channels: int) -> torch.Tensor:
    """SharpV's stage 1 on one video's embeddings (frames * per_frame, >= channels): a (frames,
    per_frame) bool mask keeping exactly the count vLLM fixes for ``rate``. Only the first
    ``channels`` channels are scored (the LLM's input; Qwen3-VL appends its deepstack levels)."""
    total = compute_retained_tokens_count(per_frame, frames, rate)
    grid = embeds[:, :channels].reshape(frames, per_frame, channels).float()
    return select_count(grid, total).keep.to(embeds.device)


class _SharpVPruning:
    """What the classes share: the checks at build time, the selection, and the last selection's
    kept tokens per frame (for tests)."""

    #: the checkpoint ``model_type`` the class serves
    sharpv_model_type = ""

    def __init__(self, *, vllm_config, prefix: str = ""):
        # before vLLM's own constructor: a checkpoint of another family gets one line, not a
        # failure deep inside the model's construction
        check_vllm()
        found = getattr(vllm_config.model_config.hf_config, "model_type", None)
        if found != self.sharpv_model_type:
            raise SharpVError(f"{type(self).__name__} serves {self.sharpv_model_type!r} checkpoints, this one is {found!r}; "
                              "take the architecture from sharpv.integrations.vllm.llm_kwargs(model, rate)")
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config = vllm_config.model_config.multimodal_config
        method = getattr(config, "video_pruning_method", None) or "evs"
        if method != "evs":
            raise SharpVError(f"the SharpV architectures select with SharpV; leave video_pruning_method unset (got {method!r})")
        #: the share of video tokens pruned (None or 0: no pruning)
        self.sharpv_rate = getattr(config, "video_pruning_rate", None)
        #: kept tokens per frame (temporal step) of every video the last encoder call pruned
        self.sharpv_kept_per_frame: list[list[int]] = []

    def _sharpv_mask(self, embeds: torch.Tensor, frames: int, per_frame: int) -> torch.Tensor:
        """The (frames, per_frame) keep mask of one video, recorded in ``sharpv_kept_per_frame``."""
        mask = retention_mask(embeds, frames, per_frame, self.sharpv_rate, self.config.text_config.hidden_size)
        kept = mask.sum(1).tolist()
        self.sharpv_kept_per_frame.append(kept)
        logger.info("SharpV kept %d of %d video tokens (%d frames of %d, rate %g)", sum(kept), frames * per_frame,
                    frames, per_frame, self.sharpv_rate)
        return mask

    def _sharpv_qwen_mask(self, embeds: torch.Tensor, grid_thw) -> torch.Tensor:
        """Qwen-VL: the flat mask of a video of grid (t, h, w) patches (merged 2x2 into tokens)."""
        t, h, w = (int(v) for v in grid_thw)
        merge = self.visual.spatial_merge_size
        return self._sharpv_mask(embeds, t, (h // merge) * (w // merge)).reshape(-1)


class SharpVQwen2_5_VLForConditionalGeneration(_SharpVPruning, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL; with ``video_pruning_rate`` > 0 SharpV's stage 1 picks the kept tokens."""

    sharpv_model_type = "qwen2_5_vl"

    def _postprocess_video_embeds_evs(self, video_embeds_split, video_input):
        """Each video: SharpV's retention mask, then the kept embeddings with their M-RoPE positions
        appended (the layout vLLM's pruned-video path reads)."""
        grids = video_input["video_grid_thw"].tolist()
        seconds = video_input.get("second_per_grid_ts")
        if seconds is None:
            raise SharpVError("second_per_grid_ts is missing from the video inputs; pruned Qwen2.5-VL videos need it")
        merge = self.visual.spatial_merge_size
        tokens_per_second = self.config.vision_config.tokens_per_second
        self.sharpv_kept_per_frame = []
        out = []
        for embeds, grid, second in zip(video_embeds_split, grids, seconds.long()):
            mask = self._sharpv_qwen_mask(embeds, grid)
            positions = compute_mrope_for_media(grid, merge, tokens_per_second=tokens_per_second,
                                                video_second_per_grid=second.item()).to(embeds.device)
            out.append(torch.cat([embeds[mask], positions[mask]], dim=1))
        return tuple(out)


class SharpVQwen3VLForConditionalGeneration(_SharpVPruning, Qwen3VLForConditionalGeneration):
    """vLLM's Qwen3-VL; with ``video_pruning_rate`` > 0 SharpV's stage 1 picks the kept tokens."""

    sharpv_model_type = "qwen3_vl"

    def _postprocess_video_embeds_evs(self, video_embeds_split, video_input):
        """Each video: SharpV's retention mask on the main channels (the deepstack levels ride
        along), then vLLM's own assembly of the kept frames with their timestamp tokens."""
        if not self.is_multimodal_pruning_enabled:
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        grids = video_input["video_grid_thw"].tolist()
        self.sharpv_kept_per_frame = []
        out = []
        for index, (embeds, grid) in enumerate(zip(video_embeds_split, grids)):
            mask = self._sharpv_qwen_mask(embeds, grid)
            out.append(self._create_final_video_embeddings(
                video_embeddings=embeds[mask], num_tokens_per_frame=self.sharpv_kept_per_frame[-1],
                timestamps=video_input.timestamps[index], video_grid_thw=grid, retention_mask=mask,
            ))
        return tuple(out)

    def recompute_mrope_positions(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens):
        """vLLM's recomputation, on prompts that keep the chat template's outer vision pair
        (:func:`~sharpv.integrations.vllm.workarounds.without_outer_vision_start`)."""
        config = self.config
        ids = without_outer_vision_start(input_ids, config.vision_start_token_id, config.video_token_id, config.image_token_id)
        return super().recompute_mrope_positions(ids, multimodal_embeddings, mrope_positions, num_computed_tokens)



class SharpVLlavaOnevisionProcessingInfo(LlavaOnevisionProcessingInfo):
    """LLaVA-OneVision's prompt processing, counting the kept video tokens: vLLM prunes no
    LLaVA-OneVision video itself, so with ``video_pruning_rate`` > 0 this is what shrinks the
    prompt's video placeholders, by the count vLLM's own pruning uses (plus the newline)."""

    def get_num_video_tokens(self, *, image_width: int, image_height: int, num_frames: int) -> int:
        rate = self.ctx.get_mm_config().video_pruning_rate
        if not rate:
            return super().get_num_video_tokens(image_width=image_width, image_height=image_height, num_frames=num_frames)
        per_frame = self._get_num_frame_tokens(image_width=image_width, image_height=image_height)
        return compute_retained_tokens_count(per_frame, num_frames, rate) + 1  # the newline stays


@MULTIMODAL_REGISTRY.register_processor(
    LlavaOnevisionMultiModalProcessor, info=SharpVLlavaOnevisionProcessingInfo, dummy_inputs=LlavaOnevisionDummyInputsBuilder,
)
class SharpVLlavaOnevisionForConditionalGeneration(_SharpVPruning, LlavaOnevisionForConditionalGeneration):
    """vLLM's LLaVA-OneVision; with ``video_pruning_rate`` > 0 SharpV's stage 1 keeps vLLM's count of
    each video's tokens (the image_newline after them always stays). Positions are the shortened
    prompt's (1-D, contiguous): sharpv's ``positions="compact"``."""

    sharpv_model_type = "llava_onevision"

    #: vLLM's names, plus checkpoints saved by transformers 5.x, whose SigLIP tower drops the
    #: ``vision_model.`` level (vLLM 0.32 loads only the older layout of the hub checkpoints)
    hf_to_vllm_mapper = LlavaOnevisionForConditionalGeneration.hf_to_vllm_mapper | WeightsMapper(
        orig_to_new_regex={re.compile(r"^((?:model\.)?vision_tower\.)(?!vision_model\.)"): r"\1vision_model."}
    )

    def _process_video_pixels(self, inputs):
        out = super()._process_video_pixels(inputs)
        if not self.sharpv_rate:
            return out
        pixels = inputs["pixel_values_videos"]
        frames = [pixels.shape[1]] * pixels.shape[0] if isinstance(pixels, torch.Tensor) else [len(v) for v in pixels]
        self.sharpv_kept_per_frame = []
        pruned = []
        for video, t in zip(out, frames):
            video = video.reshape(-1, video.shape[-1])  # (T * f + 1, d): the frames' tokens, then the newline
            body, newline = video[:-1], video[-1:]
            mask = self._sharpv_mask(body, t, body.shape[0] // t)
            pruned.append(torch.cat([body[mask.reshape(-1)], newline]))
        return pruned
