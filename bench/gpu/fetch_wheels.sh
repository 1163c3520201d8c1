#!/usr/bin/env bash
# Download the wheels of bench/gpu/wheels.txt for one Python version into .gpu-wheels/py<VERSION>
# (ignored by git; the GPU call carries .gpu-wheels/py3.12), write their SHA256SUMS there and print
# every file with its size and sha256. Binary wheels are the manylinux x86-64 ones.
#
#   bench/gpu/fetch_wheels.sh          # for the GPU image: Python 3.12
#   bench/gpu/fetch_wheels.sh 3.11     # for a dry run here (bench/gpu/run.sh --dry-run), this Python
#
# Needs pip and PyPI (here); the GPU machine has no network.
set -euo pipefail
version="${1:-3.12}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$root/.gpu-wheels/py$version"
python="${PYTHON:-python3}"
start=$(date +%s)

rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
grep -v '^\s*#' "$root/bench/gpu/wheels.txt" | grep -v '^\s*$' >"$dest.tmp/requirements.txt"
# --no-deps: the list is the whole closure, pinned; the platforms are those of manylinux x86-64 wheels
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest.tmp" \
  --python-version "$version" --implementation cp --abi "cp${version/./}" --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -r "$dest.tmp/requirements.txt" 2> >(grep -v "^WARNING: Location 'file:" >&2)
wanted=$(wc -l <"$dest.tmp/requirements.txt")
got=$(ls "$dest.tmp"/*.whl | wc -l)
if [ "$got" -ne "$wanted" ]; then
  echo "fetch_wheels: $got wheels for $wanted pinned requirements in $dest.tmp; expected one wheel each" >&2
  exit 1
fi
rm -rf "$dest" && mv "$dest.tmp" "$dest"
(cd "$dest" && sha256sum -- *.whl >SHA256SUMS)
printf '%10s  %-64s  %s\n' bytes sha256 wheel
while read -r sum file; do
  printf '%10d  %s  %s\n' "$(stat -c %s "$dest/$file")" "$sum" "$file"
done <"$dest/SHA256SUMS"
echo "$got wheels, $(du -sb "$dest" | cut -f1) bytes in all, in $dest ($(($(date +%s) - start)) s)"
