"""Kept-token maps: frames with the tokens a method kept outlined and the dropped ones dimmed.

Pure numpy + Pillow on a (T, f) keep mask (``VideoStats.keep``, frame-major in the model's layout)
and the sampled frames; nothing here runs a model.

A "frame" here is one row of the mask, i.e. what stage 1 calls a frame: a sampled frame for
LLaVA-OneVision, one temporal grid step (two sampled frames) for Qwen2.5-VL / Qwen3-VL. Token j of
a frame is cell ``(j // gw, j % gw)`` of the model's own (gh, gw) token grid (the pooled grid for
LLaVA-OneVision, the merged patch grid for Qwen), raster order. The frame is drawn resized to
``(gh * ch, gw * cw)`` pixels, so each token covers a ``ch`` x ``cw`` cell (``cell``: an int for
square cells or a ``(ch, cw)`` pair). The processor resizes a frame to the model's input without
cropping (LLaVA-OneVision: squashed to a square; Qwen: to a multiple of the merged patch size,
keeping the aspect), so a token covers the same share of the source frame in both directions:
drawing the cells at ``ch / cw = (H / gh) / (W / gw)`` of the source (H, W) (:func:`cell_shape`)
shows the frame at the source's aspect ratio and still maps onto the grid cell for cell.

Every kept cell is outlined (:data:`KEPT_OUTLINE`) and every dropped cell is dimmed and edged with a
grey line (:data:`GRID_LINE`), so kept and dropped cells stay apart in dark scenes too.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np

#: a dropped token's pixels: DIM x their grey level (kept tokens' pixels are the frame's own)
DIM = 0.3
#: the outline of a kept cell (a bright yellow that no dimmed pixel can be) and the edge of a dropped one
KEPT_OUTLINE = (255, 210, 0)
GRID_LINE = (128, 128, 128)
#: pixels between panels, and around the grid
PAD = 4
#: the smallest label and frame-number text in the grid PNG (pixels); they grow with the image's
#: width (:func:`label_font_sizes`) so the PNG scaled to a page's width keeps them readable
LABEL_FONT = 12
HEADER_FONT = 10
#: text height relative to the image's width: at least 1/LABEL_FONT_SHARE (resp. HEADER) of it
LABEL_FONT_SHARE = 64
HEADER_FONT_SHARE = 80
#: kept for callers that read them: the label strip and header heights at the smallest text
LABEL_H = LABEL_FONT + 6
HEADER_H = HEADER_FONT + 6
#: panel sizes aimed at (the longer side, in pixels): the grid PNG and the large slider views
GRID_PANEL = 96
LARGE_PANEL = 256
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)

Cell = Union[int, tuple[int, int]]


def cell_hw(cell: Cell) -> tuple[int, int]:
    """``(ch, cw)`` of a cell given as an int (square) or a ``(ch, cw)`` pair."""
    if isinstance(cell, (tuple, list)):
        return int(cell[0]), int(cell[1])
    return int(cell), int(cell)


def cell_size(grid: tuple[int, int], target: int = GRID_PANEL, minimum: int = 2) -> int:
    """Pixels per (square) token cell so that the longer side of a (gh, gw) grid is about ``target``."""
    gh, gw = grid
    return max(minimum, target // max(gh, gw, 1))


#: the most a cell's drawn height and width may differ (a 1:10 ribbon video is drawn at 1:4 cells)
MAX_CELL_ASPECT = 4.0


def cell_shape(grid: tuple[int, int], source_size: tuple[int, int] | None = None, target: int = GRID_PANEL,
               minimum: int = 2) -> tuple[int, int]:
    """``(ch, cw)``: pixels per token cell so that the (gh, gw) grid's longer side is about ``target``
    and the panel has the source's aspect ratio ``source_size`` = (H, W) (each cell then covers
    what its token covers of the source: H / gh by W / gw source pixels, the ratio kept within
    :data:`MAX_CELL_ASPECT`). Without ``source_size``: square cells, :func:`cell_size`."""
    gh, gw = max(grid[0], 1), max(grid[1], 1)
    if not source_size or min(source_size) <= 0:
        c = cell_size(grid, target, minimum)
        return c, c
    h, w = source_size
    ratio = min(max((h / gh) / (w / gw), 1 / MAX_CELL_ASPECT), MAX_CELL_ASPECT)  # ch / cw
    if gh * ratio >= gw:  # taller than wide: the height is the longer side
        ch = max(minimum, round(target / gh))
        cw = max(minimum, round(ch / ratio))
    else:
        cw = max(minimum, round(target / gw))
        ch = max(minimum, round(cw * ratio))
    return ch, cw


def mask_grid(keep: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A frame's flat keep mask (f,) as the (gh, gw) token grid (raster order)."""
    keep = np.asarray(keep, dtype=bool)
    gh, gw = grid
    if keep.size != gh * gw:
        raise ValueError(f"a frame of {keep.size} tokens does not fill a {gh} x {gw} grid")
    return keep.reshape(gh, gw)


def fit_frame(frame: np.ndarray, grid: tuple[int, int], cell: Cell) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 resized to the token grid's pixels, (gh * ch, gw * cw, 3)."""
    from PIL import Image

    gh, gw = grid
    ch, cw = cell_hw(cell)
    size = (gw * cw, gh * ch)
    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def outline_width(cell: Cell) -> int:
    """Pixels of a cell's outline: 1, or 2 for cells of 24 pixels and more, 0 for cells under 4."""
    small = min(cell_hw(cell))
    return 0 if small < 4 else (2 if small >= 24 else 1)


def cell_edges(cell: Cell) -> np.ndarray:
    """(ch, cw) bool: the pixels of one cell that its outline covers (:func:`outline_width` wide)."""
    ch, cw = cell_hw(cell)
    edge = np.zeros((ch, cw), dtype=bool)
    w = outline_width(cell)
    if w:
        edge[:w, :] = edge[-w:, :] = True
        edge[:, :w] = edge[:, -w:] = True
    return edge


def dim_dropped(image: np.ndarray, keep: np.ndarray, cell: Cell, outline: bool = True) -> np.ndarray:
    """A copy of ``image`` ((gh * ch, gw * cw, 3) uint8, the frame fitted to the grid) in which
    every token cell whose ``keep`` ((gh, gw) bool) is False is dimmed: grey at :data:`DIM` times
    its brightness. With ``outline`` (the default) each kept cell gets a :data:`KEPT_OUTLINE`
    border and each dropped cell a :data:`GRID_LINE` one (:func:`cell_edges`); inside its border a
    kept cell keeps the frame's pixels exactly."""
    keep = np.asarray(keep, dtype=bool)
    gh, gw = keep.shape
    ch, cw = cell_hw(cell)
    if image.shape[:2] != (gh * ch, gw * cw):
        raise ValueError(f"image of {image.shape[:2]} pixels is not a {gh} x {gw} grid of {ch} x {cw}-pixel cells")
    pixels = np.repeat(np.repeat(keep, ch, axis=0), cw, axis=1)
    grey = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    dimmed = np.round(DIM * grey).astype(np.uint8)[..., None].repeat(3, axis=-1)
    out = np.where(pixels[..., None], image[..., :3], dimmed).astype(np.uint8)
    if outline:
        edges = np.tile(cell_edges(cell), (gh, gw))
        out[edges & pixels] = KEPT_OUTLINE
        out[edges & ~pixels] = GRID_LINE
    return out


def frame_panel(frame: np.ndarray, keep: np.ndarray | None, grid: tuple[int, int], cell: Cell) -> np.ndarray:
    """One frame's kept-token map: the frame fitted to the grid, kept cells outlined, dropped cells
    dimmed (``keep``: the frame's flat (f,) mask; None: not known, the frame drawn as it is)."""
    image = fit_frame(frame, grid, cell)
    if keep is None:
        return image
    return dim_dropped(image, mask_grid(keep, grid), cell)


def label_font_sizes(width: int) -> tuple[int, int]:
    """(row label, frame number) text sizes in pixels for a grid image ``width`` pixels wide: at
    least :data:`LABEL_FONT` / :data:`HEADER_FONT`, and 1/64 (1/80) of the width, so the image
    scaled down to a page (about 1/2 of a 1,600-pixel strip at 800 pixels) keeps them readable."""
    return max(LABEL_FONT, math.ceil(width / LABEL_FONT_SHARE)), max(HEADER_FONT, math.ceil(width / HEADER_FONT_SHARE))


def strip_heights(width: int) -> tuple[int, int]:
    """(header, row label strip) heights in pixels of a grid image ``width`` pixels wide."""
    label, header = label_font_sizes(width)
    return header + 6, label + 6


def grid_image_size(rows: int, columns: int, grid: tuple[int, int], cell: Cell) -> tuple[int, int]:
    """(height, width) in pixels of :func:`token_map_grid`'s image: a header, then per row a label
    strip and one panel of (gh * ch, gw * cw) per frame, :data:`PAD` pixels apart (the header and
    label strips grow with the width: :func:`strip_heights`)."""
    gh, gw = grid
    ch, cw = cell_hw(cell)
    width = PAD + columns * (gw * cw + PAD)
    header_h, label_h = strip_heights(width)
    height = header_h + rows * (label_h + gh * ch + PAD)
    return height, width


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw, text: str, font, width: int) -> str:
    if width <= 0 or draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def token_map_grid(frames: Sequence[np.ndarray], rows: Sequence[tuple[str, np.ndarray | None]], grid: tuple[int, int],
                   cell: Cell, frame_labels: Sequence[str] | None = None) -> np.ndarray:
    """One image of every method's kept-token maps: one row per ``(label, keep)`` in ``rows``
    (``keep``: the (T, f) mask, or None when not known: drawn as the frames), one column per frame
    of ``frames`` (T frames, (H, W, 3) uint8, each the frame the mask's row t covers), with the
    label above each row and ``frame_labels`` (default ``t=0``, ``t=1``, ...) above the columns,
    in text that grows with the image's width (:func:`label_font_sizes`).
    Size: :func:`grid_image_size`. Returns (height, width, 3) uint8."""
    from PIL import Image, ImageDraw

    n = len(frames)
    gh, gw = grid
    ch, cw = cell_hw(cell)
    ph, pw = gh * ch, gw * cw
    height, width = grid_image_size(len(rows), n, grid, cell)
    header_h, label_h = strip_heights(width)
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    fitted = [fit_frame(frame, grid, cell) for frame in frames]
    y = header_h
    for _label, keep in rows:
        if keep is not None and np.asarray(keep).shape[0] != n:
            raise ValueError(f"a mask of {np.asarray(keep).shape[0]} frames for {n} frames")
        for t in range(n):
            x = PAD + t * (pw + PAD)
            panel = fitted[t] if keep is None else dim_dropped(fitted[t], mask_grid(np.asarray(keep)[t], grid), cell)
            canvas[y + label_h: y + label_h + ph, x: x + pw] = panel
        y += label_h + ph + PAD
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    label_size, header_size = label_font_sizes(width)
    font, small = _font(label_size), _font(header_size)
    labels = list(frame_labels) if frame_labels is not None else [f"t={t}" for t in range(n)]
    for t, text in enumerate(labels[:n]):
        draw.text((PAD + t * (pw + PAD), 2), _fit_text(draw, text, small, pw), fill=TEXT, font=small)
    y = header_h
    for label, _keep in rows:
        draw.text((PAD, y + 2), _fit_text(draw, label, font, width - 2 * PAD), fill=TEXT, font=font)
        y += label_h + ph + PAD
    return np.asarray(image, dtype=np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` ((H, W, 3) uint8) as PNG bytes (no metadata)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(png_bytes(image))
    return path


def square_grid(tokens_per_frame: int) -> tuple[int, int]:
    """The most square (gh, gw) with gh * gw = ``tokens_per_frame`` (gh <= gw): the fallback when
    the model's own grid is not known."""
    gh = max(d for d in range(1, math.isqrt(max(tokens_per_frame, 1)) + 1) if tokens_per_frame % d == 0)
    return gh, max(tokens_per_frame, 1) // gh
