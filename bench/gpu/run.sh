#!/usr/bin/env bash
# sharpv bench on a GPU: LLaVA-OneVision-7B and Qwen2.5-VL-7B shapes (random weights), 32 frames,
# bf16, SDPA's flash kernel alone; dense, the ideal rows, SharpV stage 1 and both stages (stage 2
# forced at the middle layer), FastV, EVS and DivPrune at 0.1/0.2/0.3, in interleaved rounds,
# the whole script within --budget seconds (default 450: under 8 minutes). docs/benchmark.md, "On a GPU".
#
#   bench/gpu/run.sh OUT_DIR [--dry-run] [--python PY] [--wheels DIR] [--repeats N] [--warmup N]
#                    [--budget SECONDS] [--shapes A,B] [--commit SHA]
#
# 1. bench/gpu/check.py: Python, torch, the GPU, the flash kernel on the bench's own attention calls.
# 2. bench/gpu/install.py: what the image lacks (transformers 5.25 among them), from the carried
#    wheels (.gpu-wheels/py<python version>, bench/gpu/fetch_wheels.sh), offline, into a folder of
#    its own; the image's environment is left as it was.
# 3. sharpv bench per shape, its repeats fitted to the time left.
# OUT_DIR gets run.log (everything printed), check.json, SHAPE/results.json and SHAPE/results.md for
# each shape and plots.tar (the PNGs): seven files, within what a device call brings back.
#
# --dry-run: the same steps on this CPU with the LLaVA-OneVision-0.5B and Qwen2.5-VL-3B shapes, 4
# frames of 16 tokens, one round, SDPA's math kernel (flash is a CUDA kernel), the wheels for this
# Python: proves the pipeline end to end where no GPU is lent.
set -uo pipefail

usage() { sed -n '7,8p' "$0" | sed 's/^# *//' >&2; exit 2; }
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || usage
out="$1"; shift
root="$(cd "$(dirname "$0")/../.." && pwd)"
dry=0 python=python3 wheels="" repeats="" warmup="" budget="" shapes="" commit=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --python) python="$2"; shift ;;
    --wheels) wheels="$2"; shift ;;
    --repeats) repeats="$2"; shift ;;
    --warmup) warmup="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    --shapes) shapes="$2"; shift ;;
    --commit) commit="$2"; shift ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done
# fixed: seconds a bench takes besides its rounds (imports, building the model, inputs), a guess for
# fitting the repeats; reserve: seconds kept for each shape still to run
if [ "$dry" = 1 ]; then
  device=cpu kernel=math frames=4 tokens=16 new_tokens=2 fixed=60 reserve=200
  shapes="${shapes:-llava-onevision-0.5b,qwen2.5-vl-3b}" repeats="${repeats:-1}" warmup="${warmup:-0}"
  budget="${budget:-1500}"
else
  device=cuda kernel=flash frames=32 tokens=196 new_tokens=16 fixed=40 reserve=120
  shapes="${shapes:-llava-onevision-7b,qwen2.5-vl-7b}" repeats="${repeats:-5}" warmup="${warmup:-1}"
  budget="${budget:-450}"
fi
methods_for() {  # the GPU run's methods; stage 2 forced at the middle layer of shape $1 (random weights)
  echo "dense,sharpv:kv_threshold=2:kv_min_layer=$1,sharpv:kv=false,fastv,evs,divprune"
}

mkdir -p "$out" || { echo "run.sh: cannot create $out" >&2; exit 2; }
out="$(cd "$out" && pwd)"
exec > >(tee -a "$out/run.log") 2>&1
calc() { awk "BEGIN { print ($1) }"; }  # arithmetic with decimals (awk: no bc on every image)
start=$(date +%s.%N)
elapsed() { calc "$(date +%s.%N) - $start"; }
say() { printf '[%6.1f s] %s\n' "$(elapsed)" "$*"; }
die() { say "FAILED: $*"; exit 1; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
export TOKENIZERS_PARALLELISM=false

say "sharpv GPU bench: $([ $dry = 1 ] && echo 'DRY RUN on CPU' || echo 'GPU run'), out $out, budget ${budget} s"
say "sharpv source: ${commit:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo 'commit unknown (no .git; pass --commit)')}"
command -v "$python" >/dev/null || die "no python at '$python'"
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') || die "'$python' does not run"
wheels="${wheels:-$root/.gpu-wheels/py$pyver}"

# 1. what this machine has
say "step 1: checks ($python, Python $pyver, device $device, SDPA kernel $kernel)"
"$python" "$root/bench/gpu/check.py" --device "$device" --sdpa-kernel "$kernel" --out "$out/check.json" \
  || die "check (above)"

# 2. the carried wheels, offline
say "step 2: install from $wheels"
[ -f "$wheels/SHA256SUMS" ] || die "no $wheels/SHA256SUMS: run bench/gpu/fetch_wheels.sh $pyver here and carry ${wheels#$root/}"
(cd "$wheels" && sha256sum --quiet -c SHA256SUMS) || die "a wheel in $wheels does not match its SHA256SUMS"
site="${TMPDIR:-/tmp}/sharpv-gpu-site-py$pyver"
rm -rf "$site"
"$python" "$root/bench/gpu/install.py" --wheels "$wheels" --target "$site" --report "$site.report.json" \
  || die "install (above)"
export PYTHONPATH="$root/src:$site${PYTHONPATH:+:$PYTHONPATH}"

# 3. the benches, their repeats fitted to the time left
IFS=, read -r -a shape_list <<<"$shapes"
per_round=""
status=0
for i in "${!shape_list[@]}"; do
  shape="${shape_list[$i]}"
  layers=$("$python" -c "from sharpv.shapes import SHAPES; print(SHAPES['$shape'].text['num_hidden_layers'])") \
    || die "unknown shape $shape"
  left=$(calc "int($budget - $(elapsed))")
  later=$((${#shape_list[@]} - i - 1))
  limit=$((left - reserve * later))  # never past the budget; each later shape keeps its reserve
  r=$repeats
  if [ -n "$per_round" ]; then  # fit the repeats to this shape's share of the time left, from the rounds so far
    fit=$(calc "int(($left / ($later + 1) - $fixed) / $per_round) - $warmup")
    [ "$fit" -lt "$r" ] && r=$fit
    [ "$r" -lt 2 ] && [ "$repeats" -ge 2 ] && r=2
    [ "$r" -lt 1 ] && r=1
  fi
  if [ "$limit" -lt 30 ]; then
    say "FAILED: $shape: ${limit} s left for it, not enough"; status=1; continue
  fi
  say "step 3.$((i + 1)): $shape ($layers layers, stage 2 forced at layer $((layers / 2))): $r timed rounds after $warmup warm-up, time left $left s, limit $limit s"
  shape_start=$(elapsed)
  timeout --signal=INT --kill-after=10 "$limit" "$python" -m sharpv.cli bench --shape "$shape" \
    --frames "$frames" --tokens-per-frame "$tokens" --methods "$(methods_for $((layers / 2)))" \
    --budgets 0.1,0.2,0.3 --dtype bfloat16 --device "$device" --vision precomputed --sdpa-kernel "$kernel" \
    --repeats "$r" --warmup "$warmup" --new-tokens "$new_tokens" --out "$out/$shape" --overwrite
  code=$?
  took=$(calc "$(elapsed) - $shape_start")
  if [ $code -ne 0 ]; then
    [ $code -eq 124 ] && say "FAILED: $shape ran past its $limit s limit" || say "FAILED: $shape: sharpv bench exit code $code"
    status=1
    continue
  fi
  per_round=$(calc "($took - $fixed) / ($r + $warmup) < 1 ? 1 : ($took - $fixed) / ($r + $warmup)")
  say "$shape done in $(calc "int($took)") s (about $per_round s per round if building and loading took $fixed s)"
done

# plots into one file: a device call brings back at most 8 files
if ls "$out"/*/*.png >/dev/null 2>&1; then
  (cd "$out" && tar -cf plots.tar -- */*.png && rm -f -- */*.png) && say "plots in plots.tar: $(tar -tf "$out/plots.tar" | tr '\n' ' ')"
fi
say "files: $(cd "$out" && find . -type f | sort | tr '\n' ' ')"
[ $status -eq 0 ] && say "done in $(calc "int($(elapsed))") s" || say "done with failures in $(calc "int($(elapsed))") s"
exit $status
