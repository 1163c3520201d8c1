"""The synthetic video QA generator: deterministic, balanced, and right by construction."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from sharpv.synthetic import QUESTION_TYPES, generate
from sharpv.synthetic.scene import COLOURS, DIRECTIONS, ZONES, phase_start
from sharpv.video import read_video


def _pixel(frames: np.ndarray, t: int, where: tuple[float, float]) -> tuple[int, ...]:
    size = frames.shape[1]
    return tuple(int(v) for v in frames[t, int(where[1] * size), int(where[0] * size)])


def test_generation_is_deterministic():
    a, b = generate(5, 24), generate(5, 24)
    assert [(x.question, x.answer) for x in a] == [(x.question, x.answer) for x in b]
    assert all(np.array_equal(x.frames(), y.frames()) for x, y in zip(a, b))
    assert [(x.question, x.answer) for x in generate(6, 24)] != [(x.question, x.answer) for x in a]


def test_types_and_answers_are_balanced():
    items = generate(0, 600)
    by_type = collections.Counter(i.qtype for i in items)
    assert set(by_type) == set(QUESTION_TYPES) and len(set(by_type.values())) == 1
    for qtype, (_, answers) in QUESTION_TYPES.items():
        counts = collections.Counter(i.answer for i in items if i.qtype == qtype)
        assert set(counts) == set(answers) and max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("seed", [0, 1])
def test_answers_are_right_by_construction(seed):
    for item in generate(seed, 120):
        frames = item.frames()
        target = item.scene.object(item.subject) if item.subject else None
        assert (item.subject is None) == (item.qtype == "count") and (item.subject or "") in item.question
        last = len(frames) - 1
        if item.qtype == "colour":
            assert _pixel(frames, 0, target.positions[0]) == COLOURS[item.answer]
        elif item.qtype == "position":
            end = target.positions[last]
            assert np.hypot(end[0] - ZONES[item.answer][0], end[1] - ZONES[item.answer][1]) < 1e-6
            assert _pixel(frames, last, ZONES[item.answer]) == COLOURS[target.colours[last]]
        elif item.qtype == "motion":
            (x0, y0), (x1, y1) = target.positions[0], target.positions[last]
            dx, dy = DIRECTIONS[item.answer]
            assert (x1 - x0) * dx + (y1 - y0) * dy > 0.3
            assert _pixel(frames, last, (x1, y1)) == COLOURS[target.colours[last]]
        elif item.qtype == "appearance_time":
            first = phase_start(item.answer, len(frames))
            shown = [_pixel(frames, t, target.positions[t]) == COLOURS[target.colours[t]] for t in range(len(frames))]
            assert shown.index(True) == first and all(shown[first:])
        elif item.qtype == "colour_change":
            assert _pixel(frames, 0, target.positions[0]) != COLOURS[item.answer]
            assert _pixel(frames, last, target.positions[last]) == COLOURS[item.answer]
        else:
            assert len(item.scene.objects) == ["one", "two", "three"].index(item.answer) + 1
            for obj in item.scene.objects:
                assert _pixel(frames, 0, obj.positions[0]) == COLOURS[obj.colours[0]]


def test_items_write_decodable_mp4(tmp_path):
    item = generate(3, 1)[0]
    video = read_video(item.write_mp4(tmp_path / "item.mp4"), 16)
    assert video.frames.shape == item.frames().shape
    assert np.abs(video.frames.astype(int) - item.frames().astype(int)).mean() < 12
