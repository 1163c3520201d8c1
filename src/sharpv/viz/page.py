"""The self-contained HTML page of ``sharpv viz``: every image inline as a base64 data URI, a frame
slider in plain inline JavaScript, nothing fetched from anywhere.

The page names the model and what a frame on it is (the model's input or the decoded frame, at
which sizes), shows each method's equivalent retention next to what enters the LLM, and lays the
"All frames" strip out in HTML (text stays text at any width; the frames wrap into balanced lines
on a narrow window). The slider, the play button and the arrow keys step one frame at a time and
mark the current frame in the strip and on the keep-ratio chart."""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any, Sequence

from sharpv.viz.charts import DASHES, method_style

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 100%; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table.meta td { padding: 0.15em 0.8em 0.15em 0; vertical-align: top; }
table.meta td:first-child { white-space: nowrap; }
.toy { border-left: 4px solid #d98c00; background: #fff6e0; padding: 0.5em 0.8em; max-width: 60em; }
.controls { display: flex; align-items: center; gap: 1em; margin: 0.8em 0; flex-wrap: wrap; }
#frame { width: min(40em, 90vw); }
.views { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; }
figure img.view { border: 1px solid #ccc; display: block; max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; margin-top: 0.3em; }
figcaption .retention { color: #444; }
svg.swatch { vertical-align: middle; margin-right: 0.3em; }
.strip-row { margin: 0.6em 0 0.9em; }
.strip-label { font-size: 0.9em; margin-bottom: 0.25em; }
.strip-frames { display: grid; gap: 4px; }
.strip-frames .cell { margin: 0; cursor: pointer; text-align: center; }
.strip-frames .cell img { display: block; width: 100%; height: auto; }
.strip-frames .cell span { font-size: 0.75em; color: #555; }
.strip-frames .cell.current img { outline: 3px solid #0a6cff; outline-offset: 1px; }
.strip-frames .cell.current span { color: #0a6cff; font-weight: bold; }
.chart { position: relative; display: inline-block; max-width: 100%; }
.chart img { display: block; max-width: 100%; height: auto; }
.cursor { position: absolute; background: rgba(10, 108, 255, 0.13); border-left: 1px solid rgba(10, 108, 255, 0.6);
          border-right: 1px solid rgba(10, 108, 255, 0.6); pointer-events: none; }
img.wide { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
table.budgets { border-collapse: collapse; margin-top: 0.4em; font-size: 0.9em; }
table.budgets th, table.budgets td { border-bottom: 1px solid #ddd; padding: 0.15em 0.6em 0.15em 0; text-align: left;
                                     vertical-align: top; }
table.budgets td:nth-child(5) { font-weight: bold; }
table.budgets td:first-child { white-space: nowrap; }
"""

#: ``keyStep`` is the whole of the keyboard's logic (also run on its own by the tests): the frame an
#: arrow key moves to, or null for a key the page leaves alone. The handler cancels the key's
#: default action, so a focused slider does not step a second time.
_SCRIPT = """
function keyStep(key, t, frames) {
  if (key === "ArrowRight") return Math.min(frames - 1, t + 1);
  if (key === "ArrowLeft") return Math.max(0, t - 1);
  return null;
}
(function () {
  var data = JSON.parse(document.getElementById("viz-data").textContent);
  var slider = document.getElementById("frame");
  var label = document.getElementById("frame-label");
  var play = document.getElementById("play");
  var cursor = document.getElementById("cursor");
  var timer = null;
  var current = -1;
  function cell(r, t) { return document.getElementById("strip-" + r + "-" + t); }
  function show(t) {
    slider.value = t;
    label.textContent = "frame " + (t + 1) + " of " + data.frames + " (source frame #" + data.indices[t] + ")";
    for (var r = 0; r < data.rows.length; r++) {
      document.getElementById("view-" + r).src = cell(r, t).querySelector("img").src;
      var kept = data.rows[r].kept[t];
      document.getElementById("kept-" + r).textContent =
        kept + "/" + data.tokens + " tokens of this frame enter the LLM (" + (100 * kept / data.tokens).toFixed(1) + "%)";
      if (current >= 0) cell(r, current).classList.remove("current");
      cell(r, t).classList.add("current");
    }
    if (cursor && data.chart.x.length > t) {
      var x = data.chart.x, w = x.length > 1 ? (x[x.length - 1] - x[0]) / (x.length - 1) : 0.04;
      cursor.style.left = (100 * (x[t] - w / 2)) + "%";
      cursor.style.width = (100 * w) + "%";
      cursor.style.top = (100 * data.chart.top) + "%";
      cursor.style.height = (100 * (data.chart.bottom - data.chart.top)) + "%";
    }
    current = t;
  }
  slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
  play.addEventListener("click", function () {
    if (timer !== null) { clearInterval(timer); timer = null; play.textContent = "play"; return; }
    play.textContent = "pause";
    timer = setInterval(function () { show((parseInt(slider.value, 10) + 1) % data.frames); }, 500);
  });
  document.addEventListener("keydown", function (e) {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    var next = keyStep(e.key, parseInt(slider.value, 10), data.frames);
    if (next === null) return;
    e.preventDefault();  // a focused slider would step once more, and the page would scroll
    show(next);
  });
  var cells = document.querySelectorAll(".strip-frames .cell");
  for (var i = 0; i < cells.length; i++) {
    cells[i].addEventListener("click", function () { show(parseInt(this.getAttribute("data-t"), 10)); });
  }
  show(0);
})();
"""

#: the narrowest a frame of the "All frames" strip is drawn before the strip wraps into more lines
STRIP_MIN_FRAME_PX = 56


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _swatch(k: int) -> str:
    """An inline SVG of method k's chart line: its colour, dashes and marker."""
    style = method_style(k)
    colour, dash, marker = style["color"], DASHES.get(style["linestyle"], ""), style["marker"]
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    shapes = {
        "o": f'<circle cx="17" cy="6" r="3.5" fill="{colour}"/>',
        "s": f'<rect x="13.5" y="2.5" width="7" height="7" fill="{colour}"/>',
        "^": f'<polygon points="17,1.5 21.5,10 12.5,10" fill="{colour}"/>',
        "v": f'<polygon points="17,10.5 21.5,2 12.5,2" fill="{colour}"/>',
        "D": f'<polygon points="17,1 22,6 17,11 12,6" fill="{colour}"/>',
        "P": f'<path d="M17 2v8M13 6h8" stroke="{colour}" stroke-width="2.5"/>',
        "X": f'<path d="M13.5 2.5l7 7M20.5 2.5l-7 7" stroke="{colour}" stroke-width="2.5"/>',
    }
    return (f'<svg class="swatch" width="34" height="12" viewBox="0 0 34 12" aria-hidden="true">'
            f'<line x1="1" y1="6" x2="33" y2="6" stroke="{colour}" stroke-width="2"{dash_attr}/>'
            f"{shapes.get(marker, '')}</svg>")


def _size(hw: Sequence[int] | None) -> str:
    """(height, width) as "W x H" (width first, as video sizes are read)."""
    return f"{hw[1]} x {hw[0]}" if hw else "unknown"


def frame_size_text(result: Any) -> str:
    """The "frame size" line: the source's size, the model's input size, what the page draws and
    how a token cell maps to the source."""
    gh, gw = result.grid
    src, inp = result.source_size, result.input_size
    parts = [f"source {_size(src)} (width x height)"]
    if inp:
        squashed = src and inp and abs(src[0] / src[1] - inp[0] / inp[1]) > 0.02
        parts.append(f"the model's input {_size(inp)}"
                     + (" (the processor resizes each frame to it, changing its aspect ratio)" if squashed else
                        " (the processor resizes each frame to it)"))
    if result.frames_drawn == "model input":
        drawn = f"drawn: the model's {_size(inp)} input, upscaled"
    else:
        drawn = "drawn: the decoded frame, resized"
    if src:
        drawn += (f", at the source's aspect ratio, so a token cell covers about {src[1] / gw:.0f} x {src[0] / gh:.0f} "
                  "source pixels")
    parts.append(drawn)
    return "; ".join(parts)


def budget_standing(row: Any) -> str:
    """Where a method's equivalent retention stands against the keep_ratio it ran at."""
    if row.keep_ratio is None:
        return "no budget" if row.name == "dense" else "adaptive: sets the budget" if row.name == "sharpv" else "no budget"
    if row.depth_bound:
        k, layers = row.full_layers, row.layers
        first = "the first layer computes" if k == 1 else f"the first {k} layers compute"
        return (f"above: {first} every visual token ({k}/{layers} = {100 * k / layers:.1f}%), so at this depth "
                "it cannot reach the budget")
    if row.over_budget:
        return "above the budget"
    if row.under_budget:
        return "below the budget" + (f" (a whole layer is {100 / row.layers:.1f}% at this depth)" if row.name == "vtw" else "")
    return "at the budget"


def budgets_html(result: Any) -> str:
    """The "budgets" entry: how the budgets were set, then a table of every method's keep_ratio,
    the visual tokens entering the LLM, the visual tokens per layer, its equivalent retention and
    where that stands against the budget (cells carry ids ``budget-{r}-{column}`` for the tests)."""
    esc = html.escape
    layers = result.llm_layers
    head = (f"{esc(result.note)}. " if result.note else "") + (
        "Equivalent retention (visual tokens per layer): the mean over the "
        + (f"{layers} " if layers else "") + "LLM layers of the share of the video's visual tokens each layer computes, "
        "what eval and bench report as visual/layer.")
    inside = [r.label for r in result.rows if r.prunes_inside_llm]
    if inside:
        head += (f" {esc(', '.join(inside))} prune{'s' if len(inside) == 1 else ''} inside the LLM: every token enters, "
                 "and the keep_ratio holds only in the layers after the withdrawal.")
    cells = []
    for r, row in enumerate(result.rows):
        values = {
            "method": f"{_swatch(r)}{esc(row.label)}",
            "keep_ratio": "adaptive" if row.keep_ratio is None and row.name == "sharpv" else
                          "&ndash;" if row.keep_ratio is None else f"{row.keep_ratio:.4g}",
            "enter": f"{sum(row.kept_per_frame)}/{row.tokens_in} ({100 * row.kept_share:.1f}%)",
            "per-layer": ", ".join(str(v) for v in row.visual_tokens_per_layer) or "not reported",
            "retention": f"{100 * row.equivalent_retention:.1f}%",
            "standing": esc(budget_standing(row)),
        }
        cells.append("<tr>" + "".join(f'<td id="budget-{r}-{k}">{v}</td>' for k, v in values.items()) + "</tr>")
    table = ('<table class="budgets"><tr><th>method</th><th>keep_ratio</th><th>visual tokens entering the LLM</th>'
             "<th>visual tokens per layer</th><th>equivalent retention</th><th>against the budget</th></tr>"
             + "".join(cells) + "</table>")
    return head + table


def _strip_css(frames: int, aspect: float = 1.0) -> str:
    """Columns of the "All frames" strip: all frames in one line where each gets at least
    :data:`STRIP_MIN_FRAME_PX` pixels (times the square root of the panels' width / height, so a
    wide frame keeps about a square's area), else 1/2, 1/4, ... of them per line (balanced lines)."""
    least = STRIP_MIN_FRAME_PX * math.sqrt(max(aspect, 1.0))
    rules = [f".strip-frames {{ grid-template-columns: repeat({max(frames, 1)}, minmax(0, 1fr)); }}"]
    columns = frames
    while columns > 4:
        width = round(columns * (least + 4) + 60)
        columns = math.ceil(columns / 2)
        rules.append(f"@media (max-width: {width}px) {{ .strip-frames {{ grid-template-columns: "
                     f"repeat({columns}, minmax(0, 1fr)); }} }}")
    return "\n".join(rules)


def render_page(result: Any, panels: Sequence[Sequence[bytes]], images: dict[str, bytes], keep_chart: Any = None) -> str:
    """The page for a :class:`~sharpv.viz.job.VizResult`: ``panels[r][t]`` is row r's map of frame t
    (PNG bytes; the slider's views and the "All frames" strip), ``images`` the chart PNGs
    (``keep_ratio`` and, when present, ``layers`` and ``stage2``), ``keep_chart`` the
    :class:`~sharpv.viz.charts.Chart` of ``keep_ratio`` (where its frames lie, for the marker of
    the current frame)."""
    esc = html.escape
    rows = result.rows
    gh, gw = result.grid
    t_count = len(result.frames)
    data = {
        "frames": t_count,
        "indices": list(result.frame_indices),
        "tokens": rows[0].tokens_per_frame if rows else 0,
        "rows": [{"label": row.label, "kept": list(row.kept_per_frame),
                  "equivalent_retention": row.equivalent_retention,
                  "visual_tokens_per_layer": list(row.visual_tokens_per_layer)} for row in rows],
        "chart": {"x": list(getattr(keep_chart, "frame_x", []) or []), "top": getattr(keep_chart, "top", 0.0),
                  "bottom": getattr(keep_chart, "bottom", 1.0)},
    }
    # "</" may not appear inside a <script> element
    payload = json.dumps(data).replace("</", "<\\/")
    step = (f"; a frame here is one temporal step of the model ({result.sampled_frames} sampled frames in "
            f"{t_count} steps, the first frame of each shown)" if result.sampled_frames != t_count else "")
    of_video = f" of the video's {result.total_frames}" if result.total_frames else ""
    layers = f", {result.llm_layers} LLM layers" if result.llm_layers else ""
    meta = [
        ("video", esc(result.video)),
        ("model", f"{esc(result.model)} ({esc(result.model_type)}{layers})"),
        ("frames", f"{t_count}{of_video}{esc(step)}"),
        ("frame size", esc(frame_size_text(result))),
        ("token grid", f"{gh} x {gw} = {gh * gw} tokens per frame"
                       + (" (the model's own grid)" if result.grid_source == "adapter" else " (assumed: the model's grid was not known)")),
        ("prompt", esc(result.question)),
        ("budgets", budgets_html(result)),
    ]
    inside = [r.label for r in rows if r.prunes_inside_llm]
    inside_text = (
        f"Methods that prune inside the LLM ({esc(', '.join(inside))} here) let every token in, so their maps show every "
        "cell kept; what they withdraw inside the LLM is in their captions, in the keep-ratio chart (a wide flat line "
        "at their equivalent retention) and in the chart of visual tokens per layer."
        if inside else
        "Methods that prune inside the LLM (FastV, PyramidDrop, VTW) would let every token in; their withdrawal would "
        "show in their captions and the charts (none ran here).")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>sharpv viz: kept visual tokens</title>",
        f"<style>{_STYLE}\n{_strip_css(t_count, _panel_aspect(panels))}</style></head><body>",
        "<h1>Which visual tokens each method lets into the LLM</h1>",
    ]
    if result.model_note:
        parts.append(f'<p class="toy" id="model-note"><b>{esc(result.model)}</b> is {esc(result.model_note)}.</p>')
    parts += [
        '<table class="meta">' + "".join(f'<tr id="meta-{k.replace(" ", "-")}"><td><b>{k}</b></td><td>{v}</td></tr>'
                                         for k, v in meta) + "</table>",
        ('<p class="note">keep_ratio: the share of the video\'s visual tokens a method may keep (methods that prune '
         "inside the LLM keep it from the layer where they withdraw tokens on). Each frame is drawn on the model's "
         "token grid: a cell kept by stage 1 shows the frame with a yellow outline; a dropped cell is dimmed to dark "
         f"grey with a grey edge. {inside_text}</p>"),
        "<h2>Frame by frame</h2>",
        ('<div class="controls">'
         f'<input type="range" id="frame" min="0" max="{max(t_count - 1, 0)}" value="0" step="1" aria-label="frame">'
         '<button id="play" type="button">play</button><span id="frame-label"></span>'
         '<span class="note">(arrow keys step one frame; click a frame in the strip below to jump to it)</span></div>'),
        '<div class="views">',
    ]
    for r, row in enumerate(rows):
        first = data_uri(panels[r][0]) if t_count else ""
        answer = f"<br>answer: <b>{esc(row.answer)}</b>" if row.answer is not None else ""
        parts.append(
            f'<figure style="max-width: {_panel_width(panels[r])}px"><img class="view" id="view-{r}" src="{first}" '
            f'alt="{esc(row.label)}, frame 0"><figcaption>{_swatch(r)}<b>{esc(row.long_label)}</b>'
            f'<br><span class="retention" id="retention-{r}">{esc(row.retention_text)}</span>'
            f'<br><span id="kept-{r}"></span>{answer}</figcaption></figure>'
        )
    parts.append("</div>")
    parts.append("<h2>All frames</h2>")
    parts.append('<div class="strip" id="strip">')
    for r, row in enumerate(rows):
        parts.append(f'<div class="strip-row"><div class="strip-label">{_swatch(r)}<b>{esc(row.long_label)}</b></div>'
                     '<div class="strip-frames">')
        for t in range(t_count):
            parts.append(f'<figure class="cell" id="strip-{r}-{t}" data-t="{t}"><img src="{data_uri(panels[r][t])}" '
                         f'alt="{esc(row.label)}, frame #{result.frame_indices[t]}"><span>#{result.frame_indices[t]}</span></figure>')
        parts.append("</div></div>")
    parts.append("</div>")
    parts.append("<h2>Share of each frame's visual tokens the LLM computes</h2>")
    parts.append(f'<div class="chart"><img src="{data_uri(images["keep_ratio"])}" alt="share per frame" id="keep-chart">'
                 '<div class="cursor" id="cursor"></div></div>')
    parts.append('<p class="note">Methods that prune before the LLM: the share of each frame\'s tokens they let in '
                 "(every layer computes those). Methods that prune inside the LLM: a wide flat line at their equivalent "
                 "retention (the stats give no per-frame share for them). The shaded band is the slider's frame.</p>")
    parts.append("<h2>Visual tokens per LLM layer</h2>")
    if "layers" in images:
        parts.append(f'<img class="wide" src="{data_uri(images["layers"])}" alt="visual tokens per layer per method" id="layers-chart">')
        parts.append('<p class="note">The share of the video\'s visual tokens each LLM layer computes; its mean over '
                     "the layers is the method's equivalent retention. Methods with the same counts share one line.</p>")
    else:
        parts.append('<p class="note">The stats carry no per-layer counts, so there is no chart.</p>')
    parts.append("<h2>Stage 2: similarity to the input embeddings per layer</h2>")
    if "stage2" in images:
        min_layers = sorted({r.kv_min_layer for r in rows if r.kv_min_layer is not None})
        thresholds = sorted({r.kv_threshold for r in rows if r.kv_threshold is not None})
        min_text = " / ".join(str(v) for v in min_layers) or "?"
        m_text = " / ".join(f"{v:g}" for v in thresholds) or "?"
        parts.append(f'<img class="wide" src="{data_uri(images["stage2"])}" alt="s_l per layer with the threshold M">')
        parts.append('<p class="note">s_l: mean cosine similarity of the visual hidden states entering layer l to '
                     f"their own input embeddings; from kv_min_layer = {min_text} on, the visual tokens leave the "
                     f"computation and the KV cache at the first layer where s_l &lt; M (kv_threshold = {m_text}).</p>")
    else:
        parts.append('<p class="note">No method here ran SharpV\'s stage 2 (sharpv with kv on), so there is no curve.</p>')
    parts.append(f'<script type="application/json" id="viz-data">{payload}</script>')
    parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _panel_aspect(panels: Sequence[Sequence[bytes]]) -> float:
    """Width / height of the panels (from the first PNG's header), 1.0 when there is none."""
    if not panels or not panels[0]:
        return 1.0
    png = panels[0][0]
    return int.from_bytes(png[16:20], "big") / max(int.from_bytes(png[20:24], "big"), 1)


def _panel_width(panels: Sequence[bytes]) -> int:
    """Pixel width of a row's panels (read from the first PNG's header), for its caption's width."""
    if not panels:
        return 256
    png = panels[0]
    return max(int.from_bytes(png[16:20], "big"), 200)
