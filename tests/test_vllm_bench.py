"""The vLLM benchmark's interleaved rounds (issue 28, point 4), without vLLM: the round driver, the
ratios taken within a round, median [min-max], the noise flags and what the rounds can tell apart,
the report, the worker-process protocol (a fake worker that speaks it), the memory check before
each engine and a whole run of ``main`` on fake workers. The real engines run in
tests/integrations/test_vllm.py, where vLLM is installed. No test asserts a real timing."""

from __future__ import annotations

import json
import statistics
import sys
import textwrap

import pytest

from sharpv.harness import rounds as shared
from sharpv.integrations.vllm import bench
from sharpv.integrations.vllm.bench import (Engine, EngineProcess, comparisons, flag_noise, make_record, markdown,
                                            run_rounds, summarise)

ENGINES = ["dense", "evs @ 0.75", "vidcom2 @ 0.75", "sharpv @ 0.75"]
#: seconds for one batch of 3 requests on a machine at speed 1, and a request alone's TTFT
BATCH = {"dense": 60.0, "evs @ 0.75": 40.0, "vidcom2 @ 0.75": 44.0, "sharpv @ 0.75": 42.0}
ALONE = {"dense": 12.0, "evs @ 0.75": 6.0, "vidcom2 @ 0.75": 6.5, "sharpv @ 0.75": 6.2}


class Machine:
    """Runs engines on a machine slowed by ``slowdown(round index)``; logs what ran."""

    def __init__(self, slowdown=lambda i: 1.0):
        self.slowdown, self.executed = slowdown, []

    def run(self, engine: str, index: int) -> dict:
        self.executed.append((index, engine))
        k = self.slowdown(index)
        seconds = BATCH[engine] * k
        return {"round": index, "seconds": seconds, "requests_per_second": 3 / seconds,
                "ttft_seconds_median": seconds / 2, "ttft_seconds_alone": ALONE[engine] * k,
                "prompt_tokens": 584 if engine == "dense" else 200, "generated_tokens": [8, 8, 8]}


def records_of(timed: dict) -> list[dict]:
    out = []
    for engine_id, answers in timed.items():
        mode, _, rate = engine_id.partition(" @ ")
        out.append(make_record(Engine(mode, float(rate or 0)), answers))
    return out


# --- the round driver ------------------------------------------------------------------------------


def test_every_round_runs_every_engine_once_in_a_shuffled_order_and_the_log_is_what_ran():
    m = Machine()
    timed, log = run_rounds(ENGINES, m.run, rounds=5, warmup=2, seed=3)
    assert [r["warmup"] for r in log] == [True, True, False, False, False, False, False]
    assert [r["index"] for r in log] == list(range(7))
    for r in log:
        assert sorted(r["order"]) == sorted(ENGINES)
    assert m.executed == [(r["index"], e) for r in log for e in r["order"]]  # the log is what ran, in order
    assert len({tuple(r["order"]) for r in log}) > 1  # shuffled per round
    for engine, answers in timed.items():  # warm-up rounds excluded, timed rounds in order
        assert [a["round"] for a in answers] == [2, 3, 4, 5, 6]


def test_the_order_is_the_seeds_and_the_same_shuffle_as_sharpv_bench():
    _, first = run_rounds(ENGINES, Machine().run, rounds=4, warmup=1, seed=11)
    _, again = run_rounds(ENGINES, Machine().run, rounds=4, warmup=1, seed=11)
    _, other = run_rounds(ENGINES, Machine().run, rounds=4, warmup=1, seed=12)
    assert [r["order"] for r in first] == [r["order"] for r in again] != [r["order"] for r in other]
    # the shared helper: random.Random(seed), one sample per round
    import random

    rng = random.Random(11)
    assert [r["order"] for r in first] == [rng.sample(ENGINES, len(ENGINES)) for _ in range(5)]
    assert shared.round_orders(ENGINES, 5, 11) == [r["order"] for r in first]


def test_rounds_and_warmup_are_checked():
    with pytest.raises(ValueError):
        run_rounds(ENGINES, Machine().run, rounds=0, warmup=1)
    with pytest.raises(ValueError):
        run_rounds(ENGINES, Machine().run, rounds=2, warmup=-1)
    timed, log = run_rounds(ENGINES, Machine().run, rounds=1, warmup=0)
    assert len(log) == 1 and not log[0]["warmup"] and all(len(a) == 1 for a in timed.values())


def test_a_machine_that_slows_between_rounds_moves_no_ratio():
    """The machine is 1x, 3x, 1x, 2x, 1.5x slower round by round: one engine's rounds after
    another's would measure the slowdown; in rounds every ratio is the true one in every round, and
    the dense that varied (requests/s 1/20 to 1/60 around 1/30: 100%) flags every row."""
    slowdown = [1.0, 1.0, 3.0, 1.0, 2.0, 1.5]
    timed, _ = run_rounds(ENGINES, Machine(lambda i: slowdown[i]).run, rounds=5, warmup=1)
    records = records_of(timed)
    summarise(records, video_tokens=512)
    by = {r["engine"]: r for r in records}
    for engine in ENGINES:
        r = by[engine]
        assert r["vs_dense"] == pytest.approx(BATCH["dense"] / BATCH[engine])
        assert r["spread"]["vs_dense"] == pytest.approx([BATCH["dense"] / BATCH[engine]] * 2)
        assert r["ttft_speedup"] == pytest.approx(ALONE["dense"] / ALONE[engine])
        # raw numbers keep the slowdown: every round's, median and [min, max]
        assert r["rounds"]["requests_per_second"] == pytest.approx([3 / (BATCH[engine] * k) for k in slowdown[1:]])
        assert r["spread"]["requests_per_second"] == pytest.approx([3 / (BATCH[engine] * 3), 3 / BATCH[engine]])
    sharpv = by["sharpv @ 0.75"]
    assert sharpv["vs_evs"] == pytest.approx(40 / 42) and sharpv["vs_vidcom2"] == pytest.approx(44 / 42)
    assert by["evs @ 0.75"].get("vs_evs") is None and "vs_evs" not in by["evs @ 0.75"]["rounds"]
    assert by["dense"]["video_tokens_kept"] == 512 and sharpv["video_tokens_kept"] == 512 - (584 - 200)
    lines = flag_noise(records)
    assert all(r["flag"] == "noise" for r in records)
    assert lines[0] == ("noise: dense requests/s varied 100% across rounds and dense TTFT alone varied 133% across "
                        "rounds (more than 20%): every row is flagged, the machine was not quiet enough to show that "
                        "the ratios against dense hold")


# --- the arithmetic on constructed rounds -----------------------------------------------------------


def record(engine: str, rps, alone=None, prompt=200) -> dict:
    mode, _, rate = engine.partition(" @ ")
    k = len(rps)
    alone = alone or [5.0] * k
    return make_record(Engine(mode, float(rate or 0)), [
        {"seconds": 3 / v, "requests_per_second": v, "ttft_seconds_median": 1.0, "ttft_seconds_alone": a,
         "prompt_tokens": prompt} for v, a in zip(rps, alone)])


def test_ratios_are_taken_within_a_round_not_between_medians():
    """Load arrives in round 3 after dense ran and before SharpV did, and stays: the medians of
    requests/s would say 0.05 / 0.06 = 0.83x; within each round SharpV is 1.5x dense in four rounds
    of five."""
    dense = record("dense", [0.04, 0.04, 0.04, 0.02, 0.02], prompt=584)
    sharpv = record("sharpv @ 0.75", [0.06, 0.06, 0.03, 0.03, 0.03])
    evs = record("evs @ 0.75", [0.06, 0.06, 0.06, 0.03, 0.03])
    records = [dense, evs, sharpv]
    summarise(records)
    assert statistics.median(sharpv["rounds"]["requests_per_second"]) / statistics.median(
        dense["rounds"]["requests_per_second"]) == pytest.approx(0.75)  # what whole-run medians say
    assert sharpv["rounds"]["vs_dense"] == pytest.approx([1.5, 1.5, 0.75, 1.5, 1.5])
    assert sharpv["vs_dense"] == pytest.approx(1.5) and sharpv["spread"]["vs_dense"] == pytest.approx([0.75, 1.5])
    assert sharpv["rounds"]["vs_evs"] == pytest.approx([1, 1, 0.5, 1, 1]) and sharpv["vs_evs"] == pytest.approx(1)
    assert sharpv.get("vs_vidcom2") is None  # no VidCom2 in this run
    assert dense["vs_dense"] == 1.0 and dense["spread"]["vs_dense"] == [1.0, 1.0]
    assert sharpv["requests_per_second"] == 0.03 and sharpv["spread"]["requests_per_second"] == [0.03, 0.06]
    assert "video_tokens_kept" not in sharpv  # no video token count given


def test_a_noisy_dense_flags_every_row_and_a_quiet_one_does_not():
    quiet = [record("dense", [0.040, 0.042, 0.046, 0.040]), record("evs @ 0.75", [0.06, 0.06, 0.063, 0.06])]
    summarise(quiet)
    assert flag_noise(quiet) == [] and [r["flag"] for r in quiet] == [None, None]  # 15%
    noisy = [record("dense", [0.040, 0.040, 0.050, 0.040]), record("evs @ 0.75", [0.06, 0.06, 0.063, 0.06])]
    summarise(noisy)
    lines = flag_noise(noisy)
    assert [r["flag"] for r in noisy] == ["noise", "noise"]  # (0.05 - 0.04) / 0.04 = 25% > 20%
    assert noisy[1]["flag_reasons"] == ["dense requests/s varied 25% across rounds"]
    assert len(lines) == 1 and lines[0].startswith("noise: dense requests/s varied 25% across rounds (more than 20%)")
    # a row's own requests/s or TTFT alone varying beyond 20% flags that row alone
    own = [record("dense", [0.04] * 4), record("evs @ 0.75", [0.06] * 4, alone=[5, 5, 6.5, 5]),
           record("sharpv @ 0.75", [0.06] * 4)]
    summarise(own)
    lines = flag_noise(own)
    assert [r["flag"] for r in own] == [None, "noise", None]
    assert lines == ["noise: evs @ 0.75: its TTFT alone varied 30% across rounds (more than 20%)"]


def test_one_round_has_no_spread_and_no_flags():
    records = [record("dense", [0.04]), record("evs @ 0.75", [0.05]), record("sharpv @ 0.75", [0.06])]
    summarise(records)
    assert flag_noise(records) == []
    assert comparisons(records) == []  # no spread: no "above 1 in every round" from a single round
    assert records[2]["vs_dense"] == pytest.approx(1.5) and records[2]["spread"]["vs_dense"] == pytest.approx([1.5, 1.5])


def test_what_the_rounds_can_tell_apart():
    records = [record("dense", [0.04, 0.04, 0.04]), record("evs @ 0.75", [0.060, 0.056, 0.064]),
               record("vidcom2 @ 0.75", [0.052, 0.050, 0.058]), record("sharpv @ 0.75", [0.058, 0.054, 0.060])]
    summarise(records)
    lines = comparisons(records)
    assert lines[0] == ("rate 0.75, requests/s against dense: EVS 1.50x [1.40-1.60], VidCom2 1.30x [1.25-1.45], "
                        "SharpV 1.45x [1.35-1.50]; the spreads overlap: the rounds cannot tell the pruned rows apart")
    assert lines[1] == ("rate 0.75, SharpV's requests/s over EVS's within a round: 0.96x [0.94-0.97], below 1 in every "
                        "round")
    assert lines[2].endswith("above 1 in every round")  # over VidCom2: 1.03-1.12
    apart = [record("dense", [0.04, 0.04]), record("evs @ 0.75", [0.06, 0.061]), record("sharpv @ 0.75", [0.08, 0.07])]
    summarise(apart)
    assert comparisons(apart)[0].endswith("the spreads do not all overlap")
    straddle = [record("dense", [0.04, 0.04]), record("evs @ 0.75", [0.06, 0.06]), record("sharpv @ 0.75", [0.058, 0.062])]
    summarise(straddle)
    assert comparisons(straddle)[1].endswith("on both sides of 1: the rounds cannot tell them apart")


def test_shared_helpers():
    assert shared.ratios([2, 6], [1, 3]) == [2, 2]
    with pytest.raises(ValueError):
        shared.ratios([1, 2], [1])
    assert shared.median_spread([3, 1, 2]) == (2.0, [1.0, 3.0])
    assert shared.relative_spread([1.0]) is None and shared.relative_spread([10, 12.5, 10]) == pytest.approx(0.25)
    assert shared.overlap([[1, 2], [1.5, 3], [2, 4]]) and not shared.overlap([[1, 2], [1.5, 3], [2.5, 4]])
    assert shared.with_spread("{:.2f}x", 1.5, [1.25, 1.75]) == "1.50x [1.25-1.75]"
    assert shared.with_spread("{:.3f}", 0.5, [0.5, 0.5]) == "0.500"
    assert shared.with_spread("{:.3f}", 0.5, [0.4999, 0.5001]) == "0.500"  # the same at that precision: no bracket
    assert shared.with_spread("{:.1f}", 2, None) == "2.0"
    assert shared.NOISE_THRESHOLD == 0.20
    from sharpv.harness import bench as harness

    assert harness.NOISE_THRESHOLD is shared.NOISE_THRESHOLD and harness.relative_spread is shared.relative_spread


# --- the report ------------------------------------------------------------------------------------


def result_of(records: list[dict], rounds: int = 3) -> dict:
    return {"environment": {"vllm": "0.32.0", "cpu": "a CPU", "cores": 2, "torch": "2.13.0", "transformers": "5.19.0",
                            "threads": 2, "sharpv_commit": "0123456789abcdef", "load_average_before": [1.0, 1.5, 2.0],
                            "load_average_after": [2.0, 2.5, 3.0], "memory_total_bytes": 24 * 2**30,
                            "memory_available_all_loaded_bytes": 3 * 2**30},
            "settings": {"shape": "qwen3-vl-2b", "dtype": "bfloat16", "frames": 16, "side": 256, "video_tokens": 512,
                         "requests": 3, "new_tokens": 8, "rounds": rounds, "warmup": 1, "seed": 0},
            "records": records, "wall_seconds": 600.0}


def test_the_table_shows_median_spread_and_flags_and_the_plot_draws(tmp_path):
    records = [record("dense", [0.040, 0.040, 0.050], alone=[10, 11, 12], prompt=584),
               record("evs @ 0.75", [0.060, 0.056, 0.064]), record("sharpv @ 0.75", [0.058, 0.054, 0.060])]
    for r in records:
        r.update(rss_after_load_bytes=5 * 2**30, peak_rss_bytes=int(5.5 * 2**30))
    summarise(records, video_tokens=512)
    result = result_of(records)
    result["notes"] = flag_noise(records) + comparisons(records)
    md = markdown(result)
    lines = md.splitlines()
    assert "3 timed rounds after 1 warm-up round" in md and "(seed 0)" in md and "whole run 10.0 min" in md
    assert "1.00/1.50/2.00 before, 2.00/2.50/3.00 after" in md
    assert "dense 5.0 / 5.5 GiB" in md and "3.0 GiB available with every engine loaded" in md
    header = next(i for i, line in enumerate(lines) if line.startswith("| mode |"))
    dense, evs, sharpv = lines[header + 2: header + 5]
    assert dense.startswith("| dense | 0 | 584 | 512 | 0.040 [0.040-0.050] | 1.00x | - | - |")
    assert dense.endswith("| 11.00 [10.00-12.00] | 1.00x | noise |")
    assert "| EVS | 0.75 | 200 | 128 | 0.060 [0.056-0.064] | 1.40x [1.28-1.50] | - | - |" in evs
    assert "| 0.96x [0.94-0.97] |" in sharpv and sharpv.endswith("| noise |")
    assert "- noise: dense requests/s varied 25% across rounds" in md
    assert "- rate 0.75, requests/s against dense: EVS 1.40x [1.28-1.50], SharpV 1.35x [1.20-1.45]; the spreads " \
           "overlap: the rounds cannot tell the pruned rows apart" in md
    pytest.importorskip("matplotlib")
    bench.plot(result, tmp_path / "vllm_bench.png")
    assert (tmp_path / "vllm_bench.png").stat().st_size > 1000


# --- the worker processes ----------------------------------------------------------------------------

#: a stand-in for the worker (no vLLM): the protocol, the numbers of Machine, a slowdown per round
FAKE_WORKER = textwrap.dedent("""
    import json, os, sys
    engine, fd = sys.argv[1], int(sys.argv[2])
    batch = {"dense": 60.0, "evs @ 0.75": 40.0, "vidcom2 @ 0.75": 44.0, "sharpv @ 0.75": 42.0}[engine]
    out = os.fdopen(fd, "w", buffering=1)
    print("engine log: loading", engine, flush=True)  # the worker's own output goes to its log
    if os.environ.get("FAKE_DIE") == engine:
        print("Traceback: the engine failed", flush=True)
        sys.exit(3)
    out.write(json.dumps({"ready": True, "load_seconds": 1.5, "threads": 2, "vllm": "0.32.0", "torch": "2.13.0",
                          "transformers": "5.19.0"}) + "\\n")
    for line in sys.stdin:
        index = int(line)
        seconds = batch * (1, 1, 3, 1, 2, 1.5, 1)[index]
        out.write(json.dumps({"round": index, "seconds": seconds, "requests_per_second": 3 / seconds,
                              "ttft_seconds_median": seconds / 2, "ttft_seconds_alone": seconds / 5,
                              "prompt_tokens": 584 if engine == "dense" else 200, "generated_tokens": [8, 8, 8]}) + "\\n")
""")


@pytest.fixture
def fake_worker(tmp_path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    return lambda engine_id: (lambda fd: [sys.executable, str(script), engine_id, str(fd)])


def test_an_engine_process_answers_over_its_pipe_and_its_log_keeps_its_output(tmp_path, fake_worker):
    p = EngineProcess("evs @ 0.75", fake_worker("evs @ 0.75"), env=bench.worker_environment(), log=tmp_path / "evs.log")
    try:
        ready = p.start()
        assert ready["ready"] and ready["threads"] == 2
        assert p.memory()["rss_bytes"] > 0 and p.memory()["peak_rss_bytes"] >= p.memory()["rss_bytes"]
        assert p.run(0)["requests_per_second"] == pytest.approx(3 / 40)
        assert p.run(2)["seconds"] == pytest.approx(120)
    finally:
        p.close()
    assert p.process.returncode == 0  # stdin closed: the worker's loop ended
    assert "engine log: loading evs @ 0.75" in (tmp_path / "evs.log").read_text()


def test_a_worker_that_dies_stops_the_run_with_its_last_lines(tmp_path, fake_worker, monkeypatch):
    monkeypatch.setenv("FAKE_DIE", "dense")
    p = EngineProcess("dense", fake_worker("dense"), env=dict(__import__("os").environ), log=tmp_path / "dense.log")
    with pytest.raises(SystemExit) as info:
        p.start()
    message = str(info.value)
    assert message.startswith("the dense engine stopped while loading with exit code 3:")
    assert "Traceback: the engine failed" in message


def test_the_workers_environment_keeps_the_engine_in_process_and_the_kv_size_the_benchs(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "40")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    env = bench.worker_environment()
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and "VLLM_CPU_KVCACHE_SPACE" not in env


def test_an_engine_that_would_not_fit_is_refused_before_it_starts(monkeypatch):
    class Loaded:
        ready = {"load_seconds": 1.0}
        started, closed = [], []

        def __init__(self, engine):
            self.engine = engine

        def start(self):
            Loaded.started.append(self.engine.id)
            return self.ready

        def memory(self):
            return {"rss_bytes": 5 * 2**30, "peak_rss_bytes": 6 * 2**30}

        def close(self):
            Loaded.closed.append(self.engine.id)

    free = iter([20 * 2**30, 7 * 2**30, 5 * 2**30])
    monkeypatch.setattr(bench, "available_memory", lambda: next(free))
    engines = bench.plan_engines("qwen3-vl-2b", [0.75])
    with pytest.raises(SystemExit) as info:
        bench.start_engines(engines, Loaded)
    assert Loaded.started == ["dense", "evs @ 0.75"]  # the first engine always starts: nothing measured yet
    assert str(info.value).startswith("not enough memory for the vidcom2 @ 0.75 engine: 5.0 GiB available, and each "
                                      "engine peaked at up to 6.0 GiB while loading")
    assert Loaded.closed == ["dense", "evs @ 0.75"]  # the engines already loaded are stopped, not left behind


def test_a_whole_run_on_fake_workers_writes_every_round(tmp_path, fake_worker, monkeypatch, capsys):
    monkeypatch.setattr(bench, "worker_command", lambda args, engine, checkpoint, fd: fake_worker(engine.id)(fd))
    out = tmp_path / "out"
    assert bench.main(["--rounds", "5", "--warmup", "1", "--seed", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    payload = json.loads((out / "results.json").read_text())
    env, settings, log, records = payload["environment"], payload["settings"], payload["rounds"], payload["records"]
    assert settings["rounds"] == 5 and settings["warmup"] == 1 and settings["seed"] == 4
    assert settings["max_model_len"] == 512 + 512 and settings["kv_cache_mib"] == 256
    assert env["vllm"] == "0.32.0" and env["threads"] == 2 and env["noise_threshold"] == 0.2
    assert len(env["load_average_before"]) == 3 and len(env["load_average_after"]) == 3
    origin = payload["provenance"]  # the repository's provenance record, as eval and sharpv bench write it
    assert payload["wall_seconds"] == origin["wall_seconds"] > 0 and "sharpv_commit" in origin
    assert "sharpv_dirty" in origin and origin["versions"]["python"] and origin["cpu_count"] == env["cores"]
    assert not settings["fresh_engines"] and env["memory_available_all_loaded_bytes"] > 0
    assert [r["warmup"] for r in log] == [True] + [False] * 5
    assert log == [{"index": i, "warmup": i == 0, "order": o} for i, o in
                   enumerate(shared.round_orders(ENGINES, 6, 4))]
    assert [r["engine"] for r in records] == ENGINES
    for r in records:
        assert len(r["rounds"]["requests_per_second"]) == 5 and r["load_seconds"] == 1.5
        assert r["rss_after_load_bytes"] > 0 and r["peak_rss_bytes"] > 0
        assert r["vs_dense"] == pytest.approx(BATCH["dense"] / BATCH[r["engine"]])  # the slowdown cancels
        assert r["flag"] == "noise"  # dense varied 100%
    assert records[-1]["video_tokens_kept"] == 128
    md = (out / "results.md").read_text()
    assert "| SharpV | 0.75 | 200 | 128 |" in md and "- noise: dense requests/s varied 100%" in md
    assert "Ran sharpv " in md and "all alive for the whole run" in md
    assert (out / "vllm_bench.png").exists()
    assert md in captured.out and "round 5/5" in captured.err


def test_rounds_below_one_are_refused_in_one_line():
    with pytest.raises(SystemExit, match="--rounds takes an integer >= 1"):
        bench.main(["--rounds", "0"])


def test_fresh_engines_start_one_engine_per_turn_and_stop_it_after(tmp_path, fake_worker, monkeypatch):
    """--fresh-engines: every turn of every round starts its engine and stops it before the next
    turn (one engine in memory at a time), in the same shuffled order; the ratios stay within a round."""
    alive, most = set(), []

    class Counted(EngineProcess):
        def start(self):
            alive.add(self.name)
            most.append(len(alive))
            return super().start()

        def close(self):
            super().close()
            alive.discard(self.name)

    monkeypatch.setattr(bench, "EngineProcess", Counted)
    monkeypatch.setattr(bench, "worker_command", lambda args, engine, checkpoint, fd: fake_worker(engine.id)(fd))
    out = tmp_path / "out"
    assert bench.main(["--rounds", "3", "--warmup", "1", "--fresh-engines", "--out", str(out)]) == 0
    payload = json.loads((out / "results.json").read_text())
    assert len(most) == 4 * 4 and max(most) == 1 and not alive  # 4 rounds x 4 engines, one at a time
    assert payload["settings"]["fresh_engines"] and payload["environment"]["memory_available_all_loaded_bytes"] is None
    for r in payload["records"]:
        assert r["vs_dense"] == pytest.approx(BATCH["dense"] / BATCH[r["engine"]])
        assert r["peak_rss_bytes"] > 0 and r["load_seconds"] == 1.5
    assert "started afresh for each turn" in (out / "results.md").read_text()


def test_a_fresh_engine_is_told_to_warm_up_before_its_timed_turn(tmp_path):
    from types import SimpleNamespace

    args = SimpleNamespace(frames=16, tokens_per_step=64, requests=3, new_tokens=8, dtype="bfloat16", shape="qwen3-vl-2b",
                           max_model_len=1024, kv_cache_mib=256, fresh_engines=False)
    assert "--warm-request" not in bench.worker_command(args, Engine("dense"), tmp_path, 5)
    args.fresh_engines = True
    command = bench.worker_command(args, Engine("sharpv", 0.75), tmp_path, 5)
    assert command[-1] == "--warm-request" and command[command.index("--rate") + 1] == "0.75"
