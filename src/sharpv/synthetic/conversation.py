"""Several questions about one synthetic video: the item's own question, then others its scene answers.

An item is built from its answer (:mod:`sharpv.synthetic.questions`), so its own question is true by
construction. The same scene also answers other questions of the six types, unambiguously, where
the scene's data says so:

- ``count``: how many objects the scene holds (every scene);
- ``colour``: the colour of every object whose colour never changes;
- ``position``: where an object is at the end, for objects that end exactly on a zone's centre
  (distractors placed there, static targets of position questions);
- ``motion``: the direction of every object that moves;
- ``appearance_time``: ``beginning`` for an object visible from the first frame (at most one per
  video, and only in a share of the videos: every object but an appearance question's target is
  visible from the start, and more of them would tilt that type's answers to ``beginning``).

No other question is asked: a colour-changing object has no single colour, a static object no
direction, an object off the zone centres no zone. Training a model on several questions per video
(a multi-turn conversation, as LLaVA's training data does) pays for the video's visual tokens once.

:func:`description` is a dense caption of the whole scene ("describe the video ."): every object with
its colour (or colour change), when it appears, how it moves and where it is, in the answer words of
the questions. Like LLaVA's caption data it supervises every object's place and time in every video,
not one fact per question; it goes last in a conversation, so no question's answer can be copied
from it.
"""

from __future__ import annotations

import numpy as np

from sharpv.synthetic.dataset import QAItem
from sharpv.synthetic.questions import COUNTS, QUESTION_TYPES
from sharpv.synthetic.scene import ZONES, SceneObject


def _ask(qtype: str, shape: str | None = None) -> str:
    return QUESTION_TYPES[qtype][0].format(shape=shape)


def _zone(obj: SceneObject) -> str | None:
    end = obj.positions[-1]
    for name, centre in ZONES.items():
        if abs(end[0] - centre[0]) < 1e-9 and abs(end[1] - centre[1]) < 1e-9:
            return name
    return None


def _direction(obj: SceneObject) -> str | None:
    (x0, y0), (x1, y1) = obj.positions[0], obj.positions[-1]
    dx, dy = x1 - x0, y1 - y0
    if abs(dx) < 1e-9 and abs(dy) < 1e-9:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


DESCRIBE = "describe the video ."
#: where a static or final position is named in a description: the 3 x 3 grid of frame thirds, for
#: objects placed on a grid point (zone centres and the corners distractors take); others get no place
_GRID = {0.2: 0, 0.5: 1, 0.8: 2}
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "center", "right")


def _place(where: tuple[float, float]) -> str | None:
    col = next((v for k, v in _GRID.items() if abs(where[0] - k) < 1e-9), None)
    row = next((v for k, v in _GRID.items() if abs(where[1] - k) < 1e-9), None)
    if col is None or row is None:
        return None
    if row == 1:
        return "center" if col == 1 else _COLS[col]
    return _ROWS[row] if col == 1 else f"{_ROWS[row]} {_COLS[col]}"


def _phase(obj: SceneObject) -> str:
    from sharpv.synthetic.scene import phase_start

    first = obj.visible.index(True) if any(obj.visible) else len(obj.visible)
    frames = len(obj.visible)
    if first == 0:
        return "beginning"
    return "middle" if first < phase_start("end", frames) else "end"


def description(item: QAItem) -> tuple[str, str, str]:
    """``("describe", DESCRIBE, caption)``: the count, then every object (circle, square, triangle
    order) as "colour shape" (or "shape turning colour"), when it appears, its direction if it moves
    and where it ends (grid words: "top left", "center", ...) where the scene places it exactly.
    Everything said is true of the scene by construction (tested)."""
    scene = item.scene
    parts = [f"{COUNTS[len(scene.objects) - 1]} {'object' if len(scene.objects) == 1 else 'objects'}"]
    for obj in sorted(scene.objects, key=lambda o: o.shape):
        colours = list(dict.fromkeys(obj.colours))
        words = [f"{colours[0]} {obj.shape}" if len(colours) == 1 else f"{obj.shape} turning {colours[-1]}"]
        words.append(f"appears at the {_phase(obj)}")
        direction = _direction(obj)
        if direction is not None:
            words.append(f"moves {direction}")
        place = _place(obj.positions[-1])
        if place is not None:
            words.append(f"ends at the {place}" if direction is not None else f"at the {place}")
        parts.append(" , ".join(words))
    return ("describe", DESCRIBE, " ; ".join(parts) + " .")


def extra_questions(item: QAItem, appearance_share: float = 0.3,
                    rng: np.random.Generator | None = None) -> list[tuple[str, str, str]]:
    """``(type, question, answer)`` of every further question ``item``'s scene answers (see the
    module docstring), the item's own question left out, in a fixed order. ``rng`` draws whether
    an appearance question is added (probability ``appearance_share``); without it none is."""
    scene = item.scene
    own = (item.qtype, item.question)
    out: list[tuple[str, str, str]] = []
    if item.qtype != "count":
        out.append(("count", _ask("count"), COUNTS[len(scene.objects) - 1]))
    for obj in scene.objects:
        if len(set(obj.colours)) == 1:
            out.append(("colour", _ask("colour", obj.shape), obj.colours[0]))
        zone = _zone(obj)
        if zone is not None and obj.visible[-1]:
            out.append(("position", _ask("position", obj.shape), zone))
        direction = _direction(obj)
        if direction is not None:
            out.append(("motion", _ask("motion", obj.shape), direction))
    if rng is not None and rng.random() < appearance_share:
        shown = [o for o in scene.objects if o.visible[0]]
        if shown:
            obj = shown[int(rng.integers(len(shown)))]
            out.append(("appearance_time", _ask("appearance_time", obj.shape), "beginning"))
    return [q for q in out if (q[0], q[1]) != own]


def conversation(item: QAItem, turns: int, rng: np.random.Generator,
                 appearance_share: float = 0.3, describe_share: float = 0.0) -> list[tuple[str, str, str]]:
    """Up to ``turns`` ``(type, question, answer)``: the item's own question first (so the first
    turn is exactly a single-question prompt), then extra questions in a random order; with
    probability ``describe_share`` (drawn after them) the :func:`description` follows as one more
    turn, last. ``describe_share`` 0 draws nothing more (the conversations of earlier runs)."""
    extra = extra_questions(item, appearance_share, rng)
    order = rng.permutation(len(extra)) if extra else []
    out = [(item.qtype, item.question, item.answer)] + [extra[i] for i in order][: max(0, turns - 1)]
    if describe_share > 0 and rng.random() < describe_share:
        out.append(description(item))
    return out
