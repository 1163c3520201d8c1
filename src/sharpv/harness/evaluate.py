"""`sharpv eval`: answer accuracy of every method x budget on a video QA set, against dense.

Datasets:

- the synthetic held-out set (default): ``synthetic_examples(seed, n)``, frames rendered in
  memory (no video file, no codec loss) and fed through the model's processor;
- a user's JSONL file, one object per line::

      {"video": "clips/a.mp4", "question": "What is the man holding?",
       "options": ["a cup", "a phone", "a book"], "answer": "B", "type": "objects", "id": "a-1"}

  ``video`` is a file or a folder of frames, relative to the JSONL file's folder; ``options``
  (optional) are shown to the model as lettered choices; ``answer`` is the option's letter or its
  text (or free text when there are no options); ``type`` (optional) groups the per-type
  accuracy; ``id`` is optional.

Scoring: the generated text and the answer are lower-cased and stripped of punctuation; a
prediction is right when they are equal, or, with options, when the prediction names the right
option by letter ("B", "B.", "(B) a phone") or by its text. Intervals are Wilson 95% intervals
for a binomial proportion. Videos are the outer loop (every video is read once), methods the inner
one.

Several questions about one video (JSONL rows naming the same ``video`` file) share its pruned
prefix: for each method the video is pruned and prefilled once and each question prefills only its
own tokens on that cache (:func:`sharpv.answer.generate_answers`); every answer, and so every
accuracy, equals answering the questions one by one (tested). Methods that cannot share a prefix
(stage 2 in ``layerwise`` mode, FastV: :func:`sharpv.answer.shared_prefix_refusal`) answer each
question on its own prefill, as do videos with one question. A record's ``prefill_seconds`` is the
mean prefill time per question: a shared prefix's prefill counts once, spread over its questions.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sharpv.harness.bench import ADAPTIVE, MethodSpec, plan
from sharpv.harness.flops import prefill_flops_pair
from sharpv.harness.report import write_json_atomic
from sharpv.errors import SharpVError
from sharpv.video import SampledVideo, build_inputs, read_video, read_video_for

Z95 = 1.959964
LETTERS = string.ascii_uppercase


@dataclass
class Example:
    """One question about one video."""

    id: str
    question: str
    answer: str
    video: Path | None = None  # a file or frame folder, or None when ``frames`` are given
    frames: Any = None  # (T, H, W, 3) uint8 array, for in-memory videos
    options: list[str] | None = None
    type: str = "all"
    item: Any = None  # the synthetic QAItem, when the example is one (it knows where the evidence is)

    def load(self, num_frames: int, processor: Any = None) -> SampledVideo:
        """The example's frames; a file is read streaming (every kept frame resized to the model's
        input size as it is decoded, :func:`~sharpv.video.read_video_for`) when ``processor`` is given."""
        if self.frames is not None:
            n = len(self.frames)
            return SampledVideo(self.frames, list(range(n)), n, 8.0)
        if processor is not None:
            return read_video_for(processor, self.video, num_frames)
        return read_video(self.video, num_frames)

    def prompt(self) -> str:
        if not self.options:
            return self.question
        choices = "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(self.options))
        return f"{self.question}\n{choices}\nAnswer with the option's letter from the given choices directly."


def synthetic_examples(seed: int, n: int, frames: int = 16, size: int = 64) -> list[Example]:
    """The synthetic QA set of ``seed`` (see :mod:`sharpv.synthetic`), frames rendered in memory at
    ``size`` px (:func:`render_size` gives a model's)."""
    from sharpv.synthetic import generate

    return [Example(it.id, it.question, it.answer, frames=it.frames(), type=it.qtype, item=it)
            for it in generate(seed, n, frames=frames, size=size)]


def render_size(model: Any) -> int:
    """The size the synthetic scenes are rendered at for ``model``: its vision tower's frame size
    where the config names one larger than 64 (a 224-px DINOv2 tower sees 224-px scenes, not 64-px
    ones upscaled), else 64, what the shipped models were trained on."""
    size = getattr(getattr(model.config, "vision_config", None), "image_size", None)
    return max(64, int(size)) if isinstance(size, int) else 64


def evidence_for(example: Example, stats: Any) -> np.ndarray | None:
    """(T, f) bool evidence cells of a synthetic example laid out like the video in ``stats`` (one
    video, square token grid; a temporal step of two frames, as Qwen's, shows what either frame
    shows), or None when the example is not synthetic or the layout does not map."""
    if example.item is None or len(getattr(stats, "videos", [])) != 1:
        return None
    from sharpv.synthetic.evidence import evidence_cells

    video = stats.videos[0]
    side = int(round(video.tokens_per_frame ** 0.5))
    frames = example.item.scene.frames
    if side * side != video.tokens_per_frame or example.item.size % side or frames % video.frames:
        return None
    cells = evidence_cells(example.item, (side, side))
    return cells.reshape(video.frames, frames // video.frames, -1).any(1)


def load_jsonl(path: Path) -> list[Example]:
    """Read a dataset in the JSONL layout of the module docstring, checking every line."""
    if not path.is_file():
        raise SharpVError(f"dataset {path} does not exist; pass a JSONL file (see `sharpv eval --help`)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SharpVError(f"dataset {path} is not a UTF-8 text file; pass a JSONL file (one JSON object per line)") from None
    examples = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SharpVError(f"{where} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise SharpVError(f"{where}: each line must be a JSON object with video, question and answer")
        missing = [k for k in ("video", "question", "answer") if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise SharpVError(f"{where}: missing or empty {', '.join(missing)} (each line needs video, question, answer)")
        options = row.get("options")
        if options is not None and (not isinstance(options, list) or not options or len(options) > len(LETTERS)
                                    or not all(isinstance(o, str) for o in options)):
            raise SharpVError(f"{where}: options must be a non-empty list of at most 26 strings")
        video = (path.parent / row["video"]) if not Path(row["video"]).is_absolute() else Path(row["video"])
        if not video.exists():
            raise SharpVError(f"{where}: video {video} does not exist (paths are relative to the JSONL file)")
        example = Example(str(row.get("id", no)), row["question"], row["answer"], video=video,
                          options=options, type=str(row.get("type", "all")))
        if options is not None:
            try:
                right_option(example)
            except SharpVError:
                raise SharpVError(f"{where}: answer {row['answer']!r} is neither an option letter nor one of the options") from None
        examples.append(example)
    if not examples:
        raise SharpVError(f"dataset {path} has no examples")
    return examples


def majority_rates(examples: list[Example]) -> dict[str, float]:
    """Per type (and ``overall``), the accuracy of always giving that type's most frequent answer."""
    from collections import Counter

    by_type: dict[str, Counter] = defaultdict(Counter)
    for ex in examples:
        by_type[ex.type][_norm(ex.answer)] += 1
    rates = {t: max(c.values()) / sum(c.values()) for t, c in sorted(by_type.items())}
    rates["overall"] = sum(max(c.values()) for c in by_type.values()) / max(1, len(examples))
    return rates


def _norm(text: str) -> str:
    text = text.lower().strip()
    text = text.translate(str.maketrans({c: " " for c in string.punctuation}))
    return " ".join(text.split())


def right_option(example: Example) -> int:
    """Index of the option ``example.answer`` names (by letter or by text); an error if none."""
    gold = _norm(example.answer)
    letters = [c.lower() for c in LETTERS[: len(example.options)]]
    texts = [_norm(o) for o in example.options]
    if gold in letters:
        return letters.index(gold)
    if gold in texts:
        return texts.index(gold)
    raise SharpVError(f"example {example.id}: answer {example.answer!r} is neither an option letter nor an option")


def is_correct(prediction: str, example: Example) -> bool:
    """Whether ``prediction`` answers ``example`` (see the module docstring for the rule)."""
    pred = _norm(prediction)
    if not example.options:
        return pred == _norm(example.answer)
    right = right_option(example)
    texts = [_norm(o) for o in example.options]
    if pred in texts:
        return texts.index(pred) == right
    m = re.match(r"^\(?([a-z])\)?(?:\s|$)", pred)
    letters = [c.lower() for c in LETTERS[: len(example.options)]]
    return bool(m) and m.group(1) in letters and letters.index(m.group(1)) == right


def wilson(right: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of ``right / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = right / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference(correct: list[bool], reference: list[bool], *, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Accuracy of ``correct`` minus that of ``reference`` (the same questions, in the same order)
    and its paired percentile-bootstrap 95% interval: ``resamples`` draws of the questions with
    replacement, each scoring both runs on the same draw (so what the two get right together does
    not widen the interval), a fixed ``seed`` so a result file is reproducible. This is how two
    systems are compared on one test set (Koehn 2004)."""
    a = np.asarray(correct, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"paired runs need the same non-empty list of questions, got {a.shape} and {b.shape}")
    diff = a - b
    draws = np.random.default_rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    means = diff[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def add_paired_differences(records: list[dict], predictions: list[dict[int, dict]], reference: str = "sharpv") -> None:
    """Give every record at a fixed budget its difference to the ``reference`` method (by label)
    at the same budget, ``vs_sharpv`` and ``vs_sharpv_ci95`` (:func:`paired_difference` over the
    same questions). Dense, adaptive runs and the reference itself get None: they keep different
    shares, or are the reference."""
    by_budget = {rec["budget"]: preds for rec, preds in zip(records, predictions)
                 if rec["method"] == reference and rec["budget"] is not None}
    for rec, preds in zip(records, predictions):
        ref = by_budget.get(rec["budget"]) if rec["method"] != reference else None
        if ref is None or rec["method_name"] == "dense":
            rec["vs_sharpv"], rec["vs_sharpv_ci95"] = None, None
            continue
        order = sorted(preds)
        diff, low, high = paired_difference([preds[i]["correct"] for i in order], [ref[i]["correct"] for i in order])
        rec["vs_sharpv"], rec["vs_sharpv_ci95"] = diff, [low, high]


@dataclass
class _Tally:
    right: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kept: int = 0
    visual: int = 0
    kv: int = 0
    kv_dense: int = 0
    prefill: float = 0.0
    in_llm: int = 0  # items where pruning inside the LLM (stage 2, FastV, VTW) removed something
    retention: float = 0.0  # sum over items of the mean share of visual tokens per LLM layer
    flops: int = 0  # analytic LLM prefill FLOPs (sharpv.harness.flops), summed over items
    flops_dense: int = 0  # the same items' unpruned prompts
    # evidence recall (synthetic examples): per type [cells kept, cells, frames hit, frames shown]
    evidence: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))

    def to_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, defaultdict) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, raw: dict) -> "_Tally":
        t = cls()
        for k, v in raw.items():
            if k in ("right", "count"):
                getattr(t, k).update(v)
            elif k == "evidence":
                t.evidence.update({q: list(x) for q, x in v.items()})
            else:
                setattr(t, k, v)
        return t

    def add_evidence(self, qtype: str, example: Example, stats: Any) -> None:
        from sharpv.synthetic.evidence import evidence_recall

        cells = evidence_for(example, stats)
        keep = getattr(stats.videos[0], "keep", None) if cells is not None else None
        if keep is None:
            return
        for i, v in enumerate(evidence_recall(cells, keep.cpu().numpy())):
            self.evidence[qtype][i] += v

    def evidence_fields(self) -> dict:
        if not self.evidence:
            return {"evidence_recall": None, "evidence_recall_by_type": None, "evidence_frame_recall": None}
        total = [sum(v[i] for v in self.evidence.values()) for i in range(4)]
        return {
            "evidence_recall": total[0] / total[1] if total[1] else None,
            "evidence_recall_by_type": {t: v[0] / v[1] if v[1] else None for t, v in sorted(self.evidence.items())},
            "evidence_frame_recall": total[2] / total[3] if total[3] else None,
        }

    def record(self, spec: MethodSpec, budget: float | None, dense_prefill: float | None) -> dict:
        n, right = sum(self.count.values()), sum(self.right.values())
        low, high = wilson(right, n)
        by_type = {t: self.right[t] / c for t, c in sorted(self.count.items())}
        ci_by_type = {t: list(wilson(self.right[t], c)) for t, c in sorted(self.count.items())}
        prefill = self.prefill / n
        return {
            "method": spec.label, "method_name": spec.name, "budget": budget,
            "accuracy": right / n, "ci95": [low, high], "accuracy_by_type": by_type, "ci95_by_type": ci_by_type,
            "n_by_type": dict(sorted(self.count.items())), "n": n, "correct": right,
            "kept_share": self.kept / self.visual if self.visual else 1.0,
            "visual_tokens_kept": self.kept / n, "visual_tokens_in": self.visual / n,
            "kv_share": self.kv / self.kv_dense if self.kv_dense else None,
            "in_llm_pruned_share": self.in_llm / n,
            "equivalent_retention": self.retention / n,
            "flops_share": self.flops / self.flops_dense if self.flops_dense else None,
            "prefill_seconds": prefill,
            "prefill_speedup": dense_prefill / prefill if dense_prefill and prefill else None,
            **self.evidence_fields(),
        }


def video_groups(examples: list[Example]) -> list[list[int]]:
    """Indices of the examples grouped by video file (first appearance order); in-memory videos
    are never grouped."""
    groups: dict[Any, list[int]] = {}
    for i, ex in enumerate(examples):
        key = ("file", str(Path(ex.video).resolve())) if ex.video is not None and ex.frames is None else ("item", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


@dataclass
class PreparedVideo:
    """One video's questions, ready to answer: ``indices`` of its examples, one processor input per
    question and whether they can share one pruned prefix (several questions on a template that puts
    them after the video). With ``encoded`` inputs the video's features were computed once
    (:func:`sharpv.adapters.precompute_video_features`) and every question's input holds them as
    ``mm_encoder_outputs`` instead of pixels, so answering never runs the vision tower again."""

    indices: list[int]
    inputs: list[dict]
    share: bool
    encoded: bool = False


def prepare_video(model, processor, examples: list[Example], group: list[int], *, frames: int, adapter: Any = None,
                  encode: bool = False, chunk_frames: int | None = None) -> PreparedVideo:
    """Read (or render) the video of ``examples[group[0]]`` once and build every question's input;
    ``encode``: also run the vision tower once and keep its features in the inputs."""
    from sharpv.answer import shared_prefix_length

    video = examples[group[0]].load(frames, processor)
    inputs = [build_inputs(processor, examples[i].prompt(), video) for i in group]
    share = len(group) > 1 and adapter is not None
    if share:
        try:
            shared_prefix_length(inputs, adapter.video_token_id, may_end_on_video=adapter.extra_tokens_per_video > 0)
        except SharpVError:
            share = False  # a template that puts the question before the video: one prefill each
    prepared = PreparedVideo(list(group), inputs, share, False)
    return encode_prepared(model, prepared, chunk_frames) if encode else prepared


def encode_prepared(model, video: PreparedVideo, chunk_frames: int | None = None) -> PreparedVideo:
    """``video`` with its features computed once (the vision tower runs here, not in every
    method's ``generate()``): every question's input holds them as ``mm_encoder_outputs``."""
    if video.encoded:
        return video
    from sharpv.adapters import DEFAULT_CHUNK_FRAMES, precompute_video_features

    features = precompute_video_features(model, video.inputs[0], chunk_frames or DEFAULT_CHUNK_FRAMES).get("mm_encoder_outputs")
    if features is None:
        return video
    inputs = [{**{k: v for k, v in x.items() if k != "pixel_values_videos"}, "mm_encoder_outputs": features}
              for x in video.inputs]
    return PreparedVideo(video.indices, inputs, video.share, True)


def prepare_videos(model, processor, examples: list[Example], *, frames: int, encode: bool = True,
                   reuse_prefix: bool = True, chunk_frames: int | None = None,
                   on_video: Callable[[], None] | None = None) -> list[PreparedVideo]:
    """Every video of ``examples`` prepared once (:func:`prepare_video`), for answering them under
    many methods with :func:`evaluate_prepared` (``sharpv calibrate``): each video is read and
    (``encode``) encoded once, and its inputs stay in memory. ``on_video`` is called per video."""
    from sharpv.adapters import adapter_for

    adapter = adapter_for(model) if reuse_prefix else None
    groups = video_groups(examples) if reuse_prefix else [[i] for i in range(len(examples))]
    prepared = []
    for group in groups:
        prepared.append(prepare_video(model, processor, examples, group, frames=frames, adapter=adapter, encode=encode,
                                      chunk_frames=chunk_frames))
        if on_video:
            on_video()
    return prepared


def _answer_video(model, processor, examples: list[Example], video: PreparedVideo, method, shareable: bool,
                  tally: _Tally, predictions: dict[int, dict], *, label: str, max_new_tokens: int,
                  on_step: Callable[[str], None] | None) -> None:
    """Answer one prepared video's questions under ``method`` and add them to ``tally``."""
    from sharpv.answer import generate_answer, generate_answers

    share = video.share and shareable
    text_config = model.config.get_text_config() if hasattr(model, "config") else None
    if share:
        shared = generate_answers(model, processor, video.inputs, method, max_new_tokens=max_new_tokens)
        gens = shared.generations
        tally.prefill += shared.prefix_prefill_seconds
    else:
        gens = []
        for x in video.inputs:
            if on_step:
                on_step(label)
            gens.append(generate_answer(model, processor, x, method, max_new_tokens=max_new_tokens))
    for i, gen in zip(video.indices, gens):
        if share and on_step:
            on_step(label)
        ex = examples[i]
        ok = is_correct(gen.text, ex)
        s = gen.stats
        tally.right[ex.type] += int(ok)
        tally.count[ex.type] += 1
        tally.kept += s.visual_tokens_kept
        tally.visual += s.visual_tokens_in
        tally.kv += s.kv_cache_bytes
        tally.kv_dense += s.kv_cache_bytes_dense
        tally.prefill += gen.prefill_seconds
        tally.in_llm += int(s.kv_withdraw_layer is not None)
        tally.retention += getattr(s, "equivalent_retention", s.kept_share)
        if text_config is not None and s.sequence_length_in:
            pruned, dense = prefill_flops_pair(text_config, s, s.method)
            tally.flops += pruned
            tally.flops_dense += dense
        tally.add_evidence(ex.type, ex, s)
        predictions[i] = {"id": ex.id, "prediction": gen.text, "answer": ex.answer, "correct": ok}


def _label(spec: MethodSpec, budget: float | None) -> str:
    return f"{spec.label} @ {budget if budget is not None else ADAPTIVE if spec.name != 'dense' else '-'}"


class EvalState:
    """What an interrupted ``evaluate`` had done: after every video group (at most every
    ``every_seconds``) the tallies and predictions of every run so far go to ``path`` (JSON,
    written to a temporary file and moved into place), with a ``fingerprint`` of what is being
    evaluated (model, set, methods, budgets, frames, tokens). A run with the same fingerprint
    continues after the last group saved; another fingerprint is refused.

    The state also records every run that wrote it (``runs``: UTC start and end, wall seconds, the
    videos it did, the sharpv commit and package versions), so a result finished across several runs
    says what each of them ran and spent, not only the last one (:meth:`history`). A state written
    before runs were recorded counts its videos as ``unrecorded_videos``."""

    VERSION = 1
    EVERY_SECONDS = 30.0

    def __init__(self, path: Path, fingerprint: dict, every_seconds: float | None = None):
        self.path, self.fingerprint = Path(path), json.loads(json.dumps(fingerprint))
        self.every = self.EVERY_SECONDS if every_seconds is None else every_seconds
        self._last = 0.0
        self.earlier: list[dict] = []  # the runs before this one, as the state recorded them
        self.unrecorded = 0  # videos done by earlier runs that the state holds no record of
        self.resumed_at = 0  # videos done when this run started
        self._run: dict | None = None

    def load(self, n_runs: int) -> tuple[int, list["_Tally"], list[dict[int, dict]]] | None:
        """Start this run's record and read the file if there is one: (groups done, tallies,
        predictions), or None."""
        self._start()
        if not self.path.is_file():
            return None
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            raise SharpVError(f"{self.path} is not a readable eval state; delete it (or pass --overwrite) to start over") from None
        if raw.get("version") != self.VERSION or raw.get("fingerprint") != self.fingerprint:
            raise SharpVError(f"{self.path} holds an unfinished eval of other settings (model, set, methods, budgets, frames "
                              "or tokens); rerun with those, or pass --overwrite to start over")
        if len(raw["tallies"]) != n_runs:
            raise SharpVError(f"{self.path} does not match this run's plan; pass --overwrite to start over")
        tallies = [_Tally.from_dict(t) for t in raw["tallies"]]
        predictions = [{int(k): v for k, v in p.items()} for p in raw["predictions"]]
        done = int(raw["groups_done"])
        self.earlier = list(raw.get("runs", []))
        self.unrecorded = int(raw.get("unrecorded_videos", 0 if "runs" in raw else done))
        self.resumed_at = done
        return done, tallies, predictions

    def _start(self) -> None:
        from sharpv.harness.provenance import Clock, versions

        self._clock = Clock()
        self._run = {**self._clock.source, "versions": versions()}

    def _this_run(self, groups_done: int) -> dict:
        if self._run is None:  # saved without load(): this run started here
            self._start()
        return {"videos": [self.resumed_at, groups_done], **self._clock.stamp(), **self._run}

    def history(self) -> dict | None:
        """How the finished result was reached when this run continued an earlier one (None when it
        did not): ``videos_before`` this run, ``unrecorded_videos`` of those, the ``earlier_runs``
        recorded (each with ``videos`` [first, end), its commit, versions and wall seconds) and their
        ``earlier_wall_seconds`` (None when some videos are unrecorded)."""
        if not self.resumed_at:
            return None
        seconds = sum(r.get("wall_seconds") or 0.0 for r in self.earlier)
        return {"videos_before": self.resumed_at, "unrecorded_videos": self.unrecorded, "earlier_runs": self.earlier,
                "earlier_wall_seconds": None if self.unrecorded else round(seconds, 1)}

    def save(self, groups_done: int, tallies: list["_Tally"], predictions: list[dict[int, dict]], *, force: bool = False) -> None:
        import time

        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        payload = {"version": self.VERSION, "fingerprint": self.fingerprint, "groups_done": groups_done,
                   "runs": self.earlier + [self._this_run(groups_done)], "unrecorded_videos": self.unrecorded,
                   "tallies": [t.to_dict() for t in tallies], "predictions": predictions}
        write_json_atomic(self.path, payload)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def evaluate(model, processor, examples: list[Example], specs: list[MethodSpec], budgets: list[float | None], *,
             frames: int, max_new_tokens: int = 8, on_step: Callable[[str], None] | None = None,
             keep_predictions: bool = False, reuse_prefix: bool = True, state: EvalState | None = None,
             on_resume: Callable[[int, int], None] | None = None, encode_once: bool = True) -> list[dict]:
    """One record per planned (method, budget): dense first, then the methods in order. When
    SharpV ("sharpv") runs at a budget, every other method at that budget carries its paired
    difference to it (``vs_sharpv``, ``vs_sharpv_ci95``: :func:`add_paired_differences`).

    ``on_step`` is called once per question answered (for a progress bar). ``reuse_prefix``: share
    each video's pruned prefix between its questions (see the module docstring); False answers
    every question on its own prefill (the same answers, for checking and timing). Videos are the
    outer loop: each is read once and dropped before the next (:func:`evaluate_prepared` answers
    videos prepared, and kept, beforehand).
    ``encode_once``: each video's features are computed once and shared by every method that
    does not read the vision tower's attention (VisionZip, FastVID, FlashVID and HoliTom run the
    tower under their own hooks); False runs the tower in every ``generate()`` (the same answers:
    tested).
    """
    from sharpv.adapters import adapter_for
    from sharpv.answer import shared_prefix_refusal

    runs = plan(specs, budgets)
    methods = [spec.build(budget) for spec, budget in runs]
    tallies = [_Tally() for _ in runs]
    predictions: list[dict[int, dict]] = [{} for _ in runs]
    adapter = adapter_for(model) if reuse_prefix else None
    shareable = [reuse_prefix and shared_prefix_refusal(method, adapter) is None for method in methods]
    groups = video_groups(examples) if reuse_prefix else [[i] for i in range(len(examples))]
    done = 0
    resumed = state.load(len(runs)) if state is not None else None
    if resumed is not None:
        done, tallies, predictions = resumed
        if on_resume:
            on_resume(done, len(groups))
        if on_step:
            for _ in range(sum(len(g) for g in groups[:done]) * len(runs)):
                on_step("resumed")
    reads_tower = [getattr(method, "vision_attention", None) is not None for method in methods]
    for g in range(done, len(groups)):
        group = groups[g]
        video = prepare_video(model, processor, examples, group, frames=frames, adapter=adapter)
        encoded = None
        for r, ((spec, budget), method, tally) in enumerate(zip(runs, methods, tallies)):
            use = video
            if encode_once and not reads_tower[r]:
                encoded = encoded or encode_prepared(model, video)
                use = encoded
            _answer_video(model, processor, examples, use, method, shareable[r], tally, predictions[r],
                          label=_label(spec, budget), max_new_tokens=max_new_tokens, on_step=on_step)
        if state is not None:
            state.save(g + 1, tallies, predictions, force=g + 1 == len(groups))
    dense_prefill = tallies[0].prefill / max(1, sum(tallies[0].count.values()))
    records = []
    for r, ((spec, budget), tally) in enumerate(zip(runs, tallies)):
        rec = tally.record(spec, budget, dense_prefill)
        if keep_predictions:
            rec["predictions"] = [predictions[r][i] for i in range(len(examples))]
        records.append(rec)
    add_paired_differences(records, predictions)
    dense_acc = records[0]["accuracy"]
    for rec in records:
        rec["accuracy_vs_dense"] = rec["accuracy"] / dense_acc if dense_acc else None
    return records


def evaluate_prepared(model, processor, examples: list[Example], prepared: list[PreparedVideo], method, *,
                      spec: MethodSpec, budget: float | None = None, max_new_tokens: int = 8,
                      on_step: Callable[[str], None] | None = None, keep_predictions: bool = False,
                      dense: dict | None = None) -> dict:
    """The record of one ``method`` (an applied-per-question :class:`~sharpv.methods.PruningMethod`,
    labelled by ``spec`` and ``budget`` in the record) on videos prepared by :func:`prepare_videos`:
    the fields of :func:`evaluate`'s records, with ``prefill_speedup`` and ``accuracy_vs_dense``
    against ``dense`` (a record of this function for dense; None: left out). Answers equal
    :func:`evaluate`'s on the same examples (tested)."""
    from sharpv.adapters import adapter_for
    from sharpv.answer import shared_prefix_refusal

    shareable = any(v.share for v in prepared) and shared_prefix_refusal(method, adapter_for(model)) is None
    tally, predictions = _Tally(), {}
    label = _label(spec, budget)
    for video in prepared:
        _answer_video(model, processor, examples, video, method, shareable, tally, predictions, label=label,
                      max_new_tokens=max_new_tokens, on_step=on_step)
    rec = tally.record(spec, budget, dense["prefill_seconds"] if dense else None)
    rec["accuracy_vs_dense"] = rec["accuracy"] / dense["accuracy"] if dense and dense["accuracy"] else None
    if keep_predictions:
        rec["predictions"] = [predictions[i] for i in sorted(predictions)]
    return rec
