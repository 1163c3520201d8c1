"""The shipped model's training script: labels, token dropout, and a two-step run's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sharpv.synthetic import generate
from sharpv.synthetic.model import build_model, vocabulary
from sharpv.synthetic.scene import COLOURS, SHAPES
from sharpv.synthetic.train import (
    DROPOUT_PATTERNS, GRID, Batcher, _forward, cell_labels, drop_visual_tokens, dropout_keep, dropout_plan, main,
    parse_dropout_patterns, train,
)
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
    assert record["dropout_patterns"] == ["uniform", "frames", "objects"]
    assert set(summary["final_validation_accuracy"]) >= {"overall", "motion", "position"}


def _cells(rows: int = 64) -> torch.Tensor:
    cells = torch.zeros(rows, 16, GRID * GRID, 2, dtype=torch.long)
    cells[:, :, :5, 0] = 1  # some tokens on an object, so the object pattern is not uniform
    return cells


def test_uniform_only_dropout_draws_only_the_uniform_pattern():
    assert parse_dropout_patterns("uniform") == ("uniform",)
    gen = torch.Generator().manual_seed(5)
    drop, keep, used = dropout_keep(_cells(), 0.7, parse_dropout_patterns("uniform"), gen)
    assert drop.any() and set(used) == {"uniform", None}
    for row in drop.nonzero().flatten().tolist():
        assert torch.unique(keep[row]).numel() == 1  # one keep probability for every token
        assert 0.04 <= float(keep[row, 0]) <= 0.6
    assert torch.all(keep[~drop] == 1)


def test_default_dropout_uses_all_three_patterns_with_the_shipped_random_stream():
    assert parse_dropout_patterns("objects, uniform,frames") == DROPOUT_PATTERNS
    cells = _cells()
    _, keep, used = dropout_keep(cells, 0.7, DROPOUT_PATTERNS, torch.Generator().manual_seed(5))
    assert set(used) == {None, *DROPOUT_PATTERNS}
    # the loop the shipped model was trained with, before patterns were selectable
    gen = torch.Generator().manual_seed(5)
    drop = torch.rand(len(cells), generator=gen) < 0.7
    ref = torch.ones(len(cells), 16 * GRID * GRID)
    for row in drop.nonzero().flatten().tolist():
        pattern = DROPOUT_PATTERNS[int(torch.randint(len(DROPOUT_PATTERNS), (1,), generator=gen))]
        ref[row] = dropout_plan(cells[row], pattern, gen)
    assert torch.equal(keep, ref)


def test_bad_dropout_patterns_are_refused():
    with pytest.raises(ValueError, match="uniform, frames, objects"):
        parse_dropout_patterns("uniform,blobs")
    with pytest.raises(ValueError):
        parse_dropout_patterns("")
    with pytest.raises(SystemExit) as e:
        main(["--out", "/nonexistent", "--dropout-patterns", "blobs"])
    assert e.value.code == 2
