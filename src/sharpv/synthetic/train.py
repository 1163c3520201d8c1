"""Train the shipped synthetic-QA model from scratch: ``python -m sharpv.synthetic.train --out DIR``.

Seeded and reproducible (same seed, same steps, same torch build: same batches and same
initial weights; CPU float kernels may still differ in the last bits across machines). Every
batch is freshly generated (a new seed per step, never the held-out seed), so the model never
sees an evaluation video.

What makes a 1M-parameter model learn this on two CPU cores:

- **auxiliary vision loss**: a linear probe on every visual token the LLM receives (after the
  projector and the 2 x 2 pooling) must name the shape and colour covering that 16 x 16 cell and
  the cell's row and column. This gives dense, per-token supervision to the vision tower, so
  the QA loss only has to teach the LLM where to look. The probe is discarded afterwards.
- **curriculum**: for the first ``--single-object-share`` of the steps, distractors are removed
  from every scene except counting ones (answers stay true: distractors are other shapes).
- **visual-token dropout**: in ``--token-dropout`` (0.7) of the samples visual tokens are dropped
  at random (original position ids kept, as the pruning runtime does) in one of three patterns
  (:func:`dropout_plan`): uniform, per frame (most frames nearly empty, often the first one
  whole), or object-biased (tokens the ground truth puts on an object kept more often than
  background), so the model is used to the shapes shortened visual sequences take. No pruning
  method's scores are used. ``--dropout-patterns uniform`` draws from the uniform pattern only
  (the second shipped model, ``synthetic-qa-uniform``); the default, all three, is the first's.
- bf16 autocast, AdamW, warm-up then cosine decay; loss on the answer word and the end token.

The shipped model is this script's defaults (seed 0, 7,500 steps of 18 videos): 63 minutes
(3,756 s) on 2 CPU cores (AMD EPYC, no GPU, torch 2.13.0 CPU), 97.7% on the validation set;
its ``training.json`` records the settings, hardware and wall time.

Every ``--eval-every`` steps it scores a fixed validation set (its own seed) per question type,
saves the checkpoint and appends to ``training_log.json``; at the end it draws
``learning_curve.png`` and writes ``training.json`` (settings, hardware, wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sharpv.synthetic.dataset import QAItem, generate
from sharpv.synthetic.model import FRAMES, HELDOUT_SEED, build_model
from sharpv.synthetic.questions import QUESTION_TYPES
from sharpv.synthetic.render import object_mask, render
from sharpv.synthetic.scene import COLOURS, SHAPES

VALIDATION_SEED = 77
GRID = 4  # pooled tokens per frame side
_COLOURS = list(COLOURS)


def cell_labels(item: QAItem, scene=None) -> np.ndarray:
    """(T, GRID * GRID, 2) int: shape (0 = none) and colour (0 = none) covering each token's cell.

    A cell belongs to the object covering the largest part of it, if that is at least 12%.
    """
    scene = scene if scene is not None else item.scene
    cell = item.size // GRID
    out = np.zeros((scene.frames, GRID * GRID, 2), dtype=np.int64)
    for t in range(scene.frames):
        best = np.zeros(GRID * GRID)
        for obj in scene.objects:
            if not obj.visible[t]:
                continue
            cover = object_mask(obj, t, item.size).reshape(GRID, cell, GRID, cell).mean(axis=(1, 3)).reshape(-1)
            take = (cover >= 0.12) & (cover > best)
            best = np.where(take, cover, best)
            out[t, take, 0] = SHAPES.index(obj.shape) + 1
            out[t, take, 1] = _COLOURS.index(obj.colours[t]) + 1
    return out


class Batcher:
    """Turns QA items into padded model inputs with the checkpoint's own processor."""

    def __init__(self, processor):
        self.processor = processor
        tok = processor.tokenizer
        self.pad = tok.pad_token_id
        self.end = tok.convert_tokens_to_ids("<|im_end|>")

    def answer_id(self, answer: str) -> int:
        ids = self.processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"answer {answer!r} is not one token")
        return ids[0]

    def __call__(self, items: list[QAItem], single_object: bool = False, noise: float = 0.0,
                 rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        from sharpv.video.decode import SampledVideo
        from sharpv.video.processing import build_inputs

        rows, pixels, labels, targets = [], [], [], []
        for it in items:
            scene = it.scene
            if single_object and it.qtype != "count":
                scene = replace(scene, objects=scene.objects[:1])
            frames = render(scene, it.size)
            if noise > 0 and rng is not None:
                frames = np.clip(frames + rng.normal(0, noise, frames.shape), 0, 255).astype(np.uint8)
            video = SampledVideo(frames, list(range(len(frames))), len(frames), 8.0)
            inputs = build_inputs(self.processor, it.question, video)
            ids = inputs["input_ids"][0]
            rows.append(torch.cat([ids, torch.tensor([self.answer_id(it.answer), self.end])]))
            targets.append(len(ids) - 1)
            pixels.append(inputs["pixel_values_videos"][0])
            labels.append(torch.from_numpy(cell_labels(it, scene)))
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        lm_labels = torch.full((len(rows), width), -100)
        for i, (r, t) in enumerate(zip(rows, targets)):
            input_ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
            lm_labels[i, t : t + 2] = r[t + 1 : t + 3]  # position t predicts the answer, t + 1 the end token
        return dict(
            input_ids=input_ids, attention_mask=mask, pixel_values_videos=torch.stack(pixels),
            lm_labels=lm_labels, cell_labels=torch.stack(labels), answer_pos=torch.tensor(targets),
        )


class VisionProbe(torch.nn.Module):
    """Linear heads on the LLM's visual tokens: shape, colour, row, column of each cell (training only)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.head = torch.nn.Linear(hidden, (len(SHAPES) + 1) + (len(COLOURS) + 1) + 2 * GRID)

    def loss(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # feats (B, T * GRID^2, H), labels (B, T, GRID^2, 2)
        b, t = labels.shape[:2]
        logits = self.head(feats.float()).view(b, t, GRID * GRID, -1)
        s, c = len(SHAPES) + 1, len(COLOURS) + 1
        cells = torch.arange(GRID * GRID)
        rows, cols = (cells // GRID).expand(b, t, -1), (cells % GRID).expand(b, t, -1)
        ce = torch.nn.functional.cross_entropy
        return (
            ce(logits[..., :s].flatten(0, 2), labels[..., 0].flatten())
            + ce(logits[..., s : s + c].flatten(0, 2), labels[..., 1].flatten())
            + 0.25 * ce(logits[..., s + c : s + c + GRID].flatten(0, 2), rows.flatten())
            + 0.25 * ce(logits[..., s + c + GRID :].flatten(0, 2), cols.flatten())
        )


def drop_visual_tokens(embeds: torch.Tensor, batch: dict[str, torch.Tensor], video_id: int, keep: torch.Tensor,
                       generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Visual-token dropout: visual token j of row b stays with probability ``keep[b, j]``
    (``keep`` is (B, visual tokens without the trailing newline); the newline token and all text
    always stay); kept tokens keep their original position ids, as the pruning runtime does by
    default. Returns the shortened, right-padded ``inputs_embeds``, ``attention_mask``,
    ``position_ids`` and ``lm_labels``."""
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    b, length = ids.shape
    visual = ids == video_id
    last = length - 1 - visual.flip(1).int().argmax(1)
    visual[torch.arange(b), last] = False  # the newline token
    prob = torch.ones(b, length)
    prob[visual] = keep.flatten().float()
    stay = (torch.rand(b, length, generator=generator) < prob) & mask
    width = int(stay.sum(1).max())
    out_embeds = embeds.new_zeros(b, width, embeds.shape[-1])
    out_mask = torch.zeros(b, width, dtype=torch.long)
    positions = torch.zeros(b, width, dtype=torch.long)
    labels = torch.full((b, width), -100)
    for row in range(b):
        idx = stay[row].nonzero().squeeze(1)
        n = len(idx)
        out_embeds[row, :n] = embeds[row, idx]
        out_mask[row, :n] = 1
        positions[row, :n] = idx
        positions[row, n:] = idx[-1] + 1 + torch.arange(width - n)
        labels[row, :n] = batch["lm_labels"][row, idx]
    return dict(inputs_embeds=out_embeds, attention_mask=out_mask, position_ids=positions, lm_labels=labels)


DROPOUT_PATTERNS = ("uniform", "frames", "objects")


def dropout_plan(cells: torch.Tensor, pattern: str, generator: torch.Generator) -> torch.Tensor:
    """Keep probabilities (T * GRID^2,) of one video's visual tokens under a dropout ``pattern``.

    None of them uses any pruning method's scores; they cover the structures pruned inputs have:
    ``uniform``: one probability in [0.04, 0.6] for every token; ``frames``: a probability per
    frame in [0, 0.64] (squared uniform: most frames nearly empty), the first frame whole half of
    the time; ``objects``: tokens the ground truth puts on an object kept with probability in
    [0.1, 1], background tokens with one in [0, 0.3], varied per frame.
    """
    t = cells.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    if pattern == "uniform":
        p = torch.full((t, GRID * GRID), 0.04 + 0.56 * float(u(1)))
    elif pattern == "frames":
        per_frame = (0.8 * u(t)) ** 2
        if float(u(1)) < 0.5:
            per_frame[0] = 1.0
        p = per_frame[:, None].expand(t, GRID * GRID)
    elif pattern == "objects":
        on_object = cells[..., 0] > 0
        p_obj = 0.1 + 0.9 * float(u(1))
        p_bg = 0.3 * float(u(1))
        jitter = 0.5 + u(t, 1)
        p = torch.where(on_object, torch.full_like(on_object, p_obj, dtype=torch.float), torch.full_like(
            on_object, p_bg, dtype=torch.float)) * jitter
    else:
        raise ValueError(f"unknown dropout pattern {pattern!r}")
    return p.clamp(0, 1).reshape(-1)


def parse_dropout_patterns(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"uniform,frames"`` -> the named patterns in :data:`DROPOUT_PATTERNS` order (so any
    spelling of all three is the default, bit for bit); raises ``ValueError`` on an unknown or
    empty list."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    bad = [n for n in names if n not in DROPOUT_PATTERNS]
    if bad or not names:
        raise ValueError(f"dropout patterns must be a comma list from {', '.join(DROPOUT_PATTERNS)}; "
                         f"got {text!r}")
    return tuple(p for p in DROPOUT_PATTERNS if p in names)


def dropout_keep(cells: torch.Tensor, token_dropout: float, patterns: tuple[str, ...],
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
    """One batch's dropout draw: which rows drop tokens (probability ``token_dropout``), each such
    row's pattern (uniformly among ``patterns``) and keep probabilities (:func:`dropout_plan`).
    ``cells`` is the batch's (B, T, GRID^2, 2) cell labels. Returns ``(drop, keep, pattern per row)``
    (``None`` for rows that keep everything). The random stream is the same for any ``patterns``
    of the same length; with all three it is the shipped model's."""
    rows = cells.shape[0]
    drop = torch.rand(rows, generator=generator) < token_dropout
    keep = torch.ones(rows, cells.shape[1] * GRID * GRID)
    used: list[str | None] = [None] * rows
    for row in drop.nonzero().flatten().tolist():
        pattern = patterns[int(torch.randint(len(patterns), (1,), generator=generator))]
        keep[row] = dropout_plan(cells[row], pattern, generator)
        used[row] = pattern
    return drop, keep, used


def _forward(model, batch: dict[str, torch.Tensor], dropout: dict | None = None):
    """LM logits, their labels and the visual tokens the LLM receives (the model's own feature
    path, then its LM; with ``dropout``, on a randomly shortened visual sequence)."""
    cfg = model.config
    feats = model.model.get_video_features(
        pixel_values_videos=batch["pixel_values_videos"], vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
    ).pooler_output
    ids = batch["input_ids"]
    embeds = model.get_input_embeddings()(ids)
    where = ids == cfg.video_token_index
    embeds = embeds.masked_scatter(where.unsqueeze(-1), feats.to(embeds.dtype))
    if dropout is None:
        out = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
        return out.logits, batch["lm_labels"], feats[:, :-1]  # drop the trailing newline token
    short = drop_visual_tokens(embeds, batch, cfg.video_token_index, **dropout)
    labels = short.pop("lm_labels")
    return model(**short).logits, labels, feats[:, :-1]


@torch.no_grad()
def evaluate(model, batcher: Batcher, items: list[QAItem], batch_size: int = 32) -> dict[str, float]:
    """Greedy first-token accuracy per question type (the answer is one word)."""
    model.eval()
    right: dict[str, list[bool]] = {t: [] for t in QUESTION_TYPES}
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        batch = batcher(chunk)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, _, _ = _forward(model, batch)
        pred = logits[torch.arange(len(chunk)), batch["answer_pos"]].argmax(-1)
        for it, p in zip(chunk, pred.tolist()):
            right[it.qtype].append(p == batcher.answer_id(it.answer))
    model.train()
    acc = {t: float(np.mean(v)) for t, v in right.items() if v}
    acc["overall"] = float(np.mean([x for v in right.values() for x in v]))
    return acc


class BatchStream(torch.utils.data.IterableDataset):
    """Training batches in a worker process, each from its own seed (so the run is reproducible)."""

    def __init__(self, checkpoint: Path, seed: int, steps: int, batch_size: int, single_object_steps: int):
        self.checkpoint, self.seed, self.steps = checkpoint, seed, steps
        self.batch_size, self.single_object_steps = batch_size, single_object_steps

    def __iter__(self):
        from sharpv.video.processing import TorchVideoInputs

        torch.set_num_threads(1)
        batcher = Batcher(TorchVideoInputs.from_pretrained(self.checkpoint, "llava-onevision"))
        for step in range(self.steps):
            batch_seed = int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0])
            if batch_seed in (HELDOUT_SEED, VALIDATION_SEED):
                batch_seed += 1
            items = generate(batch_seed, self.batch_size, frames=FRAMES)
            yield batcher(items, single_object=step < self.single_object_steps, noise=3.0,
                          rng=np.random.default_rng([self.seed, step, 1]))


def _lr(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def plot_curve(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [r for r in log if "accuracy" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    losses = [r for r in log if "loss" in r]
    a.plot([r["step"] for r in losses], [r["loss"] for r in losses], label="QA loss")
    a.plot([r["step"] for r in losses], [r["aux_loss"] for r in losses], label="vision probe loss")
    a.set_xlabel("step"), a.set_ylabel("loss"), a.set_yscale("log"), a.legend()
    for key in [*QUESTION_TYPES, "overall"]:
        b.plot([r["step"] for r in evals], [r["accuracy"][key] for r in evals], label=key,
               linewidth=2.5 if key == "overall" else 1.2)
    b.set_xlabel("step"), b.set_ylabel("validation accuracy"), b.set_ylim(0, 1), b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(out: Path, steps: int, batch_size: int = 18, lr: float = 2e-3, seed: int = 0, eval_every: int = 500,
          eval_items: int = 300, single_object_share: float = 0.15, aux_weight: float = 1.0, token_dropout: float = 0.7,
          threads: int = 0, dropout_patterns: str | tuple[str, ...] = DROPOUT_PATTERNS) -> dict:
    from sharpv.video.processing import TorchVideoInputs

    patterns = parse_dropout_patterns(dropout_patterns)

    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    model, parts = build_model(seed)
    model.generation_config.pad_token_id = parts.tokenizer.pad_token_id
    model.generation_config.eos_token_id = parts.tokenizer.eos_token_id
    parts.save(out)
    batcher = Batcher(TorchVideoInputs.from_pretrained(out, "llava-onevision"))
    probe = VisionProbe(model.config.text_config.hidden_size)
    params = list(model.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    val = generate(VALIDATION_SEED, eval_items, frames=FRAMES)
    stream = BatchStream(out, seed, steps, batch_size, int(single_object_share * steps))
    batches = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1, prefetch_factor=4)
    log: list[dict] = []
    start = time.time()
    run_loss = run_aux = 0.0
    model.train()
    for step, batch in enumerate(batches):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, warmup=300)
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 2]).generate_state(1)[0]))
        drop, keep, _ = dropout_keep(batch["cell_labels"], token_dropout, patterns, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, labels, feats = _forward(model, batch, dict(keep=keep, generator=gen) if drop.any() else None)
        qa = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        aux = probe.loss(feats, batch["cell_labels"])
        loss = qa + aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        run_loss += qa.item()
        run_aux += aux.item()
        if (step + 1) % 50 == 0:
            log.append(dict(step=step + 1, loss=run_loss / 50, aux_loss=run_aux / 50, seconds=time.time() - start))
            run_loss = run_aux = 0.0
            print(json.dumps(log[-1]), flush=True)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            acc = evaluate(model, batcher, val)
            log.append(dict(step=step + 1, accuracy=acc, seconds=time.time() - start))
            print(json.dumps(log[-1]), flush=True)
            model.save_pretrained(out)
            (out / "training_log.json").write_text(json.dumps(log, indent=1))
    seconds = time.time() - start
    summary = dict(
        steps=steps, batch_size=batch_size, lr=lr, seed=seed, single_object_share=single_object_share,
        aux_weight=aux_weight, token_dropout=token_dropout,
        dropout_patterns=list(patterns), frames=FRAMES, validation_seed=VALIDATION_SEED, validation_items=eval_items,
        final_validation_accuracy=log[-1]["accuracy"], wall_seconds=round(seconds, 1),
        parameters=sum(p.numel() for p in model.parameters()),
        hardware=dict(machine=platform.machine(), processor=platform.processor() or platform.machine(),
                      cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__),
        command=f"python -m sharpv.synthetic.train --out DIR --steps {steps} --batch-size {batch_size} --seed {seed} "
                f"--token-dropout {token_dropout}"
                + ("" if patterns == DROPOUT_PATTERNS else f" --dropout-patterns {','.join(patterns)}"),
    )
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    plot_curve(log, out / "learning_curve.png")
    return summary


def ship(train_dir: Path, dest: Path) -> Path:
    """Copy a training run (weights, processor files, training record) to ``dest``, laid out like the shipped model."""
    import shutil

    shutil.copytree(train_dir, dest, dirs_exist_ok=True)
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=7500)
    p.add_argument("--batch-size", type=int, default=18)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-items", type=int, default=300)
    p.add_argument("--single-object-share", type=float, default=0.15)
    p.add_argument("--token-dropout", type=float, default=0.7)
    p.add_argument("--dropout-patterns", default=",".join(DROPOUT_PATTERNS),
                   help="comma list of visual-token dropout patterns to draw from: uniform, frames, objects "
                        "(default: all three, the shipped model's setting)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--ship-to", type=Path, default=None, help="after training, copy the checkpoint here")
    a = p.parse_args(argv)
    try:
        patterns = parse_dropout_patterns(a.dropout_patterns)
    except ValueError as e:
        p.error(str(e))
    train(a.out, a.steps, a.batch_size, a.lr, a.seed, a.eval_every, a.eval_items, a.single_object_share,
          token_dropout=a.token_dropout, threads=a.threads, dropout_patterns=patterns)
    if a.ship_to is not None:
        ship(a.out, a.ship_to)


if __name__ == "__main__":
    main()
