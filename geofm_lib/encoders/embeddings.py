"""Embeddings of any encoder: L2-normalised image embeddings, extracted without gradients in
batches and cached in ``<work>/features/<encoder hash>-<data hash>-<split>.npz``; a cache is
reused only when both hashes match.
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
from geofm_lib.paths import build_folder


def embed(cfg: Config, encoder: str, split: str, device: str = "cpu",
          batch_size: int = 256, show_progress: bool = True) -> Embeddings:
    """Embeddings of one split for one encoder, from the cache when its hashes match."""
    key = encoder_hash(cfg, encoder)
    path = cache_path(cfg, encoder, split, key)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("encoder_hash") == key and \
                    meta.get("data_hash") == cfg.data_hash:
                return Embeddings(z["features"], z["keys"], z["datasets"],
                                  json.loads(str(z["labels"])), encoder, cached=True)
    model, stats = load_encoder(cfg, encoder, device)
    enc = encode_split(model, None, shard_paths(build_folder(cfg), split), stats, device,
                       batch_size=batch_size, image_px=cfg.image_px,
                       show_progress=show_progress)
    out = Embeddings(enc.image_features.astype(np.float32), np.array(enc.keys),
                     enc.datasets, enc.labels, encoder)
    buf = io.BytesIO()
    np.savez(buf, features=out.features, keys=out.keys, datasets=out.datasets,
             labels=json.dumps(out.labels),
             meta=json.dumps({"encoder": encoder, "encoder_hash": key,
                              "data_hash": cfg.data_hash, "split": split}))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return out


def cache_path(cfg: Config, encoder: str, split: str, key: str | None = None) -> Path:
    """``<work>/features/<encoder hash>-<data hash>-<split>.npz`` (``key``: the encoder hash,
    when the caller has it)."""
    return cfg.path("features", f"{key or encoder_hash(cfg, encoder)}-{cfg.data_hash}-{split}.npz")
