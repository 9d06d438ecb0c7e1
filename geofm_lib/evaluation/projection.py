"""2-D projections of embeddings for figures (UMAP).
"""

from __future__ import annotations

import os

import numpy as np

from geofm_lib.errors import DataError


def set_threads() -> None:
    """Keep scikit-learn/numba to the cores torch uses (no oversubscription)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


UMAP_MIN_POINTS = 4
"""UMAP's spectral layout needs a few points: with 3 or fewer it fails inside scipy."""


def umap_2d(features: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP of embeddings (cosine metric), seeded. With fewer points than
    ``n_neighbors``, each point's neighbourhood is all the others.

    Raises:
        DataError: fewer than :data:`UMAP_MIN_POINTS` embeddings, with what to raise.
    """
    import umap

    n = len(features)
    if n < UMAP_MIN_POINTS:
        raise DataError(f"a UMAP view needs at least {UMAP_MIN_POINTS} images, these are {n}: "
                        f"raise samples_per_dataset (or val_fraction for a view of the "
                        f"validation split)")
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), min_dist=0.1, metric="cosine",
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(features)
