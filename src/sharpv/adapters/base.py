"""What a model family must tell the runtime: where its video features are and how it places them.

An adapter never changes the model. It reads the video features the model's own
``get_video_features`` produced (or produces them the same way), splits them into per-video
(T, f, d) grids, rebuilds the encoder output with only the kept tokens, and computes the
positions the model would use for the full prompt.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sharpv.core.positions import compact_positions
from sharpv.core.vision_attention import PatchAttention

#: attribute of a vision-tower output (and of the video encoder output built from it) holding the
#: :class:`~sharpv.core.vision_attention.PatchAttention` recorded while it was computed
ATTENTION_ATTR = "sharpv_vision_attention"

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


def join_patch_attention(records: list[Any]) -> PatchAttention | None:
    """The records of consecutive chunks of one encoding as one record (None unless every chunk has
    one): values concatenated along dim 0, seconds summed."""
    if not records or any(r is None for r in records):
        return None
    return PatchAttention(torch.cat([r.values for r in records]), sum(r.seconds for r in records), records[0].layer)


class VisionAttentionRecorder:
    """Reads the attention that one vision-encoder layer pays each patch, while the encoder runs its
    own attention kernel unchanged.

    Three hooks, registered by the runtime and removed with the method: a forward pre-hook on the
    vision tower opens a record for the call; a forward pre-hook on the chosen layer's attention
    module recomputes q and k from the module's input with the module's own projections (and rotary
    embedding) and computes the received attention (:meth:`VideoLLMAdapter.patch_attention`, timed);
    a forward hook on the tower attaches the :class:`PatchAttention` to the tower's output object as
    ``ATTENTION_ATTR``. ``get_video_features`` returns that same object (both families), so the
    attention travels with the video features, whether ``generate()`` encoded them or the runtime
    did, and chunked encoding joins the chunks' records. Image encodings get a record too (it is
    never read)."""

    def __init__(self, adapter: "VideoLLMAdapter", layer: int):
        self.adapter = adapter
        self.layer = adapter.resolve_vision_layer(layer)
        self.tower = adapter.vision_tower()
        self.module = adapter.vision_attention_module(self.layer)
        self._calls: list[dict[str, Any]] = []

    def register(self) -> list[Any]:
        return [
            self.tower.register_forward_pre_hook(self._open, with_kwargs=True),
            self.module.register_forward_pre_hook(self._record, with_kwargs=True),
            self.tower.register_forward_hook(self._close, with_kwargs=True, always_call=True),
        ]

    def _open(self, module, args, kwargs):
        self._calls.append({"args": args, "kwargs": kwargs, "values": [], "seconds": 0.0})

    def _record(self, module, args, kwargs):
        if not self._calls:
            return None
        call = self._calls[-1]
        hidden = args[0] if args else kwargs["hidden_states"]
        _sync(hidden.device)
        start = time.perf_counter()
        with torch.no_grad():
            values = self.adapter.patch_attention(module, args, kwargs, call["args"], call["kwargs"])
        _sync(hidden.device)
        call["seconds"] += time.perf_counter() - start
        call["values"].append(values)
        return None

    def _close(self, module, args, kwargs, output):
        if not self._calls:
            return None
        call = self._calls.pop()
        if output is None or len(call["values"]) != 1:  # a failed call, or the layer ran twice
            return None
        try:
            setattr(output, ATTENTION_ATTR, PatchAttention(call["values"][0], call["seconds"], self.layer))
        except (AttributeError, TypeError):  # a tuple output (return_dict=False): nothing to attach to
            pass
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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

    # --- vision-encoder attention (VisionZip, FastVID, FlashVID, HoliTom) -------------------
    def vision_tower(self) -> torch.nn.Module | None:
        """The vision encoder module that ``get_video_features`` calls (None: not supported)."""
        return None

    def vision_layers(self) -> list[torch.nn.Module]:
        """The encoder layers whose outputs feed the video features, in order (negative layer
        indices count back from the last of them)."""
        return []

    def resolve_vision_layer(self, layer: int) -> int:
        layers = self.vision_layers()
        index = len(layers) + layer if layer < 0 else layer
        if not 0 <= index < len(layers):
            raise IndexError(f"vision layer {layer} does not exist: the encoder feeds the video features with {len(layers)} layers")
        return index

    def vision_attention_module(self, layer: int) -> torch.nn.Module:
        """The self-attention module of encoder layer ``layer`` (a non-negative index)."""
        raise NotImplementedError

    def vision_attention_recorder(self, layer: int) -> VisionAttentionRecorder | None:
        """Hooks that record layer ``layer``'s received attention (None: the family cannot)."""
        if self.vision_tower() is None:
            return None
        return VisionAttentionRecorder(self, layer)

    def patch_attention(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any], tower_args: tuple,
                        tower_kwargs: dict[str, Any]) -> torch.Tensor:
        """Inside the attention module's forward pre-hook (``args``, ``kwargs``: its inputs; the
        tower's own call inputs alongside): the attention each of the call's patches receives, in
        the order of the tower's input patches."""
        raise NotImplementedError

    def token_attention(self, encoder_output: Any, grids: VideoGrids, kwargs: dict[str, Any]) -> list[torch.Tensor] | None:
        """Per video, the recorded patch attention mapped onto the LLM's (T, f) token grid the way
        the family maps patch features to tokens; None when the encoder output carries no record
        (precomputed features) or it does not match the grids."""
        return None

    @staticmethod
    def patch_record(encoder_output: Any) -> PatchAttention | None:
        return getattr(encoder_output, ATTENTION_ATTR, None)

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
