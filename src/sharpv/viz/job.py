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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sharpv.errors import SharpVError
from sharpv.viz.token_maps import square_grid

#: the prompt of ``sharpv viz``: the methods never read the question, so any question gives the same maps
DEFAULT_QUESTION = "Describe the video."
#: files ``write_viz`` writes into its folder (``stage2.png`` only when a method has a stage-2 curve)
FILES = ("index.html", "viz.json", "token_maps.png", "keep_ratio.png", "stage2.png")


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
        budget = "adaptive" if self.keep_ratio is None and self.name == "sharpv" else (
            f"r={self.keep_ratio:.3g}" if self.keep_ratio is not None else "")
        return f"{self.label} ({budget})" if budget else self.label

    @property
    def long_label(self) -> str:
        kept = sum(self.kept_per_frame)
        text = f"{self.short_label}: {kept}/{self.tokens_in} visual tokens enter the LLM ({100 * self.kept_share:.1f}%)"
        if self.prunes_inside_llm:
            text += f", equivalent retention {100 * self.equivalent_retention:.1f}%"
        if self.kv_withdraw_layer is not None and self.name == "sharpv":
            text += f", withdrawn at layer {self.kv_withdraw_layer}"
        if not self.mask_known:
            text += " (mask not reported)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "name": self.name, "keep_ratio": self.keep_ratio, "mode": self.mode,
            "title": self.long_label, "kept_share": self.kept_share, "equivalent_retention": self.equivalent_retention,
            "visual_tokens_in": self.tokens_in, "visual_tokens_kept": int(sum(self.kept_per_frame)),
            "tokens_per_frame": self.tokens_per_frame, "kept_per_frame": list(self.kept_per_frame),
            "keep_ratio_per_frame": [k / max(self.tokens_per_frame, 1) for k in self.kept_per_frame],
            "keep_mask": self.keep.astype(bool).tolist() if self.mask_known else None,
            "layer_similarity": list(self.layer_similarity), "kv_mode": self.kv_mode,
            "kv_withdraw_layer": self.kv_withdraw_layer, "kv_threshold": self.kv_threshold,
            "kv_min_layer": self.kv_min_layer, "visual_tokens_per_layer": list(self.visual_tokens_per_layer),
            "prunes_inside_llm": self.prunes_inside_llm, "answer": self.answer, "config": self.config,
        }


@dataclass
class VizResult:
    """Everything the maps are drawn from."""

    video: str
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video, "model": self.model, "model_type": self.model_type, "question": self.question,
            "frames": len(self.frame_indices), "sampled_frames": self.sampled_frames,
            "requested_frames": self.requested_frames,
            "frame_indices": list(self.frame_indices), "grid": list(self.grid), "grid_source": self.grid_source,
            "frame_size": list(self.frames.shape[1:3]), "note": self.note,
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
    if keep_ratio is None:
        first = next((k for k, spec in enumerate(specs) if spec.name == "sharpv"), None)
        if on_step:
            on_step("sharpv (adaptive)")
        if first is None:
            reference = run_method(model, processor, inputs, SharpV())
        else:
            reference = rows[first] = run_method(model, processor, inputs, specs[first].build(None), specs[first].label)
        share = reference.kept_share
        note = (f"SharpV adaptive ({reference.short_label}) kept {100 * share:.1f}% of the visual tokens; "
                "every other method ran at that share (keep_ratio "
                f"{share:.4g})" + ("" if first is not None else "; the SharpV run is not shown"))
    for k, (spec, budget) in enumerate(plan_budgets(specs, keep_ratio)):
        if k in rows:
            continue
        if keep_ratio is None and spec.name not in ("dense", "sharpv"):
            budget = share
        if on_step:
            on_step(f"{spec.label} ({'adaptive' if budget is None else f'r={budget:.3g}'})")
        rows[k] = run_method(model, processor, inputs, spec.build(budget), spec.label)
    return [rows[k] for k in range(len(specs))], note


def frames_for_rows(sampled: Any, steps: int) -> tuple[np.ndarray, list[int]]:
    """For each of the mask's ``steps`` rows, the sampled frame it starts with (a Qwen-VL step
    covers two sampled frames: its first is shown) and that frame's source index."""
    n = len(sampled.frames)
    per = max(1, -(-n // max(steps, 1)))  # 2 for Qwen-VL (an odd count is padded with the last frame)
    picks = [min(n - 1, t * per) for t in range(steps)]
    return sampled.frames[picks], [int(sampled.indices[i]) for i in picks]


def build_result(model: torch.nn.Module, sampled: Any, inputs: dict[str, Any], rows: list[VizRow], *,
                 video: Any, model_dir: Any, question: str, note: str = "") -> VizResult:
    steps = rows[0].keep.shape[0]
    f = rows[0].tokens_per_frame
    grid, source = token_grid(model, inputs), "adapter"
    if grid is None or grid[0] * grid[1] != f:
        grid, source = square_grid(f), "square"
    frames, indices = frames_for_rows(sampled, steps)
    return VizResult(
        video=str(video), model=str(model_dir), model_type=str(model.config.model_type), question=question,
        frames=frames, frame_indices=indices, sampled_frames=len(sampled.frames), grid=grid, grid_source=source,
        rows=rows, note=note, requested_frames=getattr(sampled, "requested_frames", None),
    )


# --- writing ---------------------------------------------------------------------------------
def write_viz(result: VizResult, out: str | Path) -> list[Path]:
    """Write ``token_maps.png``, ``keep_ratio.png``, ``stage2.png`` (when a method has a stage-2
    curve), ``viz.json`` and ``index.html`` (all of it, self-contained) into ``out`` (created if
    needed; only these files are written, replacing earlier ones of the same name)."""
    from sharpv.viz.charts import keep_ratio_chart, stage2_chart
    from sharpv.viz.page import render_page
    from sharpv.viz.token_maps import (
        LARGE_PANEL,
        cell_size,
        frame_panel,
        png_bytes,
        token_map_grid,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame_labels = [f"#{i}" for i in result.frame_indices]
    cell = cell_size(result.grid)
    grid_png = png_bytes(token_map_grid(result.frames, [(r.long_label, r.keep if r.mask_known else None) for r in result.rows],
                                       result.grid, cell, frame_labels))
    written = [out / "token_maps.png"]
    written[0].write_bytes(grid_png)
    keep_path = keep_ratio_chart(result.rows, out / "keep_ratio.png", frame_labels)
    written.append(keep_path)
    stage2_path = out / "stage2.png"
    if stage2_chart(result.rows, stage2_path) is None:
        stage2_path.unlink(missing_ok=True)  # a stale chart of an earlier run in this folder
        stage2_path = None
    else:
        written.append(stage2_path)
    large = cell_size(result.grid, LARGE_PANEL)
    panels = [[png_bytes(frame_panel(result.frames[t], row.keep[t] if row.mask_known else None, result.grid, large))
               for t in range(len(result.frames))] for row in result.rows]
    meta = result.to_dict()
    meta.update(cell_pixels=cell, large_cell_pixels=large, files=[p.name for p in written] + ["viz.json", "index.html"])
    (out / "viz.json").write_text(json.dumps(meta, indent=1) + "\n")
    written.append(out / "viz.json")
    images = {"token_maps": grid_png, "keep_ratio": keep_path.read_bytes()}
    if stage2_path is not None:
        images["stage2"] = stage2_path.read_bytes()
    (out / "index.html").write_text(render_page(result, panels, images), encoding="utf-8")
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
