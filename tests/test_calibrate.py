"""`sharpv calibrate` (the search on known curves, features encoded once, the files it writes, bad
input) and method config files (`--config` of answer, eval and bench, `sharpv.from_config`)."""

from __future__ import annotations

import json
import math

import pytest

import sharpv
from sharpv.cli import main
from sharpv.errors import SharpVError
from sharpv.harness.calibrate import (
    STAGE1, STAGE2, Search, Target, heldout_check, parse_target,
)
from sharpv.methods import SharpV, SharpVConfig, load_config

# --- the search on a fake evaluator with known curves ---------------------------------------------

N = 1000  # questions of the fake calibration set


def kept_of(k: float, floor: float = 1 / 16) -> float:
    """Monotone in K, saturating at 1, with a per-frame floor, independent of w (as SharpV's)."""
    return min(1.0, max(floor, 0.05 * k))


class Fake:
    """accuracy = min(top, base[w] + slope * kept); stage 2 lowers retention as M grows and costs
    answers above ``m_cost``. Counts evaluations per settings."""

    def __init__(self, base=None, slope=1.0, top=1.0, floor=1 / 16, m_cost=0.65):
        self.base = base or {0.5: 0.80, 1.0: 0.75, 2.0: 0.70}
        self.slope, self.top, self.floor, self.m_cost = slope, top, floor, m_cost
        self.calls: list[dict] = []

    def __call__(self, settings: dict) -> dict:
        self.calls.append(dict(settings))
        kept = kept_of(settings["ratio_scale"], self.floor)
        acc = min(self.top, self.base[settings["spatial_weight"]] + self.slope * kept)
        correct = int(round(acc * N))
        retention = kept
        if settings.get("kv"):
            m = settings["kv_threshold"]
            retention = kept * (1.0 - 0.5 * (m >= 0.35) - 0.2 * (m >= 0.55))
            if m > self.m_cost:
                correct -= 30
        return {"accuracy": correct / N, "correct": correct, "n": N, "kept_share": kept,
                "equivalent_retention": retention, "kv_share": retention}


DENSE = {"accuracy": 1.0, "correct": N, "n": N}


def run_search(fake, target, **kw):
    kw.setdefault("spatial_weights", (0.5, 1.0, 2.0))
    return Search(fake, target, DENSE, **kw).run()


def test_accuracy_target_chooses_the_fewest_tokens_that_reach_it():
    fake = Fake()
    result = run_search(fake, Target("accuracy", 0.95), kv_thresholds=None)
    assert result.met
    s1 = [t for t in result.trials if t.phase == STAGE1]
    feasible = [t for t in s1 if t.correct >= 950]
    assert result.chosen.settings["spatial_weight"] == 0.5  # the best w reaches it with fewer tokens
    assert result.chosen.kept_share == min(t.kept_share for t in feasible)
    assert result.chosen.correct >= 950
    # w = 0.5 needs kept >= 0.15, i.e. K >= 3: the bisection lands within the tolerance of it
    assert 0.15 <= result.chosen.kept_share <= 0.15 + 0.002 + 1e-9
    assert result.chosen.settings == {"ratio_scale": result.chosen.settings["ratio_scale"], "spatial_weight": 0.5,
                                      "kv": False}
    assert "met on the calibration set" in result.message


def test_keep_target_chooses_the_best_accuracy_within_the_share():
    fake = Fake()
    result = run_search(fake, Target("keep", 0.12), kv_thresholds=None)
    assert result.met and result.chosen.kept_share <= 0.12
    within = [t for t in result.trials if t.kept_share <= 0.12]
    assert result.chosen.correct == max(t.correct for t in within)
    assert result.chosen.settings["spatial_weight"] == 0.5
    assert result.chosen.kept_share >= 0.12 - 0.002 - 1e-9  # the boundary was bisected


def test_ties_go_to_the_point_tried_first():
    fake = Fake(base={0.5: 0.8, 1.0: 0.8, 2.0: 0.8})  # w changes nothing
    result = run_search(fake, Target("accuracy", 0.95), kv_thresholds=None, spatial_weights=(1.0, 0.5, 2.0))
    assert result.chosen.settings["spatial_weight"] == 1.0  # first in the grid
    same = [t for t in result.trials if t.kept_share == result.chosen.kept_share and t.correct == result.chosen.correct]
    assert result.chosen.index == min(t.index for t in same)


def test_every_point_is_evaluated_once():
    fake = Fake()
    run_search(fake, Target("accuracy", 0.95), kv_thresholds=(0.2, 0.4, 0.6, 0.8))
    keys = [tuple(sorted(c.items())) for c in fake.calls]
    assert len(keys) == len(set(keys))


def test_unreachable_accuracy_is_stated_with_the_best_effort():
    fake = Fake(top=0.9)
    result = run_search(fake, Target("accuracy", 0.99), kv_thresholds=None)
    assert not result.met
    assert "NOT reached" in result.message and "best effort" in result.message
    assert result.chosen.correct == max(t.correct for t in result.trials)
    assert result.chosen.kept_share == min(t.kept_share for t in result.trials if t.correct == result.chosen.correct)
    assert max(t.kept_share for t in result.trials) == 1.0  # it searched up to keeping everything


def test_unreachable_keep_is_stated_with_the_fewest_tokens():
    fake = Fake()
    result = run_search(fake, Target("keep", 0.01), kv_thresholds=None)
    assert not result.met
    assert "NOT reached" in result.message and "min_tokens_per_frame" in result.message
    assert result.chosen.kept_share == pytest.approx(1 / 16)
    # the walk down stopped at the floor (K = 1 is already there: one more halving shows it) instead of
    # running on to k_min
    for w in (0.5, 1.0, 2.0):
        assert len([t for t in result.trials if t.settings["spatial_weight"] == w]) == 2


def test_stage_two_takes_the_largest_saving_that_loses_nothing():
    fake = Fake()
    result = run_search(fake, Target("accuracy", 0.95), kv_thresholds=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))
    assert result.chosen.phase == STAGE2 and result.chosen.settings["kv"] is True
    s1 = result.stage1
    assert result.chosen.correct >= s1.correct
    m = result.chosen.settings["kv_threshold"]
    assert 0.55 <= m <= 0.65  # saves the most (retention x0.3) without the loss above 0.65
    # among equal savings, the smallest M was kept (nearest the paper's 0.2)
    equal = [t for t in result.trials if t.phase == STAGE2 and t.retention == result.chosen.retention
             and t.correct == result.chosen.correct]
    assert m == min(t.settings["kv_threshold"] for t in equal)
    assert all(t.settings["ratio_scale"] == s1.settings["ratio_scale"] for t in result.trials if t.phase == STAGE2)


def test_stage_two_off_when_every_threshold_costs_answers():
    fake = Fake(m_cost=0.0)
    result = run_search(fake, Target("accuracy", 0.95), kv_thresholds=(0.2, 0.4))
    assert result.chosen is result.stage1 and result.chosen.settings["kv"] is False
    assert "stage 2 off" in result.message


@pytest.mark.parametrize("text,kind,value", [("accuracy=0.99", "accuracy", 0.99), ("keep=0.12", "keep", 0.12),
                                             (" Accuracy = 1 ", "accuracy", 1.0)])
def test_parse_target(text, kind, value):
    assert parse_target(text) == Target(kind, value)


@pytest.mark.parametrize("text", ["accuracy", "accuracy=", "accuracy=x", "speed=0.9", "accuracy=0", "accuracy=1.5",
                                  "keep=-0.1", "keep=nan", ""])
def test_parse_target_refuses(text):
    with pytest.raises(SharpVError, match="--target"):
        parse_target(text)


def test_heldout_check_compares_with_the_cheapest_fixed_budget():
    def rec(method, budget, acc, kept, name="sharpv"):
        return {"method": method, "method_name": name, "budget": budget, "accuracy": acc, "kept_share": kept}

    records = [rec("dense", None, 0.97, 1.0, "dense"), rec("sharpv[calibrated]", None, 0.955, 0.16),
               rec("sharpv", 0.1, 0.93, 0.1), rec("sharpv", 0.2, 0.959, 0.2), rec("sharpv", 0.3, 0.963, 0.3),
               rec("sharpv", None, 0.90, 0.09)]
    check = heldout_check(Target("accuracy", 0.98), records, "sharpv[calibrated]")
    assert check["best_fixed_budget"]["budget"] == 0.2 and check["met"]
    records[1]["kept_share"] = 0.21
    assert not heldout_check(Target("accuracy", 0.98), records, "sharpv[calibrated]")["met"]
    records[1].update(kept_share=0.15, accuracy=0.94)
    assert not heldout_check(Target("accuracy", 0.98), records, "sharpv[calibrated]")["met"]
    keep = heldout_check(Target("keep", 0.2), records, "sharpv[calibrated]")
    assert keep["met"] and keep["best_fixed_budget"]["budget"] == 0.2


# --- the shipped model: cached inputs, features encoded once, the whole command --------------------


@pytest.fixture(scope="module")
def shipped():
    from sharpv.answer import load_model
    from sharpv.synthetic.model import shipped_model_path

    return load_model(shipped_model_path())


def test_cached_inputs_give_evaluates_answers(shipped):
    from sharpv.harness.bench import MethodSpec
    from sharpv.harness.evaluate import evaluate, evaluate_prepared, prepare_videos, synthetic_examples
    from sharpv.methods import create

    model, processor = shipped
    examples = synthetic_examples(seed=5, n=12)
    records = evaluate(model, processor, examples, [MethodSpec.parse("sharpv")], [None, 0.2], frames=16,
                       keep_predictions=True)
    prepared = prepare_videos(model, processor, examples, frames=16)
    assert all(v.encoded and "mm_encoder_outputs" in v.inputs[0] and "pixel_values_videos" not in v.inputs[0]
               for v in prepared)
    dense = evaluate_prepared(model, processor, examples, prepared, create("dense"), spec=MethodSpec("dense", "dense"),
                              keep_predictions=True)
    for ref, method, budget in zip(records, [create("dense"), SharpV(), SharpV(keep_ratio=0.2)], [None, None, 0.2]):
        rec = evaluate_prepared(model, processor, examples, prepared, method, spec=MethodSpec("sharpv", "sharpv"),
                                budget=budget, keep_predictions=True, dense=dense)
        assert rec["predictions"] == ref["predictions"]
        for key in ("accuracy", "kept_share", "visual_tokens_kept", "kv_share", "equivalent_retention"):
            assert rec[key] == ref[key], key


def test_eval_encodes_each_video_once_for_methods_that_do_not_read_the_tower(shipped):
    """evaluate() shares each video's features between dense and every method that does not read
    the vision tower's attention (VisionZip runs the tower itself): the same answers and figures
    as running the tower in every generate(), with fewer tower calls."""
    from sharpv.adapters import adapter_for
    from sharpv.harness.bench import MethodSpec
    from sharpv.harness.evaluate import evaluate, synthetic_examples

    model, processor = shipped
    examples = synthetic_examples(seed=5, n=6)
    specs = [MethodSpec.parse(x) for x in ("sharpv", "random", "visionzip")]
    calls = []
    hook = adapter_for(model).vision_tower().register_forward_hook(lambda *a: calls.append(1))
    try:
        once = evaluate(model, processor, examples, specs, [0.2], frames=16, keep_predictions=True)
        tower_once, calls[:] = len(calls), []
        each = evaluate(model, processor, examples, specs, [0.2], frames=16, keep_predictions=True, encode_once=False)
        tower_each = len(calls)
    finally:
        hook.remove()
    for a, b in zip(once, each):
        assert a["predictions"] == b["predictions"], a["method"]
        for key in ("accuracy", "kept_share", "visual_tokens_kept", "kv_share", "equivalent_retention"):
            assert a[key] == b[key], (a["method"], key)
    assert [r["method"] for r in once] == ["dense", "sharpv", "random", "visionzip"]
    assert tower_each == 4 * len(examples) and tower_once == 2 * len(examples)


def test_cached_inputs_share_a_video_between_its_questions(shipped, tmp_path):
    """JSONL rows on one video file: one prepared video, one shared prefill, evaluate's answers."""
    from sharpv.harness.bench import MethodSpec
    from sharpv.harness.evaluate import evaluate, evaluate_prepared, load_jsonl, prepare_videos
    from sharpv.synthetic import generate

    model, processor = shipped
    items = generate(3, 6)
    rows = []
    for k, item in enumerate(items[:2]):
        item.write_mp4(tmp_path / f"v{k}.mp4")
        for other in items[:3]:  # three questions on each video (answers of the first item's kind)
            rows.append({"video": f"v{k}.mp4", "question": other.question, "answer": item.answer, "type": other.qtype})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_jsonl(tmp_path / "data.jsonl")
    ref = evaluate(model, processor, examples, [MethodSpec.parse("sharpv")], [None], frames=16, keep_predictions=True)
    prepared = prepare_videos(model, processor, examples, frames=16)
    assert [v.indices for v in prepared] == [[0, 1, 2], [3, 4, 5]] and all(v.share for v in prepared)
    rec = evaluate_prepared(model, processor, examples, prepared, SharpV(), spec=MethodSpec("sharpv", "sharpv"),
                            keep_predictions=True)
    assert rec["predictions"] == ref[1]["predictions"] and rec["kept_share"] == ref[1]["kept_share"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_calibrate_end_to_end_encodes_every_video_once(capsys, tmp_path, monkeypatch):
    """The command on the shipped model with a small set: files written, the vision tower runs once
    per video (calibration and held-out) however many points are tried, dense answers once per set."""
    import sharpv.harness.calibrate_job as job

    calls = {"vision": 0, "dense": 0}
    load = job.load_model

    def counting_load(*a, **kw):
        model, processor = load(*a, **kw)
        model.model.vision_tower.register_forward_hook(lambda *_: calls.__setitem__("vision", calls["vision"] + 1))
        return model, processor

    answer_all = job.evaluate_prepared

    def counting_eval(*a, **kw):
        calls["dense"] += kw["spec"].name == "dense"
        return answer_all(*a, **kw)

    monkeypatch.setattr(job, "load_model", counting_load)
    monkeypatch.setattr(job, "evaluate_prepared", counting_eval)
    out = tmp_path / "cal"
    code, stdout, err = run(capsys, "calibrate", "--target", "accuracy=0.9", "--n", 8, "--holdout-n", 6,
                            "--spatial-weights", "0.5,1", "--kv-thresholds", "0.3,0.5", "--refine", 2,
                            "--threads", 1, "--out", out)
    assert code == 0, err
    curve = json.loads((out / "curve.json").read_text())
    points = curve["points"]
    assert len(points) >= 5  # several K per w, then M
    assert calls["vision"] == 8 + 6, calls  # once per video, not once per point
    assert calls["dense"] == 2
    assert {p["phase"] for p in points} == {STAGE1, STAGE2}
    assert sum(p["chosen"] for p in points) == 1
    for name in ("config.json", "curve.json", "accuracy_vs_kept_share.png", "results.json", "results.md"):
        assert (out / name).stat().st_size > 0, name
    config = load_config(out / "config.json")
    assert config.method == "sharpv" and config.label == "sharpv[calibrated]"
    chosen = next(p for p in points if p["chosen"])
    assert config.settings["ratio_scale"] == chosen["ratio_scale"] and config.settings["keep_ratio"] is None
    assert config.calibration["target"] == "accuracy=0.9" and config.calibration["n"] == 8
    results = json.loads((out / "results.json").read_text())
    methods = [(r["method"], r["budget"]) for r in results["heldout"]["records"]]
    assert methods == [("dense", None), ("sharpv[calibrated]", None), ("sharpv", 0.1), ("sharpv", 0.2),
                       ("sharpv", 0.3), ("sharpv", None)]
    assert results["heldout"]["n"] == 6 and "met" in results["heldout"]["check"]
    assert "chosen:" in stdout and "ratio_scale=" in stdout
    md = (out / "results.md").read_text()
    assert "Held-out set" in md and "| * |" in md


def test_interrupted_calibration_continues_where_it_stopped(capsys, tmp_path, monkeypatch):
    """Ctrl-C during the third point leaves dense and two points in --out's state; the same command
    then measures only the points not yet measured and writes what an uninterrupted run writes.
    Other options are refused while a state is there, --overwrite starts over, and the state goes
    when a run completes."""
    import sharpv.harness.calibrate_job as job
    from sharpv.harness.calibrate import STATE_FILE

    answer_all = job.evaluate_prepared
    calls: list[str] = []

    def counting(*a, **kw):
        calls.append(kw["spec"].name)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return answer_all(*a, **kw)

    monkeypatch.setattr(job, "evaluate_prepared", counting)
    argv = ["calibrate", "--target", "accuracy=0.9", "--n", 6, "--no-holdout", "--spatial-weights", "0.5,1",
            "--kv-thresholds", "0.3,0.5", "--refine", 1, "--threads", 1]

    interrupt_at = None
    code, _, err = run(capsys, *argv, "--out", tmp_path / "whole")
    assert code == 0, err
    whole = len(calls)
    assert whole >= 6 and not (tmp_path / "whole" / STATE_FILE).exists()

    out = tmp_path / "cut"
    calls.clear()
    interrupt_at = 4  # dense, point 1, point 2, then Ctrl-C in point 3
    code, _, err = run(capsys, *argv, "--out", out)
    assert code == 130, err
    state = json.loads((out / STATE_FILE).read_text())
    assert state["dense"]["n"] == 6 and len(state["points"]) == 2
    assert not (out / "config.json").exists()

    code, _, err = run(capsys, *[a if a != "accuracy=0.9" else "accuracy=0.95" for a in argv], "--out", out)
    assert code == 2 and "unfinished calibration of other settings" in err and "--overwrite" in err

    calls.clear()
    interrupt_at = None
    code, _, err = run(capsys, *argv, "--out", out)
    assert code == 0, err
    assert "resuming an interrupted calibration" in err and "2 points" in err
    assert len(calls) == whole - 3, calls  # neither dense nor the two points measured before
    assert "dense" not in calls
    curve = lambda d: [{k: p[k] for k in ("phase", "ratio_scale", "spatial_weight", "M", "accuracy", "kept_share",
                                          "chosen")} for p in json.loads((d / "curve.json").read_text())["points"]]
    assert curve(out) == curve(tmp_path / "whole")
    assert (out / "config.json").read_text().split('"calibration"')[0] == \
        (tmp_path / "whole" / "config.json").read_text().split('"calibration"')[0]
    assert json.loads((out / "config.json").read_text())["calibration"]["resumed"]["points"] == 2
    assert not (out / STATE_FILE).exists()

    (out / STATE_FILE).write_text(json.dumps({"version": 1, "fingerprint": {}, "dense": None, "points": [],
                                              "seconds": 0}))
    calls.clear()
    code, _, err = run(capsys, *argv, "--out", out, "--overwrite")
    assert code == 0, err
    assert len(calls) == whole and "resuming" not in err


# --- config files ---------------------------------------------------------------------------------

SETTINGS = {"ratio_scale": 2.5, "spatial_weight": 0.5, "kv_threshold": 0.4}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"method": "sharpv", "settings": SETTINGS, "label": "sharpv[calibrated]",
                                "calibration": {"target": "accuracy=0.98"}}))
    return path


def test_from_config_is_the_same_method_as_create(config_file):
    method = sharpv.from_config(config_file)
    assert isinstance(method, SharpV) and method.config == SharpVConfig(**SETTINGS)
    assert sharpv.from_config({"method": "sharpv", "settings": SETTINGS}).config == method.config
    assert sharpv.from_config({"method": "random", "settings": {"keep_ratio": 0.2, "seed": 3}}).config.keep_ratio == 0.2
    assert load_config(config_file).display_label == "sharpv[calibrated]"
    assert load_config({"method": "evs"}).display_label == "evs[config]"


@pytest.mark.parametrize("content,says", [
    (None, "does not exist"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"settings": {}}', '"method" must name a registered method'),
    ('{"method": "magic"}', "unknown method 'magic'"),
    ('{"method": "sharpv", "settings": {"speed": 2}}', "sharpv has no setting 'speed'"),
    ('{"method": "sharpv", "settings": {"ratio_scale": -1}}', "ratio_scale must be a number > 0"),
    ('{"method": "sharpv", "settings": {"kv_min_layer": 2.5}}', "kv_min_layer must be an integer >= 1"),
    ('{"method": "sharpv", "settings": {"keep_ratio": 1.5}}', "keep_ratio must be"),
    ('{"method": "sharpv", "settings": [1]}', '"settings" must be a JSON object'),
    ('{"method": "sharpv", "setting": {}}', "unknown key 'setting'"),
    ('{"method": "sharpv", "label": ""}', '"label" must be a non-empty one-line string'),
])
def test_bad_config_files_are_one_sharpv_error(tmp_path, content, says):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SharpVError, match=None) as info:
        sharpv.from_config(path)
    assert says in str(info.value) and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_answer_with_config_equals_the_same_settings_as_flags(capsys, tmp_path, config_file):
    from sharpv.synthetic import generate

    item = next(it for it in generate(11, 6) if it.qtype == "count")
    clip = item.write_mp4(tmp_path / "clip.mp4")
    code, by_config, err = run(capsys, "answer", clip, item.question, "--config", config_file, "--json")
    assert code == 0, err
    code, by_flags, err = run(capsys, "answer", clip, item.question, "--set", "ratio_scale=2.5", "--set",
                              "spatial_weight=0.5", "--kv-threshold", 0.4, "--json")
    assert code == 0, err
    a, b = json.loads(by_config), json.loads(by_flags)
    for key in ("answer", "method", "kept_per_frame", "visual_tokens_kept", "kv_withdraw_layer", "config",
                "new_tokens", "layer_similarity"):
        assert a[key] == b[key], key
    assert a["config"]["ratio_scale"] == 2.5 and a["config"]["spatial_weight"] == 0.5


def test_eval_with_config_equals_the_same_settings_as_a_method_spec(capsys, tmp_path, config_file):
    code, _, err = run(capsys, "eval", "--n", 6, "--config", config_file, "--threads", 1, "--out", tmp_path / "a")
    assert code == 0, err
    code, _, err = run(capsys, "eval", "--n", 6, "--methods", "sharpv:ratio_scale=2.5:spatial_weight=0.5:kv_threshold=0.4",
                       "--budgets", "adaptive", "--threads", 1, "--out", tmp_path / "b")
    assert code == 0, err
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [(r["method"], r["budget"]) for r in a] == [("dense", None), ("sharpv[calibrated]", None)]
    for key in ("accuracy", "correct", "kept_share", "kv_share", "equivalent_retention", "accuracy_by_type"):
        assert a[1][key] == b[1][key], key
    pa = [json.loads(x) for x in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    pb = [json.loads(x) for x in (tmp_path / "b" / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in pa] == [p["prediction"] for p in pb]


def test_bench_with_config_runs_it_once_next_to_the_methods(capsys, tmp_path, config_file):
    from sharpv.synthetic.model import shipped_model_path

    common = ["bench", "--model", shipped_model_path(), "--frames", 8, "--repeats", 1, "--warmup", 0,
              "--new-tokens", 2, "--dtype", "float32"]
    code, _, err = run(capsys, *common, "--config", config_file, "--methods", "sharpv:ratio_scale=2.5:spatial_weight=0.5:"
                       "kv_threshold=0.4", "--budgets", "0.2,adaptive", "--out", tmp_path / "b")
    assert code == 0, err
    records = json.loads((tmp_path / "b" / "results.json").read_text())["records"]
    main_rows = [r for r in records if r["method"] != "ideal"]
    assert [(r["method"], r["budget"]) for r in main_rows] == [
        ("dense", None), ("sharpv:ratio_scale=2.5:spatial_weight=0.5:kv_threshold=0.4", 0.2),
        ("sharpv:ratio_scale=2.5:spatial_weight=0.5:kv_threshold=0.4", None), ("sharpv[calibrated]", None)]
    by_flags, by_config = main_rows[2], main_rows[3]
    assert by_config["visual_tokens_kept"] == by_flags["visual_tokens_kept"]
    assert by_config["kv_cache_bytes"] == by_flags["kv_cache_bytes"]


# --- bad input: one line, exit 2, before any model loads ---------------------------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    import sharpv.answer
    import sharpv.harness.bench_job
    import sharpv.harness.calibrate_job
    import sharpv.harness.eval_job

    def refuse(*_, **__):
        raise AssertionError("a model was loaded before the bad value was reported")

    for module in (sharpv.answer, sharpv.harness.eval_job, sharpv.harness.bench_job, sharpv.harness.calibrate_job):
        monkeypatch.setattr(module, "load_model", refuse)
    monkeypatch.setattr(sharpv.harness.bench_job, "build_shape_model", refuse)


def bad_cases():
    c = ["calibrate", "--target", "accuracy=0.98", "--out", "{root}/out"]
    a = ["answer", "{clip}", "q", "--config", "{cfg}"]
    return [
        ("target missing", ["calibrate", "--out", "{root}/o"], "Missing option '--target'"),
        ("out missing", ["calibrate", "--target", "keep=0.1"], "Missing option '--out'"),
        ("target malformed", ["calibrate", "--target", "accuracy", "--out", "{root}/o"], "--target takes accuracy=A"),
        ("target unknown", ["calibrate", "--target", "speed=2", "--out", "{root}/o"], "--target takes accuracy=A"),
        ("target not a number", ["calibrate", "--target", "keep=low", "--out", "{root}/o"], "--target takes"),
        ("target 0", ["calibrate", "--target", "accuracy=0", "--out", "{root}/o"], "--target accuracy= must be in (0, 1]"),
        ("target above 1", ["calibrate", "--target", "keep=1.2", "--out", "{root}/o"], "--target keep= must be in (0, 1]"),
        ("data and seed", c + ["--data", "{root}/d.jsonl", "--seed", "3"], "drop them with --data"),
        ("holdout data and seed", c + ["--holdout-data", "{root}/d.jsonl", "--holdout-seed", "3"],
         "drop them with --holdout-data"),
        ("no-holdout and holdout-n", c + ["--no-holdout", "--holdout-n", "10"], "--no-holdout skips the held-out report"),
        ("data missing", c + ["--data", "{root}/none.jsonl"], "--data {root}/none.jsonl does not exist"),
        ("holdout data missing", c + ["--holdout-data", "{root}/none.jsonl"], "--holdout-data {root}/none.jsonl does not exist"),
        ("n 0", c + ["--n", "0"], "--n must be at least 1"),
        ("holdout-n 0", c + ["--holdout-n", "0"], "--holdout-n must be at least 1"),
        ("seed -1", c + ["--seed", "-1"], "--seed must be at least 0"),
        ("frames 2", c + ["--frames", "2"], "--frames must be at least 3"),
        ("refine -1", c + ["--refine", "-1"], "--refine must be at least 0"),
        ("weights text", c + ["--spatial-weights", "0.5,big"], "--spatial-weights takes comma-separated numbers"),
        ("weights negative", c + ["--spatial-weights", "-1"], "--spatial-weights values must be in [0,"),
        ("weights empty", c + ["--spatial-weights", ","], "--spatial-weights names no value"),
        ("kv thresholds", c + ["--kv-thresholds", "0.2,5"], "--kv-thresholds values must be in [-1, 2]"),
        ("budgets 0", c + ["--budgets", "0,0.2"], "--budgets values must be in (0, 1]"),
        ("budgets 1.5", c + ["--budgets", "1.5"], "--budgets values must be in [0, 1]"),
        ("set searched", c + ["--set", "ratio_scale=2"], "--set ratio_scale: calibrate searches it"),
        ("set unknown", c + ["--set", "speed=2"], "--set speed: sharpv has no such setting"),
        ("set bad value", c + ["--set", "kv_min_layer=0"], "--set kv_min_layer must be an integer >= 1"),
        ("dtype", c + ["--dtype", "fp8"], "--dtype must be one of"),
        ("device", c + ["--device", "tpu"], "--device must be"),
        ("threads", c + ["--threads", "0"], "--threads must be at least 1"),
        ("out is a file", ["calibrate", "--target", "keep=0.1", "--out", "{cfg}"], "is a file; pass a folder"),
        ("model missing", c + ["--model", "{root}/none"], "--model {root}/none does not exist"),
        # --config
        ("answer config and method", a + ["--method", "evs"], "--config sets the method and all its settings; drop --method"),
        ("answer config and keep-ratio", a + ["--keep-ratio", "0.2"], "drop --keep-ratio"),
        ("answer config and no-kv", a + ["--no-kv"], "drop --no-kv"),
        ("answer config and set", a + ["--set", "ratio_scale=2"], "drop --set"),
        ("answer config and kv flag", a + ["--kv-threshold", "0.3"], "drop --kv-threshold"),
        ("answer config missing", ["answer", "{clip}", "q", "--config", "{root}/none.json"], "config file {root}/none.json does not exist"),
        ("answer config not json", ["answer", "{clip}", "q", "--config", "{clip}"], "is not a UTF-8 text file"),
        ("answer config unknown method", ["answer", "{clip}", "q", "--config", "{root}/magic.json"], "unknown method 'magic'"),
        ("answer config bad value", ["answer", "{clip}", "q", "--config", "{root}/badvalue.json"], "ratio_scale must be a number > 0"),
        ("eval config missing", ["eval", "--n", "2", "--config", "{root}/none.json"], "does not exist"),
        ("eval config duplicate label", ["eval", "--n", "2", "--config", "{cfg}", "--config", "{cfg}"], "two files share the label"),
        ("bench config bad", ["bench", "--shape", "qwen2.5-vl-3b", "--frames", "2", "--config", "{root}/magic.json"], "unknown method"),
        ("bench config long video", ["bench", "--shape", "qwen2.5-vl-3b", "--frames", "2", "--long-video", "--config", "{cfg}"],
         "--config applies to the standard bench, not --long-video"),
    ]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    from sharpv.synthetic import generate

    root = tmp_path_factory.mktemp("calbad")
    clip = generate(0, 1)[0].write_mp4(root / "clip.mp4")
    (root / "cfg.json").write_text(json.dumps({"method": "sharpv", "settings": SETTINGS}))
    (root / "magic.json").write_text(json.dumps({"method": "magic"}))
    (root / "badvalue.json").write_text(json.dumps({"method": "sharpv", "settings": {"ratio_scale": 0}}))
    (root / "d.jsonl").write_text(json.dumps({"video": "clip.mp4", "question": "q ?", "answer": "red"}) + "\n")
    return {"root": root, "clip": clip, "cfg": root / "cfg.json"}


@pytest.mark.parametrize("name,argv,says", bad_cases(), ids=[c[0] for c in bad_cases()])
def test_bad_input_is_one_line_and_exit_2(capsys, bad_files, no_model_loading, name, argv, says):
    values = {k: str(v) for k, v in bad_files.items()}
    code, out, err = run(capsys, *[part.format(**values) for part in argv])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (name, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert says.format(**values) in lines[0], (name, lines[0])


def test_same_calibration_and_heldout_set_is_a_warning(capsys, bad_files, monkeypatch):
    import sharpv.harness.calibrate_job as job

    def stop(*_, **__):
        raise SharpVError("stopped before loading")

    monkeypatch.setattr(job, "load_model", stop)
    code, _, err = run(capsys, "calibrate", "--target", "keep=0.2", "--seed", 1234, "--out", bad_files["root"] / "o")
    assert code == 2 and "warning: the calibration and held-out sets are the same set" in err


def test_kept_share_does_not_depend_on_the_spatial_weight():
    """The search compares w at equal K as at equal kept share: SharpV's counts never read w."""
    import torch

    from sharpv.core import select_tokens

    feats = torch.randn(8, 16, 12, generator=torch.Generator().manual_seed(0))
    for k in (0.5, 1.0, 2.0, 3.3):
        counts = {w: select_tokens(feats, ratio_scale=k, spatial_weight=w).keep.sum(1).tolist() for w in (0, 0.5, 1, 2)}
        assert len({tuple(c) for c in counts.values()}) == 1, (k, counts)
    assert not math.isnan(k)
