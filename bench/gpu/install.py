"""Install what sharpv bench needs and the image lacks, offline, into a folder of its own.

1. The requirements are sharpv's runtime dependencies (pyproject.toml) but torch (the image's CUDA
   build stays) and av (``sharpv bench --vision precomputed`` decodes no video).
2. pip resolves them against the image's installed packages and the carried wheels alone
   (``pip install --dry-run --no-index --find-links WHEELS --report``): what the image has at a
   version that satisfies them stays; what it lacks or has too old (transformers 5.17 on the
   GPU image: sharpv needs 5.20 to 5.25) comes from the wheels.
3. Those wheels, and only those, are installed with ``--no-deps --target TARGET``; nothing of the
   image's own environment changes. The run puts ``src`` and TARGET first on PYTHONPATH.
4. A fresh interpreter with that path imports transformers and sharpv's CLI and checks that the
   transformers it gets satisfies sharpv's requirement.

Standard library only (the image's pip does the work). Prints one line per step with its time; a
failing step prints one line ``install failed: ...`` and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
#: sharpv dependencies the run does not install: the image's CUDA torch, and PyAV (no video decoding)
SKIP = ("torch", "av")


def fail(message: str) -> None:
    print(f"install failed: {message}", flush=True)
    sys.exit(1)


def requirements() -> list[str]:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in deps if re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() not in SKIP]


def pip_env() -> dict:
    """pip without this machine's configuration (index, find-links, constraints): offline, the wheels alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.pop("PYTHONPATH", None)
    return env


def pip(*args: str, what: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "pip", *args], env=pip_env(), capture_output=True, text=True)
    if done.returncode != 0:
        lines = [l for l in (done.stderr + done.stdout).splitlines() if l.strip() and not l.startswith("WARNING")]
        errors = [l for l in lines if l.startswith("ERROR")] or lines or [f"exit code {done.returncode}"]
        fail(f"{what}: {errors[0].removeprefix('ERROR: ')}" + (f" ({errors[1].removeprefix('ERROR: ')})"
                                                             if len(errors) > 1 else ""))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", required=True, type=Path)
    parser.add_argument("--target", required=True, type=Path)
    parser.add_argument("--report", type=Path, help="write pip's resolution report here")
    args = parser.parse_args()
    start = time.perf_counter()
    if not any(args.wheels.glob("*.whl")):
        fail(f"no wheels in {args.wheels}: run bench/gpu/fetch_wheels.sh "
             f"{sys.version_info.major}.{sys.version_info.minor} where PyPI is reachable, and carry the folder")
    reqs = requirements()
    print(f"requirements (pyproject.toml, less {', '.join(SKIP)}): {' '.join(reqs)}")
    report = args.report or args.target.with_suffix(".report.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    pip("install", "--dry-run", "--quiet", "--no-index", "--find-links", str(args.wheels), "--report", str(report),
        *reqs, what="pip could not satisfy sharpv's requirements from the image and the carried wheels")
    chosen = json.loads(report.read_text())["install"]
    wheels = []
    for item in chosen:
        url = item["download_info"]["url"]
        path = Path(unquote(urlparse(url).path))
        if urlparse(url).scheme != "file" or not path.is_file():
            fail(f"pip chose {url}, not a carried wheel")
        wheels.append(path)
    from importlib import metadata

    def had(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    print(f"resolved in {time.perf_counter() - start:.1f} s: {len(wheels)} of {len(list(args.wheels.glob('*.whl')))} "
          "carried wheels needed (name: image's version -> installed)")
    for item in chosen:
        meta = item["metadata"]
        print(f"  {meta['name']}: {had(meta['name'])} -> {meta['version']}")
    if wheels:
        args.target.mkdir(parents=True, exist_ok=True)
        pip("install", "--quiet", "--no-deps", "--no-index", "--upgrade", "--target", str(args.target),
            *map(str, wheels), what=f"installing into {args.target}")
    print(f"installed into {args.target} in {time.perf_counter() - start:.1f} s")
    check = (
        "import sys, re, transformers, huggingface_hub, sharpv.cli, sharpv.harness.bench_job\n"
        "print(f'transformers {transformers.__version__} from {transformers.__file__}')\n"
        "print(f'huggingface_hub {huggingface_hub.__version__}, sharpv from {sharpv.cli.__file__}')\n"
        "from packaging.requirements import Requirement\n"
        f"spec = [Requirement(r) for r in {reqs!r} if r.startswith('transformers')][0].specifier\n"
        "sys.exit(0 if transformers.__version__ in spec else f'transformers {transformers.__version__} is not {spec}')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(args.target)]))
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [l for l in done.stderr.strip().splitlines() if l.strip()]
        fail(f"with {args.target} on the path: {lines[-1] if lines else done.returncode}")
    print(done.stdout.strip())
    print(f"install and import check done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
