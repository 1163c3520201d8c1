"""Apply a pruning method to a model reversibly, the way kvpress applies a press.

``handle = sharpv.apply(model, config)`` (or ``method.apply(model)`` for any registered method)
registers forward hooks on ``model`` (nothing is patched, nothing global changes);
``handle.remove()`` takes them off and the model behaves exactly as before.
``with SharpV(config)(model): ...`` does the same around a block.

While applied, every forward call that carries a prompt with video placeholders (the prefill of
``generate()`` or a direct ``model(**inputs)``) is rewritten before the model sees it:

1. the video features come from the model's own ``get_video_features`` (``generate()`` has already
   computed them; a direct call computes them the same way);
2. the method selects the tokens the LLM receives, per video (for SharpV: stage 1);
3. the dropped tokens' placeholders leave ``input_ids`` (and ``attention_mask``,
   ``mm_token_type_ids``), the encoder output keeps only the kept features, and ``position_ids``
   are the kept tokens' original positions (or compact ones).

Later calls that continue the cache this prefill filled (decode steps of ``generate()`` or of a
manual loop) get their ``attention_mask`` mapped onto the shortened cache and their positions
continued where the unpruned sequence would have been (``positions="original"``) or where the
shortened one ends (``"compact"``). Position ids passed to those calls are read as positions of
the unpruned sequence (that is what ``generate()`` passes); omit them in a manual loop and the
runtime supplies them.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from sharpv.adapters import adapter_for
from sharpv.core import compact_positions, gather_positions, shorten, take
from sharpv.errors import SharpVError
from sharpv.layer_pruning import LayerPruner, cache_sizes
from sharpv.methods import PruningMethod, SharpV, SharpVConfig
from sharpv.stats import PruningStats, VideoStats

_ACTIVE: "weakref.WeakKeyDictionary[torch.nn.Module, AppliedMethod]" = weakref.WeakKeyDictionary()


@dataclass
class _Continuation:
    """What decode steps after a pruned prefill need to know."""

    cache: Any  # weakref to the cache object the prefill filled (None until known)
    full_length: int  # prompt length before pruning
    prefill_mask: torch.Tensor  # (B, L') attention mask of the shortened prompt
    needs_mask: bool  # shortened prompt has padding or position gaps: always pass a mask
    last_positions: torch.Tensor  # (B,) or (P, B): position of the last prompt token as fed
    shift: torch.Tensor  # subtract from unpruned-sequence positions to get fed positions
    appended: int = 0  # tokens fed after the prompt so far

    def matches(self, cache: Any) -> bool:
        return self.cache is not None and self.cache() is cache


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AppliedMethod:
    """A pruning method applied to one model. Use as a context manager or call ``remove()``."""

    def __init__(self, model: torch.nn.Module, method: PruningMethod):
        if model in _ACTIVE:
            raise SharpVError("a pruning method is already applied to this model; remove the first handle before applying again")
        self.model = model
        self.method = method
        self.config = method.config
        self.adapter = adapter_for(model)
        self.stats: PruningStats | None = None
        self._continuation: _Continuation | None = None
        self._prefill_pending = False
        policy = method.layer_policy(self.adapter)
        self.layer_pruner = LayerPruner(model, self.adapter, policy[0], policy[1]) if policy is not None else None
        self._handles = [
            model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            model.register_forward_hook(self._after_forward, with_kwargs=True),
        ]
        for module, hook in self.adapter.observed_modules():
            self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        _ACTIVE[model] = self

    # --- lifecycle --------------------------------------------------------------------------
    def remove(self) -> None:
        """Take every hook off the model; it then behaves exactly as before ``apply``."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._continuation = None
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

    def _before_forward(self, module, args, kwargs):
        if args:
            kwargs = dict(kwargs)
            kwargs.setdefault("input_ids", args[0])
            args = ()
        cache = kwargs.get("past_key_values")
        if self._has_video(kwargs):
            if cache is not None and cache.get_seq_length() > 0:
                raise SharpVError("video prompts are pruned on an empty cache only; start from a fresh cache")
            return args, self._prune_prompt(kwargs)
        cont = self._continuation
        if cont is not None and cache is not None and cont.matches(cache):
            return args, self._continue(kwargs, cont)
        if self.layer_pruner is not None:
            self.layer_pruner.reset()  # a call unrelated to the pruned prompt: no stage 2 bookkeeping
        return None

    def _after_forward(self, module, args, kwargs, output):
        if not self._prefill_pending:
            return None
        self._prefill_pending = False
        cache = getattr(output, "past_key_values", None)
        cont = self._continuation
        if cont is not None and cont.cache is None and cache is not None:
            cont.cache = weakref.ref(cache)
        if self.layer_pruner is not None:
            self.layer_pruner.end_prefill(cache)
            report = self.layer_pruner.report
            self.stats.kv_mode = report.mode
            self.stats.kv_withdraw_layer = report.withdraw_layer
            self.stats.layer_similarity = list(report.layer_similarity)
            self.stats.extra_seconds = report.extra_seconds
        if cache is not None and hasattr(cache, "layers"):
            sizes, lengths, dense = cache_sizes(cache, cont.full_length if cont else 0)
            self.stats.kv_cache_bytes_per_layer = sizes
            self.stats.kv_cache_bytes = sum(sizes)
            self.stats.kv_cache_lengths = lengths
            self.stats.kv_cache_bytes_dense = dense
        return None

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
        kwargs.pop("pixel_values_videos", None)
        full_positions = kwargs.get("position_ids")
        if full_positions is None:
            full_positions = adapter.full_positions(kwargs, input_ids, attention_mask)

        _sync(input_ids.device)
        start = time.perf_counter()
        grids = adapter.grids(mm["video"], kwargs)
        keeps, transforms, videos = [], [], []
        for grid, spatial in zip(grids.grids, grids.spatial):
            sel = method.select_visual(grid, spatial)
            keep = sel.keep.to(grid.device) if sel is not None else torch.ones(grid.shape[:2], dtype=torch.bool, device=grid.device)
            keeps.append(torch.cat([keep.reshape(-1), keep.new_ones(grids.extra_tokens)]))
            transforms.append(sel.transform if sel is not None else None)
            videos.append(VideoStats(grid.shape[0], grid.shape[1], keep.sum(1).tolist()))

        placeholders = input_ids == adapter.video_token_id
        placeholder_keep = torch.cat(keeps).to(input_ids.device)
        if int(placeholders.sum()) != placeholder_keep.numel():
            raise SharpVError(
                f"the prompt has {int(placeholders.sum())} video placeholders but the video has "
                f"{placeholder_keep.numel()} features; build the inputs with the model's own processor"
            )
        seq_keep = torch.ones_like(placeholders)
        seq_keep[placeholders] = placeholder_keep  # row-major, the order the model scatters features
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
            if kwargs.get(key) is not None:
                kwargs[key] = take(kwargs[key], plan, fill=0)
        mm["video"] = adapter.pruned_output(grids, keeps, transforms)
        kwargs["mm_encoder_outputs"] = mm
        _sync(input_ids.device)
        seconds = time.perf_counter() - start

        cache = kwargs.get("past_key_values")
        self._continuation = _Continuation(
            cache=weakref.ref(cache) if cache is not None else None,
            full_length=input_ids.shape[1],
            prefill_mask=new_mask,
            needs_mask=needs_mask,
            last_positions=positions[..., -1].clone(),
            shift=full_positions[..., -1] - positions[..., -1],
        )
        if self.layer_pruner is not None:
            visual = (kwargs["input_ids"] == adapter.video_token_id) & plan.valid
            self.layer_pruner.begin_prefill(visual, plan.valid)
        self._prefill_pending = True
        self.stats = PruningStats(
            method=method.name,
            mode=getattr(cfg, "mode", "budget" if cfg.keep_ratio is not None else "adaptive"),
            positions=cfg.positions,
            videos=videos,
            pruning_seconds=seconds,
            sequence_length_in=input_ids.shape[1],
            sequence_length_out=plan.length,
        )
        return kwargs

    # --- decode continuation ----------------------------------------------------------------
    def _continue(self, kwargs: dict[str, Any], cont: _Continuation) -> dict[str, Any]:
        kwargs = dict(kwargs)
        new = kwargs.get("input_ids")
        if new is None:
            new = kwargs["inputs_embeds"]
        batch, q = new.shape[0], new.shape[1]
        reduced = cont.prefill_mask.shape[1]
        cont.appended += q
        appended = cont.appended  # tokens after the prompt, these included
        if self.layer_pruner is not None:
            self.layer_pruner.begin_step(q)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            if mask.shape[1] == cont.full_length + appended:
                kwargs["attention_mask"] = torch.cat([cont.prefill_mask.to(mask), mask[:, cont.full_length :]], dim=1)
            elif mask.shape[1] != reduced + appended:
                raise SharpVError(
                    f"attention_mask has {mask.shape[1]} columns; expected {cont.full_length + appended} "
                    f"(unpruned prompt) or {reduced + appended} (pruned prompt) plus new tokens"
                )
        elif mask is None and cont.needs_mask:
            ones = cont.prefill_mask.new_ones(batch, appended)
            kwargs["attention_mask"] = torch.cat([cont.prefill_mask, ones], dim=1)
        positions = kwargs.get("position_ids")
        if positions is None:
            steps = torch.arange(appended - q + 1, appended + 1, device=new.device)
            kwargs["position_ids"] = cont.last_positions.to(new.device)[..., None] + steps
        elif bool((cont.shift != 0).any()):
            shift = cont.shift.to(positions.device)
            if positions.dim() != shift.dim() + 1:
                raise SharpVError("position_ids for decoding must have the same planes as the prompt's")
            kwargs["position_ids"] = positions - shift[..., None]
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

