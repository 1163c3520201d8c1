"""Turn sampled frames and a question into model inputs.

With torchvision installed (the usual GPU setup) this is the model's own processor:
``AutoProcessor.from_pretrained(dir)`` called with the sampled frames.

transformers' video processors need torchvision, which has no CPU build on PyPI. Where it is
missing, :class:`TorchVideoInputs` stands in for them, from the checkpoint's own processor configs,
tokenizer and chat template, repeating transformers 5.x's steps with the same torch operations, so
that its inputs equal the processor's (tests/test_processor_parity.py compares the two):

- resize the uint8 frames exactly as ``torchvision.transforms.v2.functional.resize`` does on a CPU
  tensor with ``antialias=True``: bicubic runs torch's native uint8 antialiased kernel (integer
  arithmetic, each separable pass rounded and clamped to 0..255), not a float resize rounded
  afterwards, whose unclamped bicubic overshoot between the passes moved pixels by up to 20
  intensity levels;
- then the fused rescale + normalise: ``(x - mean / rescale_factor) / (std / rescale_factor)`` on
  float32, as transformers' ``rescale_and_normalize`` computes it;
- then the family's layout. LLaVA-OneVision: (1, T, 3, H, W) and ``T*f + 1`` placeholders.
  Qwen2.5-VL / Qwen3-VL: frame size from the family's own ``smart_resize`` (Qwen3-VL budgets
  pixels over the clip's real frame count, before the last frame is repeated to fill the last
  temporal patch), temporal x spatial patches, ``video_grid_thw``, ``mm_token_type_ids``;
  Qwen2.5-VL adds ``second_per_grid_ts``; Qwen3-VL writes ``<t seconds>`` before each temporal
  step. transformers 5.0-5.24 replace only the ``<|video_pad|>`` of the chat template's
  ``<|vision_start|><|video_pad|><|vision_end|>``, so that outer pair stays around the timestamped
  steps; from 5.25 (as Qwen's own 4.x processor did) the whole wrapper is replaced. The stand-in
  does what the installed transformers' processor does, found by feature
  (:func:`qwen3_collapses_outer_wrapper`).

Streaming input: :meth:`TorchVideoInputs.input_size` says which (h, w) the resize above produces for
a clip of n frames of H x W (LLaVA-OneVision: the fixed size; Qwen: the family's ``smart_resize``,
which depends on n for Qwen3-VL and for Qwen2.5-VL with ``cap_pixels_per_frame``), and
:meth:`TorchVideoInputs.resize_frames` applies that very resize to any subset of the clip's frames.
The resize kernels (uint8 antialiased, nearest, float-then-round) compute every frame on its own,
so resizing frame by frame equals resizing the stack bit for bit. :func:`read_video_for` decodes
with it: each kept frame is resized right after decoding, only small uint8 frames are held, and
``prepare`` finds them at the input size (its resize is then a no-op), giving the same inputs as
``read_video`` + ``prepare`` (tests/test_streaming_input.py checks torch.equal).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sharpv.errors import SharpVError
from sharpv.video.decode import SampledVideo, read_video

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

#: transformers 5.23's class defaults for what a checkpoint's video processor config leaves out
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llava-onevision": dict(
        size={"height": 384, "width": 384}, resample=3, do_resize=True, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=_CLIP_MEAN, image_std=_CLIP_STD,
    ),
    "qwen2.5-vl": dict(
        size={"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}, resample=3, do_resize=True,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=_CLIP_MEAN, image_std=_CLIP_STD,
        patch_size=14, temporal_patch_size=2, merge_size=2, cap_pixels_per_frame=False, max_video_tokens=128000,
    ),
    "qwen3-vl": dict(
        size={"shortest_edge": 128 * 32 * 32, "longest_edge": 32 * 32 * 768}, resample=3, do_resize=True,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5], patch_size=16, temporal_patch_size=2, merge_size=2, cap_pixels_per_frame=False,
        max_video_tokens=768,
    ),
}

#: PIL resample codes -> torch interpolation modes, as transformers maps them to torchvision's
_INTERPOLATION = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


def has_torchvision() -> bool:
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:
        return False
    return True


def _qwen2_smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL / Qwen2.5-VL's per-frame rule (transformers' ``qwen2_vl`` ``smart_resize``): sides
    divisible by ``factor``, aspect kept, ``h * w`` within [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > 200:
        raise SharpVError(f"the frames' aspect ratio must be below 200, got {height} x {width}")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _qwen3_smart_resize(
    frames: int, height: int, width: int, temporal: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen3-VL's rule (transformers' ``qwen3_vl`` ``smart_resize``): the pixel budget covers the
    whole clip, ``frames`` being the real frame count (before temporal padding)."""
    if frames < temporal:
        raise SharpVError(f"Qwen3-VL needs at least {temporal} frames (its temporal patch size), got {frames}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise SharpVError(f"the frames' aspect ratio must be below 200, got {height} x {width}")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    t = round(frames / temporal) * temporal
    if t * h * w > max_pixels:
        beta = math.sqrt(frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (frames * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _native_uint8(mode: str) -> bool:
    """Whether torchvision resizes uint8 CPU tensors natively in ``mode`` (its
    ``_do_native_uint8_resize_on_cpu``); otherwise it resizes a float copy and rounds."""
    if mode == "bilinear":
        import platform

        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")
    return mode == "bicubic"


def _resize(video: torch.Tensor, size: tuple[int, int], resample: int = 3) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, h, w) uint8, computed as ``torchvision.transforms.v2.functional
    .resize(video, size, interpolation, antialias=True)`` computes it on a CPU tensor, which is what
    transformers' video processors call."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    mode = _INTERPOLATION.get(int(resample))
    if mode is None:
        raise SharpVError(f"resample={resample} is not supported without torchvision (0 nearest, 2 bilinear, 3 bicubic)")
    x = video.contiguous()
    if mode == "nearest-exact":
        return torch.nn.functional.interpolate(x, size=size, mode=mode)
    if _native_uint8(mode):
        return torch.nn.functional.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
    y = torch.nn.functional.interpolate(x.float(), size=size, mode=mode, antialias=True, align_corners=False)
    if mode == "bicubic":
        y = y.clamp_(0, 255)
    return y.round_().to(torch.uint8)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def qwen3_collapses_outer_wrapper() -> bool:
    """Whether the installed transformers' Qwen3-VL processor replaces the chat template's whole
    ``<|vision_start|><|video_pad|><|vision_end|>`` by the timestamped steps (5.25 on: it defines
    its own ``get_text_with_replacements`` for that) rather than only the ``<|video_pad|>``."""
    try:
        from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    except ImportError:
        return False
    return "get_text_with_replacements" in vars(Qwen3VLProcessor)


@dataclass
class TorchVideoInputs:
    """Processor stand-in for machines without torchvision (see the module docstring)."""

    tokenizer: Any
    family: str
    settings: dict[str, Any]
    processor_settings: dict[str, Any]
    chat_template: str | None
    resolved: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.family not in _DEFAULTS:
            raise SharpVError(f"unknown model family {self.family!r}; expected one of {', '.join(_DEFAULTS)}")
        cfg = {**_DEFAULTS[self.family], **{k: v for k, v in self.settings.items() if v is not None}}
        if self.family == "qwen2.5-vl":  # Qwen2-VL's video processor lets min/max_pixels override size
            size = dict(cfg["size"])
            if self.settings.get("min_pixels") is not None:
                size["shortest_edge"] = self.settings["min_pixels"]
            if self.settings.get("max_pixels") is not None:
                size["longest_edge"] = self.settings["max_pixels"]
            cfg["size"] = size
        if cfg.get("do_center_crop"):
            raise SharpVError("do_center_crop is not supported without torchvision")
        self.resolved = cfg

    @classmethod
    def from_pretrained(cls, path: str | Path, family: str) -> "TorchVideoInputs":
        """Read the configs the way transformers does: the video processor's settings from
        ``processor_config.json``'s nested ``video_processor``, else ``video_preprocessor_config.json``,
        else the image processor's ``preprocessor_config.json``."""
        from transformers import AutoTokenizer

        path = Path(path)
        proc = _read_json(path / "processor_config.json")
        settings = proc.get("video_processor")
        if settings is None:
            for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
                if (path / name).exists():
                    settings = _read_json(path / name)
                    break
        if settings is None:
            raise SharpVError(f"{path} has no video_preprocessor_config.json; is it a video LLM checkpoint?")
        tokenizer = AutoTokenizer.from_pretrained(path)
        template_file = path / "chat_template.jinja"
        template = template_file.read_text() if template_file.exists() else tokenizer.chat_template
        return cls(tokenizer, family, settings, proc, template)

    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, **_: Any) -> str:
        return self.tokenizer.apply_chat_template(
            conversation, chat_template=self.chat_template, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def _token(self, name: str, default: str) -> str:
        """A placeholder token's text, looked up as transformers' processors do."""
        if hasattr(self.tokenizer, name):
            return getattr(self.tokenizer, name)
        return self.processor_settings.get(name, default) if self.family == "llava-onevision" else default

    def _rescale_and_normalise(self, x: torch.Tensor) -> torch.Tensor:
        """transformers' fused ``rescale_and_normalize`` (TorchvisionBackend), on uint8 frames."""
        s = self.resolved
        if s["do_rescale"] and s["do_normalize"]:
            mean = torch.tensor(s["image_mean"]) * (1.0 / s["rescale_factor"])
            std = torch.tensor(s["image_std"]) * (1.0 / s["rescale_factor"])
        else:
            mean, std = torch.tensor(s["image_mean"]), torch.tensor(s["image_std"])
        if s["do_normalize"]:
            x = x.to(torch.float32)
            mean = mean.to(torch.float32).view(-1, 1, 1) if mean.ndim == 1 else mean.to(torch.float32)
            std = std.to(torch.float32).view(-1, 1, 1) if std.ndim == 1 else std.to(torch.float32)
            return x.sub(mean).div_(std)
        if s["do_rescale"]:
            return x * s["rescale_factor"]
        return x

    def input_size(self, height: int, width: int, frames: int) -> tuple[int, int] | None:
        """The (h, w) that :meth:`prepare` resizes the frames of a clip of ``frames`` frames of
        ``height`` x ``width`` to, or None when the checkpoint does not resize (``do_resize`` false).

        LLaVA-OneVision: the configured fixed size. Qwen2.5-VL: its per-frame ``smart_resize`` (the
        pixel cap depends on ``frames`` only with ``cap_pixels_per_frame``). Qwen3-VL: its
        ``smart_resize``, whose pixel budget covers the whole clip, so the size depends on
        ``frames`` (the real frame count, before temporal padding); fewer than its temporal patch
        size is refused here as in :meth:`prepare`."""
        s = self.resolved
        if not s["do_resize"]:
            return None
        if self.family == "llava-onevision":
            size = s["size"]
            if "height" not in size or "width" not in size:
                raise SharpVError(f"LLaVA-OneVision video size {size} is not supported without torchvision (height and width)")
            return int(size["height"]), int(size["width"])
        p, tp, m = s["patch_size"], s["temporal_patch_size"], s["merge_size"]
        factor, size, n = p * m, s["size"], frames
        max_pixels = size["longest_edge"]
        if self.family == "qwen2.5-vl":
            if s["cap_pixels_per_frame"]:
                total = int(s["max_video_tokens"] * factor * factor * 0.9)
                max_pixels = max(min(max_pixels, total * tp // n), int(size["shortest_edge"] * 1.05))
            return _qwen2_smart_resize(height, width, factor, size["shortest_edge"], max_pixels)
        if s["cap_pixels_per_frame"]:
            cap = s["max_video_tokens"] * factor * factor
            max_pixels = max(min(cap, size["longest_edge"] // n), int(size["shortest_edge"] * 1.05)) * n
        return _qwen3_smart_resize(n, height, width, tp, factor, size["shortest_edge"], max_pixels)

    def resize_frames(self, frames: np.ndarray, count: int) -> np.ndarray:
        """Frames of a clip of ``count`` sampled frames, resized as :meth:`prepare` resizes them:
        (H, W, 3) or (k, H, W, 3) uint8 RGB in, the same layout at :meth:`input_size` out (the input
        itself when no resize is needed). Bit-identical to resizing the whole clip at once, so a
        decoder can call it on each frame as it comes (:func:`read_video_for`)."""
        single = frames.ndim == 3
        x = np.ascontiguousarray(frames[None] if single else frames)
        x = torch.from_numpy(x if x.flags.writeable else x.copy()).permute(0, 3, 1, 2)
        size = self.input_size(int(x.shape[2]), int(x.shape[3]), count)
        if size is None or tuple(x.shape[-2:]) == tuple(size):
            return frames
        y = _resize(x.contiguous(), size, self.resolved["resample"]).permute(0, 2, 3, 1)
        y = np.ascontiguousarray(y.numpy())
        return y[0] if single else y

    def _to_input_size(self, frames: torch.Tensor, video: SampledVideo, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(T, 3, H, W) uint8 frames at the model's input size (or at ``size``, see :meth:`prepare`).
        Frames already resized while decoding (``video.source_size`` set) must be at the size their
        decoded size calls for: they are then used as they are, which gives the same pixels as
        resizing the decoded frames here."""
        n, h, w = frames.shape[0], int(frames.shape[2]), int(frames.shape[3])
        source = tuple(int(v) for v in video.source_size) if video.source_size is not None else (h, w)
        if size is None:
            size = self.input_size(*source, n)
        if size is None:
            size = source
        if (h, w) == tuple(size):
            return frames
        if source != (h, w):
            raise SharpVError(
                f"the frames were resized to {h} x {w} while decoding, but this model takes {size[0]} x {size[1]} for "
                f"{n} frames of {source[0]} x {source[1]}; read the video with this processor (read_video_for)"
            )
        return _resize(frames, size, self.resolved["resample"])

    def prepare(self, prompt: str, video: SampledVideo, size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """The model inputs of ``prompt`` (one video placeholder) and ``video``. ``size`` (h, w), a
        multiple of the patch grid, replaces the resize rule: a live stream pins its frame size at its
        first chunk, since Qwen3-VL's rule depends on the clip length a stream does not have."""
        frames = torch.from_numpy(np.ascontiguousarray(video.frames)).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)
        frames = self._to_input_size(frames, video, size)
        if self.family == "llava-onevision":
            return self._llava(prompt, frames)
        return self._qwen(prompt, frames, video)

    def _tokenize(self, text: str) -> dict[str, torch.Tensor]:
        # as the processor calls its tokenizer: the tokenizer's own add_special_tokens default
        enc = self.tokenizer(text, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _llava(self, prompt: str, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        # frames are at the input size already (prepare resized them)
        pixels = self._rescale_and_normalise(frames)
        side = math.ceil(int(math.sqrt(int(self.processor_settings["num_image_tokens"]))) / 2)
        token = self._token("video_token", "<video>")
        text = prompt.replace(token, token * (frames.shape[0] * side * side + 1), 1)
        return {**self._tokenize(text), "pixel_values_videos": pixels.unsqueeze(0)}

    def _qwen(self, prompt: str, frames: torch.Tensor, video: SampledVideo) -> dict[str, torch.Tensor]:
        s = self.resolved
        p, tp, m = s["patch_size"], s["temporal_patch_size"], s["merge_size"]
        n = frames.shape[0]  # frames are at the input size already (prepare resized them)
        x = self._rescale_and_normalise(frames)
        if pad := -n % tp:  # repeat the last frame to fill the last temporal patch
            x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
        h, w = x.shape[-2:]
        gt, gh, gw = x.shape[0] // tp, h // p, w // p
        patches = x.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        patches = patches.reshape(gt * gh * gw, 3 * tp * p * p)
        per_step = gh * gw // (m * m)
        video_token = self._token("video_token", "<|video_pad|>")
        if self.family == "qwen2.5-vl":
            text = prompt.replace(video_token, video_token * (gt * per_step), 1)
            # transformers' VideoMetadata.sampled_fps, computed in the same order
            fps = len(video.indices) / video.total_frames * video.source_fps
            extra = {"second_per_grid_ts": torch.tensor([tp / fps])}
        else:
            start = self._token("vision_start_token", "<|vision_start|>")
            end = self._token("vision_end_token", "<|vision_end|>")
            idx = list(video.indices)
            if len(idx) % tp:
                idx += [idx[-1]] * (tp - len(idx) % tp)
            seconds = [i / (video.source_fps or 24) for i in idx]
            stamps = [(seconds[i] + seconds[i + tp - 1]) / 2 for i in range(0, len(seconds), tp)]
            body = "".join(f"<{stamps[t]:.1f} seconds>" + start + video_token * per_step + end for t in range(gt))
            wrapper = start + video_token + end
            if qwen3_collapses_outer_wrapper() and wrapper in prompt:
                text = prompt.replace(wrapper, body, 1)  # transformers >= 5.25: the template's outer pair goes
            else:
                text = prompt.replace(video_token, body, 1)  # the template's outer start/end pair stays
            extra = {}
        enc = self._tokenize(text)
        video_id = self.tokenizer.convert_tokens_to_ids(video_token)
        image_id = self.tokenizer.convert_tokens_to_ids(self._token("image_token", "<|image_pad|>"))
        types = torch.zeros_like(enc["input_ids"])
        types[enc["input_ids"] == image_id] = 1
        types[enc["input_ids"] == video_id] = 2
        return {
            **enc,
            "pixel_values_videos": patches,
            "video_grid_thw": torch.tensor([[gt, gh, gw]]),
            "mm_token_type_ids": types,
            **extra,
        }


def load_processor(path: str | Path, family: str, backend: str = "auto"):
    """The processor that turns frames and a question into model inputs.

    ``backend``:

    - ``"auto"`` (default): the model's own processor (``AutoProcessor.from_pretrained``) when
      torchvision is importable, else :class:`TorchVideoInputs`. The choice is made per call, from
      whether torchvision imports in this process at that moment.
    - ``"transformers"``: always the model's own processor; fails (SharpVError) without torchvision.
    - ``"torch"``: always :class:`TorchVideoInputs`, torchvision or not.

    Decision: ``"auto"`` stays the default, so GPU installs (which have torchvision) keep using the
    reference implementation and CPU installs get the stand-in; the two produce the same inputs
    (tests/test_processor_parity.py checks it). Code that must not depend on what happens to be
    importable, such as a comparison of the two, names the backend explicitly. The library never
    patches torchvision into importing: one that fails to import means ``"torch"`` (note that a
    torchvision built for another torch, such as PyPI's CUDA wheel next to a CPU torch, also breaks
    ``import transformers`` models, which import torchvision whenever it is installed).
    """
    if backend not in ("auto", "transformers", "torch"):
        raise SharpVError(f"backend must be 'auto', 'transformers' or 'torch', got {backend!r}")
    if backend == "transformers" or (backend == "auto" and has_torchvision()):
        if not has_torchvision():
            raise SharpVError("backend='transformers' needs torchvision (pip install torchvision); use backend='torch' without it")
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)
    return TorchVideoInputs.from_pretrained(path, family)


def read_video_for(processor: Any, path: str | Path, num_frames: int) -> SampledVideo:
    """:func:`read_video` for ``processor``'s model, streaming: with :class:`TorchVideoInputs`, every
    kept frame is resized to the model's input size right after it is decoded
    (:meth:`TorchVideoInputs.resize_frames`), so only ``num_frames`` small uint8 frames are held and
    the full-resolution video never is; ``build_inputs(processor, question, video)`` then gives
    exactly the inputs ``read_video`` + ``build_inputs`` give (same frames, bit-identical pixels).

    Decision: the model's own transformers processor (torchvision installed) gets the decoded frames
    as ``read_video`` returns them, not streamed: it resizes with torchvision and recomputes the
    target size from the frames it is given (for Qwen3-VL that is not idempotent on every size), so
    frames resized here could give it different inputs."""
    resize = processor.resize_frames if isinstance(processor, TorchVideoInputs) else None
    return read_video(path, num_frames, resize=resize)


def build_inputs(processor: Any, question: str, video: SampledVideo) -> dict[str, torch.Tensor]:
    """Chat-format ``question`` about ``video`` and return the model inputs (batch of one)."""
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    if isinstance(processor, TorchVideoInputs):
        return processor.prepare(prompt, video)
    if video.source_size is not None and tuple(video.source_size) != tuple(video.frames.shape[1:3]):
        raise SharpVError(
            "the frames were resized while decoding (read_video(..., resize=...)); the model's own processor resizes "
            "them itself: read the video with read_video_for(processor, ...) or without resize"
        )
    metadata = {
        "fps": video.source_fps,
        "frames_indices": list(video.indices),
        "total_num_frames": video.total_frames,
    }
    out = processor(
        text=[prompt], videos=[video.frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    return dict(out)
