"""``sharpv stage2``: is stage 2's decision better than withdrawing blindly? Paired accuracy on the
same questions of:

- **dense**;
- **SharpV stage 2** (stage 1 keeps every token, ``keep_ratio=1``): the visual tokens leave at the
  first layer >= ``kv_min_layer`` whose s_l < M, decided per prompt (the paper's rule, raw cosine);
- **SharpV stage 2, a config's measure** (optional ``--config``, e.g. ``sharpv similarity``'s
  config with the massive channels ignored);
- **VTW at SharpV's layer**: every prompt withdraws at the median of the layers SharpV chose;
- **random layers**: each prompt withdraws at the layer SharpV chose for *another* prompt (a seeded
  permutation), so the layers are distributed exactly as SharpV's but not chosen by the prompt's own
  s_l: if SharpV is no better than this, its per-prompt decision carries no information;
- **VTW sweep**: withdrawal at fixed layers, the accuracy-against-depth curve the others sit on.

For every arm: accuracy with a Wilson interval, the paired difference against SharpV and against
dense (bootstrap over the same questions), the share of dense visual-token compute the layers spend
(``equivalent_retention``) and the KV cache kept after the prefill. Every answer is written.
Stage 1 is off in every arm, so the differences are stage 2's alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

Log = Callable[[str], None]
OUTPUTS = ("stage2.json", "stage2.md", "stage2.png")


@dataclass
class Arm:
    label: str
    kind: str  # "dense", "sharpv", "vtw", "random"
    settings: dict


def _method(arm: Arm, layer: int | None = None):
    from sharpv.methods import create

    if arm.kind == "dense":
        return create("dense")
    if arm.kind == "sharpv":
        return create("sharpv", **{"keep_ratio": 1.0, **arm.settings})
    if layer is None:  # a random arm whose donor prompt never withdrew: nothing withdrawn
        return create("dense")
    return create("vtw", layer=layer, keep_ratio=1.0)


def _row(gen, example, is_correct) -> dict:
    s = gen.stats
    return {"answer": gen.text, "right": bool(is_correct(gen.text, example)), "layer": s.kv_withdraw_layer,
            "compute_share": round(float(s.equivalent_retention), 4),
            "kv_share": round(s.kv_cache_bytes / s.kv_cache_bytes_dense, 4) if s.kv_cache_bytes_dense else 1.0,
            "prefill_seconds": round(gen.prefill_seconds, 4)}


def study(model, processor, examples: Sequence[Any], *, threshold: float = 0.2, min_layer: int = 2,
          config_settings: dict | None = None, config_label: str | None = None, sweep: Sequence[int] = (),
          max_new_tokens: int = 4, seed: int = 0, log: Log = lambda _: None) -> dict:
    """Run every arm on ``examples`` (``sharpv.harness.evaluate.Example`` with frames)."""
    from sharpv.adapters import precompute_video_features
    from sharpv.answer import generate_answer
    from sharpv.harness.evaluate import is_correct
    from sharpv.video import SampledVideo, build_inputs

    start = time.monotonic()
    stage2 = {"kv_threshold": threshold, "kv_min_layer": min_layer}
    first = [Arm("dense", "dense", {}), Arm("sharpv stage 2", "sharpv", dict(stage2))]
    if config_settings:
        first.append(Arm(config_label or "sharpv stage 2 (config)", "sharpv", {**stage2, **config_settings}))
    inputs = []
    for ex in examples:
        f = ex.frames
        video = SampledVideo(f, list(range(len(f))), len(f), 8.0)
        inputs.append(precompute_video_features(model, build_inputs(processor, ex.prompt(), video)))
    rows: dict[str, list[dict]] = {}
    done = 0
    total = len(examples) * (len(first) + 2 + len(sweep))

    def run(arm: Arm, layers: Sequence[int | None] | None = None) -> None:
        nonlocal done
        out = []
        for i, ex in enumerate(examples):
            gen = generate_answer(model, processor, inputs[i], _method(arm, None if layers is None else layers[i]),
                                  max_new_tokens=max_new_tokens)
            out.append(_row(gen, ex, is_correct))
            done += 1
            if done % 50 == 0:
                log(f"{done}/{total} answers ({time.monotonic() - start:.0f} s)")
        rows[arm.label] = out

    for arm in first:
        run(arm)
    chosen = [r["layer"] for r in rows["sharpv stage 2"]]
    fired = [c for c in chosen if c is not None]
    median_layer = int(np.median(fired)) if fired else None
    controls = []
    if median_layer is not None:
        controls.append((Arm(f"VTW at layer {median_layer} (SharpV's median)", "vtw", {"layer": median_layer}),
                         [median_layer] * len(examples)))
        perm = np.random.default_rng(seed).permutation(len(examples))
        controls.append((Arm("random layers (SharpV's, permuted)", "random", {"permutation_seed": seed}),
                         [chosen[j] for j in perm]))
    else:
        total -= 2 * len(examples)
    if config_settings:  # the same two controls for the config's measure: is its own decision informative?
        label = first[2].label
        own = [r["layer"] for r in rows[label]]
        own_fired = [c for c in own if c is not None]
        if own_fired:
            own_median = int(np.median(own_fired))
            perm = np.random.default_rng(seed + 1).permutation(len(examples))
            controls.append((Arm(f"VTW at layer {own_median} (the config's median)", "vtw", {"layer": own_median}),
                             [own_median] * len(examples)))
            controls.append((Arm("random layers (the config's, permuted)", "random", {"permutation_seed": seed + 1}),
                             [own[j] for j in perm]))
            total += 2 * len(examples)
    for layer in sweep:
        controls.append((Arm(f"VTW at layer {layer}", "vtw", {"layer": layer}), [layer] * len(examples)))
    for arm, layers in controls:
        run(arm, layers)
    arms = first + [a for a, _ in controls]
    return {"arms": [{"label": a.label, "kind": a.kind, "settings": a.settings} for a in arms],
            "sharpv_median_layer": median_layer, "threshold": threshold, "min_layer": min_layer,
            "summary": summarise(rows, "sharpv stage 2"),
            "questions": [{"id": ex.id, "question": ex.question, "answer": ex.answer, "type": ex.type,
                           **{a.label: rows[a.label][i] for a in arms}} for i, ex in enumerate(examples)],
            "seconds": round(time.monotonic() - start, 1)}


def summarise(rows: dict[str, list[dict]], reference: str) -> dict:
    from sharpv.harness.evaluate import paired_difference, wilson

    out = {}
    ref = [r["right"] for r in rows[reference]]
    dense = [r["right"] for r in rows["dense"]]
    for label, rs in rows.items():
        right = [r["right"] for r in rs]
        lo, hi = wilson(sum(right), len(right))
        vs_ref = paired_difference(right, ref)
        vs_dense = paired_difference(right, dense)
        layers = [r["layer"] for r in rs if r["layer"] is not None]
        out[label] = {"accuracy": sum(right) / len(right), "ci95": [lo, hi], "n": len(right),
                      "minus_sharpv": {"mean": vs_ref[0], "ci95": [vs_ref[1], vs_ref[2]]},
                      "minus_dense": {"mean": vs_dense[0], "ci95": [vs_dense[1], vs_dense[2]]},
                      "compute_share": float(np.mean([r["compute_share"] for r in rs])),
                      "kv_share": float(np.mean([r["kv_share"] for r in rs])),
                      "withdrew": len(layers),
                      "median_layer": float(np.median(layers)) if layers else None}
    return out


def report(record: dict) -> str:
    s = record["summary"]
    lines = [f"Stage 2 against blind withdrawal: {len(record['questions'])} questions, M = {record['threshold']}, "
             f"kv_min_layer = {record['min_layer']}, stage 1 off (every visual token enters the LLM).", "",
             "| arm | accuracy [95%] | minus SharpV stage 2 [paired 95%] | minus dense [paired 95%] | "
             "withdrew (median layer) | visual compute | KV kept |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, v in s.items():
        ms, md = v["minus_sharpv"], v["minus_dense"]
        where = f"{v['withdrew']} ({v['median_layer']:g})" if v["withdrew"] else "0"
        lines.append(f"| {label} | {v['accuracy']:.1%} [{v['ci95'][0]:.1%}, {v['ci95'][1]:.1%}] | "
                     f"{ms['mean']:+.1%} [{ms['ci95'][0]:+.1%}, {ms['ci95'][1]:+.1%}] | "
                     f"{md['mean']:+.1%} [{md['ci95'][0]:+.1%}, {md['ci95'][1]:+.1%}] | {where} | "
                     f"{v['compute_share']:.1%} | {v['kv_share']:.1%} |")
    lines += ["", "Visual compute: the share of dense visual-token layer compute (mean over questions); "
              "KV kept: the prefill's cache against the unpruned prompt's."]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = record["summary"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    sweep = sorted((a["settings"]["layer"], a["label"]) for a in record["arms"]
                   if a["kind"] == "vtw" and a["label"].startswith("VTW at layer") and "median" not in a["label"])
    if sweep:
        xs = [layer for layer, _ in sweep]
        acc = [s[label]["accuracy"] for _, label in sweep]
        lo = [s[label]["ci95"][0] for _, label in sweep]
        hi = [s[label]["ci95"][1] for _, label in sweep]
        ax.plot(xs, acc, marker="o", color="0.4", label="VTW at a fixed layer")
        ax.fill_between(xs, lo, hi, color="0.4", alpha=0.15)
    ax.axhline(s["dense"]["accuracy"], color="black", ls="--", lw=1, label="dense")
    marked = [a for a in record["arms"] if a["kind"] in ("sharpv", "random") or "median" in a["label"]]
    for k, a in enumerate(marked):  # side by side around their median layer, so none hides another
        v = s[a["label"]]
        x = (v["median_layer"] if v["median_layer"] is not None else -0.5) + (k - (len(marked) - 1) / 2) * 0.15
        ax.errorbar([x], [v["accuracy"]], yerr=[[v["accuracy"] - v["ci95"][0]], [v["ci95"][1] - v["accuracy"]]],
                    marker="s", capsize=3, ls="none", label=f"{a['label']} (median layer)")
    ax.set_xlabel("withdrawal layer")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Withdrawing every visual token at a layer", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_job(model_dir: Path, out: Path | None, *, n: int = 300, frames: int = 8, seed: int | None = None,
            threshold: float = 0.2, min_layer: int = 2, config: Path | None = None, sweep: Sequence[int] = (),
            max_new_tokens: int = 4, log: Log = lambda _: None) -> dict:
    from sharpv.answer import load_model
    from sharpv.harness.evaluate import Example
    from sharpv.harness.provenance import Clock, provenance
    from sharpv.methods import load_config
    from sharpv.synthetic.dataset import generate
    from sharpv.synthetic.model import HELDOUT_SEED

    clock = Clock()
    settings, label = None, None
    if config is not None:
        cfg = load_config(config)
        if cfg.method != "sharpv":
            from sharpv.errors import SharpVError

            raise SharpVError(f"--config {config} configures {cfg.method}; stage 2's study takes a sharpv config")
        settings = {k: v for k, v in cfg.settings.items() if k.startswith("kv")}
        label = f"sharpv stage 2 ({cfg.display_label})"
    model, processor = load_model(model_dir)
    from sharpv.harness.evaluate import render_size

    size = render_size(model)
    seed = HELDOUT_SEED if seed is None else seed
    examples = [Example(it.id, it.question, it.answer, frames=it.frames(), type=it.qtype, item=it)
                for it in generate(seed, n, frames=frames, size=size)]
    record = study(model, processor, examples, threshold=threshold, min_layer=min_layer, config_settings=settings,
                   config_label=label, sweep=sweep, max_new_tokens=max_new_tokens, log=log)
    record = {"model": str(model_dir), "set": {"seed": seed, "questions": n, "frames": frames, "render_size": size},
              **record, "provenance": provenance(clock)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "stage2.json").write_text(json.dumps(record, indent=1) + "\n")
        (out / "stage2.md").write_text(report(record))
        plot(record, out / "stage2.png", f"{Path(str(model_dir)).name}: stage 2 against blind withdrawal")
    return record
