#!/usr/bin/env bash
# lmms-eval integration (tests/integrations/test_lmms_eval.py; skipped by the main suite, where lmms-eval is not
# installed). lmms-eval brings ~130 packages, so it gets a virtualenv of its own, built FRESH on every run (only
# pip's download cache is reused): a kept virtualenv hides what pip resolves today for a user installing the
# extra (filelock 4 broke lmms-eval 0.7.3 while CI stayed green on a cached one).
#
# Installed the way docs/integrations.md tells users to on a CPU machine: the CPU torch first, then the extra
# with torch pinned again so that the resolver keeps the CPU wheel (lmms-eval asks only torch>=2.1).
# torchvision 0.28.0 (lmms-eval needs one) is PyPI's CUDA-linked wheel: it imports next to the CPU torch only
# with the test-only shim tests/integrations/torchvision_cpu_shim.py, loaded by a .pth file.
#
# No arguments; run from anywhere (it works in the repository root). Exits non-zero on any failure.
# About 4 minutes to build with a warm pip cache and 4.5 minutes of tests on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

# SHARPV_LMMS_EVAL_VENV=DIR builds it in DIR instead (emptied first, kept afterwards: to look around after a failure)
source .ci/fresh_venv.sh
fresh_venv lmms-eval "${SHARPV_LMMS_EVAL_VENV:-}"
"$py" -m pip install --quiet -e ".[lmms-eval,test]" torch==2.13.0 torchvision==0.28.0
keeps_cpu_torch "the extra"
install_torchvision_shim

echo "lmms-eval virtualenv built in $((SECONDS - start)) s:"
print_versions lmms-eval transformers torch torchvision filelock datasets
# the test file skips itself where lmms-eval does not import: here that must be an error, not 11 skips
"$py" -c "import lmms_eval.evaluator, lmms_eval.models, sharpv.integrations.lmms_eval.model"

"$py" -m pytest -p no:cacheprovider tests/integrations/test_lmms_eval.py
echo "lmms-eval integration: $((SECONDS - start)) s in all"
