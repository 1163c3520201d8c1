"""Where the answer is: the token cells that show the objects a synthetic question is about.

The generator scripts every scene, so it knows, frame by frame, which cells of the model's token
grid an object covers. A question's *evidence* is every cell, in every frame, covered by the shape
it asks about (all objects for counting). A pruning method's *evidence recall* is the share of
those cells among the visual tokens it lets into the LLM: it tells "the method dropped the
evidence" apart from "the model could not use what was kept", with no model involved.
"""

from __future__ import annotations

import numpy as np

from sharpv.synthetic.dataset import QAItem
from sharpv.synthetic.render import object_mask

#: a cell shows an object when the object covers at least this share of it (as in training's labels)
COVER = 0.12


def object_cells(item: QAItem, obj, grid: tuple[int, int] = (4, 4)) -> np.ndarray:
    """(T, h * w) bool: the cells of an (h, w) token grid that one object of ``item``'s scene
    covers (at least :data:`COVER` of the cell) in each frame it is visible in."""
    h, w = grid
    if item.size % h or item.size % w:
        raise ValueError(f"a {item.size}-pixel frame does not split into a {h} x {w} grid")
    out = np.zeros((item.scene.frames, h * w), dtype=bool)
    for t in range(item.scene.frames):
        if obj.visible[t]:
            cover = object_mask(obj, t, item.size).reshape(h, item.size // h, w, item.size // w).mean(axis=(1, 3))
            out[t] = cover.reshape(-1) >= COVER
    return out


def question_objects(item: QAItem) -> list:
    """The objects a question is about: the asked shape, or every object for counting."""
    return [o for o in item.scene.objects if item.subject is None or o.shape == item.subject]


def evidence_cells(item: QAItem, grid: tuple[int, int] = (4, 4)) -> np.ndarray:
    """(T, h * w) bool, row-major cells of an (h, w) token grid per frame: the cells where the
    question's object (every object for counting) covers at least :data:`COVER` of the cell."""
    out = np.zeros((item.scene.frames, grid[0] * grid[1]), dtype=bool)
    for obj in question_objects(item):
        out |= object_cells(item, obj, grid)
    return out


def object_coverage(item: QAItem, keep: np.ndarray, grid: tuple[int, int] = (4, 4)) -> list[tuple[int, int]]:
    """Per object of the question (:func:`question_objects`), ``(frames with a kept cell, kept
    cells)`` under a (T, h * w) keep mask: whether a method dropped an object altogether (0, 0)
    or showed it in few or many frames, which the pooled :func:`evidence_recall` cannot tell."""
    keep = np.asarray(keep, bool)
    out = []
    for obj in question_objects(item):
        hit = object_cells(item, obj, grid) & keep
        out.append((int(hit.any(1).sum()), int(hit.sum())))
    return out


def evidence_recall(evidence: np.ndarray, keep: np.ndarray) -> tuple[int, int, int, int]:
    """``(cells kept, evidence cells, frames with a kept evidence cell, frames with evidence)`` for
    a (T, f) evidence mask and the (T, f) keep mask of the tokens that entered the LLM."""
    evidence, keep = np.asarray(evidence, bool), np.asarray(keep, bool)
    if evidence.shape != keep.shape:
        raise ValueError(f"evidence {evidence.shape} and keep {keep.shape} masks differ in shape")
    hit = evidence & keep
    shown = evidence.any(1)
    return int(hit.sum()), int(evidence.sum()), int(hit.any(1)[shown].sum()), int(shown.sum())
