"""Which of the vLLM interfaces the plugin uses an installed vLLM has: checked by feature, not by
version string, and without importing vLLM's model modules.

The plugin subclasses three of vLLM's model classes, overrides their pruning hooks, calls vLLM's
EVS count and M-RoPE helpers and wraps one method of the CPU model runner (:data:`PIECES`). Each
piece is looked up in the source file of the installed vLLM that defines it, read with :mod:`ast`
(the class, the method, its parameter names): vLLM warns against importing model modules where
plugins load (it would initialise CUDA before the engine forks its workers), and
:func:`~sharpv.integrations.vllm.register` runs in every vLLM process, whether or not a SharpV
model is served. A piece whose file, class, method or parameters are not where the plugin needs
them is *missing*; :func:`missing_pieces` names each in one line.

The pieces were read in vLLM 0.32.0, 0.33.0 and 0.34.0 (docs/integrations.md lists what changed).
"""

from __future__ import annotations

import ast
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

#: the vLLM releases whose end-to-end suite runs in this project's CI (major, minor)
TESTED = ((0, 32),)


@dataclass(frozen=True)
class Piece:
    """One interface of vLLM the plugin relies on.

    ``path``: the defining file, relative to the ``vllm`` package folder. ``name``: a function, a
    class, or ``Class.member`` (a method, or a field / class attribute when ``kind`` is
    ``"field"``). ``params``: for a method or function, the parameter names the plugin needs;
    ``exact``: the plugin overrides the method, so vLLM must call it with exactly these
    parameters (without ``self``), in this order; otherwise they only need to be there (the plugin
    passes them by name, or the first ones by position)."""

    path: str
    name: str
    purpose: str
    params: tuple[str, ...] = ()
    exact: bool = False
    kind: str = "def"  # "def" (function or method), "class", "field"

    def label(self) -> str:
        where = "vllm/" + self.path
        if self.kind == "def" and (self.params or self.exact):
            return f"{where}: {self.name}({', '.join(self.params)})"
        return f"{where}: {self.name}"


QWEN25 = "model_executor/models/qwen2_5_vl.py"
QWEN3 = "model_executor/models/qwen3_vl.py"
LLAVA_OV = "model_executor/models/llava_onevision.py"
EVS = "multimodal/video_prune/evs.py"

#: every interface the model classes and :func:`~sharpv.integrations.vllm.register` use
PIECES: tuple[Piece, ...] = (
    Piece("model_executor/models/registry.py", "_ModelRegistry.register_model", "registering the SharpV architectures",
          ("model_arch", "model_cls")),
    Piece("model_executor/models/registry.py", "_ModelRegistry.get_supported_archs", "registering the SharpV architectures"),
    Piece("config/multimodal.py", "MultiModalConfig.video_pruning_rate", "the pruning rate", kind="field"),
    Piece("config/multimodal.py", "MultiModalConfig.video_pruning_method", "refusing another pruning method", kind="field"),
    Piece(EVS, "compute_retained_tokens_count", "the count of kept video tokens",
          ("tokens_per_frame", "num_frames", "q")),
    Piece(EVS, "compute_mrope_for_media", "Qwen2.5-VL's M-RoPE positions of the kept tokens",
          ("video_size_thw", "spatial_merge_size", "tokens_per_second", "video_second_per_grid")),
    Piece(QWEN25, "Qwen2_5_VLForConditionalGeneration", "the class SharpV's Qwen2.5-VL subclasses", kind="class"),
    Piece(QWEN25, "Qwen2_5_VLForConditionalGeneration._postprocess_video_embeds_evs", "Qwen2.5-VL's pruning hook",
          ("video_embeds_split", "video_input"), exact=True),
    Piece(QWEN25, "Qwen2_5_VLForConditionalGeneration.recompute_mrope_positions",
          "Qwen2.5-VL's M-RoPE recomputation of a pruned video (reads the positions the hook appends)"),
    Piece(QWEN3, "Qwen3VLForConditionalGeneration", "the class SharpV's Qwen3-VL subclasses", kind="class"),
    Piece(QWEN3, "Qwen3VLForConditionalGeneration._postprocess_video_embeds_evs", "Qwen3-VL's pruning hook",
          ("video_embeds_split", "video_input"), exact=True),
    Piece(QWEN3, "Qwen3VLForConditionalGeneration._create_final_video_embeddings",
          "Qwen3-VL's assembly of kept frames and timestamps",
          ("video_embeddings", "num_tokens_per_frame", "timestamps", "video_grid_thw", "retention_mask")),
    Piece(QWEN3, "Qwen3VLForConditionalGeneration.recompute_mrope_positions",
          "Qwen3-VL's M-RoPE recomputation of a pruned video",
          ("input_ids", "multimodal_embeddings", "mrope_positions", "num_computed_tokens"), exact=True),
    Piece(LLAVA_OV, "LlavaOnevisionForConditionalGeneration._process_video_pixels", "LLaVA-OneVision's video encoding",
          ("inputs",), exact=True),
    Piece(LLAVA_OV, "LlavaOnevisionForConditionalGeneration.hf_to_vllm_mapper", "LLaVA-OneVision's weight names",
          kind="field"),
    Piece(LLAVA_OV, "LlavaOnevisionProcessingInfo.get_num_video_tokens", "LLaVA-OneVision's video token count",
          ("image_width", "image_height", "num_frames"), exact=True),
    Piece(LLAVA_OV, "LlavaOnevisionProcessingInfo._get_num_frame_tokens", "LLaVA-OneVision's tokens per frame",
          ("image_width", "image_height")),
    Piece(LLAVA_OV, "LlavaOnevisionMultiModalProcessor", "LLaVA-OneVision's prompt processing", kind="class"),
    Piece(LLAVA_OV, "LlavaOnevisionDummyInputsBuilder", "LLaVA-OneVision's prompt processing", kind="class"),
    Piece("multimodal/registry.py", "MultiModalRegistry.register_processor", "LLaVA-OneVision's counting processor",
          ("processor", "info", "dummy_inputs")),
    Piece("model_executor/models/utils.py", "WeightsMapper.orig_to_new_regex", "loading transformers 5.x LLaVA-OneVision "
          "checkpoints", kind="field"),
)

#: vLLM 0.32/0.33's own CPU runner (vllm.v1.worker.cpu_model_runner), whose load_model never sets
#: the runner's pruning flag (the workaround wraps it)
LEGACY_CPU_RUNNER = Piece("v1/worker/cpu_model_runner.py", "CPUModelRunner.load_model",
                          "the CPU runner's pruning flag (workaround)")
#: the workaround's helper
PRUNING_INTERFACE = Piece("model_executor/models/interfaces.py", "supports_multimodal_pruning",
                          "the CPU runner's pruning flag (workaround)")
#: vLLM 0.34's CPU runner (vllm.v1.worker.cpu): it builds its M-RoPE recomputation for pruned
#: videos itself whenever pruning is on, so no workaround is needed there
CPU_PRUNER = Piece("v1/worker/cpu/mm_pruning.py", "maybe_create_mm_pruner", "the CPU runner's M-RoPE recomputation")


def vllm_root() -> Path:
    """The installed ``vllm`` package's folder (importing only ``vllm`` itself)."""
    module = sys.modules.get("vllm")
    if module is None:
        import vllm as module  # noqa: PLC0415
    return Path(list(module.__path__)[0])


@functools.lru_cache(maxsize=64)
def _tree(path: str, mtime: float) -> ast.Module | None:
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def _module(root: Path, relative: str) -> ast.Module | None:
    path = root / relative
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return _tree(str(path), mtime)


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def _member(classes: dict[str, ast.ClassDef], cls: str, member: str, seen: set[str] | None = None):
    """The definition of ``member`` in class ``cls`` or a base class of the same file."""
    seen = seen or set()
    node = classes.get(cls)
    if node is None or cls in seen:
        return None
    seen.add(cls)
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == member:
            return item
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.target.id == member:
            return item
        if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == member for t in item.targets):
            return item
    for base in _base_names(node):
        found = _member(classes, base, member, seen)
        if found is not None:
            return found
    return None


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return names[1:] if method and names else names


def _has_varargs(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return node.args.vararg is not None or node.args.kwarg is not None


def find(piece: Piece, root: Path) -> str | None:
    """None when ``piece`` is where the plugin needs it in the vLLM at ``root``; otherwise what is
    missing, in a few words."""
    tree = _module(root, piece.path)
    if tree is None:
        return "no such file"
    classes = _classes(tree)
    if piece.kind == "class":
        return None if piece.name in classes else "no such class"
    if "." in piece.name:
        cls, member = piece.name.split(".", 1)
        if cls not in classes:
            return f"no class {cls}"
        node = _member(classes, cls, member)
        if node is None:
            return f"no {member} in {cls}"
        method = True
    else:
        node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == piece.name), None)
        if node is None:
            return "no such function"
        method = False
    if piece.kind == "field":
        return None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return "not a function"
    found = _params(node, method)
    if piece.exact:
        if found != list(piece.params) or _has_varargs(node):
            return f"its parameters are now ({', '.join(found)})"
        return None
    absent = [p for p in piece.params if p not in found]
    if absent and not node.args.kwarg:
        return f"no parameter {', '.join(absent)}"
    return None


def missing_pieces(root: Path | None = None, *, cpu: bool = False) -> list[str]:
    """One line per interface the plugin needs that the vLLM at ``root`` (default: the installed
    one) lacks, each naming the file, the piece, what it is for and what is wrong; empty when the
    plugin can register. ``cpu``: also the CPU runner's pieces (see :func:`cpu_runner_workaround`)."""
    root = vllm_root() if root is None else Path(root)
    lines = []
    for piece in PIECES:
        problem = find(piece, root)
        if problem is not None:
            lines.append(f"{piece.label()} ({piece.purpose}): {problem}")
    if cpu:
        try:
            cpu_runner_workaround(root)
        except LookupError as exc:
            lines.append(str(exc))
    return lines


def cpu_runner_workaround(root: Path | None = None) -> bool:
    """On a CPU machine: whether the plugin must wrap ``CPUModelRunner.load_model`` so that the
    runner sets its pruning flag (:mod:`~sharpv.integrations.vllm.workarounds`). True for vLLM's own
    CPU runner of 0.32/0.33 when its ``load_model`` never mentions ``is_multimodal_pruning_enabled``;
    False when it does (vLLM fixed it) or when vLLM's newer CPU runner (0.34: ``vllm.v1.worker.cpu``)
    builds its recomputation of pruned videos itself. LookupError (one line) when neither runner is
    found."""
    root = vllm_root() if root is None else Path(root)
    if find(LEGACY_CPU_RUNNER, root) is None:
        node = _member(_classes(_module(root, LEGACY_CPU_RUNNER.path)), "CPUModelRunner", "load_model")
        if any(isinstance(n, ast.Attribute) and n.attr == "is_multimodal_pruning_enabled" for n in ast.walk(node)):
            return False  # vLLM sets the flag itself
        problem = find(PRUNING_INTERFACE, root)
        if problem is not None:
            raise LookupError(f"{PRUNING_INTERFACE.label()} ({PRUNING_INTERFACE.purpose}): {problem}")
        return True
    if find(CPU_PRUNER, root) is None:
        return False
    raise LookupError(f"{LEGACY_CPU_RUNNER.label()} or {CPU_PRUNER.label()} (the CPU runner's M-RoPE recomputation of "
                      "pruned videos): neither is there")


def version_tuple(text: str) -> tuple[int, int]:
    parts = text.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (-1, -1)


def untested_warning(version: str) -> str | None:
    """The plain warning for a vLLM whose interfaces the plugin meets but that this project's CI does
    not run end to end; None for a tested release."""
    if version_tuple(version) in TESTED:
        return None
    tested = ", ".join(f"{a}.{b}" for a, b in TESTED)
    return (f"sharpv's vLLM plugin: vLLM {version} has every interface the plugin uses (checked by feature), but only "
            f"vLLM {tested} runs end to end in this project's CI; registering the SharpV architectures anyway")
