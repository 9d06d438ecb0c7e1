"""Ranking metrics of zero-shot retrieval (seed 000's protocol).

* **R@K (image to text)**: the share of images for which at least one of the top K labels is a
  true label of the image. Images without any true label cannot score and are left out.
* **Chance level**: for an image with m true labels out of n, a random ranking puts at least one
  in the top K with probability ``1 - C(n-m, K) / C(n, K)``; exact, not simulated.
* **95 % interval**: percentile bootstrap over images.
* **Per-class recall** uses the predicted set of an image = its top |y| labels, where |y| is its
  number of true labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from geofm_lib.errors import DataError

KS = (1, 5, 10)


# --- metrics on rankings (pure numpy; unit-tested against hand-computed cases) ------------------

def label_matrix(labels: Sequence[Sequence[str]], vocabulary: Sequence[str]) -> np.ndarray:
    """(N, L) boolean multi-hot matrix: image i carries label j. Labels outside the vocabulary
    are an error."""
    index = {lab: j for j, lab in enumerate(vocabulary)}
    out = np.zeros((len(labels), len(vocabulary)), dtype=bool)
    for i, labs in enumerate(labels):
        for lab in labs:
            if lab not in index:
                raise DataError(f"label {lab!r} of image {i} is not in the vocabulary "
                                 f"({len(vocabulary)} labels); the shards and the catalog "
                                 f"disagree - rebuild the shards")
            out[i, index[lab]] = True
    return out


def rank(scores: np.ndarray) -> np.ndarray:
    """(N, L) label indices sorted by descending score (ties broken by lower index)."""
    return np.argsort(-scores, axis=1, kind="stable")


def hits_at_k(ranking: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: one of the top ``k`` ranked labels is true (seed 000's R@K hit)."""
    top = ranking[:, :k]
    return np.take_along_axis(truth, top, axis=1).any(axis=1)


def recall_at_k(ranking: np.ndarray, truth: np.ndarray, k: int) -> float | None:
    """R@K in percent over images with at least one label; None where k >= number of labels."""
    n_labels = truth.shape[1]
    if k >= n_labels:
        return None
    has = truth.any(axis=1)
    if not has.any():
        return None
    return 100.0 * float(hits_at_k(ranking[has], truth[has], k).mean())


def chance_hit_probability(n_labels: int, n_true: np.ndarray | int, k: int) -> np.ndarray:
    """P(at least one of m true labels in a random top k of n) = 1 - C(n-m, k) / C(n, k)."""
    n_true = np.atleast_1d(np.asarray(n_true, dtype=int))
    total = math.comb(n_labels, k)
    return np.array([1.0 - math.comb(n_labels - m, k) / total for m in n_true])


def chance_recall_at_k(truth: np.ndarray, k: int) -> float | None:
    """Exact chance level of R@K (percent) for these images' label counts."""
    n_labels = truth.shape[1]
    counts = truth.sum(axis=1)
    counts = counts[counts > 0]
    if k >= n_labels or counts.size == 0:
        return None
    return 100.0 * float(chance_hit_probability(n_labels, counts, k).mean())


def text_to_image_recall(scores: np.ndarray, truth: np.ndarray, k: int) -> tuple[float, float]:
    """(R@K, chance) in percent for label prompts retrieving images, over labels present.

    ``scores`` is (N images, L labels). A hit when one of the top k images has the label.
    """
    n = scores.shape[0]
    present = np.flatnonzero(truth.any(axis=0))
    if present.size == 0 or k >= n:
        return (math.nan, math.nan)
    order = np.argsort(-scores[:, present], axis=0, kind="stable")[:k]  # (k, P)
    hit = np.take_along_axis(truth[:, present], order, axis=0).any(axis=0)
    positives = truth[:, present].sum(axis=0)
    chance = 1.0 - np.array([math.comb(n - p, k) / math.comb(n, k) for p in positives])
    return 100.0 * float(hit.mean()), 100.0 * float(chance.mean())


def predicted_sets(ranking: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, L) bool: the top |y_i| labels of each image (its predicted label set)."""
    counts = truth.sum(axis=1)
    pos = np.empty_like(ranking)
    np.put_along_axis(pos, ranking, np.arange(ranking.shape[1])[None, :].repeat(len(ranking), 0),
                      axis=1)
    return pos < counts[:, None]


def per_class_recall(ranking: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall per label in percent (nan where absent), support per label)."""
    pred = predicted_sets(ranking, truth)
    support = truth.sum(axis=0)
    correct = (pred & truth).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, 100.0 * correct / np.maximum(support, 1), np.nan)
    return recall, support


def per_class_chance(truth: np.ndarray) -> np.ndarray:
    """Each label's recall under a random ranking, in percent (nan where absent): a label of an
    image with ``|y|`` of ``n`` labels lands in its top-``|y|`` set with probability
    ``|y| / n``, averaged over the images that have the label."""
    truth = truth.astype(bool)
    per_image = truth.sum(axis=1) / max(truth.shape[1], 1)
    support = truth.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, 100.0 * (truth * per_image[:, None]).sum(axis=0)
                        / np.maximum(support, 1), np.nan)


def average_precision(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,) average precision of each image's label ranking (nan without labels)."""
    order = rank(scores)
    rel = np.take_along_axis(truth, order, axis=1).astype(float)
    cum = np.cumsum(rel, axis=1)
    prec = cum / np.arange(1, truth.shape[1] + 1)[None, :]
    n = truth.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (prec * rel).sum(axis=1) / np.maximum(n, 1), np.nan)
