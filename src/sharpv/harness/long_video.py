"""`sharpv bench --long-video`: peak memory and time to first token against the frame count, through
the real vision tower, each configuration in a fresh process with a time cap and a memory cap.

Modes (every one runs the model's own vision tower on random pixels, ``chunk_frames`` frames a call):

- ``dense``: the whole video's pixels held (as a processor returns them), encoded, then one
  prefill of every visual token.
- ``sharpv-oneshot``: the same, with SharpV's adaptive stage 1 (``kv=False``) pruning inside that
  one prefill.
- ``sharpv-chunked``: frames arrive ``chunk_frames`` at a time; each chunk is encoded, pruned by
  stage 1 (exact, causal: frame t needs only frames t-1 and t) and its kept tokens prefilled into
  one cache (:class:`~sharpv.streaming.ChunkedPrefill`); pixels and features of a chunk are freed
  before the next arrives. The question then costs only its own tokens' prefill.

Per run: TTFT (vision + pruning + prefill + the first token's logits; making the synthetic pixels
is not timed: it stands for decoding, which all modes share), the time from the question to the
first token (for ``sharpv-chunked``: the text after the video, fed by ``finish()``, and the last
prompt token's forward; for the one-shot modes everything happens after the question, so it equals
TTFT), peak memory (peak resident set on CPU, reset after the model is loaded and warmed up; max
allocated on CUDA) and the memory that was already in use at that reset.

Each (frames, mode) runs in its own ``python -m sharpv.harness.long_video`` process so that peaks do
not mix. A run past ``max_seconds`` (counted once the model is loaded) or past ``max_memory``
(resident set, watched from outside on CPU; a CUDA allocation limit inside) is killed and recorded
as "did not finish"; larger frame counts of that mode are then not started.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from sharpv.harness.report import write_json_atomic

MODES = ("dense", "sharpv-oneshot", "sharpv-chunked")
DID_NOT_FINISH = "did not finish"
#: seconds a worker may take to start and load (or build) the model, before the run's own cap starts
LOAD_SECONDS = 900.0
#: the fields every record has (None where a run did not finish or a field does not apply)
RECORD_FIELDS = (
    "frames", "mode", "status", "reason", "progress", "visual_tokens_in", "visual_tokens_kept", "kept_share",
    "sequence_length", "vision_seconds", "pruning_seconds", "prefill_seconds", "ttft_seconds",
    "question_to_first_token_seconds", "question_share_of_oneshot_ttft", "question_share_of_dense_ttft",
    "first_token", "kv_cache_bytes", "peak_memory_bytes", "baseline_memory_bytes", "peak_over_baseline_bytes",
    "load_seconds", "run_seconds", "load_average",
)


@dataclass
class Job:
    """What one worker process runs (JSON in a file)."""

    frames: int
    mode: str
    chunk_frames: int
    dtype: str
    device: str
    noise: float
    warmup: int
    model_dir: str | None
    shape: str | None
    tokens_per_frame: int
    vision_layers: int | None
    max_seconds: float | None
    max_memory_bytes: int | None
    result_path: str
    ready_path: str


class OverCap(Exception):
    """The run went past its time cap."""


def check_options(modes: str, chunk_frames: int, max_seconds: float | None, max_memory_gib: float | None) -> list[str]:
    """The CLI values of the long-video mode, checked; returns the modes."""
    from sharpv.errors import SharpVError

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if not chosen or unknown:
        raise SharpVError(f"--modes takes {', '.join(MODES)} (comma-separated), got {modes!r}")
    if len(set(chosen)) != len(chosen):
        raise SharpVError(f"--modes names a mode twice: {modes!r}")
    if chunk_frames < 1:
        raise SharpVError(f"--chunk-frames must be at least 1, got {chunk_frames}")
    for value, flag in ((max_seconds, "--max-seconds"), (max_memory_gib, "--max-memory-gib")):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SharpVError(f"{flag} must be a number > 0, got {value}")
    return chosen


# --- memory -----------------------------------------------------------------------------------


def _status_kib(pid: int | str, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def resident_bytes(pid: int | str = "self") -> int | None:
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024


# --- the worker: one configuration in this process -----------------------------------------------


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_worker_model(job: Job):
    import torch
    from transformers import AutoModelForImageTextToText

    from sharpv.answer import DTYPES

    dtype = DTYPES[job.dtype]
    if job.model_dir is not None:
        model = AutoModelForImageTextToText.from_pretrained(job.model_dir, dtype=dtype, attn_implementation="sdpa")
        model = model.to(job.device).eval()
    else:
        from sharpv.shapes import build_shape_model

        model = build_shape_model(job.shape, job.tokens_per_frame, dtype=dtype, device=job.device,
                                  vision_layers=job.vision_layers)
    with torch.inference_mode():  # weights loaded lazily (memory-mapped) become resident now, not inside the run
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.sum()
    return model


def _units(model, frames: int, chunk_frames: int) -> tuple[int, int, int]:
    """(units, units per chunk, frames per unit): a unit is a frame (LLaVA-OneVision) or a temporal
    step of two frames (Qwen-VL), which chunks never split."""
    if model.config.model_type == "llava_onevision":
        return frames, chunk_frames, 1
    step = int(model.config.vision_config.temporal_patch_size)
    return max(1, frames // step), max(1, chunk_frames // step), step


def _cache_bytes(cache) -> int:
    from sharpv.layer_pruning import cache_sizes

    return sum(cache_sizes(cache, 0)[0]) if cache is not None else 0


def run_pipeline(model, mode: str, frames: int, chunk_frames: int, tokens_per_frame: int, noise: float,
                 tick: Callable[[str], None] = lambda _: None) -> dict:
    """One run of ``mode`` on a synthetic video of ``frames`` frames; timings and counts."""
    import torch

    with torch.inference_mode():
        return _pipeline(model, mode, frames, chunk_frames, tokens_per_frame, noise, tick)


def _pipeline(model, mode: str, frames: int, chunk_frames: int, tokens_per_frame: int, noise: float,
              tick: Callable[[str], None]) -> dict:
    import torch

    import sharpv
    from sharpv.adapters import adapter_for
    from sharpv.compat import cache_kwargs, output_cache
    from sharpv.shapes import synthetic_inputs, synthetic_pixels

    device = model.device
    adapter = adapter_for(model)
    inputs = synthetic_inputs(model, frames, tokens_per_frame, vision="none")
    ids = inputs["input_ids"]
    visual_in = int((ids == adapter.video_token_id).sum())
    units, per_chunk, unit_frames = _units(model, frames, chunk_frames)
    out: dict[str, Any] = {"visual_tokens_in": visual_in - adapter.extra_tokens_per_video}
    if mode == "sharpv-chunked":
        from sharpv.streaming import ChunkedPrefill

        vision = push = selection = 0.0
        with sharpv.apply(model, kv=False) as handle, torch.inference_mode():
            prefill = ChunkedPrefill(handle, inputs)
            selector_push = prefill.selector.push

            def timed_push(grid):
                nonlocal selection
                start = time.perf_counter()
                result = selector_push(grid)
                selection += time.perf_counter() - start
                return result

            prefill.selector.push = timed_push
            for first in range(0, units, per_chunk):
                last = min(units, first + per_chunk)
                pixels = synthetic_pixels(model, first * unit_frames, last * unit_frames, tokens_per_frame, noise=noise)
                _sync(device)
                start = time.perf_counter()
                encoded = adapter.encode(pixels)
                _sync(device)
                vision += time.perf_counter() - start
                start = time.perf_counter()
                prefill.push(encoded, pixels.get("video_grid_thw"))
                _sync(device)
                push += time.perf_counter() - start
                del pixels, encoded
                tick(f"{last * unit_frames}/{frames} frames")
            start = time.perf_counter()
            cache = prefill.finish()
            logits = model(input_ids=ids[:, -1:], **cache_kwargs(cache), use_cache=True, logits_to_keep=1).logits
            first_token = int(logits[0, -1].argmax())
            _sync(device)
            question = time.perf_counter() - start
            kept = sum(prefill.kept_per_frame)
        out.update(
            visual_tokens_kept=kept, sequence_length=cache.get_seq_length(), vision_seconds=vision,
            pruning_seconds=selection, prefill_seconds=push + question, question_to_first_token_seconds=question,
            first_token=first_token, kv_cache_bytes=_cache_bytes(cache),
        )
    else:
        pixels = synthetic_pixels(model, 0, units * unit_frames, tokens_per_frame, noise=noise)  # the whole video, held
        tick("vision")
        _sync(device)
        start = time.perf_counter()
        if hasattr(adapter, "encode_chunked"):
            encoded = adapter.encode_chunked(pixels, chunk_frames)
        else:  # an adapter without chunked encoding: the whole video in one call
            encoded = adapter.encode(pixels)
        _sync(device)
        vision = time.perf_counter() - start
        tick("prefill")
        feed = {**inputs, "mm_encoder_outputs": {"video": encoded}}
        method = sharpv.apply(model, kv=False) if mode == "sharpv-oneshot" else contextlib.nullcontext()
        with method as handle, torch.inference_mode():
            _sync(device)
            start = time.perf_counter()
            result = model(**feed, use_cache=True, logits_to_keep=1)
            first_token = int(result.logits[0, -1].argmax())
            _sync(device)
            prefill_seconds = time.perf_counter() - start
            cache = output_cache(result)
            stats = handle.stats if handle is not None else None
        kept = stats.visual_tokens_kept if stats is not None else out["visual_tokens_in"]
        out.update(
            visual_tokens_kept=kept, sequence_length=cache.get_seq_length(), vision_seconds=vision,
            pruning_seconds=stats.pruning_seconds if stats is not None else 0.0, prefill_seconds=prefill_seconds,
            question_to_first_token_seconds=vision + prefill_seconds, first_token=first_token,
            kv_cache_bytes=_cache_bytes(cache),
        )
        del pixels, encoded, feed, result
    out["ttft_seconds"] = out["vision_seconds"] + out["prefill_seconds"]
    out["kept_share"] = out["visual_tokens_kept"] / max(1, out["visual_tokens_in"])
    return out


def run_job(job: Job) -> dict:
    """Load the model, warm up, reset the peak, run once, measure (in this process)."""
    import torch

    from sharpv.harness.bench import PeakMemory, environment

    started = time.perf_counter()
    model = load_worker_model(job)
    tokens_per_frame = job.tokens_per_frame
    if job.model_dir is not None:
        from sharpv.adapters import adapter_for

        tokens_per_frame = getattr(adapter_for(model), "tokens_per_frame", tokens_per_frame)
    device = model.device
    if device.type == "cuda" and job.max_memory_bytes:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, job.max_memory_bytes / total), device)
    small = 1 if model.config.model_type == "llava_onevision" else 2  # warm-up: a one-frame (one-step) video
    for _ in range(job.warmup):
        run_pipeline(model, job.mode, small, job.chunk_frames, tokens_per_frame, job.noise)
    gc.collect()
    memory = PeakMemory(device)
    memory.reset()
    baseline = int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else resident_bytes() or 0
    load_seconds = time.perf_counter() - started
    Path(job.ready_path).write_text("loaded\n")
    run_start = time.perf_counter()

    def tick(progress: str) -> None:
        Path(job.ready_path).write_text(progress + "\n")
        if job.max_seconds is not None and time.perf_counter() - run_start > job.max_seconds:
            raise OverCap(progress)

    record: dict[str, Any] = {"load_seconds": load_seconds, "baseline_memory_bytes": baseline}
    try:
        result = run_pipeline(model, job.mode, job.frames, job.chunk_frames, tokens_per_frame, job.noise, tick)
        run_seconds = time.perf_counter() - run_start
        peak = memory.read()
        if job.max_seconds is not None and run_seconds > job.max_seconds:
            raise OverCap("finished past the cap")
        record.update(result, status="ok", reason=None, run_seconds=run_seconds, peak_memory_bytes=peak,
                      peak_over_baseline_bytes=max(0, peak - baseline))
    except OverCap as exc:
        record.update(status=DID_NOT_FINISH, reason=f"time cap ({job.max_seconds:g} s)", progress=str(exc),
                      run_seconds=time.perf_counter() - run_start)
    except torch.OutOfMemoryError:
        record.update(status=DID_NOT_FINISH, reason="memory cap" if job.max_memory_bytes else "out of memory",
                      run_seconds=time.perf_counter() - run_start)
    except MemoryError:
        record.update(status=DID_NOT_FINISH, reason="out of memory", run_seconds=time.perf_counter() - run_start)
    record["load_average"] = os.getloadavg()[0]  # 1-minute load average at the end: how shared the machine was
    source = f"shape {job.shape} (random weights)" if job.shape else job.model_dir
    env = environment(model, dtype=job.dtype, device=job.device, source=source, vision="real", noise=job.noise)
    env.update(tokens_per_frame=tokens_per_frame)
    record["environment"] = env
    return record


def worker_main(job_path: str) -> int:
    job = Job(**json.loads(Path(job_path).read_text()))
    record = run_job(job)
    write_json_atomic(Path(job.result_path), record)
    return 0


def prepare_main(shape: str, tokens_per_frame: int, dtype: str, out: str, vision_layers: int | None = None) -> int:
    """Build a shape's random-weight model once and save it, so that every worker loads it
    instead of initialising ~1B random weights again."""
    from sharpv.answer import DTYPES
    from sharpv.shapes import build_shape_model

    model = build_shape_model(shape, tokens_per_frame, dtype=DTYPES[dtype], vision_layers=vision_layers)
    model.save_pretrained(out)
    return 0


# --- the parent: one process per configuration ------------------------------------------------


def _worker_env() -> dict:
    import sharpv

    env = dict(os.environ)
    src = str(Path(sharpv.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # glibc: every allocation from 128 KiB up is its own mapping, returned to the OS when freed (a
    # fixed threshold turns off glibc's adaptive one, which keeps freed tensors in the heap), so the
    # resident set follows the live tensors and the peak is the run's, not the allocator's history
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    env["TRANSFORMERS_VERBOSITY"] = "error"
    return env


def _kill(proc: subprocess.Popen) -> None:
    """End the worker we started (its own process group, by its id)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    proc.wait()


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def launch(job: Job, work: Path, *, max_seconds: float | None, max_memory_bytes: int | None,
           poll: float = 0.02) -> dict:
    """Run ``job`` in a fresh worker process under the caps; the worker's record, or a
    did-not-finish record."""
    job_path = work / f"job-{job.frames}-{job.mode}.json"
    log_path = work / f"log-{job.frames}-{job.mode}.txt"
    job_path.write_text(json.dumps(asdict(job)))
    for path in (job.result_path, job.ready_path):
        Path(path).unlink(missing_ok=True)
    began = time.monotonic()
    ready_at: float | None = None
    peak_seen = 0
    reason: str | None = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sharpv.harness.long_video", "run", str(job_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=_worker_env(), start_new_session=True)
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if ready_at is None and os.path.exists(job.ready_path):
                    ready_at = now
                if ready_at is not None and max_seconds is not None and now - ready_at > max_seconds:
                    reason = f"time cap ({max_seconds:g} s)"
                elif ready_at is None and now - began > LOAD_SECONDS:
                    reason = f"model load past {LOAD_SECONDS:g} s"
                if max_memory_bytes is not None and job.device == "cpu":
                    rss = resident_bytes(proc.pid) or 0
                    peak_seen = max(peak_seen, rss)
                    if rss > max_memory_bytes:
                        reason = f"memory cap ({max_memory_bytes / 2**30:g} GiB)"
                if reason is not None:
                    _kill(proc)
                    break
                time.sleep(poll)
        except BaseException:
            _kill(proc)
            raise
    record: dict[str, Any]
    if reason is None and proc.returncode == 0 and os.path.exists(job.result_path):
        record = json.loads(Path(job.result_path).read_text())
    else:
        if reason is None:
            reason = f"worker failed (exit {proc.returncode}): {_tail(log_path)}"
        record = {"status": DID_NOT_FINISH, "reason": reason, "progress": _tail(Path(job.ready_path)) or "loading",
                  "run_seconds": time.monotonic() - ready_at if ready_at is not None else None,
                  "load_average": os.getloadavg()[0]}
    record.update(frames=job.frames, mode=job.mode)
    return record


def _complete(record: dict) -> dict:
    return {key: record.get(key) for key in RECORD_FIELDS}


def add_ratios(records: list[dict]) -> None:
    """The chunked path's question-to-first-token time as a share of the one-shot TTFTs."""
    ok = {(r["frames"], r["mode"]): r for r in records if r["status"] == "ok"}
    for r in records:
        if r["mode"] != "sharpv-chunked" or r["status"] != "ok":
            continue
        for other, key in (("sharpv-oneshot", "question_share_of_oneshot_ttft"), ("dense", "question_share_of_dense_ttft")):
            ref = ok.get((r["frames"], other))
            if ref is not None and ref["ttft_seconds"]:
                r[key] = r["question_to_first_token_seconds"] / ref["ttft_seconds"]


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of y over x (None with fewer than two distinct x)."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def summarize(records: list[dict], *, targets: tuple[int, int] = (64, 1024), max_share: float = 0.05,
              max_peak_ratio: float = 1.5) -> dict:
    """Peak growth per frame of every mode, and the two long-video targets: measured where both
    frame counts finished, otherwise marked not measured (with a linear extrapolation, labelled)."""
    low, high = targets
    modes: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in records):
        done = sorted((r["frames"], r) for r in records if r["mode"] == mode and r["status"] == "ok")
        peak = [(f, r["peak_memory_bytes"]) for f, r in done]
        over = [(f, r["peak_over_baseline_bytes"]) for f, r in done]
        kv = [(f, r["kv_cache_bytes"]) for f, r in done]
        modes[mode] = {
            "frames_finished": [f for f, _ in done],
            "frames_not_finished": sorted(r["frames"] for r in records if r["mode"] == mode and r["status"] != "ok"),
            "peak_growth_bytes_per_frame": _slope(peak),
            # between the two largest counts that finished: costs fixed per chunk (paid once a second
            # chunk exists) are behind it, so it is the better estimate of the growth at more frames
            "peak_marginal_growth_bytes_per_frame": _slope(peak[-2:]),
            "peak_over_baseline_growth_bytes_per_frame": _slope(over),
            "kv_cache_growth_bytes_per_frame": _slope(kv),
        }
    ok = {(r["frames"], r["mode"]): r for r in records if r["status"] == "ok"}
    chunked = modes.get("sharpv-chunked")
    target_a: dict[str, Any] = {"claim": f"sharpv-chunked peak at {high} frames <= {max_peak_ratio}x its peak at {low} frames"}
    if (low, "sharpv-chunked") in ok and (high, "sharpv-chunked") in ok:
        ratio = ok[(high, "sharpv-chunked")]["peak_memory_bytes"] / ok[(low, "sharpv-chunked")]["peak_memory_bytes"]
        target_a.update(measured=True, ratio=ratio, met=ratio <= max_peak_ratio)
    else:
        target_a.update(measured=False, ratio=None, met=None)
        slope = chunked["peak_marginal_growth_bytes_per_frame"] if chunked else None
        points = [(f, ok[(f, "sharpv-chunked")]["peak_memory_bytes"]) for f in (chunked or {}).get("frames_finished", [])]
        if slope is not None and points:
            f0, p0 = points[-1]
            at = lambda f: p0 + slope * (f - f0)  # noqa: E731
            target_a["extrapolated_ratio"] = at(high) / at(low) if at(low) > 0 else None
            target_a["extrapolated_from"] = [f for f, _ in points[-2:]]
    target_b: dict[str, Any] = {
        "claim": f"sharpv-chunked question-to-first-token at {low} frames <= {max_share:.0%} of the one-shot TTFT",
    }
    share = ok.get((low, "sharpv-chunked"), {}).get("question_share_of_oneshot_ttft")
    target_b.update(measured=share is not None, share=share, met=None if share is None else share <= max_share)
    target_b["shares_measured"] = {
        str(r["frames"]): r["question_share_of_oneshot_ttft"] for r in records
        if r["mode"] == "sharpv-chunked" and r.get("question_share_of_oneshot_ttft") is not None
    }
    return {"modes": modes, "target_peak_ratio": target_a, "target_question_share": target_b}


def run_long_video(*, model_dir: Path | None, shape: str | None, frames: list[int], modes: list[str],
                   tokens_per_frame: int, chunk_frames: int, dtype: str, device: str, noise: float, warmup: int,
                   max_seconds: float | None, max_memory_bytes: int | None, vision_layers: int | None = None,
                   skip_after_dnf: bool = True,
                   isolate: bool = True, on_step: Callable[[str], None] | None = None,
                   on_record: Callable[[dict], None] | None = None) -> dict:
    """Every (frames, mode) in its own worker process, frame counts ascending; returns
    ``{"environment", "settings", "records", "summary", "provenance"}``.

    ``isolate=False`` runs the jobs in this process instead (for tests: peaks then mix, and only
    the time cap is enforced, at chunk boundaries and after the run)."""
    from sharpv.harness.provenance import Clock, provenance

    clock = Clock()
    work = Path(tempfile.mkdtemp(prefix="sharpv-long-video-"))
    records: list[dict] = []
    env: dict | None = None
    try:
        prepared = None
        if shape is not None and isolate:
            if on_step:
                on_step(f"building {shape} (random weights) once")
            prepared = work / "model"
            built = subprocess.run(
                [sys.executable, "-m", "sharpv.harness.long_video", "prepare", shape, str(tokens_per_frame), dtype,
                 str(prepared), *([str(vision_layers)] if vision_layers is not None else [])],
                env=_worker_env(), capture_output=True, text=True,
            )
            if built.returncode != 0:
                raise RuntimeError(f"building shape {shape} failed: {built.stderr.strip().splitlines()[-1:]}")
        stopped: dict[str, int] = {}
        for n in sorted(frames):
            for mode in modes:
                if skip_after_dnf and mode in stopped:
                    record = {"frames": n, "mode": mode, "status": DID_NOT_FINISH,
                              "reason": f"not started (did not finish at {stopped[mode]} frames)", "progress": None}
                else:
                    if on_step:
                        on_step(f"{n} frames: {mode}")
                    job = Job(frames=n, mode=mode, chunk_frames=chunk_frames, dtype=dtype, device=device, noise=noise,
                              warmup=warmup, model_dir=str(prepared or model_dir) if (prepared or model_dir) else None,
                              shape=None if (prepared or model_dir) else shape,
                              tokens_per_frame=tokens_per_frame, vision_layers=vision_layers, max_seconds=max_seconds,
                              max_memory_bytes=max_memory_bytes, result_path=str(work / f"result-{n}-{mode}.json"),
                              ready_path=str(work / f"ready-{n}-{mode}.txt"))
                    if isolate:
                        record = launch(job, work, max_seconds=max_seconds, max_memory_bytes=max_memory_bytes)
                    else:
                        record = {**run_job(job), "frames": n, "mode": mode}
                    env = env or record.pop("environment", None)
                    record.pop("environment", None)
                    if record["status"] != "ok":
                        stopped.setdefault(mode, n)
                records.append(_complete(record))
                if on_record:
                    on_record(records[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    add_ratios(records)
    if env is None:
        from sharpv.harness.bench import environment

        env = environment(None, dtype=dtype, device=device, source="", vision="real", noise=noise)
    env["model"] = f"shape {shape} (random weights)" if shape else str(model_dir)
    settings = {
        "frames": sorted(frames), "modes": list(modes), "chunk_frames": chunk_frames, "dtype": dtype, "device": device,
        "pixel_noise": noise, "warmup": warmup, "max_seconds": max_seconds, "max_memory_bytes": max_memory_bytes,
        "question_tokens": 20, "prefix_tokens": 14, "vision_layers": vision_layers,
    }
    # provenance: the sharpv commit, package versions and the wall time of every run together
    return {"environment": env, "settings": settings, "records": records, "summary": summarize(records),
            "provenance": provenance(clock)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"] and len(argv) == 2:
        return worker_main(argv[1])
    if argv[:1] == ["prepare"] and len(argv) in (5, 6):
        return prepare_main(argv[1], int(argv[2]), argv[3], argv[4], int(argv[5]) if len(argv) == 6 else None)
    print("usage: python -m sharpv.harness.long_video run JOB.json | prepare SHAPE TOKENS_PER_FRAME DTYPE DIR [VISION_LAYERS]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
