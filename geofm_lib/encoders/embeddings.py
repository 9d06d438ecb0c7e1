"""Embeddings of any encoder: L2-normalised image embeddings, extracted without gradients in
batches and cached in ``<work>/features/<encoder hash>-<data hash>-<split>-<precision>.npz``;
a cache is reused only when both hashes and the precision (``devices.resolve_precision``: bf16
on GPUs and AMX CPUs, else fp32) match.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.shards import shard_paths
from geofm_lib.encoders.registry import encoder_hash, load_encoder
from geofm_lib.evaluation.probes import Embeddings
from geofm_lib.evaluation.retrieval import encode_split
from geofm_lib.io import atomic_write_bytes
from geofm_lib.models.devices import resolve_precision
from geofm_lib.paths import build_folder


def embed(cfg: Config, encoder: str, split: str, device: str = "cpu",
          batch_size: int = 256, show_progress: bool = True,
          dataset: str | None = None) -> Embeddings:
    """Embeddings of one split for one encoder, computed at ``cfg.precision`` on ``device``;
    from the cache when its hashes and precision match. ``dataset``: that dataset's images
    only (an encoder that cannot read the run's other datasets' bands), cached apart."""
    key = encoder_hash(cfg, encoder)
    precision = resolve_precision(cfg.precision, device)
    path = cache_path(cfg, encoder, split if dataset is None else f"{split}-{dataset}", key,
                      precision)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("encoder_hash") == key and meta.get("data_hash") == cfg.data_hash \
                    and meta.get("precision") == precision:
                return Embeddings(z["features"], z["keys"], z["datasets"],
                                  json.loads(str(z["labels"])), encoder, cached=True)
    model, stats = load_encoder(cfg, encoder, device, datasets=[dataset] if dataset else None)
    enc = encode_split(model, None, shard_paths(build_folder(cfg), split, dataset), stats, device,
                       batch_size=batch_size, image_px=cfg.image_px,
                       show_progress=show_progress, precision=precision)
    out = Embeddings(enc.image_features.astype(np.float32), np.array(enc.keys),
                     enc.datasets, enc.labels, encoder)
    buf = io.BytesIO()
    np.savez(buf, features=out.features, keys=out.keys, datasets=out.datasets,
             labels=json.dumps(out.labels),
             meta=json.dumps({"encoder": encoder, "encoder_hash": key,
                              "data_hash": cfg.data_hash, "split": split, "dataset": dataset,
                              "precision": precision}))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return out


def cache_path(cfg: Config, encoder: str, split: str, key: str | None = None,
               precision: str = "fp32") -> Path:
    """``<work>/features/<encoder hash>-<data hash>-<split>-<precision>.npz`` (``key``: the
    encoder hash, when the caller has it; ``precision``: a resolved one)."""
    key = key or encoder_hash(cfg, encoder)
    return cfg.path("features", f"{key}-{cfg.data_hash}-{split}-{precision}.npz")
