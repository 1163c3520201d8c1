"""The ``sharpv`` model of lmms-eval: a transformers video LLM answering under a pruning method.

Imported by lmms-eval only (it subclasses ``lmms_eval.api.model.lmms``); see
:mod:`sharpv.integrations.lmms_eval` for the command line. Each request is answered on its own
prefill, as ``sharpv eval`` answers a video with one question, with the same reading of the video
(:func:`sharpv.video.read_video_for`), the same prompt building (:func:`sharpv.video.build_inputs`)
and the same generation (:func:`sharpv.answer.generate_answer`), so the two give the same answers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm

from sharpv.errors import SharpVError
from sharpv.integrations.lmms_eval.model_args import ModelArgs, parse_model_args


def _stop(exc: SharpVError) -> SystemExit:
    """One line on stderr and exit code 2: lmms-eval prints a traceback for any Exception and goes
    on with the next task, so a bad setting or input leaves as SystemExit, which it lets through.
    (From Python, :func:`~sharpv.integrations.lmms_eval.model_args.parse_model_args` raises the
    :class:`SharpVError` itself.)"""
    print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
    return SystemExit(2)


def _local_checkpoint(pretrained: str) -> Path:
    """A local folder as it is; a Hub repo id downloaded (weights, config, processor files) into
    the Hugging Face cache, as ``from_pretrained`` would."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(pretrained, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt",
                                                                "*.model", "*.tiktoken"]))


class SharpVLMM(lmms):
    """``lmms-eval --model sharpv --model_args pretrained=DIR,method=sharpv,keep_ratio=0.2,...``.

    ``model_args``: ``pretrained`` (a local checkpoint folder or a Hub repo id of a supported
    family; default: the model sharpv ships), ``method`` (any registered method; default
    ``sharpv``) and its settings by name (``keep_ratio``, ``positions``, and the method's own, e.g.
    ``kv=false``, ``kv_threshold=0.2``), ``max_frames_num`` (or ``max_num_frames``; frames sampled
    uniformly; default the checkpoint's own count or the family's usual one), ``device``,
    ``dtype`` (auto, bfloat16, float16, float32), ``attn_implementation`` (sdpa, eager,
    flash_attention_2, flex_attention), ``chunk_frames`` (frames per vision-tower call) and
    ``stats_path`` (a JSON file for the per-request pruning statistics). A bad value stops the run
    before any weight loads, with one line on stderr and exit code 2.
    """

    is_simple = True

    def __init__(self, batch_size: Any = 1, max_batch_size: Any = None, **model_args: Any) -> None:
        super().__init__()
        try:
            self.args: ModelArgs = parse_model_args(model_args)
        except SharpVError as exc:
            raise _stop(exc) from None
        from loguru import logger

        self._log = logger
        if str(batch_size) not in ("1", "None"):
            logger.warning(f"sharpv answers one request at a time (each on its own pruned prefill); batch_size={batch_size} is ignored")
        from sharpv.answer import default_frames, load_model

        try:
            self._model, self._processor = load_model(_local_checkpoint(self.args.pretrained), dtype=self.args.dtype,
                                                      device=self.args.device,
                                                      attn_implementation=self.args.attn_implementation)
        except SharpVError as exc:
            raise _stop(exc) from None
        self.frames = self.args.frames or default_frames(self._model, self._processor)
        self.records: list[dict] = []
        self._reported = 0
        logger.info(f"sharpv: {self.args.describe()} on {self.args.pretrained} ({self.args.model_type}), "
                    f"{self.frames} frames, {self.args.device}")

    # --- lmms-eval's interface ------------------------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def device(self):
        return self.args.device

    @property
    def batch_size(self) -> int:
        return 1

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "sharpv's lmms-eval model implements generate_until only; this task scores answers by "
            "log-likelihood: pick the task's generate_until variant")

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(
            "sharpv's lmms-eval model answers one question per video (generate_until); multi-round "
            "tasks are not supported")

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        out = []
        for request in tqdm(requests, desc=f"sharpv ({self.args.method.name})", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            try:
                video = self._video(doc_to_visual(self.task_dict[task][split][doc_id]), task, doc_id)
                text, counts = self._answer(context, video, dict(gen_kwargs), task, doc_id)
            except SharpVError as exc:  # a video that does not decode, a doc without one: one line
                raise _stop(exc) from None
            out.append(GenerationResult(text=text, token_counts=counts))
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        self._report()
        return out

    # --- one request ----------------------------------------------------------------------------
    def _video(self, visuals: Any, task: str, doc_id: int):
        from sharpv.video import read_video_for

        visuals = list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]
        paths = [v for v in visuals if isinstance(v, (str, Path))]
        if len(visuals) != 1 or len(paths) != 1:
            kinds = ", ".join(sorted({type(v).__name__ for v in visuals})) or "nothing"
            raise SharpVError(f"task {task}, doc {doc_id}: sharpv answers questions about one video file, "
                              f"but doc_to_visual gave {len(visuals)} visual(s) ({kinds})")
        return read_video_for(self._processor, paths[0], self.frames)

    def _answer(self, context: str, video: Any, gen_kwargs: dict, task: str, doc_id: int):
        from sharpv.answer import generate_answer
        from sharpv.video import build_inputs

        until = gen_kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        max_new_tokens = int(gen_kwargs.pop("max_new_tokens", 128))
        temperature = float(gen_kwargs.pop("temperature", 0) or 0)
        do_sample = bool(gen_kwargs.pop("do_sample", False)) or temperature > 0
        extra: dict[str, Any] = {}
        if do_sample:
            extra["temperature"] = temperature or 1.0
            if gen_kwargs.get("top_p") is not None:
                extra["top_p"] = float(gen_kwargs["top_p"])
        gen_kwargs.pop("top_p", None)
        beams = int(gen_kwargs.pop("num_beams", 1) or 1)
        if beams > 1:
            extra["num_beams"] = beams
        inputs = build_inputs(self._processor, context, video)
        gen = generate_answer(self._model, self._processor, inputs, self.args.method, max_new_tokens=max_new_tokens,
                              do_sample=do_sample, generate_kwargs=extra)
        text = gen.text
        for stop in until:
            if stop:
                text = text.split(stop)[0]
        s = gen.stats
        prompt = int(inputs["input_ids"].shape[1])
        self.records.append({
            "task": task, "doc_id": doc_id, "frames": s.frames,
            "visual_tokens_in": s.visual_tokens_in, "visual_tokens_kept": s.visual_tokens_kept,
            "prompt_tokens": prompt, "llm_input_tokens": prompt - s.visual_tokens_in + s.visual_tokens_kept,
            "kv_cache_bytes": s.kv_cache_bytes, "kv_cache_bytes_dense": s.kv_cache_bytes_dense,
            "kv_withdraw_layer": s.kv_withdraw_layer,
            "prefill_seconds": gen.prefill_seconds, "pruning_seconds": s.pruning_seconds + s.extra_seconds,
            "generate_seconds": gen.generate_seconds,
        })
        return text, TokenCounts(input_tokens=self.records[-1]["llm_input_tokens"], output_tokens=len(gen.new_tokens))

    # --- statistics -----------------------------------------------------------------------------
    def summary(self, records: list[dict] | None = None) -> dict:
        """Totals over ``records`` (default: every request so far): visual tokens kept, KV cache
        bytes against dense, mean prefill seconds."""
        rs = self.records if records is None else records
        n = len(rs)
        kept, seen = sum(r["visual_tokens_kept"] for r in rs), sum(r["visual_tokens_in"] for r in rs)
        kv, kv_dense = sum(r["kv_cache_bytes"] for r in rs), sum(r["kv_cache_bytes_dense"] for r in rs)
        return {
            "method": self.args.method.name, "config": self.args.method.config.to_dict(),
            "pretrained": self.args.pretrained, "frames": self.frames, "requests": n,
            "visual_tokens_in": seen, "visual_tokens_kept": kept, "kept_share": kept / seen if seen else None,
            "kv_cache_bytes": kv, "kv_cache_bytes_dense": kv_dense, "kv_share": kv / kv_dense if kv_dense else None,
            "prefill_seconds_mean": sum(r["prefill_seconds"] for r in rs) / n if n else None,
        }

    def _report(self) -> None:
        batch = self.records[self._reported:]
        self._reported = len(self.records)
        if not batch:
            return
        s = self.summary(batch)
        share = f"{s['kept_share']:.1%}" if s["kept_share"] is not None else "-"
        kv = f"{s['kv_share']:.1%}" if s["kv_share"] is not None else "-"
        line = (f"sharpv: {self.args.describe()}: {s['requests']} requests, visual tokens kept "
                f"{s['visual_tokens_kept']}/{s['visual_tokens_in']} ({share}), KV cache "
                f"{s['kv_cache_bytes'] / 2**20:.2f} of {s['kv_cache_bytes_dense'] / 2**20:.2f} MiB ({kv}), "
                f"prefill {s['prefill_seconds_mean'] * 1e3:.1f} ms per request")
        print(line, file=sys.stderr, flush=True)
        if self.args.stats_path is not None:
            self.args.stats_path.parent.mkdir(parents=True, exist_ok=True)
            self.args.stats_path.write_text(json.dumps(
                {"summary": self.summary(), "requests": self.records, "written": time.strftime("%Y-%m-%dT%H:%M:%S")},
                indent=1) + "\n")
