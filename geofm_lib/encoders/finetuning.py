"""Fine-tuning an encoder with a linear head on one dataset, beside the frozen protocol
(seed 001).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.shards import iter_shards, load_manifest, shard_paths
from geofm_lib.encoders.registry import load_encoder
from geofm_lib.evaluation.finetune import fit_head
from geofm_lib.evaluation.metrics import label_matrix
from geofm_lib.evaluation.probes import bootstrap_metrics, multilabel_metrics
from geofm_lib.models.devices import resolve_precision
from geofm_lib.models.inputs import to_model_input
from geofm_lib.paths import build_folder

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
    vocab = load_manifest(build_folder(cfg)).vocabulary(dataset)
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
    t0 = time.perf_counter()
    tuned = fit_head(tower, x_tr, y_tr, epochs, lr, seed, device, batch=batch_size,
                     precision=resolve_precision(cfg.precision, device))
    pred = tuned.predict(x_te)
    history = tuned.history
    truth = y_te.astype(bool)
    return FinetuneResult(encoder, dataset, epochs, multilabel_metrics(truth, pred),
                          bootstrap_metrics(truth, pred, n_boot=n_boot, seed=seed), len(x_tr),
                          len(x_te), round(time.perf_counter() - t0, 1), history)
