"""Incremental prefill: a video prompt enters the cache chunk by chunk.

The LLM consumes the text before the video, then each chunk's kept tokens as soon as stage 1 has
selected them (:class:`~sharpv.core.streaming.StreamingSelector`, adaptive mode, exact), then the
text after the video (all of it but its last token: ``generate()`` feeds that one and produces the
first answer token). Every piece is one ordinary forward call of the model on the growing cache,
with the model's own feature scattering (Qwen3-VL's deepstack included), explicit positions (the
kept tokens' original positions, 1-D or M-RoPE, or compact ones) and a 2-D mask. The cache then
equals the one-shot pruned prefill's cache at float precision, and the applied handle adopts it:
``model.generate(**inputs, cache=cache)`` (``past_key_values=`` before transformers 5.25) continues exactly as after a one-shot pruned
prefill (the runtime maps the call from the cache's real length).

Budget mode (``keep_ratio``) needs every frame's scores before it can split the total: each
chunk is scored as it arrives, but its encoder output is held until :meth:`ChunkedPrefill.finish`,
which selects over all frames and then feeds the pieces. It costs the video's projected features
(T x f x d values, plus Qwen3-VL's deepstack levels) held at once, against the kept share in
adaptive mode; the vision tower still runs chunk by chunk.

Stage 2 with chunks: **each chunk decides for itself.** When a chunk's kept tokens are fed, stage
2 measures, layer by layer, the similarity of *that chunk's* visual tokens to their own input
embeddings (the mean over them for ``kv_granularity="layer"``, each token for ``"token"``) and
withdraws them from the first layer below M (``withdraw``), or drops their entries from the
layers below M after the piece (``layerwise``). Tokens of earlier chunks that were withdrawn at a
layer are not there for later chunks, the question or decoding at that layer; text is never
withdrawn. Every layer then holds its own number of entries, and each piece gets a mask per layer
for exactly those (all cached entries visible, the piece causal). With a single chunk this is the
one-shot prefill's rule; with several it is its own rule, tested against a layer-by-layer
reference that applies the same per-chunk decisions with masks (``tests/reference.py``).

Usage::

    with sharpv.apply(model, kv=False) as handle:
        prefill = ChunkedPrefill(handle, inputs)
        for chunk in chunks:                        # the model's own get_video_features per chunk
            prefill.push(chunk.encoder_output, chunk.video_grid_thw)
        cache = prefill.finish()
        out = model.generate(**inputs_without_pixels, cache=cache)  # past_key_values= before transformers 5.25
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from sharpv.compat import cache_kwargs
from sharpv.core.kv import Layout
from sharpv.core.positions import compact_positions
from sharpv.core.selection import budget_total, select_budget
from sharpv.core.streaming import StreamingSelector
from sharpv.errors import SharpVError
from sharpv.methods import SharpV


class ChunkedPrefill:
    """Feed one video prompt (batch of one) into a cache chunk by chunk; see the module docstring."""

    def __init__(self, handle: Any, inputs: dict[str, torch.Tensor]):
        self._start(handle)
        self._set_prompt(inputs)

    def _start(self, handle: Any) -> None:
        """Everything but the prompt: the method's settings and an empty cache."""
        method = handle.method
        if not isinstance(method, SharpV):
            raise SharpVError(f"chunked prefill runs SharpV; {method.name} is applied")
        self.handle, self.model, self.adapter = handle, handle.model, handle.adapter
        self.config = method.config
        self.budget = self.config.keep_ratio is not None
        self.selector = StreamingSelector(  # budget mode searches the scale itself: unscaled ratios
            spatial_weight=self.config.spatial_weight, ratio_scale=1.0 if self.budget else self.config.ratio_scale,
            min_tokens_per_frame=self.config.min_tokens_per_frame,
        )
        self._held: list[tuple[Any, Any, Any, int]] = []  # budget mode: (output, grids, selection, n) per chunk
        self.cache = DynamicCache()
        self.cursor = 0  # next prompt index to feed
        self.used = 0  # placeholders accounted for (received)
        self.fed = 0  # placeholders fed to the model
        self.fed_positions: list[torch.Tensor] = []
        self.fed_visual: list[torch.Tensor] = []
        self.kept_per_frame: list[int] = []
        self.last_selection: Any = None  # stage 1's ChunkSelection of the latest chunk
        self._extra: Any = None  # the encoder output's always-kept tail (LLaVA-OneVision's image_newline)
        self.pruner = handle.layer_pruner  # stage 2, per chunk (see the module docstring)
        self.chunk_reports: list[Any] = []  # stage 2's report for every piece that held video tokens

    def _set_prompt(self, inputs: dict[str, torch.Tensor]) -> None:
        """The (unpruned) prompt the pieces are cut from. A prompt may be replaced by a longer one
        whose fed part is the same (the live session grows it as frames arrive)."""
        ids = inputs["input_ids"]
        if ids.shape[0] != 1:
            raise SharpVError(f"chunked prefill takes one prompt at a time, got a batch of {ids.shape[0]}")
        self.ids = ids
        self.inputs = inputs
        self.full_positions = self.adapter.full_positions(inputs, ids, inputs.get("attention_mask"))
        self.placeholders = (ids[0] == self.adapter.video_token_id).nonzero().squeeze(1)

    # --- pieces -----------------------------------------------------------------------------
    def push(self, encoder_output: Any, video_grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        """Select and feed one chunk: ``encoder_output`` is the model's own ``get_video_features``
        output on the chunk's frames (with the chunk's ``video_grid_thw`` for Qwen-VL). Returns the
        chunk's (T_c, f) keep mask (None in budget mode, which selects in :meth:`finish`)."""
        kwargs = {"video_grid_thw": video_grid_thw} if video_grid_thw is not None else {}
        grids = self.adapter.grids(encoder_output, kwargs)
        if len(grids.grids) != 1:
            raise SharpVError("chunked prefill takes one video per prompt")
        grid = grids.grids[0]
        part = self.selector.push(grid)
        self.last_selection = part
        n = grid.shape[0] * grid.shape[1]
        if self.used + n > self.placeholders.numel() - grids.extra_tokens:
            raise SharpVError(
                f"the chunks bring more video tokens than the prompt has placeholders ({self.placeholders.numel()}); "
                "build the prompt for the whole video"
            )
        if grids.extra_tokens:
            self._extra = (encoder_output, grids, n)
        self.used += n
        if self.budget:
            self._held.append((encoder_output, grids, part, n))
            return None
        self._feed_chunk(encoder_output, grids, part.keep, n)
        return part.keep

    def _feed_chunk(self, encoder_output: Any, grids: Any, keep: torch.Tensor, n: int) -> None:
        self._feed_until(int(self.placeholders[self.fed + n - 1]) + 1, keep.reshape(-1), encoder_output, grids, n)
        self.fed += n
        self.kept_per_frame += keep.sum(1).tolist()

    def _select_budget(self) -> None:
        """Budget mode: select over every frame's scores at once, then feed the held chunks."""
        scores = torch.cat([part.scores for _, _, part, _ in self._held])
        ratios = torch.cat([part.ratios for _, _, part, _ in self._held])
        total = budget_total(self.config.keep_ratio, scores.shape[0], scores.shape[1])
        keep = select_budget(scores, ratios, total, self.config.min_tokens_per_frame)
        start = 0
        for output, grids, part, n in self._held:
            frames = part.keep.shape[0]
            self._feed_chunk(output, grids, keep[start : start + frames], n)
            start += frames
        self._held = []

    def finish(self) -> Any:
        """Feed the rest of the prompt but its last token and hand the cache to the applied method;
        returns the cache for ``generate(..., cache=cache)`` (``past_key_values=`` before transformers 5.25)."""
        if self.budget:
            self._select_budget()
        extra = self.placeholders.numel() - self.used
        if self._extra is not None and extra == self._extra[1].extra_tokens:
            output, grids, n = self._extra
            tail = torch.ones(extra, dtype=torch.bool)
            self._feed_until(int(self.placeholders[-1]) + 1, tail, output, grids, n, tail_only=True)
            self.used += extra
            self.fed += extra
        if self.used != self.placeholders.numel():
            raise SharpVError(
                f"the chunks brought {self.used} video tokens but the prompt has {self.placeholders.numel()} placeholders"
            )
        floor = None if self.budget else self.selector.finish()
        if floor is not None:
            raise SharpVError("every frame rounded to zero tokens; use min_tokens_per_frame >= 1 for chunked prefill")
        self._feed_until(self.ids.shape[1] - 1, None, None, None, 0)
        positions = torch.cat(self.fed_positions, dim=-1)
        visual = torch.cat(self.fed_visual)[None]
        self.handle.adopt(self.cache, self.ids[:, :-1], positions, visual, self.full_positions[..., :-1], self._layouts(),
                          original=self.config.positions == "original")
        return self.cache

    def _layouts(self) -> list[Layout | None] | None:
        """Every layer's entries as decode masks need them (batch of one: only the count matters)."""
        if self.pruner is None:
            return None
        lengths = [layer.get_seq_length() for layer in self.cache.layers]
        return [
            None if n == lengths[0] else Layout(torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool))
            for n in lengths
        ]

    # --- feeding ----------------------------------------------------------------------------
    def _feed_until(self, end: int, keep: torch.Tensor | None, output: Any, grids: Any, n: int, tail_only: bool = False) -> None:
        """Feed prompt indices [cursor, end): text as it is, this chunk's placeholders where ``keep``."""
        if end <= self.cursor:
            return
        index = torch.arange(self.cursor, end)
        take = torch.ones(index.numel(), dtype=torch.bool)
        is_video = self.ids[0, index] == self.adapter.video_token_id
        if keep is not None:
            take[is_video] = keep
        index = index[take]
        self.cursor = end
        if index.numel() == 0:
            return
        piece_ids = self.ids[:, index]
        kwargs: dict[str, Any] = {"input_ids": piece_ids, **cache_kwargs(self.cache), "use_cache": True}
        if keep is not None and bool(keep.any()):
            kwargs["mm_encoder_outputs"] = {"video": self._kept_output(output, grids, keep, n, tail_only)}
        if self.inputs.get("mm_token_type_ids") is not None:
            kwargs["mm_token_type_ids"] = self.inputs["mm_token_type_ids"][:, index]
        for key in ("video_grid_thw", "second_per_grid_ts"):
            if self.inputs.get(key) is not None:
                kwargs[key] = self.inputs[key]
        done = sum(p.shape[-1] for p in self.fed_positions)
        if self.config.positions == "original":
            positions = self.full_positions[..., index]
        else:
            compact = compact_positions(torch.ones(1, done + index.numel(), dtype=torch.long))[:, done:]
            positions = compact if self.full_positions.dim() == 2 else compact.expand(self.full_positions.shape[0], -1, -1)
        kwargs["position_ids"] = positions
        kwargs["attention_mask"] = torch.ones(1, done + index.numel(), dtype=torch.long)
        visual = piece_ids[0] == self.adapter.video_token_id
        if self.pruner is not None:
            lengths = [layer.get_seq_length() for layer in self.cache.layers] if self.cache.layers else []
            cached = lengths if any(lengths) else None
            self.pruner.begin_prefill(visual[None], torch.ones_like(visual)[None], cached)
        with self.handle.passthrough(), torch.no_grad():
            try:
                self.model(**kwargs, logits_to_keep=1)  # only the cache matters; full-vocabulary logits per piece would not
            finally:
                if self.pruner is not None:
                    self.pruner.end_prefill(self.cache)
        if self.pruner is not None and bool(visual.any()):
            self.chunk_reports.append(self.pruner.report)
        self.fed_positions.append(positions)
        self.fed_visual.append(visual)

    def _kept_output(self, output: Any, grids: Any, keep: torch.Tensor, n: int, tail_only: bool) -> Any:
        """The chunk's encoder output holding only the kept tokens (for ``tail_only``, only the
        always-kept tokens after the grid), in the layout the family's model scatters."""
        full = torch.zeros(n + grids.extra_tokens, dtype=torch.bool)
        if tail_only:
            full[n:] = True
        else:
            full[:n] = keep
        return self.adapter.pruned_output(grids, [full], [None])
