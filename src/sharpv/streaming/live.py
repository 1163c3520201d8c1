"""Online use: frames arrive one at a time (a live capture, an iterator), questions at any point.

:class:`LiveVideo` holds one cache: the text before the video, then, chunk by chunk as frames
arrive, each chunk's kept tokens (SharpV's adaptive stage 1, exact and causal, as in
:class:`~sharpv.streaming.ChunkedPrefill`). A question is then only its own prefill on that cache
(the text after the video, the question, the assistant's turn) and the answer's decoding; the
cache is cut back to the video afterwards, so the next frames and the next question continue
from the video alone. The answer after N frames equals a one-shot pruned prefill of a prompt built
for those N frames (tests/test_live_video.py).

Decisions:

- **The prompt grows with the video.** Before the first question the session cannot know how many
  frames there will be, so it builds the prompt from the model's chat template split at the video
  placeholder: the text before it, the video's tokens for the frames seen so far (LLaVA-OneVision:
  f tokens per frame and the ``image_newline`` after the last one; Qwen2.5-VL: each 2-frame step's
  tokens; Qwen3-VL: ``<t seconds>`` and a vision start/end pair around every step), then the text
  after it with the question. Video tokens' positions (1-D or M-RoPE) do not depend on later
  frames, so what was fed stays valid as the video grows.
- **Time** comes from ``fps``, the rate of the frames you push: frame i is at ``i / fps`` seconds
  (Qwen2.5-VL's temporal positions, Qwen3-VL's timestamps).
- **The frame size is pinned at the first chunk.** Qwen3-VL's processor sizes frames from a pixel
  budget over the whole clip, which a stream does not have: the size it picks for the first chunk
  (``chunk_frames`` frames, or fewer if a question comes first) holds for the whole stream. With
  :class:`~sharpv.video.TorchVideoInputs` every later chunk is resized to it; the model's own
  transformers processor is called per chunk, and a chunk it sizes differently is refused with
  the size to use. The answer equals the one-shot answer on the same frames exactly while the
  one-shot clip's frames x area fit the checkpoint's ``longest_edge`` pixel budget (or the first
  chunk holds the whole clip): it is the one-shot clip's total frame count that binds, not the
  chunk size (with the released Qwen3-VL configs, 58 frames of 768x576; docs/api.md has the
  measured example). Beyond it the one-shot path shrinks every frame while the stream keeps the
  first chunk's size, and holds more tokens.
- **Qwen-VL encodes frames in pairs** (temporal patch 2): at a question, a last frame without its
  partner waits for the next push (``frames_seen`` says how many frames the answer saw).
- **Adaptive mode only**: budget mode (``keep_ratio``) splits a total over the whole video, which
  a stream never has.
- **Stage 2** decides per chunk, as in chunked prefill; a question and its answer are fed on top
  and then removed from every layer.
- ``max_visual_tokens`` caps the video tokens held: after each chunk, the lowest-scored kept
  tokens (SharpV's stage-1 importance; ties: the older first) leave the cache until the cap holds.
  The survivors keep the positions they were fed with (the prompt then has gaps where evicted
  tokens were, as with any pruning at original positions). The held set is always the top
  ``max_visual_tokens`` of every token stage 1 kept so far. It needs stage 2 off (``kv=False``):
  with stage 2 the layers hold different entries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from sharpv.compat import cache_kwargs
from sharpv.errors import SharpVError
from sharpv.streaming.prefill import ChunkedPrefill
from sharpv.video.decode import SampledVideo
from sharpv.video.processing import TorchVideoInputs, build_inputs, qwen3_collapses_outer_wrapper

DEFAULT_LIVE_CHUNK_FRAMES = 8
PIXEL_KEYS = ("pixel_values_videos", "video_grid_thw")


@dataclass
class LiveAnswer:
    """One answer of :meth:`LiveVideo.ask`."""

    question: str
    text: str
    token_ids: list[int]
    frames_seen: int  # frames the answer saw (encoded and in the cache)
    visual_tokens: int  # video tokens in the cache when the question came
    question_tokens: int  # tokens the question's prefill fed (the text after the video)
    seconds_to_first_token: float  # from the call to the first answer token: the question's prefill
    seconds: float  # the whole call
    evicted_tokens: int = 0  # video tokens removed by max_visual_tokens so far
    #: generate()'s own output when ``return_dict_in_generate=True`` was passed (scores, logits)
    output: Any = field(default=None, repr=False)


class _FirstToken:
    """A ``generate()`` streamer that notes when the first new token comes."""

    def __init__(self) -> None:
        self.calls = 0
        self.at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2 and self.at is None:  # the first put is the prompt
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def _token_text(processor: Any, name: str, default: str) -> str:
    if isinstance(processor, TorchVideoInputs):
        return processor._token(name, default)
    value = getattr(processor, name, None)
    return value if isinstance(value, str) else default


class _PromptParts:
    """The chat template split at the video placeholder, as token ids, per family."""

    def __init__(self, processor: Any, family: str):
        self.tokenizer = processor.tokenizer
        self.processor = processor
        self.family = family
        self.video_text = _token_text(processor, "video_token", "<video>" if family == "llava-onevision" else "<|video_pad|>")
        self.video_id = self.tokenizer.convert_tokens_to_ids(self.video_text)
        self.image_id = self.tokenizer.convert_tokens_to_ids(_token_text(processor, "image_token", "<|image_pad|>"))
        if family == "qwen3-vl":
            self.start_id = self.tokenizer.convert_tokens_to_ids(_token_text(processor, "vision_start_token", "<|vision_start|>"))
            self.end_id = self.tokenizer.convert_tokens_to_ids(_token_text(processor, "vision_end_token", "<|vision_end|>"))
        self.before = self._encode(self._split("?")[0], first=True)

    def _split(self, question: str) -> tuple[str, str]:
        conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        if self.video_text not in prompt:
            raise SharpVError(f"the chat template does not place the video token {self.video_text!r}; is this a video LLM's processor?")
        marker = self.video_text
        if self.family == "qwen3-vl" and qwen3_collapses_outer_wrapper():
            wrapper = (_token_text(self.processor, "vision_start_token", "<|vision_start|>") + self.video_text
                       + _token_text(self.processor, "vision_end_token", "<|vision_end|>"))
            marker = wrapper if wrapper in prompt else marker  # the processor replaces the template's whole wrapper
        before, after = prompt.split(marker, 1)
        return before, after

    def _encode(self, text: str, first: bool = False) -> list[int]:
        if not text:
            return []
        # as the processor tokenizes the whole prompt: special tokens only at its start
        return list(self.tokenizer(text, add_special_tokens=first)["input_ids"])

    def after(self, question: str) -> list[int]:
        before, after = self._split(question)
        if self._encode(before, first=True) != self.before:
            raise SharpVError("the chat template puts the question before the video; a live session needs the video first")
        return self._encode(after)

    def body(self, first_frame: int, frames: int, per_frame: int, fps: float, temporal: int) -> list[int]:
        """The video tokens of ``frames`` frames (a whole number of steps) from ``first_frame``."""
        if self.family == "llava-onevision":
            return [self.video_id] * (frames * per_frame)
        steps = frames // temporal
        if self.family == "qwen2.5-vl":
            return [self.video_id] * (steps * per_frame)
        out: list[int] = []
        for step in range(steps):  # Qwen3-VL: "<t seconds>" (mean time of the step's frames), start, tokens, end
            first = first_frame + step * temporal
            stamp = (first / fps + (first + temporal - 1) / fps) / 2
            out += self._encode(f"<{stamp:.1f} seconds>") + [self.start_id] + [self.video_id] * per_frame + [self.end_id]
        return out


class LiveVideo(ChunkedPrefill):
    """Frames in as they come, questions at any point; see the module docstring.

    Usage::

        with sharpv.apply(model, kv=False) as handle:
            live = LiveVideo(handle, processor, fps=2.0)
            for frame in capture:                  # (H, W, 3) uint8 RGB
                live.push(frame)
                if something_happened:
                    print(live.ask("What just happened?").text)
    """

    def __init__(self, handle: Any, processor: Any, *, fps: float = 1.0, chunk_frames: int = DEFAULT_LIVE_CHUNK_FRAMES,
                 max_visual_tokens: int | None = None):
        self._start(handle)
        if self.budget:
            raise SharpVError("a live video is selected as frames arrive: use SharpV's adaptive mode (keep_ratio=None)")
        if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
            raise SharpVError(f"fps must be a number > 0 (the rate of the frames you push), got {fps!r}")
        if not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise SharpVError(f"chunk_frames must be an integer >= 1, got {chunk_frames!r}")
        if max_visual_tokens is not None:
            if not isinstance(max_visual_tokens, int) or max_visual_tokens < 1:
                raise SharpVError(f"max_visual_tokens must be an integer >= 1 (or None for no cap), got {max_visual_tokens!r}")
            if self.pruner is not None:
                raise SharpVError("max_visual_tokens needs stage 2 off (sharpv.apply(model, kv=False)): with stage 2 "
                                  "the layers hold different video entries")
        self.processor = processor
        self.fps = float(fps)
        family = self.adapter.family
        self.temporal = 1 if family == "llava-onevision" else int(self.adapter.temporal_patch_size)
        self.chunk_frames = max(chunk_frames - chunk_frames % self.temporal, self.temporal)
        self.max_visual_tokens = max_visual_tokens
        self.parts = _PromptParts(processor, family)
        self.frames_seen = 0  # frames encoded into the cache
        self.evicted = 0
        self._pending: list[np.ndarray] = []
        self._frame_shape: tuple[int, ...] | None = None
        self._video_ids: list[int] = list(self.parts.before)
        self._grid: tuple[int, int] | None = None  # (gh, gw) of the patch grid (Qwen-VL)
        self._size: tuple[int, int] | None = None  # the frames' input size, pinned at the first chunk
        self._per_frame = 0
        self._scores: list[torch.Tensor] = []  # stage-1 score of every video entry in the cache, in cache order
        self._set_prompt(self._inputs(self._video_ids))

    # --- frames in --------------------------------------------------------------------------
    def push(self, frames: np.ndarray) -> int:
        """Add one frame (H, W, 3) or several (k, H, W, 3), uint8 RGB; every full chunk is encoded,
        pruned and fed at once. Returns the number of frames in the cache."""
        frames = self._check_frames(frames)
        for frame in frames:
            self._pending.append(frame)
            if len(self._pending) >= self.chunk_frames:
                self._encode_pending()
        return self.frames_seen

    def extend(self, frames: Iterable[np.ndarray]) -> int:
        """:meth:`push` every frame of an iterable (a capture loop, a decoder)."""
        for frame in frames:
            self.push(frame)
        return self.frames_seen

    @property
    def visual_tokens(self) -> int:
        """Video tokens in the cache now."""
        return int(sum(int(v.sum()) for v in self.fed_visual))

    def _check_frames(self, frames: Any) -> np.ndarray:
        if isinstance(frames, torch.Tensor):
            frames = frames.numpy()
        if not isinstance(frames, np.ndarray):
            raise SharpVError(f"frames must be numpy arrays (H, W, 3) or (k, H, W, 3) of uint8 RGB, got {type(frames).__name__}")
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise SharpVError(f"frames must be (H, W, 3) or (k, H, W, 3) uint8 RGB, got {frames.dtype} {tuple(frames.shape)}")
        if self._frame_shape is None:
            self._frame_shape = frames.shape[1:]
        elif frames.shape[1:] != self._frame_shape:
            raise SharpVError(f"a frame of {tuple(frames.shape[1:])} after frames of {self._frame_shape}: every frame of a "
                              "live video must have the same size")
        return frames

    def _encode_pending(self) -> None:
        usable = len(self._pending) - len(self._pending) % self.temporal
        if usable == 0:
            return
        frames, self._pending = np.stack(self._pending[:usable]), self._pending[usable:]
        first = self.frames_seen
        clip = SampledVideo(frames, list(range(first, first + usable)), first + usable, self.fps)
        if isinstance(self.processor, TorchVideoInputs):  # the stream's frame size, pinned at its first chunk
            if self._size is None:
                self._size = self.processor.input_size(*frames.shape[1:3], usable) or tuple(frames.shape[1:3])
            prompt = self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": ""}]}])
            pixels = self.processor.prepare(prompt, clip, size=self._size)
        else:
            pixels = build_inputs(self.processor, "", clip)
        kwargs = {key: pixels[key] for key in PIXEL_KEYS if key in pixels}
        grid = kwargs.get("video_grid_thw")
        if grid is not None:
            size = (int(grid[0, 1]), int(grid[0, 2]))
            if self._grid is not None and size != self._grid:
                raise SharpVError(f"the processor made a chunk of {usable} frames {size} patches where earlier chunks had "
                                  f"{self._grid}; push frames already at the model's input size")
            self._grid = size
        with torch.no_grad():
            output = self.adapter.encode(kwargs)
        grids = self.adapter.grids(output, kwargs)
        per_frame = int(grids.grids[0].shape[1])
        self._per_frame = per_frame
        self._video_ids += self.parts.body(first, usable, per_frame, self.fps, self.temporal)
        self.frames_seen += usable
        self._set_prompt(self._inputs(self._video_ids + self._video_end()))
        keep = super().push(output, grid)
        part = self.last_selection
        self._scores.append(part.scores[keep].reshape(-1))
        del output, pixels, kwargs
        self._evict()

    # --- the cap ----------------------------------------------------------------------------
    def _evict(self) -> None:
        if self.max_visual_tokens is None:
            return
        scores = torch.cat(self._scores)
        excess = scores.numel() - self.max_visual_tokens
        if excess <= 0:
            return
        victims = torch.sort(scores, stable=True).indices[:excess]  # lowest first; ties: the older first
        survive = torch.ones(scores.numel(), dtype=torch.bool)
        survive[victims] = False
        visual = torch.cat(self.fed_visual)
        entries = torch.ones(visual.numel(), dtype=torch.bool)
        entries[visual.nonzero().squeeze(1)[~survive]] = False
        for layer in self.cache.layers:
            layer.keys = layer.keys[:, :, entries]
            layer.values = layer.values[:, :, entries]
        self.fed_positions = [torch.cat(self.fed_positions, dim=-1)[..., entries]]
        self.fed_visual = [visual[entries]]
        self._scores = [scores[survive]]
        self.evicted += excess

    # --- the prompt -------------------------------------------------------------------------
    def _video_end(self) -> list[int]:
        """Tokens that close the video: LLaVA-OneVision's image_newline placeholder."""
        return [self.parts.video_id] * self.adapter.extra_tokens_per_video if self.frames_seen else []

    def _inputs(self, ids: list[int]) -> dict[str, torch.Tensor]:
        input_ids = torch.tensor([ids], dtype=torch.long)
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if self.adapter.family != "llava-onevision":
            types = torch.zeros_like(input_ids)
            types[input_ids == self.parts.image_id] = 1
            types[input_ids == self.parts.video_id] = 2
            inputs["mm_token_type_ids"] = types
            if self._grid is not None and self.frames_seen:
                inputs["video_grid_thw"] = torch.tensor([[self.frames_seen // self.temporal, *self._grid]])
                if self.adapter.family == "qwen2.5-vl":
                    inputs["second_per_grid_ts"] = torch.tensor([self.temporal / self.fps])
        return inputs

    # --- questions --------------------------------------------------------------------------
    def ask(self, question: str, *, max_new_tokens: int = 32, do_sample: bool = False, **generate_kwargs: Any) -> LiveAnswer:
        """Answer ``question`` from the frames seen so far. Only the question's tokens are
        prefilled; the cache is cut back to the video afterwards."""
        start = time.perf_counter()
        if not isinstance(question, str) or not question.strip():
            raise SharpVError("the question is empty; ask something about the video")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise SharpVError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        self._encode_pending()
        if self.frames_seen == 0:
            raise SharpVError(f"no frames yet: push at least {self.temporal} frame{'s' if self.temporal > 1 else ''} before asking")
        inputs = self._inputs(self._video_ids + self._video_end() + self.parts.after(question))
        saved = self._save()
        visual_tokens = self.visual_tokens
        timer = _FirstToken()
        try:
            self._set_prompt(inputs)
            cache = self.finish()
            with torch.no_grad():
                out = self.model.generate(**inputs, **cache_kwargs(cache), max_new_tokens=max_new_tokens,
                                          do_sample=do_sample, streamer=timer, **generate_kwargs)
        finally:
            self._restore(saved)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        new = sequences[0, inputs["input_ids"].shape[1]:].tolist()
        end = time.perf_counter()
        return LiveAnswer(
            question=question, text=self.parts.tokenizer.decode(new, skip_special_tokens=True).strip(), token_ids=new,
            frames_seen=self.frames_seen, visual_tokens=visual_tokens,
            question_tokens=inputs["input_ids"].shape[1] - saved["cursor"],
            seconds_to_first_token=(timer.at or end) - start, seconds=end - start, evicted_tokens=self.evicted,
            output=None if isinstance(out, torch.Tensor) else out,
        )

    def _save(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor, "used": self.used, "fed": self.fed, "pieces": len(self.fed_positions),
            "reports": len(self.chunk_reports), "lengths": [layer.get_seq_length() for layer in self.cache.layers],
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        """Back to the video alone: the question, its answer and the video's closing tokens leave
        every layer (each to its own length: stage 2 may have left layers of different lengths)."""
        for layer, length in zip(self.cache.layers, saved["lengths"]):
            extra = layer.get_seq_length() - length
            if extra > 0:
                layer.keys = layer.keys[..., :length, :]
                layer.values = layer.values[..., :length, :]
        self.cursor, self.used, self.fed = saved["cursor"], saved["used"], saved["fed"]
        del self.fed_positions[saved["pieces"]:], self.fed_visual[saved["pieces"]:], self.chunk_reports[saved["reports"]:]
        self._set_prompt(self._inputs(self._video_ids + self._video_end()))
