"""The self-contained HTML page of ``sharpv viz``: every image inline as a base64 data URI, a frame
slider in plain inline JavaScript, nothing fetched from anywhere."""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Sequence

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 100%; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table.meta td { padding: 0.1em 0.8em 0.1em 0; vertical-align: top; }
.controls { display: flex; align-items: center; gap: 1em; margin: 0.8em 0; flex-wrap: wrap; }
#frame { width: min(40em, 90vw); }
.views { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
figure img.view { image-rendering: pixelated; border: 1px solid #ccc; display: block; }
figcaption { font-size: 0.85em; max-width: 22em; margin-top: 0.3em; }
img.wide { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; }
"""

_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("viz-data").textContent);
  var slider = document.getElementById("frame");
  var label = document.getElementById("frame-label");
  var play = document.getElementById("play");
  var timer = null;
  function show(t) {
    slider.value = t;
    label.textContent = "frame " + (t + 1) + " of " + data.frames + " (source frame #" + data.indices[t] + ")";
    for (var r = 0; r < data.rows.length; r++) {
      document.getElementById("view-" + r).src = data.rows[r].panels[t];
      var kept = data.rows[r].kept[t];
      document.getElementById("kept-" + r).textContent =
        kept + "/" + data.tokens + " tokens kept in this frame (" + (100 * kept / data.tokens).toFixed(1) + "%)";
    }
  }
  slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
  play.addEventListener("click", function () {
    if (timer !== null) { clearInterval(timer); timer = null; play.textContent = "play"; return; }
    play.textContent = "pause";
    timer = setInterval(function () { show((parseInt(slider.value, 10) + 1) % data.frames); }, 500);
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "ArrowRight") show(Math.min(data.frames - 1, parseInt(slider.value, 10) + 1));
    if (e.key === "ArrowLeft") show(Math.max(0, parseInt(slider.value, 10) - 1));
  });
  show(0);
})();
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_page(result: Any, panels: Sequence[Sequence[bytes]], images: dict[str, bytes]) -> str:
    """The page for a :class:`~sharpv.viz.job.VizResult`: ``panels[r][t]`` is row r's large map of
    frame t (PNG bytes), ``images`` the grid and chart PNGs (``token_maps``, ``keep_ratio`` and,
    when present, ``stage2``)."""
    esc = html.escape
    rows = result.rows
    gh, gw = result.grid
    t_count = len(result.frames)
    data = {
        "frames": t_count,
        "indices": list(result.frame_indices),
        "tokens": rows[0].tokens_per_frame if rows else 0,
        "rows": [{"panels": [data_uri(p) for p in panels[r]], "kept": list(row.kept_per_frame)} for r, row in enumerate(rows)],
    }
    # "</" may not appear inside a <script> element
    payload = json.dumps(data).replace("</", "<\\/")
    step = (f"; a frame here is one temporal step of the model ({result.sampled_frames} sampled frames in "
            f"{t_count} steps, the first frame of each shown)" if result.sampled_frames != t_count else "")
    meta = [
        ("video", esc(result.video)),
        ("model", f"{esc(result.model)} ({esc(result.model_type)})"),
        ("frames", f"{t_count}{esc(step)}"),
        ("token grid", f"{gh} x {gw} = {gh * gw} tokens per frame"
                       + (" (the model's own grid)" if result.grid_source == "adapter" else " (assumed: the model's grid was not known)")),
        ("prompt", esc(result.question)),
    ]
    if result.note:
        meta.append(("budgets", esc(result.note)))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>sharpv viz: kept visual tokens</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Which visual tokens each method lets into the LLM</h1>",
        '<table class="meta">' + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in meta) + "</table>",
        ('<p class="note">Each frame is drawn on the model\'s token grid: a token\'s cell shows the frame where the '
         "token entered the LLM and is dimmed (dark grey) where stage 1 dropped it. Methods that prune inside the "
         "LLM let every token in; their later withdrawal is in the labels and the charts.</p>"),
        "<h2>Frame by frame</h2>",
        ('<div class="controls">'
         f'<input type="range" id="frame" min="0" max="{max(t_count - 1, 0)}" value="0" step="1" aria-label="frame">'
         '<button id="play" type="button">play</button><span id="frame-label"></span></div>'),
        '<div class="views">',
    ]
    for r, row in enumerate(rows):
        first = data_uri(panels[r][0]) if t_count else ""
        answer = f"<br>answer: <b>{esc(row.answer)}</b>" if row.answer is not None else ""
        parts.append(
            f'<figure><img class="view" id="view-{r}" src="{first}" alt="{esc(row.label)}, frame 0">'
            f"<figcaption><b>{esc(row.long_label)}</b><br><span id=\"kept-{r}\"></span>{answer}</figcaption></figure>"
        )
    parts.append("</div>")
    parts.append("<h2>All frames</h2>")
    parts.append(f'<img class="wide" src="{data_uri(images["token_maps"])}" alt="kept-token maps, one row per method">')
    parts.append("<h2>Keep ratio over time (stage 1)</h2>")
    parts.append(f'<img class="wide" src="{data_uri(images["keep_ratio"])}" alt="kept share per frame">')
    parts.append("<h2>Stage 2: similarity to the input embeddings per layer</h2>")
    if "stage2" in images:
        parts.append(f'<img class="wide" src="{data_uri(images["stage2"])}" alt="s_l per layer with the threshold M">')
        parts.append('<p class="note">s_l: mean cosine similarity of the visual hidden states entering layer l to '
                     "their own input embeddings; from kv_min_layer on, the visual tokens leave the computation and "
                     "the KV cache at the first layer where s_l &lt; M.</p>")
    else:
        parts.append('<p class="note">No method here ran SharpV\'s stage 2 (sharpv with kv on), so there is no curve.</p>')
    parts.append(f'<script type="application/json" id="viz-data">{payload}</script>')
    parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
