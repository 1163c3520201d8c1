"""Method configuration files: a method and its settings as JSON, e.g. what ``sharpv calibrate`` writes.

::

    {"method": "sharpv",
     "settings": {"ratio_scale": 2.83, "spatial_weight": 0.5, "kv": true, "kv_threshold": 0.4},
     "label": "sharpv[calibrated]",
     "calibration": {"target": "accuracy=0.98", "...": "provenance, not read"}}

``method`` is a registered method name; ``settings`` (optional) are its config fields, checked
exactly as ``sharpv.create(method, **settings)`` checks them (``keep_ratio`` included: absent means
the method's default, null SharpV's adaptive mode); ``label`` (optional) names the method in
``eval`` and ``bench`` tables; ``calibration`` (optional) is provenance and is not read. Any other
key is refused, so a misspelt one never goes unnoticed.

:func:`from_config` gives the configured method, the same object ``create`` gives for the same
settings; ``sharpv answer --config FILE`` and ``--config FILE`` of ``eval`` and ``bench`` read
files through :func:`load_config`. Every problem (a missing file, bad JSON, an unknown method or
setting, a bad value) is a one-line :class:`~sharpv.errors.SharpVError` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sharpv.errors import SharpVError

#: the keys a configuration file may have
CONFIG_KEYS = ("method", "settings", "label", "calibration")


@dataclass(frozen=True)
class MethodFile:
    """A checked method configuration (see the module docstring); :meth:`build` makes the method."""

    method: str
    settings: dict = field(default_factory=dict)
    label: str | None = None
    calibration: dict | None = None
    source: str = "config"  # where it came from, for messages
    path: str | None = None  # the file it was read from (None: a dict)

    def build(self):
        from sharpv.methods import create

        try:
            return create(self.method, **self.settings)
        except (TypeError, ValueError) as exc:
            raise SharpVError(f"{self.source}: {_first_line(exc)}") from None

    @property
    def display_label(self) -> str:
        """The label for tables: ``label``, else ``METHOD[file stem]`` (``METHOD[config]`` for a dict)."""
        if self.label:
            return self.label
        stem = Path(self.path).stem if self.path else "config"
        return f"{self.method}[{stem}]"

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"method": self.method, "settings": dict(self.settings)}
        if self.label:
            out["label"] = self.label
        if self.calibration is not None:
            out["calibration"] = self.calibration
        return out


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read(path: Path) -> Any:
    where = f"config file {path}"
    if not path.exists():
        raise SharpVError(f"{where} does not exist; pass a JSON file such as the config.json `sharpv calibrate` writes")
    if path.is_dir():
        hint = f" (e.g. {path / 'config.json'})" if (path / "config.json").is_file() else ""
        raise SharpVError(f"{where} is a folder; pass the JSON file{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SharpVError(f"{where} is not a UTF-8 text file; pass a JSON file") from None
    except OSError as exc:
        raise SharpVError(f"{where} cannot be read ({_first_line(exc)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SharpVError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def load_config(source: "str | Path | Mapping[str, Any]") -> MethodFile:
    """Read and check a method configuration: a JSON file's path, or the decoded object itself.

    Every key and value is checked (the method is built once), so a :class:`MethodFile` that comes
    back builds without error. Problems raise a one-line :class:`SharpVError`."""
    path = None
    if isinstance(source, Mapping):
        raw, where = source, "config"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        raw, where = _read(path), f"config file {path}"
    else:
        raise SharpVError(f"a config is a JSON file's path or a dict, got {type(source).__name__}")
    if not isinstance(raw, Mapping):
        raise SharpVError(f"{where} must be a JSON object with \"method\" and \"settings\", got {type(raw).__name__}")
    unknown = [k for k in raw if k not in CONFIG_KEYS]
    if unknown:
        raise SharpVError(f"{where}: unknown key {unknown[0]!r}; a config has {', '.join(CONFIG_KEYS)}")
    from sharpv.methods import METHODS

    name = raw.get("method")
    if not isinstance(name, str) or not name:
        raise SharpVError(f"{where}: \"method\" must name a registered method ({', '.join(METHODS)})")
    if name not in METHODS:
        raise SharpVError(f"{where}: unknown method {name!r}; registered methods: {', '.join(METHODS)}")
    settings = raw.get("settings", {})
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise SharpVError(f"{where}: \"settings\" must be a JSON object of {name}'s settings, got {type(settings).__name__}")
    known = [f.name for f in fields(METHODS[name].config_class)]
    for key in settings:
        if key not in known:
            raise SharpVError(f"{where}: {name} has no setting {key!r}; its settings: {', '.join(known)}")
    label = raw.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip() or "\n" in label):
        raise SharpVError(f"{where}: \"label\" must be a non-empty one-line string, got {label!r}")
    calibration = raw.get("calibration")
    if calibration is not None and not isinstance(calibration, Mapping):
        raise SharpVError(f"{where}: \"calibration\" must be a JSON object (provenance), got {type(calibration).__name__}")
    config = MethodFile(name, dict(settings), label.strip() if label else None,
                        dict(calibration) if calibration is not None else None, where,
                        str(path) if path is not None else None)
    config.build()  # every value checked now
    return config


def from_config(source: "str | Path | Mapping[str, Any]"):
    """The configured :class:`~sharpv.methods.PruningMethod` of a config file (or its decoded
    dict): ``with sharpv.from_config("runs/cal/config.json")(model): ...``."""
    return load_config(source).build()


def write_config(path: Path, method: str, settings: dict, *, label: str | None = None,
                 calibration: dict | None = None) -> Path:
    """Write a config file :func:`load_config` reads back (checked before writing)."""
    config = load_config({"method": method, "settings": settings, **({"label": label} if label else {}),
                          **({"calibration": calibration} if calibration is not None else {})})
    path = Path(path)
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path
