"""The shipped model's training script: labels, token dropout, and a two-step run's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sharpv.synthetic import generate
from sharpv.synthetic.model import build_model, vocabulary
from sharpv.synthetic.scene import COLOURS, SHAPES
from sharpv.synthetic.train import GRID, Batcher, _forward, cell_labels, drop_visual_tokens, train
from sharpv.video.processing import TorchVideoInputs


@pytest.fixture(scope="module")
def shipped_arch(tmp_path_factory):
    out = tmp_path_factory.mktemp("arch")
    model, parts = build_model(seed=3)
    parts.save(out)
    return model.eval(), Batcher(TorchVideoInputs.from_pretrained(out, "llava-onevision"))


def test_every_question_and_answer_word_is_one_token(shipped_arch):
    _, batcher = shipped_arch
    tok = batcher.processor.tokenizer
    for item in generate(0, 60):
        ids = tok(item.question, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, item.question
        batcher.answer_id(item.answer)
    assert len(set(vocabulary())) == len(vocabulary())


def test_cell_labels_follow_the_drawn_scene():
    item = next(i for i in generate(2, 6) if i.qtype == "colour")
    target = item.scene.object(item.subject)
    labels = cell_labels(item)
    cx, cy = target.positions[0]
    cell = int(cy * GRID) * GRID + int(cx * GRID)
    assert labels[0, cell, 0] == SHAPES.index(target.shape) + 1
    assert labels[0, cell, 1] == list(COLOURS).index(item.answer) + 1
    covered = np.zeros(GRID * GRID, bool)
    for obj in item.scene.objects:
        x, y = obj.positions[0]
        covered[int(y * GRID) * GRID + int(x * GRID)] = True
    assert (labels[0, ~covered, 0] == 0).sum() >= (~covered).sum() - 4 * len(item.scene.objects)


def test_token_dropout_keep_all_is_the_dense_forward_and_keep_none_leaves_text(shipped_arch):
    model, batcher = shipped_arch
    batch = batcher(generate(1, 3))
    with torch.no_grad():
        dense, labels, _ = _forward(model, batch)
        gen = torch.Generator().manual_seed(0)
        kept, kept_labels, _ = _forward(model, batch, dict(keep=torch.ones(3, 256), generator=gen))
        torch.testing.assert_close(kept, dense, atol=1e-5, rtol=1e-5)
        assert torch.equal(kept_labels, labels)
        embeds = model.get_input_embeddings()(batch["input_ids"])
        short = drop_visual_tokens(embeds, batch, model.config.video_token_index, torch.zeros(3, 256), gen)
    visual = (batch["input_ids"] == model.config.video_token_index).sum(1)
    text = batch["attention_mask"].sum(1) - visual
    assert torch.equal(short["attention_mask"].sum(1), text + 1)  # text and the newline token
    for row in range(3):
        n = int(short["attention_mask"][row].sum())
        pos = short["position_ids"][row, :n]
        assert torch.all(pos[1:] > pos[:-1])  # original positions, gaps where tokens left
        assert (short["lm_labels"][row] != -100).sum() == 2  # answer and end token survive


def test_two_training_steps_write_the_record(tmp_path):
    summary = train(tmp_path, steps=2, batch_size=6, eval_every=2, eval_items=6)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "training.json", "training_log.json",
                 "learning_curve.png"):
        assert (tmp_path / name).exists(), name
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["steps"] == 2 and record["hardware"]["cpu_count"] >= 1 and "command" in record
    assert set(summary["final_validation_accuracy"]) >= {"overall", "motion", "position"}
