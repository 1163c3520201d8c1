"""What every pruning method provides, and the shared budget semantics.

A method is a configured object applied to a model reversibly (``with method(model): ...`` or
``handle = method.apply(model)`` ... ``handle.remove()``). It may act before the LLM
(:meth:`PruningMethod.select_visual`: which visual tokens the LLM receives, optionally with
replacement features) and/or inside it (:meth:`PruningMethod.layer_policy`). Budgets are counted
the same way for every method: ``keep_ratio`` is the share of visual tokens kept, so results line
up at equal budgets. A pre-LLM method keeps ``budget_total(keep_ratio, T, f) = max(1,
round(keep_ratio * T * f))`` tokens of a video (:func:`sharpv.core.selection.budget_total`): no
video ever loses all its tokens, however small the ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar

import torch

POSITION_MODES = ("original", "compact")


def check_ratio(value: Any, name: str = "keep_ratio", allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be {'None (adaptive) or ' if allow_none else ''}in (0, 1], got {value!r}")


def check_int(value: Any, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class MethodConfig:
    """Settings every method has. ``keep_ratio``: share of visual tokens kept, in (0, 1].
    ``positions``: "original" (kept tokens keep their position ids) or "compact" (renumbered)."""

    keep_ratio: float | None = 0.3
    positions: str = "original"

    def __post_init__(self) -> None:
        check_ratio(self.keep_ratio, allow_none=False)
        check_choice(self.positions, "positions", POSITION_MODES)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VisualSelection:
    """A method's pre-LLM decision for one video: ``keep`` (T, f) bool, and optionally a
    ``transform`` applied to every (T, f, d) feature grid before the kept tokens are taken
    (pooling and merging put window means on the kept representatives)."""

    keep: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None


class PruningMethod:
    """Base class of registered methods. Subclasses set ``name`` and ``config_class`` and override
    :meth:`select_visual` and/or :meth:`layer_policy`."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = MethodConfig
    #: whether ``keep_ratio=None`` means an adaptive mode (the kept share depends on the video):
    #: ``bench`` and ``eval`` run such methods at the budget "adaptive" too (see :meth:`has_adaptive`)
    adaptive: ClassVar[bool] = False
    #: the vision-encoder layer whose attention the method ranks tokens by (negative: from the last
    #: layer feeding the video features), or None. When set, the runtime recomputes that layer's
    #: received attention from its own queries and keys while the video is encoded (the encoder
    #: keeps its SDPA / FlashAttention kernel), maps it to the (T, f) token grid and passes it to
    #: :meth:`select_visual` as ``attention``; the time counts as ``PruningStats.extra_seconds``.
    #: Without it (precomputed video features) ``attention`` is None and the method falls back to
    #: its feature proxy; ``VideoStats.attention_source`` says which was used.
    vision_attention: ClassVar[int | None] = None

    @classmethod
    def has_adaptive(cls, settings: dict) -> bool:
        """Whether this method, with these settings (budget aside), has an adaptive mode; by default
        :attr:`adaptive`. A method whose adaptive mode depends on a setting overrides it."""
        return cls.adaptive

    def __init__(self, config: Any = None, **overrides: Any):
        if config is not None and overrides:
            raise ValueError("pass either a config object or keyword settings, not both")
        if config is not None and not isinstance(config, self.config_class):
            raise ValueError(f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config if config is not None else self.config_class(**overrides)

    def __call__(self, model: torch.nn.Module):
        from sharpv.runtime import AppliedMethod

        return AppliedMethod(model, self)

    apply = __call__

    def select_visual(self, grid: torch.Tensor, spatial: tuple[int, int],
                      attention: torch.Tensor | None = None) -> VisualSelection | None:
        """Pre-LLM selection for one video's (T, f, d) features laid out on a ``spatial`` (h, w)
        grid per frame; None keeps every token. ``attention`` (T, f): the vision-encoder attention
        each token receives, given only to methods that declare :attr:`vision_attention` (and
        only when the video went through the vision tower while the method was applied)."""
        return None

    def layer_policy(self, adapter: Any):
        """``(LayerPolicy, mode)`` to prune inside the LLM, or None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
