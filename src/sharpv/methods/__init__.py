"""The method registry: every pruning method under one interface and one budget semantics.

``create("fastv", keep_ratio=0.3)`` builds a configured method; ``with method(model): ...``
applies it reversibly. ``METHODS`` maps registry names to classes, in a stable order.
"""

from __future__ import annotations

from typing import Any

from sharpv.errors import SharpVError
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection
from sharpv.methods.dense import Dense, DenseConfig
from sharpv.methods.dycoke import DyCoke, DyCokeConfig
from sharpv.methods.evs import EVS
from sharpv.methods.fastv import FastV, FastVConfig
from sharpv.methods.pooling import Pooling
from sharpv.methods.random_tokens import RandomConfig, RandomTokens
from sharpv.methods.sharpv import SharpV, SharpVConfig
from sharpv.methods.vidcom2 import VidCom2, VidCom2Config
from sharpv.methods.vtw import VTW, VTWConfig

METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls for cls in (Dense, SharpV, RandomTokens, Pooling, EVS, DyCoke, VidCom2, VTW, FastV)
}


def method_names() -> list[str]:
    return list(METHODS)


def create(name: str, keep_ratio: Any = "default", **settings: Any) -> PruningMethod:
    """A configured method by registry name. ``keep_ratio`` sets the budget the same way for every
    method (omit it for the method's default; None means adaptive where a method has such a mode)."""
    if name not in METHODS:
        raise SharpVError(f"unknown method {name!r}; registered methods: {', '.join(METHODS)}")
    if keep_ratio != "default":
        settings["keep_ratio"] = keep_ratio
    return METHODS[name](**settings)


__all__ = [
    "METHODS", "Dense", "DenseConfig", "DyCoke", "DyCokeConfig", "EVS", "FastV", "FastVConfig", "MethodConfig",
    "Pooling", "PruningMethod", "RandomConfig", "RandomTokens", "SharpV", "SharpVConfig", "VTW", "VTWConfig",
    "VidCom2", "VidCom2Config", "VisualSelection", "create", "method_names",
]
