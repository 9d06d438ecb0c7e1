"""Multi-label probes on frozen features (seed 002).

Probes are trained per dataset on the **train** split (a seeded 20 % of it held out to choose
hyper-parameters) and scored once on the **val** split, which neither the encoder nor the
probe saw: logistic regression (one-vs-rest), random forest and an MLP, thresholded at 0.5.
Metrics: F2 micro and macro, Hamming loss, precision micro and macro, per-class F2, each with
a percentile-bootstrap 95 % interval over test images.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from geofm_lib.evaluation.bootstrap import bootstrap_stats
from geofm_lib.evaluation.metrics import label_matrix

PROBES = ("linear", "random_forest", "mlp")


# --- metrics (checked against scikit-learn in the tests) -----------------------------------------

def fbeta_counts(tp, fp, fn, beta: float = 2.0):
    """F-beta from counts (0 where undefined, scikit-learn's zero_division=0)."""
    b2 = beta * beta
    num = (1 + b2) * tp
    den = (1 + b2) * tp + b2 * fn + fp
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """F1 (seed 001's EnMAP-CORINE score) and F2 (seed 003's) micro/macro, Hamming loss,
    precision micro/macro, per-class F2 (percent, except
    Hamming loss, a fraction). Macro averages run over classes present in ``y_true`` or
    predicted."""
    y_true, y_pred = y_true.astype(bool), y_pred.astype(bool)
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    active = (tp + fp + fn) > 0
    f2_class = fbeta_counts(tp, fp, fn)
    prec_class = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    f1_class = fbeta_counts(tp, fp, fn, beta=1.0)
    return {
        "f1_micro": 100 * float(fbeta_counts(tp.sum(), fp.sum(), fn.sum(), beta=1.0)),
        "f1_macro": 100 * float(f1_class[active].mean()) if active.any() else 0.0,
        "f2_micro": 100 * float(fbeta_counts(tp.sum(), fp.sum(), fn.sum())),
        "f2_macro": 100 * float(f2_class[active].mean()) if active.any() else 0.0,
        "hamming_loss": float((y_true != y_pred).mean()),
        "precision_micro": 100 * float(tp.sum() / max(tp.sum() + fp.sum(), 1)),
        "precision_macro": 100 * float(prec_class[active].mean()) if active.any() else 0.0,
        "f2_per_class": (100 * f2_class).tolist(),
    }


def paired_f2_difference(y_true, pred_a, pred_b, n_boot: int = 500, seed: int = 0,
                         metric: str = "f2_micro"):
    """F2 micro (or another ``multilabel_metrics`` score) of ``pred_a`` minus that of
    ``pred_b`` on the same test images, with the 95 % percentile-bootstrap interval of the
    difference (both resampled with the same images, so what the two share does not widen
    it)."""
    def diff(idx):
        return {"d": multilabel_metrics(y_true[idx], pred_a[idx])[metric]
                - multilabel_metrics(y_true[idx], pred_b[idx])[metric]}

    whole = diff(np.arange(len(y_true)))["d"]
    return whole, bootstrap_stats(diff, len(y_true), n_boot, seed, ("d",))["d"]


def bootstrap_metrics(y_true, y_pred, n_boot: int = 500, seed: int = 0) -> dict:
    """95 % percentile-bootstrap intervals (resampling test images) of the scalar metrics."""
    keys = ("f1_micro", "f2_micro", "f2_macro", "hamming_loss", "precision_micro",
            "precision_macro")
    return bootstrap_stats(lambda idx: multilabel_metrics(y_true[idx], y_pred[idx]),
                           len(y_true), n_boot, seed, keys)


# --- probes ---------------------------------------------------------------------------------------

# Below this many feature values a probe's BLAS calls run on one thread: on these small
# problems OpenBLAS's threads cost more than they give (measured on 2 cores: the multinomial
# logistic regression of notebook 07, 512 x 512 features, 2.88 s with 2 threads, 0.27 s with 1).
SMALL_PROBLEM_VALUES = 4_000_000


# Below this many training feature values over all the probes of a run_probes call, they run in
# this process: starting the worker processes (~7 s on 2 cores, each imports torch and
# scikit-learn) costs more than such probes take (the ci preset's 48 probes: ~3 s).
SMALL_BATCH_VALUES = 1_000_000


def blas_threads_for(x: np.ndarray):
    """A context in which BLAS uses one thread when ``x`` is a small problem (see
    ``SMALL_PROBLEM_VALUES``), and its usual threads otherwise."""
    if np.asarray(x).size > SMALL_PROBLEM_VALUES:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    return threadpool_limits(1, user_api="blas")


def _cores() -> int:
    """The CPU cores this process may use (its affinity: a CI lane pinned to one core gets 1)."""
    from joblib import cpu_count  # scikit-learn's dependency; it reads the affinity mask

    return cpu_count()


def _make_probe(kind: str, param, seed: int, single: bool = False, n_jobs: int | None = None):
    """A probe; linear and MLP probes standardise features first (fitted on the fit data only),
    so an encoder is not judged by the scale of its embeddings. ``n_jobs``: processes or
    threads the probe may use itself (None: up to the CPU count; 1 inside :func:`run_probes`,
    which spreads whole probes over the cores instead)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cores = _cores()
    if kind == "linear":
        # tol 1e-3 (scikit-learn's default 1e-4): on the demo's BigEarthNet S1/S2 probe 7x
        # faster (8.0 s -> 1.1 s) with the same chosen C and test F2 micro 55.10 vs 55.27
        lr = LogisticRegression(C=param, max_iter=2000, tol=1e-3)
        # one logistic regression per class, fitted in parallel (the same fits as one by one)
        return make_pipeline(StandardScaler(), lr if single else
                             OneVsRestClassifier(lr, n_jobs=n_jobs or min(cores, 4)))
    if kind == "random_forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=param,
                                      n_jobs=n_jobs or min(cores, 2), random_state=seed)
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(128,), alpha=param, max_iter=200, random_state=seed))
    raise ValueError(f"unknown probe {kind!r}; choose from {', '.join(PROBES)}")


GRIDS = {"linear": (0.01, 0.1, 1.0), "random_forest": (1, 5), "mlp": (1e-3, 1e-1)}


def _fit(kind, param, x_fit, y_fit, seed, n_jobs: int | None = None):
    """The probe fitted on the columns that vary in ``y_fit``; (model or None, those columns)."""
    keep = y_fit.any(axis=0) & ~y_fit.all(axis=0)
    if keep.sum() == 0:
        return None, keep
    y = y_fit[:, keep]
    single = y.shape[1] == 1 and kind == "linear"
    model = _make_probe(kind, param, seed, single=single, n_jobs=n_jobs)
    with blas_threads_for(x_fit):
        model.fit(x_fit, y[:, 0] if single else y)
    return model, keep


def fit_predict(kind, param, x_fit, y_fit, x_eval, seed, n_jobs: int | None = None):
    """Fit (columns that never vary in the fit data are predicted constant) and predict."""
    model, keep = _fit(kind, param, x_fit, y_fit, seed, n_jobs)
    pred = np.zeros((len(x_eval), y_fit.shape[1]), dtype=bool)
    pred[:, y_fit.all(axis=0)] = True
    if model is None:
        return pred
    with blas_threads_for(x_fit):
        out = np.asarray(model.predict(x_eval)).astype(bool)
    pred[:, keep] = out.reshape(len(x_eval), -1)
    return pred


@dataclass
class ProbeResult:
    probe: str
    param: float
    val_f2_micro: float
    test: dict
    ci: dict
    n_train: int
    n_test: int
    pred: np.ndarray | None = None  # the test predictions (for paired comparisons)


def _choose(kind, x_train, y_train, seed: int, fit_fraction: float = 1.0,
            n_jobs: int | None = None):
    """The hyper-parameter chosen by F2 micro on a seeded held-out 20 % of the training rows:
    (param, its F2, the rows to refit on)."""
    rng = np.random.default_rng(seed)
    n = len(x_train)
    order = rng.permutation(n)
    if fit_fraction < 1.0:
        order = order[:max(int(round(n * fit_fraction)), 4)]
    n_val = max(int(round(len(order) * 0.2)), 1)
    val_idx, fit_idx = order[:n_val], order[n_val:]
    assert not set(val_idx) & set(fit_idx)
    best, best_score = None, -1.0
    for param in GRIDS[kind]:
        pred = fit_predict(kind, param, x_train[fit_idx], y_train[fit_idx],
                           x_train[val_idx], seed, n_jobs)
        score = multilabel_metrics(y_train[val_idx], pred)["f2_micro"]
        if score > best_score:
            best, best_score = param, score
    return best, best_score, order


CONSTANT_LOGIT = 20.0  # a column the probe predicts constant, as a logit (sigmoid 1 - 2e-9)


@dataclass
class LinearProbeWeights:
    """A fitted linear probe as arrays, to start a torch head from: standardise with
    ``mean``/``scale``, then logits ``z @ weight.T + bias`` (threshold 0 = probability 0.5)."""

    mean: np.ndarray     # (features,)
    scale: np.ndarray    # (features,), 1 where a feature is constant (StandardScaler's rule)
    weight: np.ndarray   # (classes, features)
    bias: np.ndarray     # (classes,)
    param: float         # the chosen C


def linear_probe_weights(x_train, y_train, seed: int = 0) -> LinearProbeWeights:
    """The frozen protocol's linear probe (:func:`run_probe` with ``linear``: ``C`` chosen on
    the same held-out fifth, refitted on all rows) as weights, for a head that starts where
    the probe ends (LP-FT). Its logits predict exactly what :func:`fit_predict` predicts: a
    column that is constant in ``y_train`` gets zero weights and a bias of
    +-``CONSTANT_LOGIT``."""
    y_train = np.asarray(y_train).astype(bool)
    best, _, order = _choose("linear", x_train, y_train, seed)
    model, keep = _fit("linear", best, x_train[order], y_train[order], seed)
    d, k = x_train.shape[1], y_train.shape[1]
    weight, bias = np.zeros((k, d)), np.where(y_train.all(axis=0), CONSTANT_LOGIT,
                                              -CONSTANT_LOGIT)
    mean, scale = x_train.mean(0), np.ones(d)
    if model is not None:
        scaler, clf = model[0], model[-1]
        mean, scale = scaler.mean_, scaler.scale_
        fitted = ([clf] if not hasattr(clf, "estimators_") else clf.estimators_)
        weight[keep] = np.concatenate([e.coef_ for e in fitted])
        bias[keep] = np.concatenate([e.intercept_ for e in fitted])
    return LinearProbeWeights(mean.astype(np.float32), scale.astype(np.float32),
                              weight.astype(np.float32), bias.astype(np.float32), float(best))


def fit_single_label_probe(x_tr, y_tr, seed: int = 0):
    """Multinomial logistic regression on standardised frozen features (a scikit-learn
    pipeline), ``C`` chosen by accuracy on a seeded held-out 20 % of the training rows, then
    refitted on all of them. The tolerance is 1e-3 instead of scikit-learn's 1e-4: on the
    demo's 37 classes x 512 features that is 4-5x faster (122 vs 419 lbfgs iterations) with the
    same test accuracy (0.76). Rows of a single class: a pipeline that always predicts it."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_tr)) < 2:
        return make_pipeline(StandardScaler(), DummyClassifier(strategy="most_frequent")).fit(
            x_tr, y_tr)
    order = np.random.default_rng(seed).permutation(len(x_tr))
    n_val = max(int(round(len(order) * 0.2)), 1)
    val, fit = order[:n_val], order[n_val:]
    best, best_acc = 0.1, -1.0  # kept when the fitting rows hold a single class
    grid = (0.01, 0.1, 1.0) if len(np.unique(y_tr[fit])) > 1 else ()
    with blas_threads_for(x_tr):  # one BLAS thread: 10x faster on the demo's 512 x 512
        for c in grid:
            m = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, tol=1e-3))
            acc = float((m.fit(x_tr[fit], y_tr[fit]).predict(x_tr[val]) == y_tr[val]).mean())
            if acc > best_acc:
                best, best_acc = c, acc
        return make_pipeline(StandardScaler(), LogisticRegression(
            C=best, max_iter=2000, tol=1e-3)).fit(x_tr, y_tr)


def single_label_probe_weights(x_tr, y_tr, n_classes: int, seed: int = 0) -> LinearProbeWeights:
    """:func:`fit_single_label_probe` as weights of a head with ``n_classes`` outputs (class
    indices ``0..n_classes-1``), whose arg-max predicts what the probe predicts: classes
    absent from ``y_tr`` get the bias -``CONSTANT_LOGIT``; with two classes the probe's one
    logit becomes (0, z)."""
    model = fit_single_label_probe(x_tr, y_tr, seed)
    scaler, clf = model[0], model[-1]
    d = x_tr.shape[1]
    weight, bias = np.zeros((n_classes, d)), np.full(n_classes, -CONSTANT_LOGIT)
    seen = np.asarray(clf.classes_, dtype=int)
    if not hasattr(clf, "coef_"):  # one class in the rows
        bias[seen] = CONSTANT_LOGIT
        param = float("nan")
    else:
        coef, icpt = clf.coef_, clf.intercept_
        if len(seen) == 2:  # scikit-learn's binary case: one logit for the second class
            coef, icpt = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, icpt]
        weight[seen], bias[seen], param = coef, icpt, float(clf.C)
    return LinearProbeWeights(scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32),
                              weight.astype(np.float32), bias.astype(np.float32), param)


def run_probe(kind: str, x_train, y_train, x_test, y_test, seed: int = 0,
              n_boot: int = 500, fit_fraction: float = 1.0,
              n_jobs: int | None = None) -> ProbeResult:
    """Choose the hyper-parameter on a held-out 20 % of train, refit on all of train (or a
    ``fit_fraction`` of it, for label-efficiency curves) and score once on test."""
    best, best_score, order = _choose(kind, x_train, y_train, seed, fit_fraction, n_jobs)
    pred = fit_predict(kind, best, x_train[order], y_train[order], x_test, seed, n_jobs)
    return ProbeResult(kind, best, best_score, multilabel_metrics(y_test, pred),
                       bootstrap_metrics(y_test, pred, n_boot=n_boot, seed=seed), len(order),
                       len(x_test), pred)


def _probe_job(job: dict) -> ProbeResult:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # an MLP that stops at max_iter is still scored
        warnings.simplefilter("ignore", ConvergenceWarning)
        return run_probe(**job)


def run_probes(jobs: list[dict], n_jobs: int = 0) -> list[ProbeResult]:
    """:func:`run_probe` for each job (a dict of its arguments), spread over ``n_jobs``
    processes (0: one per CPU core), each probe on one core; results in the order of
    ``jobs``. Every probe is seeded by its own arguments, so the results are the same for
    any ``n_jobs``."""
    n_jobs = n_jobs or _cores()
    small = sum(np.asarray(j["x_train"]).size for j in jobs) < SMALL_BATCH_VALUES
    if n_jobs == 1 or len(jobs) < 2 or small:
        return [_probe_job(j) for j in jobs]
    from joblib import Parallel, delayed

    # the largest problems first, so that no core idles at the end on one long fit
    order = sorted(range(len(jobs)), key=lambda i: -np.asarray(jobs[i]["x_train"]).size
                   * np.asarray(jobs[i]["y_train"]).shape[-1])
    # processes, not threads: with threads the probes hold the GIL (notebook 06's 48 probes
    # took 76 s on 2 threads against 54 s on 2 processes, of which ~7 s start the workers)
    done = Parallel(n_jobs=min(n_jobs, len(jobs)))(
        delayed(_probe_job)({**jobs[i], "n_jobs": 1}) for i in order)
    out: list = [None] * len(jobs)
    for i, r in zip(order, done):
        out[i] = r
    return out


def probe_datasets(train: dict[str, Embeddings], test: dict[str, Embeddings], datasets,
                   vocabularies: dict, probes=PROBES, seed: int = 0, n_boot: int = 500,
                   n_jobs: int = 0) -> dict[tuple[str, str], dict[str, ProbeResult]]:
    """Every probe for every (encoder, dataset): ``train[encoder]`` embeddings fit,
    ``test[encoder]`` embeddings score; all fits spread over the cores (:func:`run_probes`).
    Returns {(encoder, dataset): {probe: ProbeResult}}."""
    keys, jobs = [], []
    for name in train:
        for ds in datasets:
            x_tr, y_tr, k_tr = train[name].of(ds, vocabularies[ds])
            x_te, y_te, k_te = test[name].of(ds, vocabularies[ds])
            if not set(k_tr).isdisjoint(k_te):
                raise AssertionError(f"{ds}: probe test images occur in the probe's training "
                                     f"data")
            if not y_tr.any():
                raise ValueError(f"{ds}: no labels in the training split; probes need labels")
            for kind in probes:
                keys.append((name, ds, kind))
                jobs.append({"kind": kind, "x_train": x_tr, "y_train": y_tr, "x_test": x_te,
                             "y_test": y_te, "seed": seed, "n_boot": n_boot})
    out: dict = {}
    for (name, ds, kind), r in zip(keys, run_probes(jobs, n_jobs)):
        out.setdefault((name, ds), {})[kind] = r
    return out


def probe_dataset(train: Embeddings, test: Embeddings, dataset: str, vocabulary,
                  probes=PROBES, seed: int = 0, n_boot: int = 500,
                  n_jobs: int = 1) -> dict[str, ProbeResult]:
    """All probes for one dataset: train-split embeddings fit, val-split embeddings score."""
    return probe_datasets({"": train}, {"": test}, [dataset], {dataset: vocabulary}, probes,
                          seed, n_boot, n_jobs)[("", dataset)]


@dataclass
class Embeddings:
    features: np.ndarray  # (N, D) float32
    keys: np.ndarray
    datasets: np.ndarray
    labels: list[list[str]]
    encoder: str
    cached: bool = False

    def of(self, dataset: str, vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, multi-hot labels, keys) of one dataset's images."""
        idx = np.flatnonzero(self.datasets == dataset)
        return (self.features[idx], label_matrix([self.labels[i] for i in idx], vocabulary),
                self.keys[idx])


def mean_over_datasets(results: dict, encoder: str, probe: str, datasets,
                       key: str = "f2_micro") -> float | None:
    """The mean of one probe metric over the datasets an encoder was probed on (``results``:
    {(encoder, dataset): {probe: ProbeResult}}), rounded to 0.01; None when none was."""
    vals = [results[(encoder, ds)][probe].test[key] for ds in datasets
            if (encoder, ds) in results]
    return round(float(np.mean(vals)), 2) if vals else None
