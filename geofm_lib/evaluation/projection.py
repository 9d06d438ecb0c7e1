"""2-D projections of embeddings for figures (UMAP).
"""

from __future__ import annotations

import os

import numpy as np


def set_threads() -> None:
    """Keep scikit-learn/numba to the cores torch uses (no oversubscription)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


def umap_2d(features: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP of embeddings (cosine metric), seeded."""
    import umap

    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, metric="cosine",
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(features)
