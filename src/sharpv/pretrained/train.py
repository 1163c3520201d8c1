"""``sharpv model train NAME``: train the projector (and small low-rank adapters) of a built model on
the synthetic video QA, keeping the language model as pretrained (issue 25, point 2).

What is trained and what is not:

- **trained**: the projector (LLaVA-style two-layer MLP) and ``image_newline``, in float32; with
  ``lora_rank > 0`` low-rank adapters (peft's LoRA) on the language model's linear layers, float32.
  A linear probe on the visual tokens (shape, colour, row and column of each pooled cell) adds a
  dense auxiliary loss on the projector's output; it is discarded afterwards.
- **frozen**: the vision tower (its features cached once per training video, float16 on disk) and
  every weight of the language model, held in bfloat16 (the forward and backward run under bf16
  autocast). The adapters are merged into the float32 weights when the model is written, so the
  written checkpoint is a plain LLaVA-OneVision model whose language model is the pretrained one
  plus a rank-``r`` update per adapted layer.

Data: a fixed pool of ``videos`` synthetic videos (frames rendered at the vision tower's
resolution, ``frames`` frames, all visual tokens: 64 per frame at 224 px after the 2 x 2 pooling,
plus the newline token), each a multi-turn ChatML conversation: the item's own question first
(exactly the single-question prompt inference uses), then up to ``turns - 1`` further questions the
scene answers (:mod:`sharpv.synthetic.conversation`), and in a share ``describe_share`` of them a
dense caption of the scene last; loss on the answer tokens and the end-of-turn token only. The pool
is shuffled per epoch (seeded); a step takes ``batch`` conversations.

Steps: ``steps`` or, when None, as many as fit the wall-time budget (``max_minutes``, counted over
every run of the same state folder): measured on the first steps of the run (seconds per step and
the validation's seconds), then fixed and saved, so a resumed run keeps its learning-rate schedule
(warm-up, then cosine decay to a tenth).

Resumable: the state folder holds the untrained base build, the feature cache, ``checkpoint.pt``
(trainable weights, optimizer, step, random states, the log, the clock; the data position and the
learning rate follow from the step) written every ``checkpoint_minutes`` and at any stop, and
``clock.json``. Running the same command again continues where it stopped; SIGINT or SIGTERM stop
after the current step and save. When the steps are done or the budget is spent it evaluates once
more and writes ``trained/`` (``trained.safetensors``, ``training.json``, ``training_log.json``,
``learning_curve.png``; ``ship_to`` gets a copy) and the trained checkpoint (``out``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sharpv.errors import SharpVError

Log = Callable[[str], None]

#: the training pool's seed is POOL_SEED + seed: never the held-out (1234), calibration (7) or validation seed
POOL_SEED = 25_000
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: steps of a run measured (after two warm-up steps) before the number of steps is fixed
MEASURE_STEPS = 15
#: seconds kept back from the budget for writing the outputs
EXPORT_RESERVE = 60.0
CHECKPOINT = "checkpoint.pt"
CLOCK = "clock.json"


@dataclass(frozen=True)
class TrainSettings:
    """What a training run depends on (a resumed run must use the same)."""

    seed: int = 0
    videos: int = 1600
    frames: int = 8
    turns: int = 8
    batch: int = 2
    steps: int | None = None
    max_epochs: float = 4.0
    lr_projector: float = 1e-3
    lr_lora: float = 1e-3
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    aux_weight: float = 0.5
    word_aux: float = 0.0
    warmup: int = 50
    appearance_share: float = 0.3
    describe_share: float = 0.5
    val_items: int = 96
    eval_every: int = 200
    weight_decay: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "lora_targets" in d:
            d["lora_targets"] = tuple(d["lora_targets"])
        return cls(**d)

    def check(self) -> None:
        """Every value in range; raises SharpVError naming the CLI flag."""
        from sharpv.cli_values import check_at_least as at_least

        at_least(self.seed, "--seed", 0)
        at_least(self.videos, "--videos", 1)
        at_least(self.frames, "--frames", 3)
        at_least(self.turns, "--turns", 1)
        at_least(self.batch, "--batch", 1)
        at_least(self.steps, "--steps", 1)
        at_least(self.max_epochs, "--max-epochs", 0.01)
        at_least(self.lora_rank, "--lora-rank", 0)
        at_least(self.val_items, "--val-items", 6)
        at_least(self.eval_every, "--eval-every", 1)
        at_least(self.warmup, "--warmup", 0)
        at_least(self.aux_weight, "--aux-weight", 0)
        at_least(self.word_aux, "--word-aux", 0)
        if not 0 <= self.describe_share <= 1:
            raise SharpVError(f"--describe-share must be between 0 and 1, got {self.describe_share}")
        for value, flag in ((self.lr_projector, "--lr-projector"), (self.lr_lora, "--lr-lora"), (self.lora_alpha, "--lora-alpha")):
            if not (value > 0 and math.isfinite(value)):
                raise SharpVError(f"{flag} must be a positive number, got {value}")
        bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if bad or not self.lora_targets:
            raise SharpVError(f"--lora-targets must be a comma list from {', '.join(LORA_TARGETS)}; got {','.join(self.lora_targets)}")
        if self.seed + POOL_SEED in _reserved_seeds():
            raise SharpVError(f"--seed {self.seed} would train on a reserved evaluation set; pick another")


def _reserved_seeds() -> set[int]:
    from sharpv.synthetic.model import HELDOUT_SEED
    from sharpv.synthetic.train import VALIDATION_SEED

    return {HELDOUT_SEED, VALIDATION_SEED, 7}


def default_state(name: str) -> Path:
    from sharpv.pretrained.sources import default_cache

    return default_cache() / "train" / name


def check_extra(settings: TrainSettings) -> None:
    import importlib.util

    missing = [m for m in ("onnx", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if settings.lora_rank > 0 and importlib.util.find_spec("peft") is None:
        missing.append("peft")
    if missing:
        raise SharpVError(f"sharpv model train needs {', '.join(missing)}: pip install 'sharpv[train]'")


# ------------------------------------------------------------------------------------------------
# clock: wall time per phase, over every run of a state folder


class Clock:
    def __init__(self, path: Path):
        self.path = path
        data = json.loads(path.read_text()) if path.exists() else {}
        self.seconds: dict[str, float] = data.get("seconds", {})
        self.runs: list[dict] = data.get("runs", [])
        self.runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": 0.0})
        self._start = time.monotonic()
        self._counted = 0.0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.runs[-1]["seconds"] += seconds
        self._counted += seconds

    def sync(self) -> None:
        """Count this run's time outside the measured phases (loading, checkpoints, logging) as ``other``."""
        rest = time.monotonic() - self._start - self._counted
        if rest > 0:
            self.add("other", rest)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def to_dict(self) -> dict:
        return {"seconds": {k: round(v, 1) for k, v in self.seconds.items()}, "total_seconds": round(self.total, 1),
                "runs": [{**r, "seconds": round(r["seconds"], 1)} for r in self.runs]}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(self.path)


class Stopper:
    """SIGINT/SIGTERM set a flag the loops read between steps (a second SIGINT interrupts at once)."""

    def __init__(self):
        self.stop = False
        self._old = {}

    def __enter__(self):
        def handler(signum, frame):
            if self.stop and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------------------
# the trainable model


class Trainable:
    """The model set up for training: language model frozen in bf16 (with LoRA when asked), the
    projector and newline float32 and trainable, the probe."""

    def __init__(self, model, settings: TrainSettings, words: dict[str, list[int]] | None = None):
        from sharpv.pretrained.train_data import Probe, WordProbe, pooled_side

        self.model = model
        self.settings = settings
        self.lm = model.model.language_model
        for p in model.parameters():
            p.requires_grad_(False)
        self.lm.to(torch.bfloat16)
        model.lm_head.to(torch.bfloat16)
        self.lora_modules: dict[str, torch.nn.Module] = {}
        if settings.lora_rank > 0:
            from peft import LoraConfig, inject_adapter_in_model

            torch.manual_seed(settings.seed)
            config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                                target_modules=list(settings.lora_targets), bias="none")
            self.lm = inject_adapter_in_model(config, self.lm)
            model.model.language_model = self.lm
            for name, module in self.lm.named_modules():
                if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                    self.lora_modules[name] = module
                    for p in (module.lora_A["default"].weight, module.lora_B["default"].weight):
                        p.data = p.data.float()
                        p.requires_grad_(True)
        proj = model.model.multi_modal_projector
        proj.float()
        model.model.image_newline.data = model.model.image_newline.data.float()
        for p in [*proj.parameters(), model.model.image_newline]:
            p.requires_grad_(True)
        torch.manual_seed(settings.seed + 1)
        self.side = pooled_side(model.config)
        self.probe = Probe(model.config.text_config.hidden_size, self.side)
        if settings.word_aux > 0 and words is None:
            raise SharpVError("word_aux > 0 needs the probe's word ids (train_data.word_ids)")
        self.word_probe = (WordProbe(self.lm.get_input_embeddings().weight, words, self.side)
                           if settings.word_aux > 0 else None)
        self.video_token = model.config.video_token_index

    def projector_params(self) -> list[torch.nn.Parameter]:
        return [*self.model.model.multi_modal_projector.parameters(), self.model.model.image_newline,
                *self.probe.parameters()]

    def lora_params(self) -> list[torch.nn.Parameter]:
        return [p for m in self.lora_modules.values() for p in (m.lora_A["default"].weight, m.lora_B["default"].weight)]

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"projector.{k}": v for k, v in self.model.model.multi_modal_projector.state_dict().items()}
        out["image_newline"] = self.model.model.image_newline.data
        out.update({f"probe.{k}": v for k, v in self.probe.state_dict().items()})
        for name, m in self.lora_modules.items():
            out[f"lora.{name}.A"] = m.lora_A["default"].weight.data
            out[f"lora.{name}.B"] = m.lora_B["default"].weight.data
        return {k: v.detach().clone() for k, v in out.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.model.model.multi_modal_projector.load_state_dict(
                {k[len("projector."):]: v for k, v in state.items() if k.startswith("projector.")})
            self.model.model.image_newline.copy_(state["image_newline"])
            self.probe.load_state_dict({k[len("probe."):]: v for k, v in state.items() if k.startswith("probe.")})
            for name, m in self.lora_modules.items():
                m.lora_A["default"].weight.copy_(state[f"lora.{name}.A"])
                m.lora_B["default"].weight.copy_(state[f"lora.{name}.B"])

    def lora_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {name: (m.lora_A["default"].weight, m.lora_B["default"].weight) for name, m in self.lora_modules.items()}

    def forward(self, batch, cached: torch.Tensor):
        """Answer-token logits (N, vocab) and the visual tokens (B, T * pooled, H) the LM received."""
        from sharpv.pretrained.train_data import video_features

        feats = video_features(self.model, cached)  # float32, the model's own projector and pooling
        embed = self.lm.get_input_embeddings()
        ids = batch.input_ids
        embeds = embed(ids)
        where = (ids == self.video_token).unsqueeze(-1)
        embeds = embeds.masked_scatter(where, feats.to(embeds.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = self.lm(inputs_embeds=embeds, attention_mask=batch.attention_mask).last_hidden_state
            logits = self.model.lm_head(hidden[batch.rows, batch.positions])
        return logits.float(), feats[:, :-1]


def _lr(step: int, planned: int | None, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    if planned is None:
        return peak
    progress = min(1.0, (step - warmup) / max(1, planned - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------------------------
# data order


class Data:
    """The training pool, the validation set and how a step's conversations are drawn."""

    def __init__(self, settings: TrainSettings, frame_size: int, encoder, side: int):
        from sharpv.synthetic.dataset import generate
        from sharpv.synthetic.train import VALIDATION_SEED

        self.settings = settings
        self.pool = generate(POOL_SEED + settings.seed, settings.videos, frames=settings.frames, size=frame_size)
        self.val = generate(VALIDATION_SEED, settings.val_items, frames=settings.frames, size=frame_size)
        self.encoder = encoder
        self.side = side
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders[epoch] = np.random.default_rng([self.settings.seed, 11, epoch]).permutation(self.settings.videos)
        return self._orders[epoch]

    def step_videos(self, step: int) -> list[tuple[int, int]]:
        """(epoch, video index) of the conversations of ``step``."""
        n, b = self.settings.videos, self.settings.batch
        return [((step * b + i) // n, int(self.order((step * b + i) // n)[(step * b + i) % n])) for i in range(b)]

    def conversation(self, epoch: int, index: int) -> list[tuple[str, str, str]]:
        from sharpv.synthetic.conversation import conversation

        rng = np.random.default_rng([self.settings.seed, 12, epoch, index])
        return conversation(self.pool[index], self.settings.turns, rng, self.settings.appearance_share,
                            self.settings.describe_share)

    def step_batch(self, step: int, cache) -> tuple:
        from sharpv.pretrained.train_data import collate, probe_labels

        chosen = self.step_videos(step)
        convs = [self.conversation(e, i) for e, i in chosen]
        encoded = [self.encoder.encode([(q, a) for _, q, a in c]) for c in convs]
        batch = collate(encoded, self.encoder.tokenizer.pad_token_id)
        labels = torch.from_numpy(np.stack([probe_labels(self.pool[i], self.side) for _, i in chosen]))
        types = [t for c in convs for t, _, _ in c]
        return batch, cache.batch([i for _, i in chosen]), labels, types


@torch.no_grad()
def validate(trainable: Trainable, data: Data, cache, batch_size: int = 8) -> dict[str, float]:
    """Teacher-forced exact-match accuracy per question type on the validation set (single-question
    prompts as inference makes them): right when every answer token and the end token is the
    argmax, which is when greedy decoding gives the answer."""
    from sharpv.pretrained.train_data import collate
    from sharpv.synthetic.questions import QUESTION_TYPES

    right: dict[str, list[bool]] = {t: [] for t in QUESTION_TYPES}
    items = data.val
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        batch = collate([data.encoder.single(it.question, it.answer) for it in chunk], data.encoder.tokenizer.pad_token_id)
        logits, _ = trainable.forward(batch, cache.batch(list(range(lo, lo + len(chunk)))))
        ok = logits.argmax(-1) == batch.targets
        for r, it in enumerate(chunk):
            right[it.qtype].append(bool(ok[batch.rows == r].all()))
    acc = {t: float(np.mean(v)) for t, v in right.items() if v}
    acc["overall"] = float(np.mean([x for v in right.values() for x in v]))
    return acc


# ------------------------------------------------------------------------------------------------
# the run


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _ensure_base(name: str, state: Path, base: Path | None, clock: Clock, log: Log) -> Path:
    from sharpv.pretrained.assemble import MARKER, build_model

    if base is not None:
        return Path(base)
    folder = state / "base"
    if (folder / MARKER).is_file() and not json.loads((folder / MARKER).read_text())["trained"]["projector"]:
        return folder
    log("building the untrained base model into the state folder (as `sharpv model build --untrained`)")
    start = time.monotonic()
    build_model(name, out=folder, overwrite=True, log=log, untrained=True)
    clock.add("base_build", time.monotonic() - start)
    clock.save()
    return folder


def train(name: str, settings: TrainSettings = TrainSettings(), *, state: Path | None = None, out: Path | None = None,
          ship_to: Path | None = None, max_minutes: float | None = 150.0, threads: int | None = None,
          checkpoint_minutes: float = 5.0, restart: bool = False, base: Path | None = None, log: Log = print,
          stop_after_steps: int | None = None, command: str | None = None) -> dict:
    """Run (or continue) the training of built model ``name``; returns the record (``finished`` False
    when it stopped early: interrupted, or ``stop_after_steps`` steps done in this run). ``base``: an
    untrained build folder to start from (default: built into the state folder)."""
    from sharpv.answer import load_model
    from sharpv.pretrained.assemble import default_out
    from sharpv.pretrained.train_data import Encoder, FeatureCache, pooled_side

    settings.check()
    if threads:
        torch.set_num_threads(threads)
    state = Path(state) if state is not None else default_state(name)
    out = Path(out) if out is not None else default_out(name)
    state.mkdir(parents=True, exist_ok=True)
    ckpt_path = state / CHECKPOINT
    if restart:
        for f in (ckpt_path, state / CLOCK):
            f.unlink(missing_ok=True)
        shutil.rmtree(state / "trained", ignore_errors=True)
    saved = torch.load(ckpt_path, weights_only=False) if ckpt_path.exists() else None
    if saved is not None:
        before = TrainSettings.from_dict(saved["settings"])
        if before != settings:
            diff = [f"{k} {v!r} (now {getattr(settings, k)!r})" for k, v in before.to_dict().items()
                    if v != settings.to_dict()[k]]
            raise SharpVError(f"{state} holds a run with other settings: {'; '.join(diff)}; pass the same values, "
                              "--restart to start over, or another --state")
    clock = Clock(state / CLOCK)
    budget = max_minutes * 60 if max_minutes else math.inf
    run_start = time.monotonic()

    base_dir = _ensure_base(name, state, base, clock, log)
    log(f"loading {base_dir}")
    model, processor = load_model(base_dir, dtype="float32")
    frame_size = model.config.vision_config.image_size
    side = pooled_side(model.config)
    video_tokens = settings.frames * side * side + 1
    encoder = Encoder(processor, video_tokens)
    data = Data(settings, frame_size, encoder, side)

    with Stopper() as stopper:
        # -- features (the frozen tower, once per video) --
        key = {"base": str(base_dir.resolve()), "base_weights": _weights_id(base_dir), "frames": settings.frames,
               "size": frame_size}
        caches = {
            "val": FeatureCache(state / "features", "val", {**key, "seed": "validation"}, len(data.val)),
            "train": FeatureCache(state / "features", "train", {**key, "seed": POOL_SEED + settings.seed}, len(data.pool)),
        }
        for which, items in (("val", data.val), ("train", data.pool)):
            cache = caches[which]
            if cache.complete():
                continue
            log(f"caching the vision tower's features of {len(items)} {which} videos (float16, {state / 'features'})")

            def on_shard(seconds: float) -> bool:
                clock.add("feature_cache", seconds)
                clock.save()
                return not stopper.stop and clock.total < budget

            if not cache.build(model, processor, items, log, on_shard):
                log("stopped while caching features; run the same command again to go on")
                return {"finished": False, "clock": clock.to_dict()}

        # -- the trainable model --
        from sharpv.pretrained.train_data import word_ids

        trainable = Trainable(model, settings, word_ids(encoder) if settings.word_aux > 0 else None)
        groups = [{"params": trainable.projector_params(), "lr": settings.lr_projector, "name": "projector"}]
        if trainable.lora_modules:
            groups.append({"params": trainable.lora_params(), "lr": settings.lr_lora, "name": "lora"})
        opt = torch.optim.AdamW(groups, lr=settings.lr_projector, weight_decay=settings.weight_decay, betas=(0.9, 0.98))
        step, planned, log_rows, measure, finished = 0, settings.steps, [], {}, False
        sums = {"loss": 0.0, "aux": 0.0, "n": 0, "answers": 0}  # since the last log row
        if saved is not None:
            trainable.load_state(saved["trainable"])
            opt.load_state_dict(saved["optimizer"])
            step, planned, log_rows = saved["step"], saved["planned_steps"], saved["log"]
            measure, finished = saved.get("measure", {}), saved.get("finished", False)
            sums = saved.get("sums", sums)
            torch.set_rng_state(saved["rng"]["torch"])  # nothing random is drawn per step; kept for completeness
            np.random.set_state(saved["rng"]["numpy"])
            random.setstate(saved["rng"]["python"])
            log(f"resuming at step {step}" + (f" of {planned}" if planned else "")
                + f" ({clock.total / 60:.1f} min spent so far)")
        else:
            torch.manual_seed(settings.seed + 2)

        def checkpoint() -> None:
            clock.sync()
            _save_checkpoint(ckpt_path, {
                "settings": settings.to_dict(), "step": step, "planned_steps": planned, "log": log_rows,
                "trainable": trainable.state(), "optimizer": opt.state_dict(), "measure": measure,
                "finished": finished, "clock": clock.to_dict(), "sums": dict(sums),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            })
            clock.save()

        def run_eval() -> None:
            start = time.monotonic()
            acc = validate(trainable, data, caches["val"])
            seconds = time.monotonic() - start
            clock.add("eval", seconds)
            measure["eval_seconds"] = seconds
            log_rows.append({"step": step, "accuracy": acc, "seconds": round(clock.total, 1)})
            log(json.dumps(log_rows[-1]))

        if not finished and not any("accuracy" in r and r["step"] == step for r in log_rows) and step == 0:
            run_eval()
            checkpoint()

        last_save = time.monotonic()
        run_steps, step_times = 0, []
        trainable.model.train()
        stop_reason = None
        while not finished:
            if planned is not None and step >= planned:
                stop_reason = "steps"
                break
            per_step = measure.get("sec_per_step", 0.0)
            reserve = EXPORT_RESERVE + measure.get("eval_seconds", 0.0)
            if clock.total + per_step + reserve > budget:
                stop_reason = "budget"
                break
            if stopper.stop or (stop_after_steps is not None and run_steps >= stop_after_steps):
                break
            t0 = time.monotonic()
            for g in opt.param_groups:
                peak = settings.lr_projector if g["name"] == "projector" else settings.lr_lora
                g["lr"] = _lr(step, planned, peak, settings.warmup)
            batch, cached, labels, types = data.step_batch(step, caches["train"])
            logits, feats = trainable.forward(batch, cached)
            qa = torch.nn.functional.cross_entropy(logits, batch.targets)
            aux = trainable.probe.loss(feats, labels) if settings.aux_weight > 0 else torch.zeros(())
            word = trainable.word_probe.loss(feats, labels) if trainable.word_probe is not None else torch.zeros(())
            loss = qa + settings.aux_weight * aux + settings.word_aux * word
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            step += 1
            run_steps += 1
            seconds = time.monotonic() - t0
            clock.add("train", seconds)
            step_times.append(seconds)
            sums["loss"] += qa.item()
            sums["aux"] += aux.item()
            sums["word"] = sums.get("word", 0.0) + word.item()
            sums["n"] += 1
            sums["answers"] += len(types)
            if planned is None and run_steps == MEASURE_STEPS + 2:
                measure["sec_per_step"] = float(np.mean(step_times[2:]))
                planned = _plan_steps(settings, step, clock.total, budget, measure)
                log(f"{measure['sec_per_step']:.2f} s per step, validation {measure.get('eval_seconds', 0):.0f} s: "
                    f"{planned} steps fit {budget / 60:.0f} min")
            elif run_steps > 2:
                measure["sec_per_step"] = float(np.mean(step_times[2:]))
            if step % 10 == 0 or (planned is not None and step == planned):
                row = {"step": step, "loss": round(sums["loss"] / sums["n"], 4), "aux_loss": round(sums["aux"] / sums["n"], 4),
                       **({"word_loss": round(sums.get("word", 0.0) / sums["n"], 4)} if trainable.word_probe is not None else {}),
                       "answers_per_step": round(sums["answers"] / sums["n"], 2), "lr_projector": opt.param_groups[0]["lr"],
                       "sec_per_step": round(float(np.mean(step_times[-10:])), 3), "seconds": round(clock.total, 1)}
                log_rows.append(row)
                left = (planned - step) * measure.get("sec_per_step", seconds) if planned else None
                log(f"step {step}" + (f"/{planned}" if planned else "") + f" loss {row['loss']:.3f} probe "
                    f"{row['aux_loss']:.3f} {row['sec_per_step']:.2f} s/step, {clock.total / 60:.1f} min"
                    + (f", about {left / 60:.0f} min of steps left" if left is not None else ""))
                sums = {"loss": 0.0, "aux": 0.0, "n": 0, "answers": 0}
            if step % settings.eval_every == 0:
                trainable.model.eval()
                run_eval()
                trainable.model.train()
                checkpoint()
                last_save = time.monotonic()
            elif time.monotonic() - last_save > checkpoint_minutes * 60:
                checkpoint()
                last_save = time.monotonic()
        if stop_reason is None and not finished:
            checkpoint()
            log(f"stopped at step {step}; run the same command again to go on")
            return {"finished": False, "step": step, "planned_steps": planned, "clock": clock.to_dict()}
        if not finished:
            if not any("accuracy" in r and r["step"] == step for r in log_rows):
                trainable.model.eval()
                run_eval()
            if stop_reason == "budget":
                log(f"the {budget / 60:.0f}-min budget is spent at step {step}" + (f" of {planned}" if planned else ""))
            finished = True
            checkpoint()
        else:
            log(f"the run in {state} finished at step {step}; writing its outputs again")
        record = _finish(name, settings, trainable, log_rows, clock, step, planned, measure, state, base_dir, out, ship_to,
                         max_minutes, stop_reason, log, command)
    return record


def _weights_id(folder: Path) -> str:
    """Size and modification time of the base's weights (the feature cache belongs to them)."""
    files = sorted(folder.glob("*.safetensors"))
    return ";".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)


def _plan_steps(settings: TrainSettings, step: int, spent: float, budget: float, measure: dict) -> int:
    cap = max(1, int(settings.max_epochs * settings.videos / settings.batch))
    if not math.isfinite(budget):
        return cap
    per_step = measure["sec_per_step"] + measure.get("eval_seconds", 0.0) / settings.eval_every
    left = budget - spent - EXPORT_RESERVE - measure.get("eval_seconds", 0.0)
    return max(step + 1, min(cap, step + int(left / per_step)))


def plot_curve(log_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sharpv.synthetic.questions import QUESTION_TYPES

    evals = [r for r in log_rows if "accuracy" in r]
    losses = [r for r in log_rows if "loss" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot([r["step"] for r in losses], [r["loss"] for r in losses], label="QA loss (answer tokens)")
    a.plot([r["step"] for r in losses], [r["aux_loss"] for r in losses], label="probe loss (visual tokens)")
    if any("word_loss" in r for r in losses):
        a.plot([r["step"] for r in losses if "word_loss" in r], [r["word_loss"] for r in losses if "word_loss" in r],
               label="word probe loss (visual tokens vs the LM's word embeddings)")
    a.set_xlabel("step"), a.set_ylabel("loss"), a.set_yscale("log"), a.legend()
    for key in [*QUESTION_TYPES, "overall"]:
        b.plot([r["step"] for r in evals], [r["accuracy"].get(key, float("nan")) for r in evals], label=key,
               linewidth=2.5 if key == "overall" else 1.2, marker="o" if len(evals) < 15 else None, markersize=3)
    b.set_xlabel("step"), b.set_ylabel("validation accuracy"), b.set_ylim(0, 1), b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _finish(name, settings, trainable, log_rows, clock, step, planned, measure, state, base_dir, out, ship_to,
            max_minutes, stop_reason, log, command) -> dict:
    import transformers

    from sharpv.pretrained import trained as trained_weights
    from sharpv.pretrained.assemble import MARKER, write_trained

    folder = state / "trained"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    tensors, meta = trained_weights.collect(trainable.model, trainable.lora_pairs() or None, settings.lora_rank,
                                            settings.lora_alpha, settings.lora_targets)
    weights = trained_weights.save(folder / trained_weights.FILE, tensors, meta)
    evals = [r for r in log_rows if "accuracy" in r]
    losses = [r for r in log_rows if "loss" in r]
    build = json.loads((base_dir / MARKER).read_text())
    record = {
        "model": name,
        "what": "projector + image_newline" + (f" + LoRA rank {settings.lora_rank} on the language model's "
                                                f"{', '.join(settings.lora_targets)} (merged when written)"
                                                if settings.lora_rank else "") + "; vision tower and language model frozen",
        "settings": settings.to_dict(),
        "steps": step,
        "planned_steps": planned,
        "stopped_by": stop_reason,
        "epochs": round(step * settings.batch / settings.videos, 2),
        "conversations": step * settings.batch,
        "trainable_parameters": {
            "projector": sum(p.numel() for p in trainable.model.model.multi_modal_projector.parameters()),
            "image_newline": trainable.model.model.image_newline.numel(),
            "lora": sum(p.numel() for p in trainable.lora_params()),
            "probe (discarded)": sum(p.numel() for p in trainable.probe.parameters()),
        },
        "visual_tokens": {"frames": settings.frames, "per_frame": trainable.side ** 2,
                          "frame_size": trainable.model.config.vision_config.image_size},
        "final_validation_accuracy": evals[-1]["accuracy"] if evals else None,
        "final_loss": losses[-1]["loss"] if losses else None,
        "validation": {"seed": "sharpv.synthetic.train.VALIDATION_SEED", "items": settings.val_items,
                       "scoring": "teacher-forced exact match of the answer and end token (= greedy decoding)"},
        "sec_per_step": round(measure.get("sec_per_step", 0.0), 3),
        "wall_seconds": round(clock.total, 1),
        "wall_seconds_by_phase": {k: round(v, 1) for k, v in clock.seconds.items()},
        "budget_minutes": max_minutes,
        "runs": len(clock.runs),
        "peak_rss_mb": round(_peak_rss_mb()),
        "hardware": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": _version("peft"), "machine": platform.machine()},
        "base": {"sources": build.get("sources")},
        "command": command,
    }
    (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    (folder / "training_log.json").write_text(json.dumps(log_rows, indent=1) + "\n")
    plot_curve(log_rows, folder / "learning_curve.png")
    if ship_to is not None:
        ship_to = Path(ship_to)
        ship_to.mkdir(parents=True, exist_ok=True)
        for f in (trained_weights.FILE, "training.json", "training_log.json", "learning_curve.png"):
            shutil.copy2(folder / f, ship_to / f)
        log(f"copied the trained weights and the training record to {ship_to}")
    write_trained(base_dir, weights, out, log, extra={
        "weights": str(weights), "training": {k: record[k] for k in ("steps", "wall_seconds", "final_validation_accuracy")}})
    log(f"wrote the trained model to {out} ({time.monotonic() - start:.0f} s)")
    record["out"] = str(out)
    record["finished"] = True
    return record
