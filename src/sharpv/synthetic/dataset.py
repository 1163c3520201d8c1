"""A seeded, deterministic synthetic video QA set, balanced over question types and answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sharpv.synthetic.questions import QUESTION_TYPES, build_scene
from sharpv.synthetic.render import render
from sharpv.synthetic.scene import Scene


@dataclass
class QAItem:
    id: str
    qtype: str
    question: str
    answer: str
    scene: Scene
    subject: str | None  # the shape the question asks about (None for counting)
    size: int = 64

    def frames(self) -> np.ndarray:
        """(T, size, size, 3) uint8 frames, rendered on demand."""
        return render(self.scene, self.size)

    def write_mp4(self, path: str | Path, fps: int = 8) -> Path:
        import av

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "10"})
            stream.width = stream.height = self.size
            stream.pix_fmt = "yuv420p"
            for frame in self.frames():
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path


def generate(seed: int, n: int, frames: int = 16, size: int = 64) -> list[QAItem]:
    """``n`` items: question types in turn, each type's answers in a seeded cycle (balanced)."""
    if n < 0 or frames < 3:
        raise ValueError("n must be >= 0 and frames >= 3")
    rng = np.random.default_rng(seed)
    types = list(QUESTION_TYPES)
    cycles = {t: [] for t in types}
    items = []
    for i in range(n):
        qtype = types[i % len(types)]
        if not cycles[qtype]:
            answers = list(QUESTION_TYPES[qtype][1])
            rng.shuffle(answers)
            cycles[qtype] = answers
        answer = cycles[qtype].pop()
        scene_seed = int(rng.integers(2**31))
        scene, shape = build_scene(qtype, answer, np.random.default_rng(scene_seed), frames, scene_seed)
        question = QUESTION_TYPES[qtype][0].format(shape=shape)
        subject = shape if "{shape}" in QUESTION_TYPES[qtype][0] else None
        items.append(QAItem(f"{seed}-{i}", qtype, question, answer, scene, subject, size))
    return items


def export_jsonl(items: list[QAItem], out_dir: str | Path, fps: int = 8) -> Path:
    """Write every item as ``videos/<id>.mp4`` and one ``data.jsonl`` in `sharpv eval --data`'s layout."""
    import json

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for it in items:
        video = f"videos/{it.id}.mp4"
        it.write_mp4(out / video, fps=fps)
        lines.append(json.dumps({"id": it.id, "video": video, "question": it.question, "answer": it.answer,
                                 "type": it.qtype}))
    path = out / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
