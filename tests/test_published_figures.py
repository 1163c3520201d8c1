"""Every figure tools/check_figures.py declares (README.md, docs/evaluation.md, docs/benchmark.md,
docs/api.md) equals its recomputation from the committed artefacts, so a sentence or a result file
that drifts from the other fails here (issue 28, point 7). A few seconds, numpy only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def figures():
    path = ROOT / "tools" / "check_figures.py"
    spec = importlib.util.spec_from_file_location("check_figures", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_figures"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("check_figures", None)


def test_every_declared_figure_matches_its_artefact(figures):
    failures = figures.run_all()
    assert not failures, "\n".join(f"{c.describe()}\n    {why}" for c, why in failures)


def test_every_eval_results_json_agrees_with_its_answers(figures):
    assert figures.consistency() == []


def test_the_headline_claims_are_declared(figures):
    """The claims this test must keep covering: README's fidelity headline and evaluation.md's."""
    texts = {(c.doc, " ".join(c.text.split())) for c in figures.CLAIMS}
    for doc, start in [("README.md", "dense answers"), ("README.md", "at 0.2 by +"), ("README.md", "by **+"),
                       ("docs/evaluation.md", "**Dense quality**"), ("docs/evaluation.md", "it is **+"),
                       ("docs/evaluation.md", "| **budget 0.2** |"), ("docs/evaluation.md", "| **sharpv** | 0.2 |"),
                       ("docs/api.md", "196 x 896 x 2 bytes"), ("docs/benchmark.md", "peak RSS"),
                       ("README.md", "| stage 1 (`sharpv:kv=false`) |"), ("README.md", "The two runs' spreads overlap"),
                       ("docs/benchmark.md", "| 32 | {} ["), ("docs/benchmark.md", "32 frames (6,272 visual tokens)")]:
        assert any(d == doc and t.startswith(start) for d, t in texts), (doc, start)
    assert len(figures.CLAIMS) >= 100


def _with_document(figures, monkeypatch, doc: str, old: str, new: str) -> None:
    text = figures.document(doc)
    assert old in text
    changed = text.replace(old, new, 1)
    original = figures.document
    monkeypatch.setattr(figures, "document", lambda d: changed if d == doc else original(d))


@pytest.mark.parametrize("doc,old,new,needle", [
    ("README.md", "dense answers 97.3% / 96.8%", "dense answers 97.9% / 96.8%", "dense answers"),
    ("docs/api.md", "= 343 KiB per frame, 343 MiB", "= 344 KiB per frame, 344 MiB", "196 x 896"),
    ("docs/evaluation.md", "(80.5-84.5% for random at 0.2", "(82-85% for random at 0.2", "appearance time and motion"),
    ("docs/evaluation.md", "+5.4 [4.5, 6.4]** | **+5.9 [4.8, 7.0]**", "+5.4 [4.5, 6.4]** | **+5.9 [5.3, 7.0]**",
     "| **budget 0.2** |"),
    ("README.md", "| 4.60x [4.48-4.91] | 4.99x [4.88-5.04] |", "| 4.60x [4.48-4.91] | 4.99x [4.70-5.04] |", "sharpv:kv=false"),
    ("docs/benchmark.md", "| 32 | 28.97 [26.31-29.92] | 5.15x", "| 32 | 28.97 [26.31-29.92] | 5.51x", "| 32 | {} ["),
])
def test_a_figure_that_drifts_from_its_artefact_fails(figures, monkeypatch, doc, old, new, needle):
    _with_document(figures, monkeypatch, doc, old, new)
    failing = [c for c, _ in figures.run_all([c for c in figures.CLAIMS if c.doc == doc and needle in c.text])]
    assert failing, (doc, new)


def test_a_changed_sentence_fails_until_its_claim_is_updated(figures, monkeypatch):
    _with_document(figures, monkeypatch, "README.md", "dense answers 97.3%", "dense accuracy is 97.3%")
    claim = next(c for c in figures.CLAIMS if c.doc == "README.md" and c.text.startswith("dense answers"))
    assert "text not found" in figures.check(claim)


def test_the_own_bootstrap_agrees_with_the_package_s(figures):
    """Two independent bootstraps of the same paired difference land within the checker's tolerance."""
    import numpy as np

    from sharpv.harness.evaluate import paired_difference

    a = figures.answers("target-check")[("uniform-dropout", "sharpv", 0.2)][1]
    b = figures.answers("target-check")[("uniform-dropout", "random", 0.2)][1]
    mine = figures.paired("target-check", "uniform-dropout", "sharpv", "random", 0.2)
    theirs = 100 * np.array(paired_difference(list(a), list(b)))
    assert mine[0] == pytest.approx(theirs[0])
    assert abs(mine[1] - theirs[1]) < figures.BOOT_TOL and abs(mine[2] - theirs[2]) < figures.BOOT_TOL
