"""Every artifact path under ``work/`` in one place.

    work/shards/<data_hash>/             the shard build of a data configuration (01)
    work/checkpoints/<train_hash>/       a CLIP run's checkpoints, ``last.pt`` (03)
    work/checkpoints/<ssl_hash>/         an SSL run's ``encoder.pt`` (07; ``last.ckpt`` until done)
    work/features/<encoder>-<data>-<split>-<precision>.npz   cached embeddings (06)
    work/runs/<run>/                     a run's stage records, predictions, map, overlays
"""

from __future__ import annotations

from pathlib import Path

from geofm_lib.config import Config, project_root


def build_folder(cfg: Config) -> Path:
    return cfg.path("shards", cfg.data_hash)


def checkpoint_dir(cfg: Config) -> Path:
    return cfg.path("checkpoints", cfg.train_hash)


def trained_checkpoint(cfg: Config) -> Path:
    """The checkpoint notebook 03 trains and later notebooks read."""
    return checkpoint_dir(cfg) / "last.pt"


def ssl_dir(cfg: Config) -> Path:
    return cfg.path("checkpoints", cfg.ssl_hash)


def stage_dir(cfg: Config) -> Path:
    return cfg.path("runs", cfg.name)


def predictions_file(cfg: Config) -> Path:
    """Per-image predictions of notebook 04, read by 05 (``evaluation.predictions``)."""
    return stage_dir(cfg) / "predictions.jsonl"


def map_file(cfg: Config) -> Path:
    """The standalone map of notebook 05."""
    return stage_dir(cfg) / "map.html"


def overlays_dir(cfg: Config) -> Path:
    """GeoTIFF overlays of the map's best-scoring images."""
    return stage_dir(cfg) / "overlays"


def scene_dir(cfg: Config) -> Path:
    """Notebook 09's scene products (COGs per encoder) and its map."""
    return stage_dir(cfg) / "scene"


def shown(path: Path | str) -> str:
    """A path as pages and run records show it: relative to the project (no machine paths)."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.relative_to(project_root()))
    except ValueError:
        return "<outside the project>/" + p.name
