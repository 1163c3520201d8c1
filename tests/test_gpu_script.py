"""bench/gpu/ (the GPU bench script, docs/benchmark.md "On a GPU") without a GPU: its argument
handling, the machine check on CPU (and its one-line refusal of a CUDA run where there is none)
and the installer's refusal of an empty wheel folder. The whole pipeline is proven by
``bench/gpu/run.sh OUT --dry-run`` (too slow for the suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

GPU = Path(__file__).resolve().parents[1] / "bench" / "gpu"


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [[], ["--dry-run"], ["OUT", "--no-such-option"]])
def test_run_sh_usage(argv, tmp_path):
    argv = [str(tmp_path / a) if a == "OUT" else a for a in argv]
    done = run("bash", str(GPU / "run.sh"), *argv)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "run.sh OUT_DIR [--dry-run]" in done.stderr
    assert not (tmp_path / "OUT").exists()  # refused before anything is written


def test_run_sh_stops_at_a_missing_python(tmp_path):
    done = run("bash", str(GPU / "run.sh"), str(tmp_path / "out"), "--dry-run", "--python", "/no/such/python")
    assert done.returncode == 1
    assert "FAILED: no python at '/no/such/python'" in done.stdout
    assert "FAILED" in (tmp_path / "out" / "run.log").read_text()


def test_run_sh_stops_without_the_wheels(tmp_path):
    """No carried wheels: the run stops after the check, naming the fetch command."""
    done = run("bash", str(GPU / "run.sh"), str(tmp_path / "out"), "--dry-run", "--python", sys.executable,
               "--wheels", str(tmp_path / "none"))
    assert done.returncode == 1, done.stdout
    assert "checks passed" in done.stdout
    assert f"FAILED: no {tmp_path / 'none'}/SHA256SUMS: run bench/gpu/fetch_wheels.sh" in done.stdout
    assert (tmp_path / "out" / "check.json").is_file()


def test_check_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    done = run(sys.executable, str(GPU / "check.py"), "--device", "cpu", "--sdpa-kernel", "math", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    facts = json.loads(out.read_text())
    assert facts["torch"] == torch.__version__
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(facts["sdpa"]["math"]) == {"prefill", "decode"}
    assert facts["packages"]["torch"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is")
def test_check_refuses_cuda_without_a_gpu(tmp_path):
    done = run(sys.executable, str(GPU / "check.py"), "--device", "cuda", "--sdpa-kernel", "flash")
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("check failed:")]
    assert len(failed) == 1 and "sees no CUDA device" in failed[0], done.stdout


def test_install_refuses_an_empty_wheel_folder(tmp_path):
    (tmp_path / "wheels").mkdir()
    done = run(sys.executable, str(GPU / "install.py"), "--wheels", str(tmp_path / "wheels"), "--target",
               str(tmp_path / "site"))
    assert done.returncode == 1
    assert done.stdout.strip().startswith("install failed: no wheels in")
    assert not (tmp_path / "site").exists()


def test_wheel_list_is_pinned_and_leaves_torch_to_the_image():
    pins = [line for line in (GPU / "wheels.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert pins and all("==" in p for p in pins)
    names = {p.split("==")[0].lower().replace("-", "_") for p in pins}
    assert "transformers" in names and not names & {"torch", "av", "numpy"}
    assert len(names) == len(pins)  # one version of each: two would stop the install


def test_run_sh_runs_the_methods_whose_calls_are_checked():
    """tests/test_bench_sdpa.py checks that the GPU run's methods make only calls the flash kernel
    takes: they must be the methods run.sh runs."""
    sdpa_test = (Path(__file__).parent / "test_bench_sdpa.py").read_text()
    GPU_METHODS = next(l for l in sdpa_test.splitlines() if l.startswith("GPU_METHODS = ")).split('"')[1]
    script = (GPU / "run.sh").read_text()
    line = next(l for l in script.splitlines() if l.strip().startswith('echo "dense,'))
    assert line.strip() == f'echo "{GPU_METHODS.replace("kv_min_layer=2", "kv_min_layer=$1")}"'
