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

from geofm_lib.bands import BandRecord, resolve_bands
from geofm_lib.config import project_root
from geofm_lib.errors import ConfigError, DataError


class Footprint(TypedDict):
    bounds: list[float] | None  # lon0, lat0, lon1, lat1 (WGS84); None where the data has none
    date: str | None


class SceneMeta(TypedDict, total=False):
    """The metadata of a scene, as every reader fills it (``scene_meta``) and the shard build
    copies into each of its patches."""

    dataset: str  # catalog key (or the dataset name of a custom source)
    group: str  # resolution group (A, B, C) or "custom"
    sensor: str
    bands: list[str]  # canonical band names (geofm_lib.bands), in the image's channel order
    band_info: list[dict]  # one BandRecord per band: wavelength, width, units, nodata, ...
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
    split_key: str  # the unit the split kept whole (``Source.split_key``; "scene <i>" if none)
    patch: int
    patch_origin_px: list[int]
    image_px: int
    labels: list[str]  # labels inside the patch
    label_idx: list[int]
    dtype: str
    dominant_label: str | None
    native_px: list[int]


SCENE_KEYS = tuple(k for k in SceneMeta.__annotations__
                   if k in ("dataset", "group", "sensor", "bands", "band_info", "gsd_m",
                            "index", "source",
                            "date", "pair_id", "footprint"))
"""The keys every scene's metadata carries (``scene_meta`` fills them; the build checks)."""


def missing_scene_keys(meta: dict) -> list[str]:
    return [k for k in SCENE_KEYS if k not in meta]


def scene_meta(dataset: str, index: int, source: str, *, group: str, sensor: str,
               bands, gsd_m: float, date: str | None = None, bounds=None,
               pair_id: str | None = None, **extra) -> SceneMeta:
    """The metadata every reader gives a scene (plus reader-specific ``extra`` keys).

    ``bands``: :class:`~geofm_lib.bands.BandRecord` s (a reader resolves its bands once with
    ``bands.resolve_bands``), or names that need no sensor to resolve (``B04``, ``VV``, ``R``).
    """
    records = list(bands)
    if not records or not isinstance(records[0], BandRecord):
        records = resolve_bands(records, nodata=extra.get("nodata"), where=dataset)
    return SceneMeta(dataset=dataset, group=group, sensor=sensor,
                     bands=[r.name for r in records], band_info=[r.to_dict() for r in records],
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
    # False for a pixel window too empty to keep (e.g. mostly outside the valid area); the
    # build drops such patches and counts them
    keep_window: Callable[[int, int, int, int], bool] | None = None
    # dense labels of a pixel window, where the source has them (``data.masks``): the class
    # mask (uint8 vocabulary indices and codes) and the tree cover in percent
    mask_window: Callable[[int, int, int, int], np.ndarray] | None = None
    trees_window: Callable[[int, int, int, int], np.ndarray] | None = None
    # after the build labelled every kept patch: the scene's annotated objects, and those in
    # no patch's labels by why (``[(y, x, kept)]`` of every window cut, the patch side)
    object_counts: Callable[[list[tuple[int, int, bool]], int], dict[str, int]] | None = None


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

    def split_key(self, dataset: str, index: int) -> str | None:
        """The unit a random split keeps whole (the scene a frame or tile was cut from, the
        place of a location, a block of a large scene), or None: the scene is its own unit."""


class SourceBase:
    """Defaults of the :class:`Source` protocol: no official splits, nothing to report."""

    datasets: tuple[str, ...] = ()

    def splits(self, dataset: str) -> dict[str, list[int]] | None:
        return None

    def report(self, dataset: str) -> dict | None:
        return None

    def split_key(self, dataset: str, index: int) -> str | None:
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


_LABEL_ALIASES = {"sealake": "Sea or lake",  # EuroSAT
                  "lifesavingappliances": "Life-saving appliance"}  # SeaDronesSee v2


# options every reader of raster files takes to describe its bands (docs/bands.md)
BAND_OPTIONS = ("band_names", "band_wavelengths_nm", "band_fwhm_nm", "sensor", "units", "nodata")

_DESCRIBED_NM = re.compile(r"(\d+(?:\.\d+)?)\s*(nm|nanomet\w*|um|µm|microm\w*)\b", re.I)

_COLOUR_INTERP = {"red": "R", "green": "G", "blue": "B"}


def _tag_wavelength(tags: dict, imagery: dict) -> tuple[float | None, float | None]:
    """(centre, width) in nm from a band's metadata: GDAL's IMAGERY domain
    (``CENTRAL_WAVELENGTH_UM``, ``FWHM_UM``) or ENVI-style ``wavelength`` / ``fwhm`` with
    ``wavelength_units`` (values below 100 without units are micrometres)."""
    if imagery.get("CENTRAL_WAVELENGTH_UM"):
        fwhm = imagery.get("FWHM_UM")
        return (float(imagery["CENTRAL_WAVELENGTH_UM"]) * 1000.0,
                float(fwhm) * 1000.0 if fwhm else None)
    low = {k.lower(): v for k, v in tags.items()}
    if "wavelength" not in low:
        return None, None
    units = low.get("wavelength_units", "").lower()
    scale = 1000.0 if units.startswith(("micro", "um", "µm")) else 1.0
    center = float(low["wavelength"]) * scale
    if not units and center < 100:
        scale, center = 1000.0, center * 1000.0
    return center, float(low["fwhm"]) * scale if low.get("fwhm") else None


def _described_wavelength(description: str | None) -> float | None:
    match = _DESCRIBED_NM.search(description or "")
    if not match:
        return None
    value = float(match.group(1))
    return value if match.group(2).lower().startswith("n") else value * 1000.0


def raster_bands(src, opts: dict, where: str) -> list[BandRecord]:
    """Band records of an open rasterio dataset.

    Names: ``options.band_names``, else the file's band descriptions, else its colour
    interpretation (red/green/blue), else ``band1..N``. Wavelengths: ``options.
    band_wavelengths_nm``, else each band's metadata (GDAL IMAGERY or ENVI ``wavelength``
    tags), else a wavelength in the description (``band 17 (463.7 nm)``), else the table of
    ``options.sensor`` (a catalog sensor or ``enmap``). Nodata: ``options.nodata`` (one value
    or one per band), else the file's per-band nodata values.
    """
    n = src.count
    names = opts.get("band_names")
    descriptions = list(src.descriptions)
    if names is None:
        if all(descriptions):
            names = descriptions
        elif all(c.name in _COLOUR_INTERP for c in src.colorinterp):
            names = [_COLOUR_INTERP[c.name] for c in src.colorinterp]
        else:
            names = [f"band{i + 1}" for i in range(n)]
    if len(names) != n:
        raise ConfigError(f"{where}: band_names has {len(names)} names for the {n} bands of "
                          f"the file")
    centers, widths = [], []
    for i in range(1, n + 1):
        try:
            imagery = src.tags(i, ns="IMAGERY")
        except Exception:  # noqa: BLE001 - older GDAL has no IMAGERY domain
            imagery = {}
        center, width = _tag_wavelength(src.tags(i), imagery)
        centers.append(center if center is not None
                       else _described_wavelength(descriptions[i - 1]))
        widths.append(width)
    given = opts.get("band_wavelengths_nm")
    nodata = opts.get("nodata", list(src.nodatavals))
    try:
        return resolve_bands(names, sensor=opts.get("sensor"),
                             wavelengths_nm=given if given is not None else
                             (centers if any(c is not None for c in centers) else None),
                             fwhm_nm=opts.get("band_fwhm_nm") or
                             (widths if any(w is not None for w in widths) else None),
                             units=opts.get("units"), nodata=nodata, where=where)
    except DataError as exc:
        raise ConfigError(str(exc)) from None


def usage(found: int | None, used: int, **not_used: int) -> dict:
    """The part of a reader's report every reader gives: what it found (files, rows, patches),
    how many it used, and how many it left out for each reason (reasons with 0 left out)."""
    return {"found": found, "used": used,
            "not_used": {why.replace("_", " "): n for why, n in not_used.items() if n}}


def check_options(opts: dict, allowed, where: str) -> None:
    """Refuse reader options nobody reads (a typo would be ignored silently)."""
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; this reader takes "
                          f"{', '.join(sorted(allowed))}")
