"""The `sharpv eval` job: pick the dataset and model, run the harness with progress, write results."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
from rich.console import Console

from sharpv.answer import load_model
from sharpv.harness.bench import MethodSpec, plan
from sharpv.harness.evaluate import EvalState, evaluate, load_jsonl, majority_rates, render_size, synthetic_examples, video_groups
from sharpv.harness.progress import JobProgress
from sharpv.harness.provenance import Clock, describe, provenance
from sharpv.harness.report import budget_share, markdown_table, plot_lines, rich_table, write_json

#: files `sharpv eval --out DIR` writes into DIR (the two plots only when there is something to draw)
EVAL_FILES = ("results.json", "results.md", "run.json", "predictions.jsonl", "accuracy_vs_kept_share.png",
              "evidence_vs_accuracy.png")


def eval_columns(records: list[dict]) -> list[tuple[str, str, str]]:
    types = list(records[0]["accuracy_by_type"]) if records else []
    cols = [("method", "method", "{}"), ("budget", "budget", "{}"), ("n", "n", "{}"),
            ("accuracy", "accuracy", "{:.3f}"), ("ci95_text", "95% CI", "{}")]
    if len(types) > 1:
        cols += [(f"type:{t}", t, "{:.3f}") for t in types]
    cols += [("kept_share", "visual kept", "{:.3f}"), ("equivalent_retention", "visual/layer", "{:.3f}"),
             ("kv_share", "KV share", "{:.3f}"), ("flops_share", "FLOPs share", "{:.3f}")]
    if any(r.get("evidence_recall") is not None for r in records):
        cols += [("evidence_recall", "evidence kept", "{:.3f}"), ("evidence_frame_recall", "evidence frames", "{:.3f}")]
    cols += [("prefill_ms", "prefill ms", "{:.1f}"), ("prefill_speedup", "speedup", "{:.2f}x")]
    if any(r.get("vs_sharpv") is not None for r in records):
        cols.insert(5, ("vs_sharpv_text", "vs sharpv [paired 95% CI]", "{}"))
    return cols


def difference_text(record: dict) -> str | None:
    """``+0.047 [+0.028, +0.065]``: a record's paired difference to SharpV, or None without one."""
    if record.get("vs_sharpv") is None:
        return None
    low, high = record["vs_sharpv_ci95"]
    return f"{record['vs_sharpv']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _flat(records: list[dict]) -> list[dict]:
    """Records with the nested fields spread out for the tables."""
    out = []
    for r in records:
        flat = dict(r, ci95_text=f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}", prefill_ms=r["prefill_seconds"] * 1e3,
                    vs_sharpv_text=difference_text(r))
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


def _report_text(env: dict) -> str:
    return (f"Model: {env['model']}; dataset: {env['dataset']}; dtype {env['dtype']}; device {env['device']}. Accuracy with "
            "Wilson 95% intervals; visual kept = share of visual tokens entering the LLM; visual/layer = mean share of "
            "visual tokens per LLM layer (equivalent retention); KV share = KV cache bytes after prefill over dense; "
            "FLOPs share = analytic LLM prefill FLOPs over dense (vision tower excluded; FastV's score pass included); "
            "evidence kept = share of the cells showing the question's objects that entered the LLM (evidence frames: "
            "share of the frames showing them with at least one such cell kept); prefill = mean prefill time per "
            "question (generate()'s first forward; where several questions share a video, its pruned prefix is "
            "prefilled once per method and that time is spread over them)."
            + (f" {describe(env['provenance'])}." if env.get("provenance") else "") + "\n\n")


def model_names(records: list[dict]) -> list[str]:
    """The models of a several-model run, in run order ([] for a one-model run: no ``model`` field)."""
    return list(dict.fromkeys(r["model"] for r in records if "model" in r))


def compute_share(record: dict) -> float:
    """Where a record sits on the accuracy plot's x axis: its equivalent retention (the mean share
    of visual tokens per LLM layer), so an in-LLM method that keeps every token in its first layers
    (FastV at budget 0.2 computes about 60%) is not drawn next to pre-LLM methods at 0.2."""
    value = record.get("equivalent_retention")
    return value if value is not None else budget_share(record)


def comparison_table(records: list[dict], names: list[str], reference: str = "sharpv") -> str:
    """Markdown for a several-model run: each method x budget's accuracy under every model, its
    difference to ``reference`` (SharpV) at the same budget under each (with its paired 95%
    interval where the records carry one), and whether that order is the same under every model:
    "flips" where the sign differs and every interval excludes 0, "flips, within noise" where the
    sign differs but an interval includes 0. '' without the reference."""
    by_key = {(r["model"], r["method"], r["budget"]): r for r in records}
    keys = list(dict.fromkeys((r["method"], r["budget"]) for r in records))
    if not any(method == reference for method, _ in keys):
        return ""
    rows = []
    for method, budget in keys:
        row = {"method": method, "budget": budget if budget is not None else "-" if method == "dense" else "adaptive"}
        deltas, clear = [], []
        for name in names:
            rec, ref = by_key.get((name, method, budget)), by_key.get((name, reference, budget))
            row[f"acc:{name}"] = rec["accuracy"] if rec else None
            # fixed budgets only: dense and adaptive runs keep different shares, so no order is read there
            delta = None
            if rec and ref and method != reference and budget is not None:
                delta = rec["accuracy"] - ref["accuracy"]
                row[f"delta:{name}"] = difference_text(rec) or f"{delta:+.3f}"
                interval = rec.get("vs_sharpv_ci95")
                clear.append(interval is None or interval[0] > 0 or interval[1] < 0)
            deltas.append(delta)
        if method != reference and all(d is not None for d in deltas):
            signs = {(d > 0) - (d < 0) for d in deltas}
            row["order"] = "same" if not {-1, 1} <= signs else "flips" if all(clear) else "flips, within noise"
        rows.append(row)
    cols = [("method", "method", "{}"), ("budget", "budget", "{}")]
    cols += [(f"acc:{n}", f"accuracy ({n})", "{:.3f}") for n in names]
    cols += [(f"delta:{n}", f"vs {reference} ({n})", "{}") for n in names]
    cols += [("order", f"order vs {reference}", "{}")]
    return markdown_table(rows, cols)


def write_eval_report(out: Path, records: list[dict], env: dict) -> None:
    """results.md and the plots of an eval run (also for re-rendering a committed results.json).

    Records with a ``model`` field (a several-model run): one table per model in results.md and
    one panel per model (same axes, each with its own dense line) in the plots."""
    names = model_names(records)
    if not names:
        cols = eval_columns(records)
        text = _report_text(env) + markdown_table(_flat(records), cols)
        evidence = evidence_table(records)
        if evidence:
            text += "\nEvidence kept per question type:\n\n" + evidence
    else:
        text = _report_text(env)
        for name in names:
            mine = [r for r in records if r["model"] == name]
            text += f"## Model: {name}\n\n" + markdown_table(_flat(mine), eval_columns(mine))
            evidence = evidence_table(mine)
            if evidence:
                text += "\nEvidence kept per question type:\n\n" + evidence
            text += "\n"
        compared = comparison_table(records, names)
        if compared:
            text += ("## Models compared\n\nAccuracy under each model and the difference to SharpV at the same "
                     "fixed budget (paired bootstrap 95% interval over the same questions in brackets); \"flips\": "
                     "SharpV is ahead under one model and behind under another, \"within noise\" where one of "
                     "those intervals includes 0.\n\n" + compared)
    (out / "results.md").write_text(text)
    if names:
        dense = {name: next(r["accuracy"] for r in records if r["model"] == name and r["method_name"] == "dense")
                 for name in names}
        panel, dense_text = "model", "dashed: each model's dense"
    else:
        dense = records[0]["accuracy"]
        panel, dense_text = None, f"dashed: dense, {dense:.3f}"
    pruned = [r for r in records if r["method_name"] != "dense"]
    if pruned:
        plot_lines(pruned, compute_share, "accuracy", out / "accuracy_vs_kept_share.png",
                   title=f"Accuracy against the visual tokens each LLM layer computes ({dense_text})",
                   xlabel="mean share of visual tokens per LLM layer (equivalent retention: the budget for pre-LLM "
                          "methods,\nadaptive at its mean share; in-LLM methods such as FastV at what their layers compute)",
                   ylabel="accuracy", panel=panel, panels=names or None, reference=dense, sharex=bool(names))
    with_evidence = [r for r in pruned if r.get("evidence_recall") is not None]
    if with_evidence:
        plot_lines(with_evidence, "evidence_recall", "accuracy", out / "evidence_vs_accuracy.png",
                   title="Accuracy against evidence kept (one point per budget)",
                   xlabel="share of the question's object cells entering the LLM", ylabel="accuracy", panel=panel,
                   panels=[m for m in names if any(r["model"] == m for r in with_evidence)] or None,
                   reference=dense, sharex=bool(names))


def _run_one(model_path: Path, *, data: Path | None, seed: int, n: int, frames: int | None, specs: list[MethodSpec],
             budgets: list[float | None], dtype: str, device: str, max_new_tokens: int, keep_predictions: bool,
             console: Console, label: str | None = None, state_path: Path | None = None):
    from sharpv.answer import default_frames
    from sharpv.synthetic.model import FRAMES, HELDOUT_SEED

    with console.status("loading the model and the dataset" + (f" ({label})" if label else ""), spinner="dots"):
        model, processor = load_model(model_path, dtype=dtype, device=device)
        if data is not None:
            examples = load_jsonl(data)
            n_frames = frames or default_frames(model, processor)
            source = str(data)
        else:
            n_frames = frames or FRAMES
            size = render_size(model)
            examples = synthetic_examples(seed, n, frames=n_frames, size=size)
            kind = "held-out set" if seed == HELDOUT_SEED else "set"
            source = f"synthetic {kind} (seed {seed}, n {n}, {n_frames} frames rendered in memory at {size} px)"
    total = len(plan(specs, budgets)) * len(examples)
    with JobProgress(console) as progress:
        task = progress.add_task("eval", total=total)

        def step(text: str) -> None:
            progress.update(task, description=f"{label}: {text}" if label else text)
            progress.advance(task)

        state = None
        if state_path is not None:
            fingerprint = {"model": str(model_path), "data": str(data) if data is not None else None,
                           "seed": None if data is not None else seed, "n": None if data is not None else n,
                           "frames": n_frames, "methods": [[sp.label, sp.name, sp.settings, sp.fixed] for sp in specs],
                           "budgets": budgets, "dtype": dtype, "device": device, "max_new_tokens": max_new_tokens}
            state = EvalState(state_path, fingerprint)

        def resumed(done: int, total_groups: int) -> None:
            console.print(f"resuming an interrupted run from {state_path}: {done} of {total_groups} videos done",
                          markup=False, highlight=False)

        records = evaluate(model, processor, examples, specs, budgets, frames=n_frames,
                           max_new_tokens=max_new_tokens, on_step=step, keep_predictions=keep_predictions,
                           state=state, on_resume=resumed)
    del model
    return records, examples, n_frames, source, state.history() if state is not None else None


def state_file(out: Path, index: int) -> Path:
    """Where an ``--out`` run keeps the state of its ``index``-th model while it runs
    (:class:`~sharpv.harness.evaluate.EvalState`): rerunning the same command after an interruption
    continues from it; ``--overwrite`` discards it."""
    return out / (".eval_state.json" if index == 0 else f".eval_state.{index}.json")


def run_eval_job(*, models: list[tuple[str, Path]], data: Path | None, seed: int, n: int, frames: int | None,
                 specs: list[MethodSpec], budgets: list[float | None], dtype: str, device: str,
                 max_new_tokens: int, out: Path | None, console: Console) -> list[dict]:
    """Score every method x budget with each of ``models`` ((label, checkpoint folder) pairs, as
    :func:`sharpv.cli_values.resolve_models` gives them). With more than one, every record and
    prediction gets a ``model`` field (the label) and the tables and plots are split per model."""
    from sharpv.synthetic.model import describe_model

    clock = Clock()
    several = len(models) > 1
    records, predictions, per_model = [], [], []
    for label, model_path in models:
        mine, examples, n_frames, source, history = _run_one(
            model_path, data=data, seed=seed, n=n, frames=frames, specs=specs, budgets=budgets, dtype=dtype,
            device=device, max_new_tokens=max_new_tokens, keep_predictions=out is not None, console=console,
            label=label if several else None, state_path=state_file(out, len(per_model)) if out is not None else None)
        tag = dict(model=label) if several else {}
        predictions += [dict(p, **tag, method=r["method"], budget=r["budget"]) for r in mine for p in r.pop("predictions", [])]
        records += [dict(tag, **r) for r in mine]
        described = describe_model(model_path)
        per_model.append(dict(model=label, described=described, frames=n_frames, history=history))
        title = f"sharpv eval: {described} on {source}"
        Console(width=max(200, Console().width)).print(rich_table(_flat(mine), eval_columns(mine), title=title))
    majority = majority_rates(examples)
    shared = sum(len(g) for g in video_groups(examples) if len(g) > 1)  # questions that share a video's prefill
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", records)
        (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions), encoding="utf-8")
        frames_used = {m["frames"] for m in per_model}
        env = dict(model=", ".join(m["described"] for m in per_model),
                   dataset=source, majority_by_type=majority,
                   frames=per_model[0]["frames"] if len(frames_used) == 1 else {m["model"]: m["frames"] for m in per_model},
                   questions_sharing_a_video=shared,
                   dtype=dtype, device=device, max_new_tokens=max_new_tokens,
                   torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                   command="sharpv eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else None)
        if several:
            env["models"] = [dict(model=m["model"], checkpoint=m["described"], frames=m["frames"]) for m in per_model]
        env["provenance"] = provenance(clock)  # sharpv commit, package versions, wall time of this run
        resumed = [dict(model=m["model"], **m["history"]) if several else m["history"]
                   for m in per_model if m["history"] is not None]
        if resumed:  # finished across several runs: what the earlier ones ran and spent
            env["provenance"]["resumed"] = resumed
        write_json(out / "run.json", env)
        write_eval_report(out, records, env)
        for k in range(len(models)):  # finished: the states of the interrupted runs are no longer needed
            state_file(out, k).unlink(missing_ok=True)
        console.print(f"wrote {out}/results.json, results.md, run.json, predictions.jsonl, accuracy_vs_kept_share.png"
                      + (", evidence_vs_accuracy.png" if (out / "evidence_vs_accuracy.png").exists() else ""))
    return records
