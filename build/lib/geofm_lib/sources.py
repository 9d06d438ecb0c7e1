"""Where samples come from: the simulator (default), BigEarthNet v1 folders, GeoTIFF scenes.

Every source yields :class:`Scene` objects with the same shape: an image (C, H, W) in the
product's own dtype, metadata, and a function that labels any pixel window of the scene. The
shard writer cuts scenes into patches and asks each patch for its own labels, so patching works
the same way on simulated scenes, real BigEarthNet patches and a large labelled GeoTIFF.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from . import simulate
from .catalog import DATASETS, SENSORS, get_dataset
from .config import Config, ConfigError


@dataclass
class Scene:
    """One scene: image (C, H, W), metadata, and a labeller for pixel windows."""

    dataset: str
    index: int
    image: np.ndarray
    meta: dict
    vocabulary: tuple[str, ...]
    label_window: Callable[[int, int, int, int], list[str]]


class SimulatorSource:
    """Scenes rendered by :mod:`geofm_lib.simulate` at ``scene_px`` pixels."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.datasets = cfg.dataset_keys
        scene_px = cfg.effective_scene_px
        for key in self.datasets:
            if scene_px < simulate.MIN_IMAGE_PX:
                raise ConfigError(f"image_px/scene_px={scene_px} is too small for {key}: "
                                  f"use at least {simulate.MIN_IMAGE_PX}")
            sensor = SENSORS[DATASETS[key].sensor]
            coarsest_m = max(b.gsd_m for b in sensor.bands)
            need = int(np.ceil(2 * coarsest_m / DATASETS[key].gsd_m))  # two coarsest pixels
            if scene_px < need:
                raise ConfigError(
                    f"image_px={scene_px} is too small for {key}: its coarsest band "
                    f"({coarsest_m:g} m) needs two pixels across, {need} px at "
                    f"{DATASETS[key].gsd_m:g} m; use image_px >= {need}")

    def count(self, dataset: str) -> int:
        return self.cfg.samples_per_dataset

    def scene(self, dataset: str, index: int) -> Scene:
        s = simulate.render(dataset, index, seed=self.cfg.seed,
                            image_px=self.cfg.effective_scene_px)
        ds = get_dataset(dataset)
        labeller = partial(_window, s.layers, ds.labels,
                           simulate.RECIPES[dataset].min_area_fraction)
        return Scene(dataset, index, s.image, s.meta, ds.labels, labeller)


def _window(layers, vocabulary, min_frac, y0, x0, h, w):
    return simulate.window_labels(layers, y0, x0, h, w, vocabulary, min_frac)


# --- BigEarthNet v1.0 folders ------------------------------------------------------------------

BIGEARTHNET_S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                        "B11", "B12")


def read_bigearthnet_s2(folder: Path) -> tuple[np.ndarray, dict]:
    """Read one BigEarthNet-S2 patch folder: 12 bands resampled to the 10 m grid (120 px).

    20 m and 60 m bands are upsampled by pixel replication (nearest), which keeps the original
    values; reflectance stays uint16 x 10000 as in the product.
    """
    import rasterio

    name = folder.name
    bands = []
    for band in BIGEARTHNET_S2_BANDS:
        path = folder / f"{name}_{band}.tif"
        if not path.is_file():
            raise FileNotFoundError(f"BigEarthNet-S2 patch {name} lacks band file {path.name}")
        with rasterio.open(path) as src:
            arr = src.read(1)
        factor = 120 // arr.shape[0]
        bands.append(np.repeat(np.repeat(arr, factor, 0), factor, 1) if factor > 1 else arr)
    meta = json.loads((folder / f"{name}_labels_metadata.json").read_text())
    return np.stack(bands).astype(np.uint16), meta


def read_bigearthnet_s1(folder: Path) -> tuple[np.ndarray, dict]:
    """Read one BigEarthNet-S1 patch folder: VV and VH backscatter in dB, float32 (2, 120, 120)."""
    import rasterio

    name = folder.name
    bands = []
    for pol in ("VV", "VH"):
        with rasterio.open(folder / f"{name}_{pol}.tif") as src:
            bands.append(src.read(1).astype(np.float32))
    meta = json.loads((folder / f"{name}_labels_metadata.json").read_text())
    return np.stack(bands), meta


def _utm_bounds_to_lonlat(meta: dict) -> list[float] | None:
    try:
        from pyproj import CRS, Transformer

        c = meta["coordinates"]
        crs = CRS.from_wkt(meta["projection"])
        tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        lry = c.get("lry", c.get("lly"))
        lon0, lat0 = tr.transform(c["ulx"], lry)
        lon1, lat1 = tr.transform(c["lrx"], c["uly"])
        return [round(lon0, 6), round(lat0, 6), round(lon1, 6), round(lat1, 6)]
    except Exception:  # noqa: BLE001 - a footprint is optional metadata
        return None


class BigEarthNetSource:
    """Real BigEarthNet v1.0 patches from ``BigEarthNet-S2/`` and ``BigEarthNet-S1/`` folders."""

    SUBDIRS = {"bigearthnet_s2": "BigEarthNet-S2", "bigearthnet_s1": "BigEarthNet-S1"}

    def __init__(self, cfg: Config):
        if not cfg.source_path:
            raise ConfigError("source='bigearthnet' needs source_path: the folder that holds "
                              "BigEarthNet-S2/ and/or BigEarthNet-S1/")
        root = Path(cfg.source_path)
        self.cfg = cfg
        self.folders = {}
        for key in cfg.dataset_keys:
            if key not in self.SUBDIRS:
                raise ConfigError(f"source='bigearthnet' provides bigearthnet_s2/_s1, not "
                                  f"{key}; set group='A'")
            sub = root / self.SUBDIRS[key]
            if sub.is_dir():
                self.folders[key] = sorted(p for p in sub.iterdir() if p.is_dir())
        if not self.folders:
            raise ConfigError(f"no BigEarthNet-S2/ or BigEarthNet-S1/ folder under "
                              f"{root.name!r}; point source_path at the BigEarthNet root")
        if cfg.effective_scene_px != 120 or cfg.image_px != 120:
            raise ConfigError("BigEarthNet labels belong to whole 120 px patches; set "
                              "image_px=120 and scene_px=0")
        self.datasets = tuple(self.folders)

    def count(self, dataset: str) -> int:
        return min(len(self.folders[dataset]), self.cfg.samples_per_dataset)

    def scene(self, dataset: str, index: int) -> Scene:
        folder = self.folders[dataset][index]
        reader = read_bigearthnet_s2 if dataset == "bigearthnet_s2" else read_bigearthnet_s1
        image, raw = reader(folder)
        ds = get_dataset(dataset)
        labels = [lab for lab in ds.labels if lab in set(raw["labels"])]
        date = (raw.get("acquisition_date") or raw.get("acquisition_time", ""))[:10]
        twin = raw.get("corresponding_s2_patch")
        meta = {
            "dataset": dataset, "group": ds.group, "sensor": SENSORS[ds.sensor].name,
            "bands": list(ds.bands), "gsd_m": 10.0, "index": index, "patch_name": folder.name,
            "footprint": {"bounds": _utm_bounds_to_lonlat(raw), "date": date},
            "date": date, "pair_id": twin or (folder.name if dataset == "bigearthnet_s2"
                                              else None),
            "scene_labels": labels, "source": "bigearthnet",
        }
        return Scene(dataset, index, image, meta, ds.labels,
                     lambda y0, x0, h, w: list(labels))


# --- a GeoTIFF scene with vector labels -----------------------------------------------------------

class GeoTiffSource:
    """A large GeoTIFF scene cut into patches, labels from polygons (GeoPackage, column 'name').

    ``source_path`` names the GeoTIFF; the labels are read from ``<stem>_polygons.gpkg`` beside
    it. Polygons are reprojected to the raster's CRS and burnt into a class map; a patch gets a
    label when that class covers at least 1 % of it. Patches that are mostly nodata are skipped.
    """

    dataset = "geotiff"

    def __init__(self, cfg: Config):
        import geopandas as gpd
        import rasterio
        from rasterio.features import rasterize

        if not cfg.source_path:
            raise ConfigError("source='geotiff' needs source_path: a GeoTIFF file with "
                              "<stem>_polygons.gpkg beside it")
        tif = Path(cfg.source_path)
        vec = tif.with_name(tif.stem + "_polygons.gpkg")
        if not tif.is_file() or not vec.is_file():
            raise ConfigError(f"source_path {tif.name!r} must be a GeoTIFF with "
                              f"{vec.name!r} beside it")
        self.cfg = cfg
        self.tif = tif
        with rasterio.open(tif) as src:
            self.image = src.read()
            self.nodata = src.nodata
            self.transform = src.transform
            self.crs = src.crs
            self.gsd_m = float(abs(src.transform.a))
        polys = gpd.read_file(vec).to_crs(self.crs)
        self.vocabulary = tuple(sorted(polys["name"].unique()))
        shapes = [(geom, self.vocabulary.index(n) + 1)
                  for geom, n in zip(polys.geometry, polys["name"])]
        self.class_map = rasterize(shapes, out_shape=self.image.shape[1:],
                                   transform=self.transform, fill=0, dtype="int16")
        p = cfg.image_px
        h, w = self.image.shape[1:]
        cells = [(y, x) for y in range(0, h - p + 1, p) for x in range(0, w - p + 1, p)]
        valid = self.image.any(axis=0) if self.nodata in (None, 0) else (
            self.image != self.nodata).all(axis=0)
        self.cells = [(y, x) for y, x in cells if valid[y:y + p, x:x + p].mean() > 0.5]
        self.datasets = (self.dataset,)

    def count(self, dataset: str) -> int:
        return min(len(self.cells), self.cfg.samples_per_dataset)

    def scene(self, dataset: str, index: int) -> Scene:
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window, bounds

        p = self.cfg.image_px
        y, x = self.cells[index]
        image = self.image[:, y:y + p, x:x + p]
        cmap = self.class_map[y:y + p, x:x + p]

        def labeller(y0, x0, h, w):
            counts = np.bincount(cmap[y0:y0 + h, x0:x0 + w].ravel(),
                                 minlength=len(self.vocabulary) + 1)
            return [self.vocabulary[i - 1] for i in range(1, len(counts))
                    if counts[i] >= max(1, 0.01 * h * w)]

        b = transform_bounds(self.crs, "EPSG:4326",
                             *bounds(Window(x, y, p, p), self.transform))
        meta = {
            "dataset": self.dataset, "group": "custom", "sensor": self.tif.stem,
            "bands": [f"band{i + 1}" for i in range(image.shape[0])], "gsd_m": self.gsd_m,
            "index": index, "origin_px": [y, x],
            "footprint": {"bounds": [round(v, 6) for v in b], "date": None},
            "date": None, "pair_id": None, "scene_labels": labeller(0, 0, p, p),
            "source": "geotiff",
        }
        return Scene(self.dataset, index, np.ascontiguousarray(image), meta, self.vocabulary,
                     labeller)


def open_source(cfg: Config):
    """The scene source named by ``cfg.source``."""
    return {"simulator": SimulatorSource, "bigearthnet": BigEarthNetSource,
            "geotiff": GeoTiffSource}[cfg.source](cfg)
