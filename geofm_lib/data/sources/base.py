"""What every source shares: the :class:`Scene` contract, label-name mapping, dataset roots.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geofm_lib.config import project_root
from geofm_lib.errors import ConfigError


@dataclass
class Scene:
    """One scene: image (C, H, W), metadata, and a labeller for pixel windows."""

    dataset: str
    index: int
    image: np.ndarray
    meta: dict
    vocabulary: tuple[str, ...]
    label_window: Callable[[int, int, int, int], list[str]]
    # the single (dominant) label of a pixel window, where the source knows one
    dominant_window: Callable[[int, int, int, int], str | None] | None = None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def label_mapping(source_names, vocabulary) -> list[str]:
    """Catalog label for each class name of a reader ('AnnualCrop' -> 'Annual crop')."""
    by_norm = {_norm(v): v for v in vocabulary}
    out = []
    for name in source_names:
        key = _norm(name)
        target = _LABEL_ALIASES.get(key) or by_norm.get(key)
        if target is None:
            raise ConfigError(f"class {name!r} of the reader has no label in the catalog "
                              f"({', '.join(vocabulary)}); the dataset version differs from "
                              "the one the catalog describes")
        out.append(target)
    return out


def _resolve_root(root: str | None) -> str | None:
    """A source root as given, or relative to the project root when not absolute."""
    if root is None:
        return None

    path = Path(root).expanduser()
    return str(path if path.is_absolute() else project_root() / path)


def _file_bounds_lonlat(path) -> list[float] | None:
    """WGS84 bounds of a georeferenced image file, or None when it has no CRS."""
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.warp import transform_bounds

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            if src.crs is None:
                return None
            return [round(v, 6) for v in transform_bounds(src.crs, "EPSG:4326", *src.bounds)]
    except Exception:  # noqa: BLE001 - a footprint is optional metadata
        return None


_LABEL_ALIASES = {"sealake": "Sea or lake"}
