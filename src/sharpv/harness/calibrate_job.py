"""The `sharpv calibrate` job: load the model and the sets, encode every video once, run the search
(:mod:`sharpv.harness.calibrate`) on the cached inputs, report on a held-out set, write the files.

Every calibration video is read and encoded by the vision tower once
(:func:`sharpv.harness.evaluate.prepare_videos`); the inputs stay in memory (for a real model:
frames x tokens x hidden size values per video, in the model's dtype) and every point of the
search answers from them; dense is answered once. The held-out set is prepared the same way and
answered by dense, the calibrated config, SharpV at the fixed budgets and SharpV's default
adaptive mode (K = 1).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from sharpv.answer import load_model
from sharpv.harness.bench import MethodSpec
from sharpv.harness.calibrate import (
    ACCURACY, STAGE2, STATE_FILE, CalibrationResult, Search, SearchState, Target, heldout_check,
)
from sharpv.harness.evaluate import evaluate_prepared, load_jsonl, prepare_videos, render_size, synthetic_examples
from sharpv.harness.progress import JobProgress
from sharpv.harness.report import markdown_table, rich_table, write_json

CALIBRATED_LABEL = "sharpv[calibrated]"
DENSE = MethodSpec("dense", "dense")

CURVE_COLUMNS = [
    ("mark", "", "{}"), ("index", "#", "{}"), ("phase", "phase", "{}"), ("ratio_scale", "K", "{:g}"),
    ("spatial_weight", "w", "{:g}"), ("M", "M", "{}"), ("accuracy", "accuracy", "{:.3f}"),
    ("accuracy_vs_dense", "of dense", "{:.3f}"), ("kept_share", "visual kept", "{:.4f}"),
    ("equivalent_retention", "visual/layer", "{:.4f}"), ("kv_share", "KV share", "{:.3f}"),
    ("feasible", "meets", "{}"),
]
HELDOUT_COLUMNS = [
    ("method", "method", "{}"), ("budget", "budget", "{}"), ("n", "n", "{}"), ("accuracy", "accuracy", "{:.3f}"),
    ("ci95_text", "95% CI", "{}"), ("accuracy_vs_dense", "of dense", "{:.3f}"), ("kept_share", "visual kept", "{:.3f}"),
    ("equivalent_retention", "visual/layer", "{:.3f}"), ("kv_share", "KV share", "{:.3f}"),
    ("prefill_ms", "prefill ms", "{:.2f}"),
]


def load_examples(data: Path | None, seed: int, n: int, frames: int | None, model, processor) -> tuple[list, int, str]:
    """(examples, frames per video, a description of the set)."""
    from sharpv.answer import default_frames
    from sharpv.synthetic.model import FRAMES, HELDOUT_SEED

    if data is not None:
        return load_jsonl(data), frames or default_frames(model, processor), str(data)
    n_frames = frames or FRAMES
    kind = "held-out set" if seed == HELDOUT_SEED else "set"
    size = render_size(model)
    return (synthetic_examples(seed, n, frames=n_frames, size=size), n_frames,
            f"synthetic {kind} (seed {seed}, n {n}, {n_frames} frames rendered in memory at {size} px)")


def _progress(console: Console) -> Progress:
    return JobProgress(console)


def _describe(phase: str, settings: dict) -> str:
    text = f"{phase}: K={settings['ratio_scale']:g} w={settings['spatial_weight']:g}"
    return text + (f" M={settings['kv_threshold']:g}" if settings.get("kv") else "")


def curve_rows(result: CalibrationResult) -> list[dict]:
    rows = []
    for t in result.trials:
        row = t.row()
        row["M"] = f"{t.settings['kv_threshold']:g}" if t.settings.get("kv") else "off"
        row["mark"] = "*" if t is result.chosen else ("s1" if t is result.stage1 and result.chosen is not t else "")
        row["chosen"] = t is result.chosen
        row["stage1_choice"] = t is result.stage1
        rows.append(row)
    return rows


def plot_curve(result: CalibrationResult, path: Path) -> None:
    """Accuracy against kept share of every stage-1 point (a line per w, by K), the chosen point
    marked; a second panel: stage 2's points against equivalent retention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sharpv.harness.report import MARKERS

    dense = result.dense["accuracy"]
    stage2 = [t for t in result.trials if t.phase == STAGE2]
    fig, axes = plt.subplots(1, 2 if stage2 else 1, figsize=(11 if stage2 else 6, 4.5), squeeze=False)
    ax = axes[0][0]
    weights = list(dict.fromkeys(t.settings["spatial_weight"] for t in result.trials if t.phase != STAGE2))
    for i, w in enumerate(weights):
        pts = sorted((t.settings["ratio_scale"], t.kept_share, t.accuracy) for t in result.trials
                     if t.phase != STAGE2 and t.settings["spatial_weight"] == w)
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=MARKERS[i % len(MARKERS)], linewidth=1.2,
                markersize=5, alpha=0.85, label=f"w = {w:g}")
    s1 = result.stage1
    ax.plot([s1.kept_share], [s1.accuracy], marker="*", markersize=18, color="crimson", linestyle="none",
            label=f"chosen: K={s1.settings['ratio_scale']:g}, w={s1.settings['spatial_weight']:g}")
    ax.axhline(dense, color="grey", linewidth=0.8, linestyle="--", label=f"dense {dense:.3f}")
    if result.target.kind == ACCURACY:
        ax.axhline(result.goal_accuracy, color="crimson", linewidth=0.8, linestyle=":",
                   label=f"target: {result.target.value:.1%} of dense")
    else:
        ax.axvline(result.target.value, color="crimson", linewidth=0.8, linestyle=":",
                   label=f"target: kept share <= {result.target.value:g}")
    ax.set_xlabel("mean share of visual tokens entering the LLM (stage 1)")
    ax.set_ylabel("accuracy (calibration set)")
    ax.set_title("stage 1 (K and w; stage 2 off)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if stage2:
        ax2 = axes[0][1]
        pts = sorted((t.settings["kv_threshold"], t.accuracy, t.retention) for t in stage2)
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color="tab:blue", label="accuracy")
        c = result.chosen
        if c.settings.get("kv"):
            ax2.plot([c.settings["kv_threshold"]], [c.accuracy], marker="*", markersize=18, color="crimson",
                     linestyle="none", label=f"chosen: M={c.settings['kv_threshold']:g}")
        else:
            ax2.plot([], [], marker="*", markersize=12, color="crimson", linestyle="none", label="chosen: stage 2 off")
        ax2.axhline(s1.accuracy, color="grey", linewidth=0.8, linestyle="-.", label="stage 2 off (the stage-1 choice)")
        ax2.set_xlabel("M (kv_threshold): visual tokens leave at the first layer whose similarity < M")
        ax2.set_ylabel("accuracy (calibration set)")
        ax2.set_title(f"stage 2 at K={s1.settings['ratio_scale']:g}, w={s1.settings['spatial_weight']:g}", fontsize=10)
        ax2.grid(True, alpha=0.3)
        right = ax2.twinx()
        right.plot([p[0] for p in pts], [p[2] for p in pts], marker="s", markersize=4, color="tab:orange",
                   linestyle="--", label="equivalent retention")
        right.set_ylabel("equivalent retention (mean visual share per LLM layer)")
        right.set_ylim(0, max(p[2] for p in pts) * 1.1)
        h1, l1 = ax2.get_legend_handles_labels()
        h2, l2 = right.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    fig.suptitle(f"sharpv calibrate --target {result.target}: every point tried")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _flat(records: list[dict]) -> list[dict]:
    return [dict(r, ci95_text=f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}", prefill_ms=r["prefill_seconds"] * 1e3)
            for r in records]


def results_markdown(summary: dict, rows: list[dict], heldout: dict | None) -> str:
    cal = summary["calibration"]
    settings = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in summary["config"]["settings"].items())
    lines = [
        f"`{summary['command']}`" if summary.get("command") else "",
        "",
        f"Model: {cal['model']}. Calibration set: {cal['dataset']}; dense accuracy {cal['dense_accuracy']:.3f}. "
        f"Target `{cal['target']}`: {cal['target_text']}.",
        "",
        f"**Chosen** (`config.json`, label `{summary['config'].get('label')}`): {settings}.",
        "",
        cal["message"] + ".",
        "",
        "Every point tried on the calibration set (`*`: chosen; `s1`: the stage-1 choice when stage 2 is on top; "
        "visual kept = mean share of visual tokens entering the LLM; visual/layer = equivalent retention; meets = "
        "meets the target's bar):",
        "",
        markdown_table(rows, CURVE_COLUMNS),
    ]
    if heldout is not None:
        lines += [
            f"Held-out set: {heldout['dataset']}. Dense, the calibrated config, SharpV at fixed budgets (default "
            "settings) and SharpV's default adaptive mode (K = 1):",
            "",
            markdown_table(_flat(heldout["records"]), HELDOUT_COLUMNS),
            heldout["check"]["summary"],
            "",
        ]
    else:
        lines += ["No held-out set was evaluated.", ""]
    if summary.get("provenance"):
        from sharpv.harness.provenance import describe

        lines += [describe(summary["provenance"]) + ".", ""]
    return "\n".join(lines).lstrip("\n")


def run_calibrate_job(*, model_dir: Path | None, data: Path | None, seed: int, n: int, holdout: dict | None,
                      target: Target, spatial_weights: tuple[float, ...], kv_thresholds: tuple[float, ...] | None,
                      base_settings: dict, budgets: tuple[float, ...], frames: int | None, dtype: str, device: str,
                      max_new_tokens: int, refine: int, out: Path, console: Console) -> dict:
    """Run the calibration and write config.json, curve.json, accuracy_vs_kept_share.png,
    results.json and results.md under ``out``. ``holdout``: ``{"data": Path|None, "seed", "n"}`` or None."""
    from sharpv.methods import SharpV, create, write_config
    from sharpv.synthetic.model import describe_model, shipped_model_path

    from sharpv.harness.provenance import Clock, provenance

    clock = Clock()
    started = time.perf_counter()
    model_path = model_dir if model_dir is not None else shipped_model_path()
    model_name = describe_model(model_path)
    with console.status("loading the model and the calibration set", spinner="dots"):
        model, processor = load_model(model_path, dtype=dtype, device=device)
        examples, n_frames, source = load_examples(data, seed, n, frames, model, processor)

    def answer_all(progress: Progress, examples: list, prepared: list, method, spec: MethodSpec, budget, dense, text: str):
        task = progress.add_task(text, total=len(examples))
        rec = evaluate_prepared(model, processor, examples, prepared, method, spec=spec, budget=budget,
                                max_new_tokens=max_new_tokens, dense=dense,
                                on_step=lambda _label: progress.advance(task))
        progress.remove_task(task)
        return rec

    state = SearchState(out / STATE_FILE, {
        "model": str(model_path), "data": str(data) if data is not None else None,
        "seed": None if data is not None else seed, "n": None if data is not None else n, "frames": n_frames,
        "target": str(target), "spatial_weights": list(spatial_weights),
        "kv_thresholds": list(kv_thresholds) if kv_thresholds is not None else None, "refine": refine,
        "fixed_settings": base_settings, "dtype": dtype, "device": device, "max_new_tokens": max_new_tokens})
    resumed = state.load()
    earlier = {"points": len(state.points), "seconds": state.seconds} if resumed else None
    if resumed:
        console.print(f"resuming an interrupted calibration from {state.path}: dense and {len(state.points)} points "
                      "measured, answered from there", markup=False, highlight=False)
    with _progress(console) as progress:
        task = progress.add_task("encoding the calibration videos (once)", total=len(examples))
        prepared = prepare_videos(model, processor, examples, frames=n_frames, on_video=lambda: progress.advance(task))
        progress.remove_task(task)
        dense = state.dense
        if dense is None:
            tick = time.perf_counter()
            dense = answer_all(progress, examples, prepared, create("dense"), DENSE, None, None, "dense (once)")
            dense["accuracy_vs_dense"] = 1.0
            state.save(dense=dense, seconds=time.perf_counter() - tick)
        counter = {"n": 0}

        def evaluate(settings: dict) -> dict:
            counter["n"] += 1
            known = state.lookup(settings)
            if known is not None:  # measured before an interruption: the search replays it
                return known
            method = SharpV(**{**base_settings, **settings, "keep_ratio": None})
            tick = time.perf_counter()
            record = answer_all(progress, examples, prepared, method, MethodSpec("sharpv", "sharpv"), None, dense,
                                f"point {counter['n']}: {_describe(counter['phase'], settings)}")
            state.save(point=(settings, record), seconds=time.perf_counter() - tick)
            return record

        def on_start(phase: str, settings: dict) -> None:
            counter["phase"] = phase

        search = Search(evaluate, target, dense, spatial_weights=spatial_weights, kv_thresholds=kv_thresholds,
                        refine=refine, on_start=on_start)
        result = search.run()
    # wall time of the search; after an interruption, this run's plus what the earlier runs spent
    # answering (their loading and encoding are not counted)
    calibration_seconds = time.perf_counter() - started + (earlier["seconds"] if earlier else 0.0)

    rows = curve_rows(result)
    wide = Console(width=max(200, Console().width))
    wide.print(rich_table(rows, CURVE_COLUMNS, title=f"sharpv calibrate --target {target}: every point tried "
                                                         f"on {source} (dense {dense['accuracy']:.3f})"))
    settings = {**SharpV(**{**base_settings, **result.settings, "keep_ratio": None}).config.to_dict()}
    wide.print(f"chosen: {', '.join(f'{k}={v}' for k, v in result.settings.items())}", highlight=False)
    wide.print(result.message, highlight=False, soft_wrap=True)

    command = "sharpv calibrate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["calibrate"] else None
    calibration = {
        "target": str(target), "target_text": target.describe(), "met": result.met, "message": result.message,
        "model": model_name, "dataset": source, "n": dense["n"], "frames": n_frames,
        "dense_accuracy": dense["accuracy"], "accuracy": result.chosen.accuracy,
        "accuracy_vs_dense": result.chosen.accuracy / dense["accuracy"] if dense["accuracy"] else None,
        "kept_share": result.chosen.kept_share, "equivalent_retention": result.chosen.retention,
        "kv_share": result.chosen.record.get("kv_share"), "searched": dict(result.settings),
        "grid": {"spatial_weight": list(spatial_weights),
                 "kv_threshold": list(kv_thresholds) if kv_thresholds is not None else "off",
                 "ratio_scale": "geometric bracket from 1.0 (x2 / /2), then bisection", "refine": refine},
        "fixed_settings": base_settings, "points": len(result.trials), "seconds": round(calibration_seconds, 1),
        "resumed": earlier,
        "dtype": dtype, "device": device, "max_new_tokens": max_new_tokens,
        "sharpv": _version(), "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": command,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.json", "sharpv", settings, label=CALIBRATED_LABEL, calibration=calibration)
    write_json(out / "curve.json", {"target": str(target), "dense": _brief(dense), "chosen": result.chosen.index,
                                    "stage1_choice": result.stage1.index, "points": rows})
    plot_curve(result, out / "accuracy_vs_kept_share.png")

    heldout_out = None
    if holdout is not None:
        with console.status("loading the held-out set", spinner="dots"):
            h_examples, h_frames, h_source = load_examples(holdout.get("data"), holdout["seed"], holdout["n"], frames,
                                                           model, processor)
        runs: list[tuple[MethodSpec, Any, Any]] = [
            (DENSE, create("dense"), None),
            (MethodSpec(CALIBRATED_LABEL, "sharpv"), SharpV(**settings), None),
            *[(MethodSpec("sharpv", "sharpv"), SharpV(keep_ratio=b), b) for b in budgets],
            (MethodSpec("sharpv", "sharpv"), SharpV(), None),
        ]
        records = []
        with _progress(console) as progress:
            task = progress.add_task("encoding the held-out videos (once)", total=len(h_examples))
            h_prepared = prepare_videos(model, processor, h_examples, frames=h_frames,
                                        on_video=lambda: progress.advance(task))
            progress.remove_task(task)
            h_dense = None
            for spec, method, budget in runs:
                text = f"held out: {spec.label} @ {budget if budget is not None else 'adaptive' if spec.name != 'dense' else '-'}"
                rec = answer_all(progress, h_examples, h_prepared, method, spec, budget, h_dense, text)
                if h_dense is None:
                    h_dense = rec
                    rec["accuracy_vs_dense"] = 1.0
                records.append(rec)
        for rec, (_, method, _) in zip(records, runs):
            rec["settings"] = method.config.to_dict()
        check = heldout_check(target, records, CALIBRATED_LABEL)
        heldout_out = {"dataset": h_source, "n": len(h_examples), "frames": h_frames, "records": records, "check": check}
        wide.print(rich_table(_flat(records), HELDOUT_COLUMNS, title=f"held out: {h_source}"))
        wide.print(check["summary"], highlight=False, soft_wrap=True)

    summary = {"command": command, "config": json.loads((out / "config.json").read_text()),
               "calibration": calibration, "heldout": heldout_out,
               "seconds": round(time.perf_counter() - started, 1),
               "provenance": provenance(clock)}  # sharpv commit, package versions, wall time
    write_json(out / "results.json", summary)
    state.remove()
    (out / "results.md").write_text(results_markdown(summary, rows, heldout_out), encoding="utf-8")
    console.print(f"wrote {out}/config.json, curve.json, accuracy_vs_kept_share.png, results.json, results.md")
    return summary


def _brief(record: dict) -> dict:
    return {k: record.get(k) for k in ("accuracy", "correct", "n", "ci95", "accuracy_by_type", "prefill_seconds")}


def _version() -> str:
    from sharpv import __version__

    return __version__
