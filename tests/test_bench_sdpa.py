"""`sharpv bench --sdpa-kernel`: every attention call of the rounds runs inside the chosen kernel,
the choice is recorded, and a kernel the device cannot give is one error line (exit 2). And the
GPU run's methods (bench/gpu/run.sh) make only calls that PyTorch's CUDA flash kernel takes: no
attention mask, ``is_causal`` only where queries and keys have the same length."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sharpv.cli import main
from sharpv.harness.bench import MethodSpec, run_bench, sdpa_context
from sharpv.shapes import synthetic_inputs

#: the methods bench/gpu/run.sh runs (stage 2 forced at the middle layer: 2 of the tiny models' 4)
GPU_METHODS = "dense,sharpv:kv_threshold=2:kv_min_layer=2,sharpv:kv=false,fastv,evs,divprune"


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Every call of F.scaled_dot_product_attention: (mask given, is_causal, q length, kv length,
    flash allowed by the global SDPA flags at the time of the call)."""
    calls = []
    real = F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        calls.append((attn_mask is not None, bool(is_causal), query.shape[-2], key.shape[-2],
                      torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()))
        return real(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                    **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return calls


def test_math_runs_every_call_on_math_and_is_recorded(tmp_path, capsys, tiny_dirs, sdpa_calls):
    out = tmp_path / "bench"
    code = main(["bench", "--model", str(tiny_dirs["llava-onevision"]), "--frames", "4", "--methods",
                 "dense,sharpv:kv=false,fastv", "--budgets", "0.25", "--dtype", "float32", "--repeats", "1",
                 "--warmup", "0", "--new-tokens", "1", "--sdpa-kernel", "math", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sdpa_calls and all(not flash and math for *_, flash, math in sdpa_calls)
    assert torch.backends.cuda.flash_sdp_enabled()  # restored after the run
    assert json.loads((out / "results.json").read_text())["environment"]["sdpa_kernel"] == "math"
    assert "SDPA kernel math (math only)" in (out / "results.md").read_text()


def test_auto_is_the_default_and_restricts_nothing(tmp_path, capsys, tiny_dirs, sdpa_calls):
    out = tmp_path / "bench"
    code = main(["bench", "--model", str(tiny_dirs["llava-onevision"]), "--frames", "4", "--methods", "dense,evs",
                 "--dtype", "float32", "--repeats", "1", "--warmup", "0", "--new-tokens", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sdpa_calls and all(flash and math for *_, flash, math in sdpa_calls)
    assert json.loads((out / "results.json").read_text())["environment"]["sdpa_kernel"] == "auto"


@pytest.mark.parametrize("argv,message", [
    (["--sdpa-kernel", "flash"], "--sdpa-kernel flash is a CUDA kernel and needs --device cuda"),
    (["--sdpa-kernel", "efficient"], "--sdpa-kernel efficient is a CUDA kernel and needs --device cuda"),
    (["--sdpa-kernel", "cudnn"], "--sdpa-kernel must be one of auto, flash, efficient, math, got 'cudnn'"),
    (["--sdpa-kernel", "math", "--long-video"], "--sdpa-kernel applies to the standard bench, not --long-video"),
])
def test_refused_in_one_line(capsys, argv, message):
    code = main(["bench", "--shape", "llava-onevision-0.5b", "--device", "cpu", *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), err


def test_a_call_the_kernel_cannot_run_is_one_error(monkeypatch):
    """A call the kernel refuses stops the bench with a SharpVError naming the cell (PyTorch's
    refusal simulated: on CPU the math kernel takes every call)."""
    import sharpv.harness.bench as bench
    from sharpv.errors import SharpVError

    class Model(torch.nn.Module):
        device = torch.device("cpu")

    def refuse(*args, **kwargs):
        raise RuntimeError("No available kernel. Aborting execution.")

    monkeypatch.setattr(bench, "run_once", refuse)
    run = dict(methods=[], budgets=[0.5], frames=[1], repeats=1, warmup=0, new_tokens=1)
    with pytest.raises(SharpVError, match=r"^--sdpa-kernel math: 1 frames: dense @ -: an attention call cannot run"):
        run_bench(Model(), lambda n: {}, sdpa_kernel="math", **run)
    with pytest.raises(RuntimeError, match="No available kernel"):  # auto: PyTorch's own error, untouched
        run_bench(Model(), lambda n: {}, **run)


def test_sdpa_context_restores_the_flags():
    with sdpa_context("math"):
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled()


@pytest.mark.parametrize("arch", ["llava-onevision", "qwen2.5-vl"])
def test_gpu_run_methods_make_only_flash_calls(arch, tiny_dirs, sdpa_calls):
    """The calls bench/gpu/run.sh makes with --sdpa-kernel flash (both families, bf16, every method and
    budget of the GPU run, the ideal rows, prefill and decode): no mask, causal only when square.
    PyTorch's CUDA flash kernel takes exactly these (besides dtype, head size and hardware, which
    bench/gpu/check.py tries on the GPU itself)."""
    from sharpv.answer import load_model

    model, _ = load_model(tiny_dirs[arch], dtype="bfloat16", device="cpu")
    specs = [MethodSpec.parse(m) for m in GPU_METHODS.split(",")]
    records, _ = run_bench(model, lambda n: synthetic_inputs(model, n, 16), methods=specs, budgets=[0.1, 0.2, 0.3],
                           frames=[8], repeats=1, warmup=1, new_tokens=2)
    assert {r["method_name"] for r in records} == {"dense", "sharpv", "fastv", "evs", "divprune", "ideal"}
    assert any(r["kv_withdraw_layer"] == 2 for r in records if r["method"].startswith("sharpv:kv_threshold"))
    assert sdpa_calls
    bad = [c for c in sdpa_calls if c[0] or (c[1] and c[2] != c[3])]
    assert not bad, f"{len(bad)} of {len(sdpa_calls)} attention calls the flash kernel would refuse: {bad[:3]}"
    assert any(q == 1 for _, _, q, *_ in sdpa_calls) and any(c and q > 1 for _, c, q, *_ in sdpa_calls)
