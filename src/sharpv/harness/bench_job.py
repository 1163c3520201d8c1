"""The `sharpv bench` job: load or build the model, run the harness with progress, write results."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sharpv.answer import DTYPES, load_model
from sharpv.harness.bench import DEFAULT_SEED, NOISE_THRESHOLD, MethodSpec, environment, plan, run_bench
from sharpv.harness.progress import JobProgress
from sharpv.harness.provenance import Clock, describe, provenance
from sharpv.harness.report import BENCH_COLUMNS, budget_share, markdown_table, plot_lines, rich_table, write_json
from sharpv.harness.rounds import load_average
from sharpv.shapes import build_shape_model, synthetic_inputs

#: files `sharpv bench --out DIR` writes into DIR
BENCH_FILES = ("results.json", "results.md", "prefill_speedup.png", "kv_bytes.png")
#: files `sharpv bench --long-video --out DIR` writes into DIR
LONG_VIDEO_FILES = ("results.json", "results.md", "long_video.png")


def write_bench_plots(records: list[dict], out: Path) -> None:
    """Prefill speedup (median over the rounds, error bars: min-max) and KV bytes against the budget
    (adaptive runs at the share they kept)."""
    plot_lines(records, budget_share, "prefill_speedup", out / "prefill_speedup.png",
               title="LLM prefill speedup over dense (median over rounds, bars: min-max)",
               xlabel="budget: share of visual tokens kept", ylabel="dense / method (log scale)", reference=1.0, logy=True,
               errors=True)
    plot_lines(records, budget_share, "kv_ratio", out / "kv_bytes.png", title="KV cache bytes after prefill",
               xlabel="budget: share of visual tokens kept", ylabel="method / dense", reference=1.0)


def run_bench_job(*, model_dir: Path | None, shape: str | None, frames: list[int], tokens_per_frame: int,
                  specs: list[MethodSpec], budgets: list[float | None], dtype: str, device: str, vision: str,
                  repeats: int, warmup: int, new_tokens: int, noise: float, out: Path | None,
                  console: Console, seed: int = DEFAULT_SEED, sdpa_kernel: str = "auto", video: Path | None = None,
                  question: str = "Describe the video.") -> list[dict]:
    clock = Clock()
    with console.status("building the model", spinner="dots"):
        if shape is not None:
            model = build_shape_model(shape, tokens_per_frame, dtype=DTYPES[dtype], device=device)
            source = f"shape {shape} (random weights)"
        else:
            model, processor = load_model(model_dir, dtype=dtype, device=device)
            source = str(model_dir)
    if model_dir is not None:
        from sharpv.adapters import adapter_for

        adapter = adapter_for(model)
        tokens_per_frame = getattr(adapter, "tokens_per_frame", tokens_per_frame)

    def make_inputs(n_frames: int) -> dict:
        if video is not None:  # real frames through the processor and the vision tower
            from sharpv.answer import inputs_on
            from sharpv.video import build_inputs, read_video_for

            return inputs_on(model, build_inputs(processor, question, read_video_for(processor, video, n_frames)))
        return synthetic_inputs(model, n_frames, tokens_per_frame, vision=vision, noise=noise)

    what = f"real, frames of {video}" if video is not None else vision
    load_before = load_average()
    with JobProgress(console, remaining=False) as progress:
        task = progress.add_task("bench", total=len(plan(specs, budgets)) * len(frames) * (warmup + repeats))

        def step(label: str) -> None:
            done = progress.tasks[0].completed
            if done or progress.tasks[0].description != "bench":
                progress.advance(task)
            progress.update(task, description=label)

        def total(n: int) -> None:
            progress.update(task, total=n)

        records, rounds = run_bench(model, make_inputs, methods=specs, budgets=budgets, frames=frames, repeats=repeats,
                                    warmup=warmup, new_tokens=new_tokens, on_step=step, seed=seed, on_total=total,
                                    sdpa_kernel=sdpa_kernel)
        progress.advance(task)
    env = environment(model, dtype=dtype, device=device, source=source, vision=vision, noise=noise)
    if video is not None:
        env.update(video=str(video), question=question)
    env.update(tokens_per_frame=tokens_per_frame, repeats=repeats, warmup=warmup, new_tokens=new_tokens, seed=seed,
               noise_threshold=NOISE_THRESHOLD, load_average_before=load_before, load_average_after=load_average(),
               sdpa_kernel=sdpa_kernel)
    notes = bench_notes(records, env)
    Console(width=max(200, Console().width)).print(
        rich_table(records, BENCH_COLUMNS, title=f"sharpv bench: {source}, {dtype}, {device}, vision {what}")
    )
    for line in notes:
        console.print(line, markup=False, highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        origin = provenance(clock)  # sharpv commit, package versions, wall time
        write_json(out / "results.json", {"environment": env, "provenance": origin, "rounds": rounds, "records": records})
        (out / "results.md").write_text(
            f"Model: {source}; dtype {dtype}; device {device}; vision {what}; {method_line(env)} {describe(origin)}."
            "\n\n"
            + markdown_table(records, BENCH_COLUMNS) + "".join(f"\n- {line}" for line in notes) + ("\n" if notes else "")
        )
        pruned = [r for r in records if r["method_name"] != "dense"]
        write_bench_plots(pruned, out)
        console.print(f"wrote {out}/results.json, results.md, prefill_speedup.png, kv_bytes.png")
    return records


def kernel_line(env: dict) -> str:
    """The attention implementation and the SDPA kernel(s) the run allowed, for results.md."""
    kernel = env.get("sdpa_kernel", "auto")
    allowed = "PyTorch's choice per call" if kernel == "auto" else f"{kernel} only"
    return f"attention {env.get('attn_implementation')}, SDPA kernel {kernel} ({allowed})"


def method_line(env: dict) -> str:
    """How the figures were taken, for results.md."""
    load = lambda v: "/".join(f"{x:.2f}" for x in v) if v else "unknown"  # noqa: E731
    rounds = env["repeats"]
    return (f"{kernel_line(env)}; {rounds} timed round{'s' if rounds != 1 else ''} after {env['warmup']} warm-up round"
            f"{'s' if env['warmup'] != 1 else ''}, each running every cell (dense and the ideal rows included) once in "
            f"an order shuffled per round (seed {env['seed']}); every ratio taken within a round; figures: median "
            f"[min-max] over the rounds; {env.get('threads')} torch threads; load average (1/5/15 min) "
            f"{load(env.get('load_average_before'))} before, {load(env.get('load_average_after'))} after.")


def bench_notes(records: list[dict], env: dict) -> list[str]:
    """One line per noise flag (see :func:`sharpv.harness.bench.flag_noise`), or why there are none."""
    from sharpv.harness.bench import flag_noise

    if env["repeats"] < 2:
        return ["one timed round: no spread, so nothing can be told from noise (use --repeats 5 or more)"]
    return flag_noise(records, env.get("noise_threshold", NOISE_THRESHOLD))


def write_long_video_results(result: dict, out: Path) -> None:
    """results.json (every record, the environment, the settings and the summary), results.md and
    long_video.png under ``out``."""
    from sharpv.harness.report import long_video_markdown, plot_long_video

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    (out / "results.md").write_text(long_video_markdown(result))
    plot_long_video(result, out / "long_video.png")


def run_long_video_job(*, model_dir: Path | None, shape: str | None, frames: list[int], modes: list[str],
                       tokens_per_frame: int, chunk_frames: int, dtype: str, device: str, noise: float, warmup: int,
                       max_seconds: float | None, max_memory_bytes: int | None, out: Path | None,
                       console: Console, vision_layers: int | None = None) -> dict:
    """`sharpv bench --long-video`: every (frames, mode) in a fresh process under the caps."""
    from sharpv.harness.long_video import run_long_video
    from sharpv.harness.report import LONG_VIDEO_COLUMNS

    with console.status("long-video bench", spinner="dots") as status:
        def step(label: str) -> None:
            status.update(label)

        def done(record: dict) -> None:
            what = "ok" if record["status"] == "ok" else f"{record['status']}: {record['reason']}"
            ttft = f", TTFT {record['ttft_seconds']:.2f} s" if record.get("ttft_seconds") is not None else ""
            console.print(f"[dim]{record['frames']} frames, {record['mode']}: {what}{ttft}[/dim]")

        result = run_long_video(model_dir=model_dir, shape=shape, frames=frames, modes=modes,
                                tokens_per_frame=tokens_per_frame, chunk_frames=chunk_frames, dtype=dtype, device=device,
                                noise=noise, warmup=warmup, max_seconds=max_seconds, max_memory_bytes=max_memory_bytes,
                                vision_layers=vision_layers, on_step=step, on_record=done)
    from sharpv.harness.report import long_video_rows

    Console(width=max(200, Console().width)).print(
        rich_table(long_video_rows(result["records"]), LONG_VIDEO_COLUMNS,
                   title=f"sharpv bench --long-video: {result['environment'].get('model')}, {dtype}, {device}")
    )
    if out is not None:
        write_long_video_results(result, out)
        console.print(f"wrote {out}/results.json, results.md, long_video.png")
    return result
