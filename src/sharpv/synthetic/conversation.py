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
                 appearance_share: float = 0.3) -> list[tuple[str, str, str]]:
    """Up to ``turns`` ``(type, question, answer)``: the item's own question first (so the first
    turn is exactly a single-question prompt), then extra questions in a random order."""
    extra = extra_questions(item, appearance_share, rng)
    order = rng.permutation(len(extra)) if extra else []
    return [(item.qtype, item.question, item.answer)] + [extra[i] for i in order][: max(0, turns - 1)]
