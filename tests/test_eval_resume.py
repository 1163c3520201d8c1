"""An interrupted ``sharpv eval`` continues where it stopped: the same answers and figures as an
uninterrupted run, a state of other settings refused, the state gone once the run finishes."""

from __future__ import annotations

import json

import pytest

import sharpv.harness.evaluate as evaluate_module
from sharpv.answer import load_model
from sharpv.cli import main
from sharpv.errors import SharpVError
from sharpv.harness.bench import MethodSpec
from sharpv.harness.evaluate import EvalState, evaluate, synthetic_examples
from sharpv.synthetic.model import shipped_model_path

TIMING = ("prefill_seconds", "prefill_speedup")


def _figures(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.fixture(scope="module")
def setup():
    model, processor = load_model(shipped_model_path())
    examples = synthetic_examples(99, 8, frames=6)
    specs = [MethodSpec.parse("sharpv"), MethodSpec.parse("random")]
    return model, processor, examples, specs


def _run(setup, state=None):
    model, processor, examples, specs = setup
    return evaluate(model, processor, examples, specs, [0.3, None], frames=6, max_new_tokens=4, keep_predictions=True,
                    state=state)


def test_an_interrupted_run_resumes_to_the_uninterrupted_figures(setup, tmp_path, monkeypatch):
    full = _run(setup)
    path = tmp_path / ".eval_state.json"
    calls = {"n": 0}
    real = evaluate_module._answer_video

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 13:  # in the fourth video (four runs per video: dense, sharpv twice, random)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "_answer_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(setup, EvalState(path, {"run": 1}, every_seconds=0))
    saved = json.loads(path.read_text())
    assert saved["groups_done"] == 3
    monkeypatch.setattr(evaluate_module, "_answer_video", real)
    resumed_at = []
    model, processor, examples, specs = setup
    again = evaluate(model, processor, examples, specs, [0.3, None], frames=6, max_new_tokens=4, keep_predictions=True,
                     state=EvalState(path, {"run": 1}, every_seconds=0), on_resume=lambda d, t: resumed_at.append((d, t)))
    assert resumed_at == [(3, 8)]
    assert _figures(again) == _figures(full)
    final = json.loads(path.read_text())
    assert final["groups_done"] == 8
    # each run that wrote the state is on record: the interrupted one did videos 0-3, this one 3-8
    runs = final["runs"]
    assert [r["videos"] for r in runs] == [[0, 3], [3, 8]] and final["unrecorded_videos"] == 0
    assert all(r["wall_seconds"] > 0 and "sharpv_commit" in r and r["versions"]["torch"] for r in runs)


def test_a_resumed_run_says_what_the_earlier_runs_did(tmp_path):
    path = tmp_path / ".eval_state.json"
    tallies, predictions = [evaluate_module._Tally() for _ in range(4)], [{} for _ in range(4)]
    first = EvalState(path, {"run": 1})
    assert first.load(4) is None
    first.save(2, tallies, predictions, force=True)
    assert first.history() is None  # it started from nothing
    second = EvalState(path, {"run": 1})
    assert second.load(4)[0] == 2
    history = second.history()
    assert history["videos_before"] == 2 and history["unrecorded_videos"] == 0
    assert [r["videos"] for r in history["earlier_runs"]] == [[0, 2]]
    assert history["earlier_wall_seconds"] == round(history["earlier_runs"][0]["wall_seconds"], 1)
    # a state written before runs were recorded: its videos are counted as unrecorded, not as free
    raw = json.loads(path.read_text())
    del raw["runs"], raw["unrecorded_videos"]
    path.write_text(json.dumps(raw))
    old = EvalState(path, {"run": 1})
    old.load(4)
    assert old.history() == {"videos_before": 2, "unrecorded_videos": 2, "earlier_runs": [], "earlier_wall_seconds": None}
    old.save(5, tallies, predictions, force=True)
    raw = json.loads(path.read_text())
    assert raw["unrecorded_videos"] == 2 and [r["videos"] for r in raw["runs"]] == [[2, 5]]


def test_a_state_of_other_settings_is_refused(setup, tmp_path):
    path = tmp_path / ".eval_state.json"
    EvalState(path, {"run": 1}).save(2, [evaluate_module._Tally() for _ in range(4)], [{} for _ in range(4)], force=True)
    with pytest.raises(SharpVError, match="unfinished eval of other settings"):
        _run(setup, EvalState(path, {"run": 2}))
    path.write_text("{not json")
    with pytest.raises(SharpVError, match="not a readable eval state"):
        _run(setup, EvalState(path, {"run": 1}))


def test_the_command_resumes_and_cleans_up(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    argv = ["eval", "--n", "4", "--frames", "6", "--methods", "sharpv", "--budgets", "0.3", "--out", str(out)]
    real = evaluate_module._answer_video
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "_answer_video", interrupted)
    monkeypatch.setattr(EvalState, "EVERY_SECONDS", 0.0)  # save after every video
    assert main(argv) == 130  # Ctrl-C: "interrupted", the state kept
    capsys.readouterr()
    assert (out / ".eval_state.json").is_file() and not (out / "results.json").exists()
    monkeypatch.setattr(evaluate_module, "_answer_video", real)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "resuming an interrupted run" in err and "2 of 4 videos done" in err
    assert (out / "results.json").is_file() and not (out / ".eval_state.json").exists()
    # the provenance covers this run and says what the interrupted one did
    origin = json.loads((out / "run.json").read_text())["provenance"]
    (resumed,) = origin["resumed"]
    assert resumed["videos_before"] == 2 and [r["videos"] for r in resumed["earlier_runs"]] == [[0, 2]]
    assert "it continued from 2 videos done by earlier runs (1 recorded" in (out / "results.md").read_text()
