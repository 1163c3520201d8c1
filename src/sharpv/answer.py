"""Answer a question about a video with a video LLM and any registered method: the CLI's main job."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sharpv.adapters import adapter_class_for
from sharpv.errors import SharpVError
from sharpv.methods import PruningMethod, SharpV
from sharpv.video import build_inputs, load_processor, read_video

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: device types a model can be moved to here (bench narrows this to cpu and cuda)
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_dtype(dtype: str, flag: str = "--dtype", allow_auto: bool = True) -> str:
    """``dtype`` if it names one of :data:`DTYPES`; a :class:`SharpVError` naming ``flag`` if not."""
    names = [d for d in DTYPES if allow_auto or d != "auto"]
    if dtype not in names:
        raise SharpVError(f"{flag} must be one of {', '.join(names)}, got {dtype!r}")
    return dtype


def check_device(device: str, flag: str = "--device", types: tuple[str, ...] = DEVICE_TYPES) -> str:
    """``device`` if it is a torch device string of one of ``types`` that exists on this machine
    (``cuda:N`` with N below the CUDA device count; ``mps`` where MPS is built and available); a
    one-line :class:`SharpVError` naming ``flag`` otherwise. Cheap: nothing is allocated."""
    forms = [form for t in types for form in ((t, f"{t}:N") if t == "cuda" else (t,))]
    expected = f"{flag} must be {', '.join(forms[:-1])} or {forms[-1]}, got {device!r}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SharpVError(expected) from None
    if parsed.type not in types:
        raise SharpVError(expected)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
            raise SharpVError(f"{flag} {device}: no CUDA device is available here{build}; use {flag} cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise SharpVError(f"{flag} {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SharpVError(f"{flag} {device}: MPS is not available here; use {flag} cpu")
    return device


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Answer:
    answer: str
    method: str
    model_type: str
    frames: int
    visual_tokens_in: int
    visual_tokens_kept: int
    kept_per_frame: list[int]
    prefill_seconds: float
    pruning_seconds: float
    generate_seconds: float
    kv_mode: str | None = None
    kv_withdraw_layer: int | None = None
    layer_similarity: list[float] = field(default_factory=list)
    kv_cache_bytes: int = 0
    kv_cache_bytes_dense: int = 0
    kv_cache_bytes_per_layer: list[int] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    config: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PrefillTimer:
    """Times the first forward call of ``generate()`` (the prefill) with forward hooks."""

    def __init__(self, model: torch.nn.Module):
        self.seconds: float | None = None
        self._start: float | None = None
        self._handles = [
            model.register_forward_pre_hook(self._pre),
            model.register_forward_hook(self._post),
        ]
        self._device = next(model.parameters()).device

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _pre(self, *_: Any) -> None:
        if self.seconds is None and self._start is None:
            self._sync()
            self._start = time.perf_counter()

    def _post(self, *_: Any) -> None:
        if self.seconds is None and self._start is not None:
            self._sync()
            self.seconds = time.perf_counter() - self._start

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def load_model(model_dir: str | Path, dtype: str = "auto", device: str = "cpu", attn_implementation: str = "sdpa"):
    """Load a supported video LLM and its processor from a local directory via ``from_pretrained``."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    path = Path(model_dir)
    if not path.exists():
        raise SharpVError(f"model directory {path} does not exist; pass a local checkpoint (see `sharpv tiny-model`)")
    if not path.is_dir():
        raise SharpVError(f"model directory {path} is a file; pass the checkpoint's folder (with config.json)")
    check_dtype(dtype)
    check_device(device)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise SharpVError(f"{path} is not a transformers model directory ({type(exc).__name__}); pass a checkpoint folder with config.json") from None
    family = adapter_class_for(config.model_type).family
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
    if DTYPES[dtype] is not None:
        kwargs["dtype"] = DTYPES[dtype]
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise SharpVError(f"{path}: the model's weights do not load ({_first_line(exc)})") from None
    try:
        processor = load_processor(path, family)
    except SharpVError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise SharpVError(f"{path}: the processor files do not load ({_first_line(exc)})") from None
    return model.to(device).eval(), processor


@dataclass
class Generation:
    """What one ``generate()`` call under a method produced."""

    text: str
    new_tokens: list[int]
    stats: Any  # PruningStats of the prefill
    prefill_seconds: float
    generate_seconds: float


def inputs_on(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Move processor outputs to the model's device (pixels also to its dtype)."""
    device = next(model.parameters()).device
    return {
        k: (v.to(device, model.dtype) if v.is_floating_point() and k.startswith("pixel") else v.to(device))
        for k, v in inputs.items()
    }


def generate_answer(model: torch.nn.Module, processor: Any, inputs: dict[str, torch.Tensor], method: PruningMethod,
                    *, max_new_tokens: int = 32, do_sample: bool = False) -> Generation:
    """Apply ``method``, run ``generate()`` on processor ``inputs`` (a batch of one), remove the method."""
    inputs = inputs_on(model, inputs)
    timer = PrefillTimer(model)
    handle = method(model)
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, return_dict_in_generate=True
            )
        generate_seconds = time.perf_counter() - start
    finally:
        timer.remove()
        handle.remove()
    new = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    tokenizer = getattr(processor, "tokenizer", processor)
    text = tokenizer.decode(new, skip_special_tokens=True).strip()
    if handle.stats is None:
        raise SharpVError("the prompt reached the model without video tokens; check the processor and the video")
    return Generation(text, new, handle.stats, timer.seconds or 0.0, generate_seconds)


def default_frames(model: torch.nn.Module, processor: Any) -> int:
    """Frames to sample when the user gives none: the checkpoint's own ``num_frames`` if its video
    processor config declares one (the shipped model does), else the family's usual count."""
    settings = getattr(processor, "settings", None)
    if isinstance(settings, dict):
        n = settings.get("num_frames")
    else:
        n = getattr(getattr(processor, "video_processor", None), "num_frames", None)
    return int(n) if n else adapter_class_for(model.config.model_type).default_frames


def answer_question(
    model: torch.nn.Module,
    processor: Any,
    video_path: str | Path,
    question: str,
    *,
    method: PruningMethod | None = None,
    frames: int | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
) -> Answer:
    method = method if method is not None else SharpV()
    if not isinstance(question, str) or not question.strip():
        raise SharpVError("the question is empty; ask something about the video")
    if max_new_tokens < 1:
        raise SharpVError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    video = read_video(video_path, frames if frames is not None else default_frames(model, processor))
    gen = generate_answer(model, processor, build_inputs(processor, question, video), method,
                          max_new_tokens=max_new_tokens, do_sample=do_sample)
    text, new, s, generate_seconds = gen.text, gen.new_tokens, gen.stats, gen.generate_seconds
    kv = dict(
        kv_mode=s.kv_mode, kv_withdraw_layer=s.kv_withdraw_layer, layer_similarity=s.layer_similarity,
        kv_cache_bytes=s.kv_cache_bytes, kv_cache_bytes_dense=s.kv_cache_bytes_dense,
        kv_cache_bytes_per_layer=s.kv_cache_bytes_per_layer,
    )
    return Answer(
        answer=text,
        method=method.name,
        model_type=model.config.model_type,
        frames=s.frames,
        visual_tokens_in=s.visual_tokens_in,
        visual_tokens_kept=s.visual_tokens_kept,
        kept_per_frame=s.kept_per_frame,
        prefill_seconds=gen.prefill_seconds,
        pruning_seconds=s.pruning_seconds + s.extra_seconds,
        generate_seconds=generate_seconds,
        new_tokens=new,
        config=method.config.to_dict(),
        **kv,
    )
