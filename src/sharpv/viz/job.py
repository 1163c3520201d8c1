"""Running methods on a video to see what they keep: the model side of ``sharpv viz`` and
``sharpv answer --viz``.

The video is read and encoded once (:func:`~sharpv.adapters.precompute_video_features`); each
method then prefills the prompt once on those features with the real runtime
(:func:`sharpv.answer.generate_answer`, ``max_new_tokens=1``), and its
:class:`~sharpv.stats.PruningStats` give the stage-1 keep mask, the tokens kept per frame and stage
2's layer similarities.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sharpv.errors import SharpVError
from sharpv.viz.token_maps import square_grid

#: the prompt of ``sharpv viz``: the methods never read the question, so any question gives the same maps
DEFAULT_QUESTION = "Describe the video."
#: files ``write_viz`` writes into its folder (``layers.png`` only when the stats carry visual tokens
#: per layer, ``stage2.png`` only when a method has a stage-2 curve)
FILES = ("index.html", "viz.json", "token_maps.png", "keep_ratio.png", "layers.png", "stage2.png")


@dataclass
class VizRow:
    """What one method did to the video (one row of the maps)."""

    label: str  # the method as given (NAME or NAME:key=value)
    name: str  # registry name
    keep_ratio: float | None  # the budget it ran at (None: adaptive, or no budget)
    mode: str
    keep: np.ndarray  # (T, f) bool stage-1 keep mask (all True when the stats did not carry one)
    mask_known: bool
    kept_per_frame: list[int]
    tokens_per_frame: int
    kept_share: float
    equivalent_retention: float
    layer_similarity: list[float] = field(default_factory=list)
    kv_mode: str | None = None
    kv_withdraw_layer: int | None = None
    kv_threshold: float | None = None  # SharpV's M (when its stage 2 is on)
    kv_min_layer: int | None = None
    visual_tokens_per_layer: list[int] = field(default_factory=list)
    prunes_inside_llm: bool = False
    answer: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_in(self) -> int:
        return len(self.kept_per_frame) * self.tokens_per_frame

    @property
    def short_label(self) -> str:
        """The method and its budget: ``sharpv, adaptive``, ``evs, keep_ratio 0.191``, ``dense``."""
        if self.keep_ratio is not None:
            return f"{self.label}, keep_ratio {self.keep_ratio:.3g}"
        return f"{self.label}, adaptive" if self.name == "sharpv" else self.label

    @property
    def layers(self) -> int:
        """LLM layers the prefill ran (0 when the stats carry no per-layer counts)."""
        return len(self.visual_tokens_per_layer)

    @property
    def full_layers(self) -> int:
        """How many of the first LLM layers compute every visual token of the video (all
        ``tokens_in``), before the method withdraws any: the layers an in-LLM method cannot spare."""
        count = 0
        for tokens in self.visual_tokens_per_layer:
            if tokens < self.tokens_in:
                break
            count += 1
        return count

    @property
    def over_budget(self) -> bool:
        """A method pruning inside the LLM whose layers compute more than its keep_ratio on average
        (equivalent retention above the budget by more than one token's share)."""
        return (self.prunes_inside_llm and self.keep_ratio is not None
                and self.equivalent_retention > self.keep_ratio + 1 / max(self.tokens_in, 1))

    @property
    def under_budget(self) -> bool:
        return (self.prunes_inside_llm and self.keep_ratio is not None
                and self.equivalent_retention < self.keep_ratio - 1 / max(self.tokens_in, 1))

    @property
    def depth_bound(self) -> bool:
        """Over budget because of the model's depth: the layers that compute every visual token
        (:attr:`full_layers` of :attr:`layers`) already exceed the budget by themselves."""
        return self.over_budget and self.layers > 0 and self.full_layers / self.layers >= self.keep_ratio

    @property
    def long_label(self) -> str:
        kept = sum(self.kept_per_frame)
        text = (f"{self.short_label}: {kept}/{self.tokens_in} visual tokens enter the LLM "
                f"({100 * self.kept_share:.1f}%), equivalent retention {100 * self.equivalent_retention:.1f}%")
        if self.prunes_inside_llm:
            text += " (withdrawn inside the LLM)"
        if self.kv_withdraw_layer is not None and self.name == "sharpv":
            text += f", stage 2 withdrew them at layer {self.kv_withdraw_layer}"
        if not self.mask_known:
            text += " (mask not reported)"
        return text

    @property
    def retention_text(self) -> str:
        """What the LLM's layers computed: the visual tokens per layer, their mean share
        (equivalent retention), where it stands against the budget and why, and what SharpV's
        stage 2 did."""
        n, layers = self.tokens_in, self.layers
        eq = f"{100 * self.equivalent_retention:.1f}%"
        if not layers:
            return f"equivalent retention {eq} (the per-layer counts were not reported)"
        per_layer = self.visual_tokens_per_layer
        if len(set(per_layer)) == 1:
            text = f"equivalent retention {eq}: each of the {layers} LLM layers computes {per_layer[0]} of the {n} visual tokens"
        else:
            text = (f"equivalent retention {eq}: the {layers} LLM layers compute "
                    f"{', '.join(str(v) for v in per_layer)} of the {n} visual tokens")
        budget = f"{100 * self.keep_ratio:.1f}%" if self.keep_ratio is not None else ""
        if self.over_budget:
            k = self.full_layers
            first = "the first" if k == 1 else f"the first {k}"
            text += (f"; above the {budget} budget: {first} of this model's {layers} layers "
                     f"compute{'s' if k == 1 else ''} all {n}")
            if self.depth_bound:
                text += (f" ({k}/{layers} = {100 * k / layers:.1f}% of dense by {'itself' if k == 1 else 'themselves'}), "
                         "so at this depth it cannot reach the budget")
        elif self.under_budget:
            text += f"; below the {budget} budget" + (
                f" (VTW withdraws at a whole layer: steps of {100 / layers:.1f}% on this model's {layers} layers)"
                if self.name == "vtw" else "")
        if self.name == "sharpv" and self.kv_min_layer is not None:
            m, threshold = self.kv_min_layer, f"{self.kv_threshold:g}" if self.kv_threshold is not None else "?"
            if self.kv_withdraw_layer is not None:
                text += (f"; stage 2 withdrew them at layer {self.kv_withdraw_layer}, the first layer from kv_min_layer"
                         f" = {m} on with s_l < M = {threshold}")
            else:
                text += (f"; stage 2 withdrew none: s_l stayed at or above M = {threshold} at every layer from "
                         f"kv_min_layer = {m} on")
            if layers and m < layers:
                text += (f" (on this {layers}-layer model layer {m} is the earliest it can withdraw at, so its equivalent "
                         f"retention cannot fall below {m}/{layers} of the share that enters, "
                         f"{100 * m / layers * self.kept_share:.1f}%)")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "name": self.name, "keep_ratio": self.keep_ratio, "mode": self.mode,
            "title": self.long_label, "retention": self.retention_text, "kept_share": self.kept_share,
            "equivalent_retention": self.equivalent_retention,
            "visual_tokens_in": self.tokens_in, "visual_tokens_kept": int(sum(self.kept_per_frame)),
            "tokens_per_frame": self.tokens_per_frame, "kept_per_frame": list(self.kept_per_frame),
            "keep_ratio_per_frame": [k / max(self.tokens_per_frame, 1) for k in self.kept_per_frame],
            "keep_mask": self.keep.astype(bool).tolist() if self.mask_known else None,
            "layer_similarity": list(self.layer_similarity), "kv_mode": self.kv_mode,
            "kv_withdraw_layer": self.kv_withdraw_layer, "kv_threshold": self.kv_threshold,
            "kv_min_layer": self.kv_min_layer, "visual_tokens_per_layer": list(self.visual_tokens_per_layer),
            "layers_computing_every_visual_token": self.full_layers, "over_budget": self.over_budget,
            "depth_bound": self.depth_bound,
            "prunes_inside_llm": self.prunes_inside_llm, "answer": self.answer, "config": self.config,
        }


@dataclass
class VizResult:
    """Everything the maps are drawn from."""

    video: str
    #: the checkpoint as results name it: ``shipped NAME model (folder)`` (no machine-specific path),
    #: else the folder as given (:func:`sharpv.synthetic.model.describe_model`)
    model: str
    model_type: str
    question: str
    frames: np.ndarray  # (T, H, W, 3) uint8: for each mask row, the sampled frame it starts with
    frame_indices: list[int]  # source frame index of each of them
    sampled_frames: int  # frames sampled from the video (2T for Qwen-VL's two-frame steps)
    grid: tuple[int, int]  # (gh, gw) token grid of a frame
    grid_source: str  # "adapter" (the model's own) or "square" (a fallback factorisation)
    rows: list[VizRow]
    note: str = ""
    #: frames asked for (``--frames``, else the checkpoint's default); more than ``sampled_frames``
    #: when the video is shorter (every frame was then taken, and a warning said so); None when the
    #: video was given already sampled
    requested_frames: int | None = None
    #: (height, width) of the video's frames as decoded; None when not known
    source_size: tuple[int, int] | None = None
    #: (height, width) of a frame as the model's vision tower takes it; None when not known
    input_size: tuple[int, int] | None = None
    #: what ``frames`` hold: "model input" (resized to ``input_size`` while decoding) or "decoded"
    frames_drawn: str = "decoded"
    total_frames: int | None = None  # frames in the video
    model_note: str = ""  # what to keep in mind about it (the shipped toy model: its choices on real footage)
    llm_layers: int | None = None
    #: the keep_ratio every budgeted method ran at (None: no method had one)
    budget: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video, "model": self.model, "model_note": self.model_note,
            "model_type": self.model_type, "llm_layers": self.llm_layers, "question": self.question,
            "frames": len(self.frame_indices), "sampled_frames": self.sampled_frames,
            "requested_frames": self.requested_frames, "total_frames": self.total_frames,
            "frame_indices": list(self.frame_indices), "grid": list(self.grid), "grid_source": self.grid_source,
            "frame_size": list(self.frames.shape[1:3]), "frames_drawn": self.frames_drawn,
            "source_size": list(self.source_size) if self.source_size else None,
            "input_size": list(self.input_size) if self.input_size else None,
            "budget": self.budget, "note": self.note,
            "methods": [row.to_dict() for row in self.rows],
        }


# --- the model side ----------------------------------------------------------------------------
def token_grid(model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[int, int] | None:
    """The (gh, gw) token grid of one frame as the model lays it out, from the family's adapter
    (LLaVA-OneVision: the pooled grid; Qwen-VL: ``video_grid_thw``'s h / merge x w / merge), or None
    when it cannot tell."""
    from sharpv.adapters import adapter_for

    adapter = adapter_for(model)
    features = (inputs.get("mm_encoder_outputs") or {}).get("video")
    try:
        if features is None:
            with torch.no_grad():
                features = adapter.encode(inputs)
        spatial = adapter.grids(features, inputs).spatial
    except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError):  # fall back to a square
        return None
    return (int(spatial[0][0]), int(spatial[0][1])) if spatial else None


def encode_video(model: torch.nn.Module, processor: Any, video: Any, *, question: str = DEFAULT_QUESTION,
                 frames: int | None = None, chunk_frames: int | None = None):
    """Read ``video`` (a file, a folder of frames or a SampledVideo) and encode it once: returns
    (sampled video, processor inputs with the video features precomputed)."""
    from sharpv.adapters import DEFAULT_CHUNK_FRAMES, precompute_video_features
    from sharpv.answer import default_frames
    from sharpv.video import SampledVideo, build_inputs, read_video_for

    if isinstance(video, SampledVideo):
        sampled = video
    else:
        sampled = read_video_for(processor, video, frames if frames is not None else default_frames(model, processor))
    inputs = build_inputs(processor, question, sampled)
    return sampled, precompute_video_features(model, inputs, chunk_frames or DEFAULT_CHUNK_FRAMES)


def row_from_stats(stats: Any, method: Any, label: str | None = None, answer: str | None = None) -> VizRow:
    """A :class:`VizRow` from a method's :class:`~sharpv.stats.PruningStats` (its first video)."""
    if not stats.videos:
        raise SharpVError("the prompt reached the model without video tokens; check the processor and the video")
    video = stats.videos[0]
    t, f = video.frames, video.tokens_per_frame
    if video.keep is not None:
        keep = video.keep.detach().to("cpu").bool().reshape(t, f).numpy()
        known = True
    else:
        keep, known = np.ones((t, f), dtype=bool), False
    cfg = method.config
    stage2 = method.name == "sharpv" and getattr(cfg, "kv", False)
    return VizRow(
        label=label or method.name, name=method.name, keep_ratio=getattr(cfg, "keep_ratio", None), mode=stats.mode,
        keep=keep, mask_known=known, kept_per_frame=[int(k) for k in video.kept_per_frame], tokens_per_frame=f,
        kept_share=video.tokens_kept / max(video.tokens_in, 1), equivalent_retention=stats.equivalent_retention,
        layer_similarity=[float(s) for s in stats.layer_similarity], kv_mode=stats.kv_mode,
        kv_withdraw_layer=stats.kv_withdraw_layer, kv_threshold=float(cfg.kv_threshold) if stage2 else None,
        kv_min_layer=int(cfg.kv_min_layer) if stage2 else None,
        visual_tokens_per_layer=list(stats.visual_tokens_per_layer), prunes_inside_llm=stats.kv_mode is not None and method.name != "sharpv",
        answer=answer, config=cfg.to_dict(),
    )


def run_method(model: torch.nn.Module, processor: Any, inputs: dict[str, Any], method: Any, label: str | None = None) -> VizRow:
    """Prefill ``inputs`` once under ``method`` (the real runtime, one new token) and return its row."""
    from sharpv.answer import generate_answer

    gen = generate_answer(model, processor, inputs, method, max_new_tokens=1)
    return row_from_stats(gen.stats, method, label)


def plan_budgets(specs: Sequence[Any], keep_ratio: float | None) -> list[tuple[Any, float | None]]:
    """(spec, budget) per method: every method at ``keep_ratio`` when it is given; otherwise SharpV
    adaptive and every other method at the share SharpV adaptive keeps (filled in by
    :func:`collect_rows`; None here), dense without a budget."""
    return [(spec, None if spec.name == "dense" or (keep_ratio is None and spec.name == "sharpv") else keep_ratio)
            for spec in specs]


def collect_rows(model: torch.nn.Module, processor: Any, inputs: dict[str, Any], specs: Sequence[Any],
                 keep_ratio: float | None, on_step: Callable[[str], None] | None = None) -> tuple[list[VizRow], str]:
    """Run every method of ``specs`` (:class:`~sharpv.harness.bench.MethodSpec`) on ``inputs``.

    With ``keep_ratio`` None, SharpV runs adaptive and every other method runs at the share of the
    video's tokens SharpV adaptive kept (its first ``sharpv`` entry; when there is none, a default
    SharpV is run once for it and not shown), so that the maps compare equal budgets. Returns the
    rows in the order given and a note saying which budget was used."""
    from sharpv.methods import SharpV

    rows: dict[int, VizRow] = {}
    share = keep_ratio
    note = f"every method at keep_ratio {keep_ratio:g}" if keep_ratio is not None else ""
    if keep_ratio is not None and any(spec.name == "dense" for spec in specs):
        note += " (dense: every token)"
    if keep_ratio is None:
        first = next((k for k, spec in enumerate(specs) if spec.name == "sharpv"), None)
        if on_step:
            on_step("sharpv (adaptive)")
        if first is None:
            reference = run_method(model, processor, inputs, SharpV())
        else:
            reference = rows[first] = run_method(model, processor, inputs, specs[first].build(None), specs[first].label)
        share = reference.kept_share
        named = "" if reference.label == "sharpv" else f" ({reference.label})"
        note = (f"SharpV adaptive{named} let {100 * share:.1f}% of the visual tokens into the LLM; every other "
                f"method ran at that share, keep_ratio {share:.4g}"
                + ("" if first is not None else " (that SharpV run is not shown)"))
    for k, (spec, budget) in enumerate(plan_budgets(specs, keep_ratio)):
        if k in rows:
            continue
        if keep_ratio is None and spec.name not in ("dense", "sharpv"):
            budget = share
        if on_step:
            on_step(f"{spec.label} ({'no budget' if spec.name == 'dense' else 'adaptive' if budget is None else f'keep_ratio {budget:.3g}'})")
        rows[k] = run_method(model, processor, inputs, spec.build(budget), spec.label)
    return [rows[k] for k in range(len(specs))], note


def frames_for_rows(sampled: Any, steps: int) -> tuple[np.ndarray, list[int]]:
    """For each of the mask's ``steps`` rows, the sampled frame it starts with (a Qwen-VL step
    covers two sampled frames: its first is shown) and that frame's source index."""
    n = len(sampled.frames)
    per = max(1, -(-n // max(steps, 1)))  # 2 for Qwen-VL (an odd count is padded with the last frame)
    picks = [min(n - 1, t * per) for t in range(steps)]
    return sampled.frames[picks], [int(sampled.indices[i]) for i in picks]


def model_input_size(model: torch.nn.Module, sampled: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) of a frame as the model's vision tower takes it: the frames themselves when
    they were resized to it while decoding; else Qwen-VL's ``video_grid_thw`` times the patch size,
    or LLaVA-OneVision's square ``image_size``; None when it cannot tell."""
    if getattr(sampled, "source_size", None) is not None:
        return int(sampled.frames.shape[1]), int(sampled.frames.shape[2])
    vision = getattr(model.config, "vision_config", None)
    grid_thw = inputs.get("video_grid_thw")
    if grid_thw is not None and getattr(vision, "patch_size", None):
        _, h, w = (int(v) for v in grid_thw[0].tolist())
        return h * int(vision.patch_size), w * int(vision.patch_size)
    if model.config.model_type == "llava_onevision" and getattr(vision, "image_size", None):
        return int(vision.image_size), int(vision.image_size)
    return None


def describe_viz_model(model: torch.nn.Module, model_dir: Any, input_size: tuple[int, int] | None) -> tuple[str, str]:
    """(name, note) of the model for the page: a shipped checkpoint is named as results name it and
    said to be the toy model it is; another is its folder as given."""
    from sharpv.synthetic.model import describe_model, shipped_model_name

    try:
        shipped = shipped_model_name(model_dir)
    except (OSError, TypeError, ValueError):
        shipped = None
    if shipped is None:
        return str(model_dir), ""
    layers = getattr(getattr(model.config, "text_config", model.config), "num_hidden_layers", None)
    size = f"{input_size[0]} x {input_size[1]}" if input_size else "small"
    return describe_model(model_dir), (
        f"a toy model: the LLaVA-OneVision architecture with {layers} LLM layers, trained only on {size} synthetic "
        "frames of moving coloured shapes. On real footage its choices show how each method behaves, not what a "
        "real video LLM would keep; pass --model for a real checkpoint")


def build_result(model: torch.nn.Module, sampled: Any, inputs: dict[str, Any], rows: list[VizRow], *,
                 video: Any, model_dir: Any, question: str, note: str = "") -> VizResult:
    steps = rows[0].keep.shape[0]
    f = rows[0].tokens_per_frame
    grid, source = token_grid(model, inputs), "adapter"
    if grid is None or grid[0] * grid[1] != f:
        grid, source = square_grid(f), "square"
    frames, indices = frames_for_rows(sampled, steps)
    decoded = getattr(sampled, "source_size", None)
    source_size = tuple(int(v) for v in decoded) if decoded is not None else tuple(int(v) for v in sampled.frames.shape[1:3])
    input_size = model_input_size(model, sampled, inputs)
    label, model_note = describe_viz_model(model, model_dir, input_size)
    layers = next((r.layers for r in rows if r.layers), None)
    budget = next((r.keep_ratio for r in rows if r.keep_ratio is not None), None)
    return VizResult(
        video=str(video), model=label, model_type=str(model.config.model_type), question=question,
        frames=frames, frame_indices=indices, sampled_frames=len(sampled.frames), grid=grid, grid_source=source,
        rows=rows, note=note, requested_frames=getattr(sampled, "requested_frames", None), source_size=source_size,
        input_size=input_size, frames_drawn="model input" if decoded is not None else "decoded",
        total_frames=getattr(sampled, "total_frames", None), model_note=model_note,
        llm_layers=layers, budget=budget,
    )


# --- writing ---------------------------------------------------------------------------------
def panel_target(base: int, size: tuple[int, int] | None, most: int = 340) -> int:
    """The longer side to draw a panel at: ``base`` for a square frame, more for an elongated one
    (about the area of a ``base``-pixel square, at most ``most``)."""
    if not size or min(size) <= 0:
        return base
    return min(most, round(base * math.sqrt(max(size) / min(size))))


def write_viz(result: VizResult, out: str | Path) -> list[Path]:
    """Write ``token_maps.png``, ``keep_ratio.png``, ``layers.png`` (when the stats carry visual
    tokens per layer), ``stage2.png`` (when a method has a stage-2 curve), ``viz.json`` and
    ``index.html`` (all of it, self-contained) into ``out`` (created if needed; only these files are
    written, replacing earlier ones of the same name; a chart an earlier run left that this run has
    none of is removed)."""
    from sharpv.viz.charts import keep_ratio_chart, layers_chart, stage2_chart
    from sharpv.viz.page import render_page
    from sharpv.viz.token_maps import (
        GRID_PANEL,
        LARGE_PANEL,
        cell_shape,
        frame_panel,
        png_bytes,
        token_map_grid,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame_labels = [f"#{i}" for i in result.frame_indices]
    cell = cell_shape(result.grid, result.source_size, panel_target(GRID_PANEL, result.source_size))
    grid_png = png_bytes(token_map_grid(result.frames, [(r.long_label, r.keep if r.mask_known else None) for r in result.rows],
                                       result.grid, cell, frame_labels))
    written = [out / "token_maps.png"]
    written[0].write_bytes(grid_png)
    keep_chart = keep_ratio_chart(result.rows, out / "keep_ratio.png", frame_labels, budget=result.budget)
    written.append(keep_chart.path)
    optional = {}
    for name, draw in (("layers", lambda p: layers_chart(result.rows, p, budget=result.budget)),
                       ("stage2", lambda p: stage2_chart(result.rows, p))):
        path = out / f"{name}.png"
        if draw(path) is None:
            path.unlink(missing_ok=True)  # a stale chart of an earlier run in this folder
        else:
            written.append(path)
            optional[name] = path
    large = cell_shape(result.grid, result.source_size, panel_target(LARGE_PANEL, result.source_size))
    panels = [[png_bytes(frame_panel(result.frames[t], row.keep[t] if row.mask_known else None, result.grid, large))
               for t in range(len(result.frames))] for row in result.rows]
    meta = result.to_dict()
    meta.update(cell_pixels=list(cell), large_cell_pixels=list(large),
                files=[p.name for p in written] + ["viz.json", "index.html"])
    (out / "viz.json").write_text(json.dumps(meta, indent=1) + "\n")
    written.append(out / "viz.json")
    images = {"token_maps": grid_png, "keep_ratio": keep_chart.path.read_bytes()}
    images.update({name: path.read_bytes() for name, path in optional.items()})
    (out / "index.html").write_text(render_page(result, panels, images, keep_chart=keep_chart), encoding="utf-8")
    written.append(out / "index.html")
    return written


# --- the jobs the CLI runs -----------------------------------------------------------------------
def run_viz_job(*, model_dir: Path, video: Path, specs: Sequence[Any], keep_ratio: float | None, frames: int | None,
                chunk_frames: int, dtype: str, device: str, out: Path, question: str = DEFAULT_QUESTION,
                console: Any = None) -> list[Path]:
    """``sharpv viz``: load the model, encode the video once, run every method, write the files."""
    from contextlib import nullcontext

    from sharpv.answer import load_model

    with console.status("loading model", spinner="dots") if console is not None else nullcontext() as live:

        def status(text: str) -> None:
            if live is not None:
                live.update(text)

        model, processor = load_model(model_dir, dtype=dtype, device=device)
        status("reading and encoding the video")
        sampled, inputs = encode_video(model, processor, video, question=question, frames=frames, chunk_frames=chunk_frames)
        rows, note = collect_rows(model, processor, inputs, specs, keep_ratio, on_step=lambda s: status(f"running {s}"))
        result = build_result(model, sampled, inputs, rows, video=video, model_dir=model_dir, question=question, note=note)
        status("drawing")
        written = write_viz(result, out)
    return written


def answer_with_viz(model: torch.nn.Module, processor: Any, video: Any, question: str, *, method: Any,
                    frames: int | None, max_new_tokens: int, chunk_frames: int, model_dir: Any, out: Path):
    """``sharpv answer --viz`` with one question: what :func:`sharpv.answer.answer_question` does (the
    same reading, encoding and ``generate()``), keeping the run's stats to draw its maps into
    ``out``. Returns the :class:`~sharpv.answer.Answer`."""
    from sharpv.answer import _answer, generate_answer

    if not isinstance(question, str) or not question.strip():
        raise SharpVError("the question is empty; ask something about the video")
    sampled, inputs = encode_video(model, processor, video, question=question, frames=frames, chunk_frames=chunk_frames)
    gen = generate_answer(model, processor, inputs, method, max_new_tokens=max_new_tokens)
    result = _answer(gen, method, model)
    row = row_from_stats(gen.stats, method, answer=result.answer)
    write_viz(build_result(model, sampled, inputs, [row], video=video, model_dir=model_dir, question=question,
                           note=f"the pruning of `sharpv answer` for this question (answer: {result.answer!r})"), out)
    return result


def viz_for_questions(model: torch.nn.Module, processor: Any, video: Any, questions: Sequence[str], *, method: Any,
                      frames: int | None, chunk_frames: int, model_dir: Any, out: Path) -> list[Path]:
    """``sharpv answer --viz`` with several questions: they share one pruned video (the methods
    never read the question), so the maps are drawn from one more prefill with the first question."""
    sampled, inputs = encode_video(model, processor, video, question=questions[0], frames=frames, chunk_frames=chunk_frames)
    row = run_method(model, processor, inputs, method)
    return write_viz(build_result(model, sampled, inputs, [row], video=video, model_dir=model_dir, question=questions[0],
                                  note=f"the pruned video the {len(questions)} questions share (drawn from a prefill "
                                       "with the first question; the methods never read the question)"), out)
