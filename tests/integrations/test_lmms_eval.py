"""sharpv inside lmms-eval: the real ``lmms-eval`` command line, found through the entry point, on an
offline task folder from ``sharpv export-synthetic``, gives ``sharpv eval``'s answers item by item.

Runs in lmms-eval's own virtualenv (.ci/integration_lmms_eval.sh builds it afresh: ``pip install -e
".[lmms-eval,test]"`` next to the CPU torch); skipped where lmms-eval is not installed (the main environment).

lmms-eval catches an exception raised while it evaluates a task, logs "Error during evaluation" and still exits
0 without writing results: every lmms-eval run here fails on that line, or on missing output files, with
lmms-eval's own stdout and stderr in the failure message.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

from sharpv.synthetic.model import HELDOUT_SEED  # noqa: E402

N = 20
BIN = Path(sys.executable).parent
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
RUNS = {  # lmms-eval --model_args -> the same method and budget in `sharpv eval`
    "dense": ("method=dense", "dense", None),
    "sharpv-adaptive": ("method=sharpv", "sharpv", None),
    "sharpv-0.03": ("method=sharpv,keep_ratio=0.03,max_frames_num=16", "sharpv", 0.03),
    "random-0.03": ("method=random,keep_ratio=0.03", "random", 0.03),
}


def _run(args: list[str], tmp: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=tmp, env={**OFFLINE, "HF_HOME": str(tmp / "hf")}, capture_output=True,
                          text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lmms") / "syn"
    done = _run([str(BIN / "sharpv"), "export-synthetic", str(out), "--n", str(N), "--seed", str(HELDOUT_SEED)], out.parent)
    assert done.returncode == 0, done.stderr
    return out


def _report(done: subprocess.CompletedProcess, what: str, tail: int = 5000) -> str:
    """What went wrong, the command, and the end of lmms-eval's own stdout and stderr."""
    return (f"{what}\n$ {shlex.join(done.args)}\nexit code {done.returncode}\n"
            f"----- lmms-eval stdout (last {tail} characters) -----\n{done.stdout[-tail:]}\n"
            f"----- lmms-eval stderr (last {tail} characters) -----\n{done.stderr[-tail:]}")


def _lmms_eval(task: Path, model_args: str, out: Path) -> subprocess.CompletedProcess:
    done = _run([str(BIN / "lmms-eval"), "--model", "sharpv", "--model_args", model_args, "--include_path", str(task),
                 "--tasks", "sharpv_synthetic", "--device", "cpu", "--log_samples", "--output_path", str(out)], out.parent)
    if "Error during evaluation" in done.stdout + done.stderr:
        pytest.fail(_report(done, "lmms-eval logged 'Error during evaluation' (it exits 0 all the same)"), pytrace=False)
    return done


def _outputs(task: Path, key: str) -> tuple[list[dict], dict, dict, str] | str:
    """One lmms-eval run of RUNS[key]: its samples, results, pruning statistics and stderr, or why it failed."""
    out = task.parent / f"lmms-{key}"
    stats = task.parent / f"stats-{key}.json"
    try:
        done = _lmms_eval(task, f"{RUNS[key][0]},stats_path={stats}", out)
    except pytest.fail.Exception as failed:
        return failed.msg
    if done.returncode != 0:
        return _report(done, f"lmms-eval ({key}) failed")
    samples = list(out.rglob("*_samples_sharpv_synthetic.jsonl"))
    results = list(out.rglob("*_results.json"))
    if len(samples) != 1 or len(results) != 1 or not stats.exists():
        return _report(done, f"lmms-eval ({key}) exited 0 but wrote {len(samples)} samples and {len(results)} results "
                             f"files (one each expected) and {'a' if stats.exists() else 'no'} statistics file under "
                             f"{out}")
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    return (sorted(rows, key=lambda r: r["doc_id"]), json.loads(results[0].read_text()), json.loads(stats.read_text()),
            done.stderr)


@pytest.fixture(scope="module")
def lmms_runs(task) -> dict[str, tuple[list[dict], dict, dict, str] | str]:
    """Every run of RUNS, once per module; a failed run is its failure message (see _run_of), so that each test
    fails with the output of the run it reads instead of erroring in this fixture."""
    return {key: _outputs(task, key) for key in RUNS}


def _run_of(lmms_runs: dict, key: str) -> tuple[list[dict], dict, dict, str]:
    run = lmms_runs[key]
    if isinstance(run, str):
        pytest.fail(run, pytrace=False)
    return run


@pytest.fixture(scope="module")
def sharpv_eval(task) -> tuple[list[dict], list[dict]]:
    out = task.parent / "sharpv-eval"
    done = _run([str(BIN / "sharpv"), "eval", "--data", str(task / "data.jsonl"), "--methods", "sharpv,random",
                 "--budgets", "0.03,adaptive", "--out", str(out)], task.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return predictions, json.loads((out / "results.json").read_text())


def test_the_entry_point_registers_the_model():
    from lmms_eval.models import get_model

    from sharpv.integrations.lmms_eval.model import SharpVLMM

    assert get_model("sharpv") is SharpVLMM


@pytest.mark.parametrize("key", list(RUNS))
def test_lmms_eval_answers_equal_sharpv_eval_item_by_item(key, task, lmms_runs, sharpv_eval):
    rows, results, stats, stderr = _run_of(lmms_runs, key)
    _, method, budget = RUNS[key]
    predictions, records = sharpv_eval
    ours = [p for p in predictions if p["method"] == method and p["budget"] == budget]
    ids = [json.loads(line)["id"] for line in (task / "sharpv_synthetic.jsonl").read_text().splitlines()]
    assert len(rows) == len(ours) == N
    for row, mine in zip(rows, ours):
        assert ids[row["doc_id"]] == mine["id"]
        assert row["filtered_resps"] == mine["prediction"], (key, mine["id"])
        assert row["accuracy"] == float(mine["correct"]), (key, mine["id"])
    [record] = [r for r in records if r["method_name"] == method and r["budget"] == budget]
    assert results["results"]["sharpv_synthetic"]["accuracy,none"] == pytest.approx(record["accuracy"], abs=1e-12)
    # the statistics logged per run are the ones `sharpv eval` reports
    summary = stats["summary"]
    assert summary["requests"] == N and summary["frames"] == 16
    assert summary["kept_share"] == pytest.approx(record["kept_share"])
    assert summary["visual_tokens_kept"] == pytest.approx(record["visual_tokens_kept"] * N)
    assert summary["kv_share"] == pytest.approx(record["kv_share"])
    assert f"sharpv: method={method}" in stderr and f"{N} requests, visual tokens kept" in stderr


def test_the_comparison_has_teeth(lmms_runs):
    """Pruning changed answers (else equality with dense would prove nothing about the method
    reaching lmms-eval), and kept what it was asked to keep. (The first 20 held-out questions are
    easy: SharpV at 0.1 and adaptive answer them all as dense does; at 0.03 one answer changes,
    random tokens at 0.03 change several.)"""
    runs = {key: _run_of(lmms_runs, key) for key in RUNS}
    answers = {key: [r["filtered_resps"] for r in run[0]] for key, run in runs.items()}
    differ = {key: sum(a != d for a, d in zip(answers[key], answers["dense"])) for key in answers}
    assert differ["sharpv-0.03"] >= 1 and differ["random-0.03"] >= 3, differ
    assert runs["dense"][2]["summary"]["kept_share"] == 1.0
    assert runs["sharpv-0.03"][2]["summary"]["kept_share"] == pytest.approx(0.03, abs=0.003)


@pytest.mark.parametrize("model_args, expected", [
    ("method=sharpvv", "error: --model_args method=sharpvv: unknown method; registered methods: dense, sharpv"),
    ("method=sharpv,keep_ratio=1.5", "error: --model_args keep_ratio=1.5: keep_ratio must be"),
    ("method=evs,kv=false", "error: --model_args kv=False: evs has no setting 'kv'"),
])
def test_a_bad_model_args_stops_the_run_with_one_line_before_any_item(task, model_args, expected):
    out = task.parent / "bad"
    done = _lmms_eval(task, model_args, out)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(expected), done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    assert "generate_until requests" not in done.stdout + done.stderr and not out.exists()


def test_an_unsupported_family_stops_the_run_before_its_weights_load(task, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    done = _lmms_eval(task, f"pretrained={tmp_path}", tmp_path / "out")
    assert done.returncode == 2
    assert f"error: --model_args pretrained={tmp_path}: model_type 'llama' is not supported" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_other_request_types_are_refused_with_a_clear_message():
    from sharpv.integrations.lmms_eval.model import SharpVLMM

    lm = SharpVLMM(device="cpu")
    with pytest.raises(NotImplementedError, match="generate_until only"):
        lm.loglikelihood([])
    with pytest.raises(NotImplementedError, match="one question per video"):
        lm.generate_until_multi_round([])
    from sharpv.errors import SharpVError

    with pytest.raises(SharpVError, match="one video file, but doc_to_visual gave 2 visual"):
        lm._video(["a.mp4", "b.mp4"], "t", 0)
