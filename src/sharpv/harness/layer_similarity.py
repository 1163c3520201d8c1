"""``sharpv similarity``: stage 2's per-layer similarity ``s_l`` measured on a model.

SharpV's second stage withdraws the visual tokens at the first layer where the mean cosine between
their hidden states and their own input embeddings, ``s_l``, falls below M (0.2). Whether that rule
means anything on a given language model is an empirical question, which this job answers with
numbers, no attention weights read:

- ``s_l`` per layer over a set of videos (mean, spread), as the stage sees it: the hidden states
  entering each decoder layer (forward pre-hooks on the model's own layers, dense prefill);
- the model's *massive-activation channels* (Sun et al., 2024: a few channels, hundreds to
  thousands of times larger than the rest, in nearly every token), found once on calibration
  videos (a seed distinct from the measured set), and the share of the visual tokens' squared
  norm they hold;
- three attention-free alternatives: the cosine with those channels left out (SharpV's
  ``kv_ignore_channels``), the cosine after the layer's input normalization (its per-channel
  scale applied to both vectors; the RMS division cancels in a cosine), and the cosine with the
  hidden states entering an early layer R instead of the input embeddings (SharpV's
  ``kv_reference_layer``; layers before R count as 1);
- where each measure crosses M (the first layer at or after ``kv_min_layer``), per video.

It writes ``similarity.json`` (every video's curves, the summary, the channels, provenance),
``similarity.md``, ``similarity.png`` (the paper's figure: ``s_l`` against depth, mean and
10-90% band per measure) and ``config.json``, a SharpV config with the channels found, for
``--config`` in ``answer``, ``eval``, ``bench``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sharpv.core.kv import channel_magnitudes, massive_channels, token_similarity

Log = Callable[[str], None]

MEASURES = ("cosine", "without_massive", "normed", "from_reference")
LABELS = {
    "cosine": "cosine (the paper's s_l)",
    "without_massive": "cosine without the massive channels",
    "normed": "cosine after the layer's input norm scale",
    "from_reference": "cosine with the reference layer's input (kv_reference_layer)",
}
OUTPUTS = ("similarity.json", "similarity.md", "similarity.png", "config.json")


@dataclass
class Trace:
    """One prompt's per-layer numbers (index = decoder layer, hidden states entering it)."""

    curves: dict[str, list[float]] = field(default_factory=dict)  # measure -> s_l per layer
    massive_share: list[float] = field(default_factory=list)  # visual tokens' squared-norm share of the channels
    peaks: list[torch.Tensor] = field(default_factory=list)  # per layer (d,) max |h| over valid tokens
    medians: list[float] = field(default_factory=list)  # per layer median |h| over valid tokens and channels


def _norm_scale(layer: torch.nn.Module) -> torch.Tensor | None:
    norm = getattr(layer, "input_layernorm", None)
    weight = getattr(norm, "weight", None)
    return weight.detach().float() if isinstance(weight, torch.Tensor) and weight.ndim == 1 else None


@torch.no_grad()
def trace(model, adapter, inputs: dict[str, Any], ignore: torch.Tensor | None, reference_layer: int = 1) -> Trace:
    """Run a dense prefill of ``inputs`` (processor outputs, batch of one) and measure every decoder
    layer's entering hidden states against the visual tokens' input embeddings (and, for
    ``from_reference``, against their hidden states entering ``reference_layer``)."""
    layers = adapter.decoder_layers()
    entering: list[torch.Tensor | None] = [None] * len(layers)

    def hook(i):
        def pre(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            entering[i] = hidden.detach()
        return pre

    handles = [layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        model(**inputs, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    ids = inputs["input_ids"]
    visual = ids == adapter.video_token_id
    mask = inputs.get("attention_mask")
    valid = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
    if entering[0] is None or not visual.any():
        from sharpv.errors import SharpVError

        raise SharpVError("the prompt reached no decoder layer with visual tokens; is this a video prompt?")
    embeds = entering[0]
    out = Trace(curves={m: [] for m in MEASURES})
    e = embeds[visual].float()
    reference = entering[min(reference_layer, len(entering) - 1)][visual].float()
    for i, hidden in enumerate(entering):
        h = hidden[visual].float()
        out.curves["cosine"].append(float(token_similarity(h, e).mean()))
        out.curves["from_reference"].append(1.0 if i < reference_layer else float(token_similarity(h, reference).mean()))
        out.curves["without_massive"].append(float(token_similarity(h, e, ignore=ignore).mean()))
        scale = _norm_scale(layers[i])
        out.curves["normed"].append(float(token_similarity(h * scale, e * scale).mean()) if scale is not None else float("nan"))
        if ignore is not None and ignore.numel():
            out.massive_share.append(float(((h[:, ignore] ** 2).sum(-1) / (h ** 2).sum(-1).clamp_min(1e-12)).mean()))
        else:
            out.massive_share.append(0.0)
        out.peaks.append(channel_magnitudes(hidden, valid).cpu())
        out.medians.append(float(hidden[valid].float().abs().median()))
    return out


def first_crossing(curve: Sequence[float], threshold: float, min_layer: int) -> int | None:
    """Stage 2's withdrawal layer for one prompt: the first layer >= ``min_layer`` with s_l < M."""
    for i, s in enumerate(curve):
        if i >= min_layer and s < threshold:
            return i
    return None


def find_massive(traces: Sequence[Trace], ratio: float, floor: float) -> tuple[list[int], list[dict]]:
    """The channels that are massive at any layer >= 1 on the calibration traces (peaks: the max over
    prompts; medians: their mean), and per layer the peak and the median for the record."""
    n_layers = len(traces[0].peaks)
    found: set[int] = set()
    per_layer = []
    for i in range(n_layers):
        peaks = torch.stack([t.peaks[i] for t in traces]).amax(0)
        median = float(np.mean([t.medians[i] for t in traces]))
        chans = massive_channels(peaks, median, ratio=ratio, floor=floor).tolist() if i >= 1 else []
        found.update(chans)
        top = torch.topk(peaks, min(4, peaks.numel()))
        per_layer.append({"layer": i, "median_abs": round(median, 4), "massive": chans,
                          "top_channels": [{"channel": int(c), "peak_abs": round(float(v), 2)} for v, c in zip(top.values, top.indices)]})
    return sorted(found), per_layer


def summarise(traces: Sequence[Trace], threshold: float, min_layer: int) -> dict:
    n_layers = len(traces[0].curves["cosine"])
    out: dict[str, Any] = {"layers": n_layers, "measures": {}}
    for m in MEASURES:
        curves = np.array([t.curves[m] for t in traces], dtype=float)
        if np.isnan(curves).all():
            continue
        cross = [first_crossing(c, threshold, min_layer) for c in curves]
        fired = [c for c in cross if c is not None]
        out["measures"][m] = {
            "label": LABELS[m],
            "mean": [round(float(x), 4) for x in curves.mean(0)],
            "std": [round(float(x), 4) for x in curves.std(0)],
            "p10": [round(float(x), 4) for x in np.percentile(curves, 10, axis=0)],
            "p90": [round(float(x), 4) for x in np.percentile(curves, 90, axis=0)],
            "withdraw_layer": {"fired": len(fired), "of": len(cross),
                               "median": float(np.median(fired)) if fired else None,
                               "min": min(fired) if fired else None, "max": max(fired) if fired else None,
                               "counts": {str(k): cross.count(k) for k in sorted(set(fired))}},
            "layers_below_threshold": int((curves.mean(0) < threshold).sum()),
            "layers_below_0.1": int((curves.mean(0) < 0.1).sum()),
        }
    share = np.array([t.massive_share for t in traces], dtype=float)
    out["massive_share_of_visual_norm"] = [round(float(x), 4) for x in share.mean(0)]
    return out


def measure(model, processor, videos: Sequence[tuple[str, Any, str]], calibration: Sequence[tuple[str, Any, str]], *,
            threshold: float = 0.2, min_layer: int = 2, ratio: float = 100.0, floor: float = 50.0,
            reference_layer: int = 1, log: Log = lambda _: None) -> dict:
    """The whole study: massive channels from ``calibration``, then every measure on ``videos``
    (each ``(id, SampledVideo, question)``)."""
    from sharpv.adapters import adapter_for
    from sharpv.answer import inputs_on
    from sharpv.video import build_inputs

    adapter = adapter_for(model)
    start = time.monotonic()

    def run(items, ignore, what):
        out = []
        for k, (_, video, question) in enumerate(items):
            out.append(trace(model, adapter, inputs_on(model, build_inputs(processor, question, video)), ignore,
                             reference_layer))
            if (k + 1) % 8 == 0 or k + 1 == len(items):
                log(f"{what}: {k + 1}/{len(items)} videos ({time.monotonic() - start:.0f} s)")
        return out

    cal = run(calibration, None, "calibration (massive channels)")
    channels, per_layer = find_massive(cal, ratio, floor)
    log(f"massive channels: {channels or 'none'}")
    ignore = torch.tensor(channels, dtype=torch.long) if channels else None
    traces = run(videos, ignore, "measured set")
    summary = summarise(traces, threshold, min_layer)
    return {
        "threshold": threshold, "min_layer": min_layer, "reference_layer": reference_layer,
        "massive_channels": {"channels": channels, "criterion": {"ratio_to_median": ratio, "floor": floor,
                                                                  "layers": "any layer >= 1",
                                                                  "found_on": len(calibration)},
                             "per_layer": per_layer},
        "summary": summary,
        "videos": [{"id": vid, "curves": t.curves, "massive_share": t.massive_share}
                   for (vid, _, _), t in zip(videos, traces)],
        "seconds": round(time.monotonic() - start, 1),
    }


def report(record: dict) -> str:
    s = record["summary"]
    m = s["measures"]
    lines = [f"Stage 2's similarity per layer: {len(record['videos'])} videos, M = {record['threshold']}, "
             f"kv_min_layer = {record['min_layer']}, reference layer {record.get('reference_layer', 1)}.", "",
             f"Massive channels (found on {record['massive_channels']['criterion']['found_on']} calibration videos): "
             f"{', '.join(map(str, record['massive_channels']['channels'])) or 'none'}.", "",
             "| layer | " + " | ".join(LABELS[k] for k in m) + " | massive share of visual norm |",
             "| --- |" + " --- |" * (len(m) + 1)]
    for i in range(s["layers"]):
        cells = [f"{m[k]['mean'][i]:.3f} [{m[k]['p10'][i]:.3f}, {m[k]['p90'][i]:.3f}]" for k in m]
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {s['massive_share_of_visual_norm'][i]:.2f} |")
    lines += ["", "Values: mean [10th, 90th percentile] over the videos.", "",
              "| measure | fires on | withdrawal layer: median [min, max] | layers with mean below M | below 0.1 |",
              "| --- | --- | --- | --- | --- |"]
    for k, v in m.items():
        w = v["withdraw_layer"]
        where = f"{w['median']:g} [{w['min']}, {w['max']}]" if w["fired"] else "never"
        lines.append(f"| {LABELS[k]} | {w['fired']}/{w['of']} | {where} | {v['layers_below_threshold']} | {v['layers_below_0.1']} |")
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = record["summary"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    x = np.arange(s["layers"])
    for k, v in s["measures"].items():
        line, = ax.plot(x, v["mean"], marker="o", ms=3, label=LABELS[k])
        ax.fill_between(x, v["p10"], v["p90"], color=line.get_color(), alpha=0.18)
    ax.axhline(record["threshold"], color="black", ls="--", lw=1, label=f"M = {record['threshold']}")
    ax.set_xlabel("decoder layer (hidden states entering it)")
    ax.set_ylabel("mean cos(visual hidden state, its reference)")
    ax.set_title(title or "Stage 2's s_l per layer (mean, 10-90% band)", fontsize=10)
    ax.set_ylim(min(-0.1, min(min(v["p10"]) for v in s["measures"].values()) - 0.02), 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(record: dict, out: Path, title: str = "") -> None:
    from sharpv.methods import write_config

    out.mkdir(parents=True, exist_ok=True)
    (out / "similarity.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "similarity.md").write_text(report(record))
    plot(record, out / "similarity.png", title)
    channels = record["massive_channels"]["channels"]
    write_config(out / "config.json", "sharpv", {"kv_ignore_channels": channels},
                 label="sharpv, massive channels ignored" if channels else "sharpv",
                 calibration={"what": "kv_ignore_channels: the massive-activation channels found by sharpv similarity",
                              "criterion": record["massive_channels"]["criterion"],
                              "model": record.get("model")})


def synthetic_videos(seed: int, n: int, frames: int, size: int) -> list[tuple[str, Any, str]]:
    """``n`` videos of the synthetic set ``seed`` rendered at ``size`` px, each with its question."""
    from sharpv.synthetic.dataset import generate
    from sharpv.video import SampledVideo

    out = []
    for it in generate(seed, n, frames=frames, size=size):
        f = it.frames()
        out.append((it.id, SampledVideo(f, list(range(len(f))), len(f), 8.0), it.question))
    return out


def run_job(model_dir: Path, out: Path | None, *, n: int = 64, calibration_n: int = 16, frames: int = 8,
            video_files: Sequence[Path] = (), question: str = "Describe the video.", seed: int | None = None,
            calibration_seed: int | None = None, threshold: float = 0.2, min_layer: int = 2,
            ratio: float = 100.0, floor: float = 50.0, reference_layer: int = 1, log: Log = lambda _: None) -> dict:
    """Load the model, pick the videos (the synthetic held-out set rendered at the vision tower's
    frame size, or ``video_files``), measure, and write the outputs into ``out``."""
    from sharpv.answer import load_model
    from sharpv.harness.calibrate import CALIBRATION_SEED
    from sharpv.harness.provenance import Clock, provenance
    from sharpv.synthetic.model import HELDOUT_SEED
    from sharpv.video import read_video_for

    clock = Clock()
    model, processor = load_model(model_dir)
    from sharpv.harness.evaluate import render_size

    size = render_size(model)
    seed = HELDOUT_SEED if seed is None else seed
    calibration_seed = CALIBRATION_SEED if calibration_seed is None else calibration_seed
    calibration = synthetic_videos(calibration_seed, calibration_n, frames, size)
    if video_files:
        videos = [(str(p), read_video_for(processor, p, frames), question) for p in video_files]
        measured = {"files": [str(p) for p in video_files], "frames": frames, "question": question}
    else:
        videos = synthetic_videos(seed, n, frames, size)
        measured = {"synthetic_seed": seed, "videos": n, "frames": frames, "render_size": size}
    record = measure(model, processor, videos, calibration, threshold=threshold, min_layer=min_layer,
                     ratio=ratio, floor=floor, reference_layer=reference_layer, log=log)
    record = {"model": str(model_dir), "measured": measured,
              "calibration": {"synthetic_seed": calibration_seed, "videos": calibration_n, "frames": frames,
                              "render_size": size},
              **record, "provenance": provenance(clock)}
    if out is not None:
        write(record, out, title=f"{Path(str(model_dir)).name}: stage 2's s_l per layer")
    return record
