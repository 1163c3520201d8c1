"""``sharpv model heldout``: does a trained model use the video? Accuracy on held-out synthetic
questions with the video (dense: every visual token, through sharpv's own answer path, as
``sharpv eval`` answers with ``--methods dense``) and the same model with the visual tokens removed
(text only: the same chat prompt without the video part, so the model sees only the question).

The held-out set is :data:`sharpv.synthetic.model.HELDOUT_SEED` (training never draws from it),
balanced over the six question types and their answers, rendered at the model's frame size (a
224-px vision tower sees the scenes at 224 px). Scoring is ``sharpv eval``'s
(:func:`sharpv.harness.evaluate.is_correct`); intervals are Wilson 95% intervals, and the dense
minus text-only difference has a paired bootstrap interval over the same questions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

Log = Callable[[str], None]


def text_only_prompt(processor, question: str) -> str:
    conversation = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


@torch.no_grad()
def answer_text_only(model, processor, question: str, max_new_tokens: int = 4) -> str:
    tok = processor.tokenizer
    enc = tok(text_only_prompt(processor, question), return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def heldout(model_dir: Path, n: int = 600, frames: int = 8, seed: int | None = None, render_size: int | None = None,
            max_new_tokens: int = 4, log: Log = lambda _: None) -> dict:
    """Dense and text-only accuracy of ``model_dir`` on ``n`` held-out questions; the record
    (with every answer under ``answers``)."""
    from sharpv.answer import answer_question, load_model
    from sharpv.harness.evaluate import Example, is_correct, paired_difference, wilson
    from sharpv.methods import create
    from sharpv.synthetic.dataset import generate
    from sharpv.synthetic.model import HELDOUT_SEED
    from sharpv.synthetic.questions import QUESTION_TYPES
    from sharpv.video import SampledVideo

    seed = HELDOUT_SEED if seed is None else seed
    start = time.monotonic()
    model, processor = load_model(model_dir)
    size = render_size or model.config.vision_config.image_size
    items = generate(seed, n, frames=frames, size=size)
    dense = create("dense")
    answers = []
    for i, it in enumerate(items):
        f = it.frames()
        video = SampledVideo(f, list(range(len(f))), len(f), 8.0)
        with_video = answer_question(model, processor, video, it.question, method=dense, frames=len(f),
                                     max_new_tokens=max_new_tokens).answer
        text = answer_text_only(model, processor, it.question, max_new_tokens)
        ex = Example(it.id, it.question, it.answer)
        answers.append({"id": it.id, "type": it.qtype, "question": it.question, "answer": it.answer,
                        "dense": with_video, "text_only": text,
                        "dense_right": is_correct(with_video, ex), "text_only_right": is_correct(text, ex)})
        if (i + 1) % 50 == 0 or i + 1 == len(items):
            d = np.mean([a["dense_right"] for a in answers])
            t = np.mean([a["text_only_right"] for a in answers])
            log(f"{i + 1}/{len(items)} questions: dense {d:.1%}, text only {t:.1%} "
                f"({(time.monotonic() - start) / (i + 1):.2f} s per question)")

    def summary(rows: list[dict]) -> dict:
        out = {}
        for key in ("dense", "text_only"):
            right = sum(r[f"{key}_right"] for r in rows)
            lo, hi = wilson(right, len(rows))
            out[key] = {"accuracy": right / len(rows), "right": right, "n": len(rows), "ci95": [lo, hi]}
        return out

    per_type = {t: summary([a for a in answers if a["type"] == t]) for t in QUESTION_TYPES
                if any(a["type"] == t for a in answers)}
    mean, lo, hi = paired_difference([a["dense_right"] for a in answers], [a["text_only_right"] for a in answers])
    diff = {"mean": mean, "ci95": [lo, hi]}
    chance = {t: 1 / len(QUESTION_TYPES[t][1]) for t in per_type}
    record = {
        "model": str(model_dir),
        "set": {"seed": seed, "questions": n, "frames": frames, "render_size": size,
                "visual_tokens": frames * _tokens_per_frame(model) + 1},
        "overall": summary(answers),
        "dense_minus_text_only": diff,
        "per_type": per_type,
        "chance_per_type": chance,
        "chance_overall": float(np.mean([chance[a["type"]] for a in answers])),
        "seconds": round(time.monotonic() - start, 1),
        "threads": torch.get_num_threads(),
        "answers": answers,
    }
    return record


def _tokens_per_frame(model) -> int:
    from sharpv.pretrained.train_data import pooled_side

    return pooled_side(model.config) ** 2


def report(record: dict) -> str:
    """A short Markdown table of a held-out record."""
    lines = [f"Held-out questions: {record['set']['questions']} (seed {record['set']['seed']}, "
             f"{record['set']['frames']} frames at {record['set']['render_size']} px, "
             f"{record['set']['visual_tokens']} visual tokens)", "",
             "| type | dense | text only (no visual tokens) | chance |", "| --- | --- | --- | --- |"]

    def cell(s: dict) -> str:
        return f"{s['accuracy']:.1%} [{s['ci95'][0]:.1%}, {s['ci95'][1]:.1%}]"

    for t, s in record["per_type"].items():
        lines.append(f"| {t} | {cell(s['dense'])} | {cell(s['text_only'])} | {record['chance_per_type'][t]:.0%} |")
    o = record["overall"]
    lines.append(f"| **overall** | **{cell(o['dense'])}** | **{cell(o['text_only'])}** | {record['chance_overall']:.0%} |")
    d = record["dense_minus_text_only"]
    lines += ["", f"Dense minus text only: {d['mean']:+.1%} (paired 95% interval [{d['ci95'][0]:+.1%}, {d['ci95'][1]:+.1%}])."]
    return "\n".join(lines) + "\n"


def write(record: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "heldout.md").write_text(report(record))
