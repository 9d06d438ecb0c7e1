"""Every artifact path under ``work/`` in one place.
"""

from __future__ import annotations

from pathlib import Path

from geofm_lib.config import Config


def stage_dir(cfg: Config) -> Path:
    return cfg.path("runs", cfg.name)


def build_folder(cfg: Config) -> Path:
    return cfg.path("shards", cfg.data_hash)


def ssl_dir(cfg: Config) -> Path:
    return cfg.path("checkpoints", cfg.ssl_hash)


# --- checkpoints ----------------------------------------------------------------------------

def checkpoint_dir(cfg: Config) -> Path:
    return cfg.path("checkpoints", cfg.train_hash)
