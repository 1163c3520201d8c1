"""Peak resident memory of ``sharpv answer`` on a long clip, the measurement behind the README's
"Long videos" figures (peak RSS at 795 frames against 64 frames with the shipped model).

Writes the clip (795 frames of 768x576 at 25 fps, H.264: a red square crossing a static random
texture, the recipe of tests/test_far_apart_frames.py), then runs, for each frame count, in a fresh
process under ``/usr/bin/time -v`` with one thread (``OMP_NUM_THREADS=1``)::

    sharpv answer CLIP "what color is the square ?" --frames N --json

and records GNU time's "Maximum resident set size" (the whole process: Python, torch, the model,
decoding, the vision tower, the LLM), its elapsed time, the answer, and the provenance
(sharpv commit, versions) in ``OUT/results.json`` with every raw ``time -v`` report.

``--before COMMIT`` also runs the same command on the package source of an earlier commit
(``git archive COMMIT src``, imported through ``PYTHONPATH`` with today's installed packages): the
"before" figure, c69b614 being the last commit before frames were resized as decoded and the vision
tower ran in chunks (2bbd487).

    python tools/measure_answer_rss.py --frames 64,795 --before c69b614 --out bench/answer-rss-cpu

About a minute on this project's 2-core CPU. ``--model NAME`` measures another model (issue 25's
target: ``--model smollm2-dinov2 --frames 16 --threads 2`` within 30 s and 2 GB), ``--threads`` sets
each run's thread count::

    python tools/measure_answer_rss.py --model smollm2-dinov2 --frames 16 --threads 2 --out bench/answer-smollm2-dinov2-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

QUESTION = "what color is the square ?"


def write_clip(path: Path, frames: int = 795, height: int = 576, width: int = 768) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            frame = background.copy()
            x = (i * 3) % 700
            frame[200:300, x : x + 60] = (255, 0, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure(clip: Path, frames: int, source: Path | None = None, label: str = "HEAD", model: str | None = None,
            threads: int = 1) -> dict:
    """One fresh process under /usr/bin/time -v; ``source``: an older package's ``src`` folder to import instead;
    ``model``: ``--model`` of the command (default: the shipped model)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if source is None:
        argv = [str(Path(sys.executable).with_name("sharpv"))]
    else:
        argv = [sys.executable, "-c", "import sys; sys.argv[0] = 'sharpv'; from sharpv.cli import _entry; _entry()"]
        env["PYTHONPATH"] = str(source)
    extra = ["--model", model] if model else []
    argv += ["answer", str(clip), QUESTION, "--frames", str(frames), *extra, "--json"]
    done = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    report = done.stderr[done.stderr.find("\tCommand being timed"):]
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", report).group(1)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return {"code": label, "frames": frames, "model": model or "the shipped model",
            "command": f"OMP_NUM_THREADS={threads} /usr/bin/time -v sharpv answer CLIP "
                       f"\"{QUESTION}\" --frames {frames}{' --model ' + model if model else ''} --json",
            "max_rss_kib": kib, "max_rss_mb": round(kib * 1024 / 1e6, 1), "max_rss_mib": round(kib / 1024, 1),
            "elapsed": elapsed, "answer": answer.get("answer"),
            "visual_tokens_kept": answer.get("visual_tokens_kept"), "time_v": report}


def markdown(result: dict) -> str:
    from sharpv.harness.provenance import describe

    lines = [f"# {result['what']}", "", f"Clip: {result['clip']}.", "",
             "| code | frames | peak RSS MB | peak RSS MiB | elapsed | answer | visual tokens kept |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['code'][:18]} | {r['frames']} | {r['max_rss_kib'] * 1024 / 1e6:.0f} | {r['max_rss_kib'] / 1024:.0f} | "
              f"{r['elapsed']} | {r['answer']} | {r['visual_tokens_kept']} |" for r in result["runs"]]
    if result["ratio_795_over_64"]:
        lines += ["", f"795 frames over 64 frames (HEAD): {result['ratio_795_over_64']:.2f}x."]
    lines += ["", describe(result["provenance"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="64,795")
    parser.add_argument("--before", help="also run the package source of this earlier commit")
    parser.add_argument("--model", help="--model of sharpv answer (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (default 1)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from sharpv.harness.provenance import Clock, provenance

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip795.mp4"
        write_clip(clip)
        runs = [measure(clip, int(n), model=args.model, threads=args.threads) for n in args.frames.split(",")]
        if args.before:
            old = Path(tmp) / "before"
            old.mkdir()
            repo = Path(__file__).resolve().parents[1]
            archive = subprocess.run(["git", "-C", str(repo), "archive", args.before, "src"], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            commit = subprocess.run(["git", "-C", str(repo), "rev-parse", args.before], capture_output=True, text=True,
                                    check=True).stdout.strip()
            runs += [measure(clip, int(n), old / "src", f"before: {commit}", args.model, args.threads)
                     for n in args.frames.split(",")]
    by = {r["frames"]: r for r in runs if r["code"] == "HEAD"}
    result = {
        "what": "peak resident set (GNU time's Maximum resident set size) of sharpv answer on a generated 795-frame "
                f"768x576 H.264 clip with {'--model ' + args.model if args.model else 'the shipped model'}, "
                f"{args.threads} thread{'s' if args.threads != 1 else ''}, one fresh process per frame count",
        "clip": "795 frames, 768x576, 25 fps, libx264 ultrafast: a red 60x100 square crossing a static random texture "
                "(numpy seed 0), tools/measure_answer_rss.py:write_clip",
        "runs": runs,
        "ratio_795_over_64": round(by[795]["max_rss_kib"] / by[64]["max_rss_kib"], 3) if {64, 795} <= set(by) else None,
        "provenance": provenance(clock),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
