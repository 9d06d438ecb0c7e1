"""Repeats: the seeds of a comparison's fits and the spread of a score across them.

``repeats: N`` (a notebook parameter of 06, 07 and 08) re-runs every fit of a comparison with
the seeds ``seed, seed+1, ..., seed+N-1`` (or a list of seeds); each row keeps the first seed's
fit and its bootstrap interval over test places and adds the mean and the sample standard
deviation across seeds, as Copernicus-Bench reports its tables. The data (labelled subsets,
test places) stay the same across seeds: only the fits' seeds change (random weights, head
initialisation, batch order, augmentation).
"""

from __future__ import annotations

import numpy as np

from geofm_lib.errors import ConfigError


def seeds_of(repeats, seed: int) -> list[int]:
    """The seeds of every fit: ``repeats`` N gives seed, seed+1, ..., seed+N-1; a list is taken
    as it is (distinct whole numbers). The first seed's fit is the row's."""
    if isinstance(repeats, int) and not isinstance(repeats, bool):
        if repeats < 1:
            raise ConfigError(f"repeats: {repeats}; give at least 1 (or a list of seeds)")
        return [seed + k for k in range(repeats)]
    seeds = list(repeats) if isinstance(repeats, list | tuple) else None
    if not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"repeats: {repeats!r}; give a number of fits (e.g. 3) or a list of "
                          f"distinct seeds (e.g. [0, 1, 2])")
    return seeds


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of one score across seeds (sd 0 for one seed)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def cell(mean: float | None, sd: float | None, sign: bool = False) -> str:
    """A table cell "mean ± sd" across seeds ("–" for a row without seeds: a floor)."""
    if mean is None:
        return "–"
    return f"{mean:+.1f} ± {sd:.1f}" if sign else f"{mean:.1f} ± {sd:.1f}"
