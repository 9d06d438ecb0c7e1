"""The percentile bootstrap behind every interval the workspace prints: resample the test items
(images, places) with replacement, recompute the statistic, take the 2.5 and 97.5 percentiles.

One seeded generator draws the ``n_boot`` index vectors in turn, so an interval is the same on
every run with the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np


def resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """``n_boot`` index vectors of ``n`` items drawn with replacement."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, n)


def interval(draws, quantiles=(0.025, 0.975)) -> tuple[float, float]:
    """The percentile interval of bootstrap draws (95 % unless other quantiles are given)."""
    lo, hi = np.quantile(np.asarray(draws, dtype=float), list(quantiles))
    return float(lo), float(hi)


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling items), in the
    values' units; NaN for no values."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return (math.nan, math.nan)
    means = [values[idx].mean() for idx in resamples(values.size, n_boot, seed)]
    return interval(means, ((1 - level) / 2, 1 - (1 - level) / 2))


def bootstrap_stats(stat: Callable[[np.ndarray], dict], n: int, n_boot: int, seed: int,
                    keys) -> dict[str, list[float]]:
    """Intervals of several statistics computed together: ``stat(idx)`` returns a dict that
    holds every key."""
    draws = {k: [] for k in keys}
    for idx in resamples(n, n_boot, seed):
        m = stat(idx)
        for k in keys:
            draws[k].append(m[k])
    return {k: list(interval(v)) for k, v in draws.items()}
