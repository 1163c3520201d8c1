"""What a model family must tell the runtime: where its video features are and how it places them.

An adapter never changes the model. It reads the video features the model's own
``get_video_features`` produced (or produces them the same way), splits them into per-video
(T, f, d) grids, rebuilds the encoder output with only the kept tokens, and computes the
positions the model would use for the full prompt.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sharpv.core.positions import compact_positions

#: Frames per vision-tower call in :meth:`VideoLLMAdapter.encode_chunked` (rounded down to whole
#: temporal steps, 8 of two frames, on Qwen). Why 16: the vision tower's transient activations grow
#: with the frames in one call (attention never spans frames in these families, so linearly),
#: while the features kept grow only by f tokens of the LLM's width per frame. 16 frames are
#: already large GEMMs (LLaVA-OneVision's SigLIP-so400m at 384: 16 x 729 = 11,664 patch tokens a
#: call), so larger chunks buy little speed, and one chunk's activations stay around 0.1-0.3 GB in
#: bf16 (MLP 11,664 x 4,304 x 2 bytes = 100 MB; eager attention scores 16 x 16 heads x 729^2 x 2
#: bytes = 272 MB) where 795 frames at once need ~50 times that. 16 is also the shipped model's
#: default frame count, so the default ``answer`` encodes in one call, exactly as before.
DEFAULT_CHUNK_FRAMES = 16


def concat_fields(outputs: list[Any], skip: tuple[str, ...]) -> dict[str, Any]:
    """The tensor fields of chunk ``outputs`` (ModelOutputs of one class), each concatenated along
    dim 0 (tuples / lists of tensors position by position; None stays None), except ``skip``."""
    fields: dict[str, Any] = {}
    for name in outputs[0].keys():
        if name in skip:
            continue
        values = [out.get(name) for out in outputs]
        first = values[0]
        if isinstance(first, torch.Tensor):
            fields[name] = torch.cat(values, dim=0)
        elif isinstance(first, (tuple, list)) and all(isinstance(v, torch.Tensor) or v is None for v in first):
            fields[name] = type(first)(
                None if parts[0] is None else torch.cat(list(parts), dim=0) for parts in zip(*values)
            )
    return fields


@dataclass
class VideoGrids:
    """Per-video feature grids as stage 1 sees them, plus what is needed to rebuild the output."""

    grids: list[torch.Tensor]  # one (T, f, d) tensor per video, in placeholder order
    encoder_output: Any  # the model's own encoder output object (ModelOutput)
    spatial: list[tuple[int, int]]  # (h, w) token grid of every frame, per video
    extra_tokens: int = 0  # always-kept tokens after each video's grid


class VideoLLMAdapter:
    """Base class of the per-family adapters (LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL)."""

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    default_frames: ClassVar[int] = 32
    #: always-kept tokens after each video's frame grid (LLaVA-OneVision's image_newline)
    extra_tokens_per_video: ClassVar[int] = 0

    def __init__(self, model: torch.nn.Module):
        self.model = model

    # --- identification -------------------------------------------------------------------
    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    # --- features ---------------------------------------------------------------------------
    def encode(self, kwargs: dict[str, Any]) -> Any:
        """Run the model's own ``get_video_features`` on the raw video inputs in ``kwargs``."""
        raise NotImplementedError

    def encode_chunked(self, kwargs: dict[str, Any], chunk_frames: int = DEFAULT_CHUNK_FRAMES, *, all_fields: bool = False) -> Any:
        """:meth:`encode` run over at most ``chunk_frames`` frames at a time: the model's own
        ``get_video_features`` on each chunk, assembled into one encoder output equal (to float
        round-off) to the one-shot output, which ``generate(..., mm_encoder_outputs={"video": out})``
        and the runtime take in place of the pixel values. Peak vision-tower memory is one chunk's.

        The output holds ``pooler_output`` (and Qwen3-VL's ``deepstack_features``): what the LLM
        and the pruning read. The per-patch fields (``last_hidden_state``, ``hidden_states``) grow
        with the video and nothing downstream reads them, so they are left out (None) unless
        ``all_fields``, which concatenates them too.
        """
        raise NotImplementedError

    def _on_model(self, x: torch.Tensor) -> torch.Tensor:
        """A chunk of the inputs on the model's device (pixels in its dtype): the whole video's
        pixel values may stay on the CPU, only one chunk at a time goes to the accelerator."""
        device = next(self.model.parameters()).device
        return x.to(device, self.model.dtype) if x.is_floating_point() else x.to(device)

    def encode_images(self, kwargs: dict[str, Any]) -> Any:
        """Run the model's own ``get_image_features`` on the image inputs in ``kwargs`` (images in a
        video prompt are never pruned; they are encoded here only because the model refuses raw
        pixels next to precomputed video features)."""
        encoder = self.model.model.get_image_features
        accepted = inspect.signature(encoder).parameters
        args = {key: value for key, value in kwargs.items() if key in accepted and key != "kwargs" and value is not None}
        return encoder(**args, return_dict=True)

    def grids(self, encoder_output: Any, kwargs: dict[str, Any]) -> VideoGrids:
        raise NotImplementedError

    def pruned_output(self, grids: VideoGrids, keeps: list[torch.Tensor], transforms: list[Any]) -> Any:
        """A copy of the encoder output holding only the kept tokens (``keeps[v]``: flat bool),
        after ``transforms[v]`` (None, or a function of a (T, f, d) grid) reshaped every feature."""
        raise NotImplementedError

    @staticmethod
    def _apply(feats: torch.Tensor, grid_shape: torch.Size, transform: Any, keep: torch.Tensor) -> torch.Tensor:
        """``feats`` (N, d): transform its leading T*f tokens as a grid, then take the kept ones."""
        if transform is not None:
            n = grid_shape[0] * grid_shape[1]
            body = transform(feats[:n].reshape(grid_shape[0], grid_shape[1], -1)).reshape(n, -1)
            feats = torch.cat([body, feats[n:]]) if feats.shape[0] > n else body
        return feats[keep]

    def decoder_layers(self) -> list[torch.nn.Module]:
        """The language model's decoder layers, in order (stage 2 hooks them)."""
        return list(self.model.model.language_model.layers)

    def min_withdraw_layer(self) -> int:
        """Earliest layer at which visual tokens may leave the hidden states."""
        return 1

    def observed_modules(self) -> list[tuple[torch.nn.Module, Any]]:
        """(module, forward-pre-hook-with-kwargs) pairs the runtime registers while applied."""
        return []

    # --- positions -------------------------------------------------------------------------
    def full_positions(self, kwargs: dict[str, Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Positions of the full prompt as the model would compute them: (B, L) or (P, B, L)."""
        if attention_mask is not None:
            return compact_positions(attention_mask)
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)

    def sequence_keyed_kwargs(self) -> tuple[str, ...]:
        """Keyword inputs shaped (B, L, ...) that must be shortened with the prompt."""
        return ()
