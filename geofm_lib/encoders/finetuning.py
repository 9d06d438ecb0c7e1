"""Fine-tuning an encoder with a linear head on one dataset, beside the frozen protocol
(seed 001).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.shards import iter_shards, load_manifest, shard_paths
from geofm_lib.encoders.registry import load_encoder
from geofm_lib.evaluation.probes import bootstrap_metrics, label_matrix, multilabel_metrics
from geofm_lib.models.inputs import to_model_input
from geofm_lib.paths import build_folder
from geofm_lib.training.stream import augment

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
