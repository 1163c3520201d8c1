"""The charts of ``sharpv viz`` (matplotlib, Agg backend): each method's share of every frame's
visual tokens that the LLM computes, the visual tokens each LLM layer computes per method, and
SharpV's stage-2 curve (s_l per layer, the threshold M, the withdrawal layer).

Every method keeps one style in all charts and on the page (:func:`method_style`: a colour, a line
style and a marker, distinct for 40 methods), so a line can be told from its neighbours with 15
and more methods."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

#: matplotlib writes its version and home page into PNG metadata by default; the page must hold no URLs
_NO_METADATA = {"Software": None}

#: matplotlib's tab10 colours, then line styles and markers on other periods: the (colour, line
#: style) pair of method k repeats only after 40 methods, and neighbours differ in all three
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: the same line styles as SVG stroke-dasharray values (for the swatches on the page)
DASHES = {"-": "", "--": "6 3", "-.": "6 2 2 2", ":": "2 2"}


def method_style(k: int) -> dict[str, str]:
    """Colour, line style and marker of the k-th method (its row on the page)."""
    return {"color": COLOURS[k % len(COLOURS)], "linestyle": LINESTYLES[(k // len(COLOURS)) % len(LINESTYLES)],
            "marker": MARKERS[k % len(MARKERS)]}


@dataclass
class Chart:
    """A chart written to ``path``, and where its plot area lies in the image (fractions of its
    width and height, from the left and the top): ``frame_x[t]`` is frame t's x, the plot area
    spans ``top`` to ``bottom`` (for a marker of the current frame drawn over the image)."""

    path: Path
    frame_x: list[float] = field(default_factory=list)
    top: float = 0.0
    bottom: float = 1.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_label(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def keep_ratio_chart(rows: Sequence[Any], path: str | Path, frame_labels: Sequence[str] | None = None,
                     budget: float | None = None) -> Chart:
    """Per frame, the share of its visual tokens the LLM computes, one line per method: for a
    method that prunes before the LLM its keep ratio (``kept_per_frame / f``, every layer computes
    those); for one that prunes inside the LLM (``prunes_inside_llm``: every token enters, the
    layers withdraw them) a flat, wide line at its equivalent retention (the mean over the layers;
    the stats carry no per-frame share for it). ``budget``: the keep_ratio the methods ran at,
    drawn as a dotted black line. ``rows``: objects with ``short_label``, ``kept_per_frame``,
    ``tokens_per_frame``, ``prunes_inside_llm`` and ``equivalent_retention``. Row k has
    :func:`method_style` (k)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 3.6), dpi=100)
    n = max((len(r.kept_per_frame) for r in rows), default=0)
    try:
        for k, row in enumerate(rows):
            style = method_style(k)
            f = max(row.tokens_per_frame, 1)
            if getattr(row, "prunes_inside_llm", False):
                ax.plot(range(n), [row.equivalent_retention] * n, color=style["color"], linestyle=style["linestyle"],
                        marker=style["marker"], markersize=3, linewidth=3.0, alpha=0.55,
                        label=_legend_label(f"{row.short_label}: all enter; {row.equivalent_retention:.3f} per layer "
                                            "(mean, withdrawn inside the LLM)"))
                continue
            shares = [kept / f for kept in row.kept_per_frame]
            ax.plot(range(len(shares)), shares, markersize=3, linewidth=1.5, label=_legend_label(row.short_label), **style)
        if budget is not None:
            ax.axhline(budget, color="black", linestyle=":", linewidth=1, label=f"budget: keep_ratio {budget:.3g}")
        if frame_labels is not None and n <= 32:
            ax.set_xticks(range(n), list(frame_labels)[:n], fontsize=7)
        ax.set_xlim(-0.5, max(n - 0.5, 0.5))
        ax.set_xlabel("frame" if frame_labels is None else "frame (source index)")
        ax.set_ylabel("share of the frame's tokens")
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        ax.set_title("Share of each frame's visual tokens the LLM computes (before-LLM methods: keep ratio)", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        fig.savefig(path, metadata=_NO_METADATA)
        width, height = fig.canvas.get_width_height()
        xs = [float(ax.transData.transform((t, 0))[0]) / width for t in range(n)]
        box = ax.get_window_extent()
        top, bottom = 1 - box.y1 / height, 1 - box.y0 / height
    finally:
        plt.close(fig)
    return Chart(Path(path), xs, top, bottom)


def layer_groups(rows: Sequence[Any]) -> list[list[int]]:
    """Indices of ``rows`` grouped by identical visual tokens per layer and tokens in (one line
    each in :func:`layers_chart`), in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for k, row in enumerate(rows):
        if row.visual_tokens_per_layer:
            groups.setdefault((tuple(row.visual_tokens_per_layer), row.tokens_in), []).append(k)
    return list(groups.values())


def layers_chart(rows: Sequence[Any], path: str | Path, budget: float | None = None) -> Path | None:
    """Per LLM layer, the share of the video's visual tokens that layer computes
    (``visual_tokens_per_layer / tokens_in``), one line per method; methods with the same counts
    share a line (styled as the first of them, all named in its legend entry); each entry gives
    the method's equivalent retention (the mean over the layers). ``budget``: a dotted black line.
    ``rows``: objects with ``short_label``, ``visual_tokens_per_layer``, ``tokens_in`` and
    ``equivalent_retention``. None (nothing written) when no row has per-layer counts."""
    groups = layer_groups(rows)
    if not groups:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 3.6), dpi=100)
    try:
        layers = max(len(rows[g[0]].visual_tokens_per_layer) for g in groups)
        for group in groups:
            first = rows[group[0]]
            shares = [v / max(first.tokens_in, 1) for v in first.visual_tokens_per_layer]
            names = "; ".join(rows[k].short_label for k in group)
            ax.plot(range(len(shares)), shares, drawstyle="steps-mid", markersize=4, linewidth=1.8,
                    label=_legend_label(f"{names}: mean {first.equivalent_retention:.3f}"), **method_style(group[0]))
        if budget is not None:
            ax.axhline(budget, color="black", linestyle=":", linewidth=1, label=f"budget: keep_ratio {budget:.3g}")
        ax.set_xticks(range(layers))
        ax.set_xlim(-0.5, layers - 0.5)
        ax.set_ylim(-0.03, 1.05)
        ax.set_xlabel("LLM layer")
        ax.set_ylabel("share of the video's visual tokens")
        ax.grid(alpha=0.3)
        ax.set_title("Visual tokens each LLM layer computes (the mean over layers: equivalent retention)", fontsize=10)
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
    ``kv_min_layer`` and ``kv_withdraw_layer``; row k keeps :func:`method_style` (k)'s colour.
    None (nothing written) when no row has a curve."""
    curves = [(k, r) for k, r in enumerate(rows) if r.layer_similarity]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 3.2), dpi=100)
    try:
        thresholds: set[float] = set()
        for k, row in curves:
            style = method_style(k)
            colour = style["color"]
            s = row.layer_similarity
            ax.plot(range(len(s)), s, marker=style["marker"], markersize=4, color=colour, label=f"{row.short_label}: s_l")
            if row.kv_threshold is not None and row.kv_threshold not in thresholds:
                thresholds.add(row.kv_threshold)
                ax.axhline(row.kv_threshold, color=colour, linestyle="--", linewidth=1,
                           label=f"M = {row.kv_threshold:g} (kv_threshold)")
            if row.kv_withdraw_layer is not None:
                ax.axvline(row.kv_withdraw_layer, color=colour, linestyle=":", linewidth=1.5,
                           label=f"withdrawn at layer {row.kv_withdraw_layer}")
        min_layer = min((r.kv_min_layer for _, r in curves if r.kv_min_layer is not None), default=None)
        if min_layer:
            ax.axvspan(-0.5, min_layer - 0.5, color="grey", alpha=0.12,
                       label=f"layers < {min_layer} (kv_min_layer = {min_layer}): never pruned")
        n = max(len(r.layer_similarity) for _, r in curves)
        ax.set_xticks(range(n))
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_xlabel("LLM layer l")
        ax.set_ylabel("s_l")
        ax.grid(alpha=0.3)
        none = all(r.kv_withdraw_layer is None for _, r in curves)
        ax.set_title("Stage 2: visual tokens leave at the first layer with s_l < M"
                     + (" (none here)" if none else ""), fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        fig.savefig(path, metadata=_NO_METADATA)
    finally:
        plt.close(fig)
    return Path(path)
