"""2-D projections of embeddings for figures (UMAP).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from geofm_lib.errors import DataError


def set_threads() -> None:
    """Keep scikit-learn/numba to the cores torch uses (no oversubscription)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


UMAP_MIN_POINTS = 4
"""UMAP's spectral layout needs a few points: with 3 or fewer it fails inside scipy."""


@functools.cache
def _umap():
    """umap-learn, with its numba kernels compiled once per machine instead of once per process.

    umap-learn compiles most of its kernels (the exact neighbours of a small set, the fuzzy
    graph, the layout's epochs) without numba's on-disk cache, so every process paid the
    compilation on its first UMAP (a 300-point UMAP: 16.0 s on this repository's 2-core CI
    machine), in every run of notebook 06. Caching them (numba's own ``cache=True``
    machinery, ``Dispatcher.enable_caching``) writes the compiled code beside umap's sources
    (``umap/__pycache__``, or numba's user-wide cache where that is read-only), keyed by
    numba on the source file, the argument types and the CPU: a later process loads it (2.0 s
    for the same UMAP) and the layout is bit-identical."""
    import sys

    import umap
    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if name.startswith("umap.") and module is not None:
            for obj in vars(module).values():
                if (isinstance(obj, Dispatcher) and obj.stats.cache_path is None
                        and getattr(obj.py_func, "__module__", "").startswith("umap.")):
                    obj.enable_caching()
    return umap


def umap_2d(features: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP of embeddings (cosine metric), seeded. With fewer points than
    ``n_neighbors``, each point's neighbourhood is all the others.

    Raises:
        DataError: fewer than :data:`UMAP_MIN_POINTS` embeddings, with what to raise.
    """
    umap = _umap()
    n = len(features)
    if n < UMAP_MIN_POINTS:
        raise DataError(f"a UMAP view needs at least {UMAP_MIN_POINTS} images, these are {n}: "
                        f"raise samples_per_dataset (or val_fraction for a view of the "
                        f"validation split)")
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), min_dist=0.1, metric="cosine",
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(features)
