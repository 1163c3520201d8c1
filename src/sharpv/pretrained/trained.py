"""The trained weights of a built model, small enough to ship in the package: the projector, the
``image_newline`` vector and, optionally, low-rank adapters (LoRA) of the language model's linear
layers, in one safetensors file (``trained.safetensors``).

``sharpv model train`` writes the file; ``sharpv model build`` loads it when the package ships one
(``sharpv/assets/NAME/trained.safetensors``) and merges it into the checkpoint it writes, so the
checkpoint is a plain LLaVA-OneVision model (a plain Llama language model for sharpv's hooks) that
``from_pretrained`` loads without peft. The merge is LoRA's own: ``W + (alpha / rank) * B @ A``, as
peft's ``merge_and_unload`` computes it (tested against peft).

Layout of the file: the projector's tensors under their module names
(``multi_modal_projector.linear_1.weight``, ...), ``image_newline``, and per adapted layer
``lora.<module path in the language model>.A`` (rank x in) and ``.B`` (out x rank); its metadata
holds the format, the rank, alpha and the adapted module names.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch

from sharpv.errors import SharpVError

FILE = "trained.safetensors"
FORMAT = "sharpv-trained-1"
PROJECTOR = "multi_modal_projector."
NEWLINE = "image_newline"


def shipped_trained(name: str) -> Path | None:
    """The trained weights the package ships for built model ``name``, or None when it ships none."""
    path = Path(str(resources.files("sharpv") / "assets" / name / FILE))
    return path if path.is_file() else None


def collect(model, lora: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None, rank: int = 0,
            alpha: float = 0.0, targets: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a model's trainable parts: its projector and ``image_newline``,
    plus ``lora`` ({module path in the language model: (A, B)}), all as float32."""
    tensors = {PROJECTOR + k: v.detach().float().contiguous().clone()
               for k, v in model.model.multi_modal_projector.state_dict().items()}
    tensors[NEWLINE] = model.model.image_newline.detach().float().contiguous().clone()
    for path, (a, b) in sorted((lora or {}).items()):
        tensors[f"lora.{path}.A"] = a.detach().float().contiguous().clone()
        tensors[f"lora.{path}.B"] = b.detach().float().contiguous().clone()
    meta = {"format": FORMAT, "lora_rank": str(rank if lora else 0), "lora_alpha": repr(float(alpha if lora else 0.0)),
            "lora_targets": ",".join(targets if lora else ())}
    return tensors, meta


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # a truncated or foreign file
        raise SharpVError(f"{path} is not a trained-weights file ({type(exc).__name__})") from None
    if meta.get("format") != FORMAT:
        raise SharpVError(f"{path} is not a sharpv trained-weights file (format {meta.get('format')!r}, expected {FORMAT})")
    return tensors, meta


def lora_pairs(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    paths = sorted({k[len("lora."):-2] for k in tensors if k.startswith("lora.")})
    out = {}
    for p in paths:
        if f"lora.{p}.A" not in tensors or f"lora.{p}.B" not in tensors:
            raise SharpVError(f"trained weights: the adapter of {p} lacks its A or B matrix")
        out[p] = (tensors[f"lora.{p}.A"], tensors[f"lora.{p}.B"])
    return out


@torch.no_grad()
def merge_lora(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
    """``weight += scaling * B @ A`` in the weight's dtype, as peft merges an adapter."""
    weight.add_((b.to(weight.dtype) @ a.to(weight.dtype)) * scaling)


@torch.no_grad()
def apply(model, path: Path) -> dict:
    """Load the trained weights in ``path`` into ``model`` (a LLaVA-OneVision model from ``sharpv
    model build``): projector and ``image_newline`` replaced, adapters merged into the language
    model's weights. Every tensor's shape is checked first: a mismatch changes nothing and raises
    :class:`SharpVError`. Returns what was loaded, for the build record."""
    tensors, meta = load(path)
    proj = model.model.multi_modal_projector.state_dict()
    lm = model.model.language_model
    wanted = {PROJECTOR + k: v.shape for k, v in proj.items()}
    wanted[NEWLINE] = model.model.image_newline.shape
    for key, shape in wanted.items():
        if key not in tensors:
            raise SharpVError(f"{path} lacks {key}")
        if tuple(tensors[key].shape) != tuple(shape):
            raise SharpVError(f"{path}: {key} has shape {tuple(tensors[key].shape)}, the model's is {tuple(shape)}")
    pairs = lora_pairs(tensors)
    rank, alpha = int(meta.get("lora_rank", "0")), float(meta.get("lora_alpha", "0"))
    modules = {}
    for p, (a, b) in pairs.items():
        try:
            module = lm.get_submodule(p)
        except AttributeError:
            raise SharpVError(f"{path}: the language model has no layer {p} to adapt") from None
        out_f, in_f = module.weight.shape
        if a.shape != (rank, in_f) or b.shape != (out_f, rank):
            raise SharpVError(f"{path}: the adapter of {p} has shapes {tuple(a.shape)} and {tuple(b.shape)}, "
                              f"expected ({rank}, {in_f}) and ({out_f}, {rank})")
        modules[p] = module
    unknown = [k for k in tensors if k not in wanted and not k.startswith("lora.")]
    if unknown:
        raise SharpVError(f"{path} holds tensors this model has no place for: {', '.join(unknown[:3])}")
    model.model.multi_modal_projector.load_state_dict({k: tensors[PROJECTOR + k].to(v.dtype) for k, v in proj.items()})
    model.model.image_newline.copy_(tensors[NEWLINE])
    for p, (a, b) in pairs.items():
        merge_lora(modules[p].weight, a, b, alpha / rank)
    return {
        "projector": True,
        "image_newline": True,
        "lora": {"rank": rank, "alpha": alpha, "targets": meta.get("lora_targets", "").split(","), "layers": len(pairs),
                 "parameters": int(sum(a.numel() + b.numel() for a, b in pairs.values())), "merged": True}
        if pairs else None,
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "sha256": sha256(path),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
