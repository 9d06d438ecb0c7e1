"""Frozen-feature analysis (seed 002): embeddings of any encoder, cached; multi-label probes.

Encoders (by name, the ``encoders`` list of notebook 06):

* ``trained``: the CLIP image tower this run trained in ``03_pretrain`` (its checkpoint);
* ``init``: the same architecture at its random initialisation (same seed): the floor;
* ``checkpoint:<path>``: the image tower of another geofm checkpoint (``last.pt`` of any run,
  e.g. group A's model probed on group C data); its architecture comes from the file;
* ``open_clip:<model>:<tag>``: an OpenCLIP model with pretrained weights (downloaded once,
  offline it fails with the reason);
* ``ssl:<encoder.pt>``: the MoCo-v2 ResNet of notebook 07, on the bands it was trained on;
* ``torchgeo:<model>[:<weights>]``: a torchgeo backbone (ResNet, ViT with SSL4EO Sentinel
  weights, DOFA, ...) on all the bands it takes, or at random init without weights
  (``geofm_lib/encoders.py``).

Embeddings are the L2-normalised image embeddings, extracted without gradients in batches and
cached in ``<work>/features/<encoder hash>-<data hash>-<split>.npz``; a cache is reused only
when both hashes match.

Probes are trained per dataset on the **train** split (a seeded 20 % of it held out to choose
hyper-parameters) and scored once on the **val** split, which neither the encoder (03) nor the
probe saw: logistic regression (one-vs-rest), random forest and an MLP, thresholded at 0.5.
Metrics: F2 micro and macro, Hamming loss, precision micro and macro, per-class F2, each with
a percentile-bootstrap 95 % interval over test images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config
from .encoders import EncoderError
from .progress import get_logger

log = get_logger()
PROBES = ("linear", "random_forest", "mlp")




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


def _encoder_hash(cfg: Config, encoder: str) -> str:
    if encoder == "trained":
        basis = {"train_hash": cfg.train_hash}
    elif encoder == "init":
        basis = {"model": cfg.model, "image_px": cfg.image_px, "seed": cfg.seed,
                 "pretrained": cfg.pretrained, "band_adapter": cfg.band_adapter}
    elif encoder.startswith(("checkpoint:", "ssl:")):
        from .shards import file_sha256

        basis = {"checkpoint": file_sha256(Path(encoder.split(":", 1)[1]).expanduser())}
    else:
        basis = {"name": encoder, "image_px": cfg.image_px, "seed": cfg.seed}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:12]


def load_encoder(cfg: Config, encoder: str, device: str = "cpu"):
    """(model, channel stats) for an encoder name (see the module docstring)."""
    from . import encoders
    from .models import create_model, input_spec
    from .shards import build_folder, load_manifest
    from .training import load_trained_model, stats_from_checkpoint

    check_encoder_name(encoder)
    if encoder == "trained":
        model, _, state = load_trained_model(cfg, device)
        return model, stats_from_checkpoint(state)
    manifest = load_manifest(build_folder(cfg))
    band_stats = {ds: manifest["band_stats"][ds] for ds in cfg.dataset_keys}
    if encoder == "init":  # the twin of `trained`: same architecture and band adapter
        stats, bands = input_spec(band_stats, cfg.band_adapter)
        model, _ = create_model(cfg.model, cfg.image_px, cfg.pretrained, device, cfg.seed,
                                band_adapter=cfg.band_adapter, bands=bands)
        return model, stats
    if encoder.startswith(encoders.PREFIX):
        return encoders.load(encoder, band_stats, cfg.image_px, device, cfg.seed)
    if encoder.startswith("ssl:"):
        return encoders.load_ssl(encoder, band_stats, device)
    stats, _ = input_spec(band_stats, "rgb")
    if encoder.startswith("checkpoint:"):
        return _from_checkpoint(cfg, encoder.split(":", 1)[1], device, stats, band_stats)
    _, name, tag = encoder.split(":")
    model, _ = create_model(name, cfg.image_px, tag, device, cfg.seed)
    return model, stats


def _from_checkpoint(cfg: Config, path: str, device: str, stats: dict, band_stats: dict):
    """The image tower of a geofm checkpoint from another run (e.g. group A's on this data)."""
    from .models import BandSlots, create_model
    from .training import load_checkpoint

    state = load_checkpoint(Path(path).expanduser(), map_location=device)
    if state["image_px"] != cfg.image_px:
        raise EncoderError(f"checkpoint {Path(path).name} was trained at {state['image_px']} px, "
                           f"this data is {cfg.image_px} px; use data of the same image_px")
    adapter, bands = state.get("band_adapter", "rgb"), state.get("model_bands")
    model, _ = create_model(state["model_name"], state["image_px"], None, device, cfg.seed,
                            band_adapter=adapter, bands=bands)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise EncoderError(f"checkpoint {Path(path).name} does not fit architecture "
                           f"{state['model_name']!r}: {str(exc)[:200]}") from None
    missing = [ds for ds in cfg.dataset_keys if ds not in state["channel_stats"]]
    if missing:  # normalise unseen datasets with this data's own training statistics
        log.info("checkpoint has no input statistics for %s; using this data's", missing)
        if bands is not None:  # ... placed in the checkpoint's band layout
            unknown = {ds: [b for b in band_stats[ds]["bands"] if b not in bands]
                       for ds in missing}
            unknown = {ds: b for ds, b in unknown.items() if b}
            if unknown:
                raise EncoderError(f"checkpoint {Path(path).name} takes bands {bands}; "
                                   f"{unknown} are not among them (train with these datasets, "
                                   f"or drop them)")
            stats.update({ds: BandSlots.place(band_stats[ds], bands) for ds in missing})
    from .training import stats_from_checkpoint

    return model, {**stats, **stats_from_checkpoint(state)}


def check_encoder_name(encoder: str) -> None:
    """Fail on an encoder name that cannot exist, with the closest valid names (cheap)."""
    from .models import known_model_names

    if encoder in ("trained", "init"):
        return
    if encoder.startswith("checkpoint:"):
        if not Path(encoder.split(":", 1)[1]).expanduser().is_file():
            raise EncoderError(f"encoder {encoder!r}: no such checkpoint file (give the path of "
                               f"a last.pt under work/checkpoints/<train_hash>/)")
        return
    if encoder.startswith("open_clip:"):
        parts = encoder.split(":")
        if len(parts) != 3:
            raise EncoderError(f"encoder {encoder!r}: write open_clip:<model>:<pretrained tag>, "
                               f"e.g. open_clip:ViT-B-32:openai")
        name = parts[1]
        if name not in known_model_names():
            import difflib

            close = difflib.get_close_matches(name, known_model_names(), n=3)
            raise EncoderError(f"unknown OpenCLIP model {name!r} in encoder {encoder!r}"
                               + (f"; did you mean {', '.join(close)}?" if close else ""))
        return
    if encoder.startswith("torchgeo:"):
        from .encoders import parse

        parse(encoder)
        return
    if encoder.startswith("ssl:"):
        if not Path(encoder.split(":", 1)[1]).expanduser().is_file():
            raise EncoderError(f"encoder {encoder!r}: no such file (give the encoder.pt that "
                               f"notebook 07 wrote under work/checkpoints/<ssl_hash>/)")
        return
    raise EncoderError(f"unknown encoder {encoder!r}; use 'trained', 'init', "
                       f"'checkpoint:<path to last.pt>', 'open_clip:<model>:<tag>', "
                       f"'torchgeo:<model>[:<weights>]' or 'ssl:<path to encoder.pt>'")


def embed(cfg: Config, encoder: str, split: str, device: str = "cpu",
          batch_size: int = 256, show_progress: bool = True) -> Embeddings:
    """Embeddings of one split for one encoder, from the cache when its hashes match."""
    from .evaluation import encode_split
    from .shards import atomic_write_bytes, build_folder, shard_paths

    path = cfg.path("features", f"{_encoder_hash(cfg, encoder)}-{cfg.data_hash}-{split}.npz")
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("encoder_hash") == _encoder_hash(cfg, encoder) and \
                    meta.get("data_hash") == cfg.data_hash:
                return Embeddings(z["features"], z["keys"], z["datasets"],
                                  json.loads(str(z["labels"])), encoder, cached=True)
    model, stats = load_encoder(cfg, encoder, device)
    enc = encode_split(model, None, shard_paths(build_folder(cfg), split), stats, device,
                       batch_size=batch_size, image_px=cfg.image_px,
                       show_progress=show_progress)
    out = Embeddings(enc.image_features.astype(np.float32), np.array(enc.keys),
                     enc.datasets, enc.labels, encoder)
    import io

    buf = io.BytesIO()
    np.savez(buf, features=out.features, keys=out.keys, datasets=out.datasets,
             labels=json.dumps(out.labels),
             meta=json.dumps({"encoder": encoder, "encoder_hash": _encoder_hash(cfg, encoder),
                              "data_hash": cfg.data_hash, "split": split}))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return out


# --- metrics (checked against scikit-learn in the tests) -----------------------------------------

def fbeta_counts(tp, fp, fn, beta: float = 2.0):
    """F-beta from counts (0 where undefined, scikit-learn's zero_division=0)."""
    b2 = beta * beta
    num = (1 + b2) * tp
    den = (1 + b2) * tp + b2 * fn + fp
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """F2 micro/macro, Hamming loss, precision micro/macro, per-class F2 (percent, except
    Hamming loss, a fraction). Macro averages run over classes present in ``y_true`` or
    predicted."""
    y_true, y_pred = y_true.astype(bool), y_pred.astype(bool)
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    active = (tp + fp + fn) > 0
    f2_class = fbeta_counts(tp, fp, fn)
    prec_class = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    return {
        "f2_micro": 100 * float(fbeta_counts(tp.sum(), fp.sum(), fn.sum())),
        "f2_macro": 100 * float(f2_class[active].mean()) if active.any() else 0.0,
        "hamming_loss": float((y_true != y_pred).mean()),
        "precision_micro": 100 * float(tp.sum() / max(tp.sum() + fp.sum(), 1)),
        "precision_macro": 100 * float(prec_class[active].mean()) if active.any() else 0.0,
        "f2_per_class": (100 * f2_class).tolist(),
    }


def bootstrap_metrics(y_true, y_pred, n_boot: int = 500, seed: int = 0) -> dict:
    """95 % percentile-bootstrap intervals (resampling test images) of the scalar metrics."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    keys = ("f2_micro", "f2_macro", "hamming_loss", "precision_micro", "precision_macro")
    draws = {k: [] for k in keys}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        m = multilabel_metrics(y_true[idx], y_pred[idx])
        for k in keys:
            draws[k].append(m[k])
    return {k: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]
            for k, v in draws.items()}


# --- probes ---------------------------------------------------------------------------------------

def _make_probe(kind: str, param, seed: int, single: bool = False):
    """A probe; linear and MLP probes standardise features first (fitted on the fit data only),
    so an encoder is not judged by the scale of its embeddings."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        lr = LogisticRegression(C=param, max_iter=2000)
        # one logistic regression per class, fitted in parallel (the same fits as one by one)
        return make_pipeline(StandardScaler(), lr if single else
                             OneVsRestClassifier(lr, n_jobs=min(os.cpu_count() or 1, 4)))
    if kind == "random_forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=param, n_jobs=2,
                                      random_state=seed)
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(128,), alpha=param, max_iter=200, random_state=seed))
    raise ValueError(f"unknown probe {kind!r}; choose from {', '.join(PROBES)}")


GRIDS = {"linear": (0.01, 0.1, 1.0), "random_forest": (1, 5), "mlp": (1e-3, 1e-1)}


def _fit_predict(kind, param, x_fit, y_fit, x_eval, seed):
    """Fit (columns that never vary in the fit data are predicted constant) and predict."""
    keep = y_fit.any(axis=0) & ~y_fit.all(axis=0)
    pred = np.zeros((len(x_eval), y_fit.shape[1]), dtype=bool)
    pred[:, y_fit.all(axis=0)] = True
    if keep.sum() == 0:
        return pred
    y = y_fit[:, keep]
    single = y.shape[1] == 1 and kind == "linear"
    model = _make_probe(kind, param, seed, single=single)
    model.fit(x_fit, y[:, 0] if single else y)
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


def run_probe(kind: str, x_train, y_train, x_test, y_test, seed: int = 0,
              n_boot: int = 500, fit_fraction: float = 1.0) -> ProbeResult:
    """Choose the hyper-parameter on a held-out 20 % of train, refit on all of train (or a
    ``fit_fraction`` of it, for label-efficiency curves) and score once on test."""
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
        pred = _fit_predict(kind, param, x_train[fit_idx], y_train[fit_idx],
                            x_train[val_idx], seed)
        score = multilabel_metrics(y_train[val_idx], pred)["f2_micro"]
        if score > best_score:
            best, best_score = param, score
    pred = _fit_predict(kind, best, x_train[order], y_train[order], x_test, seed)
    return ProbeResult(kind, best, best_score, multilabel_metrics(y_test, pred),
                       bootstrap_metrics(y_test, pred, n_boot=n_boot, seed=seed), len(order),
                       len(x_test))


def label_matrix(labels: list[list[str]], vocabulary) -> np.ndarray:
    index = {v: i for i, v in enumerate(vocabulary)}
    y = np.zeros((len(labels), len(vocabulary)), dtype=bool)
    for i, labs in enumerate(labels):
        for lab in labs:
            y[i, index[lab]] = True
    return y


def probe_dataset(train: Embeddings, test: Embeddings, dataset: str, vocabulary,
                  probes=PROBES, seed: int = 0, n_boot: int = 500) -> dict[str, ProbeResult]:
    """All probes for one dataset: train-split embeddings fit, val-split embeddings score."""
    x_tr, y_tr, k_tr = train.of(dataset, vocabulary)
    x_te, y_te, k_te = test.of(dataset, vocabulary)
    if not set(k_tr).isdisjoint(k_te):
        raise AssertionError(f"{dataset}: probe test images occur in the probe's training data")
    if not y_tr.any():
        raise ValueError(f"{dataset}: no labels in the training split; probes need labels")
    return {k: run_probe(k, x_tr, y_tr, x_te, y_te, seed, n_boot) for k in probes}


def set_threads() -> None:
    """Keep scikit-learn/numba to the cores torch uses (no oversubscription)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


def umap_2d(features: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP of embeddings (cosine metric), seeded."""
    import umap

    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, metric="cosine",
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(features)


def cache_path(cfg: Config, encoder: str, split: str) -> Path:
    return cfg.path("features", f"{_encoder_hash(cfg, encoder)}-{cfg.data_hash}-{split}.npz")


# --- fine-tuning beside the frozen protocol (seed 001) -------------------------------------

@dataclass
class FinetuneResult:
    encoder: str
    dataset: str
    epochs: int
    test: dict
    ci: dict
    n_train: int
    n_test: int
    seconds: float
    history: list


def finetune(cfg: Config, encoder: str, dataset: str, epochs: int = 5, lr: float = 3e-4,
             batch_size: int = 64, device: str = "cpu", seed: int = 0,
             n_boot: int = 300) -> FinetuneResult:
    """Fine-tune an encoder's image tower with a linear multi-label head (binary cross-entropy,
    AdamW, the image augmentations of pretraining) on the dataset's train split; score once on
    its val split with the metrics of the frozen probes (threshold 0.5)."""
    import random
    import time

    import torch

    from .models import to_model_input
    from .shards import build_folder, iter_shards, load_manifest, shard_paths
    from .training import augment

    vocab = load_manifest(build_folder(cfg)).get("vocabularies", {}).get(dataset) or []
    if not vocab:
        raise ValueError(f"{dataset}: no labels to fine-tune on (caption corpora and "
                         f"unlabelled datasets cannot be)")
    model, stats = load_encoder(cfg, encoder, device)
    tower = model.visual

    def load(split):
        xs, ys = [], []
        for s in iter_shards(shard_paths(build_folder(cfg), split, dataset)):
            xs.append(to_model_input(s["img"], s["json"]["bands"], stats[dataset]))
            ys.append(label_matrix([s["json"]["labels"]], vocab)[0])
        return np.stack(xs), np.stack(ys).astype(np.float32)

    x_tr, y_tr = load("train")
    x_te, y_te = load("val")
    tower.eval()
    with torch.no_grad():  # the tower's output width (its embedding size)
        dim = tower(torch.from_numpy(x_tr[:2]).to(device)).shape[1]
    torch.manual_seed(seed)
    head = torch.nn.Linear(dim, len(vocab)).to(device)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(seed)
    aug_rng = random.Random(seed)
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        tower.train()
        order = rng.permutation(len(x_tr))
        losses = []
        for i in range(0, len(order), batch_size):
            b = order[i:i + batch_size]
            if len(b) < 2:
                continue
            x = torch.from_numpy(np.stack([augment(x_tr[j], aug_rng) for j in b])).to(device)
            logits = head(tower(x))
            loss = loss_fn(logits, torch.from_numpy(y_tr[b]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses))})
    tower.eval()
    with torch.no_grad():
        logits = torch.cat([head(tower(torch.from_numpy(x_te[i:i + 256]).to(device)))
                            for i in range(0, len(x_te), 256)])
    pred = (torch.sigmoid(logits) > 0.5).cpu().numpy()
    truth = y_te.astype(bool)
    return FinetuneResult(encoder, dataset, epochs, multilabel_metrics(truth, pred),
                          bootstrap_metrics(truth, pred, n_boot=n_boot, seed=seed), len(x_tr),
                          len(x_te), round(time.perf_counter() - t0, 1), history)
