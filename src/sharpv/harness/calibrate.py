"""`sharpv calibrate`: search SharpV's hyperparameters for a target on a calibration set.

The paper leaves K (``ratio_scale``), w (``spatial_weight``) and M (``kv_threshold``) to hand
tuning. This module searches them in SharpV's adaptive mode (the kept share follows each video)
against a target:

- ``accuracy=A``: the fewest visual tokens entering the LLM (the mean stage-1 kept share) whose
  accuracy is at least A x dense accuracy on the calibration set;
- ``keep=S``: the best accuracy whose mean kept share is at most S.

How (:class:`Search`; the evaluator is any function from settings to an eval record, so the logic
is tested on known curves without a model):

1. **Stage 1** (stage 2 off), for every w of the grid: K is searched on a log scale. The kept
   share depends on K only (the per-frame ratio ``min(1, K ||T_t|| / (2 sqrt f))`` does not read
   w, which only ranks tokens inside a frame), and it never decreases as K grows. From a start
   (1.0, then the previous w's answer) K is doubled or halved until the target flips (or the
   share saturates: everything kept, or every frame at its floor), then the bracket is bisected
   ``refine`` times (geometric midpoints; it stops early once both ends keep within
   ``kept_tolerance`` of each other). Accuracy need not be monotone in K, so the choice is made
   over every point tried, not just the bracket: for ``accuracy=A`` the feasible point with the
   smallest kept share (ties: higher accuracy, then the point tried first); for ``keep=S`` the
   feasible point with the best accuracy (ties: smaller kept share, then the point tried first).
2. **Stage 2** at the chosen K and w: every M of the grid (then ``refine_kv`` bisections between
   the largest M that still meets the bar and the next one that does not). The bar, for both
   targets: no calibration answer lost against the stage-1 choice (stage 2 may only save, never
   spend the accuracy the stage-1 search bought). Chosen: the passing M with the lowest equivalent
   retention (the mean share of visual tokens each LLM layer computes); ties: higher accuracy,
   then the M nearest the paper's 0.2. If no M passes, stage 2 is switched off (``kv: false``).

The stage-1 kept share is the budget the target counts (what enters the LLM); stage 2 is then
chosen for free savings inside the LLM, which the curve and the report show as equivalent
retention and KV share. When no point reaches the target, the result says so and the best
effort is kept: the most accurate point (``accuracy=A``) or the one keeping the fewest tokens
(``keep=S``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sharpv.errors import SharpVError
from sharpv.harness.report import write_json_atomic

ACCURACY, KEEP = "accuracy", "keep"
STAGE1, STAGE2 = "stage 1", "stage 2"
#: defaults of the command (docs/cli.md)
CALIBRATION_SEED = 7
CALIBRATION_SIZE = 600
DEFAULT_SPATIAL_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
DEFAULT_KV_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_BUDGETS = (0.1, 0.2, 0.3)
#: SharpV settings the search sets itself (``--set`` may fix the others)
SEARCHED = ("keep_ratio", "ratio_scale", "spatial_weight", "kv", "kv_threshold")
PAPER_KV_THRESHOLD = 0.2
#: files `sharpv calibrate --out DIR` writes into DIR
CALIBRATE_FILES = ("config.json", "curve.json", "accuracy_vs_kept_share.png", "results.json", "results.md")
#: where `sharpv calibrate --out DIR` keeps the points measured so far while it runs
STATE_FILE = ".calibrate_state.json"


@dataclass(frozen=True)
class Target:
    """``accuracy=A`` (keep at least A x dense accuracy with the fewest tokens) or ``keep=S`` (the best
    accuracy keeping at most a mean share S of the visual tokens)."""

    kind: str
    value: float

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"

    def describe(self) -> str:
        if self.kind == ACCURACY:
            return f"at least {self.value:.1%} of dense accuracy with the fewest visual tokens"
        return f"the best accuracy with at most {self.value:.1%} of the visual tokens kept on average"


def parse_target(text: str, flag: str = "--target") -> Target:
    """``accuracy=A`` or ``keep=S``, both in (0, 1]; a one-line :class:`SharpVError` otherwise."""
    usage = (f"{flag} takes accuracy=A (the share of dense accuracy to keep, e.g. accuracy=0.99) or keep=S "
             f"(the largest mean share of visual tokens kept, e.g. keep=0.12), got {text!r}")
    kind, sep, raw = str(text).strip().partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in (ACCURACY, KEEP):
        raise SharpVError(usage)
    try:
        value = float(raw)
    except ValueError:
        raise SharpVError(usage) from None
    if not 0.0 < value <= 1.0:
        raise SharpVError(f"{flag} {kind}= must be in (0, 1], got {raw.strip()}")
    return Target(kind, value)


def parse_floats(text: str, flag: str, low: float, high: float) -> tuple[float, ...]:
    """Comma-separated numbers in [low, high], sorted, without duplicates; never empty."""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise SharpVError(f"{flag} takes comma-separated numbers, got {item!r}") from None
        if not low <= value <= high:
            raise SharpVError(f"{flag} values must be in [{low:g}, {high:g}], got {item}")
        values.append(value)
    if not values:
        raise SharpVError(f"{flag} names no value; pass comma-separated numbers")
    return tuple(sorted(set(values)))


def parse_kv_thresholds(text: str, flag: str = "--kv-thresholds") -> tuple[float, ...] | None:
    """The M grid, or None for ``off`` (the result runs stage 1 only)."""
    if str(text).strip().lower() == "off":
        return None
    return parse_floats(text, flag, -1.0, 2.0)


def _sig(value: float) -> float:
    """Four significant digits: the values the search tries are the values the config keeps."""
    return float(f"{value:.4g}")


@dataclass
class Trial:
    """One point the search tried: its settings and its eval record on the calibration set."""

    index: int
    phase: str
    settings: dict
    record: dict
    feasible: bool = False

    @property
    def correct(self) -> int:
        return int(self.record["correct"])

    @property
    def accuracy(self) -> float:
        return float(self.record["accuracy"])

    @property
    def kept_share(self) -> float:
        return float(self.record["kept_share"])

    @property
    def retention(self) -> float:
        return float(self.record.get("equivalent_retention", self.kept_share))

    def row(self) -> dict:
        """Flat fields for curve.json and the tables."""
        r = self.record
        return {
            "index": self.index, "phase": self.phase, **self.settings, "feasible": self.feasible,
            "accuracy": r["accuracy"], "accuracy_vs_dense": r.get("accuracy_vs_dense"), "correct": r["correct"],
            "n": r["n"], "ci95": r.get("ci95"), "kept_share": r["kept_share"],
            "equivalent_retention": r.get("equivalent_retention"), "kv_share": r.get("kv_share"),
            "in_llm_pruned_share": r.get("in_llm_pruned_share"), "accuracy_by_type": r.get("accuracy_by_type"),
            "prefill_seconds": r.get("prefill_seconds"),
        }


@dataclass
class CalibrationResult:
    target: Target
    dense: dict
    trials: list[Trial]
    stage1: Trial  # the stage-1 choice
    chosen: Trial  # the final choice (stage 2's, or stage1 with stage 2 off)
    met: bool
    message: str
    settings: dict = field(default_factory=dict)  # the searched settings of the choice

    @property
    def goal_accuracy(self) -> float | None:
        return self.target.value * self.dense["accuracy"] if self.target.kind == ACCURACY else None


class Search:
    """The search of the module docstring. ``evaluate(settings) -> record`` answers the calibration
    set with SharpV at ``settings`` (``ratio_scale``, ``spatial_weight``, ``kv`` and
    ``kv_threshold``, merged by the caller into its fixed settings, adaptive mode) and returns an
    eval record (at least ``accuracy``, ``correct``, ``n``, ``kept_share``; ``equivalent_retention``
    where stage 2 may act). ``dense`` is dense's record on the same set. ``on_trial(trial)`` is
    called after every new point."""

    def __init__(self, evaluate: Callable[[dict], dict], target: Target, dense: dict, *,
                 spatial_weights: tuple[float, ...] = DEFAULT_SPATIAL_WEIGHTS,
                 kv_thresholds: tuple[float, ...] | None = DEFAULT_KV_THRESHOLDS,
                 k_start: float = 1.0, k_min: float = 1 / 64, k_max: float = 256.0, refine: int = 5,
                 refine_kv: int = 3, kept_tolerance: float = 0.002,
                 on_trial: Callable[[Trial], None] | None = None, on_start: Callable[[str, dict], None] | None = None):
        if not spatial_weights:
            raise SharpVError("the spatial weight grid is empty")
        self.evaluate, self.target, self.dense = evaluate, target, dense
        self.spatial_weights, self.kv_thresholds = tuple(spatial_weights), kv_thresholds
        self.k_start, self.k_min, self.k_max = k_start, k_min, k_max
        self.refine, self.refine_kv, self.kept_tolerance = refine, refine_kv, kept_tolerance
        self.on_trial, self.on_start = on_trial, on_start
        self.trials: list[Trial] = []
        self._memo: dict[tuple, Trial] = {}
        # integer comparison: a point meets accuracy=A when correct >= A x dense correct
        self._goal_correct = target.value * int(dense["correct"]) - 1e-9 if target.kind == ACCURACY else None

    # --- points ------------------------------------------------------------------------------
    def _trial(self, phase: str, settings: dict) -> Trial:
        key = (phase, tuple(sorted(settings.items())))
        if key not in self._memo:
            if self.on_start:
                self.on_start(phase, settings)
            trial = Trial(len(self.trials), phase, dict(settings), self.evaluate(dict(settings)))
            self.trials.append(trial)
            self._memo[key] = trial
            if self.on_trial:
                self.on_trial(trial)
        return self._memo[key]

    def _stage1(self, k: float, w: float) -> Trial:
        return self._trial(STAGE1, {"ratio_scale": _sig(k), "spatial_weight": w, "kv": False})

    def _ok1(self, t: Trial) -> bool:
        if self.target.kind == ACCURACY:
            return t.correct >= self._goal_correct
        return t.kept_share <= self.target.value + 1e-12

    # --- stage 1 -----------------------------------------------------------------------------
    def _search_k(self, w: float, k0: float) -> None:
        """Bracket the K where the target flips for this w, then bisect the bracket."""
        low_is_good = self.target.kind == KEEP  # keep=S: small K keeps few tokens
        t = self._stage1(k0, w)
        good, bad = (t, None) if self._ok1(t) else (None, t)
        up = self._ok1(t) == low_is_good  # toward the other side of the boundary
        prev, k = t, k0
        while True:
            k = k * 2 if up else k / 2
            if not self.k_min <= k <= self.k_max:
                break
            if up and prev.kept_share >= 1.0 - 1e-12:
                break  # everything is kept already
            t = self._stage1(k, w)
            if self._ok1(t):
                good = t
            else:
                bad = t
            if self._ok1(t) != self._ok1(prev):
                break  # bracketed
            if not up and abs(t.kept_share - prev.kept_share) < 1e-12:
                break  # every frame at its floor: a smaller K changes nothing
            prev = t
        if good is None or bad is None:
            return
        for _ in range(self.refine):
            lo, hi = sorted((good.settings["ratio_scale"], bad.settings["ratio_scale"]))
            if hi / lo < 1.01 or abs(good.kept_share - bad.kept_share) <= self.kept_tolerance:
                break
            mid = _sig(math.sqrt(lo * hi))
            if mid in (lo, hi):
                break
            t = self._stage1(mid, w)
            if self._ok1(t):
                good = t
            else:
                bad = t

    def _choose(self, trials: list[Trial], ok: Callable[[Trial], bool]) -> tuple[Trial, bool]:
        """(the choice among ``trials``, whether it meets the target); see the module docstring."""
        feasible = [t for t in trials if ok(t)]
        if self.target.kind == ACCURACY:
            if feasible:
                return min(feasible, key=lambda t: (t.kept_share, -t.correct, t.index)), True
            return min(trials, key=lambda t: (-t.correct, t.kept_share, t.index)), False
        if feasible:
            return min(feasible, key=lambda t: (-t.correct, t.kept_share, t.index)), True
        return min(trials, key=lambda t: (t.kept_share, -t.correct, t.index)), False

    # --- stage 2 -----------------------------------------------------------------------------
    @staticmethod
    def _ok2(base: Trial) -> Callable[[Trial], bool]:
        """Stage 2's bar: no calibration answer lost against the stage-1 choice ``base``."""
        return lambda t: t.correct >= base.correct

    def _search_kv(self, base: Trial, met: bool) -> Trial | None:
        """The stage-2 choice at ``base``'s K and w, or None when no M meets the bar."""
        if self.kv_thresholds is None:
            return None
        ok = self._ok2(base)
        stage1 = {k: base.settings[k] for k in ("ratio_scale", "spatial_weight")}

        def at(m: float) -> Trial:
            return self._trial(STAGE2, {**stage1, "kv": True, "kv_threshold": round(m, 4)})

        grid = [at(m) for m in sorted(self.kv_thresholds)]
        passing = [i for i, t in enumerate(grid) if ok(t)]
        if passing and passing[-1] + 1 < len(grid):
            good, bad = grid[passing[-1]], grid[passing[-1] + 1]
            for _ in range(self.refine_kv):
                if abs(good.retention - bad.retention) < 1e-9:
                    break
                mid = round((good.settings["kv_threshold"] + bad.settings["kv_threshold"]) / 2, 4)
                if mid in (good.settings["kv_threshold"], bad.settings["kv_threshold"]):
                    break
                t = at(mid)
                if ok(t):
                    good = t
                else:
                    bad = t
        tried = [t for t in self.trials if t.phase == STAGE2 and all(t.settings[k] == v for k, v in stage1.items())]
        feasible = [t for t in tried if ok(t)]
        if not feasible:
            return None
        return min(feasible, key=lambda t: (t.retention, -t.correct,
                                            abs(t.settings["kv_threshold"] - PAPER_KV_THRESHOLD), t.index))

    # --- the whole search --------------------------------------------------------------------
    def run(self) -> CalibrationResult:
        k0 = self.k_start
        for w in self.spatial_weights:
            self._search_k(w, k0)
            mine = [t for t in self.trials if t.phase == STAGE1 and t.settings["spatial_weight"] == w]
            best, ok = self._choose(mine, self._ok1)
            if ok:
                k0 = best.settings["ratio_scale"]  # the next w starts near this w's answer
        stage1_trials = [t for t in self.trials if t.phase == STAGE1]
        stage1, met = self._choose(stage1_trials, self._ok1)
        for t in stage1_trials:
            t.feasible = self._ok1(t)
        stage2 = self._search_kv(stage1, met)
        ok2 = self._ok2(stage1)
        for t in self.trials:
            if t.phase == STAGE2:
                t.feasible = ok2(t)
        chosen = stage2 or stage1
        settings = dict(chosen.settings)
        return CalibrationResult(self.target, self.dense, self.trials, stage1, chosen, met,
                                 self._message(stage1, chosen, met), settings)

    def _message(self, stage1: Trial, chosen: Trial, met: bool) -> str:
        dense = self.dense["accuracy"]
        where = (f"{chosen.accuracy:.3f} accuracy ({chosen.accuracy / dense:.1%} of dense {dense:.3f})" if dense
                 else f"{chosen.accuracy:.3f} accuracy") + f" at a mean kept share of {chosen.kept_share:.3f}"
        stage2 = (f"; stage 2 at M={chosen.settings['kv_threshold']:g} (equivalent retention {chosen.retention:.3f})"
                  if chosen.settings.get("kv") else "; stage 2 off" if self.kv_thresholds is not None
                  else "; stage 2 off (--kv-thresholds off)")
        if met:
            return f"target {self.target} met on the calibration set: {where}{stage2}"
        if self.target.kind == ACCURACY:
            return (f"target {self.target} NOT reached on the calibration set: no setting tried keeps "
                    f"{self.target.value:.1%} of dense accuracy; best effort (the most accurate point): {where}{stage2}")
        least = min(t.kept_share for t in self.trials if t.phase == STAGE1)
        return (f"target {self.target} NOT reached on the calibration set: the fewest tokens any setting keeps is a "
                f"share of {least:.3f} (every frame keeps at least min_tokens_per_frame tokens; --set "
                f"min_tokens_per_frame=0 lowers the floor); best effort (the fewest tokens): {where}{stage2}")


class SearchState:
    """What an interrupted calibration had measured, so rerunning the same command continues it.

    The search is deterministic given its evaluations (:class:`Search` reads only each point's
    accuracy and kept share, in the order it asks for them), so replaying it with the points
    already measured answered from this file reaches the same next point, and the same result, as
    an uninterrupted run. After dense and after every new point the file at ``path`` (JSON,
    written to a temporary file and moved into place) holds dense's record, every point so far
    (settings and record) and the seconds spent, with a ``fingerprint`` of the command (model,
    set, target, grids, fixed settings, tokens); a state of another fingerprint is refused."""

    VERSION = 1

    def __init__(self, path: Path, fingerprint: dict):
        self.path, self.fingerprint = Path(path), json.loads(json.dumps(fingerprint))
        self.dense: dict | None = None
        self.points: list[tuple[dict, dict]] = []
        self.seconds = 0.0

    def load(self) -> bool:
        """Read the file if there is one; True when an earlier run's points were loaded."""
        if not self.path.is_file():
            return False
        try:
            raw = json.loads(self.path.read_text())
            dense, points, seconds = raw["dense"], raw["points"], float(raw["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            raise SharpVError(f"{self.path} is not a readable calibration state; delete it (or pass --overwrite) "
                              "to start over") from None
        if raw.get("version") != self.VERSION or raw.get("fingerprint") != self.fingerprint:
            raise SharpVError(f"{self.path} holds an unfinished calibration of other settings (model, set, target, grids, "
                              "fixed settings or tokens); rerun with those, or pass --overwrite to start over")
        self.dense, self.points, self.seconds = dense, [(s, r) for s, r in points], seconds
        return True

    @staticmethod
    def key(settings: dict) -> str:
        return json.dumps(settings, sort_keys=True)

    def lookup(self, settings: dict) -> dict | None:
        """The record of a point measured before, or None."""
        key = self.key(settings)
        return next((record for s, record in self.points if self.key(s) == key), None)

    def save(self, *, dense: dict | None = None, point: tuple[dict, dict] | None = None, seconds: float = 0.0) -> None:
        """Record dense or one more point, with ``seconds`` more spent, and write the file."""
        if dense is not None:
            self.dense = dense
        if point is not None:
            self.points.append(point)
        self.seconds += seconds
        payload = {"version": self.VERSION, "fingerprint": self.fingerprint, "dense": self.dense,
                   "points": [list(p) for p in self.points], "seconds": round(self.seconds, 1)}
        write_json_atomic(self.path, payload)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def heldout_check(target: Target, records: list[dict], calibrated_label: str) -> dict:
    """The held-out verdict: the calibrated run against dense and the fixed budgets.

    ``accuracy=A``: met when the calibrated run keeps at least A x dense accuracy and keeps no more
    tokens than the fixed budget with the smallest kept share that also reaches A x dense (when
    one does). ``keep=S``: met when its kept share is at most S; it is compared with the most
    accurate fixed budget that keeps at most S."""
    dense = next(r for r in records if r["method_name"] == "dense")
    cal = next(r for r in records if r["method"] == calibrated_label)
    fixed = [r for r in records if r["method"] != calibrated_label and r["method_name"] != "dense"
             and r.get("budget") is not None]
    ratio = cal["accuracy"] / dense["accuracy"] if dense["accuracy"] else None
    out: dict[str, Any] = {"target": str(target), "dense_accuracy": dense["accuracy"], "accuracy": cal["accuracy"],
                           "accuracy_vs_dense": ratio, "kept_share": cal["kept_share"],
                           "equivalent_retention": cal.get("equivalent_retention"), "kv_share": cal.get("kv_share")}
    if target.kind == ACCURACY:
        reaching = [r for r in fixed if dense["accuracy"] and r["accuracy"] / dense["accuracy"] >= target.value - 1e-12]
        best = min(reaching, key=lambda r: r["kept_share"]) if reaching else None
        out["best_fixed_budget"] = None if best is None else {
            "budget": best["budget"], "kept_share": best["kept_share"], "accuracy": best["accuracy"],
            "accuracy_vs_dense": best["accuracy"] / dense["accuracy"]}
        reached = ratio is not None and ratio >= target.value - 1e-12
        out["met"] = bool(reached and (best is None or cal["kept_share"] <= best["kept_share"] + 1e-12))
        text = (f"held out: the calibrated SharpV keeps {ratio:.1%} of dense accuracy ({cal['accuracy']:.3f} against "
                f"{dense['accuracy']:.3f}) at a kept share of {cal['kept_share']:.3f}; ")
        text += ("no fixed budget tried reaches the target" if best is None else
                 f"the cheapest fixed budget reaching {target.value:.0%} of dense is {best['budget']:g} "
                 f"(kept share {best['kept_share']:.3f}, {best['accuracy'] / dense['accuracy']:.1%} of dense)")
    else:
        within = [r for r in fixed if r["kept_share"] <= target.value + 1e-12]
        best = max(within, key=lambda r: (r["accuracy"], -r["kept_share"])) if within else None
        out["best_fixed_budget"] = None if best is None else {
            "budget": best["budget"], "kept_share": best["kept_share"], "accuracy": best["accuracy"],
            "accuracy_vs_dense": best["accuracy"] / dense["accuracy"] if dense["accuracy"] else None}
        out["met"] = bool(cal["kept_share"] <= target.value + 1e-12)
        text = (f"held out: the calibrated SharpV scores {cal['accuracy']:.3f} ({ratio:.1%} of dense) at a kept share "
                f"of {cal['kept_share']:.3f} (target at most {target.value:.3f}); ")
        text += ("no fixed budget tried keeps that few" if best is None else
                 f"the most accurate fixed budget within it is {best['budget']:g} ({best['accuracy']:.3f} at "
                 f"{best['kept_share']:.3f})")
    out["summary"] = text + (": target met." if out["met"] else ": target NOT met.")
    return out


def _check_dataset(path: Path | None, flag: str) -> None:
    if path is None:
        return
    if not path.exists():
        raise SharpVError(f"{flag} {path} does not exist; pass a JSONL file (see `sharpv eval --help`)")
    if path.is_dir():
        raise SharpVError(f"{flag} {path} is a folder; pass its JSONL file (e.g. {path / 'data.jsonl'})")
    from sharpv.harness.evaluate import load_jsonl

    load_jsonl(path)  # every line checked (and every video found) before the model loads


def check_options(*, target: str, model: Path | None, data: Path | None, seed: int | None, n: int | None,
                  holdout_data: Path | None, holdout_seed: int | None, holdout_n: int | None, no_holdout: bool,
                  spatial_weights: str, kv_thresholds: str, refine: int, settings: list[str], budgets: str,
                  frames: int | None, dtype: str, device: str, max_new_tokens: int, threads: int | None, out: Path,
                  warn: Callable[[str], None], overwrite: bool = False) -> dict:
    """Every value of `sharpv calibrate` checked (one-line :class:`SharpVError`) before any model
    loads; returns the keyword arguments of :func:`~sharpv.harness.calibrate_job.run_calibrate_job`
    (all but ``console``), defaults filled in."""
    from dataclasses import fields

    from sharpv.answer import check_device, check_dtype
    from sharpv.cli_values import check_at_least, check_output_dir, check_overwrite, parse_settings, resolve_model
    from sharpv.methods import SharpVConfig
    from sharpv.synthetic.model import HELDOUT_SEED, HELDOUT_SIZE

    goal = parse_target(target)
    if data is not None and (seed is not None or n is not None):
        raise SharpVError("--seed and --n choose the synthetic calibration set; drop them with --data")
    if no_holdout and (holdout_data is not None or holdout_seed is not None or holdout_n is not None):
        raise SharpVError("--no-holdout skips the held-out report; drop --holdout-data, --holdout-seed and --holdout-n")
    if holdout_data is not None and (holdout_seed is not None or holdout_n is not None):
        raise SharpVError("--holdout-seed and --holdout-n choose the synthetic held-out set; drop them with --holdout-data")
    seed = CALIBRATION_SEED if seed is None and data is None else seed
    n = CALIBRATION_SIZE if n is None and data is None else n
    check_at_least(seed, "--seed", 0)
    check_at_least(n, "--n", 1)
    check_at_least(holdout_seed, "--holdout-seed", 0)
    check_at_least(holdout_n, "--holdout-n", 1)
    check_at_least(frames, "--frames", 3 if data is None else 1)
    check_at_least(max_new_tokens, "--max-new-tokens", 1)
    check_at_least(threads, "--threads", 1)
    check_at_least(refine, "--refine", 0)
    weights = parse_floats(spatial_weights, "--spatial-weights", 0.0, 1e6)
    thresholds = parse_kv_thresholds(kv_thresholds)
    fixed_budgets = parse_floats(budgets, "--budgets", 0.0, 1.0)
    if 0.0 in fixed_budgets:
        raise SharpVError("--budgets values must be in (0, 1], got 0")
    base = parse_settings(settings, "--set")
    known = [f.name for f in fields(SharpVConfig)]
    for key in base:
        if key in SEARCHED:
            raise SharpVError(f"--set {key}: calibrate searches it (or, for keep_ratio, runs adaptive mode); "
                              "use --spatial-weights / --kv-thresholds for the grids")
        if key not in known:
            others = [k for k in known if k not in SEARCHED]
            raise SharpVError(f"--set {key}: sharpv has no such setting; settings calibrate keeps fixed: {', '.join(others)}")
    try:
        SharpVConfig(**base)
    except ValueError as exc:
        raise SharpVError(f"--set {exc}") from None
    check_dtype(dtype)
    check_device(device)
    model = resolve_model(model)
    _check_dataset(data, "--data")
    _check_dataset(holdout_data, "--holdout-data")
    check_output_dir(out, "--out")
    check_overwrite(out, CALIBRATE_FILES, overwrite, "--out")
    holdout: dict | None
    if no_holdout or (data is not None and holdout_data is None and holdout_seed is None and holdout_n is None):
        holdout = None  # your own data: no synthetic held-out set unless asked for
    elif holdout_data is not None:
        holdout = {"data": holdout_data, "seed": None, "n": None}
    else:
        holdout = {"data": None, "seed": HELDOUT_SEED if holdout_seed is None else holdout_seed,
                   "n": HELDOUT_SIZE if holdout_n is None else holdout_n}
    if holdout is not None:
        same = (data is not None and holdout["data"] is not None and data.resolve() == holdout["data"].resolve()) or (
            data is None and holdout["data"] is None and seed == holdout["seed"])
        if same:
            warn("the calibration and held-out sets are the same set: the held-out numbers are not held out")
    return dict(model_dir=model, data=data, seed=seed, n=n, holdout=holdout, target=goal, spatial_weights=weights,
                kv_thresholds=thresholds, base_settings=base, budgets=fixed_budgets, frames=frames, dtype=dtype,
                device=device, max_new_tokens=max_new_tokens, refine=refine, out=out)
