"""A labelled GeoTIFF scene (any bands, named from the file), cut into patches with labels from
polygons or a class raster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.sources.base import Scene, SourceBase, _resolve_root, scene_meta
from geofm_lib.errors import ConfigError

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
    * Nodata: patches with more than ``max_nodata`` (default 0.5) nodata or NaN pixels are
      skipped and counted (``report``); the rest keep their nodata pixels, counted per patch.
    * Footprints: patch bounds reprojected to WGS84.
    """

    def __init__(self, cfg: Config, dataset: str = "geotiff", spec=None):
        opts = dict(spec.options) if spec is not None else {}
        tif, vec = self._files(cfg, dataset, spec, opts)
        self.cfg, self.dataset, self.tif = cfg, dataset, tif
        self.max_nodata = float(opts.get("max_nodata", 0.5))
        self._read_raster(opts)
        self._burn_labels(vec, opts)
        self._cut(opts)
        self.datasets = (dataset,)

    @staticmethod
    def _files(cfg: Config, dataset: str, spec, opts: dict) -> tuple[Path, Path | None]:
        """The scene's GeoTIFF and its vector labels (given, or found beside it)."""
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
        meta = scene_meta(dataset, index, "geotiff", group="custom", sensor=self.tif.stem,
                          bands=self.band_names, gsd_m=self.gsd_m,
                          bounds=[round(v, 6) for v in b], origin_px=[y, x],
                          file=self.tif.name, scene_labels=labeller(0, 0, p, p),
                          nodata_pixels=int(self.invalid[y:y + p, x:x + p].sum()),
                          nodata=None if self.nodata is None else float(self.nodata))
        return Scene(dataset, index, np.ascontiguousarray(image), meta, self.vocabulary,
                     labeller)
