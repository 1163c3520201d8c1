"""Reading command-line values: ``KEY=VALUE`` settings."""

from __future__ import annotations

from typing import Any


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
