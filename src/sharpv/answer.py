"""Answer questions about a video with a video LLM and any registered method: the CLI's main job.

:func:`answer_question` answers one question. :func:`answer_questions` answers several questions
about one video and prefills the pruned video once: the methods are query-agnostic (neither stage
reads the question), so the pruned video prefix and its cache are the same for every question;
each question then costs only its own tokens' prefill on that cache (see :func:`generate_answers`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from sharpv.compat import cache_kwargs, output_cache
from sharpv.adapters import adapter_class_for
from sharpv.errors import SharpVError
from sharpv.methods import PruningMethod, SharpV
from sharpv.adapters import DEFAULT_CHUNK_FRAMES, precompute_video_features
from sharpv.video import SampledVideo, build_inputs, load_processor, read_video_for

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: device types a model can be moved to here (bench narrows this to cpu and cuda)
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_dtype(dtype: str, flag: str = "--dtype", allow_auto: bool = True) -> str:
    """``dtype`` if it names one of :data:`DTYPES`; a :class:`SharpVError` naming ``flag`` if not."""
    names = [d for d in DTYPES if allow_auto or d != "auto"]
    if dtype not in names:
        raise SharpVError(f"{flag} must be one of {', '.join(names)}, got {dtype!r}")
    return dtype


def check_device(device: str, flag: str = "--device", types: tuple[str, ...] = DEVICE_TYPES) -> str:
    """``device`` if it is a torch device string of one of ``types`` that exists on this machine
    (``cuda:N`` with N below the CUDA device count; ``mps`` where MPS is built and available); a
    one-line :class:`SharpVError` naming ``flag`` otherwise. Cheap: nothing is allocated."""
    forms = [form for t in types for form in ((t, f"{t}:N") if t == "cuda" else (t,))]
    expected = f"{flag} must be {', '.join(forms[:-1])} or {forms[-1]}, got {device!r}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SharpVError(expected) from None
    if parsed.type not in types:
        raise SharpVError(expected)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
            raise SharpVError(f"{flag} {device}: no CUDA device is available here{build}; use {flag} cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise SharpVError(f"{flag} {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SharpVError(f"{flag} {device}: MPS is not available here; use {flag} cpu")
    return device


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Answer:
    answer: str
    method: str
    model_type: str
    frames: int
    visual_tokens_in: int
    visual_tokens_kept: int
    kept_per_frame: list[int]
    prefill_seconds: float
    pruning_seconds: float
    generate_seconds: float
    kv_mode: str | None = None
    kv_withdraw_layer: int | None = None
    layer_similarity: list[float] = field(default_factory=list)
    kv_cache_bytes: int = 0
    kv_cache_bytes_dense: int = 0
    kv_cache_bytes_per_layer: list[int] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    config: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PrefillTimer:
    """Times the first forward call of ``generate()`` (the prefill) with forward hooks.

    ``prepend=True`` puts the timer's hooks before hooks registered earlier, so a timer added after
    a method was applied times what one added before it times: the method's rewrite of the call and
    the model's forward (not the method's bookkeeping after it). ``on_prefill(output)`` runs right
    after the first forward, while its cache holds the prompt and nothing decoded yet."""

    def __init__(self, model: torch.nn.Module, *, prepend: bool = False,
                 on_prefill: Callable[[Any], None] | None = None):
        self.seconds: float | None = None
        self._start: float | None = None
        self._on_prefill = on_prefill
        self._handles = [
            model.register_forward_pre_hook(self._pre, prepend=prepend),
            model.register_forward_hook(self._post, prepend=prepend),
        ]
        self._device = next(model.parameters()).device

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _pre(self, *_: Any) -> None:
        if self.seconds is None and self._start is None:
            self._sync()
            self._start = time.perf_counter()

    def _post(self, module: Any, args: Any, output: Any) -> None:
        if self.seconds is None and self._start is not None:
            self._sync()
            self.seconds = time.perf_counter() - self._start
            if self._on_prefill is not None:
                self._on_prefill(output)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def load_model(model_dir: str | Path, dtype: str = "auto", device: str = "cpu", attn_implementation: str = "sdpa"):
    """Load a supported video LLM and its processor from a local directory via ``from_pretrained``."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    path = Path(model_dir)
    if not path.exists():
        raise SharpVError(f"model directory {path} does not exist; pass a local checkpoint (see `sharpv tiny-model`)")
    if not path.is_dir():
        raise SharpVError(f"model directory {path} is a file; pass the checkpoint's folder (with config.json)")
    check_dtype(dtype)
    check_device(device)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise SharpVError(f"{path} is not a transformers model directory ({type(exc).__name__}); pass a checkpoint folder with config.json") from None
    family = adapter_class_for(config.model_type).family
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
    if DTYPES[dtype] is not None:
        kwargs["dtype"] = DTYPES[dtype]
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise SharpVError(f"{path}: the model's weights do not load ({_first_line(exc)})") from None
    try:
        processor = load_processor(path, family)
    except SharpVError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise SharpVError(f"{path}: the processor files do not load ({_first_line(exc)})") from None
    return model.to(device).eval(), processor


@dataclass
class Generation:
    """What one ``generate()`` call under a method produced."""

    text: str
    new_tokens: list[int]
    stats: Any  # PruningStats of the prefill
    prefill_seconds: float
    generate_seconds: float
    logits: tuple[torch.Tensor, ...] | None = None  # per generated token, when asked for (output_logits=True)


def inputs_on(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """Move processor outputs to the model's device (pixels also to its dtype); other values (such
    as precomputed ``mm_encoder_outputs``) pass through unchanged."""
    device = next(model.parameters()).device
    return {
        k: v if not isinstance(v, torch.Tensor)
        else v.to(device, model.dtype) if v.is_floating_point() and k.startswith("pixel") else v.to(device)
        for k, v in inputs.items()
    }


def _decode(processor: Any, out: Any, prompt_length: int) -> tuple[str, list[int]]:
    new = out.sequences[0, prompt_length:].tolist()
    tokenizer = getattr(processor, "tokenizer", processor)
    return tokenizer.decode(new, skip_special_tokens=True).strip(), new


def generate_answer(model: torch.nn.Module, processor: Any, inputs: dict[str, torch.Tensor], method: PruningMethod,
                    *, max_new_tokens: int = 32, do_sample: bool = False,
                    generate_kwargs: dict[str, Any] | None = None) -> Generation:
    """Apply ``method``, run ``generate()`` on processor ``inputs`` (a batch of one), remove the method.
    ``generate_kwargs`` go to ``generate()`` as well (e.g. ``output_logits=True``)."""
    inputs = inputs_on(model, inputs)
    timer = PrefillTimer(model)
    handle = method(model)
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, return_dict_in_generate=True,
                **(generate_kwargs or {}),
            )
        generate_seconds = time.perf_counter() - start
    finally:
        timer.remove()
        handle.remove()
    text, new = _decode(processor, out, inputs["input_ids"].shape[1])
    if handle.stats is None:
        raise SharpVError("the prompt reached the model without video tokens; check the processor and the video")
    return Generation(text, new, handle.stats, timer.seconds or 0.0, generate_seconds, getattr(out, "logits", None))


# --- several questions on one pruned video ------------------------------------------------------
#: processor outputs that run along the prompt; every other input (the video) must be the same
#: for all questions that share a prefix
SEQUENCE_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids")


def shared_prefix_refusal(method: PruningMethod, adapter: Any = None) -> str | None:
    """Why ``method`` cannot share one pruned video prefix between questions (one line), or None.

    Shared prefixes need pruning that never looks at the question and that leaves the prefix's
    cache as a one-question prefill would have it when the question's tokens arrive. Refused:
    ``kv_mode="layerwise"`` (it drops visual KV entries after each prefill, so the questions would be
    prefilled without them) and methods that rank visual tokens by the prompt's last token (FastV:
    that token belongs to the question). With ``adapter=None`` (before a model is loaded) a method
    whose layer policy needs the model is let through here and checked again once it is loaded.
    """
    from sharpv.layer_pruning import AttentionPolicy

    try:
        policy = method.layer_policy(adapter)
    except Exception:  # a policy that needs the model (VTW's layer count) before one is loaded
        if adapter is not None:
            raise
        return None
    if policy is None:
        return None
    rule, mode = policy
    if mode == "layerwise":
        return (
            f"{method.name} with kv_mode='layerwise' (--kv-mode layerwise) cannot share one pruned video between "
            "questions: it drops visual KV entries after the shared video prefill, before any question is read, "
            "which a one-question prefill does not; use kv_mode='withdraw' (the default) or ask one question at a time"
        )
    if isinstance(rule, AttentionPolicy):
        return (
            f"{method.name} ranks visual tokens by the attention of the prompt's last token, which belongs to the "
            "question, so its pruned video differs per question: ask one question at a time"
        )
    return None


def check_shared_prefix_method(method: PruningMethod, adapter: Any = None) -> None:
    """:func:`shared_prefix_refusal` as a :class:`SharpVError`."""
    reason = shared_prefix_refusal(method, adapter)
    if reason is not None:
        raise SharpVError(reason)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def shared_prefix_length(inputs_list: Sequence[dict[str, Any]], video_token_id: int, *,
                         may_end_on_video: bool = False) -> int:
    """Length of the video prefix the prompts in ``inputs_list`` (processor outputs, batches of one)
    share: the prompt through its last video token, extended by the tokens that follow it in every
    prompt up to the first that differs (the chat template's tokens after the video, such as
    Qwen-VL's ``<|vision_end|>``), and short enough that every prompt keeps at least one token of its
    own. A :class:`SharpVError` if the prompts differ before the end of the video (the chat template
    must put each question after the video), if their video inputs differ, or if the prefix would
    end on a video token where ``may_end_on_video`` is False (models whose positions after a video
    do not follow from its last kept token: Qwen-VL's M-RoPE, where stage 1 may also drop it).
    """
    if not inputs_list:
        raise SharpVError("no questions: pass at least one")
    first = inputs_list[0]
    for k, inputs in enumerate(inputs_list, 1):
        if inputs["input_ids"].dim() != 2 or inputs["input_ids"].shape[0] != 1:
            raise SharpVError(f"question {k}'s inputs are a batch of {inputs['input_ids'].shape[0]}; pass one prompt per question")
        if set(inputs) != set(first):
            raise SharpVError(f"question {k}'s inputs have other fields than question 1's; build them all with the same processor")
        for key in inputs:
            if key not in SEQUENCE_INPUTS and not _same(inputs[key], first[key]):
                raise SharpVError(
                    f"question {k}'s {key} differs from question 1's: one pruned video prefix serves one video; "
                    "group the questions by video"
                )
    ids = first["input_ids"][0]
    where = (ids == video_token_id).nonzero()
    if where.numel() == 0:
        raise SharpVError("the prompt has no video tokens; check the processor and the video")
    last = int(where.max())
    length = min(int(x["input_ids"].shape[1]) for x in inputs_list) - 1
    for k, inputs in enumerate(inputs_list[1:], 2):
        other = inputs["input_ids"][0].to(ids.device)
        n = min(ids.numel(), other.numel())
        differ = (ids[:n] != other[:n]).nonzero()
        common = int(differ[0]) if differ.numel() else n
        if common <= last:
            raise SharpVError(
                f"question {k}'s prompt differs from question 1's at token {common}, before the end of the video "
                f"(token {last}): the questions can share the pruned video only if the chat template puts each "
                "question after the video in the same user turn; answer them one at a time"
            )
        length = min(length, common)
    if length <= last:
        raise SharpVError("a prompt ends with the video: every question needs tokens after it")
    if int(ids[length - 1]) == video_token_id and not may_end_on_video:
        raise SharpVError(
            "the questions start right after the video's last token, where a pruned prefix cannot end on this "
            "model (the positions after the video do not follow from its last kept token); ask one question at a time"
        )
    return length


@dataclass
class SharedGenerations:
    """What :func:`generate_answers` produced: one :class:`Generation` per question (its
    ``prefill_seconds`` is the question's own prefill on the shared prefix, its ``stats`` the
    prefix's pruning with the KV cache measured after that question's prefill), and the prefix."""

    generations: list[Generation]
    prefix_tokens: int  # tokens of the unpruned prompt in the shared prefix (0: no prefix was shared)
    prefix_cache_length: int  # what the pruned prefix holds in the cache (layer 0)
    prefix_prefill_seconds: float  # its prefill (pruning included), once
    prefix_stats: Any  # PruningStats of the prefix's prefill


def generate_answers(model: torch.nn.Module, processor: Any, inputs_list: Sequence[dict[str, torch.Tensor]],
                     method: PruningMethod, *, max_new_tokens: int = 32, do_sample: bool = False,
                     generate_kwargs: dict[str, Any] | None = None) -> SharedGenerations:
    """Answer several prompts about one video, prefilling the pruned video prefix once.

    ``inputs_list``: processor outputs of one video with different questions (batches of one).
    ``method`` is applied once; the shared prefix (:func:`shared_prefix_length`) is prefilled once
    with ``generate(max_new_tokens=1)`` (so the method prunes it exactly as it prunes a prompt:
    stage 1, and stage 2's per-layer cache), then every question runs
    ``generate(input_ids=<its whole prompt>, attention_mask=..., cache=<prefix cache>)`` (``past_key_values=`` before transformers 5.25)
    (the runtime recognises the repeated prefix tokens and feeds only the question's), and the cache
    is cut back to the prefix with ``cache.crop(-n)`` before the next one. Each answer equals
    answering its question alone with the same method (tested: greedy tokens equal, logits within
    1e-5). One prompt: plain :func:`generate_answer`. Methods :func:`shared_prefix_refusal` names
    are refused with a :class:`SharpVError`.
    """
    if len(inputs_list) == 1:
        gen = generate_answer(model, processor, inputs_list[0], method, max_new_tokens=max_new_tokens,
                              do_sample=do_sample, generate_kwargs=generate_kwargs)
        return SharedGenerations([gen], 0, 0, 0.0, gen.stats)
    from sharpv.adapters import adapter_for
    from sharpv.layer_pruning import cache_sizes

    adapter = adapter_for(model)
    check_shared_prefix_method(method, adapter)
    settings = {**model.generation_config.to_dict(), **(generate_kwargs or {})}
    for name in ("num_beams", "num_return_sequences"):
        if (settings.get(name) or 1) > 1:
            raise SharpVError(
                f"{name}={settings[name]} expands the cache per sequence, so it cannot be shared between questions; "
                "decode one sequence per question (num_beams=1), or ask one question at a time"
            )
    inputs_list = [inputs_on(model, x) for x in inputs_list]
    length = shared_prefix_length(inputs_list, adapter.video_token_id,
                                  may_end_on_video=adapter.extra_tokens_per_video > 0)
    prefix = {k: (v[:, :length] if k in SEQUENCE_INPUTS else v) for k, v in inputs_list[0].items()}
    handle = method(model)
    try:
        prefix_timer = PrefillTimer(model, prepend=True)
        try:
            with torch.inference_mode():
                out = model.generate(**prefix, max_new_tokens=1, do_sample=False, return_dict_in_generate=True)
        finally:
            prefix_timer.remove()
        stats = handle.stats
        if stats is None:
            raise SharpVError("the prompt reached the model without video tokens; check the processor and the video")
        cache = output_cache(out)
        cached = int(cache.get_seq_length())
        generations = []
        for inputs in inputs_list:
            full_length = int(inputs["input_ids"].shape[1])
            measured: dict[str, Any] = {}

            def measure(output: Any, full_length: int = full_length, measured: dict = measured) -> None:
                sizes, lengths, dense = cache_sizes(output_cache(output), full_length)
                measured.update(kv_cache_bytes_per_layer=sizes, kv_cache_bytes=sum(sizes), kv_cache_lengths=lengths,
                                kv_cache_bytes_dense=dense, sequence_length_in=full_length,
                                sequence_length_out=lengths[0] if lengths else 0)

            call = {k: inputs[k] for k in SEQUENCE_INPUTS if k in inputs}
            timer = PrefillTimer(model, prepend=True, on_prefill=measure)
            start = time.perf_counter()
            with torch.inference_mode():
                try:
                    out = model.generate(**call, **cache_kwargs(cache), max_new_tokens=max_new_tokens,
                                         do_sample=do_sample, return_dict_in_generate=True, **(generate_kwargs or {}))
                finally:
                    timer.remove()
                    grown = int(cache.get_seq_length()) - cached
                    if grown > 0:
                        cache.crop(-grown)  # back to the prefix: every layer drops the same tail
            generate_seconds = time.perf_counter() - start
            text, new = _decode(processor, out, full_length)
            generations.append(Generation(text, new, replace(stats, **measured), timer.seconds or 0.0,
                                          generate_seconds, getattr(out, "logits", None)))
    finally:
        handle.remove()
    return SharedGenerations(generations, length, cached, prefix_timer.seconds or 0.0, stats)


def default_frames(model: torch.nn.Module, processor: Any) -> int:
    """Frames to sample when the user gives none: the checkpoint's own ``num_frames`` if its video
    processor config declares one (the shipped model does), else the family's usual count."""
    settings = getattr(processor, "settings", None)
    if isinstance(settings, dict):
        n = settings.get("num_frames")
    else:
        n = getattr(getattr(processor, "video_processor", None), "num_frames", None)
    return int(n) if n else adapter_class_for(model.config.model_type).default_frames


def _answer(gen: Generation, method: PruningMethod, model: torch.nn.Module, cls: type = None, **extra: Any) -> "Answer":
    s = gen.stats
    kv = dict(
        kv_mode=s.kv_mode, kv_withdraw_layer=s.kv_withdraw_layer, layer_similarity=s.layer_similarity,
        kv_cache_bytes=s.kv_cache_bytes, kv_cache_bytes_dense=s.kv_cache_bytes_dense,
        kv_cache_bytes_per_layer=s.kv_cache_bytes_per_layer,
    )
    return (cls or Answer)(
        answer=gen.text,
        method=method.name,
        model_type=model.config.model_type,
        frames=s.frames,
        visual_tokens_in=s.visual_tokens_in,
        visual_tokens_kept=s.visual_tokens_kept,
        kept_per_frame=s.kept_per_frame,
        prefill_seconds=gen.prefill_seconds,
        pruning_seconds=s.pruning_seconds + s.extra_seconds,
        generate_seconds=gen.generate_seconds,
        new_tokens=gen.new_tokens,
        config=method.config.to_dict(),
        **kv,
        **extra,
    )


def _check_max_new_tokens(max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise SharpVError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")


def _video(model: torch.nn.Module, processor: Any, video: "str | Path | SampledVideo", frames: int | None) -> SampledVideo:
    if isinstance(video, SampledVideo):
        return video
    # streaming: every kept frame is resized to the model's input size as it is decoded
    return read_video_for(processor, video, frames if frames is not None else default_frames(model, processor))


def answer_question(
    model: torch.nn.Module,
    processor: Any,
    video_path: str | Path,
    question: str,
    *,
    method: PruningMethod | None = None,
    frames: int | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
) -> Answer:
    """Answer ``question`` about a video (a file, a folder of frames or a
    :class:`~sharpv.video.SampledVideo`) with ``method`` applied (default :class:`SharpV`).

    Long videos stay in bounded memory: frames are resized as they are decoded, and the vision
    tower runs ``chunk_frames`` frames at a time (features equal to one-shot encoding)."""
    method = method if method is not None else SharpV()
    if not isinstance(question, str) or not question.strip():
        raise SharpVError("the question is empty; ask something about the video")
    _check_max_new_tokens(max_new_tokens)
    video = _video(model, processor, video_path, frames)
    inputs = precompute_video_features(model, build_inputs(processor, question, video), chunk_frames)
    gen = generate_answer(model, processor, inputs, method, max_new_tokens=max_new_tokens, do_sample=do_sample)
    return _answer(gen, method, model)


@dataclass
class QuestionAnswer(Answer):
    """One answer of :func:`answer_questions`: every field of :class:`Answer` plus the question and
    the shared prefix's timing. ``prefill_seconds`` is this question's own prefill (its tokens on
    the pruned video prefix, = ``question_prefill_seconds``); ``prefix_prefill_seconds`` is the
    video prefix's prefill, paid once for all questions of the call (the same value in each
    result; 0 when one question was asked: its prefill is the whole prompt's).
    ``pruning_seconds`` and the visual-token fields are the prefix's (pruned once);
    ``kv_cache_bytes*`` are measured after this question's prefill, as for one question alone."""

    question: str = ""
    prefix_prefill_seconds: float = 0.0
    question_prefill_seconds: float = 0.0
    prefix_tokens: int = 0  # tokens of the unpruned prompt in the shared prefix (0: not shared)
    question_tokens: int = 0  # tokens of this question's prompt after the prefix


def answer_questions(
    model: torch.nn.Module,
    processor: Any,
    video: "str | Path | SampledVideo",
    questions: Sequence[str],
    *,
    method: PruningMethod | None = None,
    frames: int | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
) -> list[QuestionAnswer]:
    """Answer every question in ``questions`` about one video, pruning and prefilling the video once.

    ``video``: a file, a folder of frames, or a :class:`~sharpv.video.SampledVideo`; it is read
    once (``frames`` frames, default the checkpoint's). ``method`` (default :class:`SharpV`) must be
    query-agnostic: ``kv_mode="layerwise"`` and FastV are refused with a :class:`SharpVError` (see
    :func:`shared_prefix_refusal`); ask those one question at a time with :func:`answer_question`.

    How: the prompt up to and including the video (and the chat template's tokens after it that
    every question shares) is prefilled once under ``method`` (stage 1, and stage 2's per-layer
    cache); each question then prefills only its own tokens on that cache, generates, and the cache
    is cut back to the prefix (``cache.crop(-n)``) for the next one (:func:`generate_answers`).
    Each answer equals asking that question alone with the same method (greedy tokens equal,
    logits within 1e-5; tested on LLaVA-OneVision, Qwen2.5-VL and Qwen3-VL, stage 2 on and off).

    Returns one :class:`QuestionAnswer` per question, in order: the answer and tokens, the
    prefix's prefill time once (``prefix_prefill_seconds``, the same in every result) and each
    question's prefill time (``question_prefill_seconds``). N questions cost one video prefill plus
    N question prefills instead of N full prefills (and one video decode and encoder pass).
    """
    method = method if method is not None else SharpV()
    if isinstance(questions, str) or not isinstance(questions, Sequence) or not questions:
        raise SharpVError("questions must be a non-empty list of questions about the video")
    for k, question in enumerate(questions, 1):
        if not isinstance(question, str) or not question.strip():
            raise SharpVError(f"question {k} is empty; ask something about the video")
    _check_max_new_tokens(max_new_tokens)
    if len(questions) > 1:
        check_shared_prefix_method(method)
    sampled = _video(model, processor, video, frames)
    inputs = [build_inputs(processor, question, sampled) for question in questions]
    # the video is encoded once (chunk by chunk) and its features shared by every question
    features = precompute_video_features(model, inputs[0], chunk_frames).get("mm_encoder_outputs")
    if features is not None:
        inputs = [{**{k: v for k, v in x.items() if k != "pixel_values_videos"}, "mm_encoder_outputs": features}
                  for x in inputs]
    shared = generate_answers(model, processor, inputs, method, max_new_tokens=max_new_tokens, do_sample=do_sample)
    results = []
    for question, x, gen in zip(questions, inputs, shared.generations):
        results.append(_answer(
            gen, method, model, QuestionAnswer, question=question,
            prefix_prefill_seconds=shared.prefix_prefill_seconds, question_prefill_seconds=gen.prefill_seconds,
            prefix_tokens=shared.prefix_tokens, question_tokens=int(x["input_ids"].shape[1]) - shared.prefix_tokens,
        ))
    return results
