"""Per-object coverage of the counting questions, the numbers behind docs/evaluation.md's "SharpV
counts worse than random on both" paragraph: on the 200 counting questions of the held-out set
(seed 1234, n 1200) at budget 0.2, for SharpV, random and EVS on both shipped models, the share of
the questions' objects with at least one kept cell, and per object the frames it is shown in and
its kept cells (``sharpv.synthetic.evidence.object_coverage``).

    python tools/object_coverage.py --out eval/object-coverage

One thread; about a minute per model on this project's 2-core CPU. Writes ``OUT/results.json``
(with the provenance: sharpv commit, versions, wall time) and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = ("sharpv", "random", "evs")
MODELS = ("mixed-dropout", "uniform-dropout")


def coverage(model_name: str, budget: float, methods: tuple[str, ...]) -> dict:
    import numpy as np
    import torch

    from sharpv import create
    from sharpv.answer import load_model
    from sharpv.harness.evaluate import build_inputs, synthetic_examples
    from sharpv.synthetic.evidence import object_coverage
    from sharpv.synthetic.model import shipped_model_path

    model, processor = load_model(shipped_model_path(model_name))
    counting = [e for e in synthetic_examples(1234, 1200, frames=16) if e.type == "count"]
    out = {}
    for name in methods:
        per_object = []
        for e in counting:
            with create(name, keep_ratio=budget)(model) as handle, torch.inference_mode():
                model(**build_inputs(processor, e.prompt(), e.load(16, processor)))
            per_object += object_coverage(e.item, handle.stats.videos[0].keep.numpy())
        frames, cells = np.array(per_object).T
        out[name] = {"questions": len(counting), "objects": len(per_object),
                     "objects_seen_share": float(np.mean(frames > 0)),
                     "frames_per_object": float(frames.mean()), "cells_per_object": float(cells.mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch

    from sharpv.harness.provenance import Clock, describe, provenance

    torch.set_num_threads(1)
    clock = Clock()
    results = {model: coverage(model, args.budget, METHODS) for model in MODELS}
    payload = {"what": "per-object coverage of the 200 counting questions of the held-out set (seed 1234, n 1200, "
                       f"16 frames) at budget {args.budget}", "budget": args.budget, "results": results,
               "provenance": provenance(clock)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [f"# {payload['what']}", "", "| model | method | objects | seen (>= 1 kept cell) | frames per object | "
             "kept cells per object |", "|---|---|---|---|---|---|"]
    for model, per in results.items():
        lines += [f"| {model} | {m} | {r['objects']} | {r['objects_seen_share']:.3f} | {r['frames_per_object']:.2f} | "
                  f"{r['cells_per_object']:.2f} |" for m, r in per.items()]
    lines += ["", describe(payload["provenance"]) + "."]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
