"""Apply a pruning method to a model reversibly, the way kvpress applies a press.

``handle = sharpv.apply(model, config)`` (or ``method.apply(model)`` for any registered method)
registers forward hooks on ``model`` (nothing is patched, nothing global changes);
``handle.remove()`` takes them off and the model behaves exactly as before.
``with SharpV(config)(model): ...`` does the same around a block.

While applied, every forward call that carries a prompt with video placeholders on an empty cache
(the prefill of ``generate()`` or a direct ``model(**inputs)``) is rewritten before the model sees it:

1. the video features come from the model's own ``get_video_features`` (``generate()`` has already
   computed them; a direct call computes them the same way, and images in the same prompt through
   ``get_image_features``: images are never pruned);
2. the method selects the tokens the LLM receives, per video (for SharpV: stage 1);
3. the dropped tokens' placeholders leave ``input_ids`` (and ``attention_mask``,
   ``mm_token_type_ids``), the encoder output keeps only the kept features, and ``position_ids``
   are the kept tokens' original positions (or compact ones).

The runtime remembers, per cache object, how that pruned prompt maps onto the unpruned one. Every
later call on that cache (decode steps of ``generate()``, beams, speculative decoding, a manual
loop, a further chat turn) is mapped onto it from the cache's *real* length, so ``cache.crop()``
and ``reorder_cache`` need no bookkeeping of their own:

- ``attention_mask`` is read in the coordinates of the unpruned conversation (what ``generate()``
  passes); its prompt columns are replaced by the pruned prompt's. A 2-D mask longer than the
  conversation so far by fewer columns than the call's tokens means that the call repeats tokens
  the cache already holds (``generate()`` does this on a new turn, because it slices the history
  by the cache's length): those tokens are dropped from the call after a check that they are the
  conversation's own.
- positions continue where the unpruned sequence would be (``positions="original"``) or where the
  shortened one ends (``"compact"``); position ids passed in are ignored (they cannot know the
  pruned layout; for Qwen-VL ``generate()`` would even recompute vision positions for the history).
- video inputs passed again with the history are dropped: the video lives in the cache. A new video
  in a later turn is refused (start a fresh cache for a new video).
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from sharpv.adapters import adapter_for
from sharpv.compat import check_attention, check_cache, check_cache_handover, check_generation_config, output_cache
from sharpv.core import compact_positions, gather_positions, shorten, take
from sharpv.core.kv import Layout
from sharpv.errors import SharpVError
from sharpv.layer_pruning import DecodeStep, LayerPruner, SimilarityPolicy, cache_sizes
from sharpv.methods import PruningMethod, SharpV, SharpVConfig
from sharpv.stats import PruningStats, VideoStats

_ACTIVE: "weakref.WeakKeyDictionary[torch.nn.Module, AppliedMethod]" = weakref.WeakKeyDictionary()

_SEQUENCE_KEYS = ("position_ids", "mm_token_type_ids", "token_type_ids")
_VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
_IMAGE_KEYS = ("pixel_values", "image_sizes", "image_grid_thw", "batch_num_images")


class StageTwoEarlyWarning(UserWarning):
    """SharpV's stage 2 fired at the first layer it may (see ``AppliedMethod._warn_if_early``)."""


@dataclass
class _Continuation:
    """How a pruned prompt in one cache maps onto the unpruned prompt."""

    prompt_ids: torch.Tensor  # (B, L) the unpruned prompt
    prefill_mask: torch.Tensor  # (B, L') attention mask of the shortened prompt (L' = layer 0's cache length)
    needs_mask: bool  # shortened prompt has padding or position gaps: always pass a mask
    positions: torch.Tensor  # (B, L') or (P, B, L'): positions of the shortened prompt as fed
    visual: torch.Tensor  # (B, L') bool: video tokens of the shortened prompt
    full_positions: torch.Tensor  # (B, L) or (P, B, L): positions of the unpruned prompt
    layouts: list[Layout | None] | None = None  # stage 2: the prompt columns every layer holds
    original: bool = True  # fed at the unpruned prompt's positions (False: compact ones)

    @property
    def full_length(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def reduced_length(self) -> int:
        return self.prefill_mask.shape[1]

    def cut(self, n: int) -> "_Continuation":
        """The same mapping after the cache lost the prompt's last ``n`` tokens (``crop()`` after
        an assisted-generation prefill that carried draft tokens). Only tokens after the last
        video token can go: they are the same in the pruned and the unpruned prompt, and every
        layer holds them."""
        if n >= self.reduced_length or bool(self.visual[:, -n:].any()) or not bool(self.prefill_mask[:, -n:].all()):
            raise SharpVError(
                f"the cache was cut back by {n} entries into the pruned video prompt; crop only tokens after the "
                "video, or prefill the video again on a fresh cache"
            )
        layouts = None
        if self.layouts is not None:
            layouts = [None if l is None else Layout(l.index[:, :-n], l.valid[:, :-n]) for l in self.layouts]
        return _Continuation(
            self.prompt_ids[:, :-n], self.prefill_mask[:, :-n], self.needs_mask, self.positions[..., :-n],
            self.visual[:, :-n], self.full_positions[..., :-n], layouts, self.original,
        )

    def last_position(self) -> torch.Tensor:
        """The position tokens after the prompt count from, (B, 1) or (P, B, 1): the last fed
        token's, as ``generate()`` continues a prompt (each plane + 1 per token), except where a
        prompt at original M-RoPE positions ends on a video token. The next token then comes after
        the whole unpruned video (each row's largest position over the M-RoPE planes), whichever
        video tokens were kept. A fourth, leading plane (transformers' text positions: the
        sequence index, for masks) just continues."""
        last = self.positions[..., -1:]
        ends_on_video = self.visual[:, -1]
        if not self.original or last.dim() != 3 or not bool(ends_on_video.any()):
            return last
        rope = slice(1, None) if last.shape[0] == 4 else slice(None)
        top = self.full_positions[rope].amax(dim=(0, 2)).to(last)  # (B,)
        out = last.clone()
        out[rope, ends_on_video, 0] = top[ends_on_video]
        return out


def _locate(given: torch.Tensor, full: torch.Tensor, seen: int, q: int) -> list[int]:
    """How many tokens before ``seen`` a call may start whose first token has position ``given``
    ((B,) or (P', B)): the smallest r in [0, q) with the unpruned conversation's position at
    index ``seen - r`` equal to ``given``, else the r that generate()'s extrapolation of text
    positions gives (candidates in that order, possibly none). ``full`` holds the unpruned prompt's
    positions, (B, L) or (P, B, L); tokens after the prompt continue from its last position.
    Positions are unique in a conversation (text after a video continues past the video's
    largest position), so the match is unambiguous. For M-RoPE, 4 planes on both sides compare
    the sequential text plane; otherwise the M-RoPE planes (one given plane stands for all three:
    generate()'s text positions plus rope deltas)."""
    length = full.shape[-1]
    index = seen - torch.arange(q, device=full.device)  # candidates, r = 0, 1, ...
    inside = index.clamp(max=length - 1)
    candidates = full[..., inside] + (index - inside).clamp(min=0)  # (..., B, q)
    given = given.to(full.device)
    if full.dim() == 3:
        given = given if given.dim() == 2 else given[None]
        if given.shape[0] == full.shape[0] == 4:
            given, candidates = given[:1], candidates[:1]
        else:
            given, candidates = given[-min(3, given.shape[0]):], candidates[-3:]
    match = (candidates == given[..., None]).reshape(-1, q).all(0).nonzero()
    if match.numel():
        return [int(match[0])]
    # generate() on Qwen-VL without the vision inputs extrapolates text positions over the whole
    # history (index + rope delta, the delta counting from the prompt's largest position): read the
    # start from that line instead.
    top = (full[1:] if full.shape[0] == 4 else full).amax(dim=(0, 2)) if full.dim() == 3 else full.amax(dim=1)
    linear = (top + (seen - length + 1) - given.reshape(-1, given.shape[-1])).unique()
    return [int(linear)] if linear.numel() == 1 else []


def _as_keywords(module: torch.nn.Module, args: tuple) -> dict[str, Any]:
    """Positional arguments of a forward call under their parameter names (the hooks rewrite
    keywords only; a positional argument left behind would be passed twice or lost)."""
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(params):
        raise SharpVError(f"this forward call has {len(args)} positional arguments; pass the inputs by name (input_ids=..., ...)")
    return {p.name: value for p, value in zip(params, args)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seq_length(cache: Any) -> int:
    return int(cache.get_seq_length()) if cache is not None else 0


class AppliedMethod:
    """A pruning method applied to one model. Use as a context manager or call ``remove()``."""

    def __init__(self, model: torch.nn.Module, method: PruningMethod):
        if model in _ACTIVE:
            raise SharpVError("a pruning method is already applied to this model; remove the first handle before applying again")
        self.model = model
        self.method = method
        self.config = method.config
        self.adapter = adapter_for(model)
        policy = method.layer_policy(self.adapter)
        check_attention(model, prunes_in_llm=policy is not None)
        check_generation_config(model)
        self.stats: PruningStats | None = None
        self._caches: "weakref.WeakKeyDictionary[Any, _Continuation]" = weakref.WeakKeyDictionary()
        self._pending: _Continuation | None = None  # a pruned prefill whose cache is not known yet
        self._stepping = False
        self._passthrough = False
        self.layer_pruner = LayerPruner(model, self.adapter, policy[0], policy[1]) if policy is not None else None
        # methods ranking tokens by vision-encoder attention: hooks that recompute that layer's map
        # from its own q and k whenever the vision tower runs (see VisionAttentionRecorder)
        layer = getattr(method, "vision_attention", None)
        self.vision_recorder = self.adapter.vision_attention_recorder(layer) if layer is not None else None
        self._vision_seconds = 0.0
        self._warned_early = False
        self._handles = [
            model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            model.register_forward_hook(self._after_forward, with_kwargs=True, always_call=True),
        ]
        for module, hook in self.adapter.observed_modules():
            self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        if self.vision_recorder is not None:
            self._handles.extend(self.vision_recorder.register())
        _ACTIVE[model] = self

    # --- lifecycle --------------------------------------------------------------------------
    def remove(self) -> None:
        """Take every hook off the model; it then behaves exactly as before ``apply``."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._caches = weakref.WeakKeyDictionary()
        self._pending = None
        if self.layer_pruner is not None:
            self.layer_pruner.remove()
        if _ACTIVE.get(self.model) is self:
            del _ACTIVE[self.model]

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> "AppliedMethod":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # --- hooks ------------------------------------------------------------------------------
    def _has_video(self, kwargs: dict[str, Any]) -> bool:
        ids = kwargs.get("input_ids")
        mm = kwargs.get("mm_encoder_outputs") or {}
        has_features = kwargs.get("pixel_values_videos") is not None or mm.get("video") is not None
        return has_features and ids is not None and bool((ids == self.adapter.video_token_id).any())

    @contextlib.contextmanager
    def passthrough(self):
        """Inside this block the hooks leave every call alone (a caller that feeds an already
        pruned prompt itself, such as :class:`sharpv.streaming.ChunkedPrefill`, uses it)."""
        self._passthrough = True
        try:
            yield self
        finally:
            self._passthrough = False

    def adopt(self, cache: Any, prompt_ids: torch.Tensor, positions: torch.Tensor, visual: torch.Tensor,
              full_positions: torch.Tensor, layouts: list[Layout | None] | None = None, original: bool = True) -> None:
        """Register a cache filled elsewhere with a pruned prompt, so that later calls on it
        (``generate()`` with the whole prompt, further turns) are mapped as after a pruned prefill.

        ``prompt_ids`` (1, L): the unpruned prompt the cache stands for; ``positions`` (1, L') or
        (P, 1, L'): the positions the cache's L' entries were fed with; ``visual`` (1, L') bool:
        which of them are video tokens; ``full_positions`` (1, L) or (P, 1, L): the unpruned
        prompt's positions; ``layouts``: per layer, the prompt entries it holds when stage 2 left
        layers of different lengths (None: every layer holds all ``L'``); ``original``: whether
        ``positions`` are the unpruned prompt's (False: compact ones)."""
        length = visual.shape[1]
        if _seq_length(cache) != length:
            raise SharpVError(f"the cache holds {_seq_length(cache)} entries but the pruned prompt has {length}")
        gaps = bool((positions[..., 1:] - positions[..., :-1] != 1).any()) if length > 1 else False
        self._caches[cache] = _Continuation(
            prompt_ids=prompt_ids.detach().clone(),
            prefill_mask=torch.ones(visual.shape, dtype=torch.long, device=visual.device),
            needs_mask=gaps,
            positions=positions,
            visual=visual.bool(),
            full_positions=full_positions.clone(),
            layouts=layouts if layouts is not None and any(l is not None for l in layouts) else None,
            original=original,
        )

    def _before_forward(self, module, args, kwargs):
        if self._passthrough:
            return None
        if args:
            kwargs = {**_as_keywords(module, args), **kwargs}
            args = ()
        self._pending, self._stepping = None, False
        cache = check_cache_handover(kwargs, pruned_live=len(self._caches) > 0 or self._has_video(kwargs))
        if _seq_length(cache) > 0:
            cont = self._caches.get(cache)
            if cont is not None:
                return args, self._continue(kwargs, cont, cache)
            if self._has_video(kwargs):
                raise SharpVError(
                    "this cache holds tokens sharpv did not prune; a video prompt is pruned on an empty cache only "
                    "(start from a fresh cache, or continue the cache a pruned prompt filled)"
                )
            return None
        if cache is not None:
            self._caches.pop(cache, None)  # an emptied (reset) cache starts over
        if self._has_video(kwargs):
            check_cache(cache)
            return args, self._prune_prompt(kwargs)
        return None

    def _after_forward(self, module, args, kwargs, output):
        if self._passthrough:
            return None
        if self._stepping:
            self._stepping = False
            self.layer_pruner.end_step()
        cont, self._pending = self._pending, None
        if cont is None:
            return None
        cache = output_cache(output)  # None when the forward raised or use_cache=False
        layouts = None
        if self.layer_pruner is not None:
            layouts = self.layer_pruner.end_prefill(cache)
            report = self.layer_pruner.report
            self.stats.kv_mode = report.mode
            self.stats.kv_withdraw_layer = report.withdraw_layer
            self.stats.layer_similarity = list(report.layer_similarity)
            self.stats.extra_seconds = self._vision_seconds + report.extra_seconds
            self.stats.visual_tokens_per_layer = list(report.visual_tokens_per_layer)
            self._warn_if_early(report)
        if cache is None:
            return None
        cont.layouts = layouts if layouts is not None and any(l is not None for l in layouts) else None
        self._caches[cache] = cont
        sizes, lengths, dense = cache_sizes(cache, cont.full_length)
        self.stats.kv_cache_bytes_per_layer = sizes
        self.stats.kv_cache_bytes = sum(sizes)
        self.stats.kv_cache_lengths = lengths
        self.stats.kv_cache_bytes_dense = dense
        return None

    def _warn_if_early(self, report: Any) -> None:
        """Once per handle: SharpV's stage 2 withdrew at the first layer it may. Its similarity was
        then below M where the rule first looks, which the paper's models do not show (their s_l
        falls below M in the middle layers) but random weights and ``smollm2-dinov2`` do, and there
        it cost every answer the video gives (docs/pretrained-model.md)."""
        pruner = self.layer_pruner
        policy = pruner.policy
        if (self._warned_early or not isinstance(policy, SimilarityPolicy) or policy.granularity != "layer"
                or report.withdraw_layer is None or report.withdraw_layer != pruner.min_layer):
            return
        self._warned_early = True
        warnings.warn(StageTwoEarlyWarning(
            f"SharpV stage 2 withdrew the visual tokens at layer {report.withdraw_layer}, the first layer it may: their "
            f"similarity to their input embeddings was already below M = {policy.threshold:g} there, so on this model "
            f"s_l may not show when they stop mattering; check with `sharpv stage2 --model MODEL`, compare with a "
            f"later layer's states (kv_reference_layer=1) or turn stage 2 off (kv=False, --no-kv)"), stacklevel=2)

    # --- prefill rewrite --------------------------------------------------------------------
    def _pad_id(self) -> int:
        config = self.model.config
        text = getattr(config, "text_config", config)
        pad = getattr(self.model.generation_config, "pad_token_id", None) or getattr(text, "pad_token_id", None)
        pad = int(pad[0] if isinstance(pad, (list, tuple)) else pad) if pad is not None else 0
        return 0 if pad == self.adapter.video_token_id else pad

    def _prune_prompt(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        cfg, adapter, method = self.config, self.adapter, self.method
        kwargs = dict(kwargs)
        input_ids: torch.Tensor = kwargs["input_ids"]
        attention_mask: torch.Tensor | None = kwargs.get("attention_mask")
        mm = dict(kwargs.get("mm_encoder_outputs") or {})
        if mm.get("video") is None:
            mm["video"] = adapter.encode(kwargs)
        if mm.get("image") is None and kwargs.get("pixel_values") is not None:
            # The model refuses raw pixels next to encoder outputs, so images are encoded here too.
            mm["image"] = adapter.encode_images(kwargs)
        kwargs.pop("pixel_values_videos", None)
        kwargs.pop("pixel_values", None)
        full_positions = kwargs.get("position_ids")
        if full_positions is None:
            full_positions = adapter.full_positions(kwargs, input_ids, attention_mask)

        _sync(input_ids.device)
        start = time.perf_counter()
        grids = adapter.grids(mm["video"], kwargs)
        attention, source, vision_seconds = self._vision_attention(mm["video"], grids, kwargs)
        start += vision_seconds  # counted as extra_seconds, not twice
        keeps, grid_marks, transforms, videos = [], [], [], []
        for number, (grid, spatial) in enumerate(zip(grids.grids, grids.spatial), 1):
            if source is None:
                sel = method.select_visual(grid, spatial)
            else:
                sel = method.select_visual(grid, spatial, attention=None if attention is None else attention[number - 1])
            keep = sel.keep.to(grid.device) if sel is not None else torch.ones(grid.shape[:2], dtype=torch.bool, device=grid.device)
            if not bool(keep.any()):
                raise SharpVError(
                    f"{method.name} kept no token of video {number} ({grid.shape[0]} frames x {grid.shape[1]} tokens); "
                    "a video must keep at least one token: raise keep_ratio"
                )
            keeps.append(torch.cat([keep.reshape(-1), keep.new_ones(grids.extra_tokens)]))
            grid_marks.append(torch.cat([keep.new_ones(keep.numel()), keep.new_zeros(grids.extra_tokens)]))
            transforms.append(sel.transform if sel is not None else None)
            videos.append(VideoStats(grid.shape[0], grid.shape[1], keep.sum(1).tolist(), keep=keep.detach().to("cpu", torch.bool),
                                     attention_source=source))

        placeholders = input_ids == adapter.video_token_id
        placeholder_keep = torch.cat(keeps).to(input_ids.device)
        if int(placeholders.sum()) != placeholder_keep.numel():
            raise SharpVError(
                f"the prompt has {int(placeholders.sum())} video placeholders but the video has "
                f"{placeholder_keep.numel()} features; build the inputs with the model's own processor"
            )
        seq_keep = torch.ones_like(placeholders)
        seq_keep[placeholders] = placeholder_keep  # row-major, the order the model scatters features
        seq_grid = torch.zeros_like(placeholders)  # placeholders of the videos' T x f grids (no extra tokens)
        seq_grid[placeholders] = torch.cat(grid_marks).to(input_ids.device)
        if attention_mask is not None:
            seq_keep &= attention_mask.bool()
        plan = shorten(seq_keep)

        new_mask = plan.valid.long()
        if cfg.positions == "original":
            positions = gather_positions(full_positions, plan)
        else:
            compact = compact_positions(new_mask)
            positions = compact if full_positions.dim() == 2 else compact.expand(full_positions.shape[0], -1, -1)
        dropped = not bool(placeholder_keep.all())
        needs_mask = attention_mask is not None or not bool(plan.valid.all()) or (dropped and cfg.positions == "original")

        kwargs["input_ids"] = take(input_ids, plan, fill=self._pad_id())
        kwargs["attention_mask"] = new_mask.to(attention_mask.dtype if attention_mask is not None else torch.long) if needs_mask else None
        kwargs["position_ids"] = positions.contiguous()
        for key in adapter.sequence_keyed_kwargs():
            value = kwargs.get(key)
            if value is not None:
                if value.shape[1] < input_ids.shape[1]:
                    # generate() with an assistant model appends draft tokens to the prompt's first
                    # forward without extending the token types: the tail is text.
                    value = torch.cat([value, value.new_zeros(value.shape[0], input_ids.shape[1] - value.shape[1])], dim=1)
                kwargs[key] = take(value, plan, fill=0)
        mm["video"] = adapter.pruned_output(grids, keeps, transforms)
        kwargs["mm_encoder_outputs"] = mm
        _sync(input_ids.device)
        seconds = time.perf_counter() - start

        visual = (kwargs["input_ids"] == adapter.video_token_id) & plan.valid
        counted = take(seq_grid, plan, fill=False) & visual  # the grid tokens entering the LLM
        self._pending = _Continuation(
            prompt_ids=input_ids.detach().clone(),
            prefill_mask=new_mask,
            needs_mask=needs_mask,
            positions=kwargs["position_ids"],
            visual=visual,
            full_positions=full_positions.clone(),
            original=cfg.positions == "original",
        )
        if self.layer_pruner is not None:
            self.layer_pruner.begin_prefill(visual, plan.valid, counted=counted)
        self.stats = PruningStats(
            method=method.name,
            mode=getattr(cfg, "mode", "budget" if cfg.keep_ratio is not None else "adaptive"),
            positions=cfg.positions,
            videos=videos,
            pruning_seconds=seconds,
            sequence_length_in=input_ids.shape[1],
            sequence_length_out=plan.length,
            # without in-LLM pruning every layer computes the tokens stage 1 kept; with it, the
            # pruner's per-layer counts replace this once the prefill has run
            visual_tokens_per_layer=[int(counted.sum())] * len(adapter.decoder_layers()),
            extra_seconds=self._vision_seconds,
        )
        return kwargs

    def _vision_attention(self, encoder_output: Any, grids: Any, kwargs: dict[str, Any]):
        """For a method that declares ``vision_attention``: the per-video (T, f) attention its
        tokens received in the vision encoder (None when the features carry no record, e.g.
        precomputed without the method applied), its source for the stats, and the seconds spent
        mapping it (recording time included in ``self._vision_seconds``). (None, None, 0.0) for
        other methods."""
        self._vision_seconds = 0.0
        if getattr(self.method, "vision_attention", None) is None:
            return None, None, 0.0
        record = self.adapter.patch_record(encoder_output) if self.vision_recorder is not None else None
        if record is None or record.layer != self.vision_recorder.layer:
            return None, "feature proxy", 0.0
        start = time.perf_counter()
        attention = self.adapter.token_attention(encoder_output, grids, kwargs)
        _sync(grids.grids[0].device if grids.grids else torch.device("cpu"))
        seconds = time.perf_counter() - start
        if attention is None:  # a record that does not match the grids (videos repeated for beams)
            return None, "feature proxy", 0.0
        self._vision_seconds = record.seconds + seconds
        return attention, "vision encoder", seconds

    # --- calls continuing a pruned cache ----------------------------------------------------
    def _continue(self, kwargs: dict[str, Any], cont: _Continuation, cache: Any) -> dict[str, Any]:
        kwargs = dict(kwargs)
        appended = _seq_length(cache) - cont.reduced_length  # tokens after the prompt in the cache now
        if appended < 0:
            cont = self._caches[cache] = cont.cut(-appended)
            appended = 0
        seen = cont.full_length + appended  # tokens of the unpruned conversation the cache stands for
        key = "input_ids" if kwargs.get("input_ids") is not None else "inputs_embeds"
        new = kwargs[key]
        batch, q = new.shape[0], new.shape[1]
        if batch != cont.prefill_mask.shape[0]:
            raise SharpVError(f"this call has {batch} rows but the pruned cache holds {cont.prefill_mask.shape[0]}")

        mask = kwargs.get("attention_mask")
        if mask is not None and not (isinstance(mask, torch.Tensor) and mask.dim() == 2):
            raise SharpVError(
                "calls continuing a pruned cache take a 2-D attention_mask (or none); prepared 4-D masks come from "
                "static caches, which sharpv does not support: leave cache_implementation unset (or 'dynamic')"
            )
        repeated = self._repeated(kwargs, key, cont, appended, q)
        fresh = q - repeated
        if fresh < q:
            kwargs = self._drop_repeated(kwargs, key, cont, seen, q - fresh)
            new = kwargs[key]
        if self._has_video({**kwargs, "input_ids": new if key == "input_ids" else None}):
            raise SharpVError(
                "a new video after a pruned prompt is not supported: the cache already holds a pruned video; "
                "start a fresh cache with all videos in the prompt"
            )
        # Media passed again with the history belong to the prompt in the cache: the video always
        # (it is in the cache), images unless the new tokens hold image placeholders.
        image_id = getattr(self.model.config, "image_token_id", None)
        new_images = key == "input_ids" and image_id is not None and bool((new == image_id).any())
        drop = {"video"} if new_images else {"video", "image"}
        for name in _VIDEO_KEYS + (() if new_images else _IMAGE_KEYS):
            kwargs.pop(name, None)
        if kwargs.get("mm_encoder_outputs"):
            kwargs["mm_encoder_outputs"] = {k: v for k, v in kwargs["mm_encoder_outputs"].items() if k not in drop} or None

        if mask is not None:
            kwargs["attention_mask"] = torch.cat([cont.prefill_mask.to(mask), mask[:, cont.full_length :]], dim=1)
        elif cont.needs_mask:
            ones = cont.prefill_mask.new_ones(batch, appended + fresh)
            kwargs["attention_mask"] = torch.cat([cont.prefill_mask, ones], dim=1)
        steps = torch.arange(appended + 1, appended + fresh + 1, device=new.device)
        kwargs["position_ids"] = cont.last_position().to(new.device) + steps
        if cont.layouts is not None:
            self.layer_pruner.begin_step(DecodeStep(cont.layouts, cont.reduced_length, appended + fresh, fresh))
            self._stepping = True
        return kwargs

    def _repeated(self, kwargs: dict[str, Any], key: str, cont: _Continuation, appended: int, q: int) -> int:
        """How many of the call's ``q`` tokens the cache already holds.

        ``generate()`` slices a conversation by the cache's length, which is shorter than the
        conversation by the tokens pruning removed: on a new turn it hands over the last of them
        again. Where the call starts in the conversation is read from the 2-D attention mask
        (its length minus ``q``) or, without one, from the position ids (positions of the
        unpruned sequence; the text plane for 4-plane Qwen-VL positions). Position ids can be
        stale: transformers before 5.23 computes a new call's Qwen-VL positions from rope deltas an
        earlier prompt left on the model, and passes no mask. So a start read from them must be
        confirmed by the call's tokens (those that repeat the prompt must be the prompt's), and when
        none is, the start that generate()'s own slicing implies (where the cache ends, in the
        conversation's coordinates) is tried, under the same check; a single token is then a
        decode step. Neither mask nor positions: all are new.
        """
        seen = cont.full_length + appended
        mask, position_ids = kwargs.get("attention_mask"), kwargs.get("position_ids")
        if mask is not None:
            candidates = [seen - (mask.shape[1] - q)]
            where = f"attention_mask has {mask.shape[1]} columns"
        elif position_ids is not None:
            candidates = _locate(position_ids[..., 0], cont.full_positions, seen, q)
            candidates.append(cont.full_length - cont.reduced_length)  # generate()'s slicing by the cache's length
            if q == 1:
                candidates.append(0)  # a decode step whose positions extend stale ones
            where = f"position_ids start at {position_ids.reshape(-1)[0].item()}"
        else:
            return 0
        valid = [r for r in candidates if 0 <= r < q]
        if not valid:
            raise SharpVError(
                f"{where}, but the cache holds {seen} tokens of the conversation and the call brings {q}: pass the "
                "attention mask and positions of the whole conversation (the prompt before pruning included), as "
                "generate() does, or omit them"
            )
        if mask is not None or key != "input_ids":
            return valid[0]
        for r in valid:
            if self._repeats_prompt(kwargs[key], cont, seen, r):
                return r
        return valid[0]  # _drop_repeated refuses it with the reason

    @staticmethod
    def _repeats_prompt(ids: torch.Tensor, cont: _Continuation, seen: int, repeated: int) -> bool:
        """Whether the call's first ``repeated`` tokens, read as the conversation's tokens
        ``seen - repeated .. seen - 1``, agree with the prompt that filled the cache where they
        overlap it."""
        start = seen - repeated
        overlap = max(0, min(cont.full_length, seen) - start)
        return not overlap or torch.equal(ids[:, :overlap].to(cont.prompt_ids.device), cont.prompt_ids[:, start : start + overlap])

    def _drop_repeated(self, kwargs: dict[str, Any], key: str, cont: _Continuation, seen: int, repeated: int) -> dict[str, Any]:
        """Drop the call's first ``repeated`` tokens, which the cache already holds (the tokens
        ``seen - repeated .. seen - 1`` of the conversation), after checking the prompt's part."""
        ids = kwargs[key]
        if key == "input_ids" and not self._repeats_prompt(ids, cont, seen, repeated):
            raise SharpVError(
                "input_ids repeat tokens the cache holds, but they differ from the prompt that filled it; "
                "continue the same conversation, or start a fresh cache"
            )
        q = ids.shape[1]
        kwargs[key] = ids[:, repeated:]
        for name in _SEQUENCE_KEYS:
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor) and value.shape[-1] == q:
                kwargs[name] = value[..., repeated:]
        return kwargs


def apply(model: torch.nn.Module, config: SharpVConfig | PruningMethod | None = None, **overrides: Any) -> AppliedMethod:
    """Apply a method to ``model`` and return the handle (``handle.remove()`` undoes it).

    ``config`` is a :class:`SharpVConfig` (or keyword settings of one) for SharpV, or any
    configured :class:`~sharpv.methods.PruningMethod`.
    """
    if isinstance(config, PruningMethod):
        if overrides:
            raise ValueError("pass settings to the method's constructor, not to apply()")
        return config(model)
    return SharpV(config, **overrides)(model)

