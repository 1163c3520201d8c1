"""The `sharpv bench` job: load or build the model, run the harness with progress, write results."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sharpv.answer import DTYPES, load_model
from sharpv.bench import MethodSpec, environment, plan, run_bench
from sharpv.report import BENCH_COLUMNS, budget_share, markdown_table, plot_lines, rich_table, write_json
from sharpv.shapes import build_shape_model, synthetic_inputs


def write_bench_plots(records: list[dict], out: Path) -> None:
    """Prefill speedup and KV bytes against the budget (adaptive runs at the share they kept)."""
    plot_lines(records, budget_share, "prefill_speedup", out / "prefill_speedup.png", title="LLM prefill speedup over dense",
               xlabel="budget: share of visual tokens kept", ylabel="dense / method", reference=1.0)
    plot_lines(records, budget_share, "kv_ratio", out / "kv_bytes.png", title="KV cache bytes after prefill",
               xlabel="budget: share of visual tokens kept", ylabel="method / dense", reference=1.0)


def run_bench_job(*, model_dir: Path | None, shape: str | None, frames: list[int], tokens_per_frame: int,
                  specs: list[MethodSpec], budgets: list[float | None], dtype: str, device: str, vision: str,
                  repeats: int, warmup: int, new_tokens: int, noise: float, out: Path | None,
                  console: Console) -> list[dict]:
    with console.status("building the model", spinner="dots"):
        if shape is not None:
            model = build_shape_model(shape, tokens_per_frame, dtype=DTYPES[dtype], device=device)
            source = f"shape {shape} (random weights)"
        else:
            model, _ = load_model(model_dir, dtype=dtype, device=device)
            source = str(model_dir)
    if model_dir is not None:
        from sharpv.adapters import adapter_for

        adapter = adapter_for(model)
        tokens_per_frame = getattr(adapter, "tokens_per_frame", tokens_per_frame)

    def make_inputs(n_frames: int) -> dict:
        return synthetic_inputs(model, n_frames, tokens_per_frame, vision=vision, noise=noise)

    total = len(plan(specs, budgets)) * len(frames)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("bench", total=total)

        def step(label: str) -> None:
            done = progress.tasks[0].completed
            if done or progress.tasks[0].description != "bench":
                progress.advance(task)
            progress.update(task, description=label)

        records = run_bench(model, make_inputs, methods=specs, budgets=budgets, frames=frames, repeats=repeats,
                            warmup=warmup, new_tokens=new_tokens, on_step=step)
        progress.advance(task)
    env = environment(model, dtype=dtype, device=device, source=source, vision=vision, noise=noise)
    env.update(tokens_per_frame=tokens_per_frame, repeats=repeats, warmup=warmup, new_tokens=new_tokens)
    Console(width=max(160, Console().width)).print(
        rich_table(records, BENCH_COLUMNS, title=f"sharpv bench: {source}, {dtype}, {device}, vision {vision}")
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", {"environment": env, "records": records})
        (out / "results.md").write_text(
            f"Model: {source}; dtype {dtype}; device {device}; vision {vision}; "
            f"medians of {repeats} runs after {warmup} warm-up.\n\n" + markdown_table(records, BENCH_COLUMNS)
        )
        pruned = [r for r in records if r["method_name"] != "dense"]
        write_bench_plots(pruned, out)
        console.print(f"wrote {out}/results.json, results.md, prefill_speedup.png, kv_bytes.png")
    return records
