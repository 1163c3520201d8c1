"""`sharpv bench`: efficiency of every method at equal budgets, against dense, in one run.

For each frame count the harness builds one input, then runs dense and every method x budget on
it: ``warmup`` untimed runs, then ``repeats`` timed runs, each a prefill (one forward with
``logits_to_keep=1``, as ``generate()`` does) followed by a greedy decode of ``new_tokens`` tokens
on the cache. Every figure is the median over the repeats; every ratio is against the dense run of
the same invocation.

Analytic prefill FLOPs: :mod:`sharpv.harness.flops` (the vision tower is not counted).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from sharpv.compat import cache_keys, cache_kwargs, output_cache
from sharpv.errors import SharpVError
from sharpv.harness.flops import computed_lengths, extra_score_tokens, prefill_flops
from sharpv.methods import METHODS, PruningMethod, create

ADAPTIVE = "adaptive"
#: methods that have an adaptive (content-dependent total) mode


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


def measure(model, method, inputs, *, repeats: int, warmup: int, new_tokens: int) -> dict:
    memory = PeakMemory(model.device)
    for _ in range(warmup):
        run_once(model, method, inputs, new_tokens, memory)
    runs = [run_once(model, method, inputs, new_tokens, memory) for _ in range(repeats)]
    med = lambda xs: float(statistics.median(xs))  # noqa: E731
    stats = runs[-1].stats
    text_config = model.config.get_text_config()
    lengths = computed_lengths(stats, text_config.num_hidden_layers)
    extra = extra_score_tokens(stats, method.name)
    prefill = med([r.prefill_seconds for r in runs])
    vision = med([r.vision_seconds for r in runs])
    decode = med([r.decode_seconds for r in runs])
    return {
        "visual_tokens_in": stats.visual_tokens_in,
        "visual_tokens_kept": stats.visual_tokens_kept,
        "kept_share": stats.visual_tokens_kept / max(1, stats.visual_tokens_in),
        # the mean share of the video's visual tokens each LLM layer computes (= kept_share unless the
        # method also prunes inside the LLM): the "equivalent retention" FlashVID and HoliTom report
        "equivalent_retention": getattr(stats, "equivalent_retention", None),
        "sequence_length": stats.sequence_length_out,
        "prefill_seconds": prefill,
        "vision_seconds": vision,
        "ttft_seconds": prefill + vision,
        "pruning_seconds": med([r.stats.pruning_seconds + r.stats.extra_seconds for r in runs]),
        "decode_tokens_per_second": new_tokens / decode if decode > 0 else None,
        "kv_cache_bytes": stats.kv_cache_bytes,
        "kv_cache_bytes_per_layer": stats.kv_cache_bytes_per_layer,
        "kv_withdraw_layer": stats.kv_withdraw_layer,
        "peak_memory_bytes": max(r.peak_memory_bytes for r in runs),
        "prefill_flops": prefill_flops(text_config, lengths, extra),
    }


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


def measure_ideal(model, inputs: dict, kept: int, n_visual: int, *, repeats: int, warmup: int) -> dict:
    """The "ideal" prefill at ``kept`` of ``n_visual`` visual tokens (median of ``repeats``): the
    unmodified language model on exactly the sequence a pre-LLM method that kept ``kept`` tokens
    feeds it. No scoring, no selection, no rebuilding of the inputs, no merge of the video features
    into the prompt: the limit any pre-LLM method can reach at that budget."""
    feed = ideal_inputs(model, inputs, kept, n_visual)
    device = model.device
    times = []
    for i in range(warmup + repeats):
        with torch.inference_mode():
            _sync(device)
            start = time.perf_counter()
            ideal_prefill(model, feed)
            _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    length = next(v for k, v in feed.items() if k in ("inputs_embeds", "input_ids") and v is not None).shape[1]
    return {"visual_tokens_in": n_visual, "visual_tokens_kept": kept, "kept_share": kept / n_visual,
            "equivalent_retention": kept / n_visual, "sequence_length": int(length),
            "prefill_seconds": float(statistics.median(times))}


def environment(model, *, dtype: str, device: str, source: str, vision: str, noise: float) -> dict:
    import transformers

    from sharpv import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
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
    """Every (method, budget) to run; dense once (budget None); 'adaptive' only where a method has it;
    a fixed spec (a config file's method) once, at its own budget."""
    runs: list[tuple[MethodSpec, float | None]] = [(MethodSpec("dense", "dense"), None)]
    for spec in methods:
        if spec.fixed:
            runs.append((spec, spec.fixed_budget))
            continue
        if spec.name == "dense":
            continue
        for budget in budgets:
            if budget is None and not METHODS[spec.name].adaptive:
                continue
            runs.append((spec, budget))
    return runs


def run_bench(model, make_inputs: Callable[[int], dict], *, methods: list[MethodSpec], budgets: list[float | None],
              frames: list[int], repeats: int, warmup: int, new_tokens: int,
              on_step: Callable[[str], None] | None = None, ideal: bool = True) -> list[dict]:
    """Run the plan for every frame count; returns one record per method x budget x frames, then
    (``ideal``) the "ideal" rows of :func:`measure_ideal` for that frame count."""
    records = []
    runs = plan(methods, budgets)
    for n_frames in frames:
        inputs = make_inputs(n_frames)
        dense: dict | None = None
        for spec, budget in runs:
            if on_step:
                on_step(f"{n_frames} frames: {spec.label} @ {budget if budget is not None else ADAPTIVE if spec.name != 'dense' else '-'}")
            result = measure(model, spec.build(budget), inputs, repeats=repeats, warmup=warmup, new_tokens=new_tokens)
            if dense is None:
                dense = result
            record = {"method": spec.label, "method_name": spec.name, "budget": budget, "frames": n_frames, **result}
            record["prefill_speedup"] = dense["prefill_seconds"] / result["prefill_seconds"]
            record["ttft_speedup"] = dense["ttft_seconds"] / result["ttft_seconds"]
            record["kv_ratio"] = result["kv_cache_bytes"] / dense["kv_cache_bytes"] if dense["kv_cache_bytes"] else None
            record["flops_ratio"] = result["prefill_flops"] / dense["prefill_flops"]
            record["pruning_share_of_dense_prefill"] = result["pruning_seconds"] / dense["prefill_seconds"]
            tps, dtps = result["decode_tokens_per_second"], dense["decode_tokens_per_second"]
            record["decode_speedup"] = tps / dtps if tps and dtps else None
            records.append(record)
        if ideal:
            records.extend(_ideal_rows(model, inputs, records, n_frames, dense, repeats=repeats, warmup=warmup,
                                       on_step=on_step))
    return records


def _ideal_rows(model, inputs: dict, records: list[dict], n_frames: int, dense: dict, *, repeats: int, warmup: int,
                on_step: Callable[[str], None] | None) -> list[dict]:
    """One "ideal" row per visual-token count a method of this frame count handed the LLM (or, for
    methods that prune inside it, per budget), and every record's ``prefill_vs_ideal``: its prefill
    over the ideal prefill at the same count (1.02: within 2% of the limit)."""
    from sharpv.core.selection import budget_total

    mine = [r for r in records if r["frames"] == n_frames and r["method_name"] != "dense"]
    wanted: dict[int, float | None] = {}
    for r in mine:
        n = r["visual_tokens_in"]
        if r["visual_tokens_kept"] < n:
            count = r["visual_tokens_kept"]
        elif r["budget"] is not None:
            count = budget_total(r["budget"], 1, n)
        else:
            continue
        r["_ideal_tokens"] = count
        wanted.setdefault(count, r["budget"])
    rows, by_count = [], {}
    for count, budget in sorted(wanted.items()):
        if on_step:
            on_step(f"{n_frames} frames: ideal @ {count} visual tokens")
        result = measure_ideal(model, inputs, count, dense["visual_tokens_in"], repeats=repeats, warmup=warmup)
        by_count[count] = result["prefill_seconds"]
        rows.append({"method": "ideal", "method_name": "ideal", "budget": budget, "frames": n_frames, **result,
                     "prefill_speedup": dense["prefill_seconds"] / result["prefill_seconds"]})
    for r in mine:
        count = r.pop("_ideal_tokens", None)
        r["prefill_vs_ideal"] = r["prefill_seconds"] / by_count[count] if count is not None else None
    return rows
