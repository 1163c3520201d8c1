"""Reading command-line values: ``KEY=VALUE`` settings."""

from __future__ import annotations

from typing import Any, Iterable

from sharpv.errors import SharpVError


def parse_value(raw: str) -> Any:
    """A setting's value: int, float, bool, None or text."""
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
