"""Recompute the published figures of README.md, docs/evaluation.md and docs/benchmark.md from the
committed artefacts, and say which ones no longer match (issue 28, point 7).

Every claim is the text of a document with ``{}`` where each number stands, and how to recompute
those numbers from the files under ``eval/``, ``bench/`` and ``docs/img/``:

- accuracies from the answers themselves (``predictions.jsonl.gz``: the share of ``correct``, per
  question type by the question's index, the synthetic generator's round robin), never from
  ``results.json``; a separate check says each ``results.json`` record agrees with its answers;
- paired differences and their 95% intervals by this script's own bootstrap: a paired difference
  per question is -1, 0 or +1, so a resample of the questions is a multinomial draw of the three
  counts (20,000 draws, ``numpy.random.Generator(PCG64(2811))``), independent of
  ``sharpv.harness.evaluate.paired_difference`` (2,000 index resamples, seed 0); the bounds must agree
  within 0.3 points, and an "order" that depends on a bound within 0.3 points of 0 accepts either word;
- costs (kept share, equivalent retention, KV and FLOPs share, evidence recall) from ``results.json``,
  memory and seconds from the bench records' raw bytes and seconds.

A number matches when it equals the recomputed value rounded as the document writes it (half a unit
of its last digit, plus a claim's own tolerance). A claim whose text is no longer in its document
fails too: a sentence that changed must have its claim updated with it.

    python tools/check_figures.py            # every claim: OK / FAIL lines, exit 1 on any failure
    python tools/check_figures.py --list     # the claims, one line each, with their artefacts

Standard library and numpy only; a few seconds. tests/test_published_figures.py runs it in CI.
Bench ratios (README's "Efficiency" table, docs/benchmark.md's CPU and vLLM results) are recomputed
from every round's raw seconds: the ratio within each round, then the median and [min-max].
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: the synthetic generator's question types, in its round-robin order (sharpv.synthetic.QUESTION_TYPES)
TYPES = ("colour", "position", "motion", "appearance_time", "colour_change", "count")
MIXED, UNIFORM = "mixed-dropout", "uniform-dropout"
BOOT_TOL = 0.3  # points: this bootstrap's bounds against the published ones
NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?"
MIB = 2**20


# --- artefacts --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def load_json(path: str):
    return json.loads((ROOT / path).read_text())


@lru_cache(maxsize=None)
def _rows(run: str) -> tuple[dict, ...]:
    plain = ROOT / "eval" / run / "predictions.jsonl"  # small runs commit it uncompressed
    with (open(plain) if plain.is_file() else gzip.open(ROOT / "eval" / run / "predictions.jsonl.gz", "rt")) as f:
        return tuple(json.loads(line) for line in f)


def _index(p: dict) -> int:
    """The question's index in its synthetic set (ids are SEED-INDEX)."""
    return int(p["id"].rsplit("-", 1)[1])


@lru_cache(maxsize=None)
def answers(run: str) -> dict:
    """``{(model, method, budget): (question indices, correct as a bool array)}`` from
    ``eval/RUN/predictions.jsonl.gz`` (model None for a one-model run), in question order."""
    rows: dict = {}
    for p in _rows(run):
        rows.setdefault((p.get("model"), p["method"], p["budget"]), []).append((_index(p), bool(p["correct"])))
    out = {}
    for key, items in rows.items():
        items.sort()
        out[key] = (np.array([i for i, _ in items]), np.array([c for _, c in items]))
    return out


def _pick(run: str, model: str | None, method: str, budget: float | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        return answers(run)[(model, method, budget)]
    except KeyError:
        raise KeyError(f"eval/{run}: no answers for model {model}, method {method}, budget {budget}") from None


def acc(run: str, model: str | None, method: str, budget: float | None = None, qtype: str | None = None,
        questions: slice | None = None) -> float:
    """Accuracy in percent from the answers; ``qtype``: one question type; ``questions``: a block of indices."""
    idx, correct = _pick(run, model, method, budget)
    keep = np.ones(len(idx), bool)
    if qtype is not None:
        keep &= idx % len(TYPES) == TYPES.index(qtype)
    if questions is not None:
        keep &= (idx >= questions.start) & (idx < questions.stop)
    return float(100 * correct[keep].mean())


def count_correct(run: str, model: str | None, method: str, budget: float | None = None) -> int:
    return int(_pick(run, model, method, budget)[1].sum())


@lru_cache(maxsize=None)
def paired(run: str, model: str | None, method: str, reference: str, budget: float | None,
           block: tuple[int, int] | None = None, reference_budget: float | None | str = "same") -> tuple[float, float, float]:
    """``method`` minus ``reference`` in points over the same questions, and this script's own
    paired bootstrap 95% interval (multinomial draws of the -1/0/+1 counts); the reference at
    ``budget`` too unless ``reference_budget`` says otherwise (dense, adaptive rows)."""
    ia, a = _pick(run, model, method, budget)
    ib, b = _pick(run, model, reference, budget if reference_budget == "same" else reference_budget)
    if not np.array_equal(ia, ib):
        raise ValueError(f"eval/{run}: {method} and {reference} answered different questions")
    if block is not None:
        keep = (ia >= block[0]) & (ia < block[1])
        a, b = a[keep], b[keep]
    d = a.astype(int) - b.astype(int)
    n = d.size
    counts = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()])
    draws = np.random.Generator(np.random.PCG64(2811)).multinomial(n, counts / n, size=20_000)
    means = (draws[:, 2] - draws[:, 0]) / n
    low, high = np.percentile(means, [2.5, 97.5])
    return float(100 * d.mean()), float(100 * low), float(100 * high)


def record(run: str, model: str | None, method: str, budget: float | None) -> dict:
    """A record of ``eval/RUN/results.json`` (costs, evidence)."""
    for r in load_json(f"eval/{run}/results.json"):
        if r.get("model") == model and r["method"] == method and r["budget"] == budget:
            return r
    raise KeyError(f"eval/{run}/results.json: no record for {model}, {method}, {budget}")


def heldout(run: str, method: str, budget: float | None) -> dict:
    for r in load_json(f"eval/{run}/results.json")["heldout"]["records"]:
        if r["method"] == method and r["budget"] == budget:
            return r
    raise KeyError(f"eval/{run}: no held-out record {method} @ {budget}")


def curve_point(run: str, **match) -> dict:
    points = [p for p in load_json(f"eval/{run}/curve.json")["points"]
              if all(p.get(k) == v for k, v in match.items())]
    if len(points) != 1:
        raise KeyError(f"eval/{run}/curve.json: {len(points)} points match {match}")
    return points[0]


def long_video(run: str, frames: int, mode: str) -> dict:
    for r in load_json(f"bench/{run}/results.json")["records"]:
        if r["frames"] == frames and r["mode"] == mode:
            return r
    raise KeyError(f"bench/{run}: no record {frames} frames {mode}")


def rss(frames: int, code: str = "HEAD") -> float:
    """Peak RSS in MB (10^6 bytes) of bench/answer-rss-cpu at ``frames`` for ``code`` (HEAD or before)."""
    for r in load_json("bench/answer-rss-cpu/results.json")["runs"]:
        if r["frames"] == frames and r["code"].startswith(code):
            return r["max_rss_kib"] * 1024 / 1e6
    raise KeyError(f"bench/answer-rss-cpu: no run {code} at {frames} frames")


def viz_method(label: str) -> dict:
    return next(m for m in load_json("docs/img/viz/viz.json")["methods"] if m["label"] == label)


# --- claims -------------------------------------------------------------------------------------------


@dataclass
class Claim:
    """``text`` (whitespace as in the document, any run of it matching any other) with a ``{}`` per
    number; ``values`` recomputes them, in order; ``tol``: extra tolerance per value (one for all, or a
    sequence); ``words``: for each ``{w}`` field, the words that may stand there (a predicate's
    outcome); ``holds``: a statement without numbers of its own, true on the artefacts."""

    doc: str
    text: str
    values: Callable[[], Sequence[float]]
    source: str
    tol: float | Sequence[float] = 0.0
    words: Callable[[], Sequence[set[str]]] | None = None
    holds: Callable[[], bool] | None = None

    def describe(self) -> str:
        return f"{self.doc}: {' '.join(self.text.split())}  <-  {self.source}"


def _norm(text: str) -> str:
    return " ".join(text.split())


def _pattern(text: str) -> re.Pattern:
    out = []
    for piece in re.split(r"(\{\}|\{w\})", _norm(text)):
        if piece == "{}":
            out.append(f"({NUMBER})")
        elif piece == "{w}":
            out.append(r"([a-z*][a-z ,*]*?)")
        else:
            out.append(re.escape(piece))
    return re.compile("".join(out))


def _decimals(shown: str) -> int:
    return len(shown.split(".")[1]) if "." in shown else 0


def _matches(claim: Claim, numbers: list[str], words: list[str], want: list[float], allowed: list[set[str]]) -> str | None:
    tols = claim.tol if isinstance(claim.tol, (list, tuple)) else [claim.tol] * len(want)
    for shown, value, extra in zip(numbers, want, tols):
        got = float(shown.replace(",", ""))
        if abs(got - value) > 0.5 * 10 ** -_decimals(shown) + extra + 1e-9:
            return f"{shown} published, {value:.4g} recomputed"
    for shown, ok in zip(words, allowed):
        if shown not in ok:
            return f"'{shown}' published, {' or '.join(sorted(ok))} recomputed"
    return None


@lru_cache(maxsize=None)
def document(doc: str) -> str:
    return _norm((ROOT / doc).read_text())


def check(claim: Claim) -> str | None:
    """None when the claim holds; else why not."""
    try:
        want = [float(v) for v in claim.values()]
        allowed = list(claim.words()) if claim.words else []
        holds = claim.holds() if claim.holds else True
    except (KeyError, ValueError, FileNotFoundError, StopIteration) as exc:
        return f"artefact: {exc}"
    found = list(_pattern(claim.text).finditer(document(claim.doc)))
    if not found:
        return "text not found in the document (changed? update the claim with it)"
    if not holds:
        return "the statement no longer holds on the artefacts"
    reasons = []
    for m in found:
        groups = list(m.groups())
        numbers = [g for g, piece in zip(groups, _fields(claim.text)) if piece == "{}"]
        words = [g.strip() for g, piece in zip(groups, _fields(claim.text)) if piece == "{w}"]
        if len(numbers) != len(want):
            return f"{len(numbers)} numbers in the text, {len(want)} recomputed"
        why = _matches(claim, numbers, words, want, allowed)
        if why is None:
            return None
        reasons.append(why)
    return "; ".join(dict.fromkeys(reasons))


def _fields(text: str) -> list[str]:
    return re.findall(r"\{\}|\{w\}", text)


CLAIMS: list[Claim] = []


def add(doc: str, text: str, values: Callable[[], Sequence[float]], source: str, tol=0.0, words=None,
        holds=None) -> None:
    CLAIMS.append(Claim(doc, text, values, source, tol, words, holds))


SQ, TC = "synthetic-qa", "target-check"
README, EVAL, BENCH, API = "README.md", "docs/evaluation.md", "docs/benchmark.md", "docs/api.md"
P_SQ = "eval/synthetic-qa/predictions.jsonl.gz"
R_SQ = "eval/synthetic-qa/results.json"
P_TC = "eval/target-check/predictions.jsonl.gz"
BOTH = (MIXED, UNIFORM)


def both(method: str, budget: float | None, qtype: str | None = None, run: str = SQ) -> list[float]:
    return [acc(run, m, method, budget, qtype) for m in BOTH]


def diff_ci(run: str, model: str, method: str, budget: float, reference: str = "sharpv", block=None) -> list[float]:
    return list(paired(run, model, method, reference, budget, block))


# README: fidelity -------------------------------------------------------------------------------------

add(README, "dense answers {}% / {}%", lambda: both("dense", None), P_SQ)
add(README, "at 0.2 by +{} / +{} points ({}% / {}% against {}% / {}%)",
    lambda: [paired(SQ, MIXED, "sharpv", "random", 0.2)[0], paired(SQ, UNIFORM, "sharpv", "random", 0.2)[0],
             *both("sharpv", 0.2), *both("random", 0.2)], P_SQ)
add(README, "by **+{} / +{}** (paired 95% intervals [{}, {}] / [{}, {}]) on the held-out set enlarged to 3,600 questions",
    lambda: [paired(TC, MIXED, "sharpv", "random", 0.2)[0], paired(TC, UNIFORM, "sharpv", "random", 0.2)[0],
             *paired(TC, MIXED, "sharpv", "random", 0.2)[1:], *paired(TC, UNIFORM, "sharpv", "random", 0.2)[1:]],
    P_TC + " (own bootstrap)", tol=[0, 0, BOOT_TOL, BOOT_TOL, BOOT_TOL, BOOT_TOL])
add(README, "adaptive SharpV at the default K ({}% kept) is too sparse for counting ({}% / {}%)",
    lambda: [100 * record(SQ, MIXED, "sharpv", None)["kept_share"], *both("sharpv", None, "count")], f"{R_SQ}, {P_SQ}")
add(README, "at budget 0.2 their layers compute {}% and {}% of the visual tokens (FLOPs share {} and {} against SharpV's {})",
    lambda: [100 * record(SQ, MIXED, "fastv", 0.2)["equivalent_retention"],
             100 * record(SQ, MIXED, "pyramiddrop", 0.2)["equivalent_retention"],
             record(SQ, MIXED, "fastv", 0.2)["flops_share"], record(SQ, MIXED, "pyramiddrop", 0.2)["flops_share"],
             record(SQ, MIXED, "sharpv", 0.2)["flops_share"]], R_SQ)
add(README, "and SharpV at 0.3 beats both at 0.2 on both models.", lambda: [], P_SQ, holds=lambda: all(
    acc(SQ, m, "sharpv", 0.3) > max(acc(SQ, m, "fastv", 0.2), acc(SQ, m, "pyramiddrop", 0.2)) for m in BOTH))
for label, method, bold in (("SharpV", "sharpv", "{}% | **{}%**"), ("EVS", "evs", "**{}%** | {}%"),
                            ("DivPrune", "divprune", "{}% | {}%"), ("FastV", "fastv", "{}% | {}%"),
                            ("PyramidDrop", "pyramiddrop", "{}% | **{}%**")):
    add(README, f"| {label} | {bold} | {{}} |",
        lambda method=method: [*both(method, 0.1), record(SQ, MIXED, method, 0.1)["equivalent_retention"]],
        f"{P_SQ}, {R_SQ}")
add(README, "although it lets in {}% of the question's object cells against their {}-{}%",
    lambda: [100 * record(SQ, MIXED, "sharpv", 0.1)["evidence_recall"],
             *sorted(100 * record(SQ, MIXED, m, 0.1)["evidence_recall"] for m in ("evs", "divprune"))], R_SQ)
add(README, "**PyramidDrop is ahead of it at 0.1 on `uniform-dropout`** (+{}, at the edge of noise) with {}x its visual tokens per layer",
    lambda: [paired(SQ, UNIFORM, "pyramiddrop", "sharpv", 0.1)[0],
             record(SQ, UNIFORM, "pyramiddrop", 0.1)["equivalent_retention"]
             / record(SQ, UNIFORM, "sharpv", 0.1)["equivalent_retention"]], f"{P_SQ}, {R_SQ}")
add(README, "keeps {}% of dense with {}% of the tokens on `mixed-dropout`, but on `uniform-dropout` it needs {}%",
    lambda: [100 * heldout("calibrate-shipped", "sharpv[calibrated]", None)["accuracy_vs_dense"],
             100 * heldout("calibrate-shipped", "sharpv[calibrated]", None)["kept_share"],
             100 * heldout("calibrate-uniform", "sharpv[calibrated]", None)["kept_share"]],
    "eval/calibrate-shipped/results.json, eval/calibrate-uniform/results.json")
add("docs/cli.md", "SharpV adaptive keeps {} of {} tokens",
    lambda: [viz_method("sharpv")["visual_tokens_kept"], viz_method("sharpv")["visual_tokens_in"]], "docs/img/viz/viz.json")
add("docs/cli.md", "FastV lets all {} tokens into the first {} of the model's {} layers, so its layers compute {}% of the visual tokens at keep_ratio {}",
    lambda: [viz_method("fastv")["visual_tokens_in"], viz_method("fastv")["layers_computing_every_visual_token"],
             load_json("docs/img/viz/viz.json")["llm_layers"], 100 * viz_method("fastv")["equivalent_retention"],
             load_json("docs/img/viz/viz.json")["budget"]], "docs/img/viz/viz.json")

def training(folder: str) -> dict:
    return load_json(f"src/sharpv/assets/{folder}/training.json")


TRAINING = "src/sharpv/assets/synthetic-qa/training.json, src/sharpv/assets/synthetic-qa-uniform/training.json"
add(README, "they also differ in seed and length (seed {} and {} steps against seed {} and {}), so a difference between them is not the dropout's alone",
    lambda: [training("synthetic-qa")["seed"], training("synthetic-qa")["steps"], training("synthetic-qa-uniform")["seed"],
             training("synthetic-qa-uniform")["steps"]], TRAINING)
add(EVAL, "and for their seed and length (seed {} and {} steps for `mixed-dropout`, seed {} and {} steps for `uniform-dropout`:",
    lambda: [training("synthetic-qa")["seed"], training("synthetic-qa")["steps"], training("synthetic-qa-uniform")["seed"],
             training("synthetic-qa-uniform")["steps"]], TRAINING)
add(README, "the +{} target holds on these point estimates, the rule fixed before the run, but both lower bounds are below 5",
    lambda: [5], P_TC + " (own bootstrap)", holds=lambda: all(
        (d := paired(TC, m, "sharpv", "random", 0.2))[0] >= 5 > d[1] for m in BOTH))
add(EVAL, "differ by up to {} and {}",
    lambda: [max(abs(record(SQ, MIXED, meth, b)[k] - record(SQ, UNIFORM, meth, b)[k])
                 for b in (0.1, 0.2, 0.3) for k in ("equivalent_retention", "kv_share", "flops_share"))
             for meth in ("fastv", "pyramiddrop")], R_SQ, tol=[0.00005, 0.0005])

# README: long videos ----------------------------------------------------------------------------------

RSS = "bench/answer-rss-cpu/results.json"
add(BENCH, "peak RSS {} MB against {} MB at 64 frames ({}x; {} GB and {} MB with the code before frames were resized",
    lambda: [rss(795), rss(64), rss(795) / rss(64), rss(795, "before") / 1000, rss(64, "before")], RSS)
BUDGET_MODE = "196 x 896 x 2 bytes, LLaVA-OneVision-0.5B's tokens per frame x hidden size x bf16"
add(BENCH, "({} MiB per 1,024 frames for the 0.5B shape in bf16)", lambda: [196 * 896 * 2 * 1024 / MIB], BUDGET_MODE)
add(API, "196 x 896 x 2 bytes = {} KiB per frame, {} MiB for 1,024 frames",
    lambda: [196 * 896 * 2 / 1024, 196 * 896 * 2 * 1024 / MIB], BUDGET_MODE)

LV_FULL, LV_1024, LV_1L = "long-video-cpu-64-full", "long-video-cpu-1024", "long-video-cpu-1layer"


def _mib(r: dict, key: str) -> float:
    return r[key] / MIB


add(BENCH, "| 64 | full | SharpV one-shot | {} | {} | {} ({}) |",
    lambda: [(r := long_video(LV_FULL, 64, "sharpv-oneshot"))["ttft_seconds"], r["question_to_first_token_seconds"],
             _mib(r, "peak_memory_bytes"), _mib(r, "peak_over_baseline_bytes")], f"bench/{LV_FULL}/results.json")
add(BENCH, "| 64 | full | SharpV chunked | {} | **{} ({}%)** | {} ({}) |",
    lambda: [(r := long_video(LV_FULL, 64, "sharpv-chunked"))["ttft_seconds"], r["question_to_first_token_seconds"],
             100 * r["question_to_first_token_seconds"] / long_video(LV_FULL, 64, "sharpv-oneshot")["ttft_seconds"],
             _mib(r, "peak_memory_bytes"), _mib(r, "peak_over_baseline_bytes")], f"bench/{LV_FULL}/results.json")
add(BENCH, "| 64 | 1 layer | dense | {} | {} | {} ({}) |",
    lambda: [(r := long_video(LV_1L, 64, "dense"))["ttft_seconds"], r["question_to_first_token_seconds"],
             _mib(r, "peak_memory_bytes"), _mib(r, "peak_over_baseline_bytes")], f"bench/{LV_1L}/results.json")
add(BENCH, "| 256 | 1 layer | dense | did not finish in {} s |",
    lambda: [load_json(f"bench/{LV_1L}/results.json")["settings"]["max_seconds"]
             if long_video(LV_1L, 256, "dense")["status"] == "did not finish" else -1], f"bench/{LV_1L}/results.json")
add(BENCH, "| 64 | 1 layer | SharpV chunked | {} | {} | {} ({}) |",
    lambda: [(r := long_video(LV_1024, 64, "sharpv-chunked"))["ttft_seconds"], r["question_to_first_token_seconds"],
             _mib(r, "peak_memory_bytes"), _mib(r, "peak_over_baseline_bytes")], f"bench/{LV_1024}/results.json")
add(BENCH, "| 1,024 | 1 layer | SharpV chunked | {} | {} | **{} ({}): {}x the 64-frame peak** |",
    lambda: [(r := long_video(LV_1024, 1024, "sharpv-chunked"))["ttft_seconds"], r["question_to_first_token_seconds"],
             _mib(r, "peak_memory_bytes"), _mib(r, "peak_over_baseline_bytes"),
             r["peak_memory_bytes"] / long_video(LV_1024, 64, "sharpv-chunked")["peak_memory_bytes"]],
    f"bench/{LV_1024}/results.json")

# evaluation.md: the fidelity table, every row ------------------------------------------------------------

ROWS = [("sharpv", b) for b in (0.1, 0.2, 0.3, None)] + [
    (m, b) for m in ("random", "pooling", "evs", "dycoke", "vidcom2", "divprune", "visionzip", "fastvid", "flashvid",
                     "holitom", "vtw", "fastv", "pyramiddrop") for b in (0.1, 0.2, 0.3)]


#: PyramidDrop ranks tokens by the model's own attention, so its per-layer counts (and costs) differ a little
#: between the models; the table shows the mixed-dropout run's
COST_SPREAD = {"pyramiddrop": 0.0025}


def _costs(method: str, budget: float | None) -> list[float]:
    """visual/layer, KV share, FLOPs share of the mixed-dropout run, from results.json; the same
    under both models (within rounding; PyramidDrop within COST_SPREAD)."""
    out = []
    for key in ("equivalent_retention", "kv_share", "flops_share"):
        a, b = (record(SQ, m, method, budget)[key] for m in BOTH)
        if abs(a - b) > COST_SPREAD.get(method, 5e-4):
            raise ValueError(f"{method}@{budget}: {key} differs between the models ({a:.4f} / {b:.4f})")
        out.append(a)
    return out


def _order(method: str, budget: float) -> set[str]:
    """'same' / 'flips' / 'flips, within noise' by this script's bootstrap; both words where a bound
    sits within BOOT_TOL of 0 (the word then depends on the bootstrap's draws)."""
    diffs = [paired(SQ, m, method, "sharpv", budget) for m in BOTH]
    signs = {(d > 0) - (d < 0) for d, _, _ in diffs}
    if not {-1, 1} <= signs:
        return {"same"}
    clear = [lo > 0 or hi < 0 for _, lo, hi in diffs]
    near = any(abs(lo) < BOOT_TOL or abs(hi) < BOOT_TOL for _, lo, hi in diffs)
    word = "flips" if all(clear) else "flips, within noise"
    return {"flips", "flips, within noise"} if near else {word}


add(EVAL, "| dense | - | {} | {} | - | - | - | {} | {} | {} |",
    lambda: [acc(SQ, m, "dense") / 100 for m in BOTH] + _costs("dense", None), f"{P_SQ}, {R_SQ}")
for method, budget in ROWS:
    shown = "adaptive" if budget is None else f"{budget:g}"
    if method == "sharpv":
        add(EVAL, f"| **sharpv** | {shown} | **{{}}** | **{{}}** | - | - | - | {{}} | {{}} | {{}} |",
            lambda b=budget: [acc(SQ, m, "sharpv", b) / 100 for m in BOTH] + _costs("sharpv", b), f"{P_SQ}, {R_SQ}")
        continue
    bold = "**" if method in () else ""
    add(EVAL, f"| {method} | {shown} | {{}} | {{}} | {{}} | {{}} | {{w}} | {{}} | {{}} | {{}} |",
        lambda m_=method, b=budget: [acc(SQ, m, m_, b) / 100 for m in BOTH]
        + [paired(SQ, m, m_, "sharpv", b)[0] / 100 for m in BOTH] + _costs(m_, b),
        f"{P_SQ} (order: own bootstrap), {R_SQ}",
        words=lambda m_=method, b=budget: [_order(m_, b) | ({"**flips**"} if "flips" in _order(m_, b) else set())])

# evaluation.md: what holds on both models ------------------------------------------------------------

add(EVAL, "**Dense quality**: {}% and {}% (position the weakest type: {}% and {}%, against a majority rate of {}%)",
    lambda: [*both("dense", None), *both("dense", None, "position"),
             100 * load_json("eval/synthetic-qa/run.json")["majority_by_type"]["position"]], f"{P_SQ}, eval/synthetic-qa/run.json")
add(EVAL, "+{} / +{} points at 0.1, +{} / +{} at 0.2, +{} / +{} at 0.3 (mixed / uniform), every paired interval above 0 (at 0.2: [{}, {}] and [{}, {}])",
    lambda: [paired(SQ, m, "sharpv", "random", b)[0] for b in (0.1, 0.2, 0.3) for m in BOTH]
    + [*paired(SQ, MIXED, "sharpv", "random", 0.2)[1:], *paired(SQ, UNIFORM, "sharpv", "random", 0.2)[1:]]
    if all(paired(SQ, m, "sharpv", "random", b)[1] > 0 for b in (0.1, 0.2, 0.3) for m in BOTH) else [-99] * 10,
    P_SQ + " (own bootstrap)", tol=[0] * 6 + [BOOT_TOL] * 4)
add(EVAL, "it is **+{} [{}, {}] and +{} [{}, {}]**",
    lambda: [*paired(TC, MIXED, "sharpv", "random", 0.2), *paired(TC, UNIFORM, "sharpv", "random", 0.2)],
    P_TC + " (own bootstrap)", tol=[0, BOOT_TOL, BOOT_TOL] * 2)
add(EVAL, "appearance time and motion ({}-{}% for random at 0.2, {}-{}% for SharpV)",
    lambda: [min(r := [acc(SQ, m, "random", 0.2, t) for m in BOTH for t in ("appearance_time", "motion")]), max(r),
             min(s := [acc(SQ, m, "sharpv", 0.2, t) for m in BOTH for t in ("appearance_time", "motion")]), max(s)], P_SQ)
add(EVAL, "random lets at least one of its cells in for {}%, SharpV for {}-{}%",
    lambda: [100 * record(SQ, MIXED, "random", 0.2)["evidence_frame_recall"],
             *sorted(100 * record(SQ, m, "sharpv", 0.2)["evidence_frame_recall"] for m in BOTH)], R_SQ)
add(EVAL, "**SharpV counts worse than random on both** ({}% / {}% against {}% / {}% at 0.2; {}% / {}% against {}% / {}% at 0.1)",
    lambda: [*both("sharpv", 0.2, "count"), *both("random", 0.2, "count"), *both("sharpv", 0.1, "count"),
             *both("random", 0.1, "count")], P_SQ)
add(EVAL, "twice the counting evidence ({}% of the objects' cells against random's {}% at 0.2)",
    lambda: [100 * record(SQ, MIXED, "sharpv", 0.2)["evidence_recall_by_type"]["count"],
             100 * record(SQ, MIXED, "random", 0.2)["evidence_recall_by_type"]["count"]], R_SQ)
OC = "eval/object-coverage/results.json"


def _oc(model: str, method: str, key: str) -> float:
    return load_json(OC)["results"][model][method][key]


add(EVAL, "SharpV, random and EVS all keep at least one cell of {}% of the objects",
    lambda: [100 * _oc(m, meth, "objects_seen_share") for m in BOTH for meth in ("sharpv", "random", "evs")][:1]
    if len({_oc(m, meth, "objects_seen_share") for m in BOTH for meth in ("sharpv", "random", "evs")}) == 1 else [-1], OC)
add(EVAL, "SharpV shows each object in more frames ({} / {} against random's {}) and with more cells ({} / {} against {})",
    lambda: [_oc(MIXED, "sharpv", "frames_per_object"), _oc(UNIFORM, "sharpv", "frames_per_object"),
             _oc(MIXED, "random", "frames_per_object"), _oc(MIXED, "sharpv", "cells_per_object"),
             _oc(UNIFORM, "sharpv", "cells_per_object"), _oc(MIXED, "random", "cells_per_object")], OC)
C7 = "counting-seed7"
P_C7 = "eval/counting-seed7/predictions.jsonl.gz"


def _count_errors() -> list[float]:
    """SharpV's counting errors at 0.2 on uniform-dropout, seed 7: how many read two as three, of how many."""
    wrong = [(p["answer"], p["prediction"]) for p in _rows(C7) if p["model"] == UNIFORM and p["method"] == "sharpv"
             and p["budget"] == 0.2 and _index(p) % len(TYPES) == TYPES.index("count") and not p["correct"]]
    return [sum(w == ("two", "three") for w in wrong), len(wrong)]


add(EVAL, "errors on `uniform-dropout` are mostly two objects read as three ({} of its {})", _count_errors, P_C7)
add(EVAL, "Random tokens at SharpV's own per-frame counts count as well as random or better ({}% / {}% against {}% / {}%, uniform / mixed)",
    lambda: [acc(C7, m, "random:counts=sharpv", 0.2, "count") for m in (UNIFORM, MIXED)]
    + [acc(C7, m, "random", 0.2, "count") for m in (UNIFORM, MIXED)], P_C7)
add(EVAL, "w = 0.5 ties the default ({}% / {}%, counting {}% / {}%, against the default's {}% / {}%)",
    lambda: [acc(C7, m, "sharpv:spatial_weight=0.5", 0.2) for m in (UNIFORM, MIXED)]
    + [acc(C7, m, "sharpv:spatial_weight=0.5", 0.2, "count") for m in (UNIFORM, MIXED)]
    + [acc(C7, m, "sharpv", 0.2) for m in (UNIFORM, MIXED)], P_C7)
add(EVAL, "w = 0 ({}% / {}%), w = 2 ({}% / {}%) and `min_tokens_per_frame=0` ({}% / {}%) score at or below it",
    lambda: [acc(C7, m, f"sharpv:{s}", 0.2) for s in ("spatial_weight=0", "spatial_weight=2", "min_tokens_per_frame=0")
             for m in (UNIFORM, MIXED)]
    if all(acc(C7, m, f"sharpv:{s}", 0.2) <= acc(C7, m, "sharpv", 0.2) for m in BOTH
           for s in ("spatial_weight=0", "spatial_weight=2", "min_tokens_per_frame=0")) else [-1] * 6, P_C7)
add(EVAL, "on these 16-token frames on both: {}% kept, {}% / {}% overall, counting {}% / {}%, position {}% / {}%",
    lambda: [100 * record(SQ, MIXED, "sharpv", None)["kept_share"], *both("sharpv", None),
             *both("sharpv", None, "count"), *both("sharpv", None, "position")], f"{P_SQ}, {R_SQ}")
MERGING = ("visionzip", "fastvid", "flashvid", "holitom")
def _merging() -> list[float]:
    pooling = [acc(SQ, m, "pooling", b) for m in BOTH for b in (0.1, 0.2, 0.3)]
    gaps = [-paired(SQ, m, meth, "sharpv", b)[0] for m in BOTH for meth in MERGING for b in (0.1, 0.2, 0.3)]
    visionzip = [acc(SQ, UNIFORM, "visionzip", b) for b in (0.1, 0.2, 0.3)]
    if min(gaps) <= 0:
        raise ValueError("a merging method is not below SharpV everywhere")
    return [min(pooling), max(pooling), min(gaps), max(gaps), min(visionzip), max(visionzip)]


add(EVAL, "pooling {}-{}%, VisionZip, FastVID, FlashVID and HoliTom below SharpV at every budget on both (by {} to {} points; VisionZip's contextual tokens hurt most: {}-{}% on `uniform-dropout`)",
    _merging, P_SQ)
add(EVAL, "VidCom2 lets in the most evidence ({}-{}%) and counts worst ({}-{}% on both)",
    lambda: [min(e := [100 * record(SQ, m, "vidcom2", b)["evidence_recall"] for m in BOTH for b in (0.1, 0.2, 0.3)]),
             max(e), min(c := [acc(SQ, m, "vidcom2", b, "count") for m in BOTH for b in (0.1, 0.2, 0.3)]), max(c)], f"{P_SQ}, {R_SQ}")
add(EVAL, "at budget 0.2 their layers compute {}% and {}% of the visual tokens (FLOPs share {} and {}, KV share {} and {}) against SharpV's {}% ({}, {})",
    lambda: [100 * record(SQ, MIXED, "fastv", 0.2)["equivalent_retention"],
             100 * record(SQ, MIXED, "pyramiddrop", 0.2)["equivalent_retention"],
             *(record(SQ, MIXED, m, 0.2)["flops_share"] for m in ("fastv", "pyramiddrop")),
             *(record(SQ, MIXED, m, 0.2)["kv_share"] for m in ("fastv", "pyramiddrop")),
             100 * record(SQ, MIXED, "sharpv", 0.2)["equivalent_retention"],
             record(SQ, MIXED, "sharpv", 0.2)["flops_share"], record(SQ, MIXED, "sharpv", 0.2)["kv_share"]], R_SQ)
add(EVAL, "SharpV ({}% / {}% at {} of the compute) is above FastV at 0.2 ({}% / {}%) and PyramidDrop at 0.2 ({}% / {}%) on both models",
    lambda: [*both("sharpv", 0.3), record(SQ, MIXED, "sharpv", 0.3)["flops_share"], *both("fastv", 0.2),
             *both("pyramiddrop", 0.2)], f"{P_SQ}, {R_SQ}")
add(EVAL, "VTW drops the whole video after layer 1 of 4 (retention {}): {}% / {}%",
    lambda: [record(SQ, MIXED, "vtw", 0.2)["equivalent_retention"], *both("vtw", 0.2)], f"{P_SQ}, {R_SQ}")

# evaluation.md: where the two models disagree ------------------------------------------------------------

add(EVAL, "ahead on `mixed-dropout` ({}% and {}% against {}%: +{} [{}, {}] and +{} [{}, {}], paired 95% intervals), behind on `uniform-dropout` ({}% and {}% against {}%: {} [{}, {}] and {} [{}, {}])",
    lambda: [acc(SQ, MIXED, "evs", 0.1), acc(SQ, MIXED, "divprune", 0.1), acc(SQ, MIXED, "sharpv", 0.1),
             *diff_ci(SQ, MIXED, "evs", 0.1), *diff_ci(SQ, MIXED, "divprune", 0.1),
             acc(SQ, UNIFORM, "evs", 0.1), acc(SQ, UNIFORM, "divprune", 0.1), acc(SQ, UNIFORM, "sharpv", 0.1),
             *diff_ci(SQ, UNIFORM, "evs", 0.1), *diff_ci(SQ, UNIFORM, "divprune", 0.1)],
    P_SQ + " (own bootstrap)", tol=[0, 0, 0, 0, BOOT_TOL, BOOT_TOL, 0, BOOT_TOL, BOOT_TOL] * 2)
add(EVAL, "At 0.2 and 0.3 they tie SharpV on `mixed-dropout` (within {} points, intervals around 0) and trail it by {}-{} on `uniform-dropout` (intervals below 0)",
    lambda: [max(abs(paired(SQ, MIXED, m, "sharpv", b)[0]) for m in ("evs", "divprune") for b in (0.2, 0.3)),
             min(t := [-paired(SQ, UNIFORM, m, "sharpv", b)[0] for m in ("evs", "divprune") for b in (0.2, 0.3)]), max(t)]
    if all(paired(SQ, MIXED, m, "sharpv", b)[1] <= 0 <= paired(SQ, MIXED, m, "sharpv", b)[2]
           and paired(SQ, UNIFORM, m, "sharpv", b)[2] < 0 for m in ("evs", "divprune") for b in (0.2, 0.3)) else [-1] * 3,
    P_SQ + " (own bootstrap)")
add(EVAL, "(it lets in {}% of the object cells at 0.1, EVS and DivPrune {}-{}%)",
    lambda: [100 * record(SQ, MIXED, "sharpv", 0.1)["evidence_recall"],
             *sorted(100 * record(SQ, MIXED, m, 0.1)["evidence_recall"] for m in ("evs", "divprune"))], R_SQ)
add(EVAL, "far behind on `mixed-dropout` ({}% and {}% against {}%), level and ahead on `uniform-dropout` ({}% and {}% against {}%: +{} [{}, {}], a tie, and +{} [{}, {}], at the edge of noise), while computing {}x and {}x SharpV's visual tokens per layer ({} and {} against {})",
    lambda: [acc(SQ, MIXED, "fastv", 0.1), acc(SQ, MIXED, "pyramiddrop", 0.1), acc(SQ, MIXED, "sharpv", 0.1),
             acc(SQ, UNIFORM, "fastv", 0.1), acc(SQ, UNIFORM, "pyramiddrop", 0.1), acc(SQ, UNIFORM, "sharpv", 0.1),
             *diff_ci(SQ, UNIFORM, "fastv", 0.1), *diff_ci(SQ, UNIFORM, "pyramiddrop", 0.1),
             *(record(SQ, MIXED, m, 0.1)["equivalent_retention"] / record(SQ, MIXED, "sharpv", 0.1)["equivalent_retention"]
               for m in ("fastv", "pyramiddrop")),
             *(record(SQ, MIXED, m, 0.1)["equivalent_retention"] for m in ("fastv", "pyramiddrop", "sharpv"))],
    f"{P_SQ} (own bootstrap), {R_SQ}", tol=[0] * 6 + [0, BOOT_TOL, BOOT_TOL] * 2 + [0] * 5)
add(EVAL, "EVS at 0.2 and 0.3 (+{} on `mixed-dropout`), DivPrune at 0.2 (+{} / {}), DyCoke at 0.3 (+{} / {})",
    lambda: [paired(SQ, MIXED, "evs", "sharpv", 0.2)[0], *(paired(SQ, m, "divprune", "sharpv", 0.2)[0] for m in BOTH),
             *(paired(SQ, m, "dycoke", "sharpv", 0.3)[0] for m in BOTH)]
    if round(paired(SQ, MIXED, "evs", "sharpv", 0.2)[0], 1) == round(paired(SQ, MIXED, "evs", "sharpv", 0.3)[0], 1)
    else [-99] * 5, P_SQ)

# evaluation.md: other checks, the 3,600 questions, calibration ------------------------------------------

MP4 = "mp4-heldout-300"
add(EVAL, "give {}% dense, {}% SharpV at 0.2 and {}% SharpV adaptive on `mixed-dropout`",
    lambda: [acc(MP4, None, "dense"), acc(MP4, None, "sharpv", 0.2), acc(MP4, None, "sharpv", None)],
    "eval/mp4-heldout-300/predictions.jsonl.gz")
add(EVAL, "put SharpV's lead over random at budget 0.2 at +{} and +{} points",
    lambda: [paired(SQ, m, "sharpv", "random", 0.2)[0] for m in BOTH], P_SQ)
for b, row in ((0.1, "| budget 0.1 |"), (0.2, "| **budget 0.2** |"), (0.3, "| budget 0.3 |")):
    cell = "**+{} [{}, {}]**" if b == 0.2 else "+{} [{}, {}]"
    add(EVAL, f"{row} {cell} | {cell} |",
        lambda b=b: [*paired(TC, MIXED, "sharpv", "random", b), *paired(TC, UNIFORM, "sharpv", "random", b)],
        P_TC + " (own bootstrap)", tol=[0, BOOT_TOL, BOOT_TOL] * 2)
BLOCKS = ((0, 1200), (1200, 2400), (2400, 3600))
add(EVAL, "| at 0.2, questions 1-1,200 / 1,201-2,400 / 2,401-3,600 | +{} / +{} / +{} | +{} / +{} / +{} |",
    lambda: [paired(TC, m, "sharpv", "random", 0.2, blk)[0] for m in BOTH for blk in BLOCKS], P_TC)
add(EVAL, "| dense, SharpV@0.2, random@0.2 | {}%, {}%, {}% | {}%, {}%, {}% |",
    lambda: [acc(TC, m, meth, b) for m in BOTH for meth, b in (("dense", None), ("sharpv", 0.2), ("random", 0.2))], P_TC)
add(EVAL, "The blocks show how far one 1,200-question set moves the difference ({} to {} on `uniform-dropout`)",
    lambda: [min(u := [paired(TC, UNIFORM, "sharpv", "random", 0.2, blk)[0] for blk in BLOCKS]), max(u)], P_TC)
add(EVAL, "({}% / {}% against random's {}% / {}% at 0.2)",
    lambda: [*both("sharpv", 0.2, "count", TC), *both("random", 0.2, "count", TC)], P_TC)
add(EVAL, "the point difference at 0.2 is at least {} points on both models",
    lambda: [5 if all(paired(TC, m, "sharpv", "random", 0.2)[0] >= 5 for m in BOTH) else -1], P_TC)
add(EVAL, "both lower bounds ({} and {}) are below 5, so a lead of at least 5 points is not shown",
    lambda: [paired(TC, m, "sharpv", "random", 0.2)[1] for m in BOTH]
    if all(paired(TC, m, "sharpv", "random", 0.2)[1] < 5 for m in BOTH) else [-1, -1], P_TC + " (own bootstrap)",
    tol=BOOT_TOL)

CS, CU = "calibrate-shipped", "calibrate-uniform"
R_CS, R_CU = "eval/calibrate-shipped/results.json", "eval/calibrate-uniform/results.json"
add(EVAL, "2-core CPU, one thread, {} s in all ({} points, each video encoded once)",
    lambda: [load_json(R_CS)["seconds"], load_json(R_CS)["calibration"]["points"]], R_CS)
add(EVAL, "Chosen: `ratio_scale` K = {} (the paper's manual mode uses 1.6), `spatial_weight` w = {}",
    lambda: [load_json(R_CS)["calibration"]["searched"]["ratio_scale"],
             load_json(R_CS)["calibration"]["searched"]["spatial_weight"]], R_CS)
add(EVAL, "{}% at 0.4, {}% from 0.6)",
    lambda: [100 * curve_point(CS, kv_threshold=0.4)["accuracy"], 100 * curve_point(CS, kv_threshold=0.6)["accuracy"]],
    "eval/calibrate-shipped/curve.json")
add(EVAL, "On the calibration set: {} against dense {} ({}%) at a kept share of {}.",
    lambda: [(c := load_json(R_CS)["calibration"])["accuracy"], c["dense_accuracy"], 100 * c["accuracy_vs_dense"],
             c["kept_share"]], R_CS)


def _heldout_row(run: str, method: str, budget, types: Sequence[str], label: str) -> None:
    shown = "-" if method == "dense" else "adaptive" if budget is None else f"{budget:g}"
    strong = run == CS and method == "sharpv[calibrated]"
    b = "**" if strong else ""
    text = (f"| {label} | {shown} | {b}{{}}{b} | {{}}-{{}} | {b}{{}}{b} | {b}{{}}{b} | {{}} | "
            + " | ".join("{}" for _ in types) + " |")

    def values():
        r = heldout(run, method, budget)
        return [r["accuracy"], *r["ci95"], r["accuracy_vs_dense"], r["kept_share"], r["kv_share"],
                *(r["accuracy_by_type"][t] for t in types)]
    add(EVAL, text, values, f"eval/{run}/results.json")


for method, budget, label in (("dense", None, "dense"), ("sharpv[calibrated]", None, "**sharpv[calibrated]** (K 1.61, w 0)"),
                              ("sharpv", 0.1, "sharpv"), ("sharpv", 0.2, "sharpv"), ("sharpv", 0.3, "sharpv"),
                              ("sharpv", None, "sharpv (default, K 1, w 1)")):
    _heldout_row(CS, method, budget, ("count", "colour", "position"), label)
add(EVAL, "| sharpv | 0.12 | {} | {}-{} | {} | {} | {} | {} | {} | {} |",
    lambda: [acc("calibrated-and-0.12", None, "sharpv", 0.12) / 100,
             *record("calibrated-and-0.12", None, "sharpv", 0.12)["ci95"],
             acc("calibrated-and-0.12", None, "sharpv", 0.12) / acc("calibrated-and-0.12", None, "dense"),
             record("calibrated-and-0.12", None, "sharpv", 0.12)["kept_share"],
             record("calibrated-and-0.12", None, "sharpv", 0.12)["kv_share"],
             *(acc("calibrated-and-0.12", None, "sharpv", 0.12, t) / 100 for t in ("count", "colour", "position"))],
    "eval/calibrated-and-0.12/predictions.jsonl.gz, results.json")
add(EVAL, "which gives the calibrated row again through eval's own path: the same accuracy, per type too, and kept share",
    lambda: [], "eval/calibrated-and-0.12/predictions.jsonl.gz, eval/calibrate-shipped/results.json", holds=lambda: (
        count_correct("calibrated-and-0.12", None, "sharpv[calibrated]", None)
        == heldout(CS, "sharpv[calibrated]", None)["correct"]
        and all(abs(acc("calibrated-and-0.12", None, "sharpv[calibrated]", None, t) / 100 - v) < 1e-9
                for t, v in heldout(CS, "sharpv[calibrated]", None)["accuracy_by_type"].items())
        and abs(record("calibrated-and-0.12", None, "sharpv[calibrated]", None)["kept_share"]
                - heldout(CS, "sharpv[calibrated]", None)["kept_share"]) < 1e-9))
add(EVAL, "keeps {}% of dense accuracy ({} of {} against dense's {}; the bar is {}) with {}% of the visual tokens, where the cheapest fixed budget that keeps 98% is {} ({}% of dense at {}%): {}% fewer tokens for the same bar",
    lambda: [100 * (c := load_json(R_CS)["heldout"]["check"])["accuracy_vs_dense"],
             heldout(CS, "sharpv[calibrated]", None)["correct"], heldout(CS, "sharpv[calibrated]", None)["n"],
             heldout(CS, "dense", None)["correct"], int(np.ceil(0.98 * heldout(CS, "dense", None)["correct"])),
             100 * c["kept_share"], c["best_fixed_budget"]["budget"], 100 * c["best_fixed_budget"]["accuracy_vs_dense"],
             100 * c["best_fixed_budget"]["kept_share"], 100 * (1 - c["kept_share"] / c["best_fixed_budget"]["kept_share"])],
    R_CS)
add(EVAL, "At equal tokens it beats the fixed budget 0.12 by {} points ({}% of dense); the default adaptive setting (K = 1) keeps {}% and {}%",
    lambda: [heldout(CS, "sharpv[calibrated]", None)["accuracy"] * 100 - acc("calibrated-and-0.12", None, "sharpv", 0.12),
             100 * acc("calibrated-and-0.12", None, "sharpv", 0.12) / acc("calibrated-and-0.12", None, "dense"),
             100 * heldout(CS, "sharpv", None)["kept_share"], 100 * heldout(CS, "sharpv", None)["accuracy_vs_dense"]],
    f"{R_CS}, eval/calibrated-and-0.12/predictions.jsonl.gz")
add(EVAL, "({} answers above the bar on the held-out set, {} on the calibration set",
    lambda: [heldout(CS, "sharpv[calibrated]", None)["correct"] - int(np.ceil(0.98 * heldout(CS, "dense", None)["correct"])),
             (c := load_json("eval/calibrate-shipped/curve.json"))["points"][c["chosen"]]["correct"]
             - int(np.ceil(0.98 * c["dense"]["correct"]))], f"{R_CS}, eval/calibrate-shipped/curve.json")
add(EVAL, "Files: [`eval/calibrate-uniform/`](../eval/calibrate-uniform/results.md); {} points, {} s",
    lambda: [load_json(R_CU)["calibration"]["points"], load_json(R_CU)["seconds"]], R_CU)
add(EVAL, "calibration set (dense {}%): the adaptive mode saturates from K = 64 on ({}% kept there, {}% at K = 128 and 256",
    lambda: [100 * load_json(R_CU)["calibration"]["dense_accuracy"],
             *(100 * curve_point(CU, ratio_scale=k, spatial_weight=0.5)["kept_share"] for k in (64.0, 128.0))]
    if abs(curve_point(CU, ratio_scale=128.0, spatial_weight=0.5)["kept_share"]
           - curve_point(CU, ratio_scale=256.0, spatial_weight=0.5)["kept_share"]) < 5e-4 else [-1] * 3,
    "eval/calibrate-uniform/curve.json")
add(EVAL, "the best point is {}% ({}% of dense) at K = {}, w = {}, {}% kept",
    lambda: [100 * (p := curve_point(CU, stage1_choice=True))["accuracy"], 100 * p["accuracy_vs_dense"], p["ratio_scale"],
             p["spatial_weight"], 100 * p["kept_share"]], "eval/calibrate-uniform/curve.json")
add(EVAL, "(retention {} to {} at M = 0.7 for {}%)",
    lambda: [(p := curve_point(CU, kv_threshold=0.7))["kept_share"], p["equivalent_retention"], 100 * p["accuracy"]],
    "eval/calibrate-uniform/curve.json")
for method, budget, label in (("dense", None, "dense"), ("sharpv[calibrated]", None, "sharpv[calibrated] (K 32, w 0.5)"),
                              ("sharpv", 0.1, "sharpv"), ("sharpv", 0.2, "sharpv"), ("sharpv", 0.3, "sharpv"),
                              ("sharpv", None, "sharpv (default, K 1, w 1)")):
    _heldout_row(CU, method, budget, ("count", "position"), label)
add(EVAL, "does keep {}% of dense held out, but at {}% of the tokens, where the fixed budget 0.3 keeps {}% at {}%",
    lambda: [100 * (r := heldout(CU, "sharpv[calibrated]", None))["accuracy_vs_dense"], 100 * r["kept_share"],
             100 * (f := heldout(CU, "sharpv", 0.3))["accuracy_vs_dense"], 100 * f["kept_share"]], R_CU)

# benchmark.md: long videos ----------------------------------------------------------------------------

LONG_ROWS = [("1 (full tower)", LV_FULL, 64, "sharpv-oneshot"), ("1 (full tower)", LV_FULL, 64, "sharpv-chunked"),
             ("2 (1 layer)", LV_1024, 64, "sharpv-chunked"), ("2 (1 layer)", LV_1024, 1024, "sharpv-chunked"),
             ("3 (1 layer)", LV_1L, 64, "dense"), ("3 (1 layer)", LV_1L, 64, "sharpv-oneshot"),
             ("3 (1 layer)", LV_1L, 64, "sharpv-chunked"), ("3 (1 layer)", LV_1L, 256, "sharpv-oneshot"),
             ("3 (1 layer)", LV_1L, 256, "sharpv-chunked")]
for run_label, run, frames, mode in LONG_ROWS:
    add(BENCH, f"| {run_label} | {frames} | {mode} | {{}} ({{}}%) | {{}} | {{}} | {{}} | {{}} | {{}} |",
        lambda run=run, frames=frames, mode=mode: [
            (r := long_video(run, frames, mode))["visual_tokens_kept"], 100 * r["kept_share"], r["ttft_seconds"],
            r["question_to_first_token_seconds"], _mib(r, "kv_cache_bytes"), _mib(r, "peak_memory_bytes"),
            _mib(r, "peak_over_baseline_bytes")], f"bench/{run}/results.json")
add(BENCH, "**Question to first token at 64 frames at most 5% of the one-shot TTFT: met, {}%** ({} s against {} s, real vision tower)",
    lambda: [100 * (c := long_video(LV_FULL, 64, "sharpv-chunked"))["question_to_first_token_seconds"]
             / (o := long_video(LV_FULL, 64, "sharpv-oneshot"))["ttft_seconds"], c["question_to_first_token_seconds"],
             o["ttft_seconds"]], f"bench/{LV_FULL}/results.json")
add(BENCH, "With the cut tower the one-shot TTFT is {} s and the chunked question took {}-{} s at 64 frames in both cut-tower runs ({}%), but {} s at 256 frames and {} s at 1,024",
    lambda: [long_video(LV_1L, 64, "sharpv-oneshot")["ttft_seconds"],
             min(q := [long_video(r, 64, "sharpv-chunked")["question_to_first_token_seconds"] for r in (LV_1L, LV_1024)]),
             max(q), 100 * long_video(LV_1L, 64, "sharpv-chunked")["question_share_of_oneshot_ttft"],
             long_video(LV_1L, 256, "sharpv-chunked")["question_to_first_token_seconds"],
             long_video(LV_1024, 1024, "sharpv-chunked")["question_to_first_token_seconds"]],
    f"bench/{LV_1L}/results.json, bench/{LV_1024}/results.json")
add(BENCH, "met, {}** (run 2: {} MiB at 1,024 frames against {} MiB at 64; over the loaded model {} against {} MiB, of which the kept tokens' KV cache is {} MiB against {})",
    lambda: [(a := long_video(LV_1024, 1024, "sharpv-chunked"))["peak_memory_bytes"]
             / (b := long_video(LV_1024, 64, "sharpv-chunked"))["peak_memory_bytes"],
             _mib(a, "peak_memory_bytes"), _mib(b, "peak_memory_bytes"), _mib(a, "peak_over_baseline_bytes"),
             _mib(b, "peak_over_baseline_bytes"), _mib(a, "kv_cache_bytes"), _mib(b, "kv_cache_bytes")],
    f"bench/{LV_1024}/results.json")
add(BENCH, "(its prefill attends over {} visual tokens)", lambda: [256 * 196], "256 frames x 196 tokens")
add(BENCH, "about {} MiB per frame at {}% kept",
    lambda: [load_json(f"bench/{LV_1024}/results.json")["summary"]["modes"]["sharpv-chunked"]["kv_cache_growth_bytes_per_frame"] / MIB,
             100 * long_video(LV_1024, 1024, "sharpv-chunked")["kept_share"]], f"bench/{LV_1024}/results.json")
add(BENCH, "({} MiB over the loaded model at 256 frames against chunked's {} MiB) and dense adds the prefill over every visual token ({} MiB at only 64 frames)",
    lambda: [_mib(long_video(LV_1L, 256, "sharpv-oneshot"), "peak_over_baseline_bytes"),
             _mib(long_video(LV_1L, 256, "sharpv-chunked"), "peak_over_baseline_bytes"),
             _mib(long_video(LV_1L, 64, "dense"), "peak_over_baseline_bytes")], f"bench/{LV_1L}/results.json")
add(BENCH, "({} s against {} s at 64 frames, {} s against {} s at 256)",
    lambda: [long_video(LV_1L, f, m)["prefill_seconds"] for f in (64, 256) for m in ("sharpv-chunked", "sharpv-oneshot")],
    f"bench/{LV_1L}/results.json")
add(BENCH, "(stage 1 keeps {}% of them, against {}% with the full tower)",
    lambda: [100 * long_video(LV_1024, 64, "sharpv-chunked")["kept_share"],
             100 * long_video(LV_FULL, 64, "sharpv-oneshot")["kept_share"]], f"bench/{LV_1024}, bench/{LV_FULL}")
add(BENCH, "it keeps {}-{}% here",
    lambda: [min(k := [100 * r["kept_share"] for r in load_json("bench/long-video-cpu/results.json")["records"]
                       if r["mode"] != "dense"]), max(k)], "bench/long-video-cpu/results.json", tol=0.5)
add(BENCH, "The full tower costs {}-{} s per frame here",
    lambda: [min(v := [long_video(LV_FULL, 64, m)["vision_seconds"] / 64 for m in ("sharpv-oneshot", "sharpv-chunked")]),
             max(v)], f"bench/{LV_FULL}/results.json", tol=0.5)


# efficiency: sharpv bench's interleaved rounds -----------------------------------------------------


def bench_cell(folder: str, method: str, budget: float | None, frames: int) -> dict:
    for r in load_json(f"bench/{folder}/results.json")["records"]:
        if r["method"] == method and r["budget"] == budget and r["frames"] == frames:
            return r
    raise KeyError(f"bench/{folder}: no record {method} @ {budget}, {frames} frames")


def _ideal_of(folder: str, cell: dict) -> dict:
    for r in load_json(f"bench/{folder}/results.json")["records"]:
        if (r["method"] == "ideal" and r["frames"] == cell["frames"]
                and r["visual_tokens_kept"] == cell["ideal_visual_tokens"]):
            return r
    raise KeyError(f"bench/{folder}: no ideal row for {cell['cell']}")


def round_ratio(folder: str, method: str, budget: float | None, frames: int, against: str = "dense") -> list[float]:
    """[median, min, max] over the timed rounds of a prefill ratio taken within each round, from the raw
    seconds: dense's over the cell's (``against="dense"``: the speedup; ``"ideal"`` for the ideal
    row's speedup) or the cell's over its ideal row's (``"vs-ideal"``)."""
    cell = bench_cell(folder, method, budget, frames)
    dense = bench_cell(folder, "dense", None, frames)["rounds"]["prefill_seconds"]
    own = cell["rounds"]["prefill_seconds"]
    if against == "vs-ideal":
        ideal = _ideal_of(folder, cell)["rounds"]["prefill_seconds"]
        values = [c / i for c, i in zip(own, ideal)]
    else:
        values = [d / c for d, c in zip(dense, own)]
    if len(values) != len(dense):
        raise KeyError(f"bench/{folder}: {cell['cell']} has {len(values)} rounds, dense {len(dense)}")
    return [float(np.median(values)), min(values), max(values)]


HEADLINE = ("headline-cpu/run-1", "headline-cpu/run-2")
for label, method, against in [("stage 1 (`sharpv:kv=false`)", "sharpv:kv=false", "dense"),
                               ("ideal (the bare model on only the kept tokens)", "ideal", "dense"),
                               ("stage 1's prefill against the ideal's", "sharpv:kv=false", "vs-ideal"),
                               ("both stages, withdrawal forced at layer 12 of 24", "sharpv:kv_threshold=2:kv_min_layer=12", "dense"),
                               ("FastV", "fastv", "dense"), ("PyramidDrop", "pyramiddrop", "dense")]:
    add(README, f"| {label} | {{}}x [{{}}-{{}}] | {{}}x [{{}}-{{}}] |",
        lambda method=method, against=against: [v for run in HEADLINE for v in round_ratio(run, method, 0.3, 32, against)],
        "bench/headline-cpu/run-{1,2}/results.json (raw seconds of every round)")
add(README, "its scoring and selection take {} ms / {} ms ({}% / {}% of the dense prefill) and its KV cache is {}x dense",
    lambda: [*(1000 * bench_cell(run, "sharpv:kv=false", 0.3, 32)["pruning_seconds"] for run in HEADLINE),
             *(100 * bench_cell(run, "sharpv:kv=false", 0.3, 32)["pruning_share_of_dense_prefill"] for run in HEADLINE),
             bench_cell(HEADLINE[0], "sharpv:kv=false", 0.3, 32)["kv_ratio"]],
    "bench/headline-cpu/run-{1,2}/results.json")
add(README, "The two runs' spreads overlap on every row, and stage 1 is as fast as the ideal within its spread",
    lambda: [], "bench/headline-cpu/run-{1,2}/results.json",
    holds=lambda: all(max(a[1], b[1]) <= min(a[2], b[2]) for m in ("sharpv:kv=false", "ideal", "fastv", "pyramiddrop",
                                                                 "sharpv:kv_threshold=2:kv_min_layer=12")
                      for a, b in [[round_ratio(run, m, 0.3, 32) for run in HEADLINE]])
    and all(r[1] <= 1 <= r[2] for r in (round_ratio(run, "sharpv:kv=false", 0.3, 32, "vs-ideal") for run in HEADLINE)))


FULL = "llava-onevision-0.5b-cpu"
BOTH_FORCED = "sharpv:kv_threshold=2:kv_min_layer=12"
for frames in (8, 16, 32):
    add(BENCH, f"| {frames} | {{}} [{{}}-{{}}] | " + " | ".join(["{}x [{}-{}]"] * 5) + " | {}% |",
        lambda frames=frames: [
            *(lambda v: [float(np.median(v)), min(v), max(v)])(bench_cell(FULL, "dense", None, frames)["rounds"]["prefill_seconds"]),
            *(v for m in ("ideal", "sharpv:kv=false", BOTH_FORCED, "fastv", "pyramiddrop")
              for v in round_ratio(FULL, m, 0.3, frames)),
            100 * bench_cell(FULL, "sharpv:kv=false", 0.3, frames)["pruning_share_of_dense_prefill"]],
        f"bench/{FULL}/results.json (raw seconds of every round)")
add(BENCH, "prefill 4.95x [{}-{}] faster than dense", lambda: round_ratio(FULL, "sharpv:kv=false", 0.3, 32)[1:],
    f"bench/{FULL}/results.json")
add(BENCH, "(its prefill {}x [{}-{}] the ideal's), with scoring and selection at {} ms = {}% of the dense prefill",
    lambda: [*round_ratio(FULL, "sharpv:kv=false", 0.3, 32, "vs-ideal"),
             1000 * bench_cell(FULL, "sharpv:kv=false", 0.3, 32)["pruning_seconds"],
             100 * bench_cell(FULL, "sharpv:kv=false", 0.3, 32)["pruning_share_of_dense_prefill"]], f"bench/{FULL}/results.json")
add(BENCH, "At 0.2 and 0.1 it is {}x [{}-{}] and {}x [{}-{}], against the ideal's {}x and {}x",
    lambda: [*round_ratio(FULL, "sharpv:kv=false", 0.2, 32), *round_ratio(FULL, "sharpv:kv=false", 0.1, 32),
             round_ratio(FULL, "ideal", 0.2, 32)[0], round_ratio(FULL, "ideal", 0.1, 32)[0]], f"bench/{FULL}/results.json")
add(BENCH, "(medians {}-{}x its prefill)",
    lambda: [min(v := [round_ratio(FULL, m, b, 32, "vs-ideal")[0] for m in ("sharpv:kv=false", "random", "pooling", "evs",
             "dycoke", "vidcom2", "visionzip", "fastvid", "flashvid", "holitom") for b in (0.1, 0.2, 0.3)]), max(v)],
    f"bench/{FULL}/results.json")
add(BENCH, "**Both stages, withdrawal forced at layer 12**: {}x [{}-{}] at 0.3 (32 frames) and {}x [{}-{}] at 0.1, KV cache {}x and {}x dense",
    lambda: [*round_ratio(FULL, BOTH_FORCED, 0.3, 32), *round_ratio(FULL, BOTH_FORCED, 0.1, 32),
             bench_cell(FULL, BOTH_FORCED, 0.3, 32)["kv_ratio"], bench_cell(FULL, BOTH_FORCED, 0.1, 32)["kv_ratio"]],
    f"bench/{FULL}/results.json")
add(BENCH, "FastV at 0.3 is {}x [{}-{}]", lambda: round_ratio(FULL, "fastv", 0.3, 32), f"bench/{FULL}/results.json")
add(BENCH, "PyramidDrop {}x [{}-{}] at 0.3 and {}x [{}-{}] at 0.1",
    lambda: [*round_ratio(FULL, "pyramiddrop", 0.3, 32), *round_ratio(FULL, "pyramiddrop", 0.1, 32)], f"bench/{FULL}/results.json")
add(BENCH, "VTW {}x [{}-{}] at 0.3", lambda: round_ratio(FULL, "vtw", 0.3, 32), f"bench/{FULL}/results.json")
add(BENCH, "first layers: {}-{}x for FastV, {}-{}x for PyramidDrop",
    lambda: [f(v) for m in ("fastv", "pyramiddrop") for v in [[round_ratio(FULL, m, b, 32, "vs-ideal")[0] for b in (0.1, 0.2, 0.3)]]
             for f in (min, max)], f"bench/{FULL}/results.json")
add(BENCH, "{} of the {} rows are flagged",
    lambda: (lambda rs: [sum(1 for r in rs if r.get("flag")), len(rs)])(load_json(f"bench/{FULL}/results.json")["records"]),
    f"bench/{FULL}/results.json")
add(BENCH, "stage 1 and random at 16 frames and budget 0.1 (314 visual tokens) ran {}-{}x the ideal's prefill in every round, while their speedups' spreads still overlap the ideal's ({}x [{}-{}] and {}x [{}-{}] against {}x [{}-{}])",
    lambda: [min(v := [*round_ratio(FULL, "sharpv:kv=false", 0.1, 16, "vs-ideal")[1:], *round_ratio(FULL, "random", 0.1, 16, "vs-ideal")[1:]]),
             max(v), *round_ratio(FULL, "sharpv:kv=false", 0.1, 16), *round_ratio(FULL, "random", 0.1, 16),
             *round_ratio(FULL, "ideal", 0.1, 16)], f"bench/{FULL}/results.json", tol=0.01)
add(BENCH, "the same rows at 8 frames do not ({}x [{}-{}] and {}x [{}-{}])",
    lambda: [*round_ratio(FULL, "sharpv:kv=false", 0.1, 8, "vs-ideal"), *round_ratio(FULL, "random", 0.1, 8, "vs-ideal")],
    f"bench/{FULL}/results.json")
add(BENCH, "32 frames (6,272 visual tokens), every method", lambda: [], f"bench/{FULL}/results.md",
    holds=lambda: all(_norm(line) in document(BENCH) for line in (ROOT / f"bench/{FULL}/results.md").read_text().splitlines()
                      if line.startswith("| 32 |")))
add(BENCH, "stage 1's prefill against the ideal's is {}x [{}-{}] and {}x [{}-{}]",
    lambda: [v for run in HEADLINE for v in round_ratio(run, "sharpv:kv=false", 0.3, 32, "vs-ideal")], "bench/headline-cpu")


# vLLM: the engines' interleaved rounds -----------------------------------------------------------------


def vllm_ratio(mode: str, against: str = "dense", key: str = "requests_per_second") -> list[float]:
    """[median, min, max] over the rounds of ``mode``'s requests/s over ``against``'s within a round,
    from bench/vllm-cpu's raw per-round numbers."""
    records = {r["mode"]: r for r in load_json("bench/vllm-cpu/results.json")["records"]}
    values = [a / b for a, b in zip(records[mode]["rounds"][key], records[against]["rounds"][key])]
    return [float(np.median(values)), min(values), max(values)]


VLLM = "bench/vllm-cpu/results.json (raw numbers of every round)"
add("docs/integrations.md", "SharpV serves {}x [{}-{}] dense's requests per second, against EVS {}x [{}-{}] and VidCom2 {}x [{}-{}] at the same rate",
    lambda: [*vllm_ratio("sharpv"), *vllm_ratio("evs"), *vllm_ratio("vidcom2")], VLLM)
add("docs/integrations.md", "(SharpV over EVS {}x [{}-{}];", lambda: vllm_ratio("sharpv", "evs"), VLLM)
add(BENCH, "SharpV's requests per second are {}x [{}-{}] EVS's and {}x [{}-{}] VidCom2's",
    lambda: [*vllm_ratio("sharpv", "evs"), *vllm_ratio("sharpv", "vidcom2")], VLLM)
add(BENCH, "and all three serve {}-{}x dense's requests per second",
    lambda: [min(v := [vllm_ratio(m)[0] for m in ("sharpv", "evs", "vidcom2")]), max(v)], VLLM)
add(BENCH, "The time to first token of a request alone falls to {}-{}x dense's",
    lambda: [min(v := [1 / vllm_ratio(m, key="ttft_seconds_alone")[0] for m in ("sharpv", "evs", "vidcom2")]), max(v)],
    VLLM, tol=0.01)
add(BENCH, "1 warm-up round, 11.0 minutes in all. Median [min-max] over the rounds", lambda: [], VLLM,
    holds=lambda: all(_norm(line) in document(BENCH) for line in (ROOT / "bench/vllm-cpu/results.md").read_text().splitlines()
                      if line.startswith("| ")))
add("docs/integrations.md", "SharpV, EVS and VidCom2 at {}-{}x dense's requests per second with overlapping spreads, SharpV over EVS {}x [{}-{}]",
    lambda: [min(v := [vllm_ratio(m)[0] for m in ("sharpv", "evs", "vidcom2")]), max(v), *vllm_ratio("sharpv", "evs")], VLLM)


# --- the pretrained language model (docs/pretrained-model.md, README) ----------------------------------

PRE = "docs/pretrained-model.md"
SIM = "eval/similarity-smollm2-dinov2/similarity.json"
PRE_TRAIN = "src/sharpv/assets/smollm2-dinov2/training.json, training_log.json"


def sim_curve(measure: str, run: str = "smollm2-dinov2") -> list[float]:
    return load_json(f"eval/similarity-{run}/similarity.json")["summary"]["measures"][measure]["mean"]


def sim_fires(measure: str) -> dict:
    return load_json(SIM)["summary"]["measures"][measure]["withdraw_layer"]


def massive_share() -> list[float]:
    return load_json(SIM)["summary"]["massive_share_of_visual_norm"]


def sim_layer(layer: int) -> dict:
    return load_json(SIM)["massive_channels"]["per_layer"][layer]


def sim_peak(layer: int, channel: int) -> float:
    return next(c["peak_abs"] for c in sim_layer(layer)["top_channels"] if c["channel"] == channel)


def pre_training() -> dict:
    return load_json("src/sharpv/assets/smollm2-dinov2/training.json")


def pre_validation(step: int) -> dict:
    rows = load_json("src/sharpv/assets/smollm2-dinov2/training_log.json")
    return next(r["accuracy"] for r in rows if r.get("step") == step and "accuracy" in r)


add(README, "is below M = 0.2 from layer {} of {} on (median over {} held-out videos; {} massive-activation channels, {}% of them, hold {}-{}% of their norm from layer {} on, and leaving them out does not change that)",
    lambda: [sim_fires("cosine")["median"], load_json(SIM)["summary"]["layers"], len(load_json(SIM)["videos"]),
             len(load_json(SIM)["massive_channels"]["channels"]), 100 * len(load_json(SIM)["massive_channels"]["channels"]) / 576,
             100 * min(massive_share()[5:]), 100 * max(massive_share()[5:]), 5], SIM,
    holds=lambda: sim_fires("without_massive")["median"] == sim_fires("cosine")["median"])
add(PRE, "`s_l` falls from {} at layer 1 to {} at layer 2 and crosses 0.2 at layer {} (median over the videos; {} to {}), the first layer the rule may act on; {} of the 30 layers average below 0.2 and {} below 0.1",
    lambda: [sim_curve("cosine")[1], sim_curve("cosine")[2], sim_fires("cosine")["median"], sim_fires("cosine")["min"],
             sim_fires("cosine")["max"], load_json(SIM)["summary"]["measures"]["cosine"]["layers_below_threshold"],
             load_json(SIM)["summary"]["measures"]["cosine"]["layers_below_0.1"]], SIM)
FIRST = "eval/smollm2-dinov2-recipes/first"
add(PRE, "their `s_l` at layer 1 was {} and the rule fired at layer {} ({} to {};",
    lambda: [(f := load_json(f"{FIRST}/similarity/similarity.json")["summary"]["measures"]["cosine"])["mean"][1],
             f["withdraw_layer"]["median"], f["withdraw_layer"]["min"], f["withdraw_layer"]["max"]], f"{FIRST}/similarity/similarity.json")
add(PRE, "channel 507 peaks at {} at layer 3 ({}x the layer's median magnitude of {}) and at {} at layer 12 (about {}x its median of {}); channel 247 at {} and channel 14 at {} at layer 12.",
    lambda: [sim_peak(3, 507), sim_peak(3, 507) / sim_layer(3)["median_abs"], sim_layer(3)["median_abs"], sim_peak(12, 507),
             sim_peak(12, 507) / sim_layer(12)["median_abs"], sim_layer(12)["median_abs"], sim_peak(12, 247), sim_peak(12, 14)], SIM,
    tol=[0, 0.5, 0, 0, 500, 0, 0, 0])
add(PRE, "{} of the 576 channels", lambda: [len(load_json(SIM)["massive_channels"]["channels"])], SIM)
add(PRE, "{}% of them, hold {}-{}% of the visual tokens' squared norm from layer 5 on ({}% at the input)",
    lambda: [100 * len(load_json(SIM)["massive_channels"]["channels"]) / 576, 100 * min(massive_share()[5:]),
             100 * max(massive_share()[5:]), 100 * massive_share()[0]], SIM)
add(PRE, "raises `s_l` by {}-{} over layers 2-15",
    lambda: [min(d := [b - a for a, b in zip(sim_curve("cosine")[2:16], sim_curve("without_massive")[2:16])]), max(d)], SIM)
add(PRE, "and the rule then fires at layer {} ({} to {})",
    lambda: [sim_fires("without_massive")["median"], sim_fires("without_massive")["min"], sim_fires("without_massive")["max"]], SIM)
add(PRE, "the per-channel scale does not) fires at layer {}", lambda: [sim_fires("normed")["median"]], SIM)
add(PRE, "On the shipped 4-layer models it never fires (`s_l` >= {} on every layer",
    lambda: [min(min(sim_curve("cosine", m)) for m in BOTH)],
    "eval/similarity-mixed-dropout/similarity.json, eval/similarity-uniform-dropout/similarity.json", tol=0.01)
add(PRE, "the feature cache of {} training and {} validation videos {} min, {} optimizer steps {} min ({} s per step on two threads",
    lambda: [pre_training()["settings"]["videos"], 96, pre_training()["wall_seconds_by_phase"]["feature_cache"] / 60,
             pre_training()["steps"], pre_training()["wall_seconds_by_phase"]["train"] / 60, pre_training()["sec_per_step"]],
    PRE_TRAIN)
add(PRE, "{} minutes in all", lambda: [pre_training()["wall_seconds"] / 60], PRE_TRAIN)
add(PRE, "The budget stopped it at step {} of the {} planned ({} conversations, {} passes over the videos)",
    lambda: [pre_training()["steps"], pre_training()["planned_steps"], pre_training()["conversations"], pre_training()["epochs"]],
    PRE_TRAIN)
add(PRE, "{}% at step 200, {}% at 400, {}% at 600, {}% at 800, {}% at 1,000, **{}% at the end**: colour {}%, colour change {}%, count {}%, appearance time {}%, position {}%, motion {}%",
    lambda: [100 * pre_validation(k)["overall"] for k in (200, 400, 600, 800, 1000)]
    + [100 * pre_training()["final_validation_accuracy"][t] for t in
       ("overall", "colour", "colour_change", "count", "appearance_time", "position", "motion")], PRE_TRAIN)


ST2 = "eval/stage2-smollm2-dinov2/stage2.json"


def st2(label: str) -> dict:
    return load_json(ST2)["summary"][label]


def st2_acc(label: str) -> float:
    """Accuracy of an arm from its answers (not the summary)."""
    q = load_json(ST2)["questions"]
    return 100 * sum(row[label]["right"] for row in q) / len(q)


def st2_diff(label: str, reference: str = "sharpv stage 2") -> list[float]:
    v = st2(label)["minus_sharpv" if reference == "sharpv stage 2" else "minus_dense"]
    return [100 * v["mean"], 100 * v["ci95"][0], 100 * v["ci95"][1]]


_ARMS = {"dense": "dense", "SharpV stage 2 (M = 0.2, raw cosine)": "sharpv stage 2",
         "SharpV stage 2, massive channels ignored": "sharpv stage 2 (sharpv, massive channels ignored)",
         "VTW at layer 2 (SharpV's median)": "VTW at layer 2 (SharpV's median)",
         "SharpV's layers, permuted across questions": "random layers (SharpV's, permuted)"}
for shown, label in _ARMS.items():
    if label == "sharpv stage 2":
        add(PRE, f"| {shown} | {{}}% | 0 | layer {{}} | {{}}% | {{}}% |",
            lambda label=label: [st2_acc(label), st2(label)["median_layer"], 100 * st2(label)["compute_share"],
                                 100 * st2(label)["kv_share"]], ST2)
    elif label == "dense":
        add(PRE, f"| {shown} | {{}}% | {{}} [{{}}, {{}}] | - | 100% | 100% |",
            lambda label=label: [st2_acc(label), *st2_diff(label)], ST2)
    else:
        add(PRE, f"| {shown} | {{}}% | {{}} [{{}}, {{}}] | layer {{}} | {{}}% | {{}}% |",
            lambda label=label: [st2_acc(label), *st2_diff(label), st2(label)["median_layer"],
                                 100 * st2(label)["compute_share"], 100 * st2(label)["kv_share"]], ST2)
add(PRE, "| VTW at layer 4 / 8 / 12 / 20 | {}% / {}% / {}% / {}% | {} to {} | 4 / 8 / 12 / 20 | {}% to {}% | {}% to {}% |",
    lambda: [*(st2_acc(f"VTW at layer {k}") for k in (4, 8, 12, 20)),
             min(d := [st2_diff(f"VTW at layer {k}")[0] for k in (4, 8, 12, 20)]), max(d),
             100 * st2("VTW at layer 4")["compute_share"], 100 * st2("VTW at layer 20")["compute_share"],
             100 * st2("VTW at layer 4")["kv_share"], 100 * st2("VTW at layer 20")["kv_share"]], ST2)
add(PRE, "SharpV's rule withdraws at layer {} on all {} questions, saving {}% of the visual tokens' layer compute and {}% of the KV cache",
    lambda: [2, sum(1 for q in load_json(ST2)["questions"] if q["sharpv stage 2"]["layer"] == 2),
             100 * (1 - st2("sharpv stage 2")["compute_share"]), 100 * (1 - st2("sharpv stage 2")["kv_share"])], ST2)
add(PRE, "(the rule at layer {}: {}% against dense's {}%, no better than VTW at layer {};",
    lambda: [(f := load_json(f"{FIRST}/stage2/stage2.json"))["summary"]["sharpv stage 2"]["median_layer"],
             100 * f["summary"]["sharpv stage 2"]["accuracy"], 100 * f["summary"]["dense"]["accuracy"],
             f["summary"]["VTW at layer 10 (SharpV's median)"]["median_layer"]], f"{FIRST}/stage2/stage2.json")
add(PRE, "The first recipe's run ({} minutes, {} steps, rank-8 adapters; its files are in `eval/smollm2-dinov2-recipes/first/`) reached {}% on validation",
    lambda: [(f := load_json(f"{FIRST}/training.json"))["wall_seconds"] / 60, f["steps"],
             100 * f["final_validation_accuracy"]["overall"]], f"{FIRST}/training.json", tol=[0.5, 0, 0])


add(PRE, "the visual tokens' similarity falls from {} at layer 2 to {} at layer 23, then to {} at layer 25, and the paper's M = 0.2 fires at layer {} ({} to {}) on all {} videos",
    lambda: [sim_curve("from_reference")[2], sim_curve("from_reference")[23], sim_curve("from_reference")[25],
             sim_fires("from_reference")["median"], sim_fires("from_reference")["min"], sim_fires("from_reference")["max"],
             sim_fires("from_reference")["fired"]], SIM,
    holds=lambda: sim_fires("from_reference")["fired"] == len(load_json(SIM)["videos"]) and load_json(SIM)["reference_layer"] == 1)
add(PRE, "(`s_l` from layer 1 >= {} on every layer",
    lambda: [min(min(sim_curve("from_reference", m)) for m in BOTH)],
    "eval/similarity-mixed-dropout/similarity.json, eval/similarity-uniform-dropout/similarity.json", tol=0.01,
    holds=lambda: all(load_json(f"eval/similarity-{m}/similarity.json")["summary"]["measures"]["from_reference"]["withdraw_layer"]["fired"] == 0
                      for m in BOTH))
ST2R = "eval/stage2-smollm2-dinov2-reference/stage2.json"


def st2r(label: str) -> dict:
    return load_json(ST2R)["summary"][label]


for shown, label in {"SharpV stage 2, reference layer 1 (M = 0.2)": "sharpv stage 2 (sharpv, reference layer 1)",
                     "VTW at layer 27 (its median)": "VTW at layer 27 (the config's median)",
                     "its layers, permuted across questions": "random layers (the config's, permuted)"}.items():
    add(PRE, f"| {shown} | {{}}% | {{}} [{{}}, {{}}] | layer {{}} | {{}}% | {{}}% |",
        lambda label=label: [100 * st2r(label)["accuracy"], *(100 * x for x in (st2r(label)["minus_sharpv"]["mean"], *st2r(label)["minus_sharpv"]["ci95"])),
                             st2r(label)["median_layer"], 100 * st2r(label)["compute_share"], 100 * st2r(label)["kv_share"]], ST2R)
add(PRE, "| VTW at layer 23 / 25 | {}% / {}% | {} / {} | 23 / 25 | {}% / {}% | {}% / {}% |",
    lambda: [100 * st2r("VTW at layer 23")["accuracy"], 100 * st2r("VTW at layer 25")["accuracy"],
             100 * st2r("VTW at layer 23")["minus_sharpv"]["mean"], 100 * st2r("VTW at layer 25")["minus_sharpv"]["mean"],
             100 * st2r("VTW at layer 23")["compute_share"], 100 * st2r("VTW at layer 25")["compute_share"],
             100 * st2r("VTW at layer 23")["kv_share"], 100 * st2r("VTW at layer 25")["kv_share"]], ST2R)
add(PRE, "The reference at layer 1 keeps dense's accuracy ({}% against {}%)",
    lambda: [100 * st2r("sharpv stage 2 (sharpv, reference layer 1)")["accuracy"], 100 * st2r("dense")["accuracy"]], ST2R)


add(PRE, "withdrawing at layer 29 or 26 keeps dense's accuracy ({}% and {}% against {}% on {} held-out questions) and at layer 23 it falls to {}%",
    lambda: [100 * record("vtw-late-smollm2-dinov2", None, "vtw:layer=29", 1.0)["accuracy"],
             100 * record("vtw-late-smollm2-dinov2", None, "vtw:layer=26", 1.0)["accuracy"],
             100 * record("vtw-late-smollm2-dinov2", None, "dense", None)["accuracy"],
             record("vtw-late-smollm2-dinov2", None, "dense", None)["n"],
             100 * record("vtw-late-smollm2-dinov2", None, "vtw:layer=23", 1.0)["accuracy"]],
    "eval/vtw-late-smollm2-dinov2/results.json")


add(PRE, "(one thread, a fresh process, the machine otherwise idle): {} s wall and {} MB peak RSS",
    lambda: [(lambda r: sum(float(x) * 60 ** i for i, x in enumerate(reversed(r["elapsed"].split(":")))))(
        load_json("bench/answer-smollm2-dinov2-cpu/results.json")["runs"][0]),
        load_json("bench/answer-smollm2-dinov2-cpu/results.json")["runs"][0]["max_rss_kib"] * 1024 / 1e6],
    "bench/answer-smollm2-dinov2-cpu/results.json", tol=[0, 0.5])


PB = ("smollm2-dinov2-cpu/run-1", "smollm2-dinov2-cpu/run-2")
PB_ARMS = [("SharpV, both stages @ 0.1 (stage 2 withdraws at layer 2)", "sharpv", 0.1, True),
           ("SharpV, both stages, adaptive", "sharpv", None, True),
           ("stage 1 alone (`sharpv:kv=false`) @ 0.1", "sharpv:kv=false", 0.1, True),
           ("stage 1 alone, adaptive", "sharpv:kv=false", None, True),
           ("stage 1 alone @ 0.3", "sharpv:kv=false", 0.3, True),
           ("FastV @ 0.1", "fastv", 0.1, True), ("VisionZip @ 0.1", "visionzip", 0.1, True),
           ("ideal @ 0.1", "ideal", 0.1, False), ("ideal @ 0.3", "ideal", 0.3, False)]


def bench_spread(folder: str, method: str, budget: float | None, frames: int, key: str) -> list[float]:
    """[median, min, max] over the timed rounds of one per-round figure of a cell."""
    v = bench_cell(folder, method, budget, frames)["rounds"][key]
    return [float(np.median(v)), min(v), max(v)]


add(PRE, "| dense (seconds) | {} s | {} s | {} s | {} s | {} MiB |",
    lambda: [bench_spread(PB[1], "dense", None, f, k)[0] for f in (16, 32) for k in ("prefill_seconds", "ttft_seconds")]
    + [bench_cell(PB[1], "dense", None, 32)["kv_cache_bytes"] / MIB], f"bench/{PB[1]}/results.json")
for _label, _m, _b, _ttft in PB_ARMS:
    if _ttft:
        add(PRE, f"| {_label} | {{}}x [{{}}-{{}}] | {{}}x [{{}}-{{}}] | {{}}x [{{}}-{{}}] | {{}}x [{{}}-{{}}] | {{}}% |",
            lambda m=_m, b=_b: [v for f in (16, 32) for k in ("prefill_speedup", "ttft_speedup") for v in bench_spread(PB[1], m, b, f, k)]
            + [100 * bench_cell(PB[1], m, b, 32)["kv_ratio"]], f"bench/{PB[1]}/results.json (every round)")
    else:
        add(PRE, f"| {_label} | {{}}x [{{}}-{{}}] | - | {{}}x [{{}}-{{}}] | - | - |",
            lambda m=_m, b=_b: [v for f in (16, 32) for v in bench_spread(PB[1], m, b, f, "prefill_speedup")],
            f"bench/{PB[1]}/results.json (every round)")
add(PRE, "run 1 (5 rounds, another shuffle) agrees: every arm's prefill and TTFT spread overlaps run 2's",
    lambda: [], f"bench/{PB[0]}/results.json, bench/{PB[1]}/results.json",
    holds=lambda: all(max(a[1], b[1]) <= min(a[2], b[2]) for _, m, bud, t in PB_ARMS for f in (16, 32)
                      for k in (("prefill_speedup", "ttft_speedup") if t else ("prefill_speedup",))
                      for a, b in [[bench_spread(run, m, bud, f, k) for run in PB]]))
add(PRE, "Peak RSS of every cell: {}-{} MiB.",
    lambda: [min(v := [r["peak_memory_bytes"] / MIB for r in load_json(f"bench/{PB[1]}/results.json")["records"]
                       if r.get("peak_memory_bytes")]), max(v)], f"bench/{PB[1]}/results.json", tol=1)
add(PRE, "its prefill is {}x-{}x the ideal row's in the median",
    lambda: [min(v := [bench_spread(PB[1], "sharpv:kv=false", b, f, "prefill_vs_ideal")[0] for b in (0.1, 0.3, None) for f in (16, 32)]),
             max(v)], f"bench/{PB[1]}/results.json (every round)")
add(PRE, "SharpV's scoring and selection take {} ms at 32 frames against VisionZip's {} ms",
    lambda: [1000 * bench_cell(PB[1], "sharpv:kv=false", 0.1, 32)["pruning_seconds"],
             1000 * bench_cell(PB[1], "visionzip", 0.1, 32)["pruning_seconds"]], f"bench/{PB[1]}/results.json")
add(PRE, "the vision tower and the processor take {} s of dense's {} s time to first token at 32 frames",
    lambda: [bench_cell(PB[1], "dense", None, 32)["ttft_seconds"] - bench_cell(PB[1], "dense", None, 32)["prefill_seconds"],
             bench_cell(PB[1], "dense", None, 32)["ttft_seconds"]], f"bench/{PB[1]}/results.json")


add(README, "stage 1 alone at budget 0.1 cuts the prefill {}x (the bare model on as few tokens: {}x) but the time to first token only {}x, as the vision tower and the processor take {} s of dense's {} s",
    lambda: [bench_spread(PB[1], "sharpv:kv=false", 0.1, 32, "prefill_speedup")[0], bench_spread(PB[1], "ideal", 0.1, 32, "prefill_speedup")[0],
             bench_spread(PB[1], "sharpv:kv=false", 0.1, 32, "ttft_speedup")[0],
             bench_cell(PB[1], "dense", None, 32)["ttft_seconds"] - bench_cell(PB[1], "dense", None, 32)["prefill_seconds"],
             bench_cell(PB[1], "dense", None, 32)["ttft_seconds"]], f"bench/{PB[1]}/results.json")


add(README, "the same rule fires at layer {} and keeps dense's accuracy ({}%)",
    lambda: [st2r("sharpv stage 2 (sharpv, reference layer 1)")["median_layer"],
             100 * st2r("sharpv stage 2 (sharpv, reference layer 1)")["accuracy"]], ST2R,
    holds=lambda: st2r("sharpv stage 2 (sharpv, reference layer 1)")["accuracy"] == st2r("dense")["accuracy"])


HO = "eval/smollm2-dinov2-heldout/heldout.json"


def ho_acc(key: str, qtype: str | None = None) -> float:
    """Held-out accuracy from the answers themselves."""
    rows = [a for a in load_json(HO)["answers"] if qtype is None or a["type"] == qtype]
    return 100 * sum(a[f"{key}_right"] for a in rows) / len(rows)


add(PRE, "**Dense {}% [{}%, {}%], text only {}% [{}%, {}%]** (chance {}%): the model uses the video, by +{} points (paired 95% interval [+{}, +{}])",
    lambda: [ho_acc("dense"), *(100 * x for x in load_json(HO)["overall"]["dense"]["ci95"]), ho_acc("text_only"),
             *(100 * x for x in load_json(HO)["overall"]["text_only"]["ci95"]), 100 * load_json(HO)["chance_overall"],
             ho_acc("dense") - ho_acc("text_only"), *(100 * x for x in load_json(HO)["dense_minus_text_only"]["ci95"])], HO)
add(PRE, "The first recipe's weights: dense {}%, text only {}%",
    lambda: [100 * (f := load_json(f"{FIRST}/heldout/heldout.json"))["overall"]["dense"]["accuracy"],
             100 * f["overall"]["text_only"]["accuracy"]], f"{FIRST}/heldout/heldout.json")
add(PRE, "colour {}% / {}%, colour change {}% / {}%, count {}% / {}%, appearance time {}% / {}%, position {}% / {}%, motion {}% / {}%.",
    lambda: [v for t in ("colour", "colour_change", "count", "appearance_time", "position", "motion")
             for v in (ho_acc("dense", t), ho_acc("text_only", t))], HO)

add(README, "it answers {}% of {} held-out questions against {}% with the video removed (+{} points, paired 95% interval [+{}, +{}])",
    lambda: [ho_acc("dense"), len(load_json(HO)["answers"]), ho_acc("text_only"), ho_acc("dense") - ho_acc("text_only"),
             *(100 * x for x in load_json(HO)["dense_minus_text_only"]["ci95"])], HO)
add(README, "so the rule withdraws them at once (layer {}) and answers {}% of {} held-out questions against dense's {}%, the same as withdrawing at that layer blindly (VTW, {}%)",
    lambda: [st2("sharpv stage 2")["median_layer"], st2_acc("sharpv stage 2"), len(load_json(ST2)["questions"]), st2_acc("dense"),
             st2_acc("VTW at layer 2 (SharpV's median)")], ST2)
add(README, "(withdrawing at layer 26 of 30 answers {}% against dense's {}%)",
    lambda: [100 * record("vtw-late-smollm2-dinov2", None, "vtw:layer=26", 1.0)["accuracy"],
             100 * record("vtw-late-smollm2-dinov2", None, "dense", None)["accuracy"]], "eval/vtw-late-smollm2-dinov2/results.json")

R_CP = "eval/calibrate-smollm2-dinov2/results.json"
C_CP = "eval/calibrate-smollm2-dinov2/curve.json"
add(PRE, "It finished after {} points",
    lambda: [load_json(R_CP)["calibration"]["points"]], R_CP)
add(PRE, "alone at K = {}, w = {}: {} against dense {} ({}%) at a kept share of {}",
    lambda: [(c := load_json(R_CP)["calibration"])["searched"]["ratio_scale"], c["searched"]["spatial_weight"],
             c["accuracy"], c["dense_accuracy"], 100 * c["accuracy_vs_dense"], c["kept_share"]], R_CP)
add(PRE, "setting fell to {} (M = {}) and {} (M = {})",
    lambda: [v for q in load_json(C_CP)["points"] if q["phase"] == "stage 2"
             for v in (q["accuracy"], q["kv_threshold"])], C_CP)

FC = "fidelity-smollm2-dinov2/part-calibrated"
R_FC, P_FC = f"eval/{FC}/results.json", f"eval/{FC}/predictions.jsonl"
CAL = "sharpv[calibrated]"
add(PRE, "| dense | 100% | 100% | {}% | |", lambda: [acc(FC, None, "dense")], P_FC)
add(PRE, "| SharpV adaptive, defaults (both stages) | {}% | {}% | {}% | {} [{}, {}] |",
    lambda: [100 * record(FC, None, "sharpv", None)["kept_share"], 100 * record(FC, None, "sharpv", None)["equivalent_retention"],
             acc(FC, None, "sharpv"), *paired(FC, None, "sharpv", "dense", None)],
    f"{R_FC}, {P_FC} (own bootstrap)", tol=[0, 0, 0, 0, BOOT_TOL, BOOT_TOL])
add(PRE, "| SharpV calibrated (stage 1 alone, K = {}, w = {}) | {}% | {}% | {}% | {} [{}, {}] |",
    lambda: [load_json(R_CP)["calibration"]["searched"]["ratio_scale"], load_json(R_CP)["calibration"]["searched"]["spatial_weight"],
             100 * record(FC, None, CAL, None)["kept_share"], 100 * record(FC, None, CAL, None)["equivalent_retention"],
             acc(FC, None, CAL), *paired(FC, None, CAL, "dense", None)],
    f"{R_CP}, {R_FC}, {P_FC} (own bootstrap)", tol=[0, 0, 0, 0, 0, 0, BOOT_TOL, BOOT_TOL])
add(PRE, "At its defaults SharpV keeps {}% of the visual tokens, as the paper's ~12% on LLaVA-OneVision, but answers {}%",
    lambda: [100 * record(FC, None, "sharpv", None)["kept_share"], acc(FC, None, "sharpv")], R_FC)
add(PRE, "below the set's majority rate ({}%): stage 2 withdraws every visual token at layer {} (every question), so each LLM layer computes {}%",
    lambda: [100 * load_json(f"eval/{FC}/run.json")["majority_by_type"]["overall"], 2,
             100 * record(FC, None, "sharpv", None)["equivalent_retention"]], R_FC,
    # every question withdrawn at layer 2 of 30: per-layer share = kept share x 2 / 30, and nothing left after
    holds=lambda: (record(FC, None, "sharpv", None)["in_llm_pruned_share"] == 1.0
                   and abs(record(FC, None, "sharpv", None)["equivalent_retention"]
                           - record(FC, None, "sharpv", None)["kept_share"] * 2 / 30) < 1e-6))
add(PRE, "Calibrated, it keeps {}% of dense with {}% of the tokens**, as the calibration's {} questions of seed {} said ({}% there too), {} points below dense",
    lambda: [100 * record(FC, None, CAL, None)["accuracy_vs_dense"], 100 * record(FC, None, CAL, None)["kept_share"],
             load_json(R_CP)["calibration"]["n"],
             int(re.search(r"seed (\d+)", load_json(R_CP)["calibration"]["dataset"])[1]),
             100 * load_json(R_CP)["calibration"]["accuracy_vs_dense"],
             -paired(FC, None, CAL, "dense", None)[0]], f"{R_FC}, {R_CP}")
add(PRE, "count {}% / {}% and appearance time {}% / {}%, while colour ({}% / {}%), colour change ({}% / {}%), motion ({}% / {}%) and position ({}% / {}%) stay",
    lambda: [v for t in ("count", "appearance_time", "colour", "colour_change", "motion", "position")
             for v in (acc(FC, None, "dense", None, t), acc(FC, None, CAL, None, t))], P_FC)
add(PRE, "it lets in {}% for count and {}% for appearance time, against {}% for motion",
    lambda: [100 * record(FC, None, CAL, None)["evidence_recall_by_type"][t] for t in ("count", "appearance_time", "motion")], R_FC)

FR = "fidelity-smollm2-dinov2"  # the merged report of parts A, B, C, calibrated and D
P_FR, R_FR = f"eval/{FR}/predictions.jsonl.gz", f"eval/{FR}/results.json"
S1 = "sharpv:kv=false"
FB = (0.1, 0.2, 0.3)
FB4 = FB + (None,)  # and adaptive
#: the pre-LLM methods of the run (every layer computes their budget), SharpV's stage 1 included
PRE_LLM = (S1, "random", "pooling", "evs", "dycoke", "vidcom2", "divprune", "visionzip", "fastvid", "flashvid", "holitom")


def _rank(method: str, budget: float) -> int:
    """1 + how many pre-LLM methods answer more than ``method`` at ``budget``."""
    mine = acc(FR, None, method, budget)
    return 1 + sum(acc(FR, None, m, budget) > mine for m in PRE_LLM if m != method)


def _mean_layer(method: str, budget: float | None) -> float:
    """The mean layer stage 2 withdrew at, from the per-layer share (30 layers; it fired on every question)."""
    r = record(FR, None, method, budget)
    assert r["in_llm_pruned_share"] == 1.0, f"{method} did not withdraw on every question"
    return 30 * r["equivalent_retention"] / r["kept_share"]


def _per_layer(method: str, budget: float | None) -> float:
    return 100 * record(FR, None, method, budget)["equivalent_retention"]


add(PRE, "answer kept. The report is [eval/fidelity-smollm2-dinov2/results.md](../eval/fidelity-smollm2-dinov2/results.md) ({} configurations",
    lambda: [len(load_json(R_FR))], R_FR)
add(PRE, "answers at the level of no video, at every budget**: {}% at 0.1, 0.2, 0.3 and adaptive, against dense's {}%",
    lambda: [acc(FR, None, "sharpv", 0.1), acc(FR, None, "dense")], P_FR,
    holds=lambda: len({acc(FR, None, "sharpv", b) for b in FB4}) == 1)
_ABOVE = [(m, b) for m in ({r["method"] for r in load_json(R_FR)} - {"dense", "sharpv", "vtw", CAL}) for b in FB]
add(PRE, "above it at every budget, by +{} (EVS at 0.1) to +{} (PyramidDrop at 0.3), except VTW",
    lambda: [paired(FR, None, "evs", "sharpv", 0.1)[0], paired(FR, None, "pyramiddrop", "sharpv", 0.3)[0]], P_FR,
    holds=lambda: min(_ABOVE, key=lambda k: paired(FR, None, k[0], "sharpv", k[1])[0]) == ("evs", 0.1)
    and max(_ABOVE, key=lambda k: paired(FR, None, k[0], "sharpv", k[1])[0]) == ("pyramiddrop", 0.3)
    and all(paired(FR, None, m, "sharpv", b)[1] > 0 for m, b in _ABOVE))
add(PRE, "withdraws at layer {}, {} or {} and is as blind (+{} [+{}, +{}], +{} [+{}, +{}], +{} [{}, +{}] at 0.1, 0.2, 0.3)",
    lambda: [round(30 * b) for b in FB] + [v for b in FB for v in paired(FR, None, "vtw", "sharpv", b)], P_FR,
    tol=[0] * 3 + [0, BOOT_TOL, BOOT_TOL] * 3)
add(PRE, "(`sharpv:kv=false`, what SharpV lets into the language model) answers {}%, {}% and {}%",
    lambda: [acc(FR, None, S1, b) for b in FB], P_FR)
add(PRE, "layer) it ranks {}rd of the {} pre-LLM methods at 0.1, {}th at 0.2 and {}th at 0.3; random tokens pass it from 0.2 on",
    lambda: [_rank(S1, 0.1), len(PRE_LLM), _rank(S1, 0.2), _rank(S1, 0.3)], P_FR,
    holds=lambda: acc(FR, None, "random", 0.1) < acc(FR, None, S1, 0.1)
    and all(acc(FR, None, "random", b) > acc(FR, None, S1, b) for b in (0.2, 0.3)))
add(PRE, "(`kv_reference_layer=1`) fires late (at layer {} to {} of 30 on average) and costs",
    lambda: [min(_mean_layer("sharpv:kv_reference_layer=1", b) for b in FB4),
             max(_mean_layer("sharpv:kv_reference_layer=1", b) for b in FB4)], R_FR)
add(PRE, "nothing measurable against stage 1 alone: {} [{}, +{}], {} [{}, +{}] and {} [{}, +{}] at 0.1, 0.2, 0.3, while each layer computes {}%, {}% and {}% of the visual tokens instead of {}%, {}% and {}%",
    lambda: [v for b in FB for v in paired(FR, None, "sharpv:kv_reference_layer=1", S1, b)]
    + [_per_layer("sharpv:kv_reference_layer=1", b) for b in FB] + [_per_layer(S1, b) for b in FB], P_FR,
    tol=[0, BOOT_TOL, BOOT_TOL] * 3 + [0] * 6,
    holds=lambda: all(paired(FR, None, "sharpv:kv_reference_layer=1", S1, b)[1] < 0 < paired(FR, None, "sharpv:kv_reference_layer=1", S1, b)[2] for b in FB))
add(PRE, "FastV answers {}% at 0.3 (its layers compute {}% of the visual tokens) and PyramidDrop {}% to {}% ({}% to {}%)",
    lambda: [acc(FR, None, "fastv", 0.3), _per_layer("fastv", 0.3), acc(FR, None, "pyramiddrop", 0.1), acc(FR, None, "pyramiddrop", 0.3),
             _per_layer("pyramiddrop", 0.1), _per_layer("pyramiddrop", 0.3)], P_FR)
_LABELS = {"sharpv": "SharpV, defaults (both stages)", S1: "SharpV, stage 1 alone",
           "sharpv:kv_reference_layer=1": "SharpV, `kv_reference_layer=1`", "random": "random", "pooling": "pooling",
           "evs": "EVS", "dycoke": "DyCoke", "vidcom2": "VidCom2", "divprune": "DivPrune", "visionzip": "VisionZip",
           "fastvid": "FastVID", "flashvid": "FlashVID", "holitom": "HoliTom", "vtw": "VTW", "fastv": "FastV",
           "pyramiddrop": "PyramidDrop"}
for m, label in _LABELS.items():
    inside = m not in PRE_LLM
    layer = " / ".join(["{}%"] * 3) if inside else "the budget"
    minus = "-" if m == S1 else " / ".join(["{} [{}, {}]"] * 3)
    add(PRE, f"| {label} | {{w}} | {{}}% / {{}}% / {{}}% | {layer} | {minus} |",
        lambda m=m, inside=inside: [acc(FR, None, m, b) for b in FB] + ([_per_layer(m, b) for b in FB] if inside else [])
        + ([] if m == S1 else [v for b in FB for v in paired(FR, None, m, S1, b)]),
        f"{P_FR}, {R_FR} (own bootstrap)",
        tol=[0] * (6 if inside else 3) + ([] if m == S1 else [0, BOOT_TOL, BOOT_TOL] * 3),
        words=lambda m=m: [{"before"} if m in PRE_LLM else {"both"} if m.startswith("sharpv") else {"inside"}])
add(PRE, "stage 1 alone is {}rd of the 11 pre-LLM methods at 0.1 (behind DivPrune and FlashVID, both within or at the edge of noise), {}th at 0.2 and {}th at 0.3",
    lambda: [_rank(S1, b) for b in FB], P_FR,
    holds=lambda: {m for m in PRE_LLM if acc(FR, None, m, 0.1) > acc(FR, None, S1, 0.1)} == {"divprune", "flashvid"}
    and all(paired(FR, None, m, S1, 0.1)[1] <= 0.05 for m in ("divprune", "flashvid")))
_TIES = {"holitom": FB[1:], "visionzip": FB[1:], "pooling": FB[1:], "evs": (0.2,), "fastvid": (0.2,)}
add(PRE, "(the intervals of HoliTom, VisionZip and pooling include 0 at 0.2 and 0.3, EVS's and FastVID's at 0.2), and HoliTom and VidCom2 are below it at every budget",
    lambda: [], P_FR,
    holds=lambda: {(m, b) for m in PRE_LLM if m != S1 for b in FB[1:]
                   if paired(FR, None, m, S1, b)[1] < 0 < paired(FR, None, m, S1, b)[2]} == {(m, b) for m, bs in _TIES.items() for b in bs}
    and {m for m in PRE_LLM if all(acc(FR, None, m, b) < acc(FR, None, S1, b) for b in FB)} == {"holitom", "vidcom2"})
add(PRE, "FastV at 0.1 computes {}% of the visual tokens per layer, between the budgets 0.1 and 0.2, and its {}% lies between them too: above every pre-LLM method at 0.1 (DivPrune {}%) and below the best at 0.2 (FlashVID {}%, computing {}%: FastV is {} [{}, {}] against it). At 0.2 FastV computes {}% and answers {}%, as random tokens at 0.3 ({}%) answer {}% ({} [{}, +{}])",
    lambda: [_per_layer("fastv", 0.1), acc(FR, None, "fastv", 0.1), acc(FR, None, "divprune", 0.1), acc(FR, None, "flashvid", 0.2),
             _per_layer("flashvid", 0.2), *paired(FR, None, "fastv", "flashvid", 0.1, reference_budget=0.2), _per_layer("fastv", 0.2),
             acc(FR, None, "fastv", 0.2), _per_layer("random", 0.3), acc(FR, None, "random", 0.3),
             *paired(FR, None, "fastv", "random", 0.2, reference_budget=0.3)], f"{P_FR}, {R_FR} (own bootstrap)",
    tol=[0] * 5 + [0, BOOT_TOL, BOOT_TOL] + [0] * 4 + [0, BOOT_TOL, BOOT_TOL],
    holds=lambda: max(PRE_LLM, key=lambda m: acc(FR, None, m, 0.1)) == "divprune"
    and max(PRE_LLM, key=lambda m: acc(FR, None, m, 0.2)) == "flashvid")
add(PRE, "PyramidDrop stays at dense's level ({}%) at 0.1 to 0.3 because its layers still compute {}% to {}% of the visual tokens",
    lambda: [acc(FR, None, "dense"), _per_layer("pyramiddrop", 0.1), _per_layer("pyramiddrop", 0.3)], R_FR)
_TYPE_COLS = (("dense", None), (S1, 0.1), ("random", 0.1), (S1, 0.3), ("random", 0.3), ("fastv", 0.3))
for t in TYPES:
    add(PRE, f"| {t.replace('_', ' ')} | " + " | ".join(["{}%"] * 6) + " |",
        lambda t=t: [acc(FR, None, m, b, t) for m, b in _TYPE_COLS], P_FR)
add(PRE, "at 0.3 only counting still separates them ({}% against {}%)",
    lambda: [acc(FR, None, S1, 0.3, "count"), acc(FR, None, "random", 0.3, "count")], P_FR,
    holds=lambda: all(abs(acc(FR, None, S1, 0.3, t) - acc(FR, None, "random", 0.3, t)) < 10 for t in TYPES if t != "count"))
add(PRE, "({}% against {}% for count questions at 0.3) but from far fewer of the frames that show them ({}% of them against {}%, all types)",
    lambda: [100 * record(FR, None, S1, 0.3)["evidence_recall_by_type"]["count"], 100 * record(FR, None, "random", 0.3)["evidence_recall_by_type"]["count"],
             100 * record(FR, None, S1, 0.3)["evidence_frame_recall"], 100 * record(FR, None, "random", 0.3)["evidence_frame_recall"]], R_FR)
add(PRE, "Appearance time (which object appeared first or last) is dense's hardest type ({}%), and no method answers more than {}% of it",
    lambda: [acc(FR, None, "dense", None, "appearance_time"),
             max(acc(FR, None, r["method"], r["budget"], "appearance_time") for r in load_json(R_FR))], P_FR,
    holds=lambda: min(TYPES, key=lambda t: acc(FR, None, "dense", None, t)) == "appearance_time")
RS = "random:counts=sharpv"  # part D: random tokens at stage 1's per-frame counts (the paper's ablation)
add(PRE, "| stage 1 alone | {}% | {}% | {}% | {}% |", lambda: [acc(FR, None, S1, b) for b in FB4], P_FR)
add(PRE, "| random tokens at stage 1's per-frame counts | {}% | {}% | {}% | {}% |", lambda: [acc(FR, None, RS, b) for b in FB4], P_FR,
    holds=lambda: all(record(FR, None, RS, b)["visual_tokens_kept"] == record(FR, None, S1, b)["visual_tokens_kept"] for b in FB4))
add(PRE, "| stage 1 minus them | {} [{}, {}] | {} [{}, {}] | {} [{}, {}] | {} [{}, {}] |",
    lambda: [v for b in FB4 for v in paired(FR, None, S1, RS, b)], f"{P_FR} (own bootstrap)", tol=[0, BOOT_TOL, BOOT_TOL] * 4)
add(PRE, "| random tokens over the whole video | {}% | {}% | {}% | - |", lambda: [acc(FR, None, "random", b) for b in FB], P_FR)
add(PRE, "| at stage 1's counts minus over the whole video | {} [{}, {}] | {} [{}, {}] | {} [{}, {}] | - |",
    lambda: [v for b in FB for v in paired(FR, None, RS, "random", b)], f"{P_FR} (own bootstrap)", tol=[0, BOOT_TOL, BOOT_TOL] * 3)
add(PRE, "Stage 1's choice inside the frames is worth what the paper says at 0.1, 0.2 and adaptive, and is within noise of random at 0.3. Its split across frames costs more than that from 0.2 on: the same random tokens at its per-frame counts are {} to {} points below",
    lambda: [-max(paired(FR, None, RS, "random", b)[0] for b in FB), -min(paired(FR, None, RS, "random", b)[0] for b in FB)], P_FR,
    holds=lambda: all(paired(FR, None, S1, RS, b)[1] > 0 for b in (0.1, 0.2, None)) and paired(FR, None, S1, RS, 0.3)[1] < 0
    and all(-paired(FR, None, RS, "random", b)[0] > paired(FR, None, S1, RS, b)[0] for b in (0.2, 0.3)))
add(PRE, "(motion at 0.1: {}% against {}%) and loses where it is about what stays (count at 0.3: {}% against {}%)",
    lambda: [acc(FR, None, S1, 0.1, "motion"), acc(FR, None, RS, 0.1, "motion"), acc(FR, None, S1, 0.3, "count"), acc(FR, None, RS, 0.3, "count")], P_FR)
add(PRE, "That is not its split across frames: random tokens drawn at stage 1's own per-frame counts count {}% at 0.3",
    lambda: [acc(FR, None, RS, 0.3, "count")], P_FR)
add(PRE, "its choice of tokens beats random tokens drawn at its own per-frame counts by +{} [+{}, +{}] at 0.1 and +{} [+{}, +{}] adaptive, but its split of the budget across frames is {} to {} points worse",
    lambda: [*paired(FR, None, S1, RS, 0.1), *paired(FR, None, S1, RS, None),
             -max(paired(FR, None, RS, "random", b)[0] for b in FB), -min(paired(FR, None, RS, "random", b)[0] for b in FB)],
    f"{P_FR} (own bootstrap)", tol=[0, BOOT_TOL, BOOT_TOL] * 2 + [0, 0])
add(PRE, "the fixed budget 0.3 ({}% of the tokens) answer {}%, +{} [{}, +{}] against it, and FastV at 0.3 {}% (+{} [+{}, +{}]) computing {}% of the visual tokens per layer; stage 1 alone at 0.3 answers {}% ({} [{}, {}])",
    lambda: [100 * record(FR, None, "random", 0.3)["kept_share"], acc(FR, None, "random", 0.3), *paired(FR, None, "random", CAL, 0.3, reference_budget=None),
             acc(FR, None, "fastv", 0.3), *paired(FR, None, "fastv", CAL, 0.3, reference_budget=None), _per_layer("fastv", 0.3),
             acc(FR, None, S1, 0.3), *paired(FR, None, S1, CAL, 0.3, reference_budget=None)], f"{P_FR} (own bootstrap)",
    tol=[0, 0, 0, BOOT_TOL, BOOT_TOL, 0, 0, BOOT_TOL, BOOT_TOL, 0, 0, 0, BOOT_TOL, BOOT_TOL])

add(PRE, "On 1,200 held-out questions SharpV at its defaults answers {}% at every budget, the level of no video, and its stage 1 alone falls below random tokens from budget 0.2 on",
    lambda: [acc(FR, None, "sharpv", 0.1)], P_FR,
    holds=lambda: len({acc(FR, None, "sharpv", b) for b in FB4}) == 1 and len(_pick(FR, None, "dense", None)[0]) == 1200
    and acc(FR, None, "random", 0.1) < acc(FR, None, S1, 0.1) and all(acc(FR, None, "random", b) > acc(FR, None, S1, b) for b in FB[1:]))
add(README, "defaults SharpV answers {}% at every budget and adaptive ({}% of the tokens kept) against dense's {}%, the level of no video",
    lambda: [acc(FR, None, "sharpv", None), 100 * record(FR, None, "sharpv", None)["kept_share"], acc(FR, None, "dense")], P_FR,
    holds=lambda: len({acc(FR, None, "sharpv", b) for b in FB4}) == 1)
add(README, "Stage 1 alone answers {}% / {}% / {}% at 0.1 / 0.2 / 0.3, {}rd of the {} pre-LLM methods at 0.1, but random tokens beat it at 0.2 and 0.3 (by {} [{}, {}] and {} [{}, {}] points), as it counts badly ({}% against random's {}% at 0.3)",
    lambda: [*(acc(FR, None, S1, b) for b in FB), _rank(S1, 0.1), len(PRE_LLM),
             *paired(FR, None, "random", S1, 0.2), *paired(FR, None, "random", S1, 0.3),
             acc(FR, None, S1, 0.3, "count"), acc(FR, None, "random", 0.3, "count")], f"{P_FR} (own bootstrap)",
    tol=[0] * 5 + [0, BOOT_TOL, BOOT_TOL] * 2 + [0, 0])
add(README, "the paper's ablation holds (its token choice beats random tokens at its own per-frame counts by {} [{}, {}] points at 0.1), but its split of the budget across frames is what random tokens spread over the video beat",
    lambda: [*paired(FR, None, S1, RS, 0.1)], f"{P_FR} (own bootstrap)", tol=[0, BOOT_TOL, BOOT_TOL],
    holds=lambda: all(paired(FR, None, RS, "random", b)[2] < 0 for b in FB))
add(README, "stage 2 fires late (layer {} of 30 on average) and costs nothing measurable ({} [{}, +{}] at 0.3). FastV and PyramidDrop stay closest to dense ({}% and {}% at 0.3) by computing more visual tokens per layer ({}% and {}%)",
    lambda: [_mean_layer("sharpv:kv_reference_layer=1", 0.3), *paired(FR, None, "sharpv:kv_reference_layer=1", S1, 0.3),
             acc(FR, None, "fastv", 0.3), acc(FR, None, "pyramiddrop", 0.3), _per_layer("fastv", 0.3), _per_layer("pyramiddrop", 0.3)],
    f"{P_FR} (own bootstrap)", tol=[0, 0, BOOT_TOL, BOOT_TOL, 0, 0, 0, 0],
    holds=lambda: max((m for m in {r["method"] for r in load_json(R_FR)} - {"dense", CAL}), key=lambda m: acc(FR, None, m, 0.3)) == "pyramiddrop"
    and sorted((acc(FR, None, m, 0.3), m) for m in {r["method"] for r in load_json(R_FR)} - {"dense", CAL})[-2][1] == "fastv")

# --- consistency of the artefacts themselves ---------------------------------------------------------


def consistency() -> list[str]:
    """Each eval results.json record against its own answers (accuracy, n, correct); [] when all agree."""
    problems = []
    for run in ("synthetic-qa", "target-check", "calibrated-and-0.12", "mp4-heldout-300", "counting-seed7"):
        for r in load_json(f"eval/{run}/results.json"):
            idx, correct = _pick(run, r.get("model"), r["method"], r["budget"])
            if len(idx) != r["n"] or int(correct.sum()) != r["correct"]:
                problems.append(f"eval/{run}: {r.get('model')} {r['method']}@{r['budget']}: results.json says "
                                f"{r['correct']}/{r['n']}, the answers {int(correct.sum())}/{len(idx)}")
            for t, value in (r.get("accuracy_by_type") or {}).items():
                if t in TYPES and abs(acc(run, r.get("model"), r["method"], r["budget"], t) / 100 - value) > 1e-9:
                    problems.append(f"eval/{run}: {r['method']}@{r['budget']} {t}: results.json {value}")
    return problems


def run_all(claims: Sequence[Claim] = CLAIMS) -> list[tuple[Claim, str]]:
    """Every failing claim with why; [] when every figure matches its artefact."""
    return [(c, why) for c in claims if (why := check(c)) is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the claims and their artefacts")
    args = parser.parse_args(argv)
    if args.list:
        for c in CLAIMS:
            print(c.describe())
        return 0
    failures = dict((id(c), why) for c, why in run_all())
    for c in CLAIMS:
        why = failures.get(id(c))
        print(("OK   " if why is None else "FAIL ") + c.describe() + ("" if why is None else f"\n     {why}"))
    problems = consistency()
    for p in problems:
        print("FAIL " + p)
    numbers = sum(len(_fields(c.text)) for c in CLAIMS)
    print(f"{len(CLAIMS) - len(failures)} of {len(CLAIMS)} claims ({numbers} figures) match their artefacts; "
          f"{len(problems)} artefact inconsistencies")
    return 1 if failures or problems else 0


if __name__ == "__main__":
    sys.exit(main())
