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
    ("prefill_seconds", "prefill s", "{:.3f}"),
    ("prefill_speedup", "speedup", "{:.2f}x"),
    ("ttft_seconds", "TTFT s", "{:.3f}"),
    ("pruning_seconds", "pruning ms", "{:.2f}"),
    ("decode_tokens_per_second", "decode tok/s", "{:.1f}"),
    ("kv_cache_bytes", "KV MiB", "{:.1f}"),
    ("kv_ratio", "KV ratio", "{:.3f}"),
    ("peak_memory_bytes", "peak MiB", "{:.0f}"),
    ("prefill_flops", "TFLOPs", "{:.2f}"),
]

_SCALE = {"pruning_seconds": 1e3, "kv_cache_bytes": 1 / 2**20, "peak_memory_bytes": 1 / 2**20, "prefill_flops": 1e-12}


def cell(record: dict, key: str, fmt: str) -> str:
    value = record.get(key)
    if value is None:
        return "adaptive" if key == "budget" and record.get("method_name") not in (None, "dense") else "-"
    if key in _SCALE:
        value = value * _SCALE[key]
    return fmt.format(value)


def markdown_table(records: Sequence[dict], columns: Sequence[Column]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in records:
        lines.append("| " + " | ".join(cell(r, k, f) for k, _, f in columns) + " |")
    return "\n".join(lines) + "\n"


def rich_table(records: Sequence[dict], columns: Sequence[Column], title: str):
    from rich.table import Table

    table = Table(title=title)
    for _, header, _ in columns:
        table.add_column(header, justify="right" if header not in ("method",) else "left")
    for r in records:
        table.add_row(*(cell(r, k, f) for k, _, f in columns))
    return table


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str))


def budget_share(record: dict) -> float:
    """Where a record sits on a budget axis: its budget, or the share it kept when adaptive."""
    return record["budget"] if record.get("budget") is not None else record["kept_share"]


def plot_lines(records: Sequence[dict], x: str | Callable[[dict], float], y: str, path: Path, *, title: str,
               xlabel: str, ylabel: str, group: str = "method", panel: str | None = "frames",
               reference: float | None = None) -> None:
    """One PNG: ``y`` against ``x`` (a key or a function of a record), a line per ``group``, a
    panel per ``panel`` value."""
    xof = x if callable(x) else (lambda r: r[x])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({r[panel] for r in records}) if panel else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False, sharey=True)
    for ax, value in zip(axes[0], panels):
        subset = [r for r in records if panel is None or r[panel] == value]
        for name in dict.fromkeys(r[group] for r in subset):
            points = sorted((xof(r), r[y]) for r in subset if r[group] == name and r.get(y) is not None)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=name)
        if reference is not None:
            ax.axhline(reference, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel(xlabel)
        ax.set_title(f"{panel} = {value}" if panel else title)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
