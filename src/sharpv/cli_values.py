"""Reading and checking command-line values: ``KEY=VALUE`` settings, numbers, paths.

Every check raises :class:`SharpVError` with a one-line message that names the option; the CLI
prints it as ``error: ...`` and exits with code 2. They are cheap and run before any model loads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from sharpv.errors import SharpVError


def parse_value(raw: str) -> Any:
    """A setting's value: int, float, bool, None, a tuple of numbers written with slashes
    (``layers=6/12/18``: commas already separate methods and lmms-eval's model_args) or text."""
    if "/" in raw:
        parts = [parse_value(p) for p in raw.split("/")]
        if all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in parts):
            return tuple(parts)
        return raw
    lowered = raw.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_settings(pairs: Iterable[str], where: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict; a malformed pair is an error naming ``where`` it came from."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise SharpVError(f"{where} takes KEY=VALUE, got {pair!r}")
        out[key] = parse_value(raw)
    return out


def check_at_least(value: float | None, flag: str, low: float) -> None:
    """``value`` (None: not given) is at least ``low``; a NaN is refused too."""
    if value is not None and not value >= low:
        raise SharpVError(f"{flag} must be at least {low}, got {value}")


def check_ratio(value: float | None, flag: str) -> None:
    """A share in (0, 1] (None: not given); NaN and infinities are refused."""
    if value is not None and not 0.0 < value <= 1.0:
        raise SharpVError(f"{flag} must be in (0, 1], got {value}")


def check_text(value: str, name: str) -> str:
    """Non-blank text, stripped."""
    if not value.strip():
        raise SharpVError(f"{name} is empty; ask something about the video")
    return value.strip()


def check_model_dir(path: Path | None, flag: str = "--model") -> None:
    """A local checkpoint folder: exists, is a folder and holds config.json (None: the shipped model)."""
    if path is None:
        return
    if not path.exists():
        raise SharpVError(f"{flag} {path} does not exist; pass a local checkpoint folder (see `sharpv tiny-model`)")
    if not path.is_dir():
        raise SharpVError(f"{flag} {path} is a file; pass the checkpoint's folder (the one with config.json)")
    if not (path / "config.json").is_file():
        raise SharpVError(f"{flag} {path} has no config.json; pass a transformers checkpoint folder (see `sharpv tiny-model`)")


def resolve_models(values: list[str], flag: str = "--model") -> list[tuple[str, Path]]:
    """``--model`` values -> (label, checkpoint folder): a shipped model's name (``mixed-dropout``,
    ``uniform-dropout``; write ``./NAME`` for a local folder of that name) or a local checkpoint
    folder (labelled as given). None given: the default shipped model. Raises ``SharpVError`` on a
    value that is neither, and on a value given twice."""
    from sharpv.synthetic.model import DEFAULT_MODEL, SHIPPED_MODELS, shipped_model_path

    if not values:
        return [(DEFAULT_MODEL, shipped_model_path())]
    out: list[tuple[str, Path]] = []
    for value in values:
        value = str(value)
        if value in (label for label, _ in out):
            raise SharpVError(f"{flag} {value} is given twice; pass each model once")
        if value in SHIPPED_MODELS:
            out.append((value, shipped_model_path(value)))
            continue
        built = _built_model(value, flag)
        if built is not None:
            out.append((value, built))
            continue
        path = Path(value)
        if not path.exists():
            raise SharpVError(f"{flag} {value} does not exist; pass a local checkpoint folder or a shipped model name "
                              f"({', '.join(SHIPPED_MODELS)})")
        check_model_dir(path, flag)
        out.append((value, path))
    return out


def _built_model(value: str, flag: str) -> Path | None:
    """The folder ``sharpv model build NAME`` writes by default, for a ``--model NAME`` that names a
    buildable model (``./NAME`` for a local folder of that name); refuses when it is not built yet."""
    from sharpv.pretrained.assemble import MARKER, default_out
    from sharpv.pretrained.sources import MODELS

    if value not in MODELS:
        return None
    folder = default_out(value)
    if not (folder / MARKER).is_file():
        raise SharpVError(f"{flag} {value} is not built yet; run `sharpv model build {value}` first (or pass ./{value} "
                          "for a local folder of that name)")
    return folder


def resolve_model(value: str | Path | None, flag: str = "--model") -> Path | None:
    """One ``--model`` value -> its checkpoint folder (a shipped model's name or a local folder, as
    :func:`resolve_models`); None stays None (the command's default model)."""
    return None if value is None else resolve_models([str(value)], flag)[0][1]


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_output_dir(path: Path | None, name: str) -> None:
    """A folder we can create and write into: not a file, under no file, and really writable (the
    folders are created and a file written and removed there, then the folders made here are removed
    again, so that a destination that cannot be written is one error line before any model loads and
    nothing is left behind)."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise SharpVError(f"{name} {path} is a file; pass a folder")
    _check_writable(path, name, path)


def check_output_file(path: Path, name: str, suffixes: tuple[str, ...]) -> None:
    """A file path we can write: with one of ``suffixes``, not a folder, under no file, its folder
    writable (probed as :func:`check_output_dir` does) and, when it exists, the file itself."""
    if path.is_dir():
        raise SharpVError(f"{name} {path} is a folder; pass a file path ending in {' or '.join(suffixes)}")
    if path.suffix.lower() not in suffixes:
        raise SharpVError(f"{name} must end in {' or '.join(suffixes)}, got {path.name!r}")
    _check_writable(path.parent, name, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise SharpVError(f"{name} {path} is not writable; pass a path you can write to")


def check_overwrite(folder: Path | None, names: Iterable[str], overwrite: bool, flag: str) -> None:
    """Refuse to replace a file the command would write into ``folder`` (``names``) when one is
    already there and ``--overwrite`` is not given: nothing is written then."""
    if folder is None or overwrite or not folder.is_dir():
        return
    found = [n for n in names if (folder / n).exists()]
    if found:
        more = f" (and {len(found) - 1} more of the files it writes)" if len(found) > 1 else ""
        raise SharpVError(f"{flag} {folder} already holds {found[0]}{more}; pass another folder or --overwrite to "
                          "replace them (nothing was written)")


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _check_writable(folder: Path, name: str, shown: Path) -> None:
    """``folder`` can be created (if missing) and written: tried for real, then undone."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise SharpVError(f"{name} {shown}: {existing} is a file, not a folder; pass a path you can write to")
    missing = [p for p in (folder.absolute(), *folder.absolute().parents) if not p.exists()][::-1]  # outermost first
    created: list[Path] = []
    try:
        for part in missing:
            try:
                part.mkdir()
            except FileExistsError:  # made meanwhile by someone else: theirs, not ours to remove
                continue
            except OSError as exc:
                raise SharpVError(f"{name} {shown}: cannot create {part} ({_why(exc)}); pass a folder you can "
                                  "write to") from None
            created.append(part)
        try:
            handle, probe = tempfile.mkstemp(prefix=".sharpv-write-test-", dir=folder)
        except OSError as exc:
            raise SharpVError(f"{name} {shown}: cannot write into {folder} ({_why(exc)}); pass a folder you can "
                              "write to") from None
        os.close(handle)
        os.unlink(probe)
    finally:
        for part in reversed(created):
            try:
                part.rmdir()
            except OSError:
                pass
