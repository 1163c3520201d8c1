"""Kept-token maps: frames with the tokens a method kept shown and the dropped ones dimmed.

Pure numpy + Pillow on a (T, f) keep mask (``VideoStats.keep``, frame-major in the model's layout)
and the sampled frames; nothing here runs a model.

A "frame" here is one row of the mask, i.e. what stage 1 calls a frame: a sampled frame for
LLaVA-OneVision, one temporal grid step (two sampled frames) for Qwen2.5-VL / Qwen3-VL. Token j of
a frame is cell ``(j // gw, j % gw)`` of the model's own (gh, gw) token grid (the pooled grid for
LLaVA-OneVision, the merged patch grid for Qwen), raster order. The frame is drawn resized to
``(gh * cell, gw * cell)`` pixels, so each token covers a ``cell`` x ``cell`` square: the frame as
the processor resized it (LLaVA-OneVision: to a square; Qwen: to a multiple of the merged patch
size, keeping the aspect) maps onto the grid cell for cell.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np

#: a dropped token's pixels: DIM x their grey level (kept tokens' pixels are the frame's own)
DIM = 0.3
#: pixels between panels, and around the grid
PAD = 4
#: height of the strip above each row holding its label, and of the header with frame numbers
LABEL_H = 18
HEADER_H = 16
#: panel sizes aimed at (the longer side, in pixels): the grid PNG and the large slider views
GRID_PANEL = 96
LARGE_PANEL = 256
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def cell_size(grid: tuple[int, int], target: int = GRID_PANEL, minimum: int = 2) -> int:
    """Pixels per token cell so that the longer side of a (gh, gw) grid is about ``target``."""
    gh, gw = grid
    return max(minimum, target // max(gh, gw, 1))


def mask_grid(keep: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A frame's flat keep mask (f,) as the (gh, gw) token grid (raster order)."""
    keep = np.asarray(keep, dtype=bool)
    gh, gw = grid
    if keep.size != gh * gw:
        raise ValueError(f"a frame of {keep.size} tokens does not fill a {gh} x {gw} grid")
    return keep.reshape(gh, gw)


def fit_frame(frame: np.ndarray, grid: tuple[int, int], cell: int) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 resized to the token grid's pixels, (gh * cell, gw * cell, 3)."""
    from PIL import Image

    gh, gw = grid
    size = (gw * cell, gh * cell)
    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def dim_dropped(image: np.ndarray, keep: np.ndarray, cell: int) -> np.ndarray:
    """A copy of ``image`` ((gh * cell, gw * cell, 3) uint8, the frame fitted to the grid) in which
    every token cell whose ``keep`` ((gh, gw) bool) is False is dimmed: grey at :data:`DIM` times
    its brightness. Kept cells keep the frame's pixels exactly."""
    keep = np.asarray(keep, dtype=bool)
    gh, gw = keep.shape
    if image.shape[:2] != (gh * cell, gw * cell):
        raise ValueError(f"image of {image.shape[:2]} pixels is not a {gh} x {gw} grid of {cell}-pixel cells")
    pixels = np.repeat(np.repeat(keep, cell, axis=0), cell, axis=1)
    grey = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    dimmed = np.round(DIM * grey).astype(np.uint8)[..., None].repeat(3, axis=-1)
    return np.where(pixels[..., None], image[..., :3], dimmed).astype(np.uint8)


def frame_panel(frame: np.ndarray, keep: np.ndarray | None, grid: tuple[int, int], cell: int) -> np.ndarray:
    """One frame's kept-token map: the frame fitted to the grid, dropped cells dimmed (``keep``:
    the frame's flat (f,) mask; None: all kept)."""
    image = fit_frame(frame, grid, cell)
    if keep is None:
        return image
    return dim_dropped(image, mask_grid(keep, grid), cell)


def grid_image_size(rows: int, columns: int, grid: tuple[int, int], cell: int) -> tuple[int, int]:
    """(height, width) in pixels of :func:`token_map_grid`'s image: a header, then per row a label
    strip and one panel of (gh * cell, gw * cell) per frame, :data:`PAD` pixels apart."""
    gh, gw = grid
    width = PAD + columns * (gw * cell + PAD)
    height = HEADER_H + rows * (LABEL_H + gh * cell + PAD)
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
                   cell: int, frame_labels: Sequence[str] | None = None) -> np.ndarray:
    """One image of every method's kept-token maps: one row per ``(label, keep)`` in ``rows``
    (``keep``: the (T, f) mask, or None when not known: drawn all kept), one column per frame of
    ``frames`` (T frames, (H, W, 3) uint8, each the frame the mask's row t covers), with the label
    above each row and ``frame_labels`` (default ``t=0``, ``t=1``, ...) above the columns.
    Size: :func:`grid_image_size`. Returns (height, width, 3) uint8."""
    from PIL import Image, ImageDraw

    n = len(frames)
    gh, gw = grid
    ph, pw = gh * cell, gw * cell
    height, width = grid_image_size(len(rows), n, grid, cell)
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    fitted = [fit_frame(frame, grid, cell) for frame in frames]
    y = HEADER_H
    for _label, keep in rows:
        if keep is not None and np.asarray(keep).shape[0] != n:
            raise ValueError(f"a mask of {np.asarray(keep).shape[0]} frames for {n} frames")
        for t in range(n):
            x = PAD + t * (pw + PAD)
            panel = fitted[t] if keep is None else dim_dropped(fitted[t], mask_grid(np.asarray(keep)[t], grid), cell)
            canvas[y + LABEL_H: y + LABEL_H + ph, x: x + pw] = panel
        y += LABEL_H + ph + PAD
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font, small = _font(12), _font(10)
    labels = list(frame_labels) if frame_labels is not None else [f"t={t}" for t in range(n)]
    for t, text in enumerate(labels[:n]):
        draw.text((PAD + t * (pw + PAD), 2), _fit_text(draw, text, small, pw), fill=TEXT, font=small)
    y = HEADER_H
    for label, _keep in rows:
        draw.text((PAD, y + 3), _fit_text(draw, label, font, width - 2 * PAD), fill=TEXT, font=font)
        y += LABEL_H + ph + PAD
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
