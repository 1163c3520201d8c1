"""`sharpv bench --long-video` on tiny models: every field and file, the ratios between modes, and
the caps (a run past its cap is recorded as did not finish). No test asserts a timing."""

from __future__ import annotations

import json

import pytest

from sharpv.harness.bench_job import write_long_video_results
from sharpv.cli import main
from sharpv.harness.long_video import DID_NOT_FINISH, MODES, RECORD_FIELDS, run_long_video

MEASURED = ("visual_tokens_in", "visual_tokens_kept", "kept_share", "sequence_length", "vision_seconds", "pruning_seconds",
            "prefill_seconds", "ttft_seconds", "question_to_first_token_seconds", "first_token", "kv_cache_bytes",
            "peak_memory_bytes", "baseline_memory_bytes", "peak_over_baseline_bytes", "load_seconds", "run_seconds")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("arch", ["llava-onevision", "qwen2.5-vl", "qwen3-vl"])
def test_long_video_records_every_field(tmp_path, tiny_dirs, arch):
    # in this process (isolate=False) to stay fast; the worker processes are tested through the CLI below
    result = run_long_video(model_dir=tiny_dirs[arch], shape=None, frames=[4, 2], modes=list(MODES), tokens_per_frame=16,
                            chunk_frames=3, dtype="float32", device="cpu", noise=0.3, warmup=0, max_seconds=None,
                            max_memory_bytes=None, isolate=False)
    records = result["records"]
    assert [(r["frames"], r["mode"]) for r in records] == [(f, m) for f in (2, 4) for m in MODES]
    by = {(r["frames"], r["mode"]): r for r in records}
    for r in records:
        assert tuple(r) == RECORD_FIELDS
        assert r["status"] == "ok" and r["reason"] is None, r
        for key in MEASURED:
            assert r[key] is not None, key
        assert r["ttft_seconds"] == pytest.approx(r["vision_seconds"] + r["prefill_seconds"])
        assert r["peak_memory_bytes"] >= r["baseline_memory_bytes"] > 0
        assert r["peak_over_baseline_bytes"] == r["peak_memory_bytes"] - r["baseline_memory_bytes"]
    for frames in (2, 4):
        dense, oneshot, chunked = (by[(frames, mode)] for mode in MODES)
        per_unit = 16
        units = frames if arch == "llava-onevision" else frames // 2
        assert dense["visual_tokens_kept"] == dense["visual_tokens_in"] == units * per_unit
        assert dense["kept_share"] == 1.0
        # chunk by chunk selects exactly what the one-shot prefill selects, and answers the same
        assert chunked["visual_tokens_kept"] == oneshot["visual_tokens_kept"] < dense["visual_tokens_kept"]
        assert chunked["sequence_length"] == oneshot["sequence_length"] < dense["sequence_length"]
        assert chunked["kv_cache_bytes"] == oneshot["kv_cache_bytes"] < dense["kv_cache_bytes"]
        assert chunked["first_token"] == oneshot["first_token"]
        for one in (dense, oneshot):  # one-shot paths: everything happens after the question
            assert one["question_to_first_token_seconds"] == one["ttft_seconds"]
            assert one["question_share_of_oneshot_ttft"] is None
        assert chunked["question_to_first_token_seconds"] < chunked["prefill_seconds"]
        assert chunked["question_share_of_oneshot_ttft"] == pytest.approx(
            chunked["question_to_first_token_seconds"] / oneshot["ttft_seconds"])
        assert chunked["question_share_of_dense_ttft"] == pytest.approx(
            chunked["question_to_first_token_seconds"] / dense["ttft_seconds"])
    summary = result["summary"]
    assert list(summary["modes"]) == list(MODES)
    for mode in summary["modes"].values():
        assert mode["frames_finished"] == [2, 4] and mode["frames_not_finished"] == []
        assert mode["peak_growth_bytes_per_frame"] is not None and mode["kv_cache_growth_bytes_per_frame"] > 0
    assert summary["target_peak_ratio"]["measured"] is False and "extrapolated_ratio" in summary["target_peak_ratio"]
    assert summary["target_question_share"]["measured"] is False
    assert set(summary["target_question_share"]["shares_measured"]) == {"2", "4"}

    out = tmp_path / "out"
    write_long_video_results(result, out)
    payload = json.loads((out / "results.json").read_text())
    assert set(payload) == {"environment", "settings", "records", "summary", "provenance"}
    assert payload["records"] == records and payload["provenance"]["wall_seconds"] >= 0
    for key in ("torch", "transformers", "cpu", "threads", "device", "dtype", "tokens_per_frame"):
        assert payload["environment"][key] is not None, key
    md = (out / "results.md").read_text()
    assert md.count("| ok |") == 6 and "| 4 | sharpv-chunked | ok |" in md and "Targets:" in md
    assert (out / "long_video.png").read_bytes()[:8] == PNG


def test_long_video_cli_runs_each_configuration_in_a_worker(tmp_path, capsys, tiny_dirs):
    out = tmp_path / "out"
    code = main(["bench", "--long-video", "--model", str(tiny_dirs["llava-onevision"]), "--frames", "3",
                 "--modes", "sharpv-chunked", "--chunk-frames", "2", "--dtype", "float32", "--warmup", "1",
                 "--max-seconds", "300", "--max-memory-gib", "16", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads((out / "results.json").read_text())
    (record,) = payload["records"]
    assert tuple(record) == RECORD_FIELDS and record["status"] == "ok", record
    for key in MEASURED:
        assert record[key] is not None, key
    assert payload["settings"]["max_seconds"] == 300 and payload["settings"]["max_memory_bytes"] == 16 * 2**30
    assert payload["environment"]["tokens_per_frame"] == 16
    assert "| 3 | sharpv-chunked | ok |" in (out / "results.md").read_text()
    assert (out / "long_video.png").read_bytes()[:8] == PNG
    assert "question to" in captured.out  # the terminal table


def test_long_video_cap_records_did_not_finish(tmp_path, capsys, tiny_dirs):
    out = tmp_path / "out"
    code = main(["bench", "--long-video", "--model", str(tiny_dirs["llava-onevision"]), "--frames", "2,4",
                 "--modes", "sharpv-chunked", "--chunk-frames", "2", "--dtype", "float32", "--warmup", "0",
                 "--max-seconds", "0.001", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads((out / "results.json").read_text())
    first, second = payload["records"]
    assert tuple(first) == RECORD_FIELDS and tuple(second) == RECORD_FIELDS
    assert first["status"] == DID_NOT_FINISH and first["reason"] == "time cap (0.001 s)"
    assert first["ttft_seconds"] is None and first["peak_memory_bytes"] is None
    # a mode that did not finish is not started again at more frames
    assert second["status"] == DID_NOT_FINISH and second["reason"] == "not started (did not finish at 2 frames)"
    assert payload["summary"]["modes"]["sharpv-chunked"]["frames_not_finished"] == [2, 4]
    md = (out / "results.md").read_text()
    assert "| 2 | sharpv-chunked | did not finish: time cap (0.001 s)" in md and "not measured" in md
    assert (out / "long_video.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("argv,message", [
    (["--modes", "dense,magic"], "--modes takes"),
    (["--modes", "dense,dense"], "names a mode twice"),
    (["--chunk-frames", "0"], "--chunk-frames must be at least 1"),
    (["--max-seconds", "0"], "--max-seconds must be a number > 0"),
    (["--max-memory-gib", "-1"], "--max-memory-gib must be a number > 0"),
    (["--frames", "0"], "--frames values must be"),
])
def test_long_video_bad_input(capsys, argv, message):
    assert main(["bench", "--long-video", "--shape", "llava-onevision-0.5b", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
