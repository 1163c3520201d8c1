"""The two charts of ``sharpv viz`` (matplotlib, Agg backend): each method's stage-1 keep ratio per
frame, and SharpV's stage-2 curve (s_l per layer, the threshold M, the withdrawal layer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

#: matplotlib writes its version and home page into PNG metadata by default; the page must hold no URLs
_NO_METADATA = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def keep_ratio_chart(rows: Sequence[Any], path: str | Path, frame_labels: Sequence[str] | None = None) -> Path:
    """Per frame, the share of its tokens each row's method let into the LLM (``kept_per_frame / f``),
    one line per method. ``rows``: objects with ``label``, ``kept_per_frame`` and ``tokens_per_frame``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 3.2), dpi=100)
    try:
        for k, row in enumerate(rows):
            f = max(row.tokens_per_frame, 1)
            shares = [kept / f for kept in row.kept_per_frame]
            ax.plot(range(len(shares)), shares, marker="o", markersize=3, linewidth=1.5,
                    linestyle="-" if k < 10 else "--", label=row.short_label)
        n = max((len(r.kept_per_frame) for r in rows), default=0)
        if frame_labels is not None and n <= 32:
            ax.set_xticks(range(n), list(frame_labels)[:n], fontsize=7)
        ax.set_xlabel("frame" if frame_labels is None else "frame (source index)")
        ax.set_ylabel("tokens kept / tokens per frame")
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        ax.set_title("Stage 1: share of each frame's visual tokens that enter the LLM", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        fig.savefig(path, metadata=_NO_METADATA)
    finally:
        plt.close(fig)
    return Path(path)


def stage2_chart(rows: Sequence[Any], path: str | Path) -> Path | None:
    """SharpV stage 2: s_l (mean cosine similarity of the visual hidden states entering layer l to
    their own input embeddings) for every layer computed, per row that has it, with the threshold M
    as a horizontal line, the withdrawal layer marked and the layers below ``kv_min_layer`` (never
    pruned) shaded. ``rows``: objects with ``short_label``, ``layer_similarity``, ``kv_threshold``,
    ``kv_min_layer`` and ``kv_withdraw_layer``. None (nothing written) when no row has a curve."""
    curves = [r for r in rows if r.layer_similarity]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 3.2), dpi=100)
    try:
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        thresholds: set[float] = set()
        for k, row in enumerate(curves):
            colour = colours[k % len(colours)]
            s = row.layer_similarity
            ax.plot(range(len(s)), s, marker="o", markersize=4, color=colour, label=f"{row.short_label}: s_l")
            if row.kv_threshold is not None and row.kv_threshold not in thresholds:
                thresholds.add(row.kv_threshold)
                ax.axhline(row.kv_threshold, color=colour, linestyle="--", linewidth=1,
                           label=f"M = {row.kv_threshold:g}")
            if row.kv_withdraw_layer is not None:
                ax.axvline(row.kv_withdraw_layer, color=colour, linestyle=":", linewidth=1.5,
                           label=f"withdrawn at layer {row.kv_withdraw_layer}")
        min_layer = min((r.kv_min_layer for r in curves if r.kv_min_layer is not None), default=None)
        if min_layer:
            ax.axvspan(-0.5, min_layer - 0.5, color="grey", alpha=0.12, label=f"layers < {min_layer}: never pruned")
        n = max(len(r.layer_similarity) for r in curves)
        ax.set_xticks(range(n))
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_xlabel("LLM layer l")
        ax.set_ylabel("s_l")
        ax.grid(alpha=0.3)
        none = all(r.kv_withdraw_layer is None for r in curves)
        ax.set_title("Stage 2: visual tokens leave at the first layer with s_l < M"
                     + (" (none here)" if none else ""), fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        fig.savefig(path, metadata=_NO_METADATA)
    finally:
        plt.close(fig)
    return Path(path)
