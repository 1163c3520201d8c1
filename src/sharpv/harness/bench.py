"""`sharpv bench`: efficiency of every method at equal budgets, against dense, in one run.

For each frame count the harness builds one input; a *cell* is one (method, budget, frames),
dense and the "ideal" rows included. The run is a sequence of interleaved rounds: ``warmup``
untimed rounds, then ``repeats`` timed ones, each running every cell once in an order shuffled
per round with a fixed seed, so a machine that speeds up or slows down during the run moves every
cell of a round alike. A method cell's run is a prefill (one forward with ``logits_to_keep=1``, as
``generate()`` does) followed by a greedy decode of ``new_tokens`` tokens on the cache. Every
ratio (speedup against dense, prefill against the ideal) is taken within a round, against that
round's dense / ideal of the same frame count; every figure is the median over the rounds with
its [min, max] (``spread``), and each round's raw times stay in the record (``rounds``).
:func:`flag_noise` marks what the rounds cannot tell from noise.

Analytic prefill FLOPs: :mod:`sharpv.harness.flops` (the vision tower is not counted).
"""

from __future__ import annotations

import os
import platform
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from sharpv.compat import cache_keys, cache_kwargs, output_cache
from sharpv.errors import SharpVError
from sharpv.harness.flops import computed_lengths, extra_score_tokens, prefill_flops
from sharpv.harness.rounds import DEFAULT_SEED, NOISE_THRESHOLD, median_spread, ratios, relative_spread, shuffled
from sharpv.methods import METHODS, PruningMethod, create

ADAPTIVE = "adaptive"
#: methods that have an adaptive (content-dependent total) mode

#: ``--sdpa-kernel``: which of PyTorch's scaled-dot-product-attention kernels the bench's calls may use
#: (``auto``: PyTorch chooses, per call; the others allow that kernel alone, so a call it cannot run
#: fails instead of falling back: a table labelled flash is flash in every attention call)
SDPA_KERNELS = ("auto", "flash", "efficient", "math")
#: the kernels that exist on CUDA only (PyTorch's CPU "flash" is another implementation: refused there)
CUDA_ONLY_SDPA_KERNELS = ("flash", "efficient")


@dataclass(frozen=True)
class MethodSpec:
    """A method as the bench names it: ``NAME`` or ``NAME:key=value:key=value``; or, ``fixed``, a
    method with all its settings (its own budget included) from a config file (:meth:`from_config`),
    which runs once, whatever the budgets."""

    label: str
    name: str
    settings: dict = field(default_factory=dict)
    fixed: bool = False

    @classmethod
    def from_config(cls, config: Any) -> "MethodSpec":
        """A fixed spec from a :class:`~sharpv.methods.MethodFile` (or what ``load_config`` reads)."""
        from sharpv.methods import MethodFile, load_config

        config = config if isinstance(config, MethodFile) else load_config(config)
        return cls(config.display_label, config.method, dict(config.settings), fixed=True)

    @property
    def fixed_budget(self) -> float | None:
        """A fixed spec's own budget (its keep_ratio; None: adaptive, or dense)."""
        return None if self.name == "dense" else getattr(self.build(None).config, "keep_ratio", None)

    @property
    def adaptive(self) -> bool:
        """Whether the method has an adaptive mode under these settings (it runs at the budget
        'adaptive'): see :meth:`~sharpv.methods.PruningMethod.has_adaptive`."""
        return METHODS[self.name].has_adaptive(self.settings)

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        from sharpv.cli_values import parse_settings

        name, *pairs = text.strip().split(":")
        if name not in METHODS:
            raise SharpVError(f"unknown method {name!r} in --methods; registered methods: {', '.join(METHODS)}")
        return cls(text.strip(), name, parse_settings(pairs, f"--methods {text.strip()!r}"))

    def build(self, budget: float | None) -> PruningMethod:
        if self.fixed:
            try:
                return create(self.name, **self.settings)
            except (TypeError, ValueError) as exc:
                raise SharpVError(f"method {self.label!r}: {exc}") from None
        if self.name == "dense":
            return create("dense", **self.settings)
        try:
            return create(self.name, keep_ratio=budget, **self.settings)
        except (TypeError, ValueError) as exc:
            raise SharpVError(f"method {self.label!r} at budget {budget}: {exc}") from None


def parse_budgets(text: str) -> list[float | None]:
    out: list[float | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == ADAPTIVE:
            out.append(None)
            continue
        try:
            value = float(item)
        except ValueError:
            raise SharpVError(f"--budgets takes numbers in (0, 1] and 'adaptive', got {item!r}") from None
        if not 0.0 < value <= 1.0:
            raise SharpVError(f"--budgets values must be in (0, 1], got {value}")
        out.append(value)
    return out


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SharpVError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise SharpVError(f"{flag} values must be integers >= 1, got {text!r}")
    return values


# --- measurements -----------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of a block: max allocated on CUDA, peak resident set (VmHWM, reset through
    /proc/self/clear_refs) on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def read(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class RunResult:
    prefill_seconds: float
    vision_seconds: float
    decode_seconds: float
    peak_memory_bytes: int
    stats: Any


def run_once(model: torch.nn.Module, method: PruningMethod, inputs: dict, new_tokens: int, memory: PeakMemory) -> RunResult:
    """One prefill + greedy decode of ``new_tokens`` tokens with ``method`` applied."""
    device = model.device
    memory.reset()
    with method(model) as handle, torch.inference_mode():
        feed = dict(inputs)
        vision_seconds = 0.0
        if "pixel_values_videos" in feed:
            _sync(device)
            start = time.perf_counter()
            kwargs = {"pixel_values_videos": feed.pop("pixel_values_videos"), "return_dict": True}
            if "video_grid_thw" in feed:
                kwargs["video_grid_thw"] = feed["video_grid_thw"]
            feed["mm_encoder_outputs"] = {"video": model.get_video_features(**kwargs)}
            _sync(device)
            vision_seconds = time.perf_counter() - start
        _sync(device)
        start = time.perf_counter()
        out = model(**feed, use_cache=True, logits_to_keep=1)
        _sync(device)
        prefill_seconds = time.perf_counter() - start
        cache = output_cache(out)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=nxt, **cache_kwargs(cache), use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        decode_seconds = time.perf_counter() - start
        stats = handle.stats
    peak = memory.read()
    del out, cache
    return RunResult(prefill_seconds, vision_seconds, decode_seconds, peak, stats)


def ideal_inputs(model, inputs: dict, kept: int, n_visual: int) -> dict:
    """The keyword arguments the model's language model receives when a pre-LLM method keeps
    ``kept`` of the ``n_visual`` visual tokens of ``inputs`` (captured from one such run; which
    tokens does not change the cost), without a cache."""
    lm = model.model.language_model
    captured: dict[str, Any] = {}

    def grab(module, args, kwargs):
        captured.update(kwargs)
        if args:
            captured["input_ids"] = args[0]

    with torch.inference_mode(), create("random", keep_ratio=kept / n_visual, seed=0)(model) as handle:
        hook = lm.register_forward_pre_hook(grab, with_kwargs=True)  # after the method's hooks: the reduced sequence
        try:
            model(**inputs, use_cache=False, logits_to_keep=1)
        finally:
            hook.remove()
        if handle.stats.visual_tokens_kept != kept:
            raise RuntimeError(f"ideal row: wanted {kept} visual tokens, the capture kept {handle.stats.visual_tokens_kept}")
    return {k: v for k, v in captured.items() if k not in (*cache_keys(), "use_cache", "cache_position")}


def ideal_prefill(model, feed: dict) -> torch.Tensor:
    """The language model and the last token's logits on ``feed`` (:func:`ideal_inputs`), with no
    hook of sharpv's: the unmodified model's prefill on a sequence that only ever had those tokens."""
    out = model.model.language_model(**feed, use_cache=True)
    return model.lm_head(out.last_hidden_state[:, -1:])


def environment(model, *, dtype: str, device: str, source: str, vision: str, noise: float) -> dict:
    import transformers

    from sharpv import __version__

    from sharpv.harness.provenance import cpu_name

    cpu = cpu_name()
    env = {
        "sharpv": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "device": device, "dtype": dtype,
        "model": source,
        "attn_implementation": model.config.get_text_config()._attn_implementation if model is not None else None,
        "vision": vision, "feature_noise": noise if vision == "precomputed" else None,
    }
    if torch.cuda.is_available() and device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def plan(methods: list[MethodSpec], budgets: list[float | None]) -> list[tuple[MethodSpec, float | None]]:
    """Every (method, budget) to run; dense once (budget None); 'adaptive' only where a method has it
    (:attr:`MethodSpec.adaptive`);
    a fixed spec (a config file's method) once, at its own budget."""
    runs: list[tuple[MethodSpec, float | None]] = [(MethodSpec("dense", "dense"), None)]
    for spec in methods:
        if spec.fixed:
            runs.append((spec, spec.fixed_budget))
            continue
        if spec.name == "dense":
            continue
        for budget in budgets:
            if budget is None and not spec.adaptive:
                continue
            runs.append((spec, budget))
    return runs



# --- interleaved rounds ---------------------------------------------------------------------------

# NOISE_THRESHOLD (the ``noise`` flag: a cell whose own prefill seconds, or its frame count's dense prefill
# seconds, vary across the timed rounds by more than this share of their median), DEFAULT_SEED, the round
# shuffle and the median [min, max] come from sharpv.harness.rounds, shared with the vLLM benchmark
#: the per-round series a record's median and [min, max] are taken over
ROUND_SERIES = ("prefill_seconds", "vision_seconds", "ttft_seconds", "pruning_seconds", "decode_tokens_per_second",
                "prefill_speedup", "ttft_speedup", "decode_speedup", "pruning_share_of_dense_prefill", "prefill_vs_ideal")


@dataclass(eq=False)
class Cell:
    """One (method, budget, frames) of the plan, or (``spec`` None) the ideal row at
    ``ideal_tokens`` visual tokens of that frame count: what a round runs once."""

    frames: int
    spec: MethodSpec | None
    budget: float | None
    ideal_tokens: int | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            if self.spec is None:
                self.id = f"{self.frames} frames: ideal @ {self.ideal_tokens} visual tokens"
            else:
                at = self.budget if self.budget is not None else ADAPTIVE if self.spec.name != "dense" else "-"
                self.id = f"{self.frames} frames: {self.spec.label} @ {at}"


def plan_cells(runs: list[tuple[MethodSpec, float | None]], frames: list[int]) -> list[Cell]:
    """Every method cell of the plan, frame count by frame count; ids are unique (a repeated spec
    gets ``#2``, ``#3``)."""
    cells, seen = [], {}
    for n in frames:
        for spec, budget in runs:
            cell = Cell(n, spec, budget)
            seen[cell.id] = seen.get(cell.id, 0) + 1
            if seen[cell.id] > 1:
                cell.id += f" #{seen[cell.id]}"
            cells.append(cell)
    return cells


def sdpa_context(kernel: str = "auto"):
    """A context in which PyTorch's scaled dot-product attention may use ``kernel`` alone
    (:data:`SDPA_KERNELS`; ``auto``: no restriction)."""
    import contextlib

    if kernel not in SDPA_KERNELS:
        raise SharpVError(f"--sdpa-kernel must be one of {', '.join(SDPA_KERNELS)}, got {kernel!r}")
    if kernel == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "math": SDPBackend.MATH}[kernel]
    return sdpa_kernel([backend])


def run_bench(model, make_inputs: Callable[[int], dict], *, methods: list[MethodSpec], budgets: list[float | None],
              frames: list[int], repeats: int, warmup: int, new_tokens: int,
              on_step: Callable[[str], None] | None = None, ideal: bool = True, seed: int = DEFAULT_SEED,
              on_total: Callable[[int], None] | None = None, sdpa_kernel: str = "auto") -> tuple[list[dict], list[dict]]:
    """Interleaved rounds: ``warmup`` untimed rounds, then ``repeats`` timed ones; each round runs
    every cell (method x budget x frames, dense and, with ``ideal``, the ideal rows included) once,
    in an order shuffled per round by ``random.Random(seed)``. The ideal rows' token counts are
    known once the methods have run, so the very first round (a warm-up one unless ``warmup`` is
    0) runs them after its method cells, shuffled among themselves. Every call of the rounds runs
    inside :func:`sdpa_context` of ``sdpa_kernel``; a call that kernel cannot run ends the bench
    with a :class:`SharpVError` naming the cell.

    Returns the records (one per cell: frame count by frame count, the plan's order, then the
    ideal rows; every figure the median over the timed rounds, every ratio taken within a round,
    ``spread`` its [min, max], ``rounds`` each timed round's raw times and ratios, ``flag`` and
    ``flag_reasons`` from :func:`flag_noise`) and the rounds (``index``, ``warmup``, ``order``:
    the cell ids as they ran)."""
    runs = plan(methods, budgets)
    inputs = {n: make_inputs(n) for n in frames}
    cells = plan_cells(runs, frames)
    built = {c.id: c.spec.build(c.budget) for c in cells}
    memory = PeakMemory(model.device)
    rng = random.Random(seed)
    timed: dict[str, list] = {c.id: [] for c in cells}
    last: dict[str, RunResult] = {}
    ideal_cells: list[Cell] = []
    ideal_of: dict[str, int] = {}
    feeds: dict[str, dict] = {}
    total_rounds = warmup + repeats
    if on_total:
        on_total(len(cells) * total_rounds)
    log: list[dict] = []

    def run_cell(cell: Cell, index: int, is_timed: bool) -> None:
        if on_step:
            what = f"round {index - warmup + 1}/{repeats}" if is_timed else f"warm-up {index + 1}/{warmup}"
            on_step(f"{what}: {cell.id}")
        try:
            with sdpa_context(sdpa_kernel):
                run_timed(cell, is_timed)
        except RuntimeError as exc:
            if sdpa_kernel == "auto" or "No available kernel" not in str(exc):
                raise
            raise SharpVError(f"--sdpa-kernel {sdpa_kernel}: {cell.id}: an attention call cannot run on the "
                              f"{sdpa_kernel} kernel ({str(exc).splitlines()[0]}); use --sdpa-kernel auto to let "
                              "PyTorch choose") from None

    def run_timed(cell: Cell, is_timed: bool) -> None:
        if cell.spec is None:
            seconds = time_ideal(model, feeds[cell.id])
            if is_timed:
                timed[cell.id].append(seconds)
            return
        result = run_once(model, built[cell.id], inputs[cell.frames], new_tokens, memory)
        last[cell.id] = result
        if is_timed:
            timed[cell.id].append(result)

    for index in range(total_rounds):
        is_timed = index >= warmup
        order = shuffled(rng, cells + ideal_cells)
        for cell in order:
            run_cell(cell, index, is_timed)
        if ideal and index == 0:
            ideal_cells, ideal_of = _ideal_cells(cells, last)
            for cell in ideal_cells:
                n_visual = last[f"{cell.frames} frames: dense @ -"].stats.visual_tokens_in
                with sdpa_context(sdpa_kernel):
                    feeds[cell.id] = ideal_inputs(model, inputs[cell.frames], cell.ideal_tokens, n_visual)
                timed[cell.id] = []
            if on_total:
                on_total((len(cells) + len(ideal_cells)) * total_rounds)
            late = shuffled(rng, ideal_cells)
            for cell in late:
                run_cell(cell, index, is_timed)
            order = order + late
        log.append({"index": index, "warmup": not is_timed, "order": [c.id for c in order]})

    text_config = model.config.get_text_config()
    records = []
    for n in frames:
        for cell in (c for c in cells if c.frames == n):
            records.append(_method_record(cell, timed[cell.id], text_config, new_tokens, ideal_of.get(cell.id)))
        for cell in (c for c in ideal_cells if c.frames == n):
            records.append(_ideal_record(cell, timed[cell.id], last[f"{n} frames: dense @ -"].stats.visual_tokens_in,
                                         feeds[cell.id]))
    summarise_rounds(records)
    flag_noise(records)
    return records, log


def time_ideal(model, feed: dict) -> float:
    """Seconds of one :func:`ideal_prefill` on ``feed``."""
    device = model.device
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        ideal_prefill(model, feed)
        _sync(device)
    return time.perf_counter() - start


def _ideal_cells(cells: list[Cell], last: dict[str, RunResult]) -> tuple[list[Cell], dict[str, int]]:
    """One ideal cell per visual-token count a method of a frame count handed the LLM (or, for
    methods that prune inside it, per budget), and each method cell's ideal token count."""
    from sharpv.core.selection import budget_total

    wanted: dict[tuple[int, int], float | None] = {}
    ideal_of: dict[str, int] = {}
    for cell in cells:
        if cell.spec.name == "dense":
            continue
        stats = last[cell.id].stats
        n = stats.visual_tokens_in
        if stats.visual_tokens_kept < n:
            count = stats.visual_tokens_kept
        elif cell.budget is not None:
            count = budget_total(cell.budget, 1, n)
        else:
            continue
        ideal_of[cell.id] = count
        wanted.setdefault((cell.frames, count), cell.budget)
    ideal_cells = [Cell(n, None, budget, count) for (n, count), budget in sorted(wanted.items())]
    return ideal_cells, ideal_of


def _method_record(cell: Cell, runs: list[RunResult], text_config, new_tokens: int, ideal_tokens: int | None) -> dict:
    """A method cell's fixed figures (token counts, KV bytes, FLOPs: the same every round) and
    every timed round's raw times."""
    spec, stats = cell.spec, runs[-1].stats
    lengths = computed_lengths(stats, text_config.num_hidden_layers)
    extra = extra_score_tokens(stats, spec.name)
    return {
        "cell": cell.id, "method": spec.label, "method_name": spec.name, "budget": cell.budget, "frames": cell.frames,
        "visual_tokens_in": stats.visual_tokens_in,
        "visual_tokens_kept": stats.visual_tokens_kept,
        "kept_share": stats.visual_tokens_kept / max(1, stats.visual_tokens_in),
        # the mean share of the video's visual tokens each LLM layer computes (= kept_share unless the
        # method also prunes inside the LLM): the "equivalent retention" FlashVID and HoliTom report
        "equivalent_retention": getattr(stats, "equivalent_retention", None),
        "sequence_length": stats.sequence_length_out,
        "kv_cache_bytes": stats.kv_cache_bytes,
        "kv_cache_bytes_per_layer": stats.kv_cache_bytes_per_layer,
        "kv_withdraw_layer": stats.kv_withdraw_layer,
        "peak_memory_bytes": max(r.peak_memory_bytes for r in runs),
        "prefill_flops": prefill_flops(text_config, lengths, extra),
        "ideal_visual_tokens": ideal_tokens,
        "rounds": {
            "prefill_seconds": [r.prefill_seconds for r in runs],
            "vision_seconds": [r.vision_seconds for r in runs],
            "decode_seconds": [r.decode_seconds for r in runs],
            "pruning_seconds": [r.stats.pruning_seconds + r.stats.extra_seconds for r in runs],
            "decode_tokens_per_second": [new_tokens / r.decode_seconds if r.decode_seconds > 0 else None for r in runs],
        },
    }


def _ideal_record(cell: Cell, seconds: list[float], n_visual: int, feed: dict) -> dict:
    """The "ideal" row: the unmodified language model on exactly the sequence a pre-LLM method that
    kept ``cell.ideal_tokens`` tokens feeds it (:func:`ideal_inputs`). No scoring, no selection, no
    rebuilding of the inputs, no merge of the video features into the prompt: the limit any pre-LLM
    method can reach at that budget."""
    kept = cell.ideal_tokens
    length = next(v for k, v in feed.items() if k in ("inputs_embeds", "input_ids") and v is not None).shape[1]
    return {"cell": cell.id, "method": "ideal", "method_name": "ideal", "budget": cell.budget, "frames": cell.frames,
            "visual_tokens_in": n_visual, "visual_tokens_kept": kept, "kept_share": kept / n_visual,
            "equivalent_retention": kept / n_visual, "sequence_length": int(length),
            "rounds": {"prefill_seconds": list(seconds)}}


def summarise_rounds(records: list[dict]) -> None:
    """Every ratio within a round, then the medians: for each record (in place), from its
    ``rounds`` raw times and those of the dense record (and of its ideal row, at
    ``ideal_visual_tokens``) of the same frame count in the same round, the per-round series of
    :data:`ROUND_SERIES` (added to ``rounds``), each figure as their median and ``spread[key]`` as
    their [min, max]; ``kv_ratio`` and ``flops_ratio`` (the same every round) against dense."""
    for n in dict.fromkeys(r["frames"] for r in records):
        group = [r for r in records if r["frames"] == n]
        dense = next(r for r in group if r["method_name"] == "dense")
        ideals = {r["visual_tokens_kept"]: r for r in group if r["method_name"] == "ideal"}
        d = dense["rounds"]
        d_ttft = [p + v for p, v in zip(d["prefill_seconds"], d["vision_seconds"])]
        for r in group:
            rounds = r["rounds"]
            prefill = rounds["prefill_seconds"]
            rounds["prefill_speedup"] = ratios(d["prefill_seconds"], prefill)
            if r["method_name"] != "ideal":
                ttft = [p + v for p, v in zip(prefill, rounds["vision_seconds"])]
                rounds["ttft_seconds"] = ttft
                rounds["ttft_speedup"] = ratios(d_ttft, ttft)
                rounds["pruning_share_of_dense_prefill"] = [s / dp for s, dp in zip(rounds["pruning_seconds"],
                                                                                     d["prefill_seconds"])]
                rounds["decode_speedup"] = [t / dt if t and dt else None for t, dt in
                                            zip(rounds["decode_tokens_per_second"], d["decode_tokens_per_second"])]
                r["kv_ratio"] = r["kv_cache_bytes"] / dense["kv_cache_bytes"] if dense["kv_cache_bytes"] else None
                r["flops_ratio"] = r["prefill_flops"] / dense["prefill_flops"]
            count = r.get("ideal_visual_tokens")
            if count is not None and count in ideals:
                rounds["prefill_vs_ideal"] = ratios(prefill, ideals[count]["rounds"]["prefill_seconds"])
            r["spread"] = {}
            for key in ROUND_SERIES:
                series = rounds.get(key)
                if not series or any(v is None for v in series):
                    if series is not None:
                        r[key] = None
                    continue
                r[key], r["spread"][key] = median_spread(series)


def flag_noise(records: list[dict], threshold: float = NOISE_THRESHOLD) -> list[str]:
    """Flag (in place: ``flag``, ``flag_reasons``) what the rounds cannot tell from noise, and
    return one line of why per flag for the terminal (a noisy dense: one line per frame count):

    - ``noise``: the dense prefill of the record's frame count, or the record's own prefill,
      varied across the timed rounds by more than ``threshold`` (:func:`relative_spread`);
    - ``faster than ideal``: the record computes at least the ideal row's tokens in every layer
      (its equivalent retention is not below the ideal's share) yet its prefill was below its
      ideal's in every round: impossible, so the machine drifted or the ideal is not the same
      computation.

    Needs two timed rounds or more (one round has no spread); with one, nothing is flagged."""
    lines: list[str] = []
    for n in dict.fromkeys(r["frames"] for r in records):
        group = [r for r in records if r["frames"] == n]
        ideals = {r["visual_tokens_kept"]: r for r in group if r["method_name"] == "ideal"}
        dense = next(r for r in group if r["method_name"] == "dense")
        dense_spread = relative_spread(dense["rounds"]["prefill_seconds"])
        noisy_dense = dense_spread is not None and dense_spread > threshold
        if noisy_dense:
            lines.append(f"noise: {n} frames: the dense prefill varied {dense_spread:.0%} across rounds (more than "
                         f"{threshold:.0%}); every ratio at {n} frames is flagged")
        for r in group:
            codes, reasons = [], []
            own = relative_spread(r["rounds"]["prefill_seconds"])
            if noisy_dense:
                codes.append("noise")
                reasons.append(f"the dense prefill at {n} frames varied {dense_spread:.0%} across rounds")
            if own is not None and own > threshold and r is not dense:
                if "noise" not in codes:
                    codes.append("noise")
                reasons.append(f"its prefill varied {own:.0%} across rounds")
                lines.append(f"noise: {r['cell']}: its prefill varied {own:.0%} across rounds (more than {threshold:.0%})")
            vs = r["rounds"].get("prefill_vs_ideal")
            ideal = ideals.get(r.get("ideal_visual_tokens"))
            retention = r.get("equivalent_retention")
            retention = r["kept_share"] if retention is None else retention
            if vs and len(vs) >= 2 and ideal is not None and retention >= ideal["kept_share"] - 1e-9 and max(vs) < 1:
                codes.append("faster than ideal")
                why = (f"its prefill was {min(vs):.2f}-{max(vs):.2f}x its ideal's ({ideal['visual_tokens_kept']} "
                       f"visual tokens) in every round, which it cannot be: drift, or the ideal is not the same computation")
                reasons.append(why)
                lines.append(f"faster than ideal: {r['cell']}: {why}")
            r["flag"] = ", ".join(codes) or None
            r["flag_reasons"] = reasons
    return lines
