"""Where a result came from, for every record a run writes (the ``provenance`` entry of eval's
``run.json`` and of the ``results.json`` of calibrate, bench and the long-video bench): the sharpv
source it ran, the package versions, the machine and the run's wall time.

- **Source**: in a git checkout (the editable install this repository's runs use), the commit
  (``git rev-parse HEAD``) and whether the package's own source differed from it: ``dirty`` is true
  when a tracked file under ``src/`` or ``pyproject.toml`` was modified or an untracked file sits
  under ``src/``, and ``modified_files`` lists them (changes to docs or results do not count: they do
  not change what ran). Outside a checkout (an installed wheel) the commit is ``None`` and only the
  package version says what ran.
- **Versions**: python and every installed distribution of :data:`PACKAGES` (absent ones are left out),
  read from the installed metadata, so nothing heavy is imported.
- **Wall time**: :class:`Clock` started at the top of a run; :func:`provenance` stamps the UTC start,
  the UTC end and the seconds in between.

Standard library only: the vLLM benchmark's parent process imports it without torch's models.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

#: distributions whose versions a run records when they are installed
PACKAGES = ("torch", "transformers", "numpy", "tokenizers", "safetensors", "av", "pillow", "torchvision",
            "accelerate", "vllm", "lmms-eval")
#: the paths whose changes make a checkout "dirty" for a result: what the run imported and how it was installed
SOURCE_PATHS = ("src", "pyproject.toml")


def checkout_root() -> Path | None:
    """The repository this sharpv was imported from, when it is a git checkout holding ``src/sharpv``
    (the editable install); ``None`` for an installed wheel."""
    root = Path(__file__).resolve().parents[3]
    if (root / ".git").exists() and (root / "src" / "sharpv" / "__init__.py").is_file():
        return root
    return None


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def source(root: Path | None = None) -> dict:
    """``{"sharpv_version", "sharpv_commit", "sharpv_dirty", "sharpv_modified_files"}``; commit and
    dirty are ``None`` outside a git checkout (or without git)."""
    from sharpv import __version__

    out = {"sharpv_version": __version__, "sharpv_commit": None, "sharpv_dirty": None, "sharpv_modified_files": []}
    root = root if root is not None else checkout_root()
    if root is None:
        return out
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        status = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *SOURCE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return out
    # porcelain lines: "XY path" (or "XY old -> new" for renames); the path is what follows the two status letters
    changed = sorted({line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines() if line.strip()})
    out.update(sharpv_commit=commit, sharpv_dirty=bool(changed), sharpv_modified_files=changed)
    return out


def versions(packages: tuple[str, ...] = PACKAGES) -> dict:
    """``{"python": ..., name: version}`` for every installed distribution of ``packages``."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    return {"platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count()}


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: the program's file name and its arguments (``sharpv eval ...``)."""
    argv = sys.argv if argv is None else argv
    return shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else ""


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    """The wall time of a run: started when made; :meth:`stamp` reads it. It also takes the
    :func:`source` when made: a long run's result must name the commit it started on, not the one
    the checkout has moved to by the time it is written."""

    def __init__(self, root: Path | None = None) -> None:
        self.started = time.time()
        self._start = time.perf_counter()
        self.source = source(root)

    def stamp(self) -> dict:
        wall = time.perf_counter() - self._start
        return {"started_utc": _utc(self.started), "finished_utc": _utc(self.started + wall),
                "wall_seconds": round(wall, 1)}


def describe(record: dict) -> str:
    """One sentence for a results.md: what ran (commit, or version outside a checkout), the main
    versions and the wall time."""
    commit = record.get("sharpv_commit")
    if commit:
        changed = record.get("sharpv_modified_files") or []
        what = f"sharpv {commit[:10]}" + (f" with {len(changed)} source file{'s' if len(changed) != 1 else ''} "
                                          "modified" if record.get("sharpv_dirty") else "")
    else:
        what = f"sharpv {record.get('sharpv_version')} (no git checkout)"
    v = record.get("versions") or {}
    parts = [what] + [f"{name} {v[name]}" for name in ("python", "torch", "transformers", "numpy", "vllm") if name in v]
    text = "Ran " + ", ".join(parts)
    if record.get("wall_seconds") is not None:
        text += f"; started {record.get('started_utc')}, wall time {record['wall_seconds']:.0f} s"
    for resumed in record.get("resumed") or []:
        text += "; " + _describe_resumed(resumed)
    return text


def _describe_resumed(resumed: dict) -> str:
    """One clause on what earlier runs of a resumed result did (``EvalState.history``)."""
    who = f" ({resumed['model']})" if resumed.get("model") else ""
    runs = resumed.get("earlier_runs") or []
    text = f"it continued{who} from {resumed['videos_before']} videos done by earlier runs"
    if runs:
        commits = sorted({(r.get("sharpv_commit") or r.get("sharpv_version") or "?")[:10] for r in runs})
        seconds = sum(r.get("wall_seconds") or 0.0 for r in runs)
        text += f" ({len(runs)} recorded, {seconds:.0f} s, sharpv {', '.join(commits)})"
    if resumed.get("unrecorded_videos"):
        text += f", {resumed['unrecorded_videos']} of them by runs whose state did not record commit or wall time"
    return text


def provenance(clock: Clock | None = None, *, packages: tuple[str, ...] = PACKAGES) -> dict:
    """Everything above in one dict, the ``provenance`` entry of a run's ``run.json`` / ``results.json``:
    source (with ``clock``: taken when the run started), versions, machine, the command line and
    (with ``clock``) the run's UTC start, end and wall seconds."""
    out = {**(clock.source if clock is not None else source()), "versions": versions(packages), **machine(),
           "command_line": command_line()}
    if clock is not None:
        out.update(clock.stamp())
    return out
