"""One pruned video, many questions: the pruned video prefix (stage 1, and stage 2's per-layer cache)
is prefilled once and every question prefills only its own tokens on it; each answer must equal
asking that question alone with the same method. Covers the Python API, `sharpv answer VIDEO Q1
Q2 ...`, and `sharpv eval` on datasets with several questions per video."""

from __future__ import annotations

import json

import pytest
import torch

from sharpv import SharpV, create
from sharpv.answer import (
    answer_question, answer_questions, generate_answer, generate_answers, shared_prefix_length,
)
from sharpv.cli import main
from sharpv.compat import cache_keys
from sharpv.errors import SharpVError
from sharpv.video import build_inputs

from conftest import moving_square_video
from test_video import write_video

NEW = 4
QUESTIONS = ["what color is the square ?", "where is the square at the end ?", "is it red ?"]
SETTINGS = {
    "stage1": dict(keep_ratio=0.5, kv=False),
    "withdraw": dict(keep_ratio=0.5, kv_threshold=2.0, kv_min_layer=2),
    "withdraw-token": dict(keep_ratio=0.5, kv_threshold=0.8, kv_granularity="token", kv_min_layer=2),
    "adaptive-compact": dict(kv_threshold=2.0, positions="compact"),
}


def _seq(kwargs) -> int:
    """Entries of the cache a forward call continues (0 without one), under either cache keyword."""
    cache = next((kwargs[k] for k in cache_keys() if kwargs.get(k) is not None), None)
    return 0 if cache is None else int(cache.get_seq_length())


class LLMCalls:
    """Tokens entering the language model per forward call (after the runtime's rewrite)."""

    def __init__(self, model):
        self.lengths: list[int] = []
        self.handle = model.model.language_model.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        self.lengths.append(int((embeds if embeds is not None else kwargs.get("input_ids", args[0] if args else None)).shape[1]))

    def remove(self):
        self.handle.remove()


def no_hooks_left(model) -> bool:
    return not model._forward_pre_hooks and not model._forward_hooks


# --- 1. equivalence --------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_each_answer_equals_its_question_alone(family, setting):
    method = SharpV(**SETTINGS[setting])
    inputs = [family.inputs(q) for q in QUESTIONS]
    kwargs = dict(max_new_tokens=NEW, generate_kwargs=dict(min_new_tokens=NEW, output_logits=True))
    alone = [generate_answer(family.model, family.processor, x, method, **kwargs) for x in inputs]
    calls = LLMCalls(family.model)
    try:
        shared = generate_answers(family.model, family.processor, inputs, method, **kwargs)
    finally:
        calls.remove()
    assert no_hooks_left(family.model)
    for one, many in zip(alone, shared.generations):
        assert many.new_tokens == one.new_tokens and many.text == one.text
        assert len(many.logits) == len(one.logits) == NEW
        for got, want in zip(many.logits, one.logits):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        # pruning and the cache after the question's prefill are those of the question alone
        assert many.stats.kept_per_frame == one.stats.kept_per_frame
        assert many.stats.kv_cache_lengths == one.stats.kv_cache_lengths
        assert many.stats.kv_cache_bytes == one.stats.kv_cache_bytes
        assert many.stats.kv_cache_bytes_dense == one.stats.kv_cache_bytes_dense
    if setting != "stage1":  # stage 2 really pruned inside the LLM
        assert shared.prefix_stats.kv_withdraw_layer is not None
        assert len(set(shared.generations[0].stats.kv_cache_lengths)) > 1
    assert shared.prefix_stats.visual_tokens_kept < shared.prefix_stats.visual_tokens_in
    # the video went through the LLM once; each question fed only its own tokens, then decoded
    own = [x["input_ids"].shape[1] - shared.prefix_tokens for x in inputs]
    assert calls.lengths == [shared.prefix_cache_length] + [n for k in own for n in [k] + [1] * (NEW - 1)]
    assert shared.prefix_prefill_seconds > 0 and all(g.prefill_seconds > 0 for g in shared.generations)


def test_the_prefix_ends_after_the_video_and_the_template_tokens_that_follow_it(family):
    inputs = [family.inputs(q) for q in QUESTIONS]
    video_id = family.model.config.video_token_id
    ids = inputs[0]["input_ids"][0]
    last = int((ids == video_id).nonzero().max())
    if family.arch == "llava-onevision":
        # the word-level tiny tokenizer puts the question right after the (always kept) newline token
        assert shared_prefix_length(inputs, video_id, may_end_on_video=True) == last + 1
        with pytest.raises(SharpVError, match="start right after the video's last token"):
            shared_prefix_length(inputs, video_id)
    else:
        length = shared_prefix_length(inputs, video_id)
        assert length > last + 1 and int(ids[length - 1]) == family.model.config.vision_end_token_id
    # identical questions: every prompt still keeps a token of its own
    same = [family.inputs(QUESTIONS[0])] * 2
    assert shared_prefix_length(same, video_id, may_end_on_video=True) == same[0]["input_ids"].shape[1] - 1


def test_answer_questions_returns_each_answer_with_its_timing(family):
    video = moving_square_video(8)
    method = SharpV(keep_ratio=0.5, kv_threshold=2.0)
    results = answer_questions(family.model, family.processor, video, QUESTIONS, method=method, max_new_tokens=3)
    singles = [answer_question(family.model, family.processor, video, q, method=method, max_new_tokens=3) for q in QUESTIONS]
    assert [r.question for r in results] == QUESTIONS
    assert [r.answer for r in results] == [s.answer for s in singles]
    assert [r.new_tokens for r in results] == [s.new_tokens for s in singles]
    assert len({r.prefix_prefill_seconds for r in results}) == 1 and results[0].prefix_prefill_seconds > 0
    for r, s in zip(results, singles):
        assert r.prefill_seconds == r.question_prefill_seconds > 0
        assert r.visual_tokens_kept == s.visual_tokens_kept and r.kv_cache_bytes == s.kv_cache_bytes
        assert set(s.to_dict()) < set(r.to_dict())
        assert r.prefix_tokens + r.question_tokens == build_inputs(family.processor, r.question, video)["input_ids"].shape[1]
    one = answer_questions(family.model, family.processor, video, QUESTIONS[:1], method=method, max_new_tokens=3)
    assert one[0].answer == singles[0].answer and one[0].prefix_prefill_seconds == 0.0 and one[0].prefix_tokens == 0


# --- 2. refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, message", [
    (SharpV(keep_ratio=0.5, kv_mode="layerwise"), r"kv_mode='layerwise' \(--kv-mode layerwise\) cannot share.*kv_mode='withdraw'.*one question at a time"),
    (create("fastv", keep_ratio=0.5), "last token, which belongs to the question.*one question at a time"),
], ids=["layerwise", "fastv"])
def test_methods_that_read_the_question_or_drop_after_prefill_are_refused(family, method, message):
    video = moving_square_video(8)
    with pytest.raises(SharpVError, match=message) as err:
        answer_questions(family.model, family.processor, video, QUESTIONS[:2], method=method, max_new_tokens=2)
    assert "\n" not in str(err.value)
    with pytest.raises(SharpVError, match=message):
        generate_answers(family.model, family.processor, [family.inputs(q) for q in QUESTIONS[:2]], method, max_new_tokens=2)
    assert no_hooks_left(family.model)
    # one question at a time still works
    assert answer_questions(family.model, family.processor, video, QUESTIONS[:1], method=method, max_new_tokens=2)[0].answer is not None


def _question_before_the_video(family, inputs: dict, question: str) -> dict:
    """``inputs`` with ``question``'s tokens placed before the video, as a template that puts the
    question first would."""
    words = family.processor.tokenizer(question, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"][:, :1], words, inputs["input_ids"][:, 1:]], dim=1)
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if "mm_token_type_ids" in inputs:
        types = inputs["mm_token_type_ids"]
        out["mm_token_type_ids"] = torch.cat([types[:, :1], torch.zeros_like(words), types[:, 1:]], dim=1)
    return out


def test_prompts_that_differ_before_the_end_of_the_video_are_refused(family):
    first = family.inputs(QUESTIONS[0])
    before = _question_before_the_video(family, family.inputs(QUESTIONS[1]), QUESTIONS[1])
    method = SharpV(keep_ratio=0.5)
    with pytest.raises(SharpVError, match=r"question 2's prompt differs from question 1's at token 1, before the end of the video.*same user turn") as err:
        generate_answers(family.model, family.processor, [first, before], method, max_new_tokens=2)
    assert "\n" not in str(err.value)
    other_video = family.inputs(QUESTIONS[1], seed=3)
    with pytest.raises(SharpVError, match="question 2's pixel_values_videos differs from question 1's: one pruned video prefix serves one video"):
        generate_answers(family.model, family.processor, [first, other_video], method, max_new_tokens=2)
    assert no_hooks_left(family.model)
    with pytest.raises(SharpVError, match="question 2 is empty"):
        answer_questions(family.model, family.processor, moving_square_video(8), ["q", "  "], method=method)


# --- 3. the command line ----------------------------------------------------------------------------
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", n=24, size=64)


def test_cli_several_questions_print_one_json_line_each(capsys, tiny_dirs, clip):
    common = ["--model", tiny_dirs["qwen2.5-vl"], "--frames", 8, "--max-new-tokens", 3, "--keep-ratio", 0.5,
              "--kv-threshold", 2, "--json"]
    code, out, err = run(capsys, "answer", clip, *QUESTIONS, *common)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == len(QUESTIONS)
    results = [json.loads(line) for line in lines]
    singles = []
    for q in QUESTIONS:
        code, out, err = run(capsys, "answer", clip, q, *common)
        assert code == 0, err
        singles.append(json.loads(out))
    for q, r, s in zip(QUESTIONS, results, singles):
        assert set(s) < set(r) and "question" not in s
        assert r["question"] == q
        assert r["answer"] == s["answer"] and r["new_tokens"] == s["new_tokens"]
        assert r["visual_tokens_kept"] == s["visual_tokens_kept"] and r["kv_cache_bytes"] == s["kv_cache_bytes"]
        assert r["prefill_seconds"] == r["question_prefill_seconds"] > 0
    assert len({r["prefix_prefill_seconds"] for r in results}) == 1


def test_cli_several_questions_text_output_lists_pairs(capsys, tiny_dirs, clip):
    code, out, err = run(capsys, "answer", clip, *QUESTIONS[:2], "--model", tiny_dirs["llava-onevision"],
                         "--frames", 6, "--max-new-tokens", 2)
    assert code == 0, err
    blocks = out.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [f"Q: {q}" for q in QUESTIONS[:2]]
    assert all(b.splitlines()[1].startswith("A:") for b in blocks)
    assert "pruned and prefilled once" in err and "question prefills" in err


@pytest.mark.parametrize("argv, message", [
    (["q1", "", "q3"], "QUESTION 2 is empty"),
    (["q1", "q2", "--kv-mode", "layerwise"], "kv_mode='layerwise' (--kv-mode layerwise) cannot share"),
    (["q1", "q2", "--method", "fastv"], "fastv ranks visual tokens by the attention of the prompt's last token"),
], ids=["empty", "layerwise", "fastv"])
def test_cli_several_questions_are_checked_before_the_model_loads(capsys, tmp_path, clip, argv, message):
    code, out, err = run(capsys, "answer", clip, *argv, "--model", tmp_path / "no-such-model")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


# --- 4. sharpv eval ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def several_per_video(tmp_path_factory):
    """Two clips with three questions each and one clip with one, in the JSONL layout (rows of one
    video are not adjacent)."""
    from sharpv.synthetic import generate
    from sharpv.synthetic.dataset import export_jsonl

    root = tmp_path_factory.mktemp("multi")
    items = generate(11, 6)
    export_jsonl(items, root)
    rows = []
    for k, video in enumerate([items[0], items[1]]):
        for j, item in enumerate(items[2 + 2 * k : 4 + 2 * k] + [video]):
            rows.append({"id": f"{video.id}-{j}", "video": f"videos/{video.id}.mp4", "question": item.question,
                         "answer": item.answer, "type": item.qtype})
    rows.insert(2, {"id": "single", "video": f"videos/{items[5].id}.mp4", "question": items[5].question,
                    "answer": items[5].answer, "type": items[5].qtype})
    path = root / "multi.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_eval_reuses_the_pruned_prefix_per_video_with_the_same_results(several_per_video):
    from sharpv.answer import load_model
    from sharpv.harness.bench import MethodSpec
    from sharpv.harness.evaluate import evaluate, load_jsonl, video_groups
    from sharpv.synthetic.model import FRAMES, shipped_model_path

    examples = load_jsonl(several_per_video)
    assert sorted(len(g) for g in video_groups(examples)) == [1, 3, 3]
    model, processor = load_model(shipped_model_path())
    specs = [MethodSpec.parse(m) for m in ("sharpv", "sharpv:kv_threshold=2.0", "random", "sharpv:kv_mode=layerwise", "fastv")]
    budgets = [0.3, None]
    runs = {}
    for reuse in (False, True):
        prefills = []
        handle = model.register_forward_pre_hook(
            lambda m, a, kw: prefills.append(_seq(kw) == 0),
            with_kwargs=True)
        try:
            runs[reuse] = evaluate(model, processor, examples, specs, budgets, frames=FRAMES, max_new_tokens=4,
                                   keep_predictions=True, reuse_prefix=reuse)
        finally:
            handle.remove()
        runs[reuse, "prefills"] = sum(prefills)
    plain, reused = runs[False], runs[True]
    assert [(r["method"], r["budget"]) for r in plain] == [(r["method"], r["budget"]) for r in reused]
    for a, b in zip(plain, reused):
        assert a["predictions"] == b["predictions"], a["method"]
        for key in ("accuracy", "n", "correct", "accuracy_by_type", "kept_share", "kv_share", "in_llm_pruned_share",
                    "visual_tokens_kept"):
            assert a[key] == b[key], (a["method"], key)
    # 7 questions on 3 videos: methods that share a prefix prefill each video once (3 instead of 7);
    # layerwise and FastV cannot, and prefill every question
    n_runs = len(plain)
    unshared = sum(r["method"] in ("sharpv:kv_mode=layerwise", "fastv") for r in plain)
    assert runs[False, "prefills"] == 7 * n_runs
    assert runs[True, "prefills"] == 3 * (n_runs - unshared) + 7 * unshared
    assert any(r["kv_share"] < 1 for r in reused if r["method"] == "sharpv:kv_threshold=2.0")


def test_eval_cli_on_a_dataset_with_several_questions_per_video(capsys, several_per_video, tmp_path):
    out = tmp_path / "res"
    code, _, err = run(capsys, "eval", "--data", several_per_video, "--methods", "sharpv", "--budgets", "0.3",
                       "--max-new-tokens", 4, "--threads", 1, "--out", out)
    assert code == 0, err
    records = json.loads((out / "results.json").read_text())
    assert [r["n"] for r in records] == [7, 7]
    assert json.loads((out / "run.json").read_text())["questions_sharing_a_video"] == 6
    assert "prefilled once per method" in (out / "results.md").read_text()


def test_beams_cannot_share_the_prefix_cache(family):
    inputs = [family.inputs(q) for q in QUESTIONS[:2]]
    with pytest.raises(SharpVError, match="num_beams=2 expands the cache per sequence"):
        generate_answers(family.model, family.processor, inputs, SharpV(keep_ratio=0.5), max_new_tokens=2,
                         generate_kwargs=dict(num_beams=2))
    assert no_hooks_left(family.model)
