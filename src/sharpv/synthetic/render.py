"""Pixels of a synthetic scene: a smooth texture (static or drifting) with flat-coloured shapes.

Everything scales with the frame size (positions, object sizes, texture blocks and drift are
fractions of the frame), so ``render(scene, 224)`` draws the same scene as ``render(scene, 64)`` with
sharper edges: what a 224-px vision tower (DINOv2, 16 x 16 patches of 14 px) should see.
"""

from __future__ import annotations

import numpy as np

from sharpv.synthetic.scene import COLOURS, Scene, SceneObject


#: texture blocks across the frame side (16 blocks of 8 px at 64 px); the texture is twice as wide
TEXTURE_BLOCKS = 8


def _texture(seed: int, size: int) -> np.ndarray:
    """A muted, blocky random texture twice the frame size (room to drift): the same 16 x 16 blocks
    at every size, each ``size / 8`` pixels wide, so a scene rendered at 224 px is the 64-px scene
    at a higher resolution (blocks of 28 px, two DINOv2 patches), not a finer texture. At 64 px
    this is the texture the shipped models were trained on, bit for bit."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(70, 150, (2 * TEXTURE_BLOCKS, 2 * TEXTURE_BLOCKS, 3), dtype=np.uint8)
    index = np.arange(2 * size) * (2 * TEXTURE_BLOCKS) // (2 * size)
    return cells[index][:, index]


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
