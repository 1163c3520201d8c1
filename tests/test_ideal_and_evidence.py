"""The bench's "ideal" rows (the unmodified language model on exactly the kept sequence) and eval's
evidence recall (the share of the question's object cells that entered the LLM)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sharpv.cli import main
from sharpv.harness.bench import ideal_inputs, ideal_prefill
from sharpv.harness.bench import MethodSpec
from sharpv.harness.evaluate import evaluate, evidence_for, synthetic_examples
from sharpv.methods import create
from sharpv.shapes import synthetic_inputs
from sharpv.synthetic import generate
from sharpv.synthetic.dataset import QAItem
from sharpv.synthetic.evidence import evidence_cells, evidence_recall, object_coverage
from sharpv.synthetic.scene import Scene, SceneObject
from sharpv.synthetic.train import cell_labels


def test_the_ideal_sequence_is_the_pruned_one_and_gives_its_logits(family):
    """The ideal row times the language model alone on the sequence a pre-LLM method feeds it: run
    without any hook, it gives the pruned run's logits (so it is that sequence, not a look-alike)."""
    model = family.model
    inputs = synthetic_inputs(model, 4, 4 if family.arch != "llava-onevision" else 16, vision="precomputed")
    with create("random", keep_ratio=1.0)(model) as handle, torch.no_grad():
        model(**inputs)
    n = handle.stats.visual_tokens_in
    kept = n // 3
    feed = ideal_inputs(model, inputs, kept, n)
    assert not any(h for layer in model.model.language_model.layers for h in layer._forward_pre_hooks.values())
    with torch.no_grad():
        ideal = ideal_prefill(model, feed)
    with create("random", keep_ratio=kept / n, seed=0)(model) as handle, torch.no_grad():
        pruned = model(**inputs, logits_to_keep=1).logits
    assert handle.stats.visual_tokens_kept == kept
    torch.testing.assert_close(ideal, pruned, atol=1e-5, rtol=1e-4)
    length = next(v for k, v in feed.items() if k in ("inputs_embeds", "input_ids") and v is not None).shape[1]
    assert length == inputs["input_ids"].shape[1] - (n - kept)


def test_bench_adds_ideal_rows_and_every_method_as_a_share_of_them(tmp_path, capsys, tiny_dirs):
    out = tmp_path / "bench"
    code = main(["bench", "--model", str(tiny_dirs["llava-onevision"]), "--frames", "4", "--methods", "sharpv,evs,fastv",
                 "--budgets", "0.25,adaptive", "--dtype", "float32", "--repeats", "1", "--warmup", "0", "--new-tokens", "1",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "results.json").read_text())["records"]
    ideal = {r["visual_tokens_kept"]: r for r in records if r["method"] == "ideal"}
    by = {(r["method"], r["budget"]): r for r in records}
    quarter = by[("sharpv", 0.25)]["visual_tokens_kept"]
    assert set(ideal) == {quarter, by[("sharpv", None)]["visual_tokens_kept"]}  # evs and fastv at 0.25 share one row
    for key in [("sharpv", 0.25), ("evs", 0.25), ("sharpv", None)]:
        r = by[key]
        i = ideal[r["visual_tokens_kept"]]
        assert i["sequence_length"] == r["sequence_length"]
        assert r["prefill_vs_ideal"] == pytest.approx(r["prefill_seconds"] / i["prefill_seconds"])
    # FastV lets every token in: compared with the ideal at its budget
    assert by[("fastv", 0.25)]["prefill_vs_ideal"] == pytest.approx(by[("fastv", 0.25)]["prefill_seconds"] / ideal[quarter]["prefill_seconds"])
    assert by[("dense", None)].get("prefill_vs_ideal") is None
    assert "| ideal |" in (out / "results.md").read_text()


# --- evidence -------------------------------------------------------------------------------------
def _item(objects, frames=3, subject="square") -> QAItem:
    return QAItem("x", "colour", "what color is the square ?", "red", Scene(frames, 0, (0.0, 0.0), objects), subject)


def test_evidence_cells_of_a_constructed_scene():
    square = SceneObject("square", ["red"] * 3, [(0.125, 0.125), (0.625, 0.125), (0.625, 0.625)], [True, True, False], size=0.2)
    circle = SceneObject("circle", ["blue"] * 3, [(0.875, 0.875)] * 3, [True] * 3, size=0.2)
    ev = evidence_cells(_item([square, circle]))
    assert ev.shape == (3, 16)
    assert ev[0].nonzero()[0].tolist() == [0] and ev[1].nonzero()[0].tolist() == [2] and not ev[2].any()
    counting = evidence_cells(_item([square, circle], subject=None))
    assert counting[2].nonzero()[0].tolist() == [15] and counting[0].nonzero()[0].tolist() == [0, 15]
    # a square straddling four cells shows in all four (each covered 25% >= 12%)
    centred = evidence_cells(_item([SceneObject("square", ["red"] * 3, [(0.5, 0.5)] * 3, [True] * 3, size=0.25)]))
    assert centred[0].nonzero()[0].tolist() == [5, 6, 9, 10]
    assert evidence_cells(_item([square]), grid=(2, 2))[1].nonzero()[0].tolist() == [1]


def test_object_coverage_per_object():
    """Per object: frames in which a kept cell shows it, and kept cells (pooled recall cannot say
    whether one object was dropped altogether)."""
    square = SceneObject("square", ["red"] * 3, [(0.125, 0.125), (0.625, 0.125), (0.625, 0.625)], [True, True, False], size=0.2)
    circle = SceneObject("circle", ["blue"] * 3, [(0.875, 0.875)] * 3, [True] * 3, size=0.2)
    counting = _item([square, circle], subject=None)
    everything = np.ones((3, 16), bool)
    assert object_coverage(counting, everything) == [(2, 2), (3, 3)]
    assert object_coverage(counting, ~everything) == [(0, 0), (0, 0)]
    only_first = np.zeros((3, 16), bool)
    only_first[0] = True
    assert object_coverage(counting, only_first) == [(1, 1), (1, 1)]
    circle_cell = np.zeros((3, 16), bool)
    circle_cell[:, 15] = True  # every frame's bottom-right cell: the circle, never the square
    assert object_coverage(counting, circle_cell) == [(0, 0), (3, 3)]
    assert object_coverage(_item([square, circle]), circle_cell) == [(0, 0)]  # a square question: the square only


def test_evidence_covers_every_cell_the_training_labels_give_the_subject():
    from sharpv.synthetic.scene import SHAPES

    for item in generate(5, 30):
        labels = cell_labels(item)[:, :, 0]
        subject = labels > 0 if item.subject is None else labels == SHAPES.index(item.subject) + 1
        assert not (subject & ~evidence_cells(item)).any()


def test_evidence_recall_counts():
    evidence = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]], bool)
    keep = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]], bool)
    assert evidence_recall(evidence, keep) == (1, 4, 1, 2)
    with pytest.raises(ValueError, match="differ in shape"):
        evidence_recall(evidence, keep[:2])


@pytest.fixture(scope="module")
def shipped():
    from sharpv.answer import load_model
    from sharpv.synthetic.model import shipped_model_path

    return load_model(shipped_model_path())


def test_eval_reports_evidence_recall_from_the_kept_tokens(shipped):
    model, processor = shipped
    examples = synthetic_examples(1234, 12)
    specs = [MethodSpec("sharpv", "sharpv"), MethodSpec("random", "random")]
    records = evaluate(model, processor, examples, specs, [0.1], frames=16)
    dense, sharpv, random = records
    assert dense["evidence_recall"] == 1.0 and dense["evidence_frame_recall"] == 1.0
    assert set(dense["evidence_recall_by_type"]) == {ex.type for ex in examples}
    # by hand: the same selections, counted directly from the method's keep masks
    from sharpv.answer import generate_answer
    from sharpv.video import SampledVideo, build_inputs

    for rec, name in ((sharpv, "sharpv"), (random, "random")):
        hit = total = 0
        for ex in examples:
            video = SampledVideo(ex.frames, list(range(16)), 16, 8.0)
            gen = generate_answer(model, processor, build_inputs(processor, ex.prompt(), video), create(name, keep_ratio=0.1),
                                  max_new_tokens=1)
            cells = evidence_for(ex, gen.stats)
            keep = gen.stats.videos[0].keep.numpy()
            assert keep.sum() == gen.stats.visual_tokens_kept
            hit, total = hit + int((cells & keep).sum()), total + int(cells.sum())
        assert rec["evidence_recall"] == pytest.approx(hit / total)
        assert 0 < rec["evidence_recall"] < 1
    assert sharpv["evidence_recall"] > random["evidence_recall"]
