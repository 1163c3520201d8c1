"""`sharpv bench`'s interleaved rounds (issue 28): the round order, ratios taken within a round,
median [min-max], the noise flags, and a real short run whose JSON carries every round. The
machine is faked where the test is about arithmetic or order; no test asserts a real timing."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import pytest
import torch

from sharpv.cli import main
from sharpv.harness import bench
from sharpv.harness.bench import NOISE_THRESHOLD, MethodSpec, RunResult, flag_noise, run_bench, summarise_rounds

# --- a fake machine: run_once / the ideal prefill return constructed seconds, no model runs ---------


class Text:
    hidden_size, num_attention_heads, num_key_value_heads, intermediate_size, vocab_size = 8, 2, 1, 16, 10
    num_hidden_layers = 4


class FakeModel:
    device = torch.device("cpu")
    config = SimpleNamespace(get_text_config=lambda: Text)


TOKENS_PER_FRAME = 16
#: the true cost of each method's prefill at 4 frames (seconds on a machine at speed 1)
COST = {"dense": 10.0, "sharpv": 2.0, "fastv": 4.0, "ideal": 1.9}


class Machine:
    """Executes cells on a machine whose slowdown is ``speed(call index)``; logs what ran."""

    def __init__(self, speed=lambda i: 1.0):
        self.speed, self.executed = speed, []

    def seconds(self, name: str, frames: int) -> float:
        s = COST[name] * frames / 4 * self.speed(len(self.executed))
        return s

    def run_once(self, model, method, inputs, new_tokens, memory):
        n, keep = inputs["frames"], getattr(method.config, "keep_ratio", None)
        visual = n * TOKENS_PER_FRAME
        kept = visual if method.name in ("dense", "fastv") else round(keep * visual)
        seconds = self.seconds(method.name, n)
        self.executed.append((method.name, keep, n))
        stats = SimpleNamespace(visual_tokens_in=visual, visual_tokens_kept=kept, equivalent_retention=kept / visual,
                                sequence_length_in=visual + 10, sequence_length_out=kept + 10, kv_cache_bytes=kept + 10,
                                kv_cache_bytes_per_layer=[], kv_withdraw_layer=None, kv_mode=None, kv_cache_lengths=[],
                                pruning_seconds=0.001, extra_seconds=0.0)
        return RunResult(seconds, 0.0, 0.5, 0, stats)

    def ideal_inputs(self, model, inputs, kept, n_visual):
        return {"input_ids": torch.zeros(1, kept + 10), "frames": inputs["frames"], "kept": kept}

    def time_ideal(self, model, feed):
        seconds = self.seconds("ideal", feed["frames"])
        self.executed.append(("ideal", feed["kept"], feed["frames"]))
        return seconds


@pytest.fixture
def machine(monkeypatch):
    def install(speed=lambda i: 1.0) -> Machine:
        m = Machine(speed)
        monkeypatch.setattr(bench, "run_once", m.run_once)
        monkeypatch.setattr(bench, "ideal_inputs", m.ideal_inputs)
        monkeypatch.setattr(bench, "time_ideal", m.time_ideal)
        return m

    return install


def fake_bench(seed=0, repeats=3, warmup=1, frames=(4, 8)):
    specs = [MethodSpec.parse("sharpv"), MethodSpec.parse("fastv")]
    return run_bench(FakeModel(), lambda n: {"frames": n}, methods=specs, budgets=[0.25], frames=list(frames),
                     repeats=repeats, warmup=warmup, new_tokens=4, seed=seed)


def as_executed(record: dict) -> tuple:
    """What the fake machine logs when it runs the cell of ``record``."""
    if record["method"] == "ideal":
        return ("ideal", record["visual_tokens_kept"], record["frames"])
    return (record["method_name"], record["budget"], record["frames"])


def test_every_round_runs_every_cell_once_shuffled_and_the_log_is_what_ran(machine):
    m = machine()
    records, rounds = fake_bench(seed=3, repeats=4, warmup=2)
    cells = [r["cell"] for r in records]
    assert len(cells) == len(set(cells)) == 2 * (3 + 1)  # dense, sharpv, fastv and one ideal per frame count
    assert [r["warmup"] for r in rounds] == [True, True, False, False, False, False]
    for r in rounds:
        assert sorted(r["order"]) == sorted(cells)  # every cell once, dense and ideal included
    # the first round learns the ideal counts from the methods: its ideal cells run last
    assert all("ideal" in c for c in rounds[0]["order"][-2:])
    # the logged order is what the machine ran, round after round
    by_cell = {r["cell"]: as_executed(r) for r in records}
    assert m.executed == [by_cell[c] for r in rounds for c in r["order"]]
    # shuffled: the timed rounds' orders are not all the same, and the ideal cells are not always last
    timed = [tuple(r["order"]) for r in rounds if not r["warmup"]]
    assert len(set(timed)) > 1
    assert any(not all("ideal" in c for c in order[-2:]) for order in timed)
    # warm-up excluded: every record holds the timed rounds only
    for r in records:
        assert len(r["rounds"]["prefill_seconds"]) == 4


def test_the_order_is_reproducible_with_the_seed(machine):
    machine()
    _, first = fake_bench(seed=11)
    machine()
    _, again = fake_bench(seed=11)
    machine()
    _, other = fake_bench(seed=12)
    assert [r["order"] for r in first] == [r["order"] for r in again]
    assert [r["order"] for r in first] != [r["order"] for r in other]


def test_a_machine_that_slows_between_rounds_moves_no_ratio(machine):
    """The machine is 1x, 3x, 1x, 2x slower round by round (8 cells a round): run one method's
    repeats after another's and the ratios would measure the slowdown; in rounds, every ratio is
    the true one in every round."""
    slowdown = [1.0, 1.0, 3.0, 1.0, 2.0]
    machine(lambda i: slowdown[i // 8])
    records, rounds = fake_bench(repeats=4, warmup=1)
    assert all(len(r["order"]) == 8 for r in rounds)
    by = {(r["method"], r["frames"]): r for r in records}
    for n in (4, 8):
        sharpv, fastv, ideal = by[("sharpv", n)], by[("fastv", n)], by[("ideal", n)]
        assert sharpv["prefill_speedup"] == pytest.approx(10 / 2)
        assert sharpv["spread"]["prefill_speedup"] == pytest.approx([5.0, 5.0])
        assert fastv["prefill_speedup"] == pytest.approx(10 / 4)
        assert sharpv["prefill_vs_ideal"] == pytest.approx(2 / 1.9) and fastv["prefill_vs_ideal"] == pytest.approx(4 / 1.9)
        assert ideal["prefill_speedup"] == pytest.approx(10 / 1.9)
        # the seconds keep the slowdown: min / median / max of the raw rounds
        assert sharpv["spread"]["prefill_seconds"] == pytest.approx([2.0 * n / 4, 6.0 * n / 4])
        assert sharpv["rounds"]["prefill_seconds"] == pytest.approx([2.0 * n / 4 * s for s in slowdown[1:]])
        # the dense prefill varied 200% across rounds: flagged as noise, every row of that frame count
        assert all(r["flag"] == "noise" for r in records if r["frames"] == n)


# --- the arithmetic on constructed rounds -----------------------------------------------------------


def record(method, prefill, *, kept=16, retention=None, ideal=None, frames=4) -> dict:
    name = method.split(":")[0]
    k = len(prefill)
    return {"cell": f"{frames} frames: {method}", "method": method, "method_name": name, "budget": None if name == "dense" else 0.25,
            "frames": frames, "visual_tokens_in": 64, "visual_tokens_kept": 64 if name == "dense" else kept,
            "kept_share": 1.0 if name == "dense" else kept / 64,
            "equivalent_retention": (1.0 if name == "dense" else kept / 64) if retention is None else retention,
            "kv_cache_bytes": 100, "prefill_flops": 1000, "ideal_visual_tokens": ideal,
            "rounds": {"prefill_seconds": list(prefill), "vision_seconds": [0.0] * k, "decode_seconds": [1.0] * k,
                       "pruning_seconds": [0.01] * k, "decode_tokens_per_second": [4.0] * k}}


def ideal_record(prefill, kept=16, frames=4) -> dict:
    return {"cell": f"{frames} frames: ideal @ {kept}", "method": "ideal", "method_name": "ideal", "budget": 0.25,
            "frames": frames, "visual_tokens_in": 64, "visual_tokens_kept": kept, "kept_share": kept / 64,
            "equivalent_retention": kept / 64, "rounds": {"prefill_seconds": list(prefill)}}


def test_ratios_are_taken_within_a_round_not_between_medians():
    """Load arrives in round 3 after the dense and the ideal runs but before the method's, and
    stays: the medians of the seconds would say 10 / 6 = 1.67x dense and 6 / 1.9 = 3.2x its ideal;
    within each round the method is 5x dense and 1.05x its ideal in four rounds of five."""
    dense = record("dense", [10, 10, 10, 30, 30])
    method = record("sharpv", [2, 2, 6, 6, 6], ideal=16)
    ideal = ideal_record([1.9, 1.9, 1.9, 5.7, 5.7])
    records = [dense, method, ideal]
    summarise_rounds(records)
    assert statistics.median(dense["rounds"]["prefill_seconds"]) / statistics.median(method["rounds"]["prefill_seconds"]) \
        == pytest.approx(10 / 6)  # what whole-run medians say
    assert method["rounds"]["prefill_speedup"] == pytest.approx([5, 5, 10 / 6, 5, 5])
    assert method["prefill_speedup"] == pytest.approx(5.0)
    assert method["spread"]["prefill_speedup"] == pytest.approx([10 / 6, 5.0])
    assert statistics.median(method["rounds"]["prefill_seconds"]) / statistics.median(ideal["rounds"]["prefill_seconds"]) \
        == pytest.approx(6 / 1.9)
    assert method["rounds"]["prefill_vs_ideal"] == pytest.approx([2 / 1.9, 2 / 1.9, 6 / 1.9, 6 / 5.7, 6 / 5.7])
    assert method["spread"]["prefill_vs_ideal"] == pytest.approx([2 / 1.9, 6 / 1.9])
    assert method["prefill_vs_ideal"] == pytest.approx(2 / 1.9)
    assert ideal["prefill_speedup"] == pytest.approx(10 / 1.9)
    # seconds: median and [min, max] of the raw rounds; TTFT and its speedup per round too
    assert method["prefill_seconds"] == 6 and method["spread"]["prefill_seconds"] == [2, 6]
    assert method["ttft_speedup"] == pytest.approx(5.0)
    assert method["pruning_share_of_dense_prefill"] == pytest.approx(0.001)
    assert method["decode_speedup"] == 1.0 and method["kv_ratio"] == 1.0 and method["flops_ratio"] == 1.0
    assert dense["prefill_speedup"] == 1.0 and dense.get("prefill_vs_ideal") is None
    flag_noise(records)
    assert method["flag"] == "noise"  # the dense prefill varied 200%, its own 200%
    assert "faster than ideal" not in method["flag"]


def test_a_noisy_dense_flags_its_frame_count_and_a_quiet_one_does_not():
    noisy = [record("dense", [10, 10, 12.5, 10]), record("random", [2, 2, 2.1, 2], ideal=16),
             ideal_record([1.9, 1.9, 2.0, 1.9])]
    quiet = [record("dense", [10, 10.5, 11.5, 10], frames=8), record("random", [2, 2, 2.1, 2], ideal=16, frames=8),
             ideal_record([1.9, 1.9, 2.0, 1.9], frames=8)]
    records = noisy + quiet
    summarise_rounds(records)
    lines = flag_noise(records)
    assert [r["flag"] for r in noisy] == ["noise"] * 3  # (12.5 - 10) / 10 = 25% > 20%
    assert [r["flag"] for r in quiet] == [None] * 3  # 15%
    assert noisy[1]["flag_reasons"] == ["the dense prefill at 4 frames varied 25% across rounds"]
    assert lines == [f"noise: 4 frames: the dense prefill varied 25% across rounds (more than {NOISE_THRESHOLD:.0%}); "
                     "every ratio at 4 frames is flagged"]
    # a cell's own prefill varying beyond the threshold flags that cell alone
    quiet[1]["rounds"]["prefill_seconds"] = [2, 2, 3, 2]
    summarise_rounds(records)
    lines = flag_noise(records)
    assert quiet[1]["flag"] == "noise" and quiet[0]["flag"] is None and quiet[2]["flag"] is None
    assert lines[-1] == "noise: 8 frames: random: its prefill varied 50% across rounds (more than 20%)"


def test_a_cell_faster_than_its_ideal_in_every_round_is_flagged():
    stage1 = record("sharpv:kv=false", [1.80, 1.85, 1.88], ideal=16)  # below the ideal in every round: impossible
    overlapping = record("random", [1.80, 2.05, 1.88], ideal=16)  # below in two rounds, above in one: noise
    both = record("sharpv", [1.0, 1.0, 1.0], ideal=16, retention=0.125)  # computes fewer tokens per layer: allowed
    fastv = record("fastv", [1.85, 1.8, 1.85], kept=64, retention=0.4, ideal=16)  # every token in layers 0-1: impossible
    records = [record("dense", [10, 10, 10]), stage1, overlapping, both, fastv, ideal_record([2.0, 2.0, 1.9])]
    summarise_rounds(records)
    lines = flag_noise(records)
    assert stage1["flag"] == "faster than ideal" and fastv["flag"] == "faster than ideal"
    assert overlapping["flag"] is None and both["flag"] is None
    assert stage1["flag_reasons"][0].startswith("its prefill was 0.90-0.99x its ideal's (16 visual tokens) in every round")
    assert len(lines) == 2 and lines[0].startswith("faster than ideal: 4 frames: sharpv:kv=false: its prefill was")


def test_one_round_has_no_spread_and_no_flags():
    records = [record("dense", [10]), record("sharpv:kv=false", [1.0], ideal=16), ideal_record([2.0])]
    summarise_rounds(records)
    assert flag_noise(records) == []
    assert records[1]["prefill_speedup"] == 10 and records[1]["spread"]["prefill_speedup"] == [10, 10]


def test_the_table_shows_median_and_spread():
    from sharpv.harness.report import BENCH_COLUMNS, markdown_table

    records = [record("dense", [10, 10, 12.5]), record("random", [2, 2.5, 2], ideal=16), ideal_record([1.9, 2.0, 1.9])]
    summarise_rounds(records)
    flag_noise(records)
    lines = markdown_table(records, BENCH_COLUMNS).splitlines()
    dense, row = lines[2], lines[3]
    assert "| 1.00x |" in dense  # the same in every round: no bracket
    assert "| 2.000 [2.000-2.500] |" in row and "| 5.00x [4.00-6.25] |" in row and "| 1.05x [1.05-1.25] |" in row
    assert row.endswith("| noise |")


# --- a real short run -------------------------------------------------------------------------------


def test_a_real_run_writes_every_round(tmp_path, capsys, tiny_dirs):
    out = tmp_path / "bench"
    code = main(["bench", "--model", str(tiny_dirs["llava-onevision"]), "--frames", "4", "--methods", "sharpv,fastv",
                 "--budgets", "0.25", "--dtype", "float32", "--repeats", "3", "--warmup", "1", "--new-tokens", "1",
                 "--seed", "5", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads((out / "results.json").read_text())
    env, rounds, records = payload["environment"], payload["rounds"], payload["records"]
    assert env["seed"] == 5 and env["repeats"] == 3 and env["warmup"] == 1 and env["threads"] >= 1
    assert len(env["load_average_before"]) == 3 and len(env["load_average_after"]) == 3
    assert env["noise_threshold"] == NOISE_THRESHOLD
    assert [r["warmup"] for r in rounds] == [True, False, False, False]
    cells = [r["cell"] for r in records]
    assert [r["method"] for r in records] == ["dense", "sharpv", "fastv", "ideal"]
    for r in rounds:
        assert sorted(r["order"]) == sorted(cells)
    dense = records[0]
    for r in records:
        raw = r["rounds"]["prefill_seconds"]
        assert len(raw) == 3 and all(s > 0 for s in raw)
        per_round = [d / s for d, s in zip(dense["rounds"]["prefill_seconds"], raw)]
        assert r["prefill_speedup"] == pytest.approx(statistics.median(per_round))
        assert r["spread"]["prefill_speedup"] == pytest.approx([min(per_round), max(per_round)])
        assert r["prefill_seconds"] == pytest.approx(statistics.median(raw))
        assert "flag" in r and "flag_reasons" in r
        if r["method"] != "ideal":
            assert len(r["rounds"]["decode_seconds"]) == 3 and len(r["rounds"]["vision_seconds"]) == 3
    ideal = records[-1]
    for r in records[1:3]:
        per_round = [s / i for s, i in zip(r["rounds"]["prefill_seconds"], ideal["rounds"]["prefill_seconds"])]
        assert r["prefill_vs_ideal"] == pytest.approx(statistics.median(per_round))
    md = (out / "results.md").read_text()
    assert "3 timed rounds after 1 warm-up round" in md and "(seed 5)" in md and "| flag |" in md
    assert md.count(" [") >= 4  # median [min-max] cells
    assert "prefill s" in captured.out
