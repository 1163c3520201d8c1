"""`sharpv answer` and `sharpv tiny-model` end to end, and every bad input's one-line error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sharpv.cli import main

from test_video import write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", n=24, size=64)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("arch", ["llava-onevision", "qwen2.5-vl", "qwen3-vl"])
def test_answer_end_to_end_json(capsys, tiny_dirs, clip, arch):
    code, out, err = run(capsys, "answer", clip, "what color is the square ?", "--model", tiny_dirs[arch],
                         "--frames", 8, "--max-new-tokens", 3, "--keep-ratio", 0.25, "--json")
    assert code == 0, err
    result = json.loads(out)
    for key in ("answer", "method", "model_type", "frames", "visual_tokens_in", "visual_tokens_kept",
                "kept_per_frame", "prefill_seconds", "pruning_seconds"):
        assert key in result
    assert result["method"] == "sharpv"
    assert result["visual_tokens_kept"] == round(0.25 * result["visual_tokens_in"])
    assert sum(result["kept_per_frame"]) == result["visual_tokens_kept"]
    assert len(result["kept_per_frame"]) == result["frames"] == (8 if arch == "llava-onevision" else 4)
    assert len(result["new_tokens"]) <= 3 and result["prefill_seconds"] > 0


def test_answer_dense_and_adaptive(capsys, tiny_dirs, clip):
    model = tiny_dirs["llava-onevision"]
    code, out, _ = run(capsys, "answer", clip, "q", "--model", model, "--frames", 6, "--method", "dense", "--json")
    dense = json.loads(out)
    assert code == 0 and dense["visual_tokens_kept"] == dense["visual_tokens_in"] == 6 * 16
    code, out, _ = run(capsys, "answer", clip, "q", "--model", model, "--frames", 6, "--json")
    adaptive = json.loads(out)
    assert code == 0 and adaptive["visual_tokens_kept"] < adaptive["visual_tokens_in"]
    code, out, err = run(capsys, "answer", clip, "q", "--model", model, "--frames", 6, "--max-new-tokens", 2)
    assert code == 0 and "visual tokens" in err


def test_answer_stage2_flags_and_fields(capsys, tiny_dirs, clip):
    model = tiny_dirs["qwen2.5-vl"]
    common = ["answer", clip, "q", "--model", model, "--frames", 8, "--max-new-tokens", 2, "--json"]
    code, out, err = run(capsys, *common, "--kv-threshold", 2, "--kv-min-layer", 2)
    assert code == 0, err
    both = json.loads(out)
    assert both["kv_mode"] == "withdraw" and both["kv_withdraw_layer"] == 2
    assert len(both["layer_similarity"]) == 3
    per_layer = both["kv_cache_bytes_per_layer"]
    assert per_layer[2] < per_layer[1] and sum(per_layer) == both["kv_cache_bytes"] < both["kv_cache_bytes_dense"]
    code, out, _ = run(capsys, *common, "--no-kv")
    stage1 = json.loads(out)
    assert code == 0 and stage1["kv_mode"] is None and len(set(stage1["kv_cache_bytes_per_layer"])) == 1
    assert stage1["kv_cache_bytes"] > both["kv_cache_bytes"]
    code, out, _ = run(capsys, *common, "--kv-mode", "layerwise", "--kv-granularity", "token", "--kv-threshold", 2)
    layerwise = json.loads(out)
    assert code == 0 and layerwise["kv_mode"] == "layerwise" and layerwise["config"]["kv_granularity"] == "token"
    assert layerwise["kv_cache_bytes"] == both["kv_cache_bytes"]


@pytest.mark.parametrize("method", ["random", "pooling", "evs", "dycoke", "vidcom2", "vtw", "fastv"])
def test_answer_runs_every_registered_method(capsys, tiny_dirs, clip, method):
    code, out, err = run(capsys, "answer", clip, "q", "--model", tiny_dirs["llava-onevision"], "--method", method,
                         "--keep-ratio", 0.25, "--frames", 8, "--max-new-tokens", 2, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == method and result["config"]["keep_ratio"] == 0.25
    if method in ("vtw", "fastv"):
        assert result["visual_tokens_kept"] == result["visual_tokens_in"] and result["kv_withdraw_layer"] is not None
    else:
        assert result["visual_tokens_kept"] == round(0.25 * result["visual_tokens_in"])


def test_method_settings_with_set(capsys, tiny_dirs, clip):
    common = ["answer", clip, "q", "--model", tiny_dirs["llava-onevision"], "--frames", 8, "--max-new-tokens", 2, "--json"]
    code, out, err = run(capsys, *common, "--method", "fastv", "--set", "layer=3")
    assert code == 0, err
    assert json.loads(out)["kv_withdraw_layer"] == 3
    code, _, err = run(capsys, *common, "--method", "fastv", "--set", "depth=3")
    assert code == 2 and "no such setting" in err
    code, _, err = run(capsys, *common, "--method", "evs", "--kv-threshold", 0.5)
    assert code == 2 and "apply to --method sharpv" in err


def _bad_inputs(tmp_path, tiny_dirs, clip):
    model = tiny_dirs["qwen2.5-vl"]
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello " * 100)
    mkv = write_video(tmp_path / "good.mkv", n=30, size=64)
    header_only = tmp_path / "header_only.mkv"
    header_only.write_bytes(mkv.read_bytes()[:600])
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return {
        "missing video": (["answer", tmp_path / "nope.mp4", "q", "--model", model], "does not exist"),
        "not a video": (["answer", not_video, "q", "--model", model], "not a readable video"),
        "no decodable frame": (["answer", header_only, "q", "--model", model], "no decodable frame"),
        "zero frames": (["answer", clip, "q", "--model", model, "--frames", 0], "--frames must be at least 1"),
        "bad ratio": (["answer", clip, "q", "--model", model, "--keep-ratio", 1.5], "--keep-ratio must be"),
        "bad method": (["answer", clip, "q", "--model", model, "--method", "magic"], "--method must be one of"),
        "missing model": (["answer", clip, "q", "--model", tmp_path / "none"], "does not exist"),
        "eval n": (["eval", "--n", 0], "--n must be at least 1"),
        "eval seed with data": (["eval", "--data", clip, "--seed", 3], "drop them with --data"),
        "eval not jsonl": (["eval", "--data", clip, "--model", model], "not a UTF-8 text file"),
        "eval missing data": (["eval", "--data", tmp_path / "none.jsonl"], "does not exist"),
        "eval budgets": (["eval", "--budgets", "0.2,lots"], "--budgets takes numbers"),
        "eval method": (["eval", "--methods", "sharpv,magic"], "unknown method"),
        "eval threads": (["eval", "--threads", 0], "--threads must be"),
        "eval out is a file": (["eval", "--out", clip], "is a file"),
        "eval missing model": (["eval", "--model", tmp_path / "none"], "does not exist"),
        "sample type": (["sample-video", tmp_path / "s.mp4", "--type", "smell"], "--type must be one of"),
        "sample exists": (["sample-video", clip], "exists"),
        "unsupported model": (["answer", clip, "q", "--model", llama], "supported families: llava-onevision"),
        "bad positions": (["answer", clip, "q", "--model", model, "--positions", "weird"], "--positions must be"),
        "bad dtype": (["answer", clip, "q", "--model", model, "--dtype", "int8"], "--dtype must be one of"),
        "bad kv mode": (["answer", clip, "q", "--model", model, "--kv-mode", "evict"], "--kv-mode must be one of"),
        "bad kv granularity": (["answer", clip, "q", "--model", model, "--kv-granularity", "head"], "--kv-granularity must be"),
        "bad kv min layer": (["answer", clip, "q", "--model", model, "--kv-min-layer", 0], "--kv-min-layer must be"),
        "bad kv threshold": (["answer", clip, "q", "--model", model, "--kv-threshold", 5], "--kv-threshold must be"),
        "bad arch": (["tiny-model", tmp_path / "t", "--arch", "gpt"], "--arch must be one of"),
        "missing argument": (["answer", clip], "Missing argument"),
    }


def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path, tiny_dirs, clip):
    for name, (argv, message) in _bad_inputs(tmp_path, tiny_dirs, clip).items():
        code, out, err = run(capsys, *argv)
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Loading weights")]
        assert code == 2, name
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert message in lines[0], (name, lines[0])


def test_the_installed_entry_point_prints_no_traceback(tmp_path, tiny_dirs):
    proc = subprocess.run(
        [sys.executable, "-m", "sharpv.cli", "answer", str(tmp_path / "missing.mp4"), "q", "--model", str(tiny_dirs["qwen3-vl"])],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error:")


def test_tiny_model_command_writes_a_loadable_model(capsys, tmp_path):
    from transformers import AutoModelForImageTextToText

    code, out, _ = run(capsys, "tiny-model", tmp_path / "m", "--arch", "qwen3-vl")
    assert code == 0
    model = AutoModelForImageTextToText.from_pretrained(out.strip())
    assert model.config.model_type == "qwen3_vl"
    code, _, err = run(capsys, "tiny-model", tmp_path / "m", "--arch", "qwen3-vl")
    assert code == 2 and "not empty" in err
