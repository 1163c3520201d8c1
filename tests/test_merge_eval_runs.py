"""tools/merge_eval_runs.py: eval parts split by methods merge into what one eval over all the
methods writes (records, paired intervals, answers), and parts that disagree are refused."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from sharpv.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["eval", "--n", "12", "--budgets", "0.2", "--threads", "1"]


@pytest.fixture(scope="module")
def merge_tool():
    spec = importlib.util.spec_from_file_location("merge_eval_runs", ROOT / "tools" / "merge_eval_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    for name, methods in (("a", "sharpv,random"), ("b", "sharpv,evs"), ("whole", "sharpv,random,evs")):
        assert cli([*COMMON, "--methods", methods, "--out", str(root / name)]) in (0, None)
    return root


def _strip(records):
    drop = {"prefill_seconds", "prefill_ms", "prefill_speedup"}  # timings differ between runs
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_parts_merge_into_the_whole_run(runs, merge_tool, tmp_path):
    assert merge_tool.main([str(runs / "a"), str(runs / "b"), "--out", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    whole = json.loads((runs / "whole" / "results.json").read_text())
    assert [(r["method"], r["budget"]) for r in merged] == [(r["method"], r["budget"]) for r in whole]
    assert _strip(merged) == _strip(whole)
    assert any(r.get("vs_sharpv") is not None for r in merged)  # recomputed across the parts
    key = lambda p: (p["method"], str(p["budget"]), p["id"])
    read = lambda f: sorted((json.loads(l) for l in f.read_text().splitlines()), key=key)
    assert read(tmp_path / "m" / "predictions.jsonl") == read(runs / "whole" / "predictions.jsonl")
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    assert [m["folder"] for m in run["merged_from"]] == [str(runs / "a"), str(runs / "b")]
    assert "Merged by" in (tmp_path / "m" / "results.md").read_text()


def test_parts_that_disagree_are_refused(runs, merge_tool, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("results.json", "run.json"):
        (bad / f).write_text((runs / "b" / f).read_text())
    lines = [json.loads(l) for l in (runs / "b" / "predictions.jsonl").read_text().splitlines()]
    lines[0]["prediction"] = "something else"
    (bad / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
    with pytest.raises(SystemExit, match="answers differently"):
        merge_tool.main([str(runs / "a"), str(bad), "--out", str(tmp_path / "m")])
    with pytest.raises(SystemExit, match="no results.json"):
        merge_tool.main([str(runs / "a"), str(tmp_path / "nothing"), "--out", str(tmp_path / "m")])
