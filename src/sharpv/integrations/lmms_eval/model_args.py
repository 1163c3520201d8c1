"""Reading lmms-eval's ``--model_args`` for the ``sharpv`` model, before any weight is loaded.

Everything here is checked up front, so that a bad value stops the run at once with one line that
names it: the method (any registered one), every setting of it (``keep_ratio``, ``positions`` and
the method's own, e.g. SharpV's ``kv``, ``kv_threshold``, ``ratio_scale``), the frame count, dtype,
device, and the checkpoint's family (read from its ``config.json`` alone). No lmms-eval import:
this is plain sharpv, tested in the main environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sharpv.errors import SharpVError

#: model_args that are not method settings; ``max_num_frames`` is the Qwen models' spelling of
#: ``max_frames_num`` (LLaVA-OneVision's) in lmms-eval, both accepted
MODEL_KEYS = ("pretrained", "method", "max_frames_num", "max_num_frames", "device", "dtype",
              "attn_implementation", "chunk_frames", "stats_path", "batch_size", "max_batch_size")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ModelArgs:
    """The checked ``--model_args``: ``method`` is a configured :class:`~sharpv.methods.PruningMethod`."""

    pretrained: str
    model_type: str
    method: Any
    frames: int | None
    device: str
    dtype: str
    attn_implementation: str
    chunk_frames: int
    stats_path: Path | None

    def describe(self) -> str:
        """``method=sharpv keep_ratio=0.2 ...``: the method and every setting that differs from its default."""
        config = self.method.config
        default = type(config)()
        changed = [f"{f.name}={getattr(config, f.name)}" for f in fields(config)
                   if getattr(config, f.name) != getattr(default, f.name)]
        return " ".join([f"method={self.method.name}", *changed])


def _where(key: str, value: Any) -> str:
    return f"--model_args {key}={value}"


def _int(args: dict, key: str, low: int, default: int | None) -> int | None:
    value = args.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SharpVError(f"{_where(key, value)}: must be an integer >= {low}")
    return value


def checkpoint_model_type(pretrained: str) -> str:
    """``model_type`` from the checkpoint's ``config.json``: a local folder, or a Hugging Face Hub
    repo id (only ``config.json`` is fetched here); an error (one line) when neither works."""
    import json

    where = _where("pretrained", pretrained)
    path = Path(pretrained).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SharpVError(f"{where}: is a file; pass the checkpoint's folder (the one with config.json)")
        config = path / "config.json"
        if not config.is_file():
            raise SharpVError(f"{where}: the folder has no config.json; pass a transformers checkpoint folder")
    elif _REPO_ID.match(pretrained):
        from huggingface_hub import hf_hub_download

        try:
            config = Path(hf_hub_download(pretrained, "config.json"))
        except Exception as exc:  # offline, unknown repo, gated repo: all one line
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise SharpVError(f"{where}: not a local folder, and its config.json could not be fetched from the "
                              f"Hugging Face Hub ({reason})") from None
    else:
        raise SharpVError(f"{where}: no such folder; pass a local checkpoint folder or a Hub repo id (org/name)")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise SharpVError(f"{where}: its config.json is not a JSON object") from None
    if not isinstance(model_type, str):
        raise SharpVError(f"{where}: its config.json names no model_type")
    return model_type


def parse_model_args(args: dict[str, Any], *, default_device: str | None = None) -> ModelArgs:
    """Check lmms-eval's ``--model_args`` (as lmms-eval parsed them: ``true``/``false``, numbers
    and text) and build the method; raise :class:`SharpVError` naming the first bad value.

    Keys other than :data:`MODEL_KEYS` are settings of the method. ``keep_ratio=adaptive`` (or
    ``none``) asks for a method's adaptive mode where it has one (SharpV's default)."""
    from sharpv.adapters import adapter_class_for
    from sharpv.answer import check_device, check_dtype
    from sharpv.cli_values import parse_value
    from sharpv.methods import METHODS

    name = args.get("method", "sharpv")
    if name not in METHODS:
        raise SharpVError(f"{_where('method', name)}: unknown method; registered methods: {', '.join(METHODS)}")
    cls = METHODS[name]
    known = [f.name for f in fields(cls.config_class)]
    settings: dict[str, Any] = {}
    for key, value in args.items():
        if key in MODEL_KEYS:
            continue
        if key not in known:
            raise SharpVError(f"{_where(key, value)}: {name} has no setting {key!r}; its settings: {', '.join(known) or 'none'}"
                              f" (model settings: {', '.join(MODEL_KEYS)})")
        if isinstance(value, str):
            value = parse_value(value)
            if key == "keep_ratio" and value == "adaptive":
                value = None
        settings[key] = value
    if name == "dense" and "keep_ratio" in settings:
        raise SharpVError(f"{_where('keep_ratio', settings['keep_ratio'])}: dense keeps every token; drop keep_ratio")
    try:
        method = cls(**settings)
    except (TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        bad = next((k for k in settings if k in first), None)
        where = _where(bad, settings[bad]) if bad else f"--model_args method={name}"
        raise SharpVError(f"{where}: {first}") from None

    if "max_frames_num" in args and "max_num_frames" in args:
        raise SharpVError("--model_args max_frames_num and max_num_frames are the same setting; give one")
    frames_key = "max_num_frames" if "max_num_frames" in args else "max_frames_num"
    frames = _int(args, frames_key, 1, None)
    chunk_frames = _int(args, "chunk_frames", 1, 16)
    dtype = str(args.get("dtype", "auto"))
    device = args.get("device") or default_device or ("cuda" if _cuda() else "cpu")
    attn = str(args.get("attn_implementation", "sdpa"))
    check_dtype(dtype, flag="--model_args dtype")
    check_device(str(device), flag="--model_args device")
    if attn not in ATTN_IMPLEMENTATIONS:
        raise SharpVError(f"{_where('attn_implementation', attn)}: must be one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    stats_path = args.get("stats_path")
    if stats_path is not None:
        from sharpv.cli_values import check_output_file

        stats_path = Path(str(stats_path)).expanduser()
        check_output_file(stats_path, "--model_args stats_path", (".json",))

    pretrained = args.get("pretrained")
    if pretrained is None:
        from sharpv.synthetic.model import shipped_model_path

        pretrained = str(shipped_model_path())
    pretrained = str(pretrained)
    model_type = checkpoint_model_type(pretrained)
    try:
        adapter_class_for(model_type)
    except SharpVError as exc:
        raise SharpVError(f"{_where('pretrained', pretrained)}: {exc}") from None
    return ModelArgs(pretrained, model_type, method, frames, str(device), dtype, attn, chunk_frames, stats_path)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
