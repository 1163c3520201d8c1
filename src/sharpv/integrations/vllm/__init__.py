"""SharpV stage 1 inside vLLM, as a plugin (``pip install "sharpv[vllm]"``).

vLLM prunes video tokens of Qwen2.5-VL and Qwen3-VL itself (``video_pruning_rate``; methods
``evs`` and ``vidcom2``): the engine fixes how many tokens a video keeps before its vision tower
runs (``compute_retained_tokens_count``: ``max(f, int(T * f * (1 - rate)))``) and asks the model
which ones. SharpV's budget mode can hit any count exactly, so the plugin registers subclasses of
vLLM's model classes whose pruning step keeps the tokens SharpV's stage 1 selects (spatial +
temporal importance, frame shares from the same dissimilarities, the count vLLM fixed):

- ``SharpVQwen2_5_VLForConditionalGeneration`` (Qwen2.5-VL checkpoints),
- ``SharpVQwen3VLForConditionalGeneration`` (Qwen3-VL checkpoints),
- ``SharpVLlavaOnevisionForConditionalGeneration`` (LLaVA-OneVision checkpoints: vLLM has no
  pruning for it, so this class also brings the prompt processing that counts the kept video
  placeholders, with the same formula; positions are the shortened prompt's, 1-D).

A checkpoint runs them through ``hf_overrides={"architectures": [name]}`` with a
``video_pruning_rate``; :func:`llm_kwargs` builds both from a checkpoint directory and a rate and
refuses, with one line, what the plugin does not support. The method name stays vLLM's (a closed
list); the architecture decides that SharpV selects. Stage 2 (pruning inside the LLM) is not
supported: vLLM's paged KV cache has one length for every layer of a request.

vLLM finds the plugin through the ``vllm.general_plugins`` entry point (:func:`register`), in
every engine process. Support is decided by feature, not by version string
(:mod:`sharpv.integrations.vllm.features`): every vLLM interface the plugin uses is looked up in
the installed vLLM's source; where one is gone the plugin registers nothing and says which, in one
warning line. On a vLLM other than the one this project's CI runs end to end (0.32, ``TESTED``)
it registers and logs a plain warning saying so. Each pruned video gets one log line
(``vllm.sharpv`` logger, INFO, printed with vLLM's own log): kept / total video tokens.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sharpv.errors import SharpVError
from sharpv.integrations.vllm.features import TESTED, missing_pieces, untested_warning

__all__ = ["ARCHITECTURES", "TESTED", "architecture_for", "check_rate", "check_vllm", "llm_kwargs", "register"]

ARCHITECTURES = {
    "qwen2_5_vl": "SharpVQwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "SharpVQwen3VLForConditionalGeneration",
    "llava_onevision": "SharpVLlavaOnevisionForConditionalGeneration",
}

#: under vLLM's ``vllm`` logger, so that vLLM's logging configuration (handler, format,
#: VLLM_LOGGING_LEVEL) prints these lines with its own
logger = logging.getLogger("vllm.sharpv")


def check_vllm(root: Path | None = None) -> None:
    """Raise :class:`SharpVError` (one line naming each missing piece) unless the vLLM at ``root``
    (default: the installed one) has every interface the plugin uses."""
    missing = missing_pieces(root)
    if missing:
        raise SharpVError("sharpv's vLLM plugin cannot run on this vLLM: it lacks " + "; ".join(missing))


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def register() -> None:
    """The ``vllm.general_plugins`` entry point: register the SharpV model classes and apply the
    workarounds for vLLM's own defects (:mod:`sharpv.integrations.vllm.workarounds`). Runs in every
    vLLM process, whether or not a SharpV model is served: a vLLM that lacks an interface the plugin
    uses gets one warning line naming it and nothing registered; an untested vLLM that has them all
    gets one plain warning and the registration."""
    import vllm

    version = getattr(vllm, "__version__", "unknown")
    cpu = _on_cpu()
    missing = missing_pieces(cpu=cpu)
    if missing:
        logger.warning("sharpv's vLLM plugin registers nothing: vLLM %s lacks %s", version, "; ".join(missing))
        return
    warning = untested_warning(version)
    if warning:
        logger.warning("%s", warning)
    from vllm import ModelRegistry

    from sharpv.integrations.vllm.workarounds import apply_workarounds

    supported = set(ModelRegistry.get_supported_archs())
    for name in ARCHITECTURES.values():
        if name not in supported:
            ModelRegistry.register_model(name, f"sharpv.integrations.vllm.models:{name}")
    apply_workarounds(cpu)


def llm_kwargs(model: str | Path, video_pruning_rate: float, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` that serve checkpoint ``model`` (a local checkpoint
    folder with its config.json) with SharpV stage 1 at ``video_pruning_rate`` (the share of video
    tokens pruned, in [0, 1)), plus ``extra``. Refuses, with one line (:class:`SharpVError`), a
    rate outside [0, 1), a folder without config.json, a checkpoint that is not Qwen2.5-VL,
    Qwen3-VL or LLaVA-OneVision, and a vLLM that lacks an interface the plugin uses::

        llm = LLM(**llm_kwargs("/models/Qwen2.5-VL-7B-Instruct", 0.7, max_model_len=32768))
    """
    check_rate(video_pruning_rate)
    architecture = architecture_for(model)
    check_vllm()
    overrides = dict(extra.pop("hf_overrides", None) or {})
    overrides["architectures"] = [architecture]
    return {"model": str(model), "hf_overrides": overrides, "video_pruning_rate": float(video_pruning_rate), **extra}


def check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
        raise SharpVError(f"video_pruning_rate must be a number in [0, 1) (the share of video tokens pruned), got {rate!r}")
    return float(rate)


def architecture_for(model: str | Path) -> str:
    """The SharpV architecture name for checkpoint ``model`` (a local directory with config.json),
    or :class:`SharpVError` naming what the plugin supports."""
    config = Path(model) / "config.json"
    if not config.is_file():
        raise SharpVError(f"{model} has no config.json; pass a local checkpoint folder (Qwen2.5-VL, Qwen3-VL or "
                          "LLaVA-OneVision), not a hub id")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type not in ARCHITECTURES:
        raise SharpVError(f"sharpv's vLLM plugin prunes Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision checkpoints; {model} is "
                          f"{model_type!r}")
    return ARCHITECTURES[model_type]
