"""Floors under every comparison: what a predictor scores that learnt nothing from the images.

A baseline is only worth beating when it does better than these; one whose interval reaches
its floor is **at the floor** (:func:`at_floor`), and a margin over it says nothing about the
pretrained encoder. Every floor is fitted on the training targets only (no test information)
and scored on the same test items, with the same metric and bootstrap, as the rows it sits
under:

* **majority class** (segmentation, single-label classification): the most frequent training
  class predicted for every test pixel or place. On tree masks that are 69 % "not tree" it
  scores OA 69 and mean IoU about 35, which is what a segmenter that never predicts a tree
  shows.
* **training mean** (tree density): the mean training cover predicted for every pixel; its R^2
  on the test pixels is at or below 0.
* **label prior** (multi-label F2): every test place gets the same label set, the labels whose
  training frequency reaches a threshold chosen on the training labels to maximise F2 micro
  (0.5, the probes' threshold, among the candidates). With F2's weight on recall, a prior
  that names the common labels everywhere scores well above 0.
* **random convolutional features** (:func:`rcf_features`, MOSAIKS; torchgeo-bench reports it
  as RCF): a baseline rather than a floor, fed to the same probe as the encoders' features.

``at_floor`` and :func:`strongest` decide which baseline a headline difference is taken
against: the strongest fair one, never a degenerate one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from geofm_lib.evaluation.bootstrap import bootstrap_stats
from geofm_lib.evaluation.probes import multilabel_metrics
from geofm_lib.evaluation.segmentation import evaluate_density, evaluate_masks

RCF_FEATURES = 512  # features of the RCF baseline (256 filters, each with + and - ReLU)
RCF_KERNEL = 3


@dataclass
class Floor:
    """One floor: what it predicts (``what``), its scores with 95 % intervals over the same
    test items as the rows it sits under, and the label or class it predicts."""

    name: str
    what: str
    scores: dict
    ci: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        return asdict(self)


def _train_pixels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    return y[y >= 0].astype(np.int64)


def majority_class_masks(y_train: np.ndarray, y_test: np.ndarray, classes: list[str],
                         n_boot: int = 300, seed: int = 0) -> Floor:
    """The majority-class segmenter: the most frequent class of the training pixels (-1 left
    out) predicted for every test pixel, scored like a segmenter (OA, mean IoU, per-class IoU,
    boundary F1, intervals over test images)."""
    counts = np.bincount(_train_pixels(y_train), minlength=len(classes))
    if counts.sum() == 0:
        raise ValueError("majority-class floor: the training masks have no labelled pixel")
    k = int(np.argmax(counts))
    s = evaluate_masks(y_test, np.full(np.shape(y_test), k, np.int64), classes, n_boot, seed)
    share = 100 * counts[k] / counts.sum()
    return Floor("majority class", f"every pixel {classes[k]!r} (the most frequent class of "
                 f"the {int(counts.sum())} training pixels, {share:.1f} %)",
                 {"overall_accuracy": s.overall_accuracy, "mean_iou": s.mean_iou,
                  "boundary_f1": s.boundary_f1, "iou": dict(zip(classes, s.iou, strict=True))},
                 {m: s.ci[m] for m in ("overall_accuracy", "mean_iou", "boundary_f1")})


def majority_class_labels(y_train: np.ndarray, y_test: np.ndarray, n_boot: int = 300,
                          seed: int = 0) -> Floor:
    """Single-label classification's floor: the most frequent training class for every test
    place, its accuracy (percent) with the interval over test places."""
    y_train, y_test = np.asarray(y_train, np.int64), np.asarray(y_test, np.int64)
    if y_train.size == 0 or y_test.size == 0:
        raise ValueError("majority-class floor: no training or no test labels")
    k = int(np.argmax(np.bincount(y_train)))
    correct = (y_test == k).astype(float)
    ci = bootstrap_stats(lambda idx: {"accuracy": 100 * correct[idx].mean()}, len(correct),
                         n_boot, seed, ("accuracy",))
    return Floor("majority class", f"every place class {k} ({100 * (y_train == k).mean():.1f} "
                 "% of the training places)", {"accuracy": 100 * float(correct.mean())}, ci)


def mean_density(t_train: np.ndarray, t_test: np.ndarray, n_boot: int = 300,
                 seed: int = 0) -> Floor:
    """Tree density's floor: the mean training cover (pixels >= 0) predicted for every test
    pixel; RMSE, MAE and R^2 with intervals over test images, as ``evaluate_density``."""
    t = np.asarray(t_train, float)
    valid = t[t >= 0]
    if valid.size == 0:
        raise ValueError("mean-predictor floor: the training targets have no valid pixel")
    mean = float(valid.mean())
    s = evaluate_density(t_test, np.full(np.shape(t_test), mean), n_boot, seed)
    return Floor("training mean", f"every pixel {mean:.1f} (the mean training cover)",
                 {m: s[m] for m in ("rmse", "mae", "r2")}, s["ci"])


PRIOR_THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05, 0.0)


def label_prior(y_train: np.ndarray, y_test: np.ndarray, n_boot: int = 300, seed: int = 0,
                metric: str = "f2_micro") -> Floor:
    """Multi-label floor: one label set for every test place, the labels whose training
    frequency reaches the threshold (of :data:`PRIOR_THRESHOLDS`) with the best ``metric`` on
    the training labels themselves; scored on the test places with its interval. The
    prediction matrix is kept in ``scores['pred']`` only while in memory (not recorded)."""
    y_train, y_test = np.asarray(y_train, bool), np.asarray(y_test, bool)
    if len(y_train) == 0:
        raise ValueError("label-prior floor: no training places")
    freq = y_train.mean(0)

    def constant(t, n):
        return np.broadcast_to(freq >= t if t > 0 else freq > 0, (n, len(freq)))

    best = max(PRIOR_THRESHOLDS,  # the first (highest) threshold among equals
               key=lambda t: (multilabel_metrics(y_train, constant(t, len(y_train)))[metric],
                              t))
    pred = np.ascontiguousarray(constant(best, len(y_test)))
    m = multilabel_metrics(y_test, pred)
    ci = bootstrap_stats(lambda idx: multilabel_metrics(y_test[idx], pred[idx]), len(y_test),
                         n_boot, seed, (metric,))
    return Floor("label prior", f"every place the {int(pred[0].sum())} label(s) with a "
                 f"training frequency of at least {best:g}",
                 {metric: m[metric], "threshold": best, "labels": int(pred[0].sum())}, ci)


def prior_predictions(y_train: np.ndarray, n_test: int, threshold: float) -> np.ndarray:
    """The label prior's (n_test, labels) prediction at ``threshold`` (for paired
    differences)."""
    freq = np.asarray(y_train, bool).mean(0)
    return np.tile(freq >= threshold if threshold > 0 else freq > 0, (n_test, 1))


def at_floor(ci: list[float] | tuple[float, float], floor: float,
             higher_is_better: bool = True) -> bool:
    """A baseline is at the floor when its 95 % interval reaches the floor's score (or passes
    it on the wrong side): nothing it learnt is distinguishable from predicting the prior."""
    lo, hi = (float(v) for v in ci)
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(floor)):
        return False
    return lo <= floor if higher_is_better else hi >= floor


def strongest(baselines: dict[str, float], higher_is_better: bool = True) -> str:
    """The name of the strongest of several fair baselines (the one a headline difference is
    taken against)."""
    if not baselines:
        raise ValueError("no baseline to choose from")
    pick = max if higher_is_better else min
    return pick(baselines, key=lambda k: (baselines[k], k))


class _Images:
    """The two methods of a dataset torchgeo's RCF samples its empirical filters from."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        import torch

        return {"image": torch.from_numpy(np.ascontiguousarray(self.x[i], np.float32))}


def rcf_model(x_train: np.ndarray, seed: int, features: int = RCF_FEATURES,
              kernel_size: int = RCF_KERNEL):
    """torchgeo's RCF with empirical filters: ``features / 2`` ZCA-whitened patches of the
    training images (no labels) as filters, bias -1, ReLU of both signs, mean-pooled. torchgeo
    ignores a seed of 0 (its filters would differ run to run), so the seed given is offset by
    one; and its whitening is done here with a symmetric eigendecomposition
    (:func:`_symmetric_rcf`)."""
    x_train = np.asarray(x_train, np.float32)
    return _symmetric_rcf()(in_channels=x_train.shape[1], features=features,
                            kernel_size=kernel_size, bias=-1.0, seed=int(seed) + 1,
                            mode="empirical", dataset=_Images(x_train))


def _symmetric_rcf():
    """torchgeo's ``RCF`` with its ZCA whitening computed by ``np.linalg.eigh``.

    torchgeo 0.8 whitens with ``np.linalg.eig``, the general eigendecomposition, of the patch
    covariance. Where that covariance is singular, as for 07's S1-only and S2-only inputs (the
    absent sensor's channels are 0), the zero eigenvalue is repeated and ``eig`` returns complex
    eigenvectors: measured on the demo's places, imaginary parts up to 0.47 in the eigenvectors,
    and ``V diag V^T`` is then no whitening at all; torchgeo keeps the real part with a
    ComplexWarning. The covariance is symmetric, so ``eigh`` gives the same decomposition where
    ``eig`` is right, and an orthonormal one where it is not. Everything else is torchgeo's."""
    from torchgeo.models import RCF

    class SymmetricRCF(RCF):
        def _normalize(self, patches, min_divisor: float = 1e-8, zca_bias: float = 0.001):
            shape = patches.shape
            p = patches.reshape(shape[0], -1).astype(np.float64)
            p = p - p.mean(axis=1, keepdims=True)
            norms = np.linalg.norm(p, axis=1)
            norms[norms < min_divisor] = 1
            p = p / norms[:, None]
            values, vectors = np.linalg.eigh(p.T @ p / shape[0])
            zca = vectors @ np.diag((values + zca_bias) ** -0.5) @ vectors.T
            return (p @ zca @ zca.T).reshape(shape).astype(np.float32)

    return SymmetricRCF


def rcf_features(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, features) RCF features of images (N, C, H, W), float32, on the CPU."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32))
            out.append(model(xb).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.weights.shape[0] * 2), np.float32)


def label_prior_datasets(train: dict, test: dict, datasets, vocabularies: dict,
                         n_boot: int = 300, seed: int = 0) -> dict[str, Floor]:
    """The label-prior floor of every dataset of a probe run (``train`` / ``test``: one
    encoder's ``probes.Embeddings`` of each split; the labels are the same for every encoder),
    scored on the same test images as the probes."""
    out = {}
    for ds in datasets:
        _, y_tr, _ = train.of(ds, vocabularies[ds])
        _, y_te, _ = test.of(ds, vocabularies[ds])
        if len(y_tr) and len(y_te):
            out[ds] = label_prior(y_tr, y_te, n_boot, seed)
    return out
