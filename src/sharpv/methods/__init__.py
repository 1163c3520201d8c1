"""The method registry: every pruning method under one interface and one budget semantics.

``create("fastv", keep_ratio=0.3)`` builds a configured method; ``with method(model): ...``
applies it reversibly. ``METHODS`` maps registry names to classes, in a stable order: the built-ins,
then methods added with :func:`register_method` or by installed packages through the
``sharpv.methods`` entry point group (:mod:`sharpv.methods.registry`).

Your own method::

    from dataclasses import dataclass
    import torch
    from sharpv.methods import MethodConfig, PruningMethod, VisualSelection, register_method
    from sharpv.core.selection import budget_total

    @register_method
    class FirstTokens(PruningMethod):
        # keeps the video's first tokens, as many as the budget allows
        name = "first_tokens"
        config_class = MethodConfig

        def select_visual(self, grid, spatial):
            t, f = grid.shape[:2]
            keep = torch.zeros(t * f, dtype=torch.bool)
            keep[: budget_total(self.config.keep_ratio, t, f)] = True  # exactly the shared budget
            return VisualSelection(keep.view(t, f))

``sharpv answer --method first_tokens``, ``--methods first_tokens`` in ``bench`` and ``eval``, and
lmms-eval's ``--model_args method=first_tokens`` then work, as long as the module that registers it
is imported: in a package, point an entry point at the class (``[project.entry-points."sharpv.methods"]
first_tokens = "my_pkg.methods:FirstTokens"``) and sharpv loads it when the registry is first read.
"""

from __future__ import annotations

from typing import Any

from sharpv.errors import SharpVError
from sharpv.methods.base import MethodConfig, PruningMethod, VisualSelection
from sharpv.methods.dense import Dense, DenseConfig
from sharpv.methods.divprune import DivPrune, DivPruneConfig
from sharpv.methods.dycoke import DyCoke, DyCokeConfig
from sharpv.methods.evs import EVS
from sharpv.methods.fastv import FastV, FastVConfig
from sharpv.methods.fastvid import FastVID, FastVIDConfig
from sharpv.methods.flashvid import FlashVID, FlashVIDConfig
from sharpv.methods.holitom import HoliTom, HoliTomConfig
from sharpv.methods.pooling import Pooling
from sharpv.methods.pyramiddrop import PyramidDrop, PyramidDropConfig
from sharpv.methods.random_tokens import RandomConfig, RandomTokens
from sharpv.methods.sharpv import SharpV, SharpVConfig
from sharpv.methods.vidcom2 import VidCom2, VidCom2Config
from sharpv.methods.visionzip import VisionZip, VisionZipConfig
from sharpv.methods.vtw import VTW, VTWConfig

from sharpv.methods.registry import MethodPluginWarning, MethodRegistry
from sharpv.methods.config_file import MethodFile, from_config, load_config, write_config

METHODS = MethodRegistry([Dense, SharpV, RandomTokens, Pooling, EVS, DyCoke, VidCom2, DivPrune, VisionZip, FastVID,
                          FlashVID, HoliTom, VTW, FastV, PyramidDrop])


def register_method(cls: type[PruningMethod] | None = None, *, replace: bool = False):
    """Class decorator (``@register_method`` or ``@register_method(replace=True)``) adding a method
    to the registry under its ``name``; also callable as ``register_method(cls)``."""
    if cls is None:
        return lambda c: METHODS.register(c, replace=replace)
    return METHODS.register(cls, replace=replace)


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
    "METHODS", "MethodPluginWarning", "MethodRegistry", "register_method", "Dense", "DenseConfig",
    "DivPrune", "DivPruneConfig", "FastVID", "FastVIDConfig", "FlashVID", "FlashVIDConfig", "HoliTom", "HoliTomConfig",
    "PyramidDrop", "PyramidDropConfig", "VisionZip", "VisionZipConfig", "DyCoke", "DyCokeConfig", "EVS", "FastV", "FastVConfig", "MethodConfig",
    "Pooling", "PruningMethod", "RandomConfig", "RandomTokens", "SharpV", "SharpVConfig", "VTW", "VTWConfig",
    "VidCom2", "VidCom2Config", "VisualSelection", "create", "method_names",
    "MethodFile", "from_config", "load_config", "write_config",
]
