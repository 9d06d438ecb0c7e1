"""Annotated images in the datasets' published formats, served as scenes to cut into patches.

The readers of seed 000's datasets (``xview``, ``coco``, ``dota``, ``agriculture_vision``,
``class_masks``, ``qfabric``; one module each) parse their annotation files into
:class:`Item` s: an image (one file, or several stacked such as RGB + NIR), its objects as
polygons in pixel coordinates or its class masks, a valid-pixel mask where the data has one,
and the image's metadata (date, location, official split). :class:`AnnotatedSource` turns items
into scenes; the shard build cuts each into ``image_px`` patches and asks every patch for its
labels:

* an object's class is in a patch when at least ``min_object_share`` (default 0.5) of its
  polygon's area lies inside the patch (a box cut by the patch border counts by its share);
* a mask class is in a patch when it covers at least ``min_mask_share`` (default 0.01) of the
  patch's valid pixels;
* a patch with less than ``min_valid`` (default 0.5) valid pixels is dropped and counted.

Problems in the input are found when the source opens, before any shard is written: a missing
annotation file or image, a box outside its image, a mask of another size than its image, a
class id the dataset does not list, a GeoTIFF without CRS where the data should carry one. Each
stops with the file and the fix, or with ``on_bad: skip`` is left out and counted in the
manifest's ``source_reports`` (``not_used``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from geofm_lib.bands import BandRecord, resolve_bands
from geofm_lib.config import Config
from geofm_lib.data.masks import from_class_masks
from geofm_lib.data.sources.base import (
    Scene,
    SourceBase,
    _resolve_root,
    check_options,
    label_mapping,
    scene_meta,
    usage,
)
from geofm_lib.errors import ConfigError, DataError, ShardError

THRESHOLDS = {"min_object_share": 0.5, "min_mask_share": 0.01, "min_valid": 0.5}
"""Patch-labelling thresholds, each a reader option (module docstring)."""


@dataclass
class Item:
    """One annotated image as a reader found it."""

    images: tuple[Path, ...]  # one raster, or single-band files stacked in this order
    split: str | None = None  # the dataset's own split (train / val), where it has one
    objects: list[tuple[str, np.ndarray]] = field(default_factory=list)  # label, (N, 2) x/y
    masks: dict[str, Path] = field(default_factory=dict)  # label -> its mask file (255: in)
    class_mask: Path | None = None  # one mask of class indices (FloodNet style)
    class_ids: dict[int, str | None] = field(default_factory=dict)  # index -> label/None
    valid: tuple[Path, ...] = ()  # masks whose product (255: valid) marks the valid pixels
    date: str | None = None
    bounds: list[float] | None = None  # lon0, lat0, lon1, lat1 where the data carries them
    extra: dict = field(default_factory=dict)  # reader-specific metadata (json-safe)
    # the scene this image was cut from (a MAFAT frame's scene, an Agriculture-Vision field, a
    # SpectralEarth location): a random split keeps it on one side; None: the image itself
    group: str | None = None

    @property
    def name(self) -> str:
        return self.images[0].name


class Problems:
    """What a reader found wrong, by reason: raised at once, or counted with ``on_bad: skip``."""

    def __init__(self, on_bad: str, where: str):
        self.skip, self.where, self.counts = on_bad == "skip", where, Counter()

    def bad(self, reason: str, message: str, fix: str, n: int = 1) -> None:
        """Raise DataError (``on_bad: error``) or count ``n`` of ``reason`` (``on_bad:
        skip``)."""
        if not self.skip:
            raise DataError(f"{self.where}: {message}; {fix}, or set on_bad: skip to leave "
                            f"such items out (counted in the manifest)")
        self.counts[reason] += n

    def known(self, reason: str, n: int = 1) -> None:
        """Count an item the dataset's documentation says to leave out (never an error)."""
        self.counts[reason] += n


def open_root(dataset: str, spec, what: str) -> Path:
    """The dataset's root folder, which must exist."""
    if not spec.root:
        raise ConfigError(f"sources.{dataset}: this reader needs root, the folder that holds "
                          f"{what}")
    root = Path(_resolve_root(spec.root))
    if not root.is_dir():
        raise ConfigError(f"sources.{dataset}: root {root} is not a folder; it should hold "
                          f"{what}")
    return root


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file from its header (no pixels read)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with _quiet(), rasterio.open(path) as src:
            return src.height, src.width
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def read_raster(path: Path) -> np.ndarray:
    """(bands, H, W) pixels of an image file in its own dtype: GeoTIFF through rasterio, PNG
    and JPEG through PIL."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with _quiet(), rasterio.open(path) as src:
                return src.read()
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
        raise ShardError(f"image {path.name} cannot be decoded ({type(exc).__name__}: "
                         f"{str(exc)[:160]})") from exc
    return a[None] if a.ndim == 2 else np.ascontiguousarray(np.moveaxis(a, -1, 0))


def raster_lonlat(path: Path) -> tuple[list[float] | None, bool]:
    """(WGS84 bounds, has a CRS) of an image file (PNG/JPEG: no CRS)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None, False
    import rasterio
    from rasterio.warp import transform_bounds

    with _quiet(), rasterio.open(path) as src:
        if src.crs is None:
            return None, False
        return [round(v, 6) for v in transform_bounds(src.crs, "EPSG:4326", *src.bounds)], True


@contextmanager
def _quiet():
    """rasterio without its warning about files that have no CRS (checked where it matters)."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def clip_objects(item: Item, size: tuple[int, int], problems: Problems) -> None:
    """Keep objects that overlap their image; one wholly outside is bad input (a box in
    another image's coordinates, or swapped x/y)."""
    h, w = size
    kept = []
    for label, poly in item.objects:
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            problems.bad("objects outside their image",
                         f"{item.name}: a {label!r} box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies "
                         f"outside the {w}x{h} image",
                         "check that the annotation belongs to this image (x = column, y = row)")
            continue
        kept.append((label, poly))
    item.objects = kept


class AnnotatedSource(SourceBase):
    """Scenes from :class:`Item` s (a reader module parses the files and calls ``__init__``).

    Args:
        cfg, dataset, spec: the run, the dataset key and its ``sources`` entry.
        items: the annotated images found (already checked).
        vocabulary: the dataset's labels (the catalog's, or a dataset card's).
        bands: the band records of every item's image, in channel order.
        reader: the reader's name for metadata and reports.
        problems: what was left out while parsing (``on_bad: skip``).
        found: how many images the reader found.
    """

    OPTIONS = tuple(THRESHOLDS)

    def __init__(self, cfg: Config, dataset: str, spec, items: list[Item], vocabulary,
                 bands: list[BandRecord], reader: str, problems: Problems, found: int,
                 report: dict | None = None):
        if not items:
            raise DataError(f"{dataset}: the {reader} reader found no usable image under "
                            f"{spec.root} (found {found}; left out: {dict(problems.counts)})")
        # at most samples_per_dataset images (cfg.samples_for): a seeded draw, kept in file order
        rng = np.random.default_rng([cfg.seed, 23, *dataset.encode()])
        take = sorted(rng.choice(len(items), min(len(items), cfg.samples_for(dataset)),
                                 replace=False).tolist())
        self.cfg, self.dataset, self.reader = cfg, dataset, reader
        self.items = [items[i] for i in take]
        self.vocabulary = tuple(vocabulary)
        self.bands = bands
        self.opts = {k: float(spec.options.get(k, v)) for k, v in THRESHOLDS.items()}
        self.on_bad = spec.on_bad
        self.info = cfg.dataset_info(dataset)
        self.datasets = (dataset,)
        self._report = {"reader": reader,
                        **usage(found, len(self.items), **problems.counts,
                                over_samples_per_dataset=len(items) - len(self.items)),
                        "objects": sum(len(i.objects) for i in self.items),
                        "thresholds": self.opts, **(report or {})}
        self._official = spec.splits == "official"

    def count(self, dataset: str) -> int:
        return len(self.items)

    def splits(self, dataset: str) -> dict[str, list[int]] | None:
        if not self._official:
            return None
        out: dict[str, list[int]] = {"train": [], "val": []}
        for i, item in enumerate(self.items):
            if item.split in out:
                out[item.split].append(i)
        return out

    def report(self, dataset: str) -> dict:
        return self._report

    def split_key(self, dataset: str, index: int) -> str | None:
        return self.items[index].group

    # --- one scene --------------------------------------------------------------------------

    def _image(self, item: Item) -> np.ndarray:
        parts = [read_raster(p) for p in item.images]
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) != 1:
            sizes = ", ".join(f"{p.name}: {a.shape[2]}x{a.shape[1]}"
                              for p, a in zip(item.images, parts))
            raise DataError(f"{self.dataset}: the files of {item.name} differ in size ({sizes}); "
                            f"they should be one image's bands")
        image = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if image.shape[0] != len(self.bands):
            names = ", ".join(b.name for b in self.bands)
            raise DataError(f"{self.dataset}: {item.name} has {image.shape[0]} bands, the "
                            f"reader expects {len(self.bands)} ({names})")
        return image

    def _mask(self, path: Path, shape: tuple[int, int], item: Item) -> np.ndarray:
        m = read_raster(path)[0]
        if m.shape != shape:
            raise DataError(f"{self.dataset}: mask {path.parent.name}/{path.name} is "
                            f"{m.shape[1]}x{m.shape[0]} px, its image {item.name} "
                            f"{shape[1]}x{shape[0]}; masks must have their image's size")
        return m

    def scene(self, dataset: str, index: int) -> Scene:
        item = self.items[index]
        image = self._image(item)
        shape = image.shape[1:]
        valid = np.ones(shape, bool)
        for path in item.valid:
            valid &= self._mask(path, shape, item) == 255
        classes: dict[str, np.ndarray] = {}
        for label, path in item.masks.items():
            classes[label] = (self._mask(path, shape, item) == 255) & valid
        if item.class_mask is not None:
            idx = self._mask(item.class_mask, shape, item)
            for value, label in item.class_ids.items():
                if label is not None:
                    hit = (idx == value) & valid
                    classes[label] = classes.get(label, np.zeros(shape, bool)) | hit
        labeller = _Labeller(item.objects, classes, valid, self.opts, self.vocabulary)
        meta = scene_meta(
            dataset, index, f"{self.reader}", group=self.info.group,
            sensor=self.info.sensor_spec.name, bands=self.bands, gsd_m=self.info.gsd_m,
            date=item.date, bounds=item.bounds, file=item.name,
            scene_labels=labeller.scene_labels(), **item.extra)
        # a class mask where the annotation is per pixel (masks, not boxes or polygons)
        mask = (from_class_masks(classes, self.vocabulary, valid if item.valid else None)
                if classes and not item.objects else None)
        return Scene(dataset, index, image, meta, self.vocabulary, labeller.window,
                     keep_window=labeller.keep if item.valid else None,
                     mask_window=None if mask is None else partial(_window_of, mask),
                     object_counts=labeller.object_counts if item.objects else None)


def _window_of(array: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    return array[y:y + h, x:x + w]


class _Labeller:
    """Labels of pixel windows of one image: objects by area share, masks by pixel share."""

    def __init__(self, objects, classes: dict[str, np.ndarray], valid: np.ndarray, opts: dict,
                 vocabulary):
        import shapely

        self.labels = [label for label, _ in objects]
        self.polys = shapely.polygons([np.asarray(p, float) for _, p in objects]) \
            if objects else None
        self.areas = shapely.area(self.polys) if objects else None
        self.centroids = shapely.centroid(self.polys) if objects else None
        self.classes, self.opts, self.order = classes, opts, {v: i for i, v in
                                                              enumerate(vocabulary)}
        self.valid = valid
        self.h, self.w = valid.shape
        self.placed = np.zeros(len(self.labels), bool)  # in some kept patch's labels

    def _valid_in(self, y: int, x: int, h: int, w: int) -> int:
        return int(self.valid[y:y + h, x:x + w].sum())

    def keep(self, y: int, x: int, h: int, w: int) -> bool:
        return self._valid_in(y, x, h, w) >= self.opts["min_valid"] * h * w

    def window(self, y: int, x: int, h: int, w: int) -> list[str]:
        found = set()
        if self.polys is not None:
            import shapely

            win = shapely.box(x, y, x + w, y + h)
            inside = shapely.area(shapely.intersection(self.polys, win))
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(self.areas > 0, inside / self.areas,
                                 shapely.contains(win, self.centroids).astype(float))
            hit = share >= self.opts["min_object_share"]
            self.placed |= hit
            found.update(lab for lab, h in zip(self.labels, hit) if h)
        if self.classes:
            n_valid = self._valid_in(y, x, h, w)
            if n_valid:
                for label, m in self.classes.items():
                    if m[y:y + h, x:x + w].sum() >= self.opts["min_mask_share"] * n_valid:
                        found.add(label)
        return sorted(found, key=self.order.__getitem__)

    def scene_labels(self) -> list[str]:
        labels = self.window(0, 0, self.h, self.w)
        self.placed[:] = False  # the whole image is no patch
        return labels

    def object_counts(self, cut: list[tuple[int, int, bool]], p: int) -> dict[str, int]:
        """The scene's objects and those no kept patch labelled, by why: the object's centre
        lies in no patch cut (the strip along the edge that no whole patch covers), in a patch
        dropped for too little valid area, or the object is spread over patches so that none
        holds ``min_object_share`` of it."""
        out = {"objects": len(self.labels), "in a patch's labels": int(self.placed.sum())}
        if self.polys is None or self.placed.all():
            return out
        import shapely

        cx, cy = shapely.get_x(self.centroids), shapely.get_y(self.centroids)
        for i in np.flatnonzero(~self.placed):
            inside = [kept for y, x, kept in cut
                      if x <= cx[i] < x + p and y <= cy[i] < y + p]
            why = ("not in a patch: in the edge strip no whole patch covers" if not inside
                   else "not in a patch: its patch was dropped (too little valid area)"
                   if not any(inside) else
                   "not in a patch: spread over patches, none holds min_object_share of it")
            out[why] = out.get(why, 0) + 1
        return out


def catalog_labels(dataset: str, cfg: Config, names, where: str) -> list[str]:
    """The catalog (or dataset card) label of each class name of a file format."""
    vocab = cfg.dataset_info(dataset).labels
    try:
        return label_mapping(names, vocab)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def band_records(dataset: str, cfg: Config, names, where: str,
                 sample: Path | None = None) -> list[BandRecord]:
    """Band records of the reader's band names, with the wavelengths of the dataset's sensor
    where its bands carry those names. ``sample``: an image of the dataset; where its pixel
    type is not the sensor's (MAFAT's 16-bit frames against the catalog's 8-bit camera), the
    units say what the files hold."""
    info = cfg.dataset_info(dataset)
    sensor = {b.name: b for b in info.sensor_spec.bands}
    centres = [sensor[n].center_nm if n in sensor else None for n in names]
    units = info.sensor_spec.scaling
    dtype = image_dtype(sample) if sample is not None else None
    if dtype is not None and dtype != info.sensor_spec.dtype and dtype.startswith("uint"):
        units = f"{dtype[4:]}-bit grey level (the files' digital numbers, {dtype})"
    return resolve_bands(names, wavelengths_nm=centres if any(centres) else None,
                         units=units, where=where)


def image_dtype(path: Path) -> str | None:
    """The pixel type of an image file from its header (None where it cannot be read)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with _quiet(), rasterio.open(path) as src:
                return src.dtypes[0]
        from PIL import Image

        with Image.open(path) as im:
            return {"I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}.get(
                im.mode, "uint8")
    except Exception:  # noqa: BLE001 - the reader reports unreadable images itself
        return None


def reader_options(spec, dataset: str, own=()) -> dict:
    """The entry's options, checked against what this reader takes."""
    opts = dict(spec.options)
    check_options(opts, (*AnnotatedSource.OPTIONS, *own), f"sources.{dataset}.options")
    return opts
