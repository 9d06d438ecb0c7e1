"""BigEarthNet v1 patch folders (Sentinel-2 band GeoTIFFs, Sentinel-1 VV/VH), read directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geofm_lib.bands import resolve_bands
from geofm_lib.catalog import SENSORS, get_dataset
from geofm_lib.config import Config
from geofm_lib.data.sources.base import Scene, SourceBase, scene_meta, usage
from geofm_lib.errors import ConfigError

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


def bigearthnet_product(patch: str) -> str:
    """The product (tile and acquisition) of a BigEarthNet patch name, without the patch's
    row and column: ``S2A_MSIL2A_20170613T101031_87_48`` -> ``S2A_MSIL2A_20170613T101031``;
    v2's ``..._T33UUP_26_57`` -> ``..._T33UUP``."""
    return patch.rsplit("_", 2)[0] if patch.count("_") >= 2 else patch


class BigEarthNetSource(SourceBase):
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
        return min(len(self.folders[dataset]), self.cfg.samples_for(dataset))

    def report(self, dataset: str) -> dict:
        used = self.count(dataset)
        return {"reader": "bigearthnet",
                **usage(len(self.folders[dataset]), used,
                        over_samples_per_dataset=len(self.folders[dataset]) - used)}

    def split_key(self, dataset: str, index: int) -> str | None:
        """The Sentinel-2 product a patch was cut from (an S1 patch: its S2 twin's): patches
        of one product are neighbours, so a random split keeps them on one side."""
        folder = self.folders[dataset][index]
        if dataset == "bigearthnet_s1":
            meta = next(folder.glob("*_labels_metadata.json"), None)
            twin = json.loads(meta.read_text()).get("corresponding_s2_patch") if meta else None
            return bigearthnet_product(twin or folder.name)
        return bigearthnet_product(folder.name)

    def scene(self, dataset: str, index: int) -> Scene:
        folder = self.folders[dataset][index]
        reader = read_bigearthnet_s2 if dataset == "bigearthnet_s2" else read_bigearthnet_s1
        image, raw = reader(folder)
        ds = get_dataset(dataset)
        labels = [lab for lab in ds.labels if lab in set(raw["labels"])]
        date = (raw.get("acquisition_date") or raw.get("acquisition_time", ""))[:10]
        twin = raw.get("corresponding_s2_patch")
        meta = scene_meta(dataset, index, "bigearthnet", group=ds.group,
                          sensor=SENSORS[ds.sensor].name,
                          bands=resolve_bands(ds.bands, sensor=ds.sensor, where=dataset),
                          gsd_m=10.0, date=date,
                          bounds=_utm_bounds_to_lonlat(raw),
                          pair_id=twin or (folder.name if dataset == "bigearthnet_s2" else None),
                          patch_name=folder.name, scene_labels=labels)
        return Scene(dataset, index, image, meta, ds.labels,
                     lambda y0, x0, h, w: list(labels))
