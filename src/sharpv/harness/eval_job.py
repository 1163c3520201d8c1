"""The `sharpv eval` job: pick the dataset and model, run the harness with progress, write results."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sharpv.answer import load_model
from sharpv.harness.bench import MethodSpec, plan
from sharpv.harness.evaluate import evaluate, load_jsonl, majority_rates, synthetic_examples, video_groups
from sharpv.harness.report import budget_share, markdown_table, plot_lines, rich_table, write_json


def eval_columns(records: list[dict]) -> list[tuple[str, str, str]]:
    types = list(records[0]["accuracy_by_type"]) if records else []
    cols = [("method", "method", "{}"), ("budget", "budget", "{}"), ("n", "n", "{}"),
            ("accuracy", "accuracy", "{:.3f}"), ("ci95_text", "95% CI", "{}")]
    if len(types) > 1:
        cols += [(f"type:{t}", t, "{:.3f}") for t in types]
    cols += [("kept_share", "visual kept", "{:.3f}"), ("equivalent_retention", "visual/layer", "{:.3f}"),
             ("kv_share", "KV share", "{:.3f}")]
    if any(r.get("evidence_recall") is not None for r in records):
        cols += [("evidence_recall", "evidence kept", "{:.3f}"), ("evidence_frame_recall", "evidence frames", "{:.3f}")]
    cols += [("prefill_ms", "prefill ms", "{:.1f}"), ("prefill_speedup", "speedup", "{:.2f}x")]
    return cols


def _flat(records: list[dict]) -> list[dict]:
    """Records with the nested fields spread out for the tables."""
    out = []
    for r in records:
        flat = dict(r, ci95_text=f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}", prefill_ms=r["prefill_seconds"] * 1e3)
        flat.update({f"type:{t}": v for t, v in r["accuracy_by_type"].items()})
        out.append(flat)
    return out


def evidence_table(records: list[dict]) -> str:
    """Markdown: evidence recall per question type (rows: method x budget), or '' without evidence."""
    rows = [r for r in records if r.get("evidence_recall_by_type")]
    if not rows:
        return ""
    types = list(rows[0]["evidence_recall_by_type"])
    flat = [dict(r, **{f"ev:{t}": v for t, v in r["evidence_recall_by_type"].items()}) for r in rows]
    cols = [("method", "method", "{}"), ("budget", "budget", "{}"), ("evidence_recall", "evidence kept", "{:.3f}"),
            ("evidence_frame_recall", "evidence frames", "{:.3f}")] + [(f"ev:{t}", t, "{:.3f}") for t in types]
    return markdown_table(flat, cols)


def write_eval_report(out: Path, records: list[dict], env: dict) -> None:
    """results.md and the plots of an eval run (also for re-rendering a committed results.json)."""
    cols = eval_columns(records)
    text = (f"Model: {env['model']}; dataset: {env['dataset']}; dtype {env['dtype']}; device {env['device']}. Accuracy with "
            "Wilson 95% intervals; visual kept = share of visual tokens entering the LLM; visual/layer = mean share of "
            "visual tokens per LLM layer (equivalent retention); KV share = KV cache bytes after prefill over dense; "
            "evidence kept = share of the cells showing the question's objects that entered the LLM (evidence frames: "
            "share of the frames showing them with at least one such cell kept); prefill = mean prefill time per "
            "question (generate()'s first forward; where several questions share a video, its pruned prefix is "
            "prefilled once per method and that time is spread over them).\n\n" + markdown_table(_flat(records), cols))
    evidence = evidence_table(records)
    if evidence:
        text += "\nEvidence kept per question type:\n\n" + evidence
    (out / "results.md").write_text(text)
    dense = records[0]["accuracy"]
    pruned = [r for r in records if r["method_name"] != "dense"]
    if pruned:
        plot_lines(pruned, budget_share, "accuracy", out / "accuracy_vs_kept_share.png",
                   title=f"Accuracy against visual tokens kept (dashed: dense, {dense:.3f})",
                   xlabel="share of visual tokens entering the LLM (budget; adaptive at its mean share)",
                   ylabel="accuracy", panel=None, reference=dense)
    with_evidence = [r for r in pruned if r.get("evidence_recall") is not None]
    if with_evidence:
        plot_lines(with_evidence, "evidence_recall", "accuracy", out / "evidence_vs_accuracy.png",
                   title="Accuracy against evidence kept (one point per budget)",
                   xlabel="share of the question's object cells entering the LLM", ylabel="accuracy", panel=None,
                   reference=dense)


def run_eval_job(*, model_dir: Path | None, data: Path | None, seed: int, n: int, frames: int | None,
                 specs: list[MethodSpec], budgets: list[float | None], dtype: str, device: str,
                 max_new_tokens: int, out: Path | None, console: Console) -> list[dict]:
    from sharpv.answer import default_frames
    from sharpv.synthetic.model import FRAMES, HELDOUT_SEED, shipped_model_path

    model_path = model_dir if model_dir is not None else shipped_model_path()
    with console.status("loading the model and the dataset", spinner="dots"):
        model, processor = load_model(model_path, dtype=dtype, device=device)
        if data is not None:
            examples = load_jsonl(data)
            n_frames = frames or default_frames(model, processor)
            source = str(data)
        else:
            n_frames = frames or FRAMES
            examples = synthetic_examples(seed, n, frames=n_frames)
            kind = "held-out set" if seed == HELDOUT_SEED else "set"
            source = f"synthetic {kind} (seed {seed}, n {n}, {n_frames} frames rendered in memory)"
    total = len(plan(specs, budgets)) * len(examples)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("eval", total=total)

        def step(label: str) -> None:
            progress.update(task, description=label)
            progress.advance(task)

        records = evaluate(model, processor, examples, specs, budgets, frames=n_frames,
                           max_new_tokens=max_new_tokens, on_step=step, keep_predictions=out is not None)
    predictions = [dict(p, method=r["method"], budget=r["budget"]) for r in records for p in r.pop("predictions", [])]
    majority = majority_rates(examples)
    shared = sum(len(g) for g in video_groups(examples) if len(g) > 1)  # questions that share a video's prefill
    cols = eval_columns(records)
    title = f"sharpv eval: {model_path.name if model_dir is None else model_path} on {source}"
    Console(width=max(200, Console().width)).print(rich_table(_flat(records), cols, title=title))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", records)
        (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions), encoding="utf-8")
        env = dict(model=str(model_dir) if model_dir is not None else "shipped synthetic-qa model",
                   dataset=source, majority_by_type=majority, frames=n_frames, questions_sharing_a_video=shared,
                   dtype=dtype, device=device, max_new_tokens=max_new_tokens,
                   torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                   command="sharpv eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else None)
        write_json(out / "run.json", env)
        write_eval_report(out, records, env)
        console.print(f"wrote {out}/results.json, results.md, run.json, predictions.jsonl, accuracy_vs_kept_share.png"
                      + (", evidence_vs_accuracy.png" if (out / "evidence_vs_accuracy.png").exists() else ""))
    return records
