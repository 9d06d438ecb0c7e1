"""Scores of dense predictions (seed 001's forest segmentation): overall accuracy, per-class and
mean IoU from a confusion matrix, a boundary F1 score, and intervals over images.

Targets are class indices per pixel with ``-1`` for pixels left out (``data.masks.to_class_index``
maps the stored codes). Intervals resample whole images (the unit a new survey would add), summing
their confusion matrices, so a large image weighs as much as its pixels.

* **IoU** of class c: TP / (TP + FP + FN) over all pixels of the test images; a class that
  neither the targets nor the predictions contain has no IoU (NaN) and is left out of the mean.
* **mean IoU**: the mean over classes with an IoU. **Overall accuracy**: correct / scored pixels.
* **boundary F1** (Csurka et al. 2013's BF score): per image, the pixels on a class boundary
  (a 4-neighbour of another class) in the prediction and in the target; precision = predicted
  boundary pixels within ``tolerance_px`` of a target boundary, recall the other way round;
  F1 of the two, averaged over images that have a boundary in either. It rewards the detail
  that seed 001's stem without max-pooling and its boundary-weighted loss aim at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from geofm_lib.evaluation.bootstrap import interval, resamples


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) pixel counts, rows the target class, columns the predicted one;
    target pixels below 0 are left out."""
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"targets and predictions differ in size: {t.size} vs {p.size} pixels")
    keep = t >= 0
    t, p = t[keep].astype(np.int64), p[keep].astype(np.int64)
    if t.size and (t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"class indices outside 0-{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class from a confusion matrix; NaN for a class absent from both sides."""
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def scores(cm: np.ndarray) -> dict:
    """Overall accuracy, mean IoU (classes with an IoU) and per-class IoU, in percent."""
    total = cm.sum()
    iou = iou_per_class(cm)
    return {"overall_accuracy": 100 * float(np.trace(cm) / total) if total else math.nan,
            "mean_iou": 100 * float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan,
            "iou": [100 * float(v) for v in iou]}


def boundaries(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (ignored pixels, < 0, are not a class:
    nothing next to them counts as a boundary, and they are none themselves)."""
    m = np.asarray(mask)
    out = np.zeros(m.shape, bool)
    valid = m >= 0
    for a, b in ((np.s_[1:, :], np.s_[:-1, :]), (np.s_[:, 1:], np.s_[:, :-1])):
        diff = (m[a] != m[b]) & valid[a] & valid[b]
        out[a] |= diff
        out[b] |= diff
    return out


def boundary_f1(y_true: np.ndarray, y_pred: np.ndarray, tolerance_px: int = 1) -> float:
    """BF score of one image (NaN when neither has a boundary); see the module docstring."""
    from scipy.ndimage import distance_transform_edt

    ignored = np.asarray(y_true) < 0
    pred = np.where(ignored, -1, y_pred)
    bt, bp = boundaries(y_true), boundaries(pred)
    if not bt.any() and not bp.any():
        return math.nan
    if not bt.any() or not bp.any():
        return 0.0
    dist_t = distance_transform_edt(~bt)  # distance of every pixel to the target boundary
    dist_p = distance_transform_edt(~bp)
    precision = float((dist_t[bp] <= tolerance_px).mean())
    recall = float((dist_p[bt] <= tolerance_px).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def boundary_weights(mask: np.ndarray, width_px: int = 1, weight: float = 3.0) -> np.ndarray:
    """Per-pixel loss weights for the boundary-weighted loss: ``weight`` within ``width_px``
    of a class boundary of the target, 1 elsewhere, 0 on ignored pixels. Works on one (H, W)
    mask or a batch (..., H, W)."""
    from scipy.ndimage import binary_dilation

    m = np.asarray(mask)
    flat = m.reshape(-1, *m.shape[-2:])
    out = np.ones(flat.shape, np.float32)
    for i, one in enumerate(flat):
        edge = boundaries(one)
        if width_px > 1 and edge.any():
            edge = binary_dilation(edge, iterations=width_px - 1)
        out[i][edge] = weight
        out[i][one < 0] = 0.0
    return out.reshape(m.shape)


@dataclass
class SegmentationScores:
    """Scores of one encoder on a test set, with 95 % bootstrap intervals over images."""

    classes: list[str]
    overall_accuracy: float
    mean_iou: float
    iou: list[float]
    boundary_f1: float
    ci: dict = field(default_factory=dict)  # metric -> [low, high]; "iou" -> per class
    n_images: int = 0
    n_pixels: int = 0

    def row(self) -> dict:
        return {"overall_accuracy": self.overall_accuracy, "mean_iou": self.mean_iou,
                "boundary_f1": self.boundary_f1, "ci": self.ci, "n_images": self.n_images,
                "n_pixels": self.n_pixels,
                "iou": dict(zip(self.classes, self.iou, strict=True))}


def evaluate_masks(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str],
                   n_boot: int = 300, seed: int = 0, tolerance_px: int = 1
                   ) -> SegmentationScores:
    """Scores of predicted masks ``y_pred`` (N, H, W) against targets (N, H, W; -1 left out),
    with percentile-bootstrap intervals over the N images."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(classes)
    per_image = np.stack([confusion(t, p, k) for t, p in zip(y_true, y_pred, strict=True)])
    bf = np.array([boundary_f1(t, p, tolerance_px) for t, p in zip(y_true, y_pred,
                                                                   strict=True)])
    whole = scores(per_image.sum(0))
    draws: dict[str, list] = {"overall_accuracy": [], "mean_iou": [], "boundary_f1": [],
                              "iou": []}
    for idx in resamples(len(y_true), n_boot, seed):
        s = scores(per_image[idx].sum(0))
        draws["overall_accuracy"].append(s["overall_accuracy"])
        draws["mean_iou"].append(s["mean_iou"])
        draws["iou"].append(s["iou"])
        b = bf[idx]
        draws["boundary_f1"].append(100 * float(np.nanmean(b)) if np.isfinite(b).any()
                                    else math.nan)
    ci = {m: list(interval(v)) for m, v in draws.items() if m != "iou"}
    iou_draws = np.array(draws["iou"], float)
    ci["iou"] = [list(interval(col[np.isfinite(col)])) if np.isfinite(col).any()
                 else [math.nan, math.nan] for col in iou_draws.T]
    return SegmentationScores(
        classes=list(classes), overall_accuracy=whole["overall_accuracy"],
        mean_iou=whole["mean_iou"], iou=whole["iou"],
        boundary_f1=100 * float(np.nanmean(bf)) if np.isfinite(bf).any() else math.nan,
        ci=ci, n_images=len(y_true), n_pixels=int(per_image.sum()))


def paired_miou_difference(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                           n_classes: int, n_boot: int = 300, seed: int = 0
                           ) -> tuple[float, list[float]]:
    """Mean IoU of ``pred_a`` minus that of ``pred_b`` on the same test images, with the 95 %
    percentile-bootstrap interval of the difference (both scored on the same resampled
    images, so what the images share does not widen it)."""
    ca = np.stack([confusion(t, p, n_classes) for t, p in zip(y_true, pred_a, strict=True)])
    cb = np.stack([confusion(t, p, n_classes) for t, p in zip(y_true, pred_b, strict=True)])

    def diff(idx):
        return scores(ca[idx].sum(0))["mean_iou"] - scores(cb[idx].sum(0))["mean_iou"]

    draws = [diff(idx) for idx in resamples(len(y_true), n_boot, seed)]
    return float(diff(np.arange(len(y_true)))), list(interval(draws))


# --- tree density: a regression per pixel ------------------------------------------------------

def density_sums(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per image: (pixels, sum e^2, sum |e|, sum t, sum t^2) over valid pixels (target >= 0)."""
    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    if t.shape != p.shape:
        raise ValueError(f"targets and predictions differ in shape: {t.shape} vs {p.shape}")
    valid = t >= 0
    e = np.where(valid, p - t, 0.0)
    tv = np.where(valid, t, 0.0)
    axes = tuple(range(1, t.ndim))
    return np.stack([valid.sum(axes), (e ** 2).sum(axes), np.abs(e).sum(axes), tv.sum(axes),
                     (tv ** 2).sum(axes)], axis=1)


def density_scores(sums: np.ndarray) -> dict:
    """RMSE and MAE (the target's units: percent tree cover) and R^2 from summed per-image
    sums (``density_sums``); R^2 against the mean of the same pixels."""
    n, se, ae, st, st2 = sums.sum(0)
    if n == 0:
        return {"rmse": math.nan, "mae": math.nan, "r2": math.nan}
    ss_tot = st2 - st ** 2 / n
    return {"rmse": float(np.sqrt(se / n)), "mae": float(ae / n),
            "r2": float(1 - se / ss_tot) if ss_tot > 0 else math.nan}


def evaluate_density(y_true: np.ndarray, y_pred: np.ndarray, n_boot: int = 300,
                     seed: int = 0) -> dict:
    """Tree density scores of predictions (N, H, W) against targets (N, H, W; below 0 left
    out): RMSE, MAE and R^2 over all valid pixels, each with its 95 % percentile-bootstrap
    interval over images."""
    per = density_sums(y_true, y_pred)
    out = density_scores(per)
    draws = [density_scores(per[idx]) for idx in resamples(len(per), n_boot, seed)]
    # R^2 has no value on a draw of images without spread in cover (one image drawn n times)
    out["ci"] = {m: list(interval([d[m] for d in draws if np.isfinite(d[m])]))
                 if any(np.isfinite(d[m]) for d in draws) else [math.nan, math.nan]
                 for m in ("rmse", "mae", "r2")}
    out["n_images"], out["n_pixels"] = len(per), int(per[:, 0].sum())
    return out


def paired_rmse_difference(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                           n_boot: int = 300, seed: int = 0) -> tuple[float, list[float]]:
    """RMSE of ``pred_a`` minus that of ``pred_b`` on the same images (below 0: ``a`` is
    better), with the paired 95 % bootstrap interval."""
    a, b = density_sums(y_true, pred_a), density_sums(y_true, pred_b)

    def diff(idx):
        return density_scores(a[idx])["rmse"] - density_scores(b[idx])["rmse"]

    draws = [diff(idx) for idx in resamples(len(a), n_boot, seed)]
    return float(diff(np.arange(len(a)))), list(interval(draws))
