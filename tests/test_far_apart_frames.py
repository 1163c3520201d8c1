"""Frames sampled far apart in time (a 795-frame 768x576 clip, 8 frames: one every ~4 s).

Qwen2.5-VL spaces a video's temporal M-RoPE positions by the seconds between frames, so here the
video's largest position is a temporal one, far beyond the text that follows it (transformers
starts text after a video at the video's *spatial* extent). Positions of a conversation are then
not the sequence index plus a constant, and every path that continues a cache must place its
tokens as a one-shot prompt would: several questions on one video, a second chat turn, and
methods that prune nothing before the LLM (dense, VTW, a keep ratio that rounds to keep-all),
on every family."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from sharpv import create
from sharpv.answer import generate_answer, generate_answers
from sharpv.cli import main
from sharpv.compat import cache_kwargs, output_cache
from sharpv.video import build_inputs, read_video

from conftest import extend

NEW = 4
QUESTIONS = ["what color is the square ?", "is it red ?"]
# nothing pruned before the LLM (dense, VTW, a budget that rounds to every token), and real pruning
METHODS = {
    "dense": lambda: create("dense"),
    "vtw": lambda: create("vtw"),
    "keep-all-budget": lambda: create("sharpv", keep_ratio=0.9999, kv=False),
    "sharpv-0.5": lambda: create("sharpv", keep_ratio=0.5, kv_threshold=2.0, kv_min_layer=2),
}


@pytest.fixture(scope="module")
def far_clip(tmp_path_factory):
    """795 frames of 768x576 at 25 fps (the long-video clip's shape): a red square crossing a
    textured background."""
    path = tmp_path_factory.mktemp("far") / "clip795.mp4"
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (576, 768, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 768, 576, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(795):
            frame = background.copy()
            x = (i * 3) % 700
            frame[200:300, x : x + 60] = (255, 0, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def far_video(far_clip):
    return read_video(far_clip, 8)


def test_the_clip_puts_the_video_s_largest_position_beyond_the_text_after_it(tiny_dirs, far_video):
    """The premise: on Qwen2.5-VL the text after this video starts below the video's largest
    temporal position (with close frames the two coincide and the bugs below do not show)."""
    from transformers import AutoModelForImageTextToText

    from sharpv.video import load_processor

    path = tiny_dirs["qwen2.5-vl"]
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    x = build_inputs(load_processor(path, "qwen2.5-vl"), QUESTIONS[0], far_video)
    positions, _ = model.model.get_rope_index(x["input_ids"], mm_token_type_ids=x["mm_token_type_ids"],
                                              video_grid_thw=x["video_grid_thw"],
                                              second_per_grid_ts=x["second_per_grid_ts"],
                                              attention_mask=x["attention_mask"])
    assert far_video.indices[1] - far_video.indices[0] > 90
    assert int(positions.max()) > int(positions[:, 0, -1].max()) + 10


def _greedy(model, **kwargs):
    return model.generate(**kwargs, do_sample=False, output_logits=True, return_dict_in_generate=True,
                          max_new_tokens=NEW, min_new_tokens=NEW)


@pytest.mark.parametrize("method", list(METHODS))
def test_several_questions_equal_each_question_alone(family, far_video, method):
    inputs = [build_inputs(family.processor, q, far_video) for q in QUESTIONS]
    kwargs = dict(max_new_tokens=NEW, generate_kwargs=dict(min_new_tokens=NEW, output_logits=True))
    alone = [generate_answer(family.model, family.processor, x, METHODS[method](), **kwargs) for x in inputs]
    shared = generate_answers(family.model, family.processor, inputs, METHODS[method](), **kwargs)
    for one, many in zip(alone, shared.generations):
        assert many.new_tokens == one.new_tokens
        for got, want in zip(many.logits, one.logits):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_keep_all_equals_the_unmodified_model(family, far_video):
    x = build_inputs(family.processor, QUESTIONS[0], far_video)
    with torch.no_grad():
        want = _greedy(family.model, **x)
        with create("dense")(family.model):
            got = _greedy(family.model, **x)
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.logits, want.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", list(METHODS))
def test_second_turn_equals_a_fresh_prefill_of_the_conversation(family, far_video, method):
    x = build_inputs(family.processor, QUESTIONS[0], far_video)
    turn2 = family.processor.tokenizer(" where is it at the end ?", return_tensors="pt",
                                       add_special_tokens=False)["input_ids"]

    with METHODS[method]()(family.model), torch.no_grad():
        first = _greedy(family.model, **x)
        history = extend(x, torch.cat([first.sequences[:, x["input_ids"].shape[1]:], turn2], dim=1))
        second = _greedy(family.model, **history, **cache_kwargs(output_cache(first)))
        fresh = _greedy(family.model, **history)
    n = history["input_ids"].shape[1]
    assert second.sequences[0, n:].tolist() == fresh.sequences[0, n:].tolist()
    for a, b in zip(second.logits, fresh.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_cli_answer_and_eval_with_two_questions_on_the_clip(capsys, tiny_dirs, far_clip, tmp_path):
    """`sharpv answer VIDEO Q1 Q2 --method dense` answers both as each alone; `sharpv eval` with two
    questions on the video finishes."""
    model = str(tiny_dirs["qwen2.5-vl"])
    common = ["--model", model, "--frames", "8", "--max-new-tokens", "3", "--method", "dense", "--json"]
    assert main(["answer", str(far_clip), *QUESTIONS, *common]) == 0
    both = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    for q, result in zip(QUESTIONS, both):
        assert main(["answer", str(far_clip), q, *common]) == 0
        single = json.loads(capsys.readouterr().out)
        assert result["new_tokens"] == single["new_tokens"] and result["answer"] == single["answer"]

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "video": str(far_clip), "question": q, "answer": "red"}) + "\n"
                            for i, q in enumerate(QUESTIONS)))
    out = tmp_path / "eval"
    code = main(["eval", "--data", str(data), "--model", model, "--methods", "dense,vtw", "--budgets", "0.3", "--frames", "8",
                 "--max-new-tokens", "2", "--threads", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "results.json").read_text())
    assert [r["n"] for r in records] == [2, 2]
