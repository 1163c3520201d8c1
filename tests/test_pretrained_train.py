"""`sharpv model train` (issue 25, point 2) on tiny parts: the cached feature path is the model's,
conversations put the answers where the chat template does, a resumed run equals an uninterrupted
one, the language model's weights stay as they were, the trained weights merge as peft merges them
and the written checkpoint loads with from_pretrained; the CLI's one-line refusals. The real-weight
checks run only when `sharpv model build smollm2-dinov2` has been run on this machine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpv.cli import main
from sharpv.pretrained.assemble import MARKER, assemble, default_out
from test_pretrained_build import tiny_dinov2, tiny_lm

SETTINGS = dict(videos=6, frames=3, turns=3, batch=2, steps=4, val_items=6, eval_every=2, lora_rank=2,
                lora_alpha=4.0, warmup=2)


def tiny_base(folder: Path) -> Path:
    from sharpv.synthetic.model import vocabulary
    from sharpv.tiny import word_tokenizer

    tok = word_tokenizer(["<|im_start|>", "<|im_end|>"], vocabulary() + ["user", "assistant", "system"])
    model, parts = assemble(tiny_dinov2(image_size=56), tiny_lm(len(tok)), tok, frame_size=56)
    model.save_pretrained(folder)
    parts.save(folder)
    (folder / MARKER).write_text(json.dumps({"name": "tiny", "sources": [], "trained": {"projector": False}}))
    return folder


def has_peft() -> bool:
    import importlib.util

    return importlib.util.find_spec("peft") is not None


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_base(tmp_path_factory.mktemp("base"))


def run(base: Path, root: Path, **kw):
    from sharpv.pretrained.train import TrainSettings, train

    settings = TrainSettings(**{**SETTINGS, "lora_rank": 2 if has_peft() else 0, **kw.pop("settings", {})})
    torch.set_num_threads(1)
    return train("smollm2-dinov2", settings, state=root / "state", out=root / "out", base=base, max_minutes=None,
                 log=lambda _: None, **kw)


def load(folder: Path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder).eval()


# ---------------------------------------------------------------------------------------------------
# the feature path


def _check_feature_path(model, pixels):
    from sharpv.pretrained.train_data import video_features, vision_features

    cfg = model.config
    with torch.no_grad():
        want = model.model.get_video_features(pixel_values_videos=pixels, vision_feature_layer=cfg.vision_feature_layer,
                                              vision_feature_select_strategy=cfg.vision_feature_select_strategy).pooler_output
        cached = vision_features(model, pixels)
        assert torch.equal(video_features(model, cached), want)
        half = video_features(model, cached.to(torch.float16).float())  # what the on-disk cache gives
    return want, half


def test_cached_feature_path_equals_the_models(base):
    model = load(base)
    with torch.no_grad():  # a trained-looking projector, not the init
        for p in model.model.multi_modal_projector.parameters():
            p.add_(0.1 * torch.randn_like(p))
    want, half = _check_feature_path(model, torch.randn(2, 3, 3, 56, 56))
    assert want.shape == (2, 3 * 4 + 1, model.config.text_config.hidden_size)
    assert torch.allclose(half, want, atol=1e-2, rtol=1e-2)


def test_feature_cache_shards_round_trip(base, tmp_path):
    from sharpv.answer import load_model
    from sharpv.pretrained.train_data import FeatureCache, pixels_of, vision_features
    from sharpv.synthetic.dataset import generate

    model, proc = load_model(base, dtype="float32")
    items = generate(3, 5, frames=3, size=56)
    cache = FeatureCache(tmp_path, "t", {"k": 1}, len(items), shard=2)
    assert cache.build(model, proc, items)
    assert cache.complete() and len(list(tmp_path.glob("t-*.npy"))) == 3
    want = vision_features(model, torch.stack([pixels_of(proc, it) for it in items]))
    assert torch.allclose(cache.batch([0, 3, 4]), want[[0, 3, 4]].half().float())
    assert not FeatureCache(tmp_path, "t", {"k": 2}, len(items), shard=2).complete()  # other settings: rebuild


@pytest.mark.skipif(not (default_out("smollm2-dinov2") / MARKER).is_file(), reason="sharpv model build smollm2-dinov2 not run")
def test_real_model_cached_feature_path_equals_the_models():
    from sharpv.answer import load_model
    from sharpv.pretrained.train_data import pixels_of
    from sharpv.synthetic.dataset import generate

    torch.set_num_threads(1)
    model, proc = load_model(default_out("smollm2-dinov2"), dtype="float32")
    it = generate(5, 1, frames=3, size=224)[0]
    want, half = _check_feature_path(model, pixels_of(proc, it)[None])
    assert want.shape == (1, 3 * 64 + 1, 576)
    assert (half - want).abs().max() < 2e-2 * want.abs().max()


# ---------------------------------------------------------------------------------------------------
# conversations


def test_first_turn_is_the_inference_prompt_and_labels_are_the_answers(base):
    from sharpv.answer import load_model
    from sharpv.pretrained.train_data import Encoder
    from sharpv.synthetic.dataset import generate
    from sharpv.video import SampledVideo, build_inputs

    _, proc = load_model(base, dtype="float32")
    enc = Encoder(proc, 3 * 4 + 1)
    it = generate(4, 1, frames=3, size=56)[0]
    f = it.frames()
    want = build_inputs(proc, it.question, SampledVideo(f, [0, 1, 2], 3, 8.0))["input_ids"][0].tolist()
    assert enc.prompt(it.question) == want
    turns = [(it.question, it.answer), ("how many objects are there ?", "two"), ("what color is the square ?", "red")]
    e = enc.encode(turns)
    assert e.ids[: len(want)] == want  # the first turn's prompt is exactly the single-question prompt
    tok = proc.tokenizer
    got = [tok.decode([e.ids[p + 1]]) for p in e.positions]
    assert got == [it.answer, "<|im_end|>", "two", "<|im_end|>", "red", "<|im_end|>"]
    assert [e.targets[i] == e.ids[p + 1] for i, p in enumerate(e.positions)] == [True] * 6
    single = enc.single(it.question, it.answer)
    assert single.ids[: len(want)] == want and single.positions[0] == len(want) - 1


def test_extra_questions_are_true_of_the_scene():
    from sharpv.synthetic.conversation import conversation, extra_questions
    from sharpv.synthetic.dataset import generate

    items = generate(9, 120, frames=8, size=224)
    for it in items:
        for qtype, q, a in extra_questions(replace(it, qtype="none", question=""), 1.0, np.random.default_rng(0)):
            if q == it.question:  # the item's own question, re-derived from the scene
                assert a == it.answer, (it.qtype, q, a, it.answer)
        conv = conversation(it, 4, np.random.default_rng(1))
        assert conv[0] == (it.qtype, it.question, it.answer) and 1 <= len(conv) <= 4
        assert len({q for _, q, _ in conv}) == len(conv)


def test_the_description_states_every_items_answer_about_its_object():
    """The dense caption is true of the scene: each item's own answer (built into the scene) is
    said about the right object, in the answer's words."""
    from sharpv.synthetic.conversation import DESCRIBE, conversation, description
    from sharpv.synthetic.dataset import generate

    for it in generate(11, 240, frames=8, size=224):
        kind, question, text = description(it)
        assert (kind, question) == ("describe", DESCRIBE) and text.endswith(" .")
        count, *objects = text[:-2].split(" ; ")
        if it.qtype == "count":
            assert count.split()[0] == it.answer
        assert len(objects) == len(it.scene.objects) and count.startswith(("one object", "two objects", "three objects"))
        part = next((o for o in objects if f" {it.subject}" in f" {o.split(' , ')[0]}"), None) if it.subject else None
        want = {"colour": f"{it.answer} {it.subject} ,", "position": f"at the {it.answer}",
                "motion": f"moves {it.answer}", "appearance_time": f"appears at the {it.answer}",
                "colour_change": f"{it.subject} turning {it.answer} ,"}.get(it.qtype)
        if want is not None:
            assert want in part + " ,", (it.qtype, it.answer, text)
        if it.qtype == "position":  # the end zone, not a corner or an object's start
            assert part.split(" at the ")[-1].split(" ,")[0] == it.answer
    item = generate(11, 1, frames=8, size=224)[0]
    with_caption = conversation(item, 8, np.random.default_rng(3), describe_share=1.0)
    assert with_caption[-1] == description(item) and with_caption[:-1] == conversation(item, 8, np.random.default_rng(3))
    assert all(t != "describe" for t, _, _ in conversation(item, 8, np.random.default_rng(3), describe_share=0.0))


def test_word_probe_ties_tokens_to_their_words():
    """Tokens that are the sums of their cell's words' embeddings (place, and the object's shape and
    colour) score far better than the same tokens with the labels shuffled; the loss reaches the tokens."""
    from sharpv.pretrained.train_data import PLACE_WORDS, WordProbe
    from sharpv.synthetic.scene import COLOURS, SHAPES

    torch.manual_seed(0)
    side, t = 4, 2
    sets = {**PLACE_WORDS, "shape": SHAPES, "colour": tuple(COLOURS)}
    vocab = sorted({w for ws in sets.values() for w in ws})
    emb = torch.randn(len(vocab) + 5, 32)
    ids = {k: [vocab.index(w) for w in ws] for k, ws in sets.items()}
    probe = WordProbe(emb, ids, side)
    labels = torch.zeros(1, t, side * side, 2, dtype=torch.long)
    labels[0, :, :5, 0] = torch.randint(1, len(SHAPES) + 1, (t, 5))
    labels[0, :, :5, 1] = torch.randint(1, len(COLOURS) + 1, (t, 5))
    cells = torch.arange(side * side)
    feats = torch.zeros(1, t, side * side, 32)
    for ti in range(t):
        for c in range(side * side):
            vec = emb[ids["horizontal"][(c % side) * 3 // side]] + emb[ids["vertical"][(c // side) * 3 // side]]
            if labels[0, ti, c, 0] > 0:
                vec = vec + emb[ids["shape"][labels[0, ti, c, 0] - 1]] + emb[ids["colour"][labels[0, ti, c, 1] - 1]]
            feats[0, ti, c] = vec
    feats = feats.view(1, t * side * side, 32).requires_grad_(True)
    right = probe.loss(feats, labels)
    swapped = WordProbe(emb, {**ids, "vertical": ids["horizontal"], "horizontal": ids["vertical"]}, side)
    assert right < 0.8 * swapped.loss(feats.detach(), labels)  # each place word on its own axis
    wrong = probe.loss(feats.detach().view(1, t, side * side, 32)[:, :, cells.flip(0)].reshape(1, -1, 32),
                       labels.flip(0))
    assert right < 0.6 * wrong, (right, wrong)
    right.backward()
    assert feats.grad.abs().sum() > 0
    empty = torch.zeros_like(labels)  # no object anywhere: the place terms only, no NaN
    assert torch.isfinite(probe.loss(feats.detach(), empty))


def test_a_run_with_the_word_probe_logs_its_loss(base, tmp_path):
    record = run(base, tmp_path, settings={"word_aux": 1.0, "steps": 2})
    assert record["finished"] and record["settings"]["word_aux"] == 1.0
    rows = json.loads((tmp_path / "state" / "trained" / "training_log.json").read_text())
    assert [r["word_loss"] > 0 for r in rows if "loss" in r] == [True]


def test_scenes_scale_up_as_the_same_scene():
    from sharpv.synthetic.dataset import generate
    from sharpv.synthetic.render import render

    scene = replace(generate(2, 1, frames=3)[0].scene, drift=(0.0, 0.0), objects=[])
    small, big = render(scene, 64), render(scene, 128)
    assert np.array_equal(big, small.repeat(2, axis=1).repeat(2, axis=2))
    blocks = render(scene, 224)[0, ::28, ::28]  # 28-px blocks at 224 px: the 64-px texture's 8-px blocks
    assert np.array_equal(blocks, small[0, ::8, ::8])


# ---------------------------------------------------------------------------------------------------
# training: resume, frozen LM, written checkpoint


def _trained(root: Path):
    from sharpv.pretrained import trained

    tensors, _ = trained.load(root / "state" / "trained" / trained.FILE)
    return tensors


def test_resumed_run_equals_an_uninterrupted_one(base, tmp_path):
    whole = run(base, tmp_path / "a")
    assert whole["finished"] and whole["steps"] == 4
    first = run(base, tmp_path / "b", stop_after_steps=3)
    assert not first["finished"] and first["step"] == 3
    second = run(base, tmp_path / "b")
    assert second["finished"] and second["steps"] == 4 and second["runs"] == 2
    a, b = _trained(tmp_path / "a"), _trained(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.startswith("lora.") for k in a) == has_peft()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log_a = json.loads((tmp_path / "a" / "state" / "trained" / "training_log.json").read_text())
    log_b = json.loads((tmp_path / "b" / "state" / "trained" / "training_log.json").read_text())
    assert [r.get("loss") for r in log_a] == [r.get("loss") for r in log_b]
    for name in ("training.json", "training_log.json", "learning_curve.png"):
        assert (tmp_path / "b" / "state" / "trained" / name).is_file()
    again = run(base, tmp_path / "b")  # finished: writes its outputs again, trains nothing
    assert again["steps"] == 4


@pytest.mark.parametrize("how", ["killed", "sigterm"])
def test_run_resumes_exactly_after_a_kill_or_a_signal(base, tmp_path, monkeypatch, how):
    """A run that dies without saving (an exception mid-step, as SIGKILL leaves the state folder)
    goes on from its last checkpoint (step 2: eval_every); SIGTERM stops it after the current step
    with a checkpoint. Either way the resumed run ends with the uninterrupted run's weights and losses."""
    import os
    import signal

    from sharpv.pretrained import train as train_mod

    whole = run(base, tmp_path / "a")
    step_batch = train_mod.Data.step_batch

    def interrupted(self, step, cache):
        if step == 3 and how == "killed":
            raise RuntimeError("killed")
        if step == 1 and how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        return step_batch(self, step, cache)

    monkeypatch.setattr(train_mod.Data, "step_batch", interrupted)
    if how == "killed":
        with pytest.raises(RuntimeError, match="killed"):
            run(base, tmp_path / "b")
    else:
        first = run(base, tmp_path / "b")
        assert not first["finished"] and first["step"] == 2
    saved = torch.load(tmp_path / "b" / "state" / "checkpoint.pt", weights_only=False)
    assert saved["step"] == 2 and not (tmp_path / "b" / "out").exists()
    monkeypatch.setattr(train_mod.Data, "step_batch", step_batch)
    second = run(base, tmp_path / "b")
    assert second["finished"] and second["steps"] == whole["steps"] == 4 and second["runs"] == 2
    a, b = _trained(tmp_path / "a"), _trained(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads((tmp_path / r / "state" / "trained" / "training_log.json").read_text()) for r in "ab"]
    assert [(r["step"], r.get("loss"), r.get("accuracy")) for r in rows[0]] == \
        [(r["step"], r.get("loss"), r.get("accuracy")) for r in rows[1]]


def test_learning_rate_schedule_and_planned_steps():
    from sharpv.pretrained.train import EXPORT_RESERVE, TrainSettings, _lr, _plan_steps

    assert [_lr(s, 100, 1.0, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert _lr(4, 100, 1.0, 4) == 1.0 and _lr(100, 100, 1.0, 4) == pytest.approx(0.1)
    assert _lr(52, 100, 1.0, 4) == pytest.approx(0.55)  # half way down the cosine
    assert _lr(500, None, 1.0, 4) == 1.0  # steps not fixed yet: the peak
    s = TrainSettings(videos=100, batch=2, max_epochs=3.0, eval_every=10)
    assert _plan_steps(s, 17, 0.0, float("inf"), {"sec_per_step": 1.0}) == 150  # no budget: the epochs cap
    # 1 s per step + a 5-s validation every 10 steps: 1.5 s per step in what the budget leaves
    budget = 100.0 + EXPORT_RESERVE + 5.0 + 30.0
    assert _plan_steps(s, 17, 30.0, budget, {"sec_per_step": 1.0, "eval_seconds": 5.0}) == 17 + 66
    assert _plan_steps(s, 17, budget, budget, {"sec_per_step": 1.0}) == 18  # spent: one more step at least


def test_other_settings_refuse_to_resume(base, tmp_path):
    from sharpv.errors import SharpVError

    run(base, tmp_path, stop_after_steps=1)
    with pytest.raises(SharpVError, match="other settings: lr_projector"):
        run(base, tmp_path, settings={"lr_projector": 3e-3})
    assert run(base, tmp_path, settings={"lr_projector": 3e-3}, restart=True)["finished"]


@pytest.mark.parametrize("rank", [0, 2])
def test_language_model_weights_stay_and_adapters_merge_into_the_checkpoint(base, tmp_path, rank):
    """Rank 0 (no peft needed): the written language model and tower equal the base bit for bit;
    rank 2: only the adapted linear layers differ, by exactly the merged update."""
    if rank:
        pytest.importorskip("peft")
    from sharpv.pretrained import trained

    before = load(base)
    record = run(base, tmp_path, settings={"steps": 3, "lora_rank": rank})
    assert (record["trainable_parameters"]["lora"] > 0) == bool(rank)
    after = load(base)  # the base folder is untouched
    for (k, v), (k2, v2) in zip(before.state_dict().items(), after.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    written = load(tmp_path / "out")
    tensors = _trained(tmp_path)
    pairs = trained.lora_pairs(tensors)
    adapted = {f"model.language_model.{p}.weight" for p in pairs}
    changed = []
    for (k, v), v2 in zip(before.state_dict().items(), written.state_dict().values()):
        if k in adapted:
            a, b = pairs[k[len("model.language_model."):-len(".weight")]]
            assert torch.allclose(v2, v + 2.0 * b @ a, atol=1e-6), k  # alpha / rank = 4 / 2
        elif k.startswith("model.language_model.") or k.startswith("model.vision_tower."):
            assert torch.equal(v, v2), k  # every other weight of the LM (norms, embeddings) and the tower
        elif not torch.equal(v, v2):
            changed.append(k)
    assert sorted(changed) == sorted(["model.image_newline", *(f"model.multi_modal_projector.{n}" for n in
                                       ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"))])
    assert bool(adapted) == bool(rank)
    record = json.loads((tmp_path / "out" / MARKER).read_text())
    assert record["trained"]["projector"]
    assert (record["trained"]["lora"] or {}).get("rank") == (rank or None)
    assert record["trained"]["sha256"] == trained.sha256(tmp_path / "state" / "trained" / trained.FILE)


def test_merge_is_peft_merge(base):
    peft = pytest.importorskip("peft")
    from sharpv.pretrained import trained

    model = load(base)
    lm = peft.inject_adapter_in_model(peft.LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "down_proj"]),
                                      load(base).model.language_model)
    pairs = {}
    with torch.no_grad():
        for name, m in lm.named_modules():
            if hasattr(m, "lora_A") and "default" in m.lora_A:
                m.lora_B["default"].weight.normal_()
                pairs[name] = (m.lora_A["default"].weight, m.lora_B["default"].weight)
    tensors, meta = trained.collect(model, pairs, 2, 6.0, ("q_proj", "down_proj"))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = lm(input_ids=ids).last_hidden_state
        for m in lm.modules():
            if hasattr(m, "merge") and hasattr(m, "lora_A"):
                m.merge()
        peft_weights = {n: m.base_layer.weight.clone() for n, m in lm.named_modules() if hasattr(m, "base_layer")}
    path = trained.save(Path(base).parent / "w.safetensors", tensors, meta)
    trained.apply(model, path)
    for name, w in peft_weights.items():
        assert torch.equal(model.model.language_model.get_submodule(name).weight, w), name
    with torch.no_grad():
        assert torch.allclose(model.model.language_model(input_ids=ids).last_hidden_state, want, atol=1e-5)


def test_apply_refuses_mismatched_weights(base, tmp_path):
    from sharpv.errors import SharpVError
    from sharpv.pretrained import trained

    model = load(base)
    tensors, meta = trained.collect(model)
    tensors["image_newline"] = torch.zeros(7)
    path = trained.save(tmp_path / "w.safetensors", tensors, meta)
    before = model.model.multi_modal_projector.linear_1.weight.clone()
    with pytest.raises(SharpVError, match="image_newline has shape"):
        trained.apply(model, path)
    assert torch.equal(model.model.multi_modal_projector.linear_1.weight, before)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(SharpVError, match="not a trained-weights file"):
        trained.load(tmp_path / "junk.safetensors")


def test_heldout_dense_and_text_only(base, tmp_path):
    from sharpv.pretrained.heldout import heldout, report, text_only_prompt
    from sharpv.answer import load_model

    record = heldout(base, n=6, frames=3)
    assert record["overall"]["dense"]["n"] == record["overall"]["text_only"]["n"] == 6
    assert set(record["per_type"]) == {"colour", "position", "motion", "appearance_time", "colour_change", "count"}
    assert record["set"]["visual_tokens"] == 3 * 4 + 1 and record["set"]["render_size"] == 56
    assert "text only" in report(record)
    _, proc = load_model(base)
    assert "<video>" not in text_only_prompt(proc, "what ?")


# ---------------------------------------------------------------------------------------------------
# the CLI's refusals


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("args, says", [
    (["model", "train", "nope"], "no model named 'nope'"),
    (["model", "train", "smollm2-dinov2", "--turns", "0"], "--turns must be at least 1"),
    (["model", "train", "smollm2-dinov2", "--frames", "2"], "--frames must be at least 3"),
    (["model", "train", "smollm2-dinov2", "--lr-lora", "0"], "--lr-lora must be a positive number"),
    (["model", "train", "smollm2-dinov2", "--lora-targets", "q_proj,foo"], "--lora-targets must be a comma list"),
    (["model", "train", "smollm2-dinov2", "--max-minutes", "-1"], "--max-minutes must be at least 0"),
    (["model", "train", "smollm2-dinov2", "--threads", "0"], "--threads must be at least 1"),
    (["model", "train", "smollm2-dinov2", "--checkpoint-minutes", "0"], "--checkpoint-minutes must be above 0"),
    (["model", "train", "smollm2-dinov2", "--steps", "0"], "--steps must be at least 1"),
    (["model", "train", "smollm2-dinov2", "--describe-share", "1.5"], "--describe-share must be between 0 and 1"),
    (["model", "train", "smollm2-dinov2", "--word-aux", "-1"], "--word-aux must be at least 0"),
    (["model", "train", "smollm2-dinov2", "--lora-alpha", "0"], "--lora-alpha must be a positive number"),
    (["model", "heldout", "smollm2-dinov2", "--n", "0"], "--n must be at least 1"),
    (["model", "heldout", "no/such/folder"], "does not exist"),
])
def test_cli_refusals(args, says, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # nothing built, nothing cached
    assert main(args) == 2
    assert says in _one_error_line(capsys)


def test_cli_refuses_foreign_out_and_file_paths(capsys, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    assert main(["model", "train", "smollm2-dinov2", "--out", str(foreign), "--state", str(tmp_path / "s")]) == 2
    assert "holds files sharpv model build did not write" in _one_error_line(capsys)
    (tmp_path / "f").write_text("x")
    assert main(["model", "train", "smollm2-dinov2", "--out", str(tmp_path / "o"), "--ship-to", str(tmp_path / "f"),
                 "--state", str(tmp_path / "s")]) == 2
    assert "--ship-to" in _one_error_line(capsys)
    assert main(["model", "train", "smollm2-dinov2", "--out", str(tmp_path / "f")]) == 2
    assert "--out" in _one_error_line(capsys)


@pytest.mark.parametrize("hidden, says", [
    (("peft",), "needs peft: pip install 'sharpv[train]'"),
    (("onnx", "gguf", "accelerate", "peft"), "needs onnx, gguf, accelerate, peft: pip install 'sharpv[train]'"),
])
def test_cli_says_how_to_install_the_train_extra(hidden, says, capsys, tmp_path, monkeypatch):
    import importlib.util

    # the extra's other packages present (CI installs only the test extra), the hidden ones absent
    present = {"onnx", "gguf", "accelerate", "peft"} - set(hidden)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden
                        else (object() if name in present else find_spec(name, *a)))
    assert main(["model", "train", "smollm2-dinov2", "--out", str(tmp_path / "o"), "--state", str(tmp_path / "s")]) == 2
    assert says in _one_error_line(capsys)
    assert not (tmp_path / "s").exists() and not (tmp_path / "o").exists()
