"""Question types and answer-first scene construction.

Every item is built from its answer: the answer is drawn first (cycling through the type's answer
set, so answers are balanced), then a scene is scripted in which that answer is true, with
0-2 distractor objects of other shapes placed away from the target's path.
"""

from __future__ import annotations

import numpy as np

from sharpv.synthetic.scene import (
    COLOURS,
    DIRECTIONS,
    PHASES,
    SHAPES,
    ZONES,
    Scene,
    SceneObject,
    moving_object,
    phase_start,
    static_object,
)

COUNTS = ("one", "two", "three")
QUESTION_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    # type: (template, closed answer set)
    "colour": ("what color is the {shape} ?", tuple(COLOURS)),
    "position": ("where is the {shape} at the end ?", tuple(ZONES)),
    "motion": ("which way does the {shape} move ?", tuple(DIRECTIONS)),
    "appearance_time": ("when does the {shape} appear ?", PHASES),
    "colour_change": ("what color does the {shape} turn ?", tuple(COLOURS)),
    "count": ("how many objects are there ?", COUNTS),
}
_SPOTS = [(0.2, 0.2), (0.8, 0.2), (0.2, 0.8), (0.8, 0.8), *ZONES.values()]


def _free_spots(path: list[tuple[float, float]], rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """Up to ``n`` spots at least 0.3 away from every point of ``path`` and from each other."""
    spots = [s for s in _SPOTS if min(np.hypot(s[0] - p[0], s[1] - p[1]) for p in path) > 0.3]
    rng.shuffle(spots)
    chosen: list[tuple[float, float]] = []
    for s in spots:
        if len(chosen) == n:
            break
        if all(np.hypot(s[0] - c[0], s[1] - c[1]) > 0.3 for c in chosen):
            chosen.append(s)
    return chosen


def _with_distractors(target: SceneObject, rng: np.random.Generator, frames: int, n: int) -> list[SceneObject]:
    others = [s for s in SHAPES if s != target.shape]
    rng.shuffle(others)
    spots = _free_spots(target.positions, rng, n)
    colours = list(COLOURS)
    return [target] + [
        static_object(shape, colours[rng.integers(len(colours))], spot, frames) for shape, spot in zip(others, spots)
    ]


def _start_for(end: tuple[float, float], direction: str, distance: float) -> tuple[float, float]:
    dx, dy = (0.0, 0.0) if direction == "none" else {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    return (end[0] - dx * distance, end[1] - dy * distance)


def build_scene(qtype: str, answer: str, rng: np.random.Generator, frames: int, seed: int) -> tuple[Scene, str]:
    """A scene in which ``answer`` is the answer to a ``qtype`` question; returns it and the shape asked about."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    extra = int(rng.integers(0, 3))
    drift = (0.0, 0.0) if rng.random() < 0.5 else (float(rng.choice([-1, 1])) * 0.5, 0.0)
    centre = (float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.35, 0.65)))
    if qtype == "colour":
        target = static_object(shape, answer, centre, frames)
    elif qtype == "position":
        end = ZONES[answer]
        options = [d for d in DIRECTIONS if 0.1 <= _start_for(end, d, 0.3)[0] <= 0.9 and 0.1 <= _start_for(end, d, 0.3)[1] <= 0.9]
        if rng.random() < 0.5 and options:
            direction = options[rng.integers(len(options))]
            target = moving_object(shape, colour, _start_for(end, direction, 0.3), direction, frames, distance=0.3)
        else:
            target = static_object(shape, colour, end, frames)
    elif qtype == "motion":
        across = float(rng.uniform(0.3, 0.7))
        start = {"right": (0.25, across), "left": (0.75, across), "down": (across, 0.25), "up": (across, 0.75)}[answer]
        target = moving_object(shape, colour, start, answer, frames, distance=0.5)
    elif qtype == "appearance_time":
        target = static_object(shape, colour, centre, frames)
        first = phase_start(answer, frames)
        target.visible = [t >= first for t in range(frames)]
    elif qtype == "colour_change":
        before = [c for c in COLOURS if c != answer][rng.integers(len(COLOURS) - 1)]
        target = static_object(shape, before, centre, frames)
        switch = frames // 2
        target.colours = [before if t < switch else answer for t in range(frames)]
    elif qtype == "count":
        n = COUNTS.index(answer) + 1
        target = static_object(shape, colour, centre, frames)
        extra = n - 1
    else:
        raise ValueError(f"unknown question type {qtype!r}")
    objects = _with_distractors(target, rng, frames, extra)
    if qtype == "count" and len(objects) != COUNTS.index(answer) + 1:
        raise RuntimeError("could not place the objects for a count question")
    return Scene(frames, seed, drift, objects), shape
