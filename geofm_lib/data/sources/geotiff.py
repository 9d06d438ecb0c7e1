"""A labelled GeoTIFF scene (any bands, named from the file), cut into patches with labels from
polygons or a class raster.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from geofm_lib.bands import resolve_bands
from geofm_lib.catalog import ENMAP_BANDS, ENMAP_NODATA
from geofm_lib.config import Config
from geofm_lib.data.sources.base import (
    BAND_OPTIONS,
    Scene,
    SourceBase,
    _resolve_root,
    check_options,
    raster_bands,
    scene_meta,
    usage,
)
from geofm_lib.errors import ConfigError

# a band name inside a file name: Sentinel-2 (B02, B8A), SAR polarisations
_BAND_TOKEN = re.compile(r"^(B\d{1,2}A?|VV|VH|HH|HV)$", re.IGNORECASE)


# --- a GeoTIFF scene with vector labels -----------------------------------------------------------

class GeoTiffSource(SourceBase):
    """A large georeferenced scene (any CRS) cut into ``image_px`` patches with a stride,
    optionally labelled by a vector file of polygons and/or points.

    * Vector labels: GeoPackage or GeoJSON (any OGR format), reprojected to the raster's CRS;
      ``label_column`` (default ``name``) holds the class. A patch carries a polygon class when
      the class covers at least 1 % of it (intersection area, by burnt pixels) and a point class
      when a point falls inside it. Without a vector file the scene is unlabelled.
    * ``source: geotiff`` + ``source_path`` reads ``<stem>_polygons.gpkg`` beside the file;
      a ``sources`` entry ``{reader: geotiff, root: scene.tif, options: {labels: ...,
      label_column: ..., stride_px: ..., band_names: [...]}}`` says it explicitly.
    * Bands: named and given wavelengths from the file or the options (``base.raster_bands``:
      ``band_names``, ``band_wavelengths_nm``, ``band_fwhm_nm``, ``sensor``, ``units``,
      ``nodata``).
    * Nodata: patches with more than ``max_nodata`` (default 0.5) nodata or NaN pixels are
      skipped and counted (``report``); the rest keep their nodata pixels, counted per patch.
    * Footprints: patch bounds reprojected to WGS84.
    * Which patches: at most ``samples_per_dataset``, a seeded draw spread over the whole
      scene (not the first ones in raster order), kept in raster order.
    * Splits: a random split keeps square blocks of ``split_block_px`` (default 4 patches a
      side) whole, so validation patches are not the neighbours of training patches except
      along block edges; a scene needs at least two blocks with patches.
    """

    def __init__(self, cfg: Config, dataset: str = "geotiff", spec=None):
        opts = dict(spec.options) if spec is not None else {}
        check_options(opts, ("labels", "label_column", "stride_px", "max_nodata",
                             "split_block_px", *BAND_OPTIONS), f"sources.{dataset}.options")
        tif, vec = self._files(cfg, dataset, spec, opts)
        self.cfg, self.dataset, self.tif = cfg, dataset, tif
        self.product = opts.pop("_product", None)  # an EnMAP product (enmap_product)
        self.recognised = opts.pop("_recognised", None)  # what the file name told
        self.acquired = self.product.date if self.product is not None else \
            date_from_name(tif.name)
        # a dataset card (or catalog entry) gives the group, the sensor's bands and the labels
        self.info = cfg.dataset_info(dataset) if dataset in (cfg.dataset_cards or {}) else None
        if self.info is not None and "sensor" not in opts:
            opts["sensor"] = self.info.sensor_spec
        self.max_nodata = float(opts.get("max_nodata", 0.5))
        self._read_raster(opts)
        if self.product is not None:  # EnMAP's bands by number, with this product's centres
            self.bands = [replace(r, name=ENMAP_BANDS[i].name)
                          for i, r in enumerate(self.bands)]
        self._burn_labels(vec, opts)
        self._cut(opts)
        self.datasets = (dataset,)

    @staticmethod
    def _files(cfg: Config, dataset: str, spec, opts: dict) -> tuple[Path, Path | None]:
        """The scene's GeoTIFF and its vector labels (given, or found beside it). An EnMAP
        product (its folder or its METADATA.XML) gives its SPECTRAL_IMAGE and sets ``opts``
        from its metadata (:func:`enmap_product`)."""
        path = (spec.root if spec is not None else cfg.source_path)
        if not path:
            raise ConfigError(f"{dataset}: a GeoTIFF source needs its file (source_path, or "
                              f"root in sources.{dataset})")
        tif = Path(_resolve_root(path))
        product = enmap_product(tif, dataset)
        if product is not None:
            tif = product.image
            import rasterio

            with rasterio.open(tif) as src:
                if src.count != len(product.centres_nm):
                    raise ConfigError(f"{dataset}: {tif.name} has {src.count} bands, "
                                      f"{product.metadata.name} describes "
                                      f"{len(product.centres_nm)}; the two files are not of "
                                      f"one product")
                if all(v is None for v in src.nodatavals):
                    opts.setdefault("nodata", ENMAP_NODATA)  # L1C/L2A's fill value
            for key, value in product.options().items():
                opts.setdefault(key, value)
            opts["_product"] = product
        elif tif.is_file() and ENMAP_IMAGE.search(tif.name) and not {"sensor", "band_names",
                                                                       "band_wavelengths_nm"} & \
                set(opts):
            # an EnMAP spectral image without its METADATA.XML (a HySpecNet-11k patch): the
            # bands by number at EnMAP's nominal centres, its fill value as nodata
            import rasterio

            with rasterio.open(tif) as src:
                count, declared = src.count, src.nodatavals
            if count == len(ENMAP_BANDS):
                opts["sensor"] = "enmap"
                opts["band_names"] = [f"band{i + 1}" for i in range(count)]  # by number
                if all(v is None for v in declared):
                    opts.setdefault("nodata", ENMAP_NODATA)
                opts.setdefault("units", "reflectance x 10000")
                opts["_recognised"] = ("EnMAP L2A by its file name (no METADATA.XML beside it, "
                                       "as in HySpecNet-11k): EnMAP's nominal band centres")
        if tif.is_dir():  # a product stored one band per file
            labels = opts.get("labels")
            vec = Path(_resolve_root(labels)) if labels is not None else None
            if vec is not None and not vec.is_file():
                raise ConfigError(f"{dataset}: labels file {vec.name!r} not found")
            return tif, vec
        if not tif.is_file():
            raise ConfigError(f"{dataset}: no GeoTIFF at {tif.name!r}")
        labels = opts.get("labels")
        if labels is not None:
            vec = Path(_resolve_root(labels))
            if not vec.is_file():
                raise ConfigError(f"{dataset}: labels file {vec.name!r} not found")
            return tif, vec
        vec = next((c for c in (tif.with_name(tif.stem + "_polygons.gpkg"),
                                tif.with_name(tif.stem + ".geojson"),
                                tif.with_name(tif.stem + "_points.gpkg")) if c.is_file()), None)
        if vec is None and spec is None:
            raise ConfigError(f"source_path {tif.name!r} must be a GeoTIFF with "
                              f"{tif.stem + '_polygons.gpkg'!r} beside it (or use a "
                              f"`sources` entry with options.labels)")
        return tif, vec

    def _read_raster(self, opts: dict) -> None:
        """Pixels, nodata, transform, CRS and band names of the scene."""
        import rasterio  # deferred: GDAL takes a while to load

        dataset, tif = self.dataset, self.tif
        self.band_files = None
        try:
            if tif.is_dir():
                self._read_band_files(opts)
            else:
                with rasterio.open(tif) as src:
                    self.image = src.read()
                    self.transform = src.transform
                    self.crs = src.crs
                    self.gsd_m = float(abs(src.transform.a))
                    self.bands = raster_bands(src, opts, f"{dataset} ({tif.name})")
        except rasterio.errors.RasterioIOError as exc:
            raise ConfigError(f"{dataset}: {tif.name!r} is not a raster rasterio/GDAL can read "
                              f"({str(exc)[:200]}); give the scene's GeoTIFF (.tif), or a "
                              f"folder of single-band files, as root") from None
        if self.crs is None:
            raise ConfigError(f"{dataset}: {tif.name} has no CRS; footprints and vector labels "
                              "need a georeferenced raster")
        values = {r.nodata for r in self.bands}
        # one nodata value for the file where all bands share it (the scene's ``nodata``)
        self.nodata = values.pop() if len(values) == 1 else None

    def _read_band_files(self, opts: dict) -> None:
        """A folder of single-band rasters (a Sentinel-2 product as ``*_B02_10m.jp2`` files):
        the band named by the token of each file name that is a band name (``B02``, ``B8A``,
        ``VV``), stacked on the grid of the finest file; coarser bands covering the same
        extent are upsampled by pixel replication (nearest). Files without a band token
        (``SCL``, ``TCI``, ``AOT``) are not used, and counted in the report."""
        import rasterio
        from rasterio.enums import Resampling

        folder, where = self.tif, f"{self.dataset} ({self.tif.name}/)"
        found = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in (".tif", ".tiff", ".jp2"))
        bands, unused = {}, {}
        for path in found:
            token = next((t for t in path.stem.split("_") if _BAND_TOKEN.match(t)), None)
            if token is None:
                unused[path.name] = "no band name (B02, B8A, VV, ...) in the file name"
            elif token.upper() in {k.upper() for k in bands}:
                unused[path.name] = f"a second file for band {token}"
            else:
                bands[token] = path
        if not bands:
            raise ConfigError(f"{where}: none of the {len(found)} raster files has a band name "
                              f"in its file name (e.g. T32TQM_20200515_B02_10m.jp2); found "
                              f"{', '.join(p.name for p in found[:5]) or 'no .tif/.jp2 files'}")
        metas = {}
        for token, path in bands.items():
            with rasterio.open(path) as src:
                if src.count != 1:
                    raise ConfigError(f"{where}: {path.name} has {src.count} bands; a band "
                                      f"folder holds one band per file")
                metas[token] = (src.res[0], src.bounds, src.crs, src.nodata, src.width,
                                src.height, src.transform)
        finest = min(metas, key=lambda t: metas[t][0])
        res, ref_bounds, crs, _, width, height, transform = metas[finest]
        for token, (r, b, c, *_rest) in metas.items():
            if c != crs or max(abs(x - y) for x, y in zip(b, ref_bounds)) > r:
                raise ConfigError(f"{where}: {bands[token].name} does not cover the extent of "
                                  f"{bands[finest].name} in the same CRS ({c} {tuple(b)} vs "
                                  f"{crs} {tuple(ref_bounds)}); a band folder holds one "
                                  f"product")
        records = resolve_bands(list(bands), sensor=opts.get("sensor"),
                                wavelengths_nm=opts.get("band_wavelengths_nm"),
                                fwhm_nm=opts.get("band_fwhm_nm"), units=opts.get("units"),
                                nodata=opts.get("nodata", [metas[t][3] for t in bands]),
                                where=where)
        order = sorted(range(len(records)), key=lambda i: (
            records[i].center_nm if records[i].center_nm is not None else float("inf"),
            records[i].name))
        tokens = [list(bands)[i] for i in order]
        layers = []
        for token in tokens:
            with rasterio.open(bands[token]) as src:
                layers.append(src.read(1, out_shape=(height, width),
                                       resampling=Resampling.nearest))
        self.image = np.stack(layers)
        self.bands = [records[i] for i in order]
        self.transform, self.crs, self.gsd_m = transform, crs, float(res)
        self.band_files = {"found": len(found), "used": len(bands), "not_used": unused}

    def _burn_labels(self, vec: Path | None, opts: dict) -> None:
        """Polygon and point classes burnt into class maps of the raster's grid."""
        h, w = self.image.shape[1:]
        self.class_map = np.zeros((h, w), np.int16)
        self.point_map = np.zeros((h, w), np.int16)
        self.vocabulary: tuple[str, ...] = ()
        if vec is None:
            return
        import geopandas as gpd  # deferred: geopandas and GDAL take a while to load
        from rasterio.features import rasterize

        column = opts.get("label_column", "name")
        gdf = gpd.read_file(vec)
        if column not in gdf.columns:
            raise ConfigError(f"{self.dataset}: {vec.name} has no column {column!r}; columns: "
                              f"{', '.join(map(str, gdf.columns))} (set label_column)")
        gdf = gdf.to_crs(self.crs)
        self.vocabulary = tuple(sorted(map(str, gdf[column].unique())))
        if self.info is not None and self.info.labels:  # the card's vocabulary, in its order
            unknown = [c for c in self.vocabulary if c not in self.info.labels]
            if unknown:
                raise ConfigError(f"{self.dataset}: classes {unknown[:5]} of {vec.name} are not "
                                  f"in the dataset card's labels ({', '.join(self.info.labels)})")
            self.vocabulary = tuple(self.info.labels)
        kinds = gdf.geometry.geom_type
        for kind, target in (("Polygon", self.class_map), ("Point", self.point_map)):
            part = gdf[kinds.str.contains(kind)]
            if len(part):
                shapes = [(g, self.vocabulary.index(str(n)) + 1)
                          for g, n in zip(part.geometry, part[column])]
                target[:] = rasterize(shapes, out_shape=(h, w), transform=self.transform,
                                      fill=0, dtype="int16")

    def _cut(self, opts: dict) -> None:
        """Patch origins with a stride, without patches that are mostly nodata."""
        h, w = self.image.shape[1:]
        p = self.cfg.image_px
        stride = int(opts.get("stride_px", p))
        if stride < 1:
            raise ConfigError(f"{self.dataset}: stride_px must be at least 1")
        if h < p or w < p:
            raise ConfigError(f"{self.dataset}: the scene ({h}x{w} px) is smaller than "
                              f"image_px={p}")
        band_invalid = ~np.isfinite(self.image) if self.image.dtype.kind == "f" \
            else np.zeros(self.image.shape, bool)
        declared = [r.nodata for r in self.bands]
        for b, value in enumerate(declared):
            if value is not None:
                band_invalid[b] |= self.image[b] == value
        invalid = band_invalid.all(axis=0)  # no band measured the pixel
        if all(v is None for v in declared) and self.image.dtype.kind in "iu":
            invalid |= ~self.image.any(axis=0)  # all bands 0: outside the acquisition
        self.invalid = invalid
        cells = [(y, x) for y in range(0, h - p + 1, stride) for x in range(0, w - p + 1, stride)]
        kept = [(y, x) for y, x in cells if invalid[y:y + p, x:x + p].mean() <= self.max_nodata]
        self.skipped = len(cells) - len(kept)
        self.usable = len(kept)
        # a seeded draw over the whole scene (raster order would take its top strip only)
        rng = np.random.default_rng([self.cfg.seed, 31, *self.dataset.encode()])
        take = min(len(kept), self.cfg.samples_for(self.dataset))
        self.cells = [kept[i] for i in sorted(rng.choice(len(kept), take, replace=False))]
        self.block_px = int(opts.get("split_block_px", 4 * p))
        if self.block_px < p:
            raise ConfigError(f"sources.{self.dataset}.options.split_block_px="
                              f"{self.block_px} is smaller than image_px={p}; a split block "
                              f"holds whole patches (default {4 * p}, 4 patches a side)")

    def count(self, dataset: str) -> int:
        return len(self.cells)

    def split_key(self, dataset: str, index: int) -> str:
        """The block of the scene that holds the patch's centre (row, column of blocks)."""
        y, x = self.cells[index]
        half = self.cfg.image_px // 2
        return f"block {(y + half) // self.block_px},{(x + half) // self.block_px}"

    def report(self, dataset: str) -> dict:
        files = {"band_files": self.band_files} if self.band_files else {}
        used = self.count(dataset)
        recognised = {"recognised": self.recognised} if self.recognised else {}
        return {"reader": "geotiff", "file": self.tif.name, **files, **recognised,
                "acquired": self.acquired, "patches": self.usable,
                "skipped_mostly_nodata": self.skipped, "max_nodata": self.max_nodata,
                "split_block_px": self.block_px,
                "crs": str(self.crs), "vocabulary_from": "vector file" if self.vocabulary
                else "none (unlabelled scene)",
                **usage(self.usable + self.skipped, used,
                        more_than_max_nodata=self.skipped,
                        over_samples_per_dataset=self.usable - used)}

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
        meta = scene_meta(dataset, index, "geotiff",
                          group=self.info.group if self.info else "custom",
                          sensor=self.info.sensor_spec.name if self.info else self.tif.stem,
                          bands=self.bands, gsd_m=self.gsd_m,
                          bounds=[round(v, 6) for v in b], origin_px=[y, x],
                          file=self.tif.name, scene_labels=labeller(0, 0, p, p),
                          nodata_pixels=int(self.invalid[y:y + p, x:x + p].sum()),
                          nodata=None if self.nodata is None else float(self.nodata),
                          **({"date": self.acquired} if self.acquired else {}))
        return Scene(dataset, index, np.ascontiguousarray(image), meta, self.vocabulary,
                     labeller)


ENMAP_IMAGE = re.compile(r"^ENMAP01-_{4}L[12][ABC]-DT\d{10}_\d{8}T\d{6}Z_\d{3}_V\d{6}_\d{8}T"
                         r"\d{6}Z.*SPECTRAL_IMAGE\.TIF$", re.IGNORECASE)
"""An EnMAP spectral image's file name (DLR's products, HySpecNet-11k's patches)."""

_NAME_DATES = (  # (file name pattern, the acquisition date's groups): the formats that carry one
    re.compile(r"ENMAP01-_{4}L[12][ABC]-DT\d{10}_(\d{4})(\d{2})(\d{2})T"),  # EnMAP
    re.compile(r"^L[COTEM]0\d_L\w{3}_\d{6}_(\d{4})(\d{2})(\d{2})_"),  # Landsat collections
    re.compile(r"^S2[ABC]_MSIL\w{2}_(\d{4})(\d{2})(\d{2})T"),  # Sentinel-2 products
    re.compile(r"^S1[ABC]_\w{2}_\w{4}_\w{4}_(\d{4})(\d{2})(\d{2})T"),  # Sentinel-1 products
)


def date_from_name(name: str) -> str | None:
    """The acquisition date (ISO) where a file name's format carries one: EnMAP, Landsat
    (``LC08_L1TP_224078_20200518_...``), Sentinel-1/2 product names; None otherwise."""
    for pattern in _NAME_DATES:
        found = pattern.search(name)
        if found:
            try:
                return datetime(*map(int, found.groups())).date().isoformat()
            except ValueError:
                return None
    return None


# --- an EnMAP product in DLR's delivery layout ----------------------------------------------

ENMAP_WAVELENGTH_TOLERANCE_NM = 5.0
"""How far a product's band centre may lie from the nominal centre of the band with its number
(torchgeo's table, the catalog's): centres move by well under a nanometre from product to
product, and a band list that is off by more is not EnMAP's 224-band layout."""


@dataclass(frozen=True)
class EnMAPProduct:
    """One EnMAP L1C/L2A product: the spectral image, its metadata and what they say."""

    image: Path
    metadata: Path
    date: str  # acquisition day (from the product name)
    centres_nm: tuple[float, ...]
    fwhm_nm: tuple[float, ...]
    gains: tuple[float, ...]
    offsets: tuple[float, ...]

    def units(self) -> str:
        if all(math.isclose(g, 1e-4, rel_tol=1e-6) for g in self.gains) and not any(
                self.offsets):
            return "reflectance x 10000"
        return "DN (value = DN x GainOfBand + OffsetOfBand of METADATA.XML, per band)"

    def options(self) -> dict:
        """The geotiff reader's band options: this product's centres and widths, and what its
        values are. The reader then names each band as the catalog names EnMAP's band of that
        number (its nominal centre: the same names for every product), while the band records
        keep this product's measured centres."""
        return {"band_names": [f"B{i + 1}" for i in range(len(self.centres_nm))],
                "band_wavelengths_nm": list(self.centres_nm), "band_fwhm_nm": list(self.fwhm_nm),
                "units": self.units()}


def enmap_product(path: Path, dataset: str = "enmap") -> EnMAPProduct | None:
    """The EnMAP product at ``path`` (its folder, or its ``-METADATA.XML``), None when ``path``
    is not one. Recognised by torchgeo's ``EnMAP`` file pattern
    (``ENMAP01-____L2A-DT<datatake>_<date>Z_<tile>_V<version>_<processing>Z-SPECTRAL_IMAGE``);
    band centres, widths, gains and offsets come from ``<product>-METADATA.XML``
    (``specific/bandCharacterisation/bandID``), which must be beside the image: a product's
    centres differ from the nominal ones, and without them the bands would be placed by a
    table rather than by what was measured."""
    is_xml = path.is_file() and path.name.upper().endswith("METADATA.XML")
    folder = path.parent if is_xml else path if path.is_dir() else None
    if folder is None:
        return None
    images = sorted(p for p in folder.glob("ENMAP*SPECTRAL_IMAGE*")
                    if p.suffix.upper() in (".TIF", ".TIFF"))
    if not images:
        if is_xml:
            raise ConfigError(f"{dataset}: no ENMAP*-SPECTRAL_IMAGE.TIF beside {path.name}; "
                              f"give the product folder as DLR delivers it")
        return None
    if len(images) > 1:
        raise ConfigError(f"{dataset}: {folder.name}/ holds {len(images)} EnMAP spectral images "
                          f"({images[0].name}, ...); give each product its own `sources` entry "
                          f"(root: the product folder)")
    image = images[0]
    from torchgeo.datasets import EnMAP  # its product naming; deferred (seconds to import)

    found = re.match(EnMAP.filename_regex, image.name, re.VERBOSE)
    if found is None:
        raise ConfigError(f"{dataset}: {image.name} does not follow EnMAP's product naming "
                          f"(ENMAP01-____L2A-DT<10 digits>_<date>Z_<tile>_V<version>_..."
                          f"-SPECTRAL_IMAGE.TIF); rename it as DLR delivers it, or read it with "
                          f"the geotiff reader and options.band_wavelengths_nm")
    stem = image.name[:image.name.upper().index("-SPECTRAL_IMAGE")]
    xml = next((p for p in folder.iterdir() if p.name.upper() == f"{stem}-METADATA.XML".upper()),
               None)
    if xml is None:
        raise ConfigError(f"{dataset}: {stem}-METADATA.XML is missing beside {image.name}; the "
                          f"band centres and widths of this product are in it (copy the whole "
                          f"product folder)")
    date = datetime.strptime(found["date"], EnMAP.date_format).date().isoformat()
    centres, fwhm, gains, offsets = _band_characterisation(xml, dataset)
    return EnMAPProduct(image, xml, date, centres, fwhm, gains, offsets)


def _band_characterisation(xml: Path, dataset: str):
    """(centres, widths, gains, offsets) per band, in band-number order, checked against the
    nominal EnMAP table."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise ConfigError(f"{dataset}: {xml.name} is not readable XML ({exc}); copy the "
                          f"product's metadata again") from None
    rows = {}
    for band in root.iter("bandID"):
        centre = band.findtext("wavelengthCenterOfBand")
        if centre is None:  # bandID elements elsewhere (quality lists) carry no wavelength
            continue
        try:
            rows[int(band.get("number"))] = (float(centre), float(band.findtext("FWHMOfBand")),
                                             float(band.findtext("GainOfBand") or 1.0),
                                             float(band.findtext("OffsetOfBand") or 0.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{dataset}: {xml.name}: bandID {band.get('number')!r} has no "
                              f"number, centre or FWHM that reads as a number") from None
    if not rows:
        raise ConfigError(f"{dataset}: {xml.name} has no specific/bandCharacterisation/bandID "
                          f"with wavelengthCenterOfBand; it is not an EnMAP product's metadata")
    numbers = sorted(rows)
    if numbers != list(range(1, len(numbers) + 1)) or len(numbers) > len(ENMAP_BANDS):
        raise ConfigError(f"{dataset}: {xml.name} numbers its bands {numbers[:3]}...{numbers[-1]}"
                          f"; expected 1..{len(ENMAP_BANDS)} without gaps")
    off = [(n, rows[n][0], ENMAP_BANDS[n - 1].center_nm) for n in numbers
           if abs(rows[n][0] - ENMAP_BANDS[n - 1].center_nm) > ENMAP_WAVELENGTH_TOLERANCE_NM]
    if off:
        n, got, nominal = off[0]
        raise ConfigError(f"{dataset}: {xml.name}: band {n} is centred at {got:.1f} nm, EnMAP's "
                          f"band {n} at {nominal:.1f} nm ({len(off)} band(s) more than "
                          f"{ENMAP_WAVELENGTH_TOLERANCE_NM:g} nm off); this is not EnMAP's "
                          f"224-band layout: read it with the geotiff reader and "
                          f"options.band_names / band_wavelengths_nm")
    return tuple(tuple(rows[n][k] for n in numbers) for k in range(4))
