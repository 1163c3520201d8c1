"""Turn sampled frames and a question into model inputs.

With torchvision installed (the usual GPU setup) this is the model's own processor:
``AutoProcessor.from_pretrained(dir)`` called with the sampled frames.

transformers' video processors need torchvision, which has no CPU build on PyPI. Where it is
missing, :class:`TorchVideoInputs` does the same steps in plain torch from the checkpoint's own
``video_preprocessor_config.json``, tokenizer and chat template: resize (bicubic, antialiased, as
torchvision does on tensors), rescale, normalise, then the family's layout (LLaVA-OneVision:
(1, T, 3, H, W) and ``T*f + 1`` placeholders; Qwen2.5-VL / Qwen3-VL: temporal x spatial patches,
``video_grid_thw``, ``mm_token_type_ids`` and, for Qwen3-VL, per-step timestamps in the prompt).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sharpv.errors import SharpVError
from sharpv.video.decode import SampledVideo


def has_torchvision() -> bool:
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:
        return False
    return True


def _qwen_frame_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int, frames: int) -> tuple[int, int]:
    """Qwen's resize rule: sides divisible by ``factor``, aspect kept, ``frames * h * w`` pixels
    within [min_pixels, max_pixels] (``frames`` is 1 for Qwen2.5-VL, the clip length for Qwen3-VL)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if frames * h * w > max_pixels:
        beta = math.sqrt(frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif frames * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (frames * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> float in [0, 255]; bicubic antialiased, rounded as for uint8 input."""
    x = video.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255)
    return x


@dataclass
class TorchVideoInputs:
    """Processor stand-in for machines without torchvision (see the module docstring)."""

    tokenizer: Any
    family: str
    settings: dict[str, Any]
    processor_settings: dict[str, Any]
    chat_template: str | None

    @classmethod
    def from_pretrained(cls, path: str | Path, family: str) -> "TorchVideoInputs":
        from transformers import AutoTokenizer

        path = Path(path)
        cfg_file = path / "video_preprocessor_config.json"
        if not cfg_file.exists():
            raise SharpVError(f"{path} has no video_preprocessor_config.json; is it a video LLM checkpoint?")
        proc_file = path / "processor_config.json"
        proc = json.loads(proc_file.read_text()) if proc_file.exists() else {}
        tokenizer = AutoTokenizer.from_pretrained(path)
        template_file = path / "chat_template.jinja"
        template = template_file.read_text() if template_file.exists() else tokenizer.chat_template
        return cls(tokenizer, family, json.loads(cfg_file.read_text()), proc, template)

    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, **_: Any) -> str:
        return self.tokenizer.apply_chat_template(
            conversation, chat_template=self.chat_template, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        x = x * s.get("rescale_factor", 1 / 255)
        mean = torch.tensor(s["image_mean"], dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(s["image_std"], dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def prepare(self, prompt: str, video: SampledVideo) -> dict[str, torch.Tensor]:
        frames = torch.from_numpy(np.ascontiguousarray(video.frames)).permute(0, 3, 1, 2)  # (T, 3, H, W)
        if self.family == "llava-onevision":
            return self._llava(prompt, frames)
        return self._qwen(prompt, frames, video)

    def _tokenize(self, text: str) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _llava(self, prompt: str, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        size = self.settings["size"]
        pixels = self._normalise(_resize(frames, (size["height"], size["width"])))
        side = math.ceil(math.isqrt(int(self.processor_settings["num_image_tokens"])) / 2)
        token = self.processor_settings.get("video_token", "<video>")
        text = prompt.replace(token, token * (frames.shape[0] * side * side + 1), 1)
        return {**self._tokenize(text), "pixel_values_videos": pixels.unsqueeze(0)}

    def _qwen(self, prompt: str, frames: torch.Tensor, video: SampledVideo) -> dict[str, torch.Tensor]:
        s = self.settings
        p, tp, m = s["patch_size"], s["temporal_patch_size"], s["merge_size"]
        n = frames.shape[0]
        if pad := -n % tp:
            frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
        budget_frames = 1 if self.family == "qwen2.5-vl" else frames.shape[0]
        h, w = _qwen_frame_size(
            frames.shape[2], frames.shape[3], p * m, s["size"]["shortest_edge"], s["size"]["longest_edge"], budget_frames
        )
        x = self._normalise(_resize(frames, (h, w)))
        gt, gh, gw = x.shape[0] // tp, h // p, w // p
        patches = x.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        patches = patches.reshape(gt * gh * gw, 3 * tp * p * p)
        per_step = gh * gw // (m * m)
        fps = video.sampled_fps
        if self.family == "qwen2.5-vl":
            text = prompt.replace("<|video_pad|>", "<|video_pad|>" * (gt * per_step), 1)
            extra = {"second_per_grid_ts": torch.tensor([tp / fps])}
        else:
            idx = list(video.indices) + [video.indices[-1]] * pad
            stamps = [(idx[i] + idx[i + tp - 1]) / 2 / video.source_fps for i in range(0, len(idx), tp)]
            body = "".join(f"<{t:.1f} seconds><|vision_start|>" + "<|video_pad|>" * per_step + "<|vision_end|>" for t in stamps)
            text = prompt.replace("<|vision_start|><|video_pad|><|vision_end|>", body, 1)
            extra = {}
        enc = self._tokenize(text)
        video_id = self.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        image_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
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


def load_processor(path: str | Path, family: str):
    """The model's own processor when torchvision is importable, else :class:`TorchVideoInputs`."""
    if has_torchvision():
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)
    return TorchVideoInputs.from_pretrained(path, family)


def build_inputs(processor: Any, question: str, video: SampledVideo) -> dict[str, torch.Tensor]:
    """Chat-format ``question`` about ``video`` and return the model inputs (batch of one)."""
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    if isinstance(processor, TorchVideoInputs):
        return processor.prepare(prompt, video)
    metadata = {
        "fps": video.source_fps,
        "frames_indices": list(video.indices),
        "total_num_frames": video.total_frames,
    }
    out = processor(
        text=[prompt], videos=[video.frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    return dict(out)
