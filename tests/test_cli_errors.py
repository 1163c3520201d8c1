"""Every bad value of every command ends in one `error: ...` line on stderr and exit code 2, before
any model loads; a video whose header lies is one `warning: ...` line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from sharpv.cli import main

from test_video import write_video
from test_video_files import avi_claiming

NO_CUDA = not torch.cuda.is_available()
MISSING_CUDA = "cuda" if NO_CUDA else f"cuda:{torch.cuda.device_count()}"
MISSING_CUDA_SAYS = "no CUDA device is available" if NO_CUDA else "CUDA device(s)"
HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_dirs):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "afile").write_text("x")
    (root / "notes.mp4").write_text("hello " * 100)
    (root / "no_weights").mkdir()
    (root / "no_weights" / "config.json").write_text((tiny_dirs["qwen2.5-vl"] / "config.json").read_text())
    (root / "llama").mkdir()
    (root / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "bad.jsonl").write_text('{"video": "clip.mp4", "question": "q"}\n')
    (root / "full").mkdir()
    (root / "full" / "data.jsonl").write_text("{}\n")
    (root / "full" / "x.txt").write_text("x")
    (root / "clips" / "videos").mkdir(parents=True)
    (root / "clips" / "videos" / "1234-1.mp4").write_text("not sharpv's")
    write_video(root / "clip.mp4", n=12, size=64)
    return {"root": root, "model": tiny_dirs["qwen2.5-vl"], "clip": root / "clip.mp4"}


def cases():
    """(id, argv with {placeholders}, text the error line must contain, whether a model may load first)."""
    a = ["answer", "{clip}", "q", "--model", "{model}"]
    e = ["eval", "--n", "2"]
    b = ["bench", "--shape", "qwen2.5-vl-3b", "--frames", "2"]
    bm = ["bench", "--model", "{model}", "--frames", "2"]
    rows = [
        # answer
        ("answer empty question", ["answer", "{clip}", "", "--model", "{model}"], "QUESTION is empty"),
        ("answer blank question", ["answer", "{clip}", " \t ", "--model", "{model}"], "QUESTION is empty"),
        ("answer device foo", a + ["--device", "foo"], "--device must be cpu, cuda, cuda:N or mps, got 'foo'"),
        ("answer device missing cuda", a + ["--device", MISSING_CUDA], MISSING_CUDA_SAYS),
        ("answer device cuda:7", a + ["--device", "cuda:7"], "--device cuda:7"),
        ("answer device meta", a + ["--device", "meta"], "--device must be"),
        ("answer device CUDA", a + ["--device", "CUDA"], "--device must be"),
        ("answer dtype typo", a + ["--dtype", "fp16"], "--dtype must be one of auto, float32, bfloat16, float16"),
        ("answer keep-ratio 0", a + ["--keep-ratio", "0"], "--keep-ratio must be in (0, 1], got 0.0"),
        ("answer keep-ratio 1.5", a + ["--keep-ratio", "1.5"], "--keep-ratio must be in (0, 1]"),
        ("answer keep-ratio nan", a + ["--keep-ratio", "nan"], "--keep-ratio must be in (0, 1], got nan"),
        ("answer keep-ratio -0.2", a + ["--keep-ratio", "-0.2", "--method", "random"], "--keep-ratio must be in (0, 1]"),
        ("answer keep-ratio text", a + ["--keep-ratio", "half"], "Invalid value for '--keep-ratio'"),
        ("answer keep-ratio dense", a + ["--keep-ratio", "0.5", "--method", "dense"], "drop it with --method dense"),
        ("answer positions", a + ["--positions", "foo"], "--positions must be one of original, compact"),
        ("answer kv-mode", a + ["--kv-mode", "foo"], "--kv-mode must be one of withdraw, layerwise"),
        ("answer kv-granularity", a + ["--kv-granularity", "head"], "--kv-granularity must be one of layer, token"),
        ("answer kv-min-layer", a + ["--kv-min-layer", "0"], "--kv-min-layer must be an integer >= 1"),
        ("answer kv-threshold", a + ["--kv-threshold", "5"], "--kv-threshold must be a number in [-1, 2]"),
        ("answer kv-threshold nan", a + ["--kv-threshold", "nan"], "--kv-threshold must be"),
        ("answer kv flag, other method", a + ["--method", "evs", "--no-kv"], "apply to --method sharpv"),
        ("answer frames 0", a + ["--frames", "0"], "--frames must be at least 1, got 0"),
        ("answer frames -3", a + ["--frames", "-3"], "--frames must be at least 1"),
        ("answer frames text", a + ["--frames", "abc"], "Invalid value for '--frames'"),
        ("answer max-new-tokens 0", a + ["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        ("answer method", a + ["--method", "magic"], "--method must be one of dense, sharpv"),
        ("answer set malformed", a + ["--set", "layer"], "--set takes KEY=VALUE"),
        ("answer set unknown", a + ["--method", "fastv", "--set", "depth=3"], "--set depth: fastv has no such setting; its settings: layer"),
        ("answer set with a flag", a + ["--set", "positions=compact"], "--set positions: use --positions instead"),
        ("answer set keep_ratio", a + ["--method", "dense", "--set", "keep_ratio=0.5"], "--set keep_ratio: use --keep-ratio instead"),
        ("answer set kv value", a + ["--set", "kv=maybe"], "--set kv must be True or False, got 'maybe'"),
        ("answer set bad value", a + ["--method", "fastv", "--set", "layer=-1"], "--set layer must be an integer >= 1"),
        ("answer model missing", ["answer", "{clip}", "q", "--model", "{root}/none"], "--model {root}/none does not exist"),
        ("answer model is a file", ["answer", "{clip}", "q", "--model", "{root}/afile"], "is a file; pass the checkpoint's folder"),
        ("answer model not a checkpoint", ["answer", "{clip}", "q", "--model", "{root}/empty"], "has no config.json"),
        ("answer video missing", ["answer", "{root}/none.mp4", "q", "--model", "{model}"], "does not exist"),
        ("answer video not a video", ["answer", "{root}/notes.mp4", "q", "--model", "{model}"], "not a readable video"),
        ("answer video empty folder", ["answer", "{root}/empty", "q", "--model", "{model}"], "holds no images"),
        ("answer missing argument", ["answer", "{clip}"], "Missing argument"),
        ("answer unknown option", a + ["--speed", "3"], "No such option: --speed"),
        # eval
        ("eval n 0", ["eval", "--n", "0"], "--n must be at least 1, got 0"),
        ("eval seed -1", ["eval", "--seed", "-1"], "--seed must be at least 0"),
        ("eval frames 2", e + ["--frames", "2"], "--frames must be at least 3"),
        ("eval frames 0 with data", ["eval", "--data", "{root}/bad.jsonl", "--frames", "0"], "--frames must be at least 1"),
        ("eval max-new-tokens", e + ["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        ("eval threads", e + ["--threads", "0"], "--threads must be at least 1"),
        ("eval dtype", e + ["--dtype", "half"], "--dtype must be one of"),
        ("eval device foo", e + ["--device", "foo"], "--device must be cpu, cuda, cuda:N or mps"),
        ("eval device missing cuda", e + ["--device", MISSING_CUDA], MISSING_CUDA_SAYS),
        ("eval model missing", e + ["--model", "{root}/none"], "does not exist"),
        ("eval model is a file", e + ["--model", "{root}/afile"], "is a file"),
        ("eval model not a checkpoint", e + ["--model", "{root}/empty"], "has no config.json"),
        ("eval data missing", ["eval", "--data", "{root}/none.jsonl"], "does not exist"),
        ("eval data is a folder", ["eval", "--data", "{root}/empty"], "is a folder; pass its JSONL file"),
        ("eval data not jsonl", ["eval", "--data", "{clip}"], "not a UTF-8 text file"),
        ("eval data bad line", ["eval", "--data", "{root}/bad.jsonl"], "line 1: missing or empty answer"),
        ("eval seed with data", ["eval", "--data", "{root}/bad.jsonl", "--seed", "3"], "drop them with --data"),
        ("eval model unknown name", ["eval", "--model", "mixed"], "--model mixed does not exist; pass a local checkpoint folder or a shipped model name (mixed-dropout, uniform-dropout)"),
        ("eval second model missing", e + ["--model", "mixed-dropout", "--model", "{root}/none"], "--model {root}/none does not exist"),
        ("eval model twice", e + ["--model", "mixed-dropout", "--model", "mixed-dropout"], "--model mixed-dropout is given twice"),
        ("eval model is a file", e + ["--model", "mixed-dropout", "--model", "{root}/afile"], "is a file; pass the checkpoint's folder"),
        ("eval model not a checkpoint", e + ["--model", "{root}/empty", "--model", "mixed-dropout"], "has no config.json"),
        ("eval budgets text", e + ["--budgets", "0.2,lots"], "--budgets takes numbers"),
        ("eval budgets 0", e + ["--budgets", "0"], "--budgets values must be in (0, 1]"),
        ("eval budgets nan", e + ["--budgets", "nan"], "--budgets values must be in (0, 1]"),
        ("eval budgets empty", e + ["--budgets", ""], "--budgets takes numbers"),
        ("eval methods empty", e + ["--methods", ""], "--methods names no method"),
        ("eval methods unknown", e + ["--methods", "sharpv,magic"], "unknown method 'magic'"),
        ("eval methods bad setting", e + ["--methods", "fastv:layer=0"], "--methods 'fastv:layer=0': layer must be an integer >= 1"),
        ("eval methods unknown setting", e + ["--methods", "dense:depth=2"], "--methods 'dense:depth=2': dense has no setting 'depth'"),
        ("eval methods keep_ratio", e + ["--methods", "random:keep_ratio=0.2"], "set the budget with --budgets"),
        ("bench methods bad value", b + ["--methods", "sharpv:kv=maybe"], "--methods 'sharpv:kv=maybe': kv must be True or False"),
        ("eval out is a file", e + ["--out", "{root}/afile"], "--out {root}/afile is a file; pass a folder"),
        ("eval out under a file", e + ["--out", "{root}/afile/sub"], "{root}/afile is a file, not a folder"),
        # bench
        ("bench no model or shape", ["bench"], "pass exactly one of --model DIR or --shape NAME"),
        ("bench model and shape", bm + ["--shape", "qwen2.5-vl-3b"], "pass exactly one of"),
        ("bench shape", ["bench", "--shape", "gpt-5"], "--shape: unknown shape 'gpt-5'; known shapes: llava-onevision-0.5b"),
        ("bench model missing", ["bench", "--model", "{root}/none"], "--model {root}/none does not exist"),
        ("bench model is a file", ["bench", "--model", "{root}/afile"], "is a file"),
        ("bench video with shape", ["bench", "--shape", "qwen2.5-vl-3b", "--video", "{clip}"], "--video needs --model"),
        ("bench video missing", bm + ["--video", "{root}/none.mp4"], "--video {root}/none.mp4 is not a file"),
        ("bench video long-video", bm + ["--long-video", "--video", "{clip}", "--out", "{root}/lv"], "--video applies to the standard bench"),
        ("bench tokens-per-frame", b + ["--tokens-per-frame", "10"], "--tokens-per-frame must be a square number"),
        ("bench tokens-per-frame 0", b + ["--tokens-per-frame", "0"], "--tokens-per-frame must be a square number"),
        ("bench dtype auto", b + ["--dtype", "auto"], "--dtype must be one of float32, bfloat16, float16"),
        ("bench device foo", b + ["--device", "foo"], "--device must be cpu, cuda or cuda:N, got 'foo'"),
        ("bench device mps", b + ["--device", "mps"], "--device must be cpu, cuda or cuda:N"),
        ("bench device missing cuda", b + ["--device", MISSING_CUDA], MISSING_CUDA_SAYS),
        ("bench vision", b + ["--vision", "fake"], "--vision must be precomputed or real"),
        ("bench repeats", b + ["--repeats", "0"], "--repeats must be at least 1"),
        ("bench warmup", b + ["--warmup", "-1"], "--warmup must be at least 0"),
        ("bench new-tokens", b + ["--new-tokens", "0"], "--new-tokens must be at least 1"),
        ("bench feature-noise -1", b + ["--feature-noise", "-1"], "--feature-noise must be a finite number >= 0"),
        ("bench feature-noise inf", b + ["--feature-noise", "inf"], "--feature-noise must be a finite number >= 0"),
        ("bench frames 0", ["bench", "--shape", "qwen2.5-vl-3b", "--frames", "0"], "--frames values must be integers >= 1"),
        ("bench frames text", ["bench", "--shape", "qwen2.5-vl-3b", "--frames", "a,b"], "--frames takes comma-separated integers"),
        ("bench budgets", b + ["--budgets", "2"], "--budgets values must be in (0, 1]"),
        ("bench methods empty", b + ["--methods", ","], "--methods names no method"),
        ("bench out is a file", b + ["--out", "{root}/afile"], "is a file"),
        ("bench out under a file", bm + ["--out", "{root}/afile/x"], "{root}/afile is a file, not a folder"),
        # similarity
        ("similarity n", ["similarity", "--out", "{root}/s", "--n", "0"], "--n must be at least 1"),
        ("similarity threshold", ["similarity", "--out", "{root}/s", "--threshold", "5"], "--threshold must be in [-1, 2]"),
        ("similarity min-layer", ["similarity", "--out", "{root}/s", "--min-layer", "0"], "--min-layer must be at least 1"),
        ("similarity reference-layer", ["similarity", "--out", "{root}/s", "--reference-layer", "2"], "--reference-layer (2) must be below --min-layer (2)"),
        ("similarity video missing", ["similarity", "--out", "{root}/s", "--video", "{root}/none.mp4"], "is not a file; pass a video file"),
        ("similarity model missing", ["similarity", "--out", "{root}/s", "--model", "{root}/none"], "does not exist"),
        ("similarity out is a file", ["similarity", "--out", "{root}/afile"], "is a file"),
        # stage2
        ("stage2 n", ["stage2", "--out", "{root}/s", "--n", "1"], "--n must be at least 2"),
        ("stage2 sweep", ["stage2", "--out", "{root}/s", "--sweep", "2,x"], "--sweep takes comma-separated integers"),
        ("stage2 sweep 0", ["stage2", "--out", "{root}/s", "--sweep", "0"], "--sweep values must be integers >= 1"),
        ("stage2 threshold", ["stage2", "--out", "{root}/s", "--threshold", "-3"], "--threshold must be in [-1, 2]"),
        ("stage2 config missing", ["stage2", "--out", "{root}/s", "--config", "{root}/none.json"], "is not a file"),
        # tiny-model
        ("tiny-model arch", ["tiny-model", "{root}/t1", "--arch", "gpt"], "--arch must be one of"),
        ("tiny-model no arch", ["tiny-model", "{root}/t1"], "Missing option '--arch'"),
        ("tiny-model seed", ["tiny-model", "{root}/t1", "--arch", "qwen3-vl", "--seed", "-1"], "--seed must be at least 0"),
        ("tiny-model out is a file", ["tiny-model", "{root}/afile", "--arch", "qwen3-vl"], "is a file; pass a folder"),
        ("tiny-model out under a file", ["tiny-model", "{root}/afile/m", "--arch", "qwen3-vl"], "is a file, not a folder"),
        ("tiny-model out not empty", ["tiny-model", "{root}/full", "--arch", "qwen3-vl"], "is not empty"),
        # sample-video
        ("sample-video type", ["sample-video", "{root}/s.mp4", "--type", "smell"], "--type must be one of"),
        ("sample-video frames", ["sample-video", "{root}/s.mp4", "--frames", "2"], "--frames must be at least 3"),
        ("sample-video seed", ["sample-video", "{root}/s.mp4", "--seed", "-1"], "--seed must be at least 0"),
        ("sample-video exists", ["sample-video", "{clip}"], "exists; pass another path or --overwrite"),
        ("sample-video folder", ["sample-video", "{root}/empty", "--overwrite"], "is a folder; pass a file path ending in .mp4"),
        ("sample-video suffix", ["sample-video", "{root}/s.txt"], "PATH must end in .mp4"),
        ("sample-video under a file", ["sample-video", "{root}/afile/s.mp4"], "is a file, not a folder"),
        # export-synthetic
        ("export n", ["export-synthetic", "{root}/ex", "--n", "0"], "--n must be at least 1"),
        ("export seed", ["export-synthetic", "{root}/ex", "--seed", "-1"], "--seed must be at least 0"),
        ("export frames", ["export-synthetic", "{root}/ex", "--frames", "2"], "--frames must be at least 3"),
        ("export out is a file", ["export-synthetic", "{root}/afile"], "is a file; pass a folder"),
        ("export out under a file", ["export-synthetic", "{root}/afile/ex"], "is a file, not a folder"),
        ("export data exists", ["export-synthetic", "{root}/full"], "data.jsonl exists"),
        ("export clip exists", ["export-synthetic", "{root}/clips", "--n", "2"], "{root}/clips/videos/1234-1.mp4 exists"),
    ]
    if not HAS_MPS:
        rows.append(("answer device mps", a + ["--device", "mps"], "--device mps: MPS is not available here"))
    return rows


@pytest.fixture
def no_model_loading(monkeypatch):
    """Anything that would load, build or write a model fails the test: bad values come first."""
    import sharpv.answer
    import sharpv.harness.bench_job
    import sharpv.harness.calibrate_job
    import sharpv.harness.eval_job
    import sharpv.tiny

    def refuse(*_, **__):
        raise AssertionError("a model was loaded or built before the bad value was reported")

    for module, name in ((sharpv.answer, "load_model"), (sharpv.harness.eval_job, "load_model"), (sharpv.harness.bench_job, "load_model"),
                         (sharpv.harness.calibrate_job, "load_model"), (sharpv.harness.bench_job, "build_shape_model"),
                         (sharpv.tiny, "build_tiny_model")):
        monkeypatch.setattr(module, name, refuse)


def run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name,argv,says", cases(), ids=[c[0] for c in cases()])
def test_bad_value_is_one_error_line_before_any_model_loads(capsys, files, no_model_loading, name, argv, says):
    values = {k: str(v) for k, v in files.items()}
    code, out, err = run(capsys, [part.format(**values) for part in argv])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (name, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert says.format(**values) in lines[0], (name, lines[0])
    assert len(lines[0]) < 260, "keep messages short"


@pytest.mark.parametrize("name,argv,says", [
    ("weights missing", ["answer", "{clip}", "q", "--model", "{root}/no_weights"], "the model's weights do not load"),
    ("unsupported family", ["answer", "{clip}", "q", "--model", "{root}/llama"], "supported families"),
    ("layer past the model", ["answer", "{clip}", "q", "--model", "{model}", "--method", "fastv", "--set", "layer=99",
                              "--frames", "4", "--max-new-tokens", "1"], "layer 99 does not exist"),
])
def test_values_only_the_model_can_check_are_one_line_too(capsys, files, name, argv, says):
    values = {k: str(v) for k, v in files.items()}
    code, _, err = run(capsys, [part.format(**values) for part in argv])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], (name, err)


def test_a_lying_header_is_one_warning_line(capsys, files, tmp_path):
    clip = avi_claiming(tmp_path / "clip.avi", real=20, claimed=444)
    code, out, err = run(capsys, ["answer", str(clip), "what is it ?", "--model", str(files["model"]), "--frames", "4",
                                  "--max-new-tokens", "1", "--method", "dense", "--json"])
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warning == [f"warning: {clip}: the header says 444 frames but 20 decode; sampling from the 20"]
    assert "VideoReadWarning" not in err and "warnings.warn" not in err and "Loading weights" not in err
    assert json.loads(out)["frames"] >= 1


# --- where the output goes --------------------------------------------------------------------
#: every command that writes somewhere, its destination left as {dest}
WRITERS = [
    ("viz", ["viz", "{clip}", "--model", "{model}", "--out", "{dest}"]),
    ("answer --viz", ["answer", "{clip}", "q", "--model", "{model}", "--viz", "{dest}"]),
    ("tiny-model", ["tiny-model", "{dest}", "--arch", "qwen3-vl"]),
    ("sample-video", ["sample-video", "{dest}/clip.mp4"]),
    ("eval", ["eval", "--n", "2", "--model", "{model}", "--out", "{dest}"]),
    ("calibrate", ["calibrate", "--target", "keep=0.2", "--model", "{model}", "--out", "{dest}"]),
    ("export-synthetic", ["export-synthetic", "{dest}", "--n", "2"]),
    ("lmms-eval-task", ["lmms-eval-task", "{root}/bad.jsonl", "{dest}"]),
    ("bench", ["bench", "--model", "{model}", "--frames", "2", "--out", "{dest}"]),
    ("bench --long-video", ["bench", "--long-video", "--model", "{model}", "--frames", "2", "--out", "{dest}"]),
    ("similarity", ["similarity", "--model", "{model}", "--out", "{dest}"]),
    ("stage2", ["stage2", "--model", "{model}", "--out", "{dest}"]),
]
#: destinations nobody can create, root included (chmod does not stop root): under a regular file,
#: and in /proc (a kernel file system that takes no new folder)
UNCREATABLE = {"under a file": "{root}/afile/sub", "in /proc": "/proc/sharpv-no-such-folder/sub"}


@pytest.mark.parametrize("where", list(UNCREATABLE))
@pytest.mark.parametrize("name,argv", WRITERS, ids=[w[0] for w in WRITERS])
def test_a_destination_that_cannot_be_created_is_one_error_line_before_any_model_loads(
        capsys, files, no_model_loading, name, argv, where):
    if where == "in /proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    values = {k: str(v) for k, v in files.items()}
    dest = UNCREATABLE[where].format(**values)
    before = sorted(os.listdir(files["root"]))
    code, out, err = run(capsys, [part.format(dest=dest, **values) for part in argv])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, (name, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert dest in lines[0] and ("pass a folder you can write to" in lines[0] or "pass a path you can write to" in lines[0]), lines[0]
    assert out == "" and sorted(os.listdir(files["root"])) == before  # nothing written anywhere


def test_the_output_checks_leave_nothing_behind(tmp_path):
    """The checks really create the folders and write a file there, then undo both."""
    from sharpv.cli_values import check_output_dir, check_output_file

    (tmp_path / "mine.txt").write_text("mine")
    check_output_dir(tmp_path / "a" / "b" / "c", "--out")
    check_output_dir(tmp_path, "--out")
    check_output_file(tmp_path / "new" / "clip.mp4", "PATH", (".mp4",))
    assert os.listdir(tmp_path) == ["mine.txt"] and (tmp_path / "mine.txt").read_text() == "mine"


#: (command, a file it writes into its folder); the folder is {dest}
FIXED_NAMES = [
    ("viz", "index.html"), ("answer --viz", "viz.json"), ("eval", "results.md"), ("calibrate", "config.json"),
    ("bench", "kv_bytes.png"), ("bench --long-video", "long_video.png"), ("similarity", "config.json"),
    ("stage2", "stage2.md"),
]


@pytest.mark.parametrize("name,written", FIXED_NAMES, ids=[f[0] for f in FIXED_NAMES])
def test_a_file_already_in_the_folder_is_not_replaced_without_overwrite(capsys, files, no_model_loading, tmp_path,
                                                                        name, written):
    values = {k: str(v) for k, v in files.items()}
    argv = dict(WRITERS)[name]
    mine = tmp_path / written
    mine.write_bytes(b"not sharpv's\n")
    code, _, err = run(capsys, [part.format(dest=tmp_path, **values) for part in argv])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (name, err)
    assert lines[0] == (f"error: {argv[argv.index('{dest}') - 1]} {tmp_path} already holds {written}; pass another "
                        "folder or --overwrite to replace them (nothing was written)")
    assert os.listdir(tmp_path) == [written] and mine.read_bytes() == b"not sharpv's\n"


def test_eval_replaces_a_results_md_only_with_overwrite(capsys, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    mine = out / "results.md"
    mine.write_bytes(b"# my own notes\n")
    argv = ["eval", "--n", "2", "--methods", "random", "--budgets", "0.5", "--threads", "1", "--max-new-tokens", "1",
            "--out", str(out)]
    code, _, err = run(capsys, argv)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --out {out} already holds results.md; pass another folder or --overwrite to replace them (nothing was written)"]
    assert os.listdir(out) == ["results.md"] and mine.read_bytes() == b"# my own notes\n"
    code, _, err = run(capsys, argv + ["--overwrite"])
    assert code == 0, err
    assert mine.read_text().startswith("Model:") and (out / "results.json").is_file() and (out / "run.json").is_file()


def test_fewer_frames_than_asked_is_one_warning_line_and_recorded(capsys, files, tmp_path):
    short = write_video(tmp_path / "short.mp4", n=5, size=64)
    said = f"warning: {short} has only 5 frames, fewer than the 8 to sample; sampling all 5"
    code, out, err = run(capsys, ["answer", str(short), "what is it ?", "--model", str(files["model"]), "--frames", "8",
                                  "--max-new-tokens", "1", "--method", "dense", "--json", "--viz", str(tmp_path / "viz")])
    assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [said]
    assert "FewerFramesWarning" not in err and "warnings.warn" not in err
    assert json.loads(out)["warnings"] == [said.removeprefix("warning: ")]
    meta = json.loads((tmp_path / "viz" / "viz.json").read_text())
    assert (meta["requested_frames"], meta["sampled_frames"]) == (8, 5)
    # enough frames: no warning, and the JSON says so
    code, out, err = run(capsys, ["answer", str(short), "what is it ?", "--model", str(files["model"]), "--frames", "4",
                                  "--max-new-tokens", "1", "--method", "dense", "--json"])
    assert code == 0 and "warning" not in err and json.loads(out)["warnings"] == []
