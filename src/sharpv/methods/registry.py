"""The method registry: built-in methods, methods registered with :func:`register_method`, and
methods of installed packages (the ``sharpv.methods`` entry point group).

Everything that takes a method by name (``create``, ``sharpv answer --method``, ``bench`` and
``eval --methods``, lmms-eval's ``--model_args method=``) reads this registry, so a registered
method runs everywhere with no change to sharpv. Entry points are loaded the first time the
registry is read, not when sharpv is imported; one that fails to load is skipped with one warning
line naming it (a broken plugin never stops sharpv).

A method class needs a ``name`` (lower-case letters, digits and ``_``; it appears in ``--methods``
lists, which use ``,`` and ``:`` as separators) and a dataclass ``config_class`` with the settings
every method has, ``keep_ratio`` and ``positions`` (subclass :class:`~sharpv.methods.base.MethodConfig`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from sharpv.errors import SharpVError
from sharpv.methods.base import PruningMethod

ENTRY_POINT_GROUP = "sharpv.methods"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MethodPluginWarning(UserWarning):
    """An installed package's ``sharpv.methods`` entry point did not load; its methods are missing."""


def check_method_class(cls: Any) -> str:
    """The registry name of ``cls``, or a :class:`SharpVError` saying what a method class lacks."""
    if not (isinstance(cls, type) and issubclass(cls, PruningMethod)):
        raise SharpVError(f"{cls!r} is not a method: subclass sharpv.methods.PruningMethod")
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SharpVError(f"{cls.__name__}.name must be lower-case letters, digits and _ (starting with a letter), got {name!r}")
    config = cls.config_class
    have = {f.name for f in fields(config)} if is_dataclass(config) else set()
    if not {"keep_ratio", "positions"} <= have:
        raise SharpVError(f"{cls.__name__}.config_class must be a dataclass with keep_ratio and positions "
                          "(subclass sharpv.methods.MethodConfig)")
    return name


class MethodRegistry(Mapping):
    """Registry name -> method class, in registration order (built-ins first)."""

    def __init__(self, builtin: list[type[PruningMethod]]):
        self._methods: dict[str, type[PruningMethod]] = {}
        for cls in builtin:
            self._methods[check_method_class(cls)] = cls
        self._builtin = set(self._methods)
        self._entry_points_loaded = False

    # --- Mapping ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> type[PruningMethod]:
        self._load_entry_points()
        return self._methods[name]

    def __iter__(self) -> Iterator[str]:
        self._load_entry_points()
        return iter(list(self._methods))

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._methods)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._methods

    def __repr__(self) -> str:
        return f"MethodRegistry({', '.join(self)})"

    # --- registering --------------------------------------------------------------------------
    def register(self, cls: type[PruningMethod], *, replace: bool = False) -> type[PruningMethod]:
        """Add ``cls`` under ``cls.name``. Registering the same class again does nothing; another
        class under a taken name is refused unless ``replace=True`` (built-ins are never replaced)."""
        name = check_method_class(cls)
        current = self._methods.get(name)
        if current is cls:
            return cls
        if current is not None and (not replace or name in self._builtin):
            what = "a built-in method" if name in self._builtin else f"{current.__module__}.{current.__qualname__}"
            raise SharpVError(f"method name {name!r} is taken by {what}; pick another name"
                              + ("" if name in self._builtin else " or pass replace=True"))
        self._methods[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove a registered (not built-in) method."""
        if name in self._builtin:
            raise SharpVError(f"{name!r} is a built-in method and cannot be removed")
        if self._methods.pop(name, None) is None:
            raise SharpVError(f"no registered method {name!r}")

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = ep.load()
                for cls in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
                    self.register(cls)
            except Exception as exc:  # a broken plugin: say so, keep going
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                warnings.warn(f"the {ENTRY_POINT_GROUP} entry point {ep.name!r} ({ep.value}) was skipped: {reason}",
                              MethodPluginWarning, stacklevel=2)
