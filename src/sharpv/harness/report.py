"""Writing results: JSON, a Markdown table, PNG plots and a rich terminal table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

Column = tuple[str, str, str]  # (record key, header, format)

BENCH_COLUMNS: list[Column] = [
    ("frames", "frames", "{}"),
    ("method", "method", "{}"),
    ("budget", "budget", "{}"),
    ("visual_tokens_kept", "visual kept", "{}"),
    ("equivalent_retention", "visual/layer", "{:.3f}"),
    ("prefill_seconds", "prefill s", "{:.3f}"),
    ("prefill_speedup", "speedup", "{:.2f}x"),
    ("prefill_vs_ideal", "vs ideal", "{:.2f}x"),
    ("ttft_seconds", "TTFT s", "{:.3f}"),
    ("pruning_seconds", "pruning ms", "{:.2f}"),
    ("decode_tokens_per_second", "decode tok/s", "{:.1f}"),
    ("kv_cache_bytes", "KV MiB", "{:.1f}"),
    ("kv_ratio", "KV ratio", "{:.3f}"),
    ("peak_memory_bytes", "peak MiB", "{:.0f}"),
    ("prefill_flops", "TFLOPs", "{:.2f}"),
    ("flag", "flag", "{}"),
]
#: bench columns shown as ``median [min-max]`` over the rounds (the record's ``spread``)
SPREAD_KEYS = ("prefill_seconds", "prefill_speedup", "prefill_vs_ideal", "ttft_seconds")

_SCALE = {"pruning_seconds": 1e3, "kv_cache_bytes": 1 / 2**20, "peak_memory_bytes": 1 / 2**20, "prefill_flops": 1e-12}


def cell(record: dict, key: str, fmt: str) -> str:
    value = record.get(key)
    if value is None:
        return "adaptive" if key == "budget" and record.get("method_name") not in (None, "dense") else "-"
    from sharpv.harness.rounds import with_spread

    # median [min-max] over the rounds; one round: the value alone
    spread = (record.get("spread") or {}).get(key) if key in SPREAD_KEYS else None
    return with_spread(fmt, value, spread, _SCALE.get(key, 1))


def markdown_table(records: Sequence[dict], columns: Sequence[Column]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in records:
        lines.append("| " + " | ".join(cell(r, k, f) for k, _, f in columns) + " |")
    return "\n".join(lines) + "\n"


def rich_table(records: Sequence[dict], columns: Sequence[Column], title: str):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for _, header, _ in columns:
        table.add_column(header, justify="right" if header not in ("method",) else "left")
    for r in records:  # cells are text, never markup (a label such as "sharpv[calibrated]" stays whole)
        table.add_row(*(escape(cell(r, k, f)) for k, _, f in columns))
    return table


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str))


def write_json_atomic(path: Path, payload: Any) -> None:
    """``payload`` as compact JSON, written to a temporary file beside ``path`` and moved into place,
    so a process killed while writing leaves the previous file whole (resumable states, results a
    worker hands back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    tmp.replace(path)


def budget_share(record: dict) -> float:
    """Where a record sits on a budget axis: its budget, or the share it kept when adaptive."""
    return record["budget"] if record.get("budget") is not None else record["kept_share"]


def _span(record: dict, key: str) -> tuple[float, float]:
    """[min, max] of ``key`` over the rounds (the value itself when the record has no spread)."""
    lo, hi = (record.get("spread") or {}).get(key) or (record[key], record[key])
    return lo, hi


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8")
LINESTYLES = ("-", "--", "-.", ":")


def plot_lines(records: Sequence[dict], x: str | Callable[[dict], float], y: str, path: Path, *, title: str,
               xlabel: str, ylabel: str, group: str = "method", panel: str | None = "frames",
               reference: float | dict | None = None, logy: bool = False, panels: Sequence | None = None,
               sharex: bool = False, errors: bool = False) -> None:
    """One PNG: ``y`` against ``x`` (a key or a function of a record), a line per ``group``, a
    panel per ``panel`` value (sorted, or in the order of ``panels``). One title (panels are
    labelled by their value only); every line has its own marker and dash, and lines drawn earlier
    are wider, so one that lies exactly on another still shows around it; ``logy`` for values that
    span orders of magnitude. ``reference``: a dashed horizontal line, one value for every panel or
    a dict panel value -> value; ``sharex``: the panels share the x axis too (the y axis always);
    ``errors``: error bars from each record's ``spread[y]`` ([min, max] over the bench's rounds)."""
    xof = x if callable(x) else (lambda r: r[x])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if panels is None:
        panels = sorted({r[panel] for r in records}) if panel else [None]
    groups = list(dict.fromkeys(r[group] for r in records))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False, sharey=True,
                             sharex=sharex)
    for ax, value in zip(axes[0], panels):
        subset = [r for r in records if panel is None or r[panel] == value]
        for i, name in enumerate(groups):
            points = sorted((xof(r), r[y], _span(r, y)) for r in subset if r[group] == name and r.get(y) is not None)
            if points:
                xs, ys, spans = zip(*points)
                width = 1.2 + 2.4 * (len(groups) - 1 - i) / max(1, len(groups) - 1)
                line, = ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)],
                                linewidth=width, markersize=3 + width, label=name, alpha=0.85)
                if errors:
                    yerr = [[v - lo for v, (lo, _) in zip(ys, spans)], [hi - v for v, (_, hi) in zip(ys, spans)]]
                    ax.errorbar(xs, ys, yerr=yerr, fmt="none", ecolor=line.get_color(), elinewidth=1.0, capsize=3,
                                alpha=0.85)
        line = reference.get(value) if isinstance(reference, dict) else reference
        if line is not None:
            ax.axhline(line, color="grey", linewidth=0.8, linestyle="--")
        if logy:
            ax.set_yscale("log")
        if not (sharex and len(panels) > 1):
            ax.set_xlabel(xlabel)
        if panel:
            ax.set_title(f"{panel} = {value}", fontsize=10)
        ax.grid(True, alpha=0.3, which="both")
    axes[0][0].set_ylabel(ylabel)
    if sharex and len(panels) > 1:
        fig.supxlabel(xlabel, fontsize=10)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- long-video mode (`sharpv bench --long-video`) ---------------------------------------------

LONG_VIDEO_COLUMNS: list[Column] = [
    ("frames", "frames", "{}"),
    ("mode", "mode", "{}"),
    ("status", "status", "{}"),
    ("visual_tokens_kept", "visual kept", "{}"),
    ("kept_share", "kept share", "{:.1%}"),
    ("vision_seconds", "vision s", "{:.2f}"),
    ("prefill_seconds", "prefill s", "{:.2f}"),
    ("ttft_seconds", "TTFT s", "{:.2f}"),
    ("question_to_first_token_seconds", "question to 1st token s", "{:.3f}"),
    ("question_share_of_oneshot_ttft", "vs one-shot TTFT", "{:.2%}"),
    ("kv_cache_bytes", "KV MiB", "{:.1f}"),
    ("peak_memory_bytes", "peak MiB", "{:.0f}"),
    ("peak_over_baseline_bytes", "peak over loaded MiB", "{:.0f}"),
]
_SCALE.update(peak_over_baseline_bytes=1 / 2**20, baseline_memory_bytes=1 / 2**20)


def long_video_rows(records: Sequence[dict]) -> list[dict]:
    """Records as displayed: a did-not-finish status names its reason (and how far it got)."""
    rows = []
    for r in records:
        row = dict(r)
        if r["status"] != "ok":
            where = f", at {r['progress']}" if r.get("progress") and r["progress"] not in ("loaded", "vision", "prefill") else ""
            row["status"] = f"{r['status']}: {r['reason']}{where}"
        rows.append(row)
    return rows


def _vision_depth(settings: dict) -> str:
    layers = settings.get("vision_layers")
    if layers is None:
        return ""
    return (f"vision tower cut to {layers} encoder layer{'s' if layers != 1 else ''} (--vision-layers: memory per "
            f"chunk keeps its shape, vision seconds are not the real model's); ")


def long_video_markdown(result: dict) -> str:
    """results.md of the long-video mode: the table, peak growth per frame, the two targets."""
    env, settings, summary = result["environment"], result["settings"], result["summary"]
    mib = lambda v: "-" if v is None else f"{v / 2**20:.2f}"  # noqa: E731
    caps = []
    if settings.get("max_seconds") is not None:
        caps.append(f"{settings['max_seconds']:g} s")
    if settings.get("max_memory_bytes") is not None:
        caps.append(f"{settings['max_memory_bytes'] / 2**30:g} GiB")
    lines = [
        f"Model: {env.get('model')}; dtype {settings['dtype']}; device {settings['device']} ({env.get('cpu')}, "
        f"{env.get('threads')} threads{', ' + env['gpu'] if env.get('gpu') else ''}); torch {env.get('torch')}, "
        f"transformers {env.get('transformers')}; "
        f"{str(env['tokens_per_frame']) + ' tokens per frame; ' if env.get('tokens_per_frame') else ''}"
        f"{_vision_depth(settings)}vision tower on "
        f"random pixels, {settings['chunk_frames']} frames per call; one run per configuration, each in a fresh "
        f"process{'; cap per run: ' + ' and '.join(caps) if caps else ''}.",
        "",
        markdown_table(long_video_rows(result["records"]), LONG_VIDEO_COLUMNS),
        "Peak memory growth per frame: least-squares slope over the frame counts that finished, and the "
        "marginal growth between the two largest of them (costs fixed per chunk are paid by then):",
        "",
        "| mode | frames finished | peak MiB/frame (slope) | peak MiB/frame (marginal) | KV MiB/frame |",
        "|---|---|---|---|---|",
    ]
    for mode, m in summary["modes"].items():
        lines.append(f"| {mode} | {', '.join(map(str, m['frames_finished'])) or '-'} | {mib(m['peak_growth_bytes_per_frame'])} | "
                     f"{mib(m['peak_marginal_growth_bytes_per_frame'])} | {mib(m['kv_cache_growth_bytes_per_frame'])} |")
    a, b = summary["target_peak_ratio"], summary["target_question_share"]
    lines += ["", "Targets:", ""]
    if a["measured"]:
        lines.append(f"- {a['claim']}: ratio {a['ratio']:.2f} ({'met' if a['met'] else 'not met'}).")
    else:
        extra = (f"; extrapolating linearly from {' and '.join(map(str, a['extrapolated_from']))} frames gives "
                 f"{a['extrapolated_ratio']:.2f} (not a measurement)") if a.get("extrapolated_ratio") is not None else ""
        lines.append(f"- {a['claim']}: not measured (the two frame counts did not both finish, or were not run){extra}.")
    shares = ", ".join(f"{v:.2%} at {k} frames" for k, v in b["shares_measured"].items())
    if b["measured"]:
        lines.append(f"- {b['claim']}: {b['share']:.2%} ({'met' if b['met'] else 'not met'}).")
    else:
        lines.append(f"- {b['claim']}: not measured at that frame count{'; measured: ' + shares if shares else ''}.")
    if result.get("provenance"):
        from sharpv.harness.provenance import describe

        lines += ["", describe(result["provenance"]) + "."]
    return "\n".join(lines) + "\n"


def plot_long_video(result: dict, path: Path) -> None:
    """One PNG, three panels against the frame count: peak memory, the part of it above the loaded
    model, and TTFT (with the chunked path's question-to-first-token time dashed). Runs that hit the
    time cap are drawn as an x at the cap (a lower bound)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    records, cap = result["records"], result["settings"].get("max_seconds")
    fig, (mem, over, ttft) = plt.subplots(1, 3, figsize=(15, 4.4))
    for mode in dict.fromkeys(r["mode"] for r in records):
        done = sorted((r["frames"], r) for r in records if r["mode"] == mode and r["status"] == "ok")
        xs = [f for f, _ in done]
        line, = mem.plot(xs, [r["peak_memory_bytes"] / 2**20 for _, r in done], marker="o", label=mode)
        colour = line.get_color()
        over.plot(xs, [r["peak_over_baseline_bytes"] / 2**20 for _, r in done], marker="o", color=colour, label=mode)
        ttft.plot(xs, [r["ttft_seconds"] for _, r in done], marker="o", color=colour, label=f"{mode}: TTFT")
        if mode == "sharpv-chunked":
            ttft.plot(xs, [r["question_to_first_token_seconds"] for _, r in done], marker="s", linestyle="--",
                      color=colour, label=f"{mode}: question to first token")
        capped = [r["frames"] for r in records if r["mode"] == mode and r["status"] != "ok"
                  and str(r.get("reason", "")).startswith("time cap")]
        if capped and cap:
            ttft.scatter(capped, [cap] * len(capped), marker="x", s=60, color=colour)
    frames = sorted({r["frames"] for r in records})
    panels = ((mem, "peak memory (process)", "MiB"), (over, "peak above the loaded model", "MiB"),
              (ttft, "time to first token (x: hit the time cap)", "seconds"))
    for ax, title, ylabel in panels:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(frames))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("frames")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ttft.set_yscale("log")
    env = result["environment"]
    layers = result["settings"].get("vision_layers")
    depth = f", vision tower cut to {layers} layer{'s' if layers != 1 else ''}" if layers is not None else ""
    fig.suptitle(f"long video: {env.get('model')}{depth}, {result['settings']['dtype']}, {result['settings']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
