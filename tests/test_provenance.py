"""Every result file records where it came from (sharpv.harness.provenance): the sharpv commit and
whether its source was modified, the package versions and the run's wall time; eval's run.json,
calibrate's, bench's and the long-video bench's results.json all carry it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from sharpv.cli import main
from sharpv.harness import provenance as prov

REPO = Path(__file__).resolve().parents[1]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


def _check(record: dict, *, wall: bool = True) -> None:
    assert record["sharpv_version"]
    assert record["versions"]["python"] and record["versions"]["torch"] and record["versions"]["numpy"]
    assert record["versions"]["transformers"]
    assert record["cpu"] and record["cpu_count"] >= 1 and record["command_line"]
    if prov.checkout_root() is not None:
        assert re.fullmatch(r"[0-9a-f]{40}", record["sharpv_commit"])
        assert isinstance(record["sharpv_dirty"], bool)
    if wall:
        assert record["wall_seconds"] >= 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["started_utc"])
        assert record["finished_utc"] >= record["started_utc"]


@pytest.fixture
def checkout(tmp_path):
    """A small git checkout shaped like this repository (src/sharpv, pyproject.toml, docs)."""
    root = tmp_path / "repo"
    (root / "src" / "sharpv").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "src" / "sharpv" / "__init__.py").write_text("x = 1\n")
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "docs" / "a.md").write_text("a\n")
    _git(root.parent, "init", "-q", str(root))
    _git(root, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "first")
    return root


def test_source_of_a_clean_checkout_is_its_commit(checkout):
    got = prov.source(checkout)
    assert got["sharpv_commit"] == _git(checkout, "rev-parse", "HEAD").strip()
    assert got["sharpv_dirty"] is False and got["sharpv_modified_files"] == []


def test_a_run_names_the_commit_it_started_on(checkout):
    started = _git(checkout, "rev-parse", "HEAD").strip()
    clock = prov.Clock(checkout)
    (checkout / "src" / "sharpv" / "__init__.py").write_text("x = 2\n")  # committed while the run goes on
    _git(checkout, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "second")
    assert _git(checkout, "rev-parse", "HEAD").strip() != started
    assert clock.source["sharpv_commit"] == started
    assert prov.provenance(clock)["sharpv_commit"] == clock.source["sharpv_commit"]


def test_source_is_dirty_only_for_the_package_s_own_files(checkout):
    (checkout / "docs" / "a.md").write_text("b\n")  # docs and results do not change what ran
    (checkout / "notes.txt").write_text("untracked, outside src\n")
    assert prov.source(checkout)["sharpv_dirty"] is False
    (checkout / "src" / "sharpv" / "__init__.py").write_text("x = 2\n")
    (checkout / "src" / "sharpv" / "new.py").write_text("y = 1\n")  # untracked under src: importable, so it counts
    (checkout / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    got = prov.source(checkout)
    assert got["sharpv_dirty"] is True
    assert got["sharpv_modified_files"] == ["pyproject.toml", "src/sharpv/__init__.py", "src/sharpv/new.py"]


def test_outside_a_checkout_only_the_version_says_what_ran(monkeypatch, tmp_path):
    monkeypatch.setattr(prov, "checkout_root", lambda: None)
    got = prov.source()
    assert got["sharpv_commit"] is None and got["sharpv_dirty"] is None and got["sharpv_version"]
    # a folder that is not a repository (or git missing) gives the same, never an exception
    assert prov.source(tmp_path)["sharpv_commit"] is None


def test_this_checkout_is_found_and_its_head_recorded():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    assert prov.checkout_root() == REPO
    assert prov.source()["sharpv_commit"] == _git(REPO, "rev-parse", "HEAD").strip()


def test_versions_lists_installed_packages_and_leaves_out_absent_ones():
    import numpy
    import torch
    import transformers

    got = prov.versions(("torch", "transformers", "numpy", "surely-not-installed-pkg"))
    assert set(got) == {"python", "torch", "transformers", "numpy"}
    assert got["torch"] == torch.__version__ and got["transformers"] == transformers.__version__
    assert got["numpy"] == numpy.__version__


def test_clock_and_provenance_and_the_sentence(monkeypatch):
    clock = prov.Clock()
    record = prov.provenance(clock)
    _check(record)
    text = prov.describe(record)
    assert text.startswith("Ran sharpv ") and "torch " in text and "wall time" in text
    monkeypatch.setattr(prov, "checkout_root", lambda: None)
    assert "(no git checkout)" in prov.describe(prov.provenance())


def test_the_sentence_of_a_resumed_result_names_the_earlier_runs():
    record = {"sharpv_commit": "c" * 40, "versions": {"torch": "2.13.0"}, "wall_seconds": 60.0, "started_utc": "T",
              "resumed": [{"model": "a", "videos_before": 7, "unrecorded_videos": 3, "earlier_wall_seconds": None,
                           "earlier_runs": [{"sharpv_commit": "d" * 40, "wall_seconds": 40.0, "videos": [3, 7]},
                                            {"sharpv_commit": "e" * 40, "wall_seconds": 20.0, "videos": [7, 7]}]}]}
    text = prov.describe(record)
    assert "wall time 60 s; it continued (a) from 7 videos done by earlier runs (2 recorded, 60 s, " in text
    assert "sharpv dddddddddd, eeeeeeeeee)" in text and "3 of them by runs whose state did not record" in text


def test_eval_run_json_records_provenance(capsys, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--n", "2", "--methods", "sharpv", "--budgets", "0.2", "--threads", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    run = json.loads((out / "run.json").read_text())
    _check(run["provenance"])
    assert run["provenance"]["command_line"].startswith(Path(__import__("sys").argv[0]).name)
    assert "Ran sharpv" in (out / "results.md").read_text()


def test_calibrate_results_json_records_provenance(capsys, tmp_path):
    out = tmp_path / "cal"
    assert main(["calibrate", "--target", "accuracy=0.5", "--n", "2", "--holdout-n", "2", "--spatial-weights", "1",
                 "--kv-thresholds", "0.2", "--refine", "0", "--threads", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    _check(results["provenance"])
    assert "Ran sharpv" in (out / "results.md").read_text()


def test_bench_results_json_records_provenance(capsys, tmp_path, tiny_dirs):
    out = tmp_path / "bench"
    assert main(["bench", "--model", str(tiny_dirs["llava-onevision"]), "--frames", "4", "--methods", "sharpv",
                 "--budgets", "0.5", "--dtype", "float32", "--repeats", "1", "--warmup", "0", "--new-tokens", "1",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    payload = json.loads((out / "results.json").read_text())
    _check(payload["provenance"])
    assert "Ran sharpv" in (out / "results.md").read_text()
