"""What every source shares: the scene and sample contracts (:class:`Scene`,
:class:`SceneMeta`, :class:`SampleMeta`), the source protocol (:class:`Source`), label-name
mapping and dataset roots.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypedDict

import numpy as np

from geofm_lib.config import project_root
from geofm_lib.errors import ConfigError


class Footprint(TypedDict):
    bounds: list[float] | None  # lon0, lat0, lon1, lat1 (WGS84); None where the data has none
    date: str | None


class SceneMeta(TypedDict, total=False):
    """The metadata of a scene, as every reader fills it (``scene_meta``) and the shard build
    copies into each of its patches."""

    dataset: str  # catalog key (or the dataset name of a custom source)
    group: str  # resolution group (A, B, C) or "custom"
    sensor: str
    bands: list[str]  # band names, in the image's channel order
    gsd_m: float
    index: int  # the scene's index in its dataset
    source: str  # the reader ("bigearthnet", "torchgeo.EuroSAT", ...)
    date: str | None  # ISO date of acquisition
    pair_id: str | None  # the same place imaged by another sensor (S1 <-> S2)
    footprint: Footprint
    scene_labels: list[str]  # labels of the whole scene
    whole_image: bool  # labels describe the whole image: resized, not cut into patches
    captions: list[str]  # an image-text corpus: the image's own captions
    file: str  # the file it was read from (name only)
    nodata: float | None  # the file's declared nodata value
    nodata_pixels: int


class SampleMeta(SceneMeta, total=False):
    """The ``json`` member of a shard sample: its scene's metadata and the patch's own."""

    split: str  # train | val
    patch: int
    patch_origin_px: list[int]
    image_px: int
    labels: list[str]  # labels inside the patch
    label_idx: list[int]
    dtype: str
    dominant_label: str | None
    native_px: list[int]


SCENE_KEYS = tuple(k for k in SceneMeta.__annotations__
                   if k in ("dataset", "group", "sensor", "bands", "gsd_m", "index", "source",
                            "date", "pair_id", "footprint"))
"""The keys every scene's metadata carries (``scene_meta`` fills them; the build checks)."""


def missing_scene_keys(meta: dict) -> list[str]:
    return [k for k in SCENE_KEYS if k not in meta]


def scene_meta(dataset: str, index: int, source: str, *, group: str, sensor: str,
               bands, gsd_m: float, date: str | None = None, bounds=None,
               pair_id: str | None = None, **extra) -> SceneMeta:
    """The metadata every reader gives a scene (plus reader-specific ``extra`` keys)."""
    return SceneMeta(dataset=dataset, group=group, sensor=sensor, bands=list(bands),
                     gsd_m=gsd_m, index=index, source=source, date=date, pair_id=pair_id,
                     footprint=Footprint(bounds=bounds, date=date), **extra)


@dataclass
class Scene:
    """One scene: image (C, H, W), metadata, and a labeller for pixel windows."""

    dataset: str
    index: int
    image: np.ndarray
    meta: SceneMeta
    vocabulary: tuple[str, ...]
    label_window: Callable[[int, int, int, int], list[str]]
    # the single (dominant) label of a pixel window, where the source knows one
    dominant_window: Callable[[int, int, int, int], str | None] | None = None


class Source(Protocol):
    """What the shard build asks of a reader (``data.build``)."""

    datasets: tuple[str, ...]

    def count(self, dataset: str) -> int:
        """Scenes of a dataset."""

    def scene(self, dataset: str, index: int) -> Scene:
        """One scene, by index in ``range(count(dataset))``."""

    def splits(self, dataset: str) -> dict[str, list[int]] | None:
        """The dataset's own split lists (scene indices), or None to split by seed."""

    def report(self, dataset: str) -> dict | None:
        """What the reader found (files, skipped rows, ...) for the manifest, or None."""


class SourceBase:
    """Defaults of the :class:`Source` protocol: no official splits, nothing to report."""

    datasets: tuple[str, ...] = ()

    def splits(self, dataset: str) -> dict[str, list[int]] | None:
        return None

    def report(self, dataset: str) -> dict | None:
        return None


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
