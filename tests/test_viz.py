"""`sharpv viz` and `sharpv answer --viz`: the kept-token maps (drawing on constructed masks), the
files end to end on the shipped model and on a tiny Qwen2.5-VL (non-square merged grid), bad input.
The page itself: tests/test_viz_page.py; on a real clip: tests/test_viz_real_clip.py."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from sharpv.cli import main
from sharpv.viz.token_maps import (
    DIM,
    GRID_LINE,
    KEPT_OUTLINE,
    PAD,
    cell_edges,
    cell_hw,
    cell_shape,
    cell_size,
    dim_dropped,
    fit_frame,
    frame_panel,
    grid_image_size,
    mask_grid,
    square_grid,
    strip_heights,
    token_map_grid,
)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    # bright enough everywhere that dimming always changes a pixel
    return np.random.default_rng(seed).integers(60, 256, (h, w, 3), dtype=np.uint8)


def _cell(image: np.ndarray, row: int, col: int, cell, y0: int = 0, x0: int = 0) -> np.ndarray:
    ch, cw = cell_hw(cell)
    return image[y0 + row * ch: y0 + (row + 1) * ch, x0 + col * cw: x0 + (col + 1) * cw]


def _grey(pixels: np.ndarray) -> np.ndarray:
    return np.round(DIM * (pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)))


def _check_cell(got: np.ndarray, src: np.ndarray, kept: bool, cell) -> None:
    """A drawn cell against its source pixels: inside its edge a kept cell is the frame and a
    dropped one is grey at DIM of its brightness; its edge is the kept outline or the grid line."""
    edge = cell_edges(cell)
    assert not edge.all() and edge.any() == (min(cell_hw(cell)) >= 4)  # no outline on cells under 4 pixels
    if kept:
        assert np.array_equal(got[~edge], src[~edge])
        assert (got[edge] == KEPT_OUTLINE).all()
    else:
        inside = got[~edge]
        assert (inside[:, 0] == inside[:, 1]).all() and (inside[:, 1] == inside[:, 2]).all()  # grey
        assert np.array_equal(inside[:, 0], _grey(src[~edge]))
        assert (got[edge] == GRID_LINE).all()


# --- drawing, on constructed masks ---------------------------------------------------------------
def test_kept_cells_are_the_frame_and_dropped_cells_are_dimmed():
    grid, cell = (2, 3), 5
    frame = _frame(2 * cell, 3 * cell)
    keep = np.array([[True, False, True], [False, False, True]])
    out = dim_dropped(frame, keep, cell)
    assert out.shape == (2 * cell, 3 * cell, 3) and out.dtype == np.uint8
    for r in range(2):
        for c in range(3):
            got, src = _cell(out, r, c, cell), _cell(frame, r, c, cell)
            _check_cell(got, src, bool(keep[r, c]), cell)
            if not keep[r, c]:
                inside = got[~cell_edges(cell)]
                assert inside.astype(int).sum(-1).max() < src.astype(int).sum(-1).min()  # darker than any source pixel
    plain = dim_dropped(frame, np.ones(grid, bool), cell, outline=False)
    assert np.array_equal(plain, frame)  # without outlines, all kept is the frame
    assert not np.array_equal(dim_dropped(frame, np.zeros(grid, bool), cell, outline=False), frame)


def test_kept_and_dropped_cells_differ_in_a_black_frame():
    """A dark scene: dimming a black cell changes nothing, so only the outline tells a kept cell
    from a dropped one; it must, on every cell's edge, and on rectangular cells too."""
    for cell in (6, (3, 8), (24, 56)):
        ch, cw = cell_hw(cell)
        frame = np.zeros((2 * ch, 2 * cw, 3), np.uint8)
        out = dim_dropped(frame, np.array([[True, False], [False, True]]), cell)
        kept, dropped = _cell(out, 0, 0, cell), _cell(out, 0, 1, cell)
        edge = cell_edges(cell)
        assert (kept[edge] != dropped[edge]).any(-1).all()
        assert (kept[edge] == KEPT_OUTLINE).all() and (dropped[edge] == GRID_LINE).all()


def test_cell_shape_keeps_the_source_aspect():
    # LLaVA-OneVision squashes a 640 x 272 frame to a square: a 4 x 4 grid's cells are drawn 160:68
    ch, cw = cell_shape((4, 4), (272, 640), 96)
    assert 4 * cw == 96 and ch / cw == pytest.approx(272 / 640, abs=0.03)
    assert cell_shape((4, 4), None, 96) == (24, 24) == cell_shape((4, 4), (64, 64), 96)
    # Qwen's merged grid already follows the aspect: square cells
    assert cell_shape((2, 4), (56, 112), 96) == (24, 24)
    # a ribbon is drawn at most 1:4
    ch, cw = cell_shape((4, 4), (10, 1000), 96)
    assert cw / ch == pytest.approx(4, abs=0.3)


def test_panel_maps_token_j_to_row_major_cell_on_a_non_square_grid():
    grid, cell = (2, 4), 6  # Qwen-like: wider than high
    frame = _frame(2 * 28, 4 * 28, seed=1)  # the processor's resized frame: a multiple of the merged patch
    flat = np.zeros(8, bool)
    flat[5] = True  # token 5: row 1, column 1
    panel = frame_panel(frame, flat, grid, cell)
    assert panel.shape == (2 * cell, 4 * cell, 3)
    fitted = fit_frame(frame, grid, cell)
    for j in range(8):
        _check_cell(_cell(panel, j // 4, j % 4, cell), _cell(fitted, j // 4, j % 4, cell), j == 5, cell)
    assert np.array_equal(frame_panel(frame, None, grid, cell), fitted)
    with pytest.raises(ValueError):
        mask_grid(np.ones(7, bool), grid)


def test_grid_image_size_and_contents():
    grid, frames = (3, 5), 6
    for cell in (4, (4, 7), (3, 6)):
        ch, cw = cell_hw(cell)
        video = [_frame(30, 50, seed=t) for t in range(frames)]
        rng = np.random.default_rng(3)
        masks = [rng.random((frames, 15)) < 0.4, None]
        image = token_map_grid(video, [("a: 40%", masks[0]), ("b: all", masks[1])], grid, cell)
        ph, pw = 3 * ch, 5 * cw
        width = PAD + frames * (pw + PAD)
        header_h, label_h = strip_heights(width)
        assert image.shape[:2] == grid_image_size(2, frames, grid, cell)
        assert image.shape == (header_h + 2 * (label_h + ph + PAD), width, 3)
        for t in range(frames):
            fitted = fit_frame(video[t], grid, cell)
            x = PAD + t * (pw + PAD)
            top = image[header_h + label_h: header_h + label_h + ph, x: x + pw]
            assert np.array_equal(top, dim_dropped(fitted, masks[0][t].reshape(grid), cell))
            for j in range(15):
                _check_cell(_cell(top, j // 5, j % 5, cell), _cell(fitted, j // 5, j % 5, cell), bool(masks[0][t, j]), cell)
            y = header_h + label_h + ph + PAD + label_h
            assert np.array_equal(image[y: y + ph, x: x + pw], fitted)  # no mask: every cell as the frame


def test_cell_size_and_square_fallback():
    assert cell_size((4, 4)) == 24 and cell_size((2, 6), 96) == 16 and cell_size((200, 10)) == 2
    assert square_grid(16) == (4, 4) and square_grid(12) == (3, 4) and square_grid(7) == (1, 7)


# --- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    assert main(["sample-video", str(path), "--frames", "8"]) == 0
    return path


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.height, image.width


def _check_page(path, rows: int, frames: int):
    text = path.read_text(encoding="utf-8")
    assert '<input type="range" id="frame"' in text and f'max="{frames - 1}"' in text
    assert not re.search(r"https?://", text, re.IGNORECASE)
    assert "<script src" not in text and "<link" not in text
    assert text.count("data:image/png;base64,") >= rows * (frames + 1) + 1  # strip, first views, charts
    data = json.loads(re.search(r'<script type="application/json" id="viz-data">(.*?)</script>', text, re.DOTALL).group(1))
    assert data["frames"] == frames and len(data["rows"]) == rows
    assert all(len(r["kept"]) == frames for r in data["rows"])
    for r in range(rows):
        for t in range(frames):
            assert f'id="strip-{r}-{t}"' in text  # every frame of every method in the strip
    return text


def test_viz_end_to_end_on_the_shipped_model(capsys, tmp_path, clip):
    out = tmp_path / "viz"
    code, stdout, err = run(capsys, "viz", clip, "--out", out, "--methods", "sharpv,evs,random")
    assert code == 0, err
    for name in ("index.html", "viz.json", "token_maps.png", "keep_ratio.png", "layers.png", "stage2.png"):
        assert (out / name).is_file() and str(out / name) in stdout
    meta = json.loads((out / "viz.json").read_text())
    assert meta["grid"] == [4, 4] and meta["grid_source"] == "adapter" and meta["frames"] == 8
    assert meta["source_size"] == [64, 64] and meta["input_size"] == [64, 64] and meta["llm_layers"] == 4
    rows = meta["methods"]
    assert [r["label"] for r in rows] == ["sharpv", "evs", "random"]
    sharpv = rows[0]
    assert sharpv["keep_ratio"] is None and sharpv["mode"] == "adaptive"
    for r in rows:
        mask = np.array(r["keep_mask"])
        assert mask.shape == (8, 16) and mask.sum(1).tolist() == r["kept_per_frame"]
        assert r["visual_tokens_kept"] == sharpv["visual_tokens_kept"]  # others at SharpV's adaptive share
    assert rows[1]["keep_ratio"] == pytest.approx(sharpv["kept_share"]) == pytest.approx(meta["budget"])
    assert sharpv["kv_threshold"] == 0.2 and len(sharpv["layer_similarity"]) >= 1
    cell = cell_hw(meta["cell_pixels"])
    assert cell == cell_shape((4, 4), (64, 64), 96) == (24, 24)  # a square source: square cells
    assert _png_size(out / "token_maps.png") == grid_image_size(3, 8, (4, 4), cell)
    # the drawn map follows the mask: inside its edge a dropped cell is grey and dark, a kept one is not
    image = np.asarray(Image.open(out / "token_maps.png").convert("RGB"))
    header_h, label_h = strip_heights(image.shape[1])
    mask = np.array(sharpv["keep_mask"])
    edge = cell_edges(cell)
    for t in range(8):
        x0 = PAD + t * (4 * cell[1] + PAD)
        for j in range(16):
            pixels = _cell(image, j // 4, j % 4, cell, header_h + label_h, x0).astype(int)
            inside = pixels[~edge]
            grey = (inside[:, 0] == inside[:, 1]).all() and (inside[:, 1] == inside[:, 2]).all()
            if not mask[t, j]:
                assert grey and inside.max() <= math.ceil(DIM * 255)
                assert (pixels[edge] == GRID_LINE).all()
            else:
                assert not (grey and inside.max() <= math.ceil(DIM * 255))
                assert (pixels[edge] == KEPT_OUTLINE).all()
    _check_page(out / "index.html", rows=3, frames=8)


def test_viz_with_a_budget_and_answer_viz(capsys, tmp_path, clip):
    out = tmp_path / "budget"
    code, _, err = run(capsys, "viz", clip, "--out", out, "--methods", "sharpv:kv=false,divprune", "--keep-ratio", 0.25)
    assert code == 0, err
    meta = json.loads((out / "viz.json").read_text())
    assert [r["visual_tokens_kept"] for r in meta["methods"]] == [32, 32]  # round(0.25 * 8 * 16)
    assert not (out / "stage2.png").exists()  # no stage 2 ran: no curve
    _check_page(out / "index.html", rows=2, frames=8)

    question = "which way does the square move ?"
    code, plain, err = run(capsys, "answer", clip, question, "--json", "--max-new-tokens", 2)
    assert code == 0, err
    answer_dir = tmp_path / "answer"
    code, drawn, err = run(capsys, "answer", clip, question, "--json", "--max-new-tokens", 2, "--viz", answer_dir)
    assert code == 0, err
    plain, drawn = json.loads(plain), json.loads(drawn)
    assert drawn["answer"] == plain["answer"] and drawn["kept_per_frame"] == plain["kept_per_frame"]
    meta = json.loads((answer_dir / "viz.json").read_text())
    assert len(meta["methods"]) == 1 and meta["question"] == question
    row = meta["methods"][0]
    assert row["kept_per_frame"] == plain["kept_per_frame"] and row["answer"] == plain["answer"]
    assert row["layer_similarity"] == pytest.approx(plain["layer_similarity"])
    assert _png_size(answer_dir / "token_maps.png") == grid_image_size(1, 8, (4, 4), cell_size((4, 4)))
    assert row["visual_tokens_per_layer"] == [sum(plain["kept_per_frame"])] * 4  # the runtime's count, every layer
    assert (answer_dir / "stage2.png").is_file()
    _check_page(answer_dir / "index.html", rows=1, frames=8)


def test_viz_on_qwen_uses_the_merged_non_square_grid(capsys, tmp_path):
    from sharpv.tiny import build_tiny_model
    from sharpv.video import build_inputs, load_processor, read_video_for

    model = build_tiny_model(tmp_path / "qwen", "qwen2.5-vl", seed=1)
    frames_dir = tmp_path / "wide"
    frames_dir.mkdir()
    background = _frame(48, 128, seed=2)
    for t in range(8):
        frame = background.copy()
        frame[16:32, 8 + 12 * t: 24 + 12 * t] = (255, 0, 0)
        Image.fromarray(frame).save(frames_dir / f"{t:03d}.png")
    out = tmp_path / "viz"
    code, _, err = run(capsys, "viz", frames_dir, "--model", model, "--frames", 8, "--out", out, "--methods", "sharpv,evs")
    assert code == 0, err
    meta = json.loads((out / "viz.json").read_text())
    # the grid the processor gives this clip: video_grid_thw's (h, w) over the merge size, per temporal step
    processor = load_processor(model, "qwen2.5-vl")
    t, h, w = build_inputs(processor, "q", read_video_for(processor, frames_dir, 8))["video_grid_thw"][0].tolist()
    grid = (h // 2, w // 2)
    assert grid[0] != grid[1]
    assert tuple(meta["grid"]) == grid and meta["grid_source"] == "adapter"
    assert meta["frames"] == t == 4 and meta["sampled_frames"] == 8 and meta["frame_indices"] == [0, 2, 4, 6]
    for row in meta["methods"]:
        assert np.array(row["keep_mask"]).shape == (4, grid[0] * grid[1])
    assert _png_size(out / "token_maps.png") == grid_image_size(2, 4, grid, cell_hw(meta["cell_pixels"]))
    patch = json.loads((model / "config.json").read_text())["vision_config"]["patch_size"]
    assert meta["source_size"] == [48, 128] and meta["input_size"] == [h * patch, w * patch]
    _check_page(out / "index.html", rows=2, frames=4)


# --- bad input -----------------------------------------------------------------------------------
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, clip):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("user data\n")
    cases = {
        "missing video": (["viz", tmp_path / "missing.mp4", "--out", tmp_path / "o"], "missing.mp4"),
        "unknown method": (["viz", clip, "--out", tmp_path / "o", "--methods", "sharpv,nosuch"], "nosuch"),
        "unknown setting": (["viz", clip, "--out", tmp_path / "o", "--methods", "evs:bogus=1"], "bogus"),
        "keep_ratio as a setting": (["viz", clip, "--out", tmp_path / "o", "--methods", "evs:keep_ratio=0.2"], "--keep-ratio"),
        "ratio 0": (["viz", clip, "--out", tmp_path / "o", "--keep-ratio", 0], "--keep-ratio"),
        "ratio 1.5": (["viz", clip, "--out", tmp_path / "o", "--keep-ratio", 1.5], "--keep-ratio"),
        "ratio nan": (["viz", clip, "--out", tmp_path / "o", "--keep-ratio", "nan"], "--keep-ratio"),
        "frames 0": (["viz", clip, "--out", tmp_path / "o", "--frames", 0], "--frames"),
        "out is a file": (["viz", clip, "--out", a_file], "is a file"),
        "out under a file": (["viz", clip, "--out", a_file / "sub"], "is a file"),
        "no out": (["viz", clip], "--out"),
        "model missing": (["viz", clip, "--out", tmp_path / "o", "--model", tmp_path / "nomodel"], "--model"),
        "answer --viz is a file": (["answer", clip, "q", "--viz", a_file], "--viz"),
    }
    for name, (argv, needle) in cases.items():
        code, out, err = run(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (name, err)
        assert out == "", name
    assert a_file.read_text() == "user data\n"
    assert not (tmp_path / "o").exists()  # nothing written before the values were checked
