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


def evidence_cells(item: QAItem, grid: tuple[int, int] = (4, 4)) -> np.ndarray:
    """(T, h * w) bool, row-major cells of an (h, w) token grid per frame: the cells where the
    question's object (every object for counting) covers at least :data:`COVER` of the cell."""
    h, w = grid
    if item.size % h or item.size % w:
        raise ValueError(f"a {item.size}-pixel frame does not split into a {h} x {w} grid")
    scene = item.scene
    objects = [o for o in scene.objects if item.subject is None or o.shape == item.subject]
    out = np.zeros((scene.frames, h * w), dtype=bool)
    for t in range(scene.frames):
        for obj in objects:
            if obj.visible[t]:
                cover = object_mask(obj, t, item.size).reshape(h, item.size // h, w, item.size // w).mean(axis=(1, 3))
                out[t] |= cover.reshape(-1) >= COVER
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
