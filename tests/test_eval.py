"""The shipped model, `sharpv eval` (synthetic and JSONL datasets), scoring and intervals."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from sharpv.answer import load_model
from sharpv.harness.bench import MethodSpec
from sharpv.cli import main
from sharpv.errors import SharpVError
from sharpv.harness.evaluate import (Example, evaluate, is_correct, load_jsonl, majority_rates, paired_difference,
                                     synthetic_examples, wilson)
from sharpv.synthetic import QUESTION_TYPES, generate
from sharpv.synthetic.model import FRAMES, shipped_model_path

from test_video import write_video


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_shipped_model_is_a_small_trained_llava_onevision():
    path = shipped_model_path()
    weights = path / "model.safetensors"
    assert weights.stat().st_size < 25 * 2**20
    with safe_open(str(weights), "pt") as f:
        assert any("vision_tower" in k for k in f.keys()) and any("multi_modal_projector" in k for k in f.keys())
    model, processor = load_model(path)  # from_pretrained
    assert model.config.model_type == "llava_onevision"
    assert model.config.vision_config.model_type == "siglip_vision_model"
    assert model.config.text_config.model_type == "qwen2"
    assert processor.settings["num_frames"] == FRAMES
    record = json.loads((path / "training.json").read_text())
    assert record["steps"] > 0 and record["wall_seconds"] > 0 and "hardware" in record


def test_shipped_model_answers_generated_videos():
    """Well above chance on a small fresh set (random weights would sit near 30%)."""
    model, processor = load_model(shipped_model_path())
    examples = synthetic_examples(seed=99, n=24)
    [dense] = evaluate(model, processor, examples, [], [], frames=FRAMES, keep_predictions=True)
    vocabulary = {a for _, answers in QUESTION_TYPES.values() for a in answers}
    assert all(p["prediction"] in vocabulary for p in dense["predictions"]), dense["predictions"]
    assert dense["accuracy"] >= 0.6, dense["predictions"]


def test_answer_without_model_uses_the_shipped_one(capsys, tmp_path):
    clip = tmp_path / "clip.mp4"
    code, out, err = run(capsys, "sample-video", clip, "--type", "colour", "--seed", 3)
    assert code == 0 and out.strip() == str(clip) and clip.exists()
    question = err.split("question: ")[1].split("\n")[0]
    code, out, err = run(capsys, "answer", clip, question, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["answer"] in {a for _, answers in QUESTION_TYPES.values() for a in answers}
    assert result["frames"] == FRAMES and result["method"] == "sharpv"


def test_eval_writes_results_files_and_fields(capsys, tmp_path):
    out = tmp_path / "eval"
    code, _, err = run(capsys, "eval", "--n", 6, "--methods", "sharpv,random", "--budgets", "0.2,adaptive",
                       "--threads", 1, "--out", out)
    assert code == 0, err
    records = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["budget"]) for r in records] == [("dense", None), ("sharpv", 0.2), ("sharpv", None),
                                                             ("random", 0.2)]
    for r in records:
        for key in ("method", "budget", "accuracy", "accuracy_by_type", "kept_share", "n", "ci95", "prefill_seconds",
                    "kv_share", "in_llm_pruned_share"):
            assert key in r
        assert r["n"] == 6 and set(r["accuracy_by_type"]) == set(QUESTION_TYPES)
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    assert records[0]["kept_share"] == 1.0
    assert abs(records[1]["kept_share"] - 0.2) < 0.01 and abs(records[3]["kept_share"] - 0.2) < 0.01
    assert records[2]["kept_share"] < 1.0
    table = (out / "results.md").read_text()
    assert "| method |" in table and "sharpv" in table and "95% CI" in table
    assert (out / "accuracy_vs_kept_share.png").read_bytes()[:4] == b"\x89PNG"
    run_record = json.loads((out / "run.json").read_text())
    assert "seed 1234" in run_record["dataset"]
    assert run_record["majority_by_type"]["colour"] == 1.0  # one colour question: its answer is the majority
    assert "accuracy" in err  # the terminal table


def test_eval_reports_the_cost_of_in_llm_methods(capsys, tmp_path):
    """FastV keeps every visual token in its first K layers: its FLOPs share and visual/layer sit
    well above a pre-LLM method's at the same budget, and are shown in the table."""
    out = tmp_path / "eval"
    code, _, err = run(capsys, "eval", "--n", 3, "--methods", "random,fastv", "--budgets", "0.2", "--threads", 1,
                       "--out", out)
    assert code == 0, err
    dense, rand, fastv = json.loads((out / "results.json").read_text())
    assert dense["flops_share"] == 1.0 and dense["equivalent_retention"] == 1.0
    assert rand["flops_share"] < 0.5 and rand["equivalent_retention"] == pytest.approx(rand["kept_share"])
    assert rand["flops_share"] < fastv["flops_share"] < 1.0
    assert fastv["equivalent_retention"] > 0.3 and fastv["kv_share"] < 1.0
    assert " FLOPs share |" in (out / "results.md").read_text()


def _png_width(path) -> int:
    data = path.read_bytes()
    assert data[:4] == b"\x89PNG"
    return int.from_bytes(data[16:20], "big")


def test_shipped_models_are_named():
    from sharpv.synthetic.model import SHIPPED_MODELS

    assert shipped_model_path() == shipped_model_path("mixed-dropout")
    assert shipped_model_path().name == "synthetic-qa"
    assert SHIPPED_MODELS["uniform-dropout"] == "synthetic-qa-uniform"
    with pytest.raises(SharpVError, match="mixed-dropout, uniform-dropout"):
        shipped_model_path("uniform")


def test_uniform_dropout_model_is_shipped_with_its_record():
    """The second shipped model: same architecture, trained with the uniform dropout pattern only."""
    path = shipped_model_path("uniform-dropout")
    record = json.loads((path / "training.json").read_text())
    assert record["dropout_patterns"] == ["uniform"] and record["seed"] == 3 and record["steps"] == 4000
    assert "--dropout-patterns uniform" in record["command"] and record["wall_seconds"] > 0
    for name in ("config.json", "tokenizer.json", "video_preprocessor_config.json", "training_log.json",
                 "learning_curve.png"):
        assert (path / name).exists(), name
    model, processor = load_model(path)
    assert model.config.model_type == "llava_onevision" and processor.settings["num_frames"] == FRAMES


def test_answer_and_calibrate_take_a_shipped_model_name(capsys, tmp_path):
    """`--model NAME` works wherever a checkpoint folder does (answer, viz, calibrate)."""
    from sharpv.cli_values import resolve_model
    from sharpv.synthetic.model import describe_model, shipped_model_name

    assert resolve_model("uniform-dropout") == shipped_model_path("uniform-dropout") and resolve_model(None) is None
    assert shipped_model_name(shipped_model_path("uniform-dropout")) == "uniform-dropout"
    assert shipped_model_name(tmp_path) is None
    assert describe_model(shipped_model_path("uniform-dropout")) == "shipped uniform-dropout model (synthetic-qa-uniform)"
    assert describe_model(tmp_path) == str(tmp_path)  # a user's folder: as given
    clip = tmp_path / "clip.mp4"
    assert run(capsys, "sample-video", clip, "--type", "count", "--seed", 5)[0] == 0
    question = "how many objects are there ?"
    answers = {}
    for name in ("mixed-dropout", "uniform-dropout", None):
        code, out, err = run(capsys, "answer", clip, question, "--json", *(["--model", name] if name else []))
        assert code == 0, err
        answers[name] = json.loads(out)
    untimed = {name: {k: v for k, v in a.items() if not k.endswith("_seconds")} for name, a in answers.items()}
    assert untimed["mixed-dropout"] == untimed[None]
    assert answers["uniform-dropout"]["answer"] in {a for _, ans in QUESTION_TYPES.values() for a in ans}
    for command in (["answer", clip, question], ["viz", clip, "--out", tmp_path / "viz"],
                    ["calibrate", "--target", "keep=0.1", "--out", tmp_path / "cal"]):
        code, _, err = run(capsys, *command, "--model", "uniform")
        assert code == 2 and "mixed-dropout, uniform-dropout" in err and "Traceback" not in err, (command, err)


def test_eval_scores_several_models_in_one_run(capsys, tmp_path):
    """The shipped model twice, under its name and as a folder: records, tables and panels per model."""
    folder = str(shipped_model_path())
    common = ["--n", 3, "--methods", "random", "--budgets", "0.3", "--threads", 1]
    code, _, err = run(capsys, "eval", *common, "--model", "mixed-dropout", "--out", tmp_path / "one")
    assert code == 0, err
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert all("model" not in r for r in one)  # one model: today's records
    out = tmp_path / "two"
    code, shown, err = run(capsys, "eval", *common, "--model", "mixed-dropout", "--model", folder, "--out", out)
    assert code == 0, err
    records = json.loads((out / "results.json").read_text())
    assert [(r["model"], r["method"]) for r in records] == [
        ("mixed-dropout", "dense"), ("mixed-dropout", "random"), (folder, "dense"), (folder, "random")]
    assert records[0]["accuracy"] == records[2]["accuracy"] == one[0]["accuracy"]  # the same weights
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["model"] for p in predictions} == {"mixed-dropout", folder} and len(predictions) == 4 * 3
    table = (out / "results.md").read_text()
    assert table.count("## Model: ") == 2 and table.count("| method | budget | n | accuracy |") == 2
    assert "## Model: mixed-dropout" in table and f"## Model: {folder}" in table
    run_record = json.loads((out / "run.json").read_text())
    assert [m["model"] for m in run_record["models"]] == ["mixed-dropout", folder]
    # the same shipped folder under its name and as a path: named alike, no machine-specific path
    assert {m["checkpoint"] for m in run_record["models"]} == {"shipped mixed-dropout model (synthetic-qa)"}
    # one panel per model: about twice as wide as the one-model plot
    assert _png_width(out / "accuracy_vs_kept_share.png") > 1.6 * _png_width(tmp_path / "one" / "accuracy_vs_kept_share.png")
    assert shown.count("sharpv eval: ") == 2  # a terminal table per model


def test_model_comparison_marks_where_the_order_flips():
    from sharpv.harness.eval_job import comparison_table

    def rec(model, method, budget, accuracy):
        return dict(model=model, method=method, budget=budget, accuracy=accuracy)

    records = [rec("a", "dense", None, 0.97), rec("a", "sharpv", 0.1, 0.93), rec("a", "sharpv", None, 0.90),
               rec("a", "evs", 0.1, 0.96), rec("a", "random", 0.1, 0.89),
               rec("b", "dense", None, 0.96), rec("b", "sharpv", 0.1, 0.85), rec("b", "sharpv", None, 0.80),
               rec("b", "evs", 0.1, 0.84), rec("b", "random", 0.1, 0.80)]
    rows = {line.split(" | ")[0].strip("| ") + "@" + line.split(" | ")[1]: line
            for line in comparison_table(records, ["a", "b"]).splitlines()[2:]}
    assert rows["evs@0.1"].endswith("| 0.960 | 0.840 | +0.030 | -0.010 | flips |")
    assert rows["random@0.1"].endswith("| 0.890 | 0.800 | -0.040 | -0.050 | same |")
    assert rows["sharpv@adaptive"].endswith("| 0.900 | 0.800 | - | - | - |")
    assert rows["dense@-"].endswith("| - | - | - |")  # no SharpV row without a budget to compare with
    assert comparison_table([r for r in records if r["method"] != "sharpv"], ["a", "b"]) == ""
    # with paired intervals: shown next to the difference, and a flip inside one of them is noise
    for r in records:
        if r["method"] == "evs":
            r["vs_sharpv"] = r["accuracy"] - (0.93 if r["model"] == "a" else 0.85)
            r["vs_sharpv_ci95"] = [0.01, 0.05] if r["model"] == "a" else [-0.03, 0.01]
    evs = next(line for line in comparison_table(records, ["a", "b"]).splitlines() if line.startswith("| evs |"))
    assert evs.endswith("| +0.030 [+0.010, +0.050] | -0.010 [-0.030, +0.010] | flips, within noise |")
    records[8]["vs_sharpv_ci95"] = [-0.02, -0.001]
    assert comparison_table(records, ["a", "b"]).count("| flips |") == 1


def test_eval_reads_a_user_jsonl_with_any_model(capsys, tmp_path, tiny_dirs):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "a.mp4", n=8, size=64)
    rows = [
        {"video": "clips/a.mp4", "question": "what color is it ?", "options": ["red", "blue"], "answer": "A", "type": "mc"},
        {"video": "clips/a.mp4", "question": "is it red ?", "answer": "yes", "id": "free"},
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "res"
    code, _, err = run(capsys, "eval", "--data", data, "--model", tiny_dirs["qwen2.5-vl"], "--frames", 4,
                       "--methods", "sharpv", "--budgets", "0.3", "--max-new-tokens", 2, "--out", out)
    assert code == 0, err
    records = json.loads((out / "results.json").read_text())
    assert [r["n"] for r in records] == [2, 2]
    assert set(records[0]["accuracy_by_type"]) == {"all", "mc"}
    assert records[1]["visual_tokens_in"] == 2 * 16  # 4 frames = 2 temporal steps of 16 merged tokens
    assert records[1]["kept_share"] == pytest.approx(0.3, abs=0.02)


def test_export_synthetic_writes_the_jsonl_layout(capsys, tmp_path):
    code, out, err = run(capsys, "export-synthetic", tmp_path / "set", "--seed", 5, "--n", 4)
    assert code == 0, err
    examples = load_jsonl(tmp_path / "set" / "data.jsonl")
    items = generate(5, 4)
    assert [(e.question, e.answer, e.type) for e in examples] == [(i.question, i.answer, i.qtype) for i in items]
    assert all(e.video.exists() for e in examples)
    assert examples[0].load(FRAMES).frames.shape == (FRAMES, 64, 64, 3)
    code, _, err = run(capsys, "export-synthetic", tmp_path / "set", "--n", 4)
    assert code == 2 and "exists" in err


def test_jsonl_layout_errors_name_the_line(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"")
    cases = {
        "not json": ("{oops", "line 1 is not valid JSON"),
        "missing": (json.dumps({"video": "v.mp4", "question": "q"}), "missing or empty answer"),
        "no video": (json.dumps({"video": "nope.mp4", "question": "q", "answer": "a"}), "does not exist"),
        "options": (json.dumps({"video": "v.mp4", "question": "q", "answer": "a", "options": "a,b"}), "options must be"),
        "answer not an option": (json.dumps({"video": "v.mp4", "question": "q", "answer": "D", "options": ["x", "y"]}),
                                 "line 1: answer 'D' is neither an option letter"),
    }
    for name, (line, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(line + "\n")
        with pytest.raises(SharpVError, match=message):
            load_jsonl(path)


def test_scoring_rules():
    free = Example("1", "q", "Left", frames=[0])
    assert is_correct("left.", free) and is_correct(" LEFT ", free) and not is_correct("right", free)
    mc = Example("2", "q", "B", frames=[0], options=["a cup", "a phone"])
    assert is_correct("B", mc) and is_correct("(B) a phone", mc) and is_correct("b.", mc)
    assert is_correct("a phone", mc) and not is_correct("A", mc) and not is_correct("a cup", mc)
    by_text = Example("3", "q", "a cup", frames=[0], options=["a cup", "a phone"])
    assert is_correct("A", by_text) and not is_correct("B", by_text)
    with pytest.raises(SharpVError, match="neither an option letter"):
        is_correct("A", Example("4", "q", "Z", frames=[0], options=["x", "y"]))


def test_majority_rates():
    exs = [Example(str(i), "q", a, frames=[0], type=t) for i, (a, t) in enumerate(
        [("left", "p"), ("left", "p"), ("right", "p"), ("one", "c")])]
    assert majority_rates(exs) == {"c": 1.0, "p": 2 / 3, "overall": 3 / 4}


def test_wilson_interval_known_values():
    low, high = wilson(0, 10)
    assert low == 0.0 and abs(high - 0.2775) < 1e-3
    low, high = wilson(50, 100)
    assert abs(low - 0.4038) < 1e-3 and abs(high - 0.5962) < 1e-3
    assert wilson(0, 0) == (0.0, 1.0)


def test_paired_difference_interval():
    same = [True, False] * 50
    assert paired_difference(same, same) == (0.0, 0.0, 0.0)  # identical runs: no uncertainty at all
    assert paired_difference([True] * 10, [False] * 10) == (1.0, 1.0, 1.0)
    # two runs that agree on 90 of 100 questions, the first right on 9 of the other 10: the
    # difference is +0.08 and its paired interval excludes 0, although each run's own Wilson
    # interval (about +-0.09) overlaps the other's by far
    a = [True] * 60 + [False] * 30 + [True] * 9 + [False] * 1
    b = [True] * 60 + [False] * 30 + [False] * 9 + [True] * 1
    diff, low, high = paired_difference(a, b)
    assert diff == pytest.approx(0.08) and 0.0 < low < diff < high < 0.16
    assert wilson(69, 100)[0] < wilson(61, 100)[1]
    assert paired_difference(a, b) == (diff, low, high)  # seeded: reproducible
    assert paired_difference(b, a) == pytest.approx((-diff, -high, -low), abs=0.011)
    with pytest.raises(ValueError, match="same non-empty list"):
        paired_difference(a, b[:-1])


def test_eval_gives_every_method_its_paired_difference_to_sharpv(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run(capsys, "eval", "--n", 12, "--methods", "sharpv,random,evs", "--budgets", "0.1,adaptive",
                       "--threads", 1, "--out", out)
    assert code == 0, err
    records = {(r["method"], r["budget"]): r for r in json.loads((out / "results.json").read_text())}
    right = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        p = json.loads(line)
        right.setdefault((p["method"], p["budget"]), []).append(p["correct"])
    for method in ("random", "evs"):
        rec = records[(method, 0.1)]
        expected = paired_difference(right[(method, 0.1)], right[("sharpv", 0.1)])
        assert rec["vs_sharpv"] == pytest.approx(rec["accuracy"] - records[("sharpv", 0.1)]["accuracy"])
        assert (rec["vs_sharpv"], *rec["vs_sharpv_ci95"]) == pytest.approx(expected)
    # no difference for the reference itself, dense, or an adaptive run (it keeps another share)
    for key in (("sharpv", 0.1), ("dense", None), ("sharpv", None)):
        assert records[key]["vs_sharpv"] is None and records[key]["vs_sharpv_ci95"] is None
    table = (out / "results.md").read_text()
    assert "vs sharpv [paired 95% CI]" in table
    low, high = records[("random", 0.1)]["vs_sharpv_ci95"]
    assert f"{records[('random', 0.1)]['vs_sharpv']:+.3f} [{low:+.3f}, {high:+.3f}]" in table


def test_synthetic_examples_are_the_generator_items():
    items, examples = generate(4, 6), synthetic_examples(4, 6)
    assert [(e.question, e.answer, e.type) for e in examples] == [(i.question, i.answer, i.qtype) for i in items]
    assert examples[0].load(FRAMES).frames.shape == (FRAMES, 64, 64, 3)


def test_method_specs_follow_the_registry():
    with pytest.raises(SharpVError, match="unknown method"):
        MethodSpec.parse("magic")
