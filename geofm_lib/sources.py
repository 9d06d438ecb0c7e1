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
from .shards import ShardError


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
        sensor = None
        if self.cfg.s2_product == "L1C" and DATASETS[dataset].sensor == "sentinel2_l2a":
            sensor = "sentinel2_l1c"  # 13 bands, as SEN12MS and EuroSAT
        s = simulate.render(dataset, index, seed=self.cfg.seed,
                            image_px=self.cfg.effective_scene_px, sensor=sensor)
        ds = get_dataset(dataset)
        labeller = partial(_window, s.layers, ds.labels,
                           simulate.RECIPES[dataset].min_area_fraction)
        return Scene(dataset, index, s.image, s.meta, ds.labels, labeller,
                     partial(simulate.window_dominant, s.layers))


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
    """A large georeferenced scene (any CRS) cut into ``image_px`` patches with a stride,
    optionally labelled by a vector file of polygons and/or points.

    * Vector labels: GeoPackage or GeoJSON (any OGR format), reprojected to the raster's CRS;
      ``label_column`` (default ``name``) holds the class. A patch carries a polygon class when
      the class covers at least 1 % of it (intersection area, by burnt pixels) and a point class
      when a point falls inside it. Without a vector file the scene is unlabelled.
    * ``source: geotiff`` + ``source_path`` reads ``<stem>_polygons.gpkg`` beside the file;
      a ``sources`` entry ``{reader: geotiff, root: scene.tif, options: {labels: ...,
      label_column: ..., stride_px: ..., band_names: [...]}}`` says it explicitly.
    * Nodata: patches with more than ``max_nodata`` (default 0.5) nodata or NaN pixels are
      skipped and counted (``report``); the rest keep their nodata pixels, counted per patch.
    * Footprints: patch bounds reprojected to WGS84.
    """

    def __init__(self, cfg: Config, dataset: str = "geotiff", spec=None):
        import geopandas as gpd
        import rasterio
        from rasterio.features import rasterize

        opts = dict(spec.options) if spec is not None else {}
        path = (spec.root if spec is not None else cfg.source_path)
        if not path:
            raise ConfigError(f"{dataset}: a GeoTIFF source needs its file (source_path, or "
                              f"root in sources.{dataset})")
        tif = Path(_resolve_root(path))
        if not tif.is_file():
            raise ConfigError(f"{dataset}: no GeoTIFF at {tif.name!r}")
        labels = opts.get("labels")
        if labels is not None:
            vec = Path(_resolve_root(labels))
            if not vec.is_file():
                raise ConfigError(f"{dataset}: labels file {vec.name!r} not found")
        else:
            vec = next((c for c in (tif.with_name(tif.stem + "_polygons.gpkg"),
                                    tif.with_name(tif.stem + ".geojson"),
                                    tif.with_name(tif.stem + "_points.gpkg")) if c.is_file()),
                       None)
            if vec is None and spec is None:
                raise ConfigError(f"source_path {tif.name!r} must be a GeoTIFF with "
                                  f"{tif.stem + '_polygons.gpkg'!r} beside it (or use a "
                                  f"`sources` entry with options.labels)")
        self.cfg, self.dataset, self.tif = cfg, dataset, tif
        self.max_nodata = float(opts.get("max_nodata", 0.5))
        try:
            with rasterio.open(tif) as src:
                self.image = src.read()
                self.nodata = src.nodata
                self.transform = src.transform
                self.crs = src.crs
                self.gsd_m = float(abs(src.transform.a))
                descriptions = list(src.descriptions)
        except rasterio.errors.RasterioIOError as exc:
            raise ConfigError(f"{dataset}: {tif.name!r} is not a raster rasterio/GDAL can read "
                              f"({str(exc)[:200]}); give the scene's GeoTIFF (.tif) as root"
                              ) from None
        if self.crs is None:
            raise ConfigError(f"{dataset}: {tif.name} has no CRS; footprints and vector labels "
                              "need a georeferenced raster")
        names = opts.get("band_names") or (descriptions if all(descriptions) else None)
        self.band_names = list(names) if names else [f"band{i + 1}"
                                                     for i in range(self.image.shape[0])]
        if len(self.band_names) != self.image.shape[0]:
            raise ConfigError(f"{dataset}: band_names has {len(self.band_names)} names for "
                              f"{self.image.shape[0]} bands in {tif.name}")
        h, w = self.image.shape[1:]
        self.class_map = np.zeros((h, w), np.int16)
        self.point_map = np.zeros((h, w), np.int16)
        self.vocabulary: tuple[str, ...] = ()
        if vec is not None:
            column = opts.get("label_column", "name")
            gdf = gpd.read_file(vec)
            if column not in gdf.columns:
                raise ConfigError(f"{dataset}: {vec.name} has no column {column!r}; columns: "
                                  f"{', '.join(map(str, gdf.columns))} (set label_column)")
            gdf = gdf.to_crs(self.crs)
            self.vocabulary = tuple(sorted(map(str, gdf[column].unique())))
            kinds = gdf.geometry.geom_type
            for kind, target in (("Polygon", self.class_map), ("Point", self.point_map)):
                part = gdf[kinds.str.contains(kind)]
                if len(part):
                    shapes = [(g, self.vocabulary.index(str(n)) + 1)
                              for g, n in zip(part.geometry, part[column])]
                    target[:] = rasterize(shapes, out_shape=(h, w), transform=self.transform,
                                          fill=0, dtype="int16")
        p = cfg.image_px
        stride = int(opts.get("stride_px", p))
        if stride < 1:
            raise ConfigError(f"{dataset}: stride_px must be at least 1")
        if h < p or w < p:
            raise ConfigError(f"{dataset}: the scene ({h}x{w} px) is smaller than "
                              f"image_px={p}")
        invalid = ~np.isfinite(self.image).all(axis=0) if self.image.dtype.kind == "f" \
            else np.zeros((h, w), bool)
        if self.nodata is not None:
            invalid |= (self.image == self.nodata).all(axis=0)
        elif self.image.dtype.kind in "iu":
            invalid |= ~self.image.any(axis=0)  # all bands 0: outside the acquisition
        self.invalid = invalid
        cells = [(y, x) for y in range(0, h - p + 1, stride) for x in range(0, w - p + 1, stride)]
        self.cells = [(y, x) for y, x in cells
                      if invalid[y:y + p, x:x + p].mean() <= self.max_nodata]
        self.skipped = len(cells) - len(self.cells)
        self.datasets = (dataset,)

    def count(self, dataset: str) -> int:
        return min(len(self.cells), self.cfg.samples_per_dataset)

    def report(self, dataset: str) -> dict:
        return {"reader": "geotiff", "file": self.tif.name, "patches": len(self.cells),
                "skipped_mostly_nodata": self.skipped, "max_nodata": self.max_nodata,
                "crs": str(self.crs), "vocabulary_from": "vector file" if self.vocabulary
                else "none (unlabelled scene)"}

    def scene(self, dataset: str, index: int) -> Scene:
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window, bounds

        p = self.cfg.image_px
        y, x = self.cells[index]
        image = self.image[:, y:y + p, x:x + p]
        cmap = self.class_map[y:y + p, x:x + p]
        pmap = self.point_map[y:y + p, x:x + p]
        n = len(self.vocabulary)

        def labeller(y0, x0, h, w):
            area = np.bincount(cmap[y0:y0 + h, x0:x0 + w].ravel(), minlength=n + 1)
            points = np.bincount(pmap[y0:y0 + h, x0:x0 + w].ravel(), minlength=n + 1)
            return [self.vocabulary[i - 1] for i in range(1, n + 1)
                    if area[i] >= max(1, 0.01 * h * w) or points[i] > 0]

        b = transform_bounds(self.crs, "EPSG:4326",
                             *bounds(Window(x, y, p, p), self.transform))
        meta = {
            "dataset": dataset, "group": "custom", "sensor": self.tif.stem,
            "bands": list(self.band_names), "gsd_m": self.gsd_m,
            "index": index, "origin_px": [y, x], "file": self.tif.name,
            "footprint": {"bounds": [round(v, 6) for v in b], "date": None},
            "date": None, "pair_id": None, "scene_labels": labeller(0, 0, p, p),
            "nodata_pixels": int(self.invalid[y:y + p, x:x + p].sum()),
            "nodata": None if self.nodata is None else float(self.nodata),
            "source": "geotiff",
        }
        return Scene(dataset, index, np.ascontiguousarray(image), meta, self.vocabulary,
                     labeller)


def open_source(cfg: Config):
    """The scene source of a configuration: ``sources`` per dataset (the rest simulated), or
    the single ``source`` (simulator, BigEarthNet folders, a GeoTIFF scene)."""
    if cfg.sources:
        return MultiSource(cfg)
    return {"simulator": SimulatorSource, "bigearthnet": BigEarthNetSource,
            "geotiff": GeoTiffSource}[cfg.source](cfg)


# --- torchgeo datasets (issue 5) ------------------------------------------------------------------

# What each supported torchgeo class expects under its root (shown when the root is incomplete).
TORCHGEO_LAYOUTS = {
    "BigEarthNet": "BigEarthNet-v1.0/<S2 patch>/<patch>_B01.tif ... and "
                   "<patch>_labels_metadata.json, BigEarthNet-S1-v1.0/<S1 patch>/<patch>_VV.tif, "
                   "_VH.tif and labels json, and bigearthnet-{train,val,test}.csv with rows "
                   "'<S2 patch>,<S1 patch>'",
    "EuroSAT": "ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<n>.tif "
               "(13-band GeoTIFFs) and eurosat-{train,val,test}.txt (file names)",
    "UCMerced": "UCMerced_LandUse/Images/<class>/<class><NN>.tif and "
                "uc_merced-{train,val,test}.txt (file names)",
    "RESISC45": "NWPU-RESISC45/<class>/<class>_<NNN>.jpg and resisc45-{train,val,test}.txt",
    "BigEarthNetV2": "BigEarthNet-S2/<tile>/<patch>/<patch>_B02.tif ..., BigEarthNet-S1/<tile>/"
                     "<S1 patch>/<S1 patch>_VV.tif and _VH.tif, Reference_Maps/<tile>/<patch>/"
                     "<patch>_reference_map.tif and metadata.parquet (patch_id, s1_name, split, "
                     "labels)",
    "SSL4EOS12": "<split: s1|s2c|s2a>/<location, 7 digits>/<season folder named by date>/"
                 "<band>.tif (e.g. s2c/0000000/20200101T103421_.../B04.tif)",
    "SEN12MS": "ROIs1158_spring/, ROIs1868_summer/, ROIs1970_fall/, ROIs2017_winter/ each with "
               "{lc,s1,s2}_<scene>/ROIs<...>_{lc,s1,s2}_<scene>_p<patch>.tif, and "
               "{train,test}_list.txt naming the s2 files (torchgeo cannot download SEN12MS; "
               "its docstring gives the wget script)",
}
# product dtype of each class's pixels (torchgeo hands out float tensors)
_TORCHGEO_DTYPE = {"EuroSAT": np.uint16, "UCMerced": np.uint8, "RESISC45": np.uint8}
_LABEL_ALIASES = {"sealake": "Sea or lake"}


def _norm(name: str) -> str:
    import re

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


def _bigearthnet_class():
    """torchgeo's BigEarthNet, reading Sentinel-1 as float32 dB.

    torchgeo 0.8.1 reads every band with ``out_dtype='int32'``, which truncates Sentinel-1
    backscatter (-12.7 dB -> -12), and orders the polarisations VH, VV (sorted file names);
    this subclass reads the same files at full precision in the order VV, VH and keeps
    torchgeo's folder handling, splits, labels and Sentinel-2 reading.
    """
    import rasterio
    import torch
    from rasterio.enums import Resampling
    from torchgeo.datasets import BigEarthNet

    class BigEarthNetFloat(BigEarthNet):
        def _load_image(self, index):
            if self.bands == "s2":
                return super()._load_image(index)
            arrays = []  # VV first, then VH (torchgeo's sorted glob gives VH, VV), then S2
            paths = self._load_paths(index)
            s1 = sorted((q for q in paths if q.endswith(("_VV.tif", "_VH.tif"))),
                        key=lambda q: not q.endswith("_VV.tif"))
            paths = s1 + [q for q in paths if q not in s1]
            for path in paths:
                with rasterio.open(path) as src:
                    dtype = "float32" if src.dtypes[0].startswith("float") else "int32"
                    arrays.append(src.read(1, out_shape=self.image_size, out_dtype=dtype,
                                           resampling=Resampling.bilinear))
            return torch.from_numpy(np.stack(arrays).astype(np.float32))

    return BigEarthNetFloat


def _bigearthnet_v2_class():
    """torchgeo's BigEarthNetV2 with Sentinel-1 read as float32 dB in VV, VH order (0.8.1 reads
    int32, truncating the dB values, in sorted VH, VV order)."""
    import glob
    import os

    import rasterio
    import torch
    from rasterio.enums import Resampling
    from torchgeo.datasets import BigEarthNetV2

    class BigEarthNetV2Float(BigEarthNetV2):
        def _load_image(self, index, sensor):
            if sensor == "s2":
                return super()._load_image(index, sensor)
            s1_name = self.metadata_df.loc[index]["s1_name"]
            folder = os.path.join(self.root, self.dir_file_names["s1"],
                                  "_".join(s1_name.split("_")[0:-3]), s1_name)
            paths = sorted(glob.glob(os.path.join(folder, "*.tif")),
                           key=lambda q: not q.endswith("_VV.tif"))
            arrays = []
            for path in paths:
                with rasterio.open(path) as src:
                    arrays.append(src.read(1, out_shape=self.image_size, out_dtype="float32",
                                           resampling=Resampling.bilinear))
            return torch.from_numpy(np.stack(arrays))

    return BigEarthNetV2Float


def _resolve_root(root: str | None) -> str | None:
    """A source root as given, or relative to the project root when not absolute."""
    if root is None:
        return None
    from .config import project_root

    path = Path(root).expanduser()
    return str(path if path.is_absolute() else project_root() / path)


class TorchGeoSource:
    """One catalog dataset read through a torchgeo dataset class on a local root.

    Pixels and labels come from torchgeo; geometry comes from the files where they carry it
    (BigEarthNet's metadata JSON, EuroSAT's GeoTIFF transforms). Downloading is off unless the
    spec says ``download: true``.
    """

    def __init__(self, dataset: str, spec, cfg: Config):
        self.dataset, self.spec, self.cfg = dataset, spec, cfg
        cls_name = spec.dataset_class
        if cls_name not in TORCHGEO_LAYOUTS:
            raise ConfigError(f"sources.{dataset}.dataset_class={cls_name!r} is not supported; "
                              f"choose one of {', '.join(TORCHGEO_LAYOUTS)}")
        if not spec.root:
            raise ConfigError(f"sources.{dataset} needs root: the folder holding "
                              f"{TORCHGEO_LAYOUTS[cls_name]}")
        self.ds_info = get_dataset(dataset)
        opts = dict(spec.options)
        if cls_name == "BigEarthNet":
            want = 19 if dataset.endswith("_19") else 43
            bands = "all" if "_s1s2" in dataset else ("s1" if "_s1" in dataset else "s2")
            opts.setdefault("num_classes", want)
            opts.setdefault("bands", bands)
            if opts["num_classes"] != want or opts["bands"] != bands:
                raise ConfigError(f"sources.{dataset}: options {opts} do not fit the dataset "
                                  f"key (bands {bands}, {want} classes)")
        if cls_name == "BigEarthNetV2":
            bands = "s1" if "_s1" in dataset else "s2"
            opts.setdefault("bands", bands)
            if opts["bands"] != bands:
                raise ConfigError(f"sources.{dataset}: options {opts} do not fit the dataset "
                                  f"key (bands {bands})")
        if cls_name == "SSL4EOS12":
            want = "s1" if dataset.endswith("_s1") else "s2c"
            split_opt = opts.pop("split", want)
            if split_opt != want:
                raise ConfigError(f"sources.{dataset}: split {split_opt!r} does not fit the "
                                  f"dataset key (split {want})")
            opts["split"] = want
            if spec.splits == "official":
                raise ConfigError(f"sources.{dataset}: SSL4EO-S12 has no official splits; use "
                                  "splits: random")
        if cls_name == "EuroSAT" and dataset == "eurosat_rgb":
            opts.setdefault("bands", ("B04", "B03", "B02"))
        if "bands" in opts and isinstance(opts["bands"], list):
            opts["bands"] = tuple(opts["bands"])
        split_opt = opts.pop("split", "train") if cls_name != "SSL4EOS12" else opts.pop("split")
        val_name = "test" if cls_name == "SEN12MS" else "val"  # SEN12MS has train/test only
        names = ("train", val_name) if spec.splits == "official" else (split_opt,)
        self.parts = {n: self._open(cls_name, n, opts) for n in names}
        first = next(iter(self.parts.values()))
        if cls_name == "BigEarthNet":
            raw_names = first.class_sets[opts["num_classes"]]
        elif cls_name == "BigEarthNetV2":
            raw_names = first.class_set
        elif cls_name == "SEN12MS":
            raw_names = self.ds_info.labels  # IGBP codes 1-17 in catalog order
        elif cls_name == "SSL4EOS12":
            raw_names = ()  # unlabelled
        else:
            raw_names = first.classes
        self.labels = label_mapping(raw_names, self.ds_info.labels)
        self.bands = self._band_names(first, cls_name, opts)
        self.datasets = (dataset,)
        self._index = self._plan()

    def _open(self, cls_name: str, split: str, opts: dict):
        import inspect

        import torchgeo.datasets as tgd
        from torchgeo.datasets.errors import DatasetNotFoundError

        cls = {"BigEarthNet": _bigearthnet_class, "BigEarthNetV2": _bigearthnet_v2_class}.get(
            cls_name, lambda: getattr(tgd, cls_name))()
        kwargs = dict(opts)
        if "download" in inspect.signature(cls.__init__).parameters:
            kwargs["download"] = self.spec.download
        elif self.spec.download:
            raise ConfigError(f"sources.{self.dataset}: torchgeo's {cls_name} cannot download; "
                              f"fetch it as its documentation says, then point root at it")
        try:
            return cls(root=_resolve_root(self.spec.root), split=split, **kwargs)
        except DatasetNotFoundError as exc:
            raise ConfigError(
                f"sources.{self.dataset}: torchgeo's {cls_name} found no complete dataset in "
                f"root {Path(self.spec.root).name!r} ({exc}). Expected layout under root: "
                f"{TORCHGEO_LAYOUTS[cls_name]}. Set download: true in the source spec to let "
                f"torchgeo download it (needs internet)") from None
        except (FileNotFoundError, AssertionError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"sources.{self.dataset}: {cls_name}(split={split!r}, {opts}) failed: "
                f"{type(exc).__name__}: {exc}. Expected layout under root: "
                f"{TORCHGEO_LAYOUTS[cls_name]}") from None

    @staticmethod
    def _band_names(ds, cls_name: str, opts: dict) -> list[str]:
        if cls_name in ("BigEarthNet", "BigEarthNetV2"):
            return {"s2": list(BIGEARTHNET_S2_BANDS), "s1": ["VV", "VH"],
                    "all": ["VV", "VH", *BIGEARTHNET_S2_BANDS]}[opts["bands"]]
        if cls_name in ("EuroSAT", "SEN12MS", "SSL4EOS12"):
            return list(ds.bands)
        return ["R", "G", "B"]

    def _plan(self) -> dict[str, list[tuple[str, int]]]:
        """(part, index) of every scene, per split of the shards, capped and seeded. The two
        sensors of a pair family draw with the same seed, so a cap picks the same places for
        both (given the same places on disk)."""
        from .catalog import pair_family

        rng = np.random.default_rng([self.cfg.seed, 11, *pair_family(self.dataset).encode()])
        n = self.cfg.samples_per_dataset
        if self.spec.splits == "official":
            caps = {"train": max(n - max(int(round(n * self.cfg.val_fraction)), 1), 1),
                    "val": max(int(round(n * self.cfg.val_fraction)), 1)}
            out = {}
            for split, part_name in zip(("train", "val"), self.parts, strict=True):
                part = self.parts[part_name]
                take = min(len(part), caps[split])
                out[split] = [(part_name, int(i)) for i in sorted(rng.choice(len(part), take,
                                                                             replace=False))]
            return out
        (name, part), = self.parts.items()
        if self.spec.dataset_class == "SSL4EOS12":
            # torchgeo reports the full dataset's length (251079) whatever is on disk: count
            # the location folders that are there
            import os

            present = sorted(int(d) for d in os.listdir(Path(part.root) / part.split)
                             if d.isdigit())
            take = min(len(present), n)
            chosen = sorted(rng.choice(present, take, replace=False).tolist())
            return {"all": [(name, i) for i in chosen]}
        take = min(len(part), n)
        chosen = sorted(rng.choice(len(part), take, replace=False).tolist())
        return {"all": [(name, i) for i in chosen]}

    def count(self, dataset: str) -> int:
        return sum(len(v) for v in self._index.values())

    def splits(self, dataset: str) -> dict[str, list[int]] | None:
        """Official train/val membership when asked for, else None (random split by scene)."""
        if self.spec.splits != "official":
            return None
        out, k = {}, 0
        for split in ("train", "val"):
            out[split] = list(range(k, k + len(self._index[split])))
            k += len(self._index[split])
        return out

    def _locate(self, index: int) -> tuple[str, int]:
        flat = [x for v in self._index.values() for x in v]
        return flat[index]

    def scene(self, dataset: str, index: int) -> Scene:
        part_name, i = self._locate(index)
        part = self.parts[part_name]
        if self.spec.dataset_class == "SSL4EOS12":
            import random

            random.seed(hash((self.cfg.seed, i)))  # torchgeo draws seasons with `random`
        sample = part[i]
        image = sample["image"].numpy()
        cls_name = self.spec.dataset_class
        dominant = None  # multi-label datasets without a land-cover map have none
        if cls_name == "SSL4EOS12":
            image = image.astype(np.float32 if self.bands[0] == "VV" else np.uint16)
            labels = []
        elif cls_name == "SEN12MS":
            image = image.astype(np.float32)
            codes = np.bincount(sample["mask"].numpy().ravel(), minlength=18)
            area = codes[1:18] / max(codes.sum(), 1)
            labels = [self.labels[j] for j in np.flatnonzero(area >= 0.01)]
            dominant = self.labels[int(area.argmax())] if area.max() > 0 else None
        elif cls_name in ("BigEarthNet", "BigEarthNetV2"):
            image = image.astype(np.uint16 if self.bands[0] != "VV" else np.float32)
            if len(image) != len(self.bands):
                raise ShardError(f"{dataset}: patch {index} has {len(image)} bands, expected "
                                 f"{len(self.bands)} ({', '.join(self.bands)}); a band file is "
                                 "missing from its folder")
            hot = sample["label"].numpy().nonzero()[0]
            labels = [self.labels[j] for j in hot]
        if cls_name not in ("SEN12MS", "BigEarthNet", "BigEarthNetV2", "SSL4EOS12"):
            image = np.clip(np.rint(image), 0, np.iinfo(_TORCHGEO_DTYPE[cls_name]).max).astype(
                _TORCHGEO_DTYPE[cls_name])
            labels = [self.labels[int(sample["label"])]]
            dominant = labels[0]
        meta = self._meta(part, i, cls_name, index)
        if cls_name == "SSL4EOS12":
            import datetime as dt

            meta["date"] = dt.datetime.fromtimestamp(float(sample["t"][0]), dt.UTC).date() \
                .isoformat()
            meta["footprint"]["date"] = meta["date"]
        order = [lab for lab in self.ds_info.labels if lab in labels]
        meta.update(scene_labels=order, whole_image=True)
        return Scene(dataset, index, np.ascontiguousarray(image), meta, self.ds_info.labels,
                     lambda y0, x0, h, w: list(order), lambda y0, x0, h, w: dominant)

    def _meta(self, part, i: int, cls_name: str, index: int) -> dict:
        ds = self.ds_info
        meta = {"dataset": self.dataset, "group": ds.group, "sensor": SENSORS[ds.sensor].name,
                "bands": list(self.bands), "gsd_m": ds.gsd_m, "index": index,
                "source": f"torchgeo.{cls_name}", "date": None, "pair_id": None,
                "footprint": {"bounds": None, "date": None}}
        if cls_name == "BigEarthNet":
            key = "s2" if "B02" in self.bands else "s1"
            folder = Path(part.folders[i][key])
            raw = json.loads(next(folder.glob("*labels_metadata.json")).read_text())
            date = (raw.get("acquisition_date") or raw.get("acquisition_time") or "")[:10]
            meta.update(patch_name=folder.name, date=date or None,
                        pair_id=Path(part.folders[i]["s2"]).name,
                        footprint={"bounds": _utm_bounds_to_lonlat(raw), "date": date or None})
        elif cls_name == "BigEarthNetV2":
            row = part.metadata_df.loc[i]
            patch = str(row["patch_id"])
            tif = Path(part.root) / "BigEarthNet-S2" / "_".join(patch.split("_")[0:-2]) / patch
            band = next(iter(sorted(tif.glob("*.tif"))), None)
            meta.update(patch_name=patch, pair_id=patch, s1_name=str(row["s1_name"]),
                        footprint={"bounds": _file_bounds_lonlat(band) if band else None,
                                   "date": None})
        elif cls_name == "SSL4EOS12":
            loc = Path(part.root) / part.split / f"{i:07}"
            first = next(iter(sorted(loc.glob("*/*.tif"))), None)
            meta.update(location=f"{i:07}", pair_id=f"ssl4eo-{i:07}",
                        footprint={"bounds": _file_bounds_lonlat(first) if first else None,
                                   "date": None})
        elif cls_name == "SEN12MS":
            name = part.ids[i]  # ROIs1158_spring_s2_1_p30.tif
            roi, season, _, scene, _ = name.split("_", 4)
            path = Path(part.root) / f"{roi}_{season}" / f"s2_{scene}" / name
            meta.update(file=name, season=season, scene=f"{roi}_{season}_{scene}",
                        footprint={"bounds": _file_bounds_lonlat(path), "date": None})
        else:
            path = part.samples[i][0]
            meta["file"] = Path(path).name
            meta["footprint"]["bounds"] = _file_bounds_lonlat(path)
        return meta


def _file_bounds_lonlat(path) -> list[float] | None:
    """WGS84 bounds of a georeferenced image file, or None when it has no CRS."""
    try:
        import warnings

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


# --- image-text corpora in the Karpathy JSON format -----------------------------------------------

class KarpathySource:
    """RSICD, UCM-captions, RSITMD, Sydney-captions: ``captions_file`` (Karpathy-style JSON:
    ``{"images": [{"filename", "sentences": [{"raw"}], "split"}, ...]}``) and ``images_dir``
    under ``root``. Several captions per image; the JSON's ``split`` field gives the splits
    (``test`` counts as validation) when ``splits: official``."""

    def __init__(self, dataset: str, spec, cfg: Config):
        self.dataset, self.spec, self.cfg = dataset, spec, cfg
        if not spec.root or not spec.captions_file:
            raise ConfigError(f"sources.{dataset} (karpathy) needs root and captions_file, "
                              "e.g. {reader: karpathy, root: /data/RSICD, captions_file: "
                              "dataset_rsicd.json, images_dir: RSICD_images}")
        root = Path(_resolve_root(spec.root))
        cap_path = root / spec.captions_file
        self.images = root / (spec.images_dir or "images")
        if not cap_path.is_file():
            raise ConfigError(f"sources.{dataset}: no captions file {spec.captions_file!r} in "
                              f"root {root.name!r}; expected <root>/{spec.captions_file} and "
                              f"<root>/{spec.images_dir or 'images'}/<filename>")
        if not self.images.is_dir():
            raise ConfigError(f"sources.{dataset}: no images folder {self.images.name!r} in "
                              f"root {root.name!r}")
        try:
            entries = json.loads(cap_path.read_text())["images"]
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"sources.{dataset}: {cap_path.name} is not a Karpathy-style "
                              f"caption file (a JSON object with an 'images' list): {exc}") \
                from None
        bad = [e.get("filename", "?") for e in entries
               if not e.get("filename") or not [s for s in e.get("sentences", [])
                                                 if str(s.get("raw", "")).strip()]]
        if bad and spec.on_bad == "error":
            raise ConfigError(f"sources.{dataset}: {len(bad)} entries of {cap_path.name} have "
                              f"no filename or no caption, e.g. {bad[:3]}; fix them or set "
                              f"on_bad: skip (skipped entries are counted in the manifest)")
        entries = [e for e in entries if e.get("filename", "?") not in set(bad)]
        missing = [e["filename"] for e in entries if not (self.images / e["filename"]).is_file()]
        if missing and spec.on_bad == "error":
            raise ConfigError(f"sources.{dataset}: {len(missing)} images listed in "
                              f"{cap_path.name} are missing from {self.images.name}/, e.g. "
                              f"{missing[:3]}; or set on_bad: skip")
        entries = [e for e in entries if e["filename"] not in set(missing)]
        self.skipped = {"no_caption": len(bad), "missing_image": len(missing)}
        rng = np.random.default_rng([cfg.seed, 13, *dataset.encode()])
        n = cfg.samples_per_dataset
        if spec.splits == "official":  # caps per official split, as for torchgeo sources
            n_val = max(int(round(n * cfg.val_fraction)), 1)
            groups = {"train": [e for e in entries if e.get("split", "train") == "train"],
                      "val": [e for e in entries if e.get("split", "train") != "train"]}
            caps = {"train": max(n - n_val, 1), "val": n_val}
            self.entries = []
            for split, group in groups.items():
                take = sorted(rng.choice(len(group), min(len(group), caps[split]),
                                         replace=False).tolist())
                self.entries += [group[i] for i in take]
        else:
            take = sorted(rng.choice(len(entries), min(len(entries), n), replace=False).tolist())
            self.entries = [entries[i] for i in take]
        self.ds_info = get_dataset(dataset)
        self.datasets = (dataset,)

    def count(self, dataset: str) -> int:
        return len(self.entries)

    def report(self, dataset: str) -> dict:
        return {"reader": "karpathy", "images_used": len(self.entries),
                "skipped": dict(self.skipped), "on_bad": self.spec.on_bad}

    def splits(self, dataset: str) -> dict[str, list[int]] | None:
        if self.spec.splits != "official":
            return None
        out = {"train": [], "val": []}
        for i, e in enumerate(self.entries):
            out["train" if e.get("split", "train") == "train" else "val"].append(i)
        return out

    def scene(self, dataset: str, index: int) -> Scene:
        from PIL import Image

        e = self.entries[index]
        path = self.images / e["filename"]
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise ShardError(f"{dataset}: image {path.name} cannot be read ({exc})") from exc
        captions = [str(s["raw"]).strip() for s in e["sentences"] if str(s["raw"]).strip()]
        ds = self.ds_info
        meta = {"dataset": dataset, "group": ds.group, "sensor": SENSORS[ds.sensor].name,
                "bands": ["R", "G", "B"], "gsd_m": ds.gsd_m, "index": index,
                "source": "karpathy", "file": e["filename"], "date": None, "pair_id": None,
                "footprint": {"bounds": _file_bounds_lonlat(path), "date": None},
                "scene_labels": [], "whole_image": True, "captions": captions}
        return Scene(dataset, index, np.ascontiguousarray(np.moveaxis(rgb, -1, 0)), meta, (),
                     lambda y0, x0, h, w: [])


# --- a generic table of images, captions, labels and coordinates ----------------------------

def _read_image(path: Path) -> tuple[np.ndarray, list[str], list[float] | None]:
    """(C, H, W) pixels in the file's dtype, band names, WGS84 bounds (GeoTIFFs keep all bands
    and their georeference; other formats are read as RGB)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            data = src.read()
            names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
        if data.shape[0] == 3 and names == ["band1", "band2", "band3"]:
            names = ["R", "G", "B"]
        return data, names, _file_bounds_lonlat(path)
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    return np.moveaxis(rgb, -1, 0), ["R", "G", "B"], None


def _split_field(value) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [v.strip() for v in str(value).split("|") if v.strip()]


class TableSource:
    """Images listed in a CSV or Parquet table with captions, labels and coordinates.

    Columns: ``image`` (required), ``caption`` or ``captions`` ("|"-separated), ``labels``
    ("|"-separated; the vocabulary is the catalog's for a catalog dataset, else the sorted set
    of labels in the table), ``lon`` and ``lat`` (WGS84 point; the footprint), ``split``
    (``train`` or anything else for validation; used with ``splits: official``). Rows without
    caption and labels, and unreadable images, stop the build (``on_bad: error``) or are
    skipped and counted (``on_bad: skip``).
    """

    def __init__(self, dataset: str, spec, cfg: Config):
        import pandas as pd

        if not spec.root or not spec.captions_file:
            raise ConfigError(f"sources.{dataset} (table) needs root and captions_file (a .csv "
                              f"or .parquet with columns image, caption(s), labels, lon, lat)")
        root = Path(_resolve_root(spec.root))
        table = root / spec.captions_file
        if not table.is_file():
            raise ConfigError(f"sources.{dataset}: no table {spec.captions_file!r} in "
                              f"{root.name!r}")
        try:
            df = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)
        except Exception as exc:  # noqa: BLE001 - any parser error is the same problem
            raise ConfigError(f"sources.{dataset}: {table.name} cannot be read as "
                              f"{'Parquet' if table.suffix == '.parquet' else 'CSV'}: "
                              f"{exc}") from None
        if "image" not in df.columns:
            raise ConfigError(f"sources.{dataset}: {table.name} has no 'image' column "
                              f"(columns: {', '.join(map(str, df.columns))})")
        self.dataset, self.spec, self.cfg = dataset, spec, cfg
        self.images = root / (spec.images_dir or ".")
        rows, self.skipped = [], {"no_caption_or_label": 0, "missing_image": 0,
                                  "unreadable_image": 0}
        problems = []
        for i, r in enumerate(df.to_dict(orient="records")):
            caps = _split_field(r.get("captions")) or _split_field(r.get("caption"))
            labels = _split_field(r.get("labels"))
            path = self.images / str(r["image"])
            if not caps and not labels:
                problems.append((i, "no caption or label", "no_caption_or_label"))
            elif not path.is_file():
                problems.append((i, f"missing image {r['image']}", "missing_image"))
            else:
                lon, lat = r.get("lon"), r.get("lat")
                point = None
                if lon is not None and lat is not None and np.isfinite([lon, lat]).all():
                    point = [float(lon), float(lat), float(lon), float(lat)]
                rows.append({"path": path, "captions": caps, "labels": labels, "point": point,
                             "split": str(r.get("split") or "train")})
        if problems and spec.on_bad == "error":
            shown = "; ".join(f"row {i}: {why}" for i, why, _ in problems[:3])
            raise ConfigError(f"sources.{dataset}: {len(problems)} bad rows in {table.name} "
                              f"({shown}); fix them or set on_bad: skip to leave them out "
                              f"(they are counted in the manifest)")
        for _, _, kind in problems:
            self.skipped[kind] += 1
        known = DATASETS[dataset].labels if dataset in DATASETS else None
        seen = sorted({lab for r in rows for lab in r["labels"]})
        if known is not None:
            unknown = [lab for lab in seen if lab not in known]
            if unknown:
                raise ConfigError(f"sources.{dataset}: labels {unknown[:5]} are not in the "
                                  f"catalog's {dataset} vocabulary")
        self.vocabulary = tuple(known) if known is not None else tuple(seen)
        rng = np.random.default_rng([cfg.seed, 17, *dataset.encode()])
        take = sorted(rng.choice(len(rows), min(len(rows), cfg.samples_per_dataset),
                                 replace=False).tolist()) if rows else []
        self.rows = [rows[i] for i in take]
        self.gsd_m = DATASETS[dataset].gsd_m if dataset in DATASETS else None
        self.datasets = (dataset,)

    def count(self, dataset: str) -> int:
        return len(self.rows)

    def splits(self, dataset: str):
        if self.spec.splits != "official":
            return None
        out = {"train": [], "val": []}
        for i, r in enumerate(self.rows):
            out["train" if r["split"] == "train" else "val"].append(i)
        return out

    def report(self, dataset: str) -> dict:
        return {"reader": "table", "rows_used": len(self.rows), "skipped": dict(self.skipped),
                "on_bad": self.spec.on_bad}

    def scene(self, dataset: str, index: int) -> Scene:
        r = self.rows[index]
        try:
            image, bands, bounds = _read_image(r["path"])
        except Exception as exc:  # noqa: BLE001 - any decoder error
            raise ShardError(f"{dataset}: image {r['path'].name} cannot be read "
                             f"({type(exc).__name__}: {exc}); fix or remove it (or set "
                             f"on_bad: skip and re-run)") from exc
        labels = [lab for lab in self.vocabulary if lab in set(r["labels"])]
        meta = {"dataset": dataset, "group": DATASETS[dataset].group if dataset in DATASETS
                else "custom", "sensor": SENSORS[DATASETS[dataset].sensor].name
                if dataset in DATASETS else "table", "bands": bands, "gsd_m": self.gsd_m,
                "index": index, "source": "table", "file": r["path"].name, "date": None,
                "pair_id": None, "footprint": {"bounds": r["point"] or bounds, "date": None},
                "scene_labels": labels, "whole_image": True}
        if r["captions"]:
            meta["captions"] = r["captions"]
        return Scene(dataset, index, np.ascontiguousarray(image), meta, self.vocabulary,
                     lambda y0, x0, h, w: list(labels))


class MultiSource:
    """Datasets from several sources (the ``sources`` parameter); the rest from the simulator."""

    def __init__(self, cfg: Config):
        readers = {"torchgeo": TorchGeoSource, "karpathy": KarpathySource,
                   "geotiff": lambda ds, spec, c: GeoTiffSource(c, ds, spec),
                   "table": TableSource}
        self.by_dataset = {}
        simulated = []
        for ds in cfg.dataset_keys:
            spec = cfg.source_for(ds)
            if spec.reader == "simulator":
                if ds not in simulate.RECIPES:
                    raise ConfigError(f"{ds} has no simulator; give it a source in `sources`, "
                                      f"e.g. {{reader: torchgeo, dataset_class: ..., root: ...}}")
                simulated.append(ds)
            else:
                self.by_dataset[ds] = readers[spec.reader](ds, spec, cfg)
        if simulated:
            sim = SimulatorSource(cfg.model_copy(update={"datasets": tuple(simulated),
                                                         "group": "custom"}))
            for ds in simulated:
                self.by_dataset[ds] = sim
        self.datasets = tuple(cfg.dataset_keys)

    def count(self, dataset: str) -> int:
        return self.by_dataset[dataset].count(dataset)

    def splits(self, dataset: str):
        fn = getattr(self.by_dataset[dataset], "splits", None)
        return fn(dataset) if fn else None

    def scene(self, dataset: str, index: int) -> Scene:
        return self.by_dataset[dataset].scene(dataset, index)

    def report(self, dataset: str) -> dict:
        fn = getattr(self.by_dataset[dataset], "report", None)
        return fn(dataset) if fn else {"reader": type(self.by_dataset[dataset]).__name__}
