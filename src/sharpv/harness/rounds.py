"""Interleaved rounds, the arithmetic both benchmarks share (``sharpv bench`` in
:mod:`sharpv.harness.bench`, the vLLM one in :mod:`sharpv.integrations.vllm.bench`): the order a
round runs its cells in (shuffled per round by ``random.Random(seed)``), ratios taken within a
round, median [min, max] over the rounds, the relative spread behind the noise flags, and how a
figure with its spread is written. Standard library only.
"""

from __future__ import annotations

import os
import random
import statistics
from typing import Sequence, TypeVar

T = TypeVar("T")

#: noise flag: a series that varies across the timed rounds by more than this share of its
#: median, (max - min) / median
NOISE_THRESHOLD = 0.20
#: seed of the shuffled round order when none is given
DEFAULT_SEED = 0


def shuffled(rng: random.Random, items: Sequence[T]) -> list[T]:
    """``items`` in a new order drawn from ``rng`` (one ``rng.sample`` call: the same seed, the same
    sequence of orders)."""
    return rng.sample(list(items), len(items))


def round_orders(items: Sequence[T], rounds: int, seed: int = DEFAULT_SEED) -> list[list[T]]:
    """The order of each of ``rounds`` rounds: every item once, shuffled per round by
    ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [shuffled(rng, items) for _ in range(rounds)]


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round by round, ``numerators[k] / denominators[k]``: a ratio within each round."""
    if len(numerators) != len(denominators):
        raise ValueError(f"ratios: {len(numerators)} rounds against {len(denominators)}")
    return [n / d for n, d in zip(numerators, denominators)]


def median_spread(series: Sequence[float]) -> tuple[float, list[float]]:
    """The median of a per-round series and its [min, max]."""
    return float(statistics.median(series)), [float(min(series)), float(max(series))]


def relative_spread(values: Sequence[float]) -> float | None:
    """(max - min) / median; None for fewer than two values (no spread to speak of)."""
    if len(values) < 2:
        return None
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else None


def overlap(spans: Sequence[Sequence[float]]) -> bool:
    """Whether every [min, max] in ``spans`` shares a point with every other (the rounds cannot
    order them)."""
    return all(a[0] <= b[1] and b[0] <= a[1] for i, a in enumerate(spans) for b in spans[i + 1:])


def with_spread(fmt: str, value: float, spread: Sequence[float] | None, scale: float = 1) -> str:
    """``value`` in ``fmt``, followed by `` [min-max]`` when the rounds spread at that precision (a
    trailing ``x`` is written once, after the median)."""
    text = fmt.format(value * scale)
    if spread:
        lo, hi = (fmt.format(v * scale).rstrip("x") for v in spread)
        if lo != hi:
            text += f" [{lo}-{hi}]"
    return text


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
