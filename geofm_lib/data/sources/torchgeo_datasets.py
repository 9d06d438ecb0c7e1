"""torchgeo dataset classes as scene sources (EuroSAT, UC Merced, RESISC45, BigEarthNet v1/v2,
SSL4EO-S12, SEN12MS), with the fixes their real layouts need.

Each supported class is one :class:`TorchGeoClass` entry of ``TORCHGEO_CLASSES``: its layout on
disk (shown when a root is incomplete), how the run's options map to its arguments, its class
names, band names, pixel type, labels and metadata. :class:`TorchGeoSource` reads any of them
the same way; a new class is one entry (and a fixture test in its real layout).
"""

from __future__ import annotations

import datetime as dt
import difflib
import glob
import inspect
import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geofm_lib.bands import resolve_bands
from geofm_lib.catalog import ENMAP_BANDS, ENMAP_NODATA, pair_family
from geofm_lib.config import Config
from geofm_lib.data.sources.base import (
    Scene,
    SourceBase,
    _file_bounds_lonlat,
    _resolve_root,
    label_mapping,
    scene_meta,
)
from geofm_lib.data.sources.bigearthnet import (
    BIGEARTHNET_S2_BANDS,
    _utm_bounds_to_lonlat,
    bigearthnet_product,
)
from geofm_lib.errors import ConfigError, ShardError
from geofm_lib.progress import get_logger


def _bigearthnet_class():
    """torchgeo's BigEarthNet, reading Sentinel-1 as float32 dB.

    torchgeo 0.8.1 reads every band with ``out_dtype='int32'``, which truncates Sentinel-1
    backscatter (-12.7 dB -> -12), and orders the polarisations VH, VV (sorted file names);
    this subclass reads the same files at full precision in the order VV, VH and keeps
    torchgeo's folder handling, splits, labels and Sentinel-2 reading.
    """
    import rasterio
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
    import rasterio
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

        def _verify(self):
            # 0.8.1 wants S1, S2 and Reference_Maps whatever `bands` reads: the workspace needs
            # metadata.parquet and the image folders of the bands it reads
            need = ["metadata", *({"s1": ["s1"], "s2": ["s2"]}.get(self.bands, ["s1", "s2"]))]
            if all(os.path.exists(os.path.join(self.root, self.dir_file_names[k]))
                   for k in need):
                return
            super()._verify()

        def _load_map(self, index):
            # the CORINE reference map is not used (labels come from metadata.parquet); 0.8.1
            # reads it for every sample and fails with a raw RasterioIOError where it is absent
            return torch.zeros(0, dtype=torch.long)

    return BigEarthNetV2Float


def _v2_folder(part, i: int) -> Path:
    """The image folder of row ``i`` of a BigEarthNetV2 part (S2 patch, or its S1 twin)."""
    row = part.metadata_df.loc[i]
    if part.bands == "s1":
        name = str(row["s1_name"])
        return Path(part.root) / "BigEarthNet-S1" / "_".join(name.split("_")[0:-3]) / name
    name = str(row["patch_id"])
    return Path(part.root) / "BigEarthNet-S2" / "_".join(name.split("_")[0:-2]) / name


def _v2_present(part) -> list[int]:
    """Rows of metadata.parquet whose image files are on disk (a partial download lists
    patches it does not have; the report counts them)."""
    return [i for i in range(len(part)) if any(_v2_folder(part, i).glob("*.tif"))]


def _ssl4eo_class():
    """torchgeo's SSL4EOS12 with two fixes.

    * Any 7-digit location folders: 0.8.1 checks for extracted files with the glob
      ``<split>/00000*/*/*.tif``, so a subset of locations that does not start at 0000000 is
      reported as missing.
    * The season is the one the reader chose (``season_of``: :class:`SSL4EOPairing`), not
      torchgeo's ``random.sample(os.listdir(...))``: ``os.listdir`` lists the season folders
      in the file system's order, which differs between the ``s1`` and ``s2c`` trees, so the
      same seed gave an S2 patch of June and an S1 patch of September at one place.
    """
    import threading
    import types

    import torchgeo.datasets.ssl4eo as module
    from torchgeo.datasets import SSL4EOS12

    lock = threading.Lock()

    class SSL4EOS12Paired(SSL4EOS12):
        season_of: Callable[[int], str] | None = None  # location -> its season folder's name

        def _verify(self):
            if glob.glob(os.path.join(self.root, self.split, "[0-9]" * 7, "*", "*.tif")):
                return
            super()._verify()

        def __getitem__(self, index: int):
            if self.season_of is None:
                return super().__getitem__(index)
            chosen = self.season_of(index)
            # torchgeo's module sees an `os` whose listdir shows the chosen season only, so
            # it reads that one (its band reading unchanged); nothing outside it is touched
            shown = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os)
                                             if not k.startswith("__")})
            shown.listdir = lambda path: [chosen]
            with lock:
                module.os = shown
                try:
                    return super().__getitem__(index)
                finally:
                    module.os = os

    return SSL4EOS12Paired


SSL4EO_DATE = re.compile(r"(?:^|_)(\d{8})T\d{6}")
"""The acquisition date in an SSL4EO-S12 season folder's name (S2 ``20200315T103021_...``, S1
``S1A_IW_GRDH_1SDV_20200315T052153_...``)."""

PAIR_MAX_DAYS = 15
"""Default of the SSL4EO-S12 option ``pair_max_days``: the largest gap in days between the S2
and the S1 acquisition of a pair. SSL4EO-S12 took S1 in the same season window as S2, mostly
within days of it."""


def ssl4eo_seasons(folder: Path) -> list[tuple[str, dt.date]]:
    """(season folder, acquisition date) of one location, by date.

    Raises:
        ConfigError: a season folder whose name carries no date.
    """
    out = []
    for name in sorted(os.listdir(folder)):
        if not (folder / name).is_dir():
            continue
        found = SSL4EO_DATE.search(name)
        if not found:
            raise ConfigError(f"SSL4EO-S12: season folder {folder.name}/{name} has no "
                              f"acquisition date (YYYYMMDDTHHMMSS) in its name; the release "
                              f"names every season folder by its date")
        out.append((name, dt.datetime.strptime(found[1], "%Y%m%d").date()))
    return sorted(out, key=lambda s: (s[1], s[0]))


@dataclass(frozen=True)
class SeasonPair:
    """The seasons read at one location: the S2 and S1 folders, the gap between their dates
    (None where one sensor is absent) and whether they form a pair within the tolerance."""

    s2: tuple[str, dt.date] | None
    s1: tuple[str, dt.date] | None
    gap_days: int | None
    paired: bool


RESERVED_OPTIONS = {
    "root": "set the folder as the source's root (sources.<key>.root)",
    "download": "set download: true in the source spec (sources.<key>.download)",
    "transforms": "geofm reads raw bands and applies its own processing; torchgeo transforms "
                  "cannot be given from a parameter file",
}
"""torchgeo arguments that geofm passes itself (or that are not data): refused as options,
with where to set them instead."""


class SSL4EOPairing:
    """Which season each sensor reads at a location, the same for both readers.

    A location's S2 season is drawn (seeded by ``seed`` and the location) among the S2
    acquisitions that have an S1 acquisition within ``max_days``; the S1 season is the one
    nearest in date to it. Where no S2 acquisition has one, the S2 season is drawn among all
    and the location is read unpaired (counted). Folder listing order plays no part.
    """

    def __init__(self, s2_root: Path | None, s1_root: Path | None, seed: int, max_days: int):
        self.s2_root, self.s1_root, self.seed, self.max_days = s2_root, s1_root, seed, max_days
        self._cache: dict[int, SeasonPair] = {}

    @staticmethod
    def _seasons(root: Path | None, location: int) -> list[tuple[str, dt.date]]:
        folder = root / f"{location:07}" if root is not None else None
        return ssl4eo_seasons(folder) if folder is not None and folder.is_dir() else []

    def at(self, location: int) -> SeasonPair:
        if location in self._cache:
            return self._cache[location]
        s2 = self._seasons(self.s2_root, location)
        s1 = self._seasons(self.s1_root, location)
        rng = np.random.default_rng([self.seed, 41, location])

        def nearest(season):
            return min(s1, key=lambda b: (abs((b[1] - season[1]).days), b[1], b[0]))

        if s2 and s1:
            within = [a for a in s2 if abs((nearest(a)[1] - a[1]).days) <= self.max_days]
            a = (within or s2)[int(rng.integers(len(within or s2)))]
            b = nearest(a)
            gap = abs((b[1] - a[1]).days)
            pair = SeasonPair(a, b, gap, gap <= self.max_days)
        elif s2 or s1:
            one = s2 or s1
            chosen = one[int(rng.integers(len(one)))]
            pair = SeasonPair(chosen if s2 else None, chosen if s1 else None, None, False)
        else:
            raise ConfigError(f"SSL4EO-S12: location {location:07} has no season folder")
        self._cache[location] = pair
        return pair


def _found_under(root: Path, limit: int = 8) -> str:
    """What a root holds, two levels deep, for layout errors (``s2c/ (3 folders), ...``)."""
    if not root.is_dir():
        return f"{root} is not a folder"
    entries = sorted(root.iterdir())
    if not entries:
        return "the root is empty"
    parts = []
    for e in entries[:limit]:
        if e.is_dir():
            inner = list(e.iterdir())
            dirs = sum(1 for x in inner if x.is_dir())
            parts.append(f"{e.name}/ ({dirs} folders, {len(inner) - dirs} files"
                         f"{': ' + ', '.join(sorted(x.name for x in inner)[:3]) if inner else ''}"
                         f"{' ...' if len(inner) > 3 else ''})")
        else:
            parts.append(e.name)
    more = f", and {len(entries) - limit} more" if len(entries) > limit else ""
    return "found under root: " + "; ".join(parts) + more


log = get_logger()


# --- per-class specs ------------------------------------------------------------------------

def _no_options(dataset: str, opts: dict, spec) -> None:
    return None


def _bigearthnet_options(dataset: str, opts: dict, spec) -> None:
    want = 19 if dataset.endswith("_19") else 43
    bands = "all" if "_s1s2" in dataset else ("s1" if "_s1" in dataset else "s2")
    opts.setdefault("num_classes", want)
    opts.setdefault("bands", bands)
    if opts["num_classes"] != want or opts["bands"] != bands:
        raise ConfigError(f"sources.{dataset}: options {opts} do not fit the dataset key "
                          f"(bands {bands}, {want} classes)")


def _bigearthnet_v2_options(dataset: str, opts: dict, spec) -> None:
    bands = "s1" if "_s1" in dataset else "s2"
    opts.setdefault("bands", bands)
    if opts["bands"] != bands:
        raise ConfigError(f"sources.{dataset}: options {opts} do not fit the dataset key "
                          f"(bands {bands})")


def _ssl4eo_options(dataset: str, opts: dict, spec) -> None:
    want = {"ssl4eo_s12_s1": "s1", "ssl4eo_s12_s2a": "s2a"}.get(dataset, "s2c")
    days = opts.pop("pair_max_days", PAIR_MAX_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 366:
        raise ConfigError(f"sources.{dataset}.options.pair_max_days={days!r}: the largest gap "
                          f"in days between a pair's S2 and S1 acquisitions, a whole number "
                          f"from 0 to 366 (default {PAIR_MAX_DAYS})")
    opts["_pair_max_days"] = days
    split_opt = opts.pop("split", want)
    if split_opt != want:
        raise ConfigError(f"sources.{dataset}: split {split_opt!r} does not fit the dataset key "
                          f"(split {want})")
    opts["split"] = want
    if spec.splits == "official":
        raise ConfigError(f"sources.{dataset}: SSL4EO-S12 has no official splits; use "
                          "splits: random")


def _eurosat_options(dataset: str, opts: dict, spec) -> None:
    if dataset == "eurosat_rgb":
        opts.setdefault("bands", ("B04", "B03", "B02"))


def _hyspecnet_options(dataset: str, opts: dict, spec) -> None:
    """Every one of EnMAP's 224 bands by default, the water-vapour ones included (nodata in
    the files: the manifest records them, and the model input leaves them out), as torchgeo
    names them (B1 ... B224); ``strategy``: easy (patchwise split) or hard (tilewise)."""
    opts.setdefault("bands", tuple(f"B{i}" for i in range(1, len(ENMAP_BANDS) + 1)))
    if opts.setdefault("strategy", "easy") not in ("easy", "hard"):
        raise ConfigError(f"sources.{dataset}.options.strategy={opts['strategy']!r}: "
                          f"HySpecNet-11k's splits are easy (patchwise) or hard (tilewise)")


def _enmap_bands(ds, opts: dict) -> list[str]:
    """torchgeo's B<n> as the catalog's names (by centre wavelength)."""
    return [ENMAP_BANDS[int(b[1:]) - 1].name for b in opts["bands"]]


def _enmap_l2a(src, sample, image, index: int):
    """EnMAP L2A patches: back to the product's int16 (torchgeo hands out float32), nodata
    kept; no labels (HySpecNet-11k is for self-supervised learning)."""
    return np.rint(image).clip(ENMAP_NODATA, 32767).astype(np.int16), [], None


def _hyspecnet_file(part, i: int) -> Path:
    rel = part.files[i].replace("DATA.npy", "SPECTRAL_IMAGE.TIF")
    return Path(part.root) / "hyspecnet-11k" / "patches" / rel


def _hyspecnet_meta(part, i: int, bands) -> dict:
    path = _hyspecnet_file(part, i)
    found = re.search(r"-DT\d{10}_(\d{4})(\d{2})(\d{2})T\d{6}Z_", path.name)  # acquisition
    date = "-".join(found.groups()) if found else None
    return dict(file=path.name, tile=path.parent.parent.name,
                footprint={"bounds": _file_bounds_lonlat(path), "date": date}, date=date)


def _bigearthnet_bands(ds, opts: dict) -> list[str]:
    return {"s2": list(BIGEARTHNET_S2_BANDS), "s1": ["VV", "VH"],
            "all": ["VV", "VH", *BIGEARTHNET_S2_BANDS]}[opts["bands"]]


def _own_bands(ds, opts: dict) -> list[str]:
    return list(ds.bands)


def _rgb_bands(ds, opts: dict) -> list[str]:
    return ["R", "G", "B"]


def _scene_class(src, sample, image, index: int):
    """One class per image (EuroSAT, UC Merced, RESISC45): product dtype, the class label."""
    dtype = src.kind.dtype
    image = np.clip(np.rint(image), 0, np.iinfo(dtype).max).astype(dtype)
    labels = [src.labels[int(sample["label"])]]
    return image, labels, labels[0]


def _multi_hot(src, sample, image, index: int):
    """BigEarthNet v1/v2: uint16 reflectance or float32 dB, the multi-hot labels."""
    image = image.astype(np.uint16 if src.bands[0] != "VV" else np.float32)
    if len(image) != len(src.bands):
        raise ShardError(f"{src.dataset}: patch {index} has {len(image)} bands, expected "
                         f"{len(src.bands)} ({', '.join(src.bands)}); a band file is missing "
                         "from its folder")
    return image, [src.labels[j] for j in sample["label"].numpy().nonzero()[0]], None


def _land_cover_mask(src, sample, image, index: int):
    """SEN12MS: labels are the IGBP classes covering at least 1 % of the patch's mask, the
    dominant one its largest."""
    codes = np.bincount(sample["mask"].numpy().ravel(), minlength=18)
    area = codes[1:18] / max(codes.sum(), 1)
    labels = [src.labels[j] for j in np.flatnonzero(area >= 0.01)]
    return image.astype(np.float32), labels, (src.labels[int(area.argmax())]
                                              if area.max() > 0 else None)


def _unlabelled(src, sample, image, index: int):
    """SSL4EO-S12: no labels; uint16 reflectance or float32 dB."""
    return image.astype(np.float32 if src.bands[0] == "VV" else np.uint16), [], None


def _bigearthnet_meta(part, i: int, bands) -> dict:
    key = "s2" if "B02" in bands else "s1"
    folder = Path(part.folders[i][key])
    raw = json.loads(next(folder.glob("*labels_metadata.json")).read_text())
    date = (raw.get("acquisition_date") or raw.get("acquisition_time") or "")[:10]
    return dict(patch_name=folder.name, date=date or None,
                pair_id=Path(part.folders[i]["s2"]).name,
                footprint={"bounds": _utm_bounds_to_lonlat(raw), "date": date or None})


def _bigearthnet_v2_meta(part, i: int, bands) -> dict:
    row = part.metadata_df.loc[i]
    patch = str(row["patch_id"])
    tif = Path(part.root) / "BigEarthNet-S2" / "_".join(patch.split("_")[0:-2]) / patch
    band = next(iter(sorted(tif.glob("*.tif"))), None)
    return dict(patch_name=patch, pair_id=patch, s1_name=str(row["s1_name"]),
                footprint={"bounds": _file_bounds_lonlat(band) if band else None, "date": None})


def _ssl4eo_meta(part, i: int, bands) -> dict:
    """The location, the season read and its pairing: ``pair_id`` only for a pair within the
    tolerance; ``pair_gap_days`` between the S2 and S1 acquisitions."""
    pair = part.pairing.at(i)
    season = getattr(pair, part.sensor)[0]
    first = next(iter(sorted((Path(part.root) / part.split / f"{i:07}" / season).glob("*.tif"))),
                 None)
    return dict(location=f"{i:07}", pair_id=f"ssl4eo-{i:07}" if pair.paired else None,
                season_folder=season, pair_gap_days=pair.gap_days,
                pair_max_days=part.pairing.max_days,
                footprint={"bounds": _file_bounds_lonlat(first) if first else None,
                           "date": None})


def _sen12ms_meta(part, i: int, bands) -> dict:
    name = part.ids[i]  # ROIs1158_spring_s2_1_p30.tif
    roi, season, _, scene, _ = name.split("_", 4)
    path = Path(part.root) / f"{roi}_{season}" / f"s2_{scene}" / name
    return dict(file=name, season=season, scene=f"{roi}_{season}_{scene}",
                footprint={"bounds": _file_bounds_lonlat(path), "date": None})


def _file_meta(part, i: int, bands) -> dict:
    path = part.samples[i][0]
    return dict(file=Path(path).name, footprint={"bounds": _file_bounds_lonlat(path),
                                                 "date": None})


def _file_identity(part, i: int) -> str:
    return str(part.samples[i][0])


def _bigearthnet_identity(part, i: int) -> str:
    return str(part.folders[i].get("s2") or part.folders[i].get("s1"))


def _bigearthnet_product(part, i: int) -> str:
    return bigearthnet_product(Path(_bigearthnet_identity(part, i)).name)


def _sen12ms_scene(part, i: int) -> str:
    roi, season, _, scene, _ = part.ids[i].split("_", 4)  # ROIs1158_spring_s2_1_p30.tif
    return f"{roi}_{season}_{scene}"


def _ssl4eo_present(part) -> list[int]:
    """torchgeo reports the full dataset's length (251079) whatever is on disk: the location
    folders that are there."""
    return sorted(int(d) for d in os.listdir(Path(part.root) / part.split) if d.isdigit())


def _count(pattern: str, dirs: bool = False) -> Callable:
    """Files (or folders) on disk under a root matching a glob, for the reader's report."""
    def count(root: Path, opts: dict) -> int:
        return sum(1 for p in root.glob(pattern) if (p.is_dir() if dirs else p.is_file()))
    return count


def _bigearthnet_on_disk(root: Path, opts: dict) -> int:
    folder = "BigEarthNet-S1-v1.0" if opts.get("bands") == "s1" else "BigEarthNet-v1.0"
    return _count(f"{folder}/*", dirs=True)(root, opts)


def _bigearthnet_v2_on_disk(root: Path, opts: dict) -> int:
    folder = "BigEarthNet-S1" if opts.get("bands") == "s1" else "BigEarthNet-S2"
    return _count(f"{folder}/*/*", dirs=True)(root, opts)


def _ssl4eo_on_disk(root: Path, opts: dict) -> int:
    return _count(f"{opts.get('split', 's2c')}/*", dirs=True)(root, opts)


def _torchgeo(cls_name: str):
    def load():
        import torchgeo.datasets as tgd  # deferred: torchgeo takes seconds to import

        return getattr(tgd, cls_name)
    return load


@dataclass(frozen=True)
class TorchGeoClass:
    """How one torchgeo dataset class becomes scenes."""

    layout: str  # what the class expects under its root
    load: Callable[[], type]  # the class (or geofm's subclass with a fix)
    class_names: Callable  # (first part, options, catalog entry) -> the reader's class names
    bands: Callable  # (first part, options) -> band names in channel order
    pixels: Callable  # (source, sample, image, scene index) -> (image, labels, dominant label)
    meta: Callable  # (part, index, bands) -> metadata beyond the common keys
    options: Callable = _no_options  # (dataset, options, spec): fix and check the options
    dtype: type | None = None  # product dtype (torchgeo hands out float tensors)
    val_split: str = "val"  # the name of the held-out official split
    present: Callable | None = None  # (part) -> indices on disk, where len() cannot tell
    dated: bool = False  # samples carry their acquisition time ("t")
    # the split lists a random split reads together (all files of the dataset); () when the
    # class has none (SSL4EO-S12: every location on disk)
    split_lists: tuple[str, ...] = ("train", "val", "test")
    on_disk: Callable | None = None  # (root, options) -> images (or patches) found on disk
    identity: Callable | None = None  # (part, index) -> the scene's file or patch name, so a
    #                                   scene named by two split lists is read once
    nodata: float | None = None  # the product's value for "no measurement", in every band
    # (part, index) -> the unit a random split keeps whole (the tile or product a patch was
    # cut from, a location); None: every image is its own unit
    split_key: Callable | None = None


TORCHGEO_CLASSES: dict[str, TorchGeoClass] = {
    "BigEarthNet": TorchGeoClass(
        "BigEarthNet-v1.0/<S2 patch>/<patch>_B01.tif ... and <patch>_labels_metadata.json, "
        "BigEarthNet-S1-v1.0/<S1 patch>/<patch>_VV.tif, _VH.tif and labels json, and "
        "bigearthnet-{train,val,test}.csv with rows '<S2 patch>,<S1 patch>'",
        lambda: _bigearthnet_class(), lambda first, opts, info: first.class_sets[
            opts["num_classes"]], _bigearthnet_bands, _multi_hot, _bigearthnet_meta,
        _bigearthnet_options, on_disk=_bigearthnet_on_disk, identity=_bigearthnet_identity,
        split_key=_bigearthnet_product),
    "EuroSAT": TorchGeoClass(
        "ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<n>.tif "
        "(13-band GeoTIFFs) and eurosat-{train,val,test}.txt (file names)",
        _torchgeo("EuroSAT"), lambda first, opts, info: first.classes, _own_bands,
        _scene_class, _file_meta, _eurosat_options, dtype=np.uint16,
        on_disk=_count("ds/images/remote_sensing/otherDatasets/sentinel_2/tif/*/*.tif"),
        identity=_file_identity),
    "UCMerced": TorchGeoClass(
        "UCMerced_LandUse/Images/<class>/<class><NN>.tif and uc_merced-{train,val,test}.txt "
        "(file names)",
        _torchgeo("UCMerced"), lambda first, opts, info: first.classes, _rgb_bands,
        _scene_class, _file_meta, dtype=np.uint8,
        on_disk=_count("UCMerced_LandUse/Images/*/*.tif"), identity=_file_identity),
    "RESISC45": TorchGeoClass(
        "NWPU-RESISC45/<class>/<class>_<NNN>.jpg and resisc45-{train,val,test}.txt",
        _torchgeo("RESISC45"), lambda first, opts, info: first.classes, _rgb_bands,
        _scene_class, _file_meta, dtype=np.uint8, on_disk=_count("NWPU-RESISC45/*/*.jpg"),
        identity=_file_identity),
    "BigEarthNetV2": TorchGeoClass(
        "BigEarthNet-S2/<tile>/<patch>/<patch>_B02.tif ..., BigEarthNet-S1/<tile>/<S1 patch>/"
        "<S1 patch>_VV.tif and _VH.tif, Reference_Maps/<tile>/<patch>/<patch>_reference_map.tif "
        "and metadata.parquet (patch_id, s1_name, split, labels)",
        lambda: _bigearthnet_v2_class(), lambda first, opts, info: first.class_set,
        _bigearthnet_bands, _multi_hot, _bigearthnet_v2_meta, _bigearthnet_v2_options,
        on_disk=_bigearthnet_v2_on_disk, present=_v2_present,
        identity=lambda part, i: str(part.metadata_df.loc[i]["patch_id"]),
        split_key=lambda part, i: bigearthnet_product(str(part.metadata_df.loc[i]["patch_id"]))),
    "SSL4EOS12": TorchGeoClass(
        "<split: s1|s2c|s2a>/<location, 7 digits>/<season folder named by date>/<band>.tif "
        "(e.g. s2c/0000000/20200101T103421_.../B04.tif)",
        _ssl4eo_class, lambda first, opts, info: (), _own_bands, _unlabelled,
        _ssl4eo_meta, _ssl4eo_options, present=_ssl4eo_present, dated=True, split_lists=(),
        on_disk=_ssl4eo_on_disk, split_key=lambda part, i: f"{i:07}"),
    "SEN12MS": TorchGeoClass(
        "ROIs1158_spring/, ROIs1868_summer/, ROIs1970_fall/, ROIs2017_winter/ each with "
        "{lc,s1,s2}_<scene>/ROIs<...>_{lc,s1,s2}_<scene>_p<patch>.tif, and {train,test}_list.txt "
        "naming the s2 files (torchgeo cannot download SEN12MS; its docstring gives the wget "
        "script)",
        _torchgeo("SEN12MS"), lambda first, opts, info: info.labels,  # IGBP 1-17, catalog order
        _own_bands, _land_cover_mask, _sen12ms_meta, val_split="test",  # train/test only
        split_lists=("train", "test"), on_disk=_count("ROIs*/s2_*/*.tif"),
        identity=lambda part, i: str(part.ids[i]), split_key=_sen12ms_scene),
    "HySpecNet11k": TorchGeoClass(
        "hyspecnet-11k/patches/<tile>/<tile>-Y<row>_X<col>/<tile>-Y<row>_X<col>-SPECTRAL_IMAGE"
        ".TIF (224-band int16 EnMAP L2A patches, nodata -32768) and hyspecnet-11k/splits/"
        "{easy,hard}/{train,val,test}.csv (one '<tile>/<patch>/<patch>-DATA.npy' per line)",
        _torchgeo("HySpecNet11k"), lambda first, opts, info: (), _enmap_bands, _enmap_l2a,
        _hyspecnet_meta, _hyspecnet_options,
        on_disk=_count("hyspecnet-11k/patches/*/*/*-SPECTRAL_IMAGE.TIF"),
        identity=lambda part, i: str(part.files[i]), nodata=ENMAP_NODATA,
        split_key=lambda part, i: _hyspecnet_file(part, i).parent.parent.name),
}
TORCHGEO_LAYOUTS = {name: kind.layout for name, kind in TORCHGEO_CLASSES.items()}


class TorchGeoSource(SourceBase):
    """One catalog dataset read through a torchgeo dataset class on a local root.

    Pixels and labels come from torchgeo; geometry comes from the files where they carry it
    (BigEarthNet's metadata JSON, EuroSAT's GeoTIFF transforms). Downloading is off unless the
    spec says ``download: true``.
    """

    def __init__(self, dataset: str, spec, cfg: Config):
        self.dataset, self.spec, self.cfg = dataset, spec, cfg
        cls_name = spec.dataset_class
        if cls_name not in TORCHGEO_CLASSES:
            raise ConfigError(f"sources.{dataset}.dataset_class={cls_name!r} is not supported; "
                              f"choose one of {', '.join(TORCHGEO_CLASSES)}")
        self.kind = TORCHGEO_CLASSES[cls_name]
        if not spec.root:
            raise ConfigError(f"sources.{dataset} needs root: the folder holding "
                              f"{self.kind.layout}")
        self.ds_info = cfg.dataset_info(dataset)  # the catalog's entry, or a dataset card
        opts = dict(spec.options)
        self.kind.options(dataset, opts, spec)
        pair_max_days = opts.pop("_pair_max_days", None)
        if "bands" in opts and isinstance(opts["bands"], list):
            opts["bands"] = tuple(opts["bands"])
        split_opt = opts.pop("split", "train")  # SSL4EO-S12's options name its split
        self.opts = {**opts, "split": split_opt}
        if spec.splits == "official" and "split" in spec.options:
            raise ConfigError(f"sources.{dataset}: options.split={spec.options['split']!r} and "
                              f"splits: official contradict each other (official reads the "
                              f"train and validation lists); drop the option, or use splits: "
                              f"random to draw a split from that list alone")
        if spec.splits == "official":
            names = ("train", self.kind.val_split)
        else:  # a random split draws from every file the dataset's split lists name
            names = (self.kind.split_lists or (split_opt,)) if "split" not in spec.options \
                else (split_opt,)
        self.parts, self.unreadable_lists = {}, {}
        for n in names:
            try:
                self.parts[n] = self._open(cls_name, n, opts)
            except ConfigError as exc:  # an extra list of a random split: said, not fatal
                if n == names[0] or spec.splits == "official":
                    raise
                self.unreadable_lists[n] = str(exc)[:300]
                log.warning("%s: the %s list cannot be read, its files are not used: %s",
                            dataset, n, str(exc)[:300])
        self.pairing = None
        if pair_max_days is not None:  # SSL4EO-S12: seasons paired by date (SSL4EOPairing)
            self.pairing = self._ssl4eo_pairing(split_opt, pair_max_days)
            sensor = "s1" if split_opt == "s1" else "s2"
            for part in self.parts.values():
                part.pairing, part.sensor = self.pairing, sensor
                part.season_of = (lambda loc, s=sensor: getattr(self.pairing.at(loc), s)[0])
        first = next(iter(self.parts.values()))
        self.labels = label_mapping(self.kind.class_names(first, opts, self.ds_info),
                                    self.ds_info.labels)
        # torchgeo's names (SSL4EO-S12's B1 ... B12) looked up in the catalog sensor's table
        self.band_records = resolve_bands(self.kind.bands(first, opts),
                                          sensor=self.ds_info.sensor_spec, where=dataset,
                                          nodata=self.kind.nodata)
        self.bands = [r.name for r in self.band_records]  # canonical: B01 ... B12, B8A
        self.datasets = (dataset,)
        self._index = self._plan()

    def _ssl4eo_pairing(self, split: str, max_days: int) -> SSL4EOPairing:
        """Both sensors' season folders at each location: this reader's, and its partner's
        (the partner dataset's root where the run reads it, else the same root)."""
        own = Path(_resolve_root(self.spec.root))
        partners = ("ssl4eo_s12_s2a", "ssl4eo_s12_s2c") if split == "s1" else ("ssl4eo_s12_s1",)
        other_split, other_root = ("s1", own) if split != "s1" else (None, own)
        for key in partners:
            spec = self.cfg.sources.get(key) if self.cfg.sources else None
            if key in self.cfg.dataset_keys and spec is not None and spec.root:
                other_split = "s1" if key.endswith("_s1") else key.rsplit("_", 1)[1]
                other_root = Path(_resolve_root(spec.root))
                break
        if other_split is None:  # S1 read alone: the S2 tree beside it, if there is one
            other_split = next((s for s in ("s2c", "s2a") if (own / s).is_dir()), "s2c")
        trees = {split: own / split, other_split: other_root / other_split}
        s2 = next((trees[s] for s in trees if s != "s1"), None)
        return SSL4EOPairing(s2 if s2 is not None and s2.is_dir() else None,
                             trees["s1"] if trees.get("s1") and trees["s1"].is_dir() else None,
                             self.cfg.seed, max_days)

    def _open(self, cls_name: str, split: str, opts: dict):
        from torchgeo.datasets.errors import DatasetNotFoundError  # deferred: torchgeo is slow

        cls = self.kind.load()
        kwargs = dict(opts)
        reserved = sorted(k for k in kwargs if k in RESERVED_OPTIONS)
        if reserved:  # what geofm passes itself: given as options they were ignored or broke
            k = reserved[0]
            raise ConfigError(f"sources.{self.dataset}.options: {k} is not an option here: "
                              f"{RESERVED_OPTIONS[k]}")
        takes = inspect.signature(cls.__init__).parameters
        unknown = sorted(k for k in kwargs if k not in takes or k in ("self", "root"))
        if unknown:  # a misspelt option would end in a raw TypeError from the class
            own = ", ".join(k for k in takes if k not in ("self", "root", "split", "download",
                                                           "transforms", "checksum"))
            close = difflib.get_close_matches(unknown[0], list(takes), n=1)
            verb = "is not an argument" if len(unknown) == 1 else "are not arguments"
            raise ConfigError(f"sources.{self.dataset}.options: {', '.join(unknown)} {verb} "
                              f"of torchgeo's {cls_name}"
                              f"{f' (did you mean {close[0]!r}?)' if close else ''}; it takes "
                              f"{own or 'no options'}")
        if "download" in takes:
            kwargs["download"] = self.spec.download
        elif self.spec.download:
            raise ConfigError(f"sources.{self.dataset}: torchgeo's {cls_name} cannot download; "
                              f"fetch it as its documentation says, then point root at it")
        try:
            return cls(root=_resolve_root(self.spec.root), split=split, **kwargs)
        except DatasetNotFoundError as exc:
            hint = (" BigEarthNet v1 as distributed (BigEarthNet-S2/<patch>/ and "
                    "BigEarthNet-S1/<patch>/ folders) becomes this layout with `geofm "
                    "bigearthnet-root <root> --s2 <S2 folder> --s1 <S1 folder> [--splits "
                    "<official lists>]` (symlinks, nothing copied).") \
                if cls_name == "BigEarthNet" else ""
            raise ConfigError(
                f"sources.{self.dataset}: torchgeo's {cls_name} found no complete dataset in "
                f"root {Path(self.spec.root).name!r} ({exc}). Expected layout under root: "
                f"{self.kind.layout}; {_found_under(Path(_resolve_root(self.spec.root)))}."
                f"{hint} Set download: true in the source spec to let torchgeo download it "
                f"(needs internet)") from None
        except (FileNotFoundError, AssertionError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"sources.{self.dataset}: {cls_name}(split={split!r}, {opts}) failed: "
                f"{type(exc).__name__}: {exc}. Expected layout under root: "
                f"{self.kind.layout}; {_found_under(Path(_resolve_root(self.spec.root)))}"
                ) from None

    def _plan(self) -> dict[str, list[tuple[str, int]]]:
        """(part, index) of every scene, per split of the shards, capped and seeded. The two
        sensors of a pair family draw with the same seed, so a cap picks the same places for
        both (given the same places on disk)."""
        rng = np.random.default_rng([self.cfg.seed, 11, *pair_family(self.dataset).encode()])
        n = self.cfg.samples_for(self.dataset)
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
        every = self._listed()
        take = min(len(every), n)
        chosen = sorted(rng.choice(len(every), take, replace=False).tolist())
        return {"all": [every[i] for i in chosen]}

    def _listed(self) -> list[tuple[str, int]]:
        """(part, index) of every scene the opened split lists name (and that is on disk)."""
        out, seen = [], set()
        for name, part in self.parts.items():
            idx = self.kind.present(part) if self.kind.present is not None else range(len(part))
            for i in idx:
                key = self.kind.identity(part, int(i)) if self.kind.identity else (name, i)
                if key not in seen:  # a scene two lists name is one scene
                    seen.add(key)
                    out.append((name, int(i)))
        return out

    def report(self, dataset: str) -> dict:
        """What the reader found: images on disk, those the split lists name, those used, and
        why the rest were not (docs/data.md, "Nothing dropped unsaid")."""
        listed, used = len(self._listed()), self.count(dataset)
        # list rows without files (a partial download): only lists name rows (not SSL4EO)
        absent = (sum(len(p) for p in self.parts.values()) - listed
                  if self.kind.present is not None and self.kind.split_lists else 0)
        found = (self.kind.on_disk(Path(_resolve_root(self.spec.root)), self.opts)
                 if self.kind.on_disk is not None else None)
        not_used = {}
        if found is not None and found > listed:
            lists = "/".join(self.parts) if self.kind.split_lists else "torchgeo's index"
            not_used[f"not in the {lists} list(s)"] = found - listed
        if listed > used:
            not_used["over samples_per_dataset"] = listed - used
        if absent:
            not_used["listed, but no files on disk"] = absent
        out = {"reader": "torchgeo", "class": self.spec.dataset_class,
               "splits_read": list(self.parts), "found": found, "listed": listed,
               "used": used, "not_used": not_used, "unreadable_lists": self.unreadable_lists}
        if self.pairing is not None:  # SSL4EO-S12: how the used locations paired
            pairs = [self.pairing.at(self._locate(k)[1]) for k in range(used)]
            out["pairing"] = {
                "max_days": self.pairing.max_days,
                "paired": sum(p.paired for p in pairs),
                f"unpaired: no acquisition of the other sensor within "
                f"{self.pairing.max_days} days": sum(p.gap_days is not None and not p.paired
                                                      for p in pairs),
                "unpaired: the other sensor has no folder for the location": sum(
                    p.gap_days is None for p in pairs),
                "largest_gap_days": max((p.gap_days for p in pairs if p.paired), default=None)}
        return out

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
        if getattr(self, "_flat", None) is None:
            self._flat = [x for v in self._index.values() for x in v]
        return self._flat[index]

    def split_key(self, dataset: str, index: int) -> str | None:
        if self.kind.split_key is None:
            return None
        part_name, i = self._locate(index)
        return self.kind.split_key(self.parts[part_name], i)

    def scene(self, dataset: str, index: int) -> Scene:
        part_name, i = self._locate(index)
        part = self.parts[part_name]
        if self.kind.dated:
            random.seed(hash((self.cfg.seed, i)))  # torchgeo draws seasons with `random`
        sample = part[i]
        image, labels, dominant = self.kind.pixels(self, sample, sample["image"].numpy(), index)
        ds = self.ds_info
        meta = scene_meta(self.dataset, index, f"torchgeo.{self.spec.dataset_class}",
                          group=ds.group, sensor=ds.sensor_spec.name,
                          bands=self.band_records,
                          gsd_m=ds.gsd_m)
        meta.update(self.kind.meta(part, i, self.bands))
        if self.kind.dated:
            meta["date"] = dt.datetime.fromtimestamp(float(sample["t"][0]), dt.UTC).date() \
                .isoformat()
            meta["footprint"]["date"] = meta["date"]
        order = [lab for lab in self.ds_info.labels if lab in labels]
        meta.update(scene_labels=order, whole_image=True)
        return Scene(dataset, index, np.ascontiguousarray(image), meta, self.ds_info.labels,
                     lambda y0, x0, h, w: list(order), lambda y0, x0, h, w: dominant)
