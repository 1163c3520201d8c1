"""Pixels of a synthetic scene: a smooth texture (static or drifting) with flat-coloured shapes."""

from __future__ import annotations

import numpy as np

from sharpv.synthetic.scene import COLOURS, Scene, SceneObject


def _texture(seed: int, size: int) -> np.ndarray:
    """A muted, blocky random texture twice the frame size (room to drift)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(70, 150, (size // 4, size // 4, 3), dtype=np.uint8)
    return np.kron(cells, np.ones((8, 8, 1), dtype=np.uint8))


def object_mask(obj: SceneObject, t: int, size: int) -> np.ndarray:
    """(size, size) bool pixels covered by ``obj`` in frame ``t``."""
    cx, cy = obj.positions[t]
    cx, cy, r = cx * size, cy * size, obj.size * size / 2
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if obj.shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if obj.shape == "square":
        return (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
    top = cy - r  # upward triangle: apex at the top, base at the bottom
    return (y >= top) & (y <= cy + r) & (np.abs(x - cx) <= (y - top) / 2)


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """(T, size, size, 3) uint8 frames of ``scene``."""
    texture = _texture(scene.seed, size)
    frames = np.empty((scene.frames, size, size, 3), dtype=np.uint8)
    for t in range(scene.frames):
        ox = int(round(scene.drift[0] * t * size / 64)) % size
        oy = int(round(scene.drift[1] * t * size / 64)) % size
        frame = texture[oy : oy + size, ox : ox + size].copy()
        for obj in scene.objects:
            if obj.visible[t]:
                frame[object_mask(obj, t, size)] = COLOURS[obj.colours[t]]
        frames[t] = frame
    return frames
