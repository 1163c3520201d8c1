#!/usr/bin/env bash
# A stand-in for the GPU image on this CPU machine, for bench/gpu/run.sh --dry-run: a Python
# virtualenv DIR that sees this Python's packages (torch and the rest) behind its own, with what the
# GPU image has instead (transformers 5.17.0 and huggingface_hub 1.33.0 from PyPI, and the httpx and
# httpcore hub 1.33 needs), and without what the image lacks of the carried closure (kernels,
# tomlkit, httpx2, httpcore2, truststore, pydantic, pydantic_core, annotated_types,
# typing_inspection: not in /work/.library/device/KINDS.md's package list) or what the run brings
# itself (sharpv, via src/ on PYTHONPATH). Its pip resolves against that view, so the dry run
# installs from the carried wheels what the image would need (docs/benchmark.md, "On a GPU").
#
#   bench/gpu/fake_image.sh /tmp/sharpv-fake-image      # then: run.sh OUT --dry-run --python DIR/bin/python
set -euo pipefail
dir="${1:?usage: fake_image.sh DIR}"
python="${PYTHON:-python3}"
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$dir"
"$python" -m venv "$dir"
view="$dir/image-site"
mkdir -p "$view"
# every entry of this Python's site-packages but the ones the image lacks or the run brings, and pip's own
for entry in "$site"/*; do
  name=$(basename "$entry")
  case "${name,,}" in
    transformers|transformers-*|huggingface_hub|huggingface_hub-*|kernels|kernels-*|tomlkit|tomlkit-*) continue ;;
    httpx2|httpx2-*|httpcore2|httpcore2-*|truststore|truststore-*|sharpv*|__editable__*|*.pth|pip|pip-*) continue ;;
    pydantic|pydantic-*|pydantic_core|pydantic_core-*|annotated_types|annotated_types-*) continue ;;
    typing_inspection|typing_inspection-*) continue ;;
  esac
  ln -s "$entry" "$view/$name"
done
echo "$view" >"$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/image-site.pth"
"$dir/bin/python" -m pip install --quiet --no-deps transformers==5.17.0 huggingface_hub==1.33.0 "httpx<1" "httpcore<2" \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
"$dir/bin/python" -c 'import importlib.metadata as m, torch
print("fake image:", ", ".join(f"{p} {m.version(p)}" for p in ("torch", "transformers", "huggingface_hub", "numpy", "matplotlib")))'
