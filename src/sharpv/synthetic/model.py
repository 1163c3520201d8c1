"""The model sharpv ships: a small LLaVA-OneVision (SigLIP + Qwen2) trained on the synthetic video QA.

Its architecture and vocabulary live here; its weights are written by ``sharpv.synthetic.train`` and
shipped under ``sharpv/assets/synthetic-qa`` (loaded with ``from_pretrained`` like any checkpoint). A
second checkpoint, trained the same way but with uniform visual-token dropout only, is shipped under
``sharpv/assets/synthetic-qa-uniform``; :data:`SHIPPED_MODELS` names both.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sharpv.errors import SharpVError
from sharpv.synthetic.questions import COUNTS, QUESTION_TYPES
from sharpv.synthetic.scene import COLOURS, DIRECTIONS, PHASES, SHAPES, ZONES

#: 64 x 64 frames, 8 px patches, 2 x 2 pooling: 16 tokens per frame
FRAMES = 16
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
#: the held-out evaluation set `sharpv eval` uses by default (training never draws from this seed)
HELDOUT_SEED = 1234
HELDOUT_SIZE = 1200

ASSET = "synthetic-qa"
#: the shipped checkpoints by name -> their folder under ``sharpv/assets``: the same architecture,
#: data and recipe, differing in the visual-token dropout they were trained with (all three
#: patterns, the default model; the uniform pattern only), so a fidelity claim can be checked
#: against how the evaluation model was trained
SHIPPED_MODELS = {"mixed-dropout": ASSET, "uniform-dropout": "synthetic-qa-uniform"}
DEFAULT_MODEL = "mixed-dropout"


def vocabulary() -> list[str]:
    """Every word of the question templates and answers, then a few chat words, in a fixed order."""
    words: list[str] = []
    templates = " ".join(t for t, _ in QUESTION_TYPES.values()).replace("{shape}", " ".join(SHAPES))
    for w in [*templates.split(), *COLOURS, *ZONES, *DIRECTIONS, *PHASES, *COUNTS,
              "color", "colour", "object", "objects", "video", "frame", "yes", "no", "answer"]:
        if w not in words and w.isalpha():
            words.append(w)
    return words


def build_model(seed: int = 0):
    """A random-weight model of the shipped architecture and its processor parts."""
    from sharpv.tiny import build_llava_onevision

    model, parts = build_llava_onevision(seed, words=vocabulary(), vision=VISION, text=TEXT)
    parts.video["num_frames"] = FRAMES  # `sharpv answer` samples this many frames by default
    return model, parts


def shipped_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Directory of a shipped checkpoint (inside the installed package): ``mixed-dropout`` (the
    default, ``assets/synthetic-qa``) or ``uniform-dropout`` (``assets/synthetic-qa-uniform``)."""
    if name not in SHIPPED_MODELS:
        raise SharpVError(f"no shipped model named {name!r}; the shipped models are {', '.join(SHIPPED_MODELS)}")
    path = _asset_path(SHIPPED_MODELS[name])
    if not (path / "model.safetensors").exists():
        which = "the shipped model" if name == DEFAULT_MODEL else f"the shipped model {name}"
        raise SharpVError(
            f"{which} is missing from {path}; reinstall sharpv or pass --model DIR "
            "(train one with `python -m sharpv.synthetic.train --out DIR`)"
        )
    return path


def _asset_path(folder: str) -> Path:
    return Path(str(resources.files("sharpv") / "assets" / folder))


def shipped_model_name(path: Path | str) -> str | None:
    """The shipped name (``mixed-dropout``, ``uniform-dropout``) of a checkpoint folder, or None
    when ``path`` is not one of the shipped folders (for labelling results without absolute paths)."""
    resolved = Path(path).resolve()
    for name, folder in SHIPPED_MODELS.items():
        if resolved == _asset_path(folder).resolve():
            return name
    return None


def describe_model(path: Path | str) -> str:
    """How results name a checkpoint: ``shipped NAME model (folder)`` for a shipped one (no
    machine-specific path), else the folder as given."""
    name = shipped_model_name(path)
    return f"shipped {name} model ({Path(path).name})" if name else str(path)
