"""The page of `sharpv viz`, without a model: results built by hand, drawn by the real code.

The frame slider's keys (a key press on the focused slider steps one frame: the page's own script
run with a stand-in DOM under node, and in a real headless Chromium when one is installed), the
"All frames" strip in HTML, styles that keep 15 methods apart, the current frame marked, the
in-LLM methods in the charts at what their layers compute, budgets against equivalent retention,
and the wording."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from sharpv.viz.charts import COLOURS, keep_ratio_chart, method_style
from sharpv.viz.job import VizResult, VizRow, write_viz
from sharpv.viz.token_maps import cell_shape, label_font_sizes, strip_heights, token_map_grid

T, GRID, LAYERS = 12, (4, 4), 4
F = GRID[0] * GRID[1]


def _row(label: str, name: str, keep_ratio, per_layer, *, kept: int | None = None, inside: bool = False,
         seed: int = 0, **extra) -> VizRow:
    rng = np.random.default_rng(seed)
    keep = np.ones((T, F), bool)
    if kept is not None:
        keep = np.zeros((T, F), bool)
        for t in range(T):
            keep[t, rng.choice(F, kept, replace=False)] = True
    n = T * F
    return VizRow(label=label, name=name, keep_ratio=keep_ratio, mode="adaptive" if keep_ratio is None else "budget",
                  keep=keep, mask_known=True, kept_per_frame=keep.sum(1).tolist(), tokens_per_frame=F,
                  kept_share=float(keep.sum()) / n, equivalent_retention=sum(per_layer) / len(per_layer) / n,
                  visual_tokens_per_layer=list(per_layer), prunes_inside_llm=inside,
                  kv_mode="withdraw" if inside else None, **extra)


def _result(rows, source_size=(272, 640), frames_drawn="model input", model_note="a toy model: test") -> VizResult:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8)
    return VizResult(video="clip.mp4", model="shipped test model", model_type="llava_onevision", question="Describe the video.",
                     frames=frames, frame_indices=[17 * t for t in range(T)], sampled_frames=T, grid=GRID,
                     grid_source="adapter", rows=rows, note="SharpV adaptive let 18.8% of the visual tokens into the LLM; "
                     "every other method ran at that share, keep_ratio 0.1875", source_size=source_size,
                     input_size=(64, 64), frames_drawn=frames_drawn, total_frames=250,
                     model_note=model_note, llm_layers=LAYERS, budget=0.1875)


def _rows():
    n = T * F
    kept = 3  # 3 of 16 per frame: 0.1875
    share = kept * T
    return [
        _row("sharpv", "sharpv", None, [share] * LAYERS, kept=kept, seed=1, kv_threshold=0.2, kv_min_layer=2,
             layer_similarity=[1.0, 0.6, 0.5, 0.45]),
        _row("evs", "evs", 0.1875, [share] * LAYERS, kept=kept, seed=2),
        _row("fastv", "fastv", 0.1875, [n, n, share, share], inside=True),
        _row("vtw", "vtw", 0.1875, [n, 0, 0, 0], inside=True),
        _row("pyramiddrop", "pyramiddrop", 0.1875, [n, 110, 70, share], inside=True),
    ]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("page")
    write_viz(_result(_rows()), out)
    return out


def _script(html: str) -> str:
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(scripts) == 1
    return scripts[0]


def _data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="viz-data">(.*?)</script>', html, re.DOTALL).group(1))


# --- 1. the slider's keys, under node with a stand-in DOM -----------------------------------------
#: a DOM just big enough for the page's script; a key pressed on the focused slider runs the
#: listeners (the slider's, then the document's, as the event bubbles) and then, unless one of them
#: called preventDefault(), what a browser does for a focused range input: step it and fire "input"
NODE_HARNESS = r"""
const fs = require("fs");
const args = JSON.parse(fs.readFileSync(0, "utf8"));
function El(id) {
  this.id = id; this.listeners = {}; this.style = {}; this.textContent = ""; this.src = ""; this.value = "0";
  this.attrs = {}; const cls = new Set(); this.cls = cls;
  this.classList = { add: c => cls.add(c), remove: c => cls.delete(c), contains: c => cls.has(c) };
}
El.prototype.addEventListener = function (type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); };
El.prototype.querySelector = function () { return this.img || (this.img = new El(this.id + "-img")); };
El.prototype.getAttribute = function (name) { return this.attrs[name]; };
const elements = {};
const document = new El("document");
document.getElementById = id => elements[id] || (elements[id] = new El(id));
document.getElementById("viz-data").textContent = args.data;
const data = JSON.parse(args.data);
const cells = [];
for (let r = 0; r < data.rows.length; r++) for (let t = 0; t < data.frames; t++) {
  const c = document.getElementById("strip-" + r + "-" + t); c.attrs["data-t"] = String(t);
  c.querySelector("img").src = "panel-" + r + "-" + t; cells.push(c);
}
document.querySelectorAll = () => cells;
global.document = document;
global.setInterval = () => 1; global.clearInterval = () => {};
eval(args.script);
const slider = document.getElementById("frame");
function fire(target, type, ev) { (target.listeners[type] || []).forEach(fn => fn.call(target, ev)); }
function press(key, focused) {
  const ev = { key: key, target: focused ? slider : document, defaultPrevented: false, altKey: false, ctrlKey: false,
               metaKey: false, preventDefault() { this.defaultPrevented = true; } };
  if (focused) fire(slider, "keydown", ev);
  fire(document, "keydown", ev);
  if (focused && !ev.defaultPrevented && (key === "ArrowRight" || key === "ArrowLeft")) {
    const max = data.frames - 1, v = parseInt(slider.value, 10);
    const next = Math.max(0, Math.min(max, v + (key === "ArrowRight" ? 1 : -1)));
    if (next !== v) { slider.value = String(next); fire(slider, "input", {}); }
  }
}
const log = [];
function state() {
  const t = parseInt(slider.value, 10);
  return { value: t, label: document.getElementById("frame-label").textContent,
           view0: document.getElementById("view-0").src,
           current: cells.filter(c => c.cls.has("current")).map(c => c.id),
           cursorLeft: document.getElementById("cursor").style.left };
}
slider.value = "7"; fire(slider, "input", {});
log.push(state());
for (const [key, focused] of args.presses) { press(key, focused); log.push(state()); }
log.push({ keyStep: [keyStep("ArrowRight", data.frames - 1, data.frames), keyStep("ArrowLeft", 0, data.frames),
                     keyStep("ArrowRight", 3, data.frames), keyStep("a", 3, data.frames)] });
console.log(JSON.stringify(log));
"""


def _node_run(html: str, presses):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed: the key handler's script cannot be run without a browser")
    payload = json.dumps({"script": _script(html), "data": json.dumps(_data(html)), "presses": presses})
    done = subprocess.run([node, "-e", NODE_HARNESS], input=payload, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_arrow_key_on_the_focused_slider_moves_one_frame(page):
    html = (page / "index.html").read_text(encoding="utf-8")
    presses = [["ArrowRight", True], ["ArrowRight", True], ["ArrowLeft", True], ["ArrowRight", False],
               ["ArrowLeft", False], ["ArrowLeft", False]]
    log = _node_run(html, presses)
    values = [s["value"] for s in log[:-1]]
    assert values == [7, 8, 9, 8, 9, 8, 7]  # each press one frame (the old page went 7 -> 9 -> 11)
    data = _data(html)
    for s in log[:-1]:
        t = s["value"]
        assert s["label"] == f"frame {t + 1} of {T} (source frame #{data['indices'][t]})"
        assert s["view0"] == f"panel-0-{t}"  # the large view shows the strip's frame t
        assert sorted(s["current"]) == sorted(f"strip-{r}-{t}" for r in range(len(data["rows"])))  # 7: marked
        x = data["chart"]["x"]
        assert float(s["cursorLeft"].rstrip("%")) == pytest.approx(100 * (x[t] - (x[-1] - x[0]) / (len(x) - 1) / 2))
    assert log[-1]["keyStep"] == [T - 1, 0, 4, None]


def test_key_handler_cancels_the_default_step_without_node(page):
    """Where neither node nor a browser runs (the two tests around this one skip), the page's
    script is read: one keydown listener, which takes the frame from keyStep() and cancels the
    key's default action before it shows that frame, so a focused slider cannot step again."""
    script = _script((page / "index.html").read_text(encoding="utf-8"))
    assert script.count('addEventListener("keydown"') == 1
    handler = script[script.index('addEventListener("keydown"'):]
    handler = handler[: handler.index("});") + 3]
    body = [line.strip() for line in handler.splitlines()[1:-1]]
    assert body[0].startswith("if (e.defaultPrevented")
    assert body[1] == "var next = keyStep(e.key, parseInt(slider.value, 10), data.frames);"
    assert body[2] == "if (next === null) return;"
    assert body[3].startswith("e.preventDefault();") and body[4] == "show(next);"
    step = script[script.index("function keyStep"): script.index("(function ()")]
    assert '"ArrowRight") return Math.min(frames - 1, t + 1)' in step and '"ArrowLeft") return Math.max(0, t - 1)' in step


# --- 6. the "All frames" strip is HTML --------------------------------------------------------------
def test_all_frames_strip_is_html_text_and_images(page):
    html = (page / "index.html").read_text(encoding="utf-8")
    meta = json.loads((page / "viz.json").read_text())
    strip = html[html.index('<div class="strip" id="strip">'): html.index("<h2>Share of each frame")]
    for r, row in enumerate(meta["methods"]):
        assert '<div class="strip-label">' in strip and row["title"] in strip  # the label is text
        for t, index in enumerate(meta["frame_indices"]):
            cell = re.search(rf'<figure class="cell" id="strip-{r}-{t}" data-t="{t}"><img src="data:image/png;base64,'
                             rf'[^"]+" alt="[^"]*"><span>#{index}</span></figure>', strip)
            assert cell, (r, t)  # one image per frame, its source index as text under it
    assert "token_maps" not in html  # no single wide PNG with its labels drawn in
    # the frames wrap into balanced lines where they would get narrower than a readable width
    rules = re.findall(r"@media \(max-width: (\d+)px\) \{ \.strip-frames \{ grid-template-columns: repeat\((\d+),", html)
    assert [int(c) for _, c in rules] == [6, 3]
    assert all(int(w) > 0 for w, _ in rules)


def test_grid_png_labels_scale_with_its_width():
    """token_maps.png (the file, and README's picture) at 16 frames is 1,600 pixels wide: its label
    text must stay about 8 pixels high or more when the picture is shown 800 pixels wide."""
    frames = [np.full((64, 64, 3), 200, np.uint8)] * 16
    cell = cell_shape(GRID, None, 96)
    image = token_map_grid(frames, [("sharpv, adaptive: 49/256 visual tokens enter the LLM", None)], GRID, cell,
                           [f"#{17 * t}" for t in range(16)])
    width = image.shape[1]
    assert width > 1500
    header_h, label_h = strip_heights(width)
    band = image[header_h: header_h + label_h]
    ink = np.nonzero((band < 128).any(axis=(1, 2)))[0]
    assert ink.size and (ink.max() - ink.min() + 1) * 800 / width >= 8
    header = image[:header_h]
    ink = np.nonzero((header < 128).any(axis=(1, 2)))[0]
    assert ink.size and (ink.max() - ink.min() + 1) * 800 / width >= 6
    assert label_font_sizes(200) == (12, 10)  # small images keep the smallest text


# --- 7. styles for 15 and more methods -------------------------------------------------------------
def test_method_styles_keep_15_and_more_methods_apart():
    styles = [method_style(k) for k in range(40)]
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 40
    for k in range(15):  # every pair of the first 15 differs in colour and marker, or in line style
        for j in range(k):
            a, b = styles[k], styles[j]
            assert (a["color"], a["marker"]) != (b["color"], b["marker"]) or a["linestyle"] != b["linestyle"]
            assert (a["color"], a["marker"], a["linestyle"]) != (b["color"], b["marker"], b["linestyle"])
    assert len({s["color"] for s in styles[:10]}) == 10 and set(COLOURS) == {s["color"] for s in styles}


def _chart_lines(monkeypatch, draw):
    """The matplotlib lines a chart function drew (captured as it saves)."""
    import matplotlib.figure

    seen = []
    original = matplotlib.figure.Figure.savefig

    def capture(fig, *args, **kwargs):
        seen.extend(fig.axes[0].get_lines())
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    draw()
    return seen


def test_keep_ratio_chart_draws_15_methods_apart_and_in_llm_methods_at_their_retention(monkeypatch, tmp_path):
    rows = [_row(f"m{k}", "evs", 0.1875, [36] * LAYERS, kept=3, seed=k) for k in range(13)]
    rows += _rows()[2:4]  # fastv and vtw: every token enters, the layers withdraw them
    lines = _chart_lines(monkeypatch, lambda: keep_ratio_chart(rows, tmp_path / "k.png", budget=0.1875))
    methods = [line for line in lines if not line.get_label().startswith("budget")]
    assert len(methods) == 15
    looks = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in methods}
    assert len(looks) == 15
    for row, line in zip(rows, methods):
        expected = row.equivalent_retention if row.prunes_inside_llm else None
        if expected is not None:  # not at 1.0 on top of dense: at what their layers compute
            assert np.allclose(line.get_ydata(), expected) and expected < 1
        else:
            assert np.allclose(line.get_ydata(), np.array(row.kept_per_frame) / F)


def test_chart_geometry_finds_each_frame_in_the_png(tmp_path):
    row = _row("evs", "evs", 0.5, [96] * LAYERS, kept=8)
    chart = keep_ratio_chart([row], tmp_path / "k.png")
    assert len(chart.frame_x) == T and 0 < chart.top < chart.bottom < 1
    steps = np.diff(chart.frame_x)
    assert (steps > 0).all() and np.allclose(steps, steps[0])
    image = np.asarray(Image.open(tmp_path / "k.png").convert("RGB")).astype(int)
    h, w = image.shape[:2]
    colour = np.array([int(method_style(0)["color"][i: i + 2], 16) for i in (1, 3, 5)])
    y = chart.top + (chart.bottom - chart.top) * (1.05 - 0.5) / 1.08  # the line at 0.5 (y from -0.03 to 1.05)
    for x in chart.frame_x:
        patch = image[int(y * h) - 4: int(y * h) + 5, int(x * w) - 4: int(x * w) + 5]
        assert (np.abs(patch - colour).sum(-1) < 60).any()  # the marker of that frame is there


# --- 2 and 3: budgets against what the layers compute -----------------------------------------------
def test_budget_standing_and_depth(page):
    rows = _rows()
    sharpv, evs, fastv, vtw, pyramid = rows
    assert not evs.over_budget and not sharpv.over_budget
    assert fastv.over_budget and fastv.full_layers == 2 and fastv.depth_bound  # 2 of 4 layers: 50% >= 18.75%
    assert vtw.over_budget and vtw.full_layers == 1 and vtw.depth_bound  # 1 of 4 layers: 25% >= 18.75%
    assert pyramid.over_budget and pyramid.depth_bound
    deep = _row("fastv", "fastv", 0.1875, [T * F] * 2 + [36] * 26, inside=True)  # 28 layers: 2/28 < 18.75%
    assert deep.over_budget and not deep.depth_bound and "cannot reach" not in deep.retention_text
    under = _row("vtw", "vtw", 0.3, [T * F, 0, 0, 0], inside=True)
    assert under.under_budget and "below the 30.0% budget" in under.retention_text
    html = (page / "index.html").read_text(encoding="utf-8")
    for r, row in enumerate(rows):
        retention = f"{100 * row.equivalent_retention:.1f}%"
        assert re.search(rf'<td id="budget-{r}-retention">{re.escape(retention)}</td>', html)
        per_layer = ", ".join(str(v) for v in row.visual_tokens_per_layer)
        assert f'<td id="budget-{r}-per-layer">{per_layer}</td>' in html
        assert f"equivalent retention {retention}" in row.long_label and row.long_label in html
        standing = re.search(rf'<td id="budget-{r}-standing">(.*?)</td>', html).group(1)
        assert ("cannot reach the budget" in standing) == row.depth_bound
    assert (page / "layers.png").is_file()


# --- 8. wording -------------------------------------------------------------------------------------
def test_wording(page):
    html = (page / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", " ", html.split("<script")[0])
    assert not re.search(r"\br=", text)  # keep_ratio is named, and defined on the page
    assert "keep_ratio: the share of the video's visual tokens a method may keep" in text
    assert "(adaptive))" not in text and "sharpv (adaptive)" not in text
    assert "kv_min_layer = 2" in text and "kv_threshold = 0.2" in text
    assert "in their captions, in the keep-ratio chart" in text and "chart of visual tokens per layer" in text
    short = [r.short_label for r in _rows()]
    assert short[:2] == ["sharpv, adaptive", "evs, keep_ratio 0.188"]


# --- 1 and 6 in a real browser, when there is one --------------------------------------------------
def _chromium():
    from sharpv.viz.browser import find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    from sharpv.viz.browser import Chromium

    return Chromium


def test_keys_in_chromium_move_one_frame(page):
    Chromium = _chromium()
    with Chromium(width=1400, height=900) as browser:
        browser.goto(page / "index.html")
        value = "parseInt(document.getElementById('frame').value, 10)"
        assert browser.evaluate(value) == 0
        box = browser.evaluate("(() => { const r = document.getElementById('frame').getBoundingClientRect();"
                               " return [r.left, r.top, r.width, r.height]; })()")
        browser.click(box[0] + 6, box[1] + box[3] / 2)  # on the thumb at frame 0: focuses the slider
        assert browser.evaluate("document.activeElement.id") == "frame"
        start = browser.evaluate(value)
        seen = []
        for key in ["ArrowRight"] * 7 + ["ArrowLeft"] * 2:
            browser.press(key)
            seen.append(browser.evaluate(value))
        assert seen == [start + d for d in (1, 2, 3, 4, 5, 6, 7, 6, 5)]
        t = seen[-1]
        assert browser.evaluate("document.getElementById('frame-label').textContent").startswith(f"frame {t + 1} of {T}")
        assert browser.evaluate("document.querySelectorAll('.strip-frames .cell.current').length") == len(_rows())
        assert browser.evaluate(f"document.getElementById('strip-0-{t}').classList.contains('current')")
        browser.evaluate("document.activeElement.blur()")
        browser.press("ArrowRight")
        assert browser.evaluate(value) == t + 1
        assert browser.errors == []


@pytest.mark.parametrize("width", [800, 1400])
def test_page_reads_at_800_and_1400_pixels_in_chromium(page, width):
    Chromium = _chromium()
    with Chromium(width=width, height=900) as browser:
        browser.goto(page / "index.html")
        sizes = browser.evaluate("Array.from(document.querySelectorAll('.strip-label, .strip-frames .cell span'))"
                                 ".map(e => parseFloat(getComputedStyle(e).fontSize))")
        assert sizes and min(sizes) >= 11
        widths = browser.evaluate("Array.from(document.querySelectorAll('.strip-frames .cell img'))"
                                  ".map(e => e.getBoundingClientRect().width)")
        assert len(widths) == len(_rows()) * T and min(widths) >= 56
        assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert browser.errors == []


# --- the screenshot command of the docs ------------------------------------------------------------
def test_screenshot_command_bad_input_is_one_line(capsys, tmp_path, page):
    from sharpv.viz.browser import main as browser_main

    cases = {
        "missing page": ["screenshot", str(tmp_path / "nope.html"), str(tmp_path / "o.png")],
        "colours 1": ["screenshot", str(page / "index.html"), str(tmp_path / "o.png"), "--colours", "1"],
        "width not a number": ["screenshot", str(page / "index.html"), str(tmp_path / "o.png"), "--width", "wide"],
        "no command": [],
    }
    for name, argv in cases.items():
        try:
            code = browser_main(argv)
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert out == "", name
    assert not (tmp_path / "o.png").exists()


def test_screenshot_command_in_chromium(tmp_path, page):
    _chromium()
    from sharpv.viz.browser import main as browser_main

    out = tmp_path / "page-800.png"
    assert browser_main(["screenshot", str(page / "index.html"), str(out), "--width", "800", "--colours", "256"]) == 0
    with Image.open(out) as image:
        assert image.width == 800 and image.height > 1500 and image.mode == "P"  # the whole page, 256 colours
