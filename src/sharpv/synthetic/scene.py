"""Synthetic video scenes: a textured background and 1-3 objects with scripted events.

A scene is data, not pixels: every object's shape, colour over time, position over time and
visibility are fixed when the scene is drawn, so every answer is true by construction.
Coordinates are fractions of the frame side, (x, y) with y growing downwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "white": (245, 245, 245),
}
#: the five zones an object can end in, and their centres
ZONES = {"left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8), "center": (0.5, 0.5)}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
PHASES = ("beginning", "middle", "end")


@dataclass
class SceneObject:
    shape: str
    colours: list[str]  # colour name in every frame
    positions: list[tuple[float, float]]  # centre in every frame
    visible: list[bool]  # shown in every frame
    size: float = 0.22  # side (or diameter) as a fraction of the frame


@dataclass
class Scene:
    frames: int
    seed: int
    drift: tuple[float, float]  # background texture shift per frame, in pixels at 64 px
    objects: list[SceneObject] = field(default_factory=list)

    def object(self, shape: str) -> SceneObject:
        return next(o for o in self.objects if o.shape == shape)


def phase_start(phase: str, frames: int) -> int:
    """First frame of a phase (thirds of the clip; 'beginning' is frame 0)."""
    return {"beginning": 0, "middle": frames // 3 + 1, "end": (2 * frames) // 3 + 1}[phase]


def static_object(shape: str, colour: str, where: tuple[float, float], frames: int) -> SceneObject:
    return SceneObject(shape, [colour] * frames, [where] * frames, [True] * frames)


def moving_object(shape: str, colour: str, start: tuple[float, float], direction: str, frames: int,
                  distance: float = 0.45) -> SceneObject:
    dx, dy = DIRECTIONS[direction]
    steps = np.linspace(0.0, 1.0, frames)
    path = [(start[0] + dx * distance * s, start[1] + dy * distance * s) for s in steps]
    return SceneObject(shape, [colour] * frames, path, [True] * frames)
