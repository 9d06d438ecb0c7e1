"""Tiled inference over a whole scene: any encoder of the registry over a GeoTIFF or COG of any
size, read window by window, and the maps it gives, written as Cloud-Optimized GeoTIFFs in the
scene's CRS.

* **Tiles**: ``tile_px`` squares of scene pixels on a regular grid of step ``stride_px``
  (overlapping when the stride is smaller); the grid covers the whole scene, and the pixels of
  the last row and column of tiles that fall outside it are padding, counted as nodata.
* **Bands** by name, as everywhere (``base.raster_bands``: the file's descriptions, colour
  interpretation, ``band_names``/``sensor`` options); the encoder's input mapping (RGB by name or
  wavelength, band slots, torchgeo layouts) is made for the scene's bands with statistics from
  the scene itself (``stats="scene"``: a nearest-neighbour read of at most ``STATS_PX``
  pixels a side) or from one of the run's datasets of the same bands (``stats=<dataset>``).
* **Nodata**: a pixel is nodata when one of the bands the encoder reads is the file's nodata
  value or not finite; inside a kept tile such pixels are the band mean (0 after
  standardising), as in the shards. A tile with more than ``max_nodata`` of its pixels nodata
  has no embedding; an output cell with more than half of its pixels nodata, or under no kept
  tile, is nodata in every product.
* **Memory**: pixels are read whole when the scene fits in ``memory_mb``, else by bands of one
  tile row, else tile by tile; the embeddings and every product are the same whichever way
  (the batches are formed in the same order, per-cell counts are exact).
* **Products** on a grid of ``cell_px`` pixels: each cell is the mean of the tiles covering it,
  weighted by a squared-sine window of the cell's place in the tile (centres count most, so
  tile seams do not show); a class map (the arg-max of a :class:`ClassHead`'s per-class scores,
  its score as a second product), similarity heatmaps for text queries, and the
  tile embeddings themselves (one band per dimension, one pixel per tile's central
  ``stride_px`` square). A query's heatmap from cached tile embeddings is one matrix product and
  the blend (``SceneEmbeddings.heatmap``).
* **Class heads**: zero-shot (the cosine similarity of each tile to the class prompts, by the
  encoder's own text tower) or a linear probe (one logistic regression per class, fitted on the
  frozen embeddings of labelled patches, as 06's frozen protocol): the way to a class map for
  encoders without a text tower (``ssl:``, ``torchgeo:``, ``rcf``), and a second view for a CLIP.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.captions import label_prompts
from geofm_lib.data.shards import file_sha256
from geofm_lib.encoders.registry import (
    encoder_hash,
    has_text_tower,
    load_encoder,
    tokenizer_for,
)
from geofm_lib.errors import ConfigError, DataError, EncoderError
from geofm_lib.evaluation.retrieval import encode_images, encode_texts
from geofm_lib.io import atomic_path, atomic_write_bytes
from geofm_lib.models.devices import resolve_precision
from geofm_lib.models.inputs import BandSlots, RGBInput, to_model_input
from geofm_lib.progress import get_logger, progress

log = get_logger()

SCENE = "scene"
"""The scene's key among the encoder's per-dataset input statistics."""

STATS_PX = 1024
"""Scene statistics come from a nearest-neighbour read of at most this many pixels a side."""

CACHE_VERSION = 1


# --- the tile grid ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Tiling:
    """Where the tiles and the output cells of a scene are."""

    height: int  # scene pixels
    width: int
    tile_px: int
    stride_px: int
    cell_px: int
    transform: tuple  # the scene's affine transform (rasterio order a, b, c, d, e, f)
    crs: str  # WKT

    def __post_init__(self):
        t, s, c = self.tile_px, self.stride_px, self.cell_px
        if min(t, s, c) < 1 or s > t:
            raise ConfigError(f"tiling: tile_px {t}, stride_px {s}, cell_px {c}: need "
                              f"1 <= stride_px <= tile_px and cell_px >= 1")
        if t % c or s % c:
            raise ConfigError(f"tiling: cell_px {c} must divide tile_px {t} and stride_px {s} "
                              f"(e.g. cell_px {math.gcd(t, s)})")

    @property
    def rows(self) -> int:
        return 1 + -(-max(self.height - self.tile_px, 0) // self.stride_px)

    @property
    def cols(self) -> int:
        return 1 + -(-max(self.width - self.tile_px, 0) // self.stride_px)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def out_shape(self) -> tuple[int, int]:
        """Cells (rows, cols) of the products: the scene's extent, rounded up."""
        return -(-self.height // self.cell_px), -(-self.width // self.cell_px)

    def origin(self, i: int) -> tuple[int, int]:
        """Scene pixel (row, col) of tile ``i``'s top-left corner (tiles in row-major order)."""
        return (i // self.cols) * self.stride_px, (i % self.cols) * self.stride_px

    def affine(self):
        from affine import Affine

        return Affine(*self.transform[:6])

    def out_transform(self):
        from affine import Affine

        return self.affine() @ Affine.scale(self.cell_px)

    def tile_grid_transform(self):
        """Pixel (r, c) of the per-tile products: tile (r, c)'s central stride square."""
        from affine import Affine

        half = (self.tile_px - self.stride_px) / 2
        return self.affine() @ Affine.translation(half, half) @ Affine.scale(self.stride_px)

    def window(self) -> np.ndarray:
        """(k, k) blending weights of a tile's cells (k = tile_px / cell_px): squared sine of
        each cell centre's place in the tile, positive everywhere, highest in the middle."""
        k = self.tile_px // self.cell_px
        u = np.sin(np.pi * (np.arange(k) + 0.5) / k) ** 2
        return np.outer(u, u).astype(np.float64)

    def to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "tile_px": self.tile_px,
                "stride_px": self.stride_px, "cell_px": self.cell_px,
                "transform": list(self.transform), "crs": self.crs}


# --- the scene file --------------------------------------------------------------------------

@dataclass
class SceneFile:
    """A georeferenced raster: its bands (records, by name), grid and CRS."""

    path: Path
    bands: list  # BandRecord
    height: int
    width: int
    transform: tuple
    crs: str
    dtype: str

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]


def open_scene(path, options: dict | None = None) -> SceneFile:
    """Read a scene's header: its bands named (``options``: ``band_names``, ``sensor``,
    ``band_wavelengths_nm``, ``nodata``, ``units`` as for a ``geotiff`` source), grid and CRS.

    Raises:
        ConfigError: no such file, not a raster, no CRS.
    """
    import rasterio

    from geofm_lib.data.sources.base import raster_bands

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"scene {str(path)!r}: no such file; give a GeoTIFF or COG "
                          f"(scene_path)")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise ConfigError(f"scene {path.name}: no CRS; the maps need a georeferenced "
                                  f"raster (set one with gdal_edit.py -a_srs EPSG:XXXX)")
            bands = raster_bands(src, dict(options or {}), f"scene {path.name}")
            return SceneFile(path, bands, src.height, src.width, tuple(src.transform)[:6],
                             src.crs.to_wkt(), src.dtypes[0])
    except rasterio.errors.RasterioIOError as exc:
        raise ConfigError(f"scene {path.name}: not a raster rasterio/GDAL can read "
                          f"({str(exc)[:200]})") from None


def _overview(scene: SceneFile, max_px: int) -> np.ndarray:
    """All bands, nearest-neighbour read at most ``max_px`` pixels a side."""
    import rasterio
    from rasterio.enums import Resampling

    step = max(1, math.ceil(max(scene.height, scene.width) / max_px))
    shape = (len(scene.bands), -(-scene.height // step), -(-scene.width // step))
    with rasterio.open(scene.path) as src:
        return src.read(out_shape=shape, resampling=Resampling.nearest)


FILL_SHARE = 0.01
"""A scene without a nodata value whose pixels are 0 in every band for more than this share is
probably padded with 0 (a Landsat or Sentinel-2 scene's edge): said, not assumed."""


def undeclared_fill(scene: SceneFile, max_px: int = STATS_PX) -> str | None:
    """A warning when no band declares nodata yet a share of the pixels (over a
    nearest-neighbour read) is 0 in every band; None otherwise."""
    if any(b.nodata is not None for b in scene.bands):
        return None
    data = _overview(scene, max_px)
    share = float((data == 0).all(axis=0).mean())
    if share <= FILL_SHARE:
        return None
    return (f"scene {scene.path.name} declares no nodata, yet {100 * share:.0f} % of its pixels "
            f"are 0 in every band: if that is fill, give scene_options: {{nodata: 0}} (else "
            f"those pixels are mapped as land)")


def scene_band_stats(scene: SceneFile, max_px: int = STATS_PX) -> dict:
    """Manifest-style band statistics of a scene (``bands``, ``mean``, ``std``, ``nodata``,
    ``all_nodata``) over a nearest-neighbour read of at most ``max_px`` pixels a side,
    nodata and non-finite pixels left out per band."""
    data = _overview(scene, max_px)
    mean, std, empty = [], [], []
    for band, values in zip(scene.bands, data, strict=True):
        ok = _valid(values, band.nodata)
        v = values[ok].astype(np.float64)
        if not v.size:
            empty.append(band.name)
        mean.append(float(v.mean()) if v.size else 0.0)
        std.append(float(v.std()) if v.size else 1.0)
    return {"bands": scene.band_names, "mean": mean, "std": std,
            "nodata": [b.nodata for b in scene.bands], "all_nodata": empty}


def _valid(values: np.ndarray, nodata) -> np.ndarray:
    """Pixels of one band that are neither its nodata value nor non-finite."""
    ok = np.ones(values.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        if values.dtype.kind not in "iu":
            ok = values != nodata
        elif float(nodata).is_integer() and np.iinfo(values.dtype).min <= nodata \
                <= np.iinfo(values.dtype).max:  # a value the dtype cannot hold is in no pixel
            ok = values != values.dtype.type(int(nodata))
    if values.dtype.kind == "f":
        ok &= np.isfinite(values)
    return ok


def used_bands(stats) -> list[int]:
    """The scene bands an encoder's input mapping reads."""
    if isinstance(stats, RGBInput):
        return sorted(set(stats.idx))
    if isinstance(stats, BandSlots):
        return sorted(stats.source)
    raise EncoderError(f"unknown input mapping {type(stats).__name__}")


# --- reading the pixels ------------------------------------------------------------------------

class _Pixels:
    """Tiles' pixels (C, tile, tile), padded outside the scene, with their validity mask; read
    whole, by tile-row bands or tile by tile, whichever fits ``memory_mb``."""

    def __init__(self, scene: SceneFile, tiling: Tiling, used: list[int], memory_mb: float):
        import rasterio

        self.scene, self.tiling, self.used = scene, tiling, used
        self.src = rasterio.open(scene.path)
        itemsize = np.dtype(scene.dtype).itemsize
        c = len(scene.bands)
        span_h = (tiling.rows - 1) * tiling.stride_px + tiling.tile_px
        span_w = (tiling.cols - 1) * tiling.stride_px + tiling.tile_px
        whole = c * span_h * span_w * itemsize
        band = c * tiling.tile_px * span_w * itemsize
        budget = memory_mb * 2 ** 20
        self.mode = "whole" if whole <= budget else "rows" if band <= budget else "tiles"
        self.reads = 0
        self._key, self._data = None, None
        self.nodata = [scene.bands[i].nodata for i in range(c)]

    def close(self):
        self.src.close()

    def _read(self, y: int, x: int, h: int, w: int):
        """Pixels and validity of scene rows y..y+h, cols x..x+w (outside: invalid)."""
        from rasterio.windows import Window

        self.reads += 1
        fill = next((v for v in self.nodata if v is not None), 0)
        data = self.src.read(window=Window(x, y, w, h), boundless=True, fill_value=fill)
        inside = np.zeros((h, w), bool)
        inside[:max(0, min(h, self.scene.height - y)), :max(0, min(w, self.scene.width - x))] \
            = True
        valid = inside.copy()
        for i in self.used:
            valid &= _valid(data[i], self.nodata[i])
        return data, valid, inside

    def tile(self, i: int):
        t = self.tiling
        y, x = t.origin(i)
        if self.mode == "tiles":
            return self._read(y, x, t.tile_px, t.tile_px)
        if self.mode == "whole":
            key, (y0, x0) = "whole", (0, 0)
            span = (t.rows - 1) * t.stride_px + t.tile_px, (t.cols - 1) * t.stride_px + t.tile_px
        else:
            key, (y0, x0) = y, (y, 0)
            span = t.tile_px, (t.cols - 1) * t.stride_px + t.tile_px
        if self._key != key:
            self._key, self._data = key, self._read(y0, x0, *span)
        data, valid, inside = self._data
        sl = np.s_[y - y0:y - y0 + t.tile_px, x - x0:x - x0 + t.tile_px]
        return data[(slice(None), *sl)], valid[sl], inside[sl]


# --- embedding a scene -------------------------------------------------------------------------

@dataclass
class SceneEmbeddings:
    """Tile embeddings of one scene by one encoder, with what the products need."""

    tiling: Tiling
    features: np.ndarray  # (tiles, D) float32, L2-normalised; NaN rows for tiles not kept
    kept: np.ndarray  # (tiles,) bool
    nodata_fraction: np.ndarray  # (tiles,) float32, padding included
    invalid_cells: np.ndarray  # (out rows, out cols) bool: nodata in every product
    encoder: str
    scene: str  # file name
    bands: list[str]  # the scene's bands the encoder read
    stats: str  # "scene" or the dataset whose statistics standardised the scene
    precision: str
    meta: dict = field(default_factory=dict)  # read mode, reads, seconds, cached
    logit_scale: float = 1.0
    band_stats: dict = field(default_factory=dict)  # what standardised the scene

    def scores(self, text_features: np.ndarray) -> np.ndarray:
        """(tiles, K) cosine similarity of each kept tile to each text (NaN: not kept)."""
        out = np.full((len(self.features), len(text_features)), np.nan, np.float32)
        out[self.kept] = self.features[self.kept] @ np.asarray(text_features, np.float32).T
        return out

    def blend(self, values: np.ndarray, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Per-tile values (tiles, K) onto the output cells of rows ``rows`` (default all):
        (rows, cols, K) float32, the window-weighted mean of the kept tiles over each cell,
        NaN where no kept tile covers it or the cell is nodata."""
        t = self.tiling
        h_out, w_out = t.out_shape
        r0, r1 = rows or (0, h_out)
        k, s = t.tile_px // t.cell_px, t.stride_px // t.cell_px
        win = t.window()
        acc = np.zeros((r1 - r0, w_out, values.shape[1]), np.float64)
        weight = np.zeros((r1 - r0, w_out), np.float64)
        first = max(0, (r0 - k) // s)
        for tr in range(first, min(t.rows, r1 // s + 1)):
            cy = tr * s
            a, b = max(cy, r0), min(cy + k, r1, h_out)
            if a >= b:
                continue
            wrow = win[a - cy:b - cy]
            for tc in range(t.cols):
                i = tr * t.cols + tc
                if not self.kept[i]:
                    continue
                cx = tc * s
                e = min(cx + k, w_out)
                w = wrow[:, :e - cx]
                acc[a - r0:b - r0, cx:e] += w[..., None] * values[i]
                weight[a - r0:b - r0, cx:e] += w
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (acc / weight[..., None]).astype(np.float32)
        out[(weight == 0) | self.invalid_cells[r0:r1]] = np.nan
        return out

    def heatmap(self, text_feature: np.ndarray) -> np.ndarray:
        """(out rows, out cols) similarity of each cell to one text (NaN: nodata)."""
        return self.blend(self.scores(np.asarray(text_feature)[None]))[..., 0]

    def class_map(self, head: ClassHead | np.ndarray, rows: tuple[int, int] | None = None):
        """(class index (-1: nodata), its score) per cell: the arg-max over the classes of the
        blended per-class tile scores of ``head`` (a :class:`ClassHead`, or the class prompts'
        text features: zero-shot)."""
        tile_scores = head.tile_scores(self) if isinstance(head, ClassHead) else \
            self.scores(head)
        sim = self.blend(tile_scores, rows)
        empty = np.isnan(sim).all(axis=-1)
        idx = np.where(empty, -1, np.nanargmax(np.where(empty[..., None], 0, sim), axis=-1))
        score = np.where(empty, np.nan, np.take_along_axis(
            np.nan_to_num(sim, nan=-np.inf), np.maximum(idx, 0)[..., None], -1)[..., 0])
        return idx.astype(np.int16), score.astype(np.float32)


def tiling_for(scene: SceneFile, tile_px: int, stride_px: int | None = None,
               cell_px: int | None = None) -> Tiling:
    """The tile grid of a scene; by default tiles overlap by half and cells are a quarter of the
    stride."""
    stride_px = stride_px or max(1, tile_px // 2)
    cell_px = cell_px or max(1, math.gcd(stride_px, max(1, stride_px // 4)))
    return Tiling(scene.height, scene.width, tile_px, stride_px, cell_px, scene.transform,
                  scene.crs)


def embed_scene(cfg: Config, scene, encoder: str = "trained", *, tile_px: int | None = None,
                stride_px: int | None = None, cell_px: int | None = None, stats: str = SCENE,
                options: dict | None = None, device: str = "cpu", batch_size: int = 64,
                memory_mb: float = 512, max_nodata: float = 0.5, use_cache: bool = True,
                show_progress: bool = True) -> SceneEmbeddings:
    """Embed every tile of a scene with a registered encoder (cached in
    ``<work>/scenes/<key>.npz``, keyed on the file's SHA-256, the encoder's hash, the tiling,
    the statistics and the precision).

    Raises:
        ConfigError: the file, its CRS or the tiling; DataError: ``stats`` names a dataset
            whose bands the scene lacks.
    """
    scene = scene if isinstance(scene, SceneFile) else open_scene(scene, options)
    tiling = tiling_for(scene, tile_px or cfg.image_px, stride_px, cell_px)
    precision = resolve_precision(cfg.precision, device)
    band_stats = _scene_statistics(cfg, scene, stats)
    key = hashlib.sha256(json.dumps({
        "v": CACHE_VERSION, "scene": file_sha256(scene.path), "encoder": encoder_hash(cfg, encoder),
        "tiling": tiling.to_dict(), "stats": stats, "precision": precision,
        "image_px": cfg.image_px, "max_nodata": max_nodata,
        "bands": [b.to_dict() for b in scene.bands]}, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    path = cfg.path("scenes", f"{key}.npz")
    if use_cache and path.is_file():
        return _load(path, tiling, encoder, scene)
    start = time.perf_counter()
    model, input_stats = load_encoder(cfg, encoder, device, band_stats={SCENE: band_stats})
    mapping = input_stats[SCENE]
    used = used_bands(mapping)
    pixels = _Pixels(scene, tiling, used, memory_mb)
    invalid_cells, counts = _nodata_cells(scene, tiling, used, memory_mb)
    fraction = _tile_nodata(tiling, counts)
    kept = fraction <= max_nodata
    feats: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    order: list[int] = []
    bar = progress(total=int(kept.sum()), desc="tiles", unit="tile", disable=not show_progress)
    try:
        for i in np.flatnonzero(kept):
            img, valid, inside = pixels.tile(int(i))
            x = to_model_input(img, scene.band_names, mapping)
            x[:, ~inside] = 0.0  # padding outside the scene: the band mean
            batch.append(x)
            order.append(int(i))
            if len(batch) == batch_size:
                feats.append(encode_images(model, batch, device, cfg.image_px, precision))
                bar.update(len(batch))
                batch.clear()
        if batch:
            feats.append(encode_images(model, batch, device, cfg.image_px, precision))
            bar.update(len(batch))
    finally:
        bar.close()
        pixels.close()
    d = feats[0].shape[1] if feats else 0
    features = np.full((tiling.count, d), np.nan, np.float32)
    if order:
        features[order] = np.concatenate(feats)
    out = SceneEmbeddings(
        tiling, features, kept, fraction.astype(np.float32), invalid_cells, encoder,
        scene.path.name, [scene.band_names[i] for i in used], stats, precision,
        {"read_mode": pixels.mode, "reads": pixels.reads, "seconds": time.perf_counter() - start,
         "cached": False, "tiles": tiling.count, "kept": int(kept.sum()), "key": key},
        float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 1.0,
        band_stats)
    if use_cache:
        _save(path, out)
    return out


def _scene_statistics(cfg: Config, scene: SceneFile, stats: str) -> dict:
    """The band statistics the scene is standardised with: its own, or a dataset's of this run
    (whose bands, by name, the scene must have; the scene's are reordered to match)."""
    if stats == SCENE:
        return scene_band_stats(scene)
    from geofm_lib.data.shards import load_manifest
    from geofm_lib.paths import build_folder

    if stats not in cfg.dataset_keys:
        raise ConfigError(f"stats={stats!r}: write 'scene' (the scene's own statistics) or one "
                          f"of this run's datasets {list(cfg.dataset_keys)}")
    st = load_manifest(build_folder(cfg)).band_stats_for([stats])[stats]
    missing = [b for b in st["bands"] if b not in scene.band_names]
    if missing:
        raise DataError(f"scene {scene.path.name} has bands {scene.band_names}; {stats}'s "
                        f"statistics are for {st['bands']} ({missing} missing). Name the "
                        f"scene's bands (options.band_names) or use stats='scene'")
    order = [st["bands"].index(b) if b in st["bands"] else None for b in scene.band_names]

    def pick(key: str, default: float) -> list:
        return [st[key][j] if j is not None else default for j in order]

    return {"bands": scene.band_names, "mean": pick("mean", 0.0), "std": pick("std", 1.0),
            "nodata": [b.nodata for b in scene.bands],
            "all_nodata": [b for b in st.get("all_nodata", ()) if b in scene.band_names]
            + [b for b, j in zip(scene.band_names, order, strict=True) if j is None]}


def _nodata_cells(scene: SceneFile, tiling: Tiling, used: list[int], memory_mb: float):
    """(cells with more than half their pixels nodata, nodata pixel counts per cell incl.
    padding) over a grid padded to the tiles' extent; read in bands of whole cell rows."""
    import rasterio
    from rasterio.windows import Window

    c = tiling.cell_px
    h_pad = -(-((tiling.rows - 1) * tiling.stride_px + tiling.tile_px) // c)
    w_pad = -(-((tiling.cols - 1) * tiling.stride_px + tiling.tile_px) // c)
    counts = np.full((h_pad, w_pad), c * c, np.int64)  # padding: all nodata
    row_bytes = scene.width * len(scene.bands) * np.dtype(scene.dtype).itemsize * c
    step = max(1, int(memory_mb * 2 ** 20 // max(row_bytes, 1)))
    h_cells, w_cells = -(-scene.height // c), -(-scene.width // c)
    with rasterio.open(scene.path) as src:
        for r in range(0, h_cells, step):
            rows = min(step, h_cells - r)
            y, h = r * c, min(rows * c, scene.height - r * c)
            data = src.read([i + 1 for i in used], window=Window(0, y, scene.width, h))
            bad = np.zeros((rows * c, w_cells * c), bool)
            bad[h:], bad[:, scene.width:] = True, True
            for j, i in enumerate(used):
                bad[:h, :scene.width] |= ~_valid(data[j], scene.bands[i].nodata)
            counts[r:r + rows, :w_cells] = bad.reshape(rows, c, w_cells, c).sum(axis=(1, 3))
    h_out, w_out = tiling.out_shape
    return counts[:h_out, :w_out] * 2 > c * c, counts


def _tile_nodata(tiling: Tiling, counts: np.ndarray) -> np.ndarray:
    """Each tile's nodata fraction (padding counts as nodata), from the per-cell counts."""
    k, s = tiling.tile_px // tiling.cell_px, tiling.stride_px // tiling.cell_px
    out = np.empty(tiling.count, np.float64)
    for i in range(tiling.count):
        r, c = divmod(i, tiling.cols)
        out[i] = counts[r * s:r * s + k, c * s:c * s + k].sum()
    return out / tiling.tile_px ** 2


def _save(path: Path, se: SceneEmbeddings) -> None:
    buf = io.BytesIO()
    np.savez(buf, features=se.features, kept=se.kept, nodata_fraction=se.nodata_fraction,
             invalid_cells=se.invalid_cells,
             meta=json.dumps({"encoder": se.encoder, "scene": se.scene, "bands": se.bands,
                              "stats": se.stats, "precision": se.precision, "meta": se.meta,
                              "logit_scale": se.logit_scale, "tiling": se.tiling.to_dict(),
                              "band_stats": se.band_stats}))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def _load(path: Path, tiling: Tiling, encoder: str, scene: SceneFile) -> SceneEmbeddings:
    with np.load(path, allow_pickle=False) as z:
        m = json.loads(str(z["meta"]))
        return SceneEmbeddings(tiling, z["features"], z["kept"], z["nodata_fraction"],
                               z["invalid_cells"], encoder, scene.path.name, m["bands"],
                               m["stats"], m["precision"], {**m["meta"], "cached": True},
                               m["logit_scale"], m["band_stats"])


# --- text -------------------------------------------------------------------------------------

def text_features(cfg: Config, se: SceneEmbeddings, texts: list[str], device: str = "cpu"
                  ) -> np.ndarray:
    """(len(texts), D) embeddings of the prompts "An overhead image of <text>" by the text
    tower of the encoder that embedded the scene (loaded once per process)."""
    tokenizer = tokenizer_for(cfg, se.encoder)
    if tokenizer is None:
        raise EncoderError(f"encoder {se.encoder!r} has no text tower: zero-shot class maps "
                           f"and free-text queries need a CLIP model (trained, checkpoint:, "
                           f"open_clip:, remoteclip:); its class map comes from a linear probe "
                           f"(probe_head; 09: scene_head='probe')")
    key = (encoder_hash(cfg, se.encoder), device)
    if key not in _TEXT_MODELS:
        _TEXT_MODELS.clear()
        _TEXT_MODELS[key] = load_encoder(cfg, se.encoder, device,
                                         band_stats={SCENE: se.band_stats})[0]
    prompts = label_prompts(SCENE, vocabulary=tuple(texts))
    return encode_texts(_TEXT_MODELS[key], tokenizer, prompts, device)


_TEXT_MODELS: dict = {}


# --- class heads: how tile embeddings become classes ------------------------------------------

ZERO_SHOT, PROBE = "zero-shot", "linear probe"


@dataclass(frozen=True)
class ClassHead:
    """Per-class scores of tile embeddings: ``zero-shot`` (cosine similarity to each class's
    prompt by the encoder's text tower) or a ``linear probe`` (standardise, then one logistic
    regression per class: a probability), fitted on ``fitted_on``."""

    kind: str
    classes: tuple[str, ...]
    text_features: np.ndarray | None = None  # (classes, D): zero-shot
    probe: object | None = None  # evaluation.probes.LinearProbeWeights: linear probe
    fitted_on: str = ""  # the labelled patches a probe was fitted on, in words
    patches: int = 0  # how many
    unseen: tuple[str, ...] = ()  # classes no fitting patch carries (never predicted)

    @property
    def score_name(self) -> str:
        return "cosine similarity" if self.kind == ZERO_SHOT else "probability (linear probe)"

    def tile_scores(self, se: SceneEmbeddings) -> np.ndarray:
        """(tiles, classes) scores of the kept tiles (NaN rows: not kept)."""
        if self.kind == ZERO_SHOT:
            return se.scores(self.text_features)
        w = self.probe
        out = np.full((len(se.features), len(self.classes)), np.nan, np.float32)
        z = (se.features[se.kept] - w.mean) / w.scale
        out[se.kept] = 1.0 / (1.0 + np.exp(-(z @ w.weight.T + w.bias)))
        return out

    def describe(self) -> str:
        if self.kind == ZERO_SHOT:
            return "zero-shot: cosine similarity to each class prompt"
        text = (f"linear probe (C = {self.probe.param:g}) fitted on {self.patches} labelled "
                f"patches of {self.fitted_on}")
        if self.unseen:
            text += f"; no patch carries {', '.join(self.unseen)} (never predicted)"
        return text


def zero_shot_head(cfg: Config, se: SceneEmbeddings, classes, device: str = "cpu") -> ClassHead:
    """The class prompts by the encoder's own text tower (an error for an image-only encoder,
    which needs :func:`probe_head`)."""
    return ClassHead(ZERO_SHOT, tuple(classes),
                     text_features=text_features(cfg, se, list(classes), device))


def probe_head(features: np.ndarray, labels: list[list[str]], classes, fitted_on: str,
               seed: int = 0) -> ClassHead:
    """A linear probe over ``classes`` fitted on labelled patches' frozen embeddings
    (``features`` by the same encoder that embedded the scene; ``labels``: each patch's label
    names), ``C`` chosen on a held-out fifth as 06's linear probe, refitted on all.

    Raises:
        ConfigError: no patches, or none carries any of ``classes``.
    """
    from geofm_lib.evaluation.probes import linear_probe_weights

    classes = tuple(classes)
    y = np.array([[c in set(lab) for c in classes] for lab in labels], bool).reshape(
        len(labels), len(classes))
    if not len(features) or not y.any():
        raise ConfigError(f"a linear probe over {list(classes)} needs labelled patches carrying "
                          f"them; {fitted_on} has {len(features)} patches, none with these "
                          f"labels: choose scene_dataset (the patches) or scene_classes (its "
                          f"label names)")
    weights = linear_probe_weights(np.asarray(features, np.float32), y, seed)
    unseen = tuple(c for c, seen in zip(classes, y.any(axis=0), strict=True) if not seen)
    return ClassHead(PROBE, classes, probe=weights, fitted_on=fitted_on, patches=len(features),
                     unseen=unseen)


def query_unit(encoder: str) -> str:
    """What a query's heatmap holds for this encoder."""
    return "cosine similarity" if has_text_tower(encoder) else "probability (linear probe)"


def query_scores(cfg: Config, se: SceneEmbeddings, query: str, head: ClassHead | None = None,
                 device: str = "cpu") -> tuple[np.ndarray, str]:
    """(tile scores (tiles, 1), what they are in words) of one query: the cosine similarity to
    the text by a CLIP's text tower; for an image-only encoder, a class of its probe ``head``."""
    if has_text_tower(se.encoder):
        return se.scores(text_features(cfg, se, [query], device)), \
            f"cosine similarity to {query!r}"
    if head is not None and head.kind == PROBE and query in head.classes:
        j = head.classes.index(query)
        return head.tile_scores(se)[:, j:j + 1], f"probability of {query!r} (linear probe)"
    raise EncoderError(f"encoder {se.encoder!r} has no text tower: a query must be one of its "
                       f"probe's classes ({', '.join(head.classes) if head else 'no probe'}), "
                       f"not {query!r}; free-text queries need a CLIP (trained, checkpoint:, "
                       f"open_clip:, remoteclip:)")


# --- products -----------------------------------------------------------------------------------

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
           (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
           (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229))
"""Class colours of the class map (matplotlib's tab20 order)."""

CLASS_NODATA = 255


def slug(text: str) -> str:
    """A file-name part for a query: lower case, words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "query"


def write_cog(path, blocks, *, shape: tuple[int, int], count: int, dtype: str, transform, crs,
              nodata=None, descriptions=None, tags: dict | None = None,
              colormap: dict | None = None) -> Path:
    """Write a raster as a Cloud-Optimized GeoTIFF (DEFLATE, 256 px blocks, overviews),
    atomically: ``blocks`` yields (first row, (count, rows, width) array); they are written
    window by window to a tiled GeoTIFF beside ``path``, which GDAL's COG driver then copies."""
    import rasterio
    from rasterio.shutil import copy as raster_copy
    from rasterio.windows import Window

    from geofm_lib.io import temporary_name

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build = temporary_name(path.with_name(path.stem + ".build.tif"))
    try:
        profile = {"driver": "GTiff", "height": shape[0], "width": shape[1], "count": count,
                   "dtype": dtype, "crs": crs, "transform": transform, "nodata": nodata,
                   "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        with rasterio.open(build, "w", **profile) as dst:
            for r, arr in blocks:
                dst.write(arr, window=Window(0, r, shape[1], arr.shape[1]))
            if descriptions:
                dst.descriptions = tuple(descriptions)
            if tags:
                dst.update_tags(**tags)
            if colormap:
                dst.write_colormap(1, colormap)
        with atomic_path(path) as tmp:
            raster_copy(build, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256,
                        OVERVIEW_RESAMPLING="NEAREST" if dtype == "uint8" else "AVERAGE")
    finally:
        build.unlink(missing_ok=True)
    return path


def _row_blocks(h_out: int, w_out: int, k: int, memory_mb: float) -> range:
    rows = max(1, int(memory_mb * 2 ** 20 // max(1, w_out * max(k, 1) * 8 * 2)))
    return range(0, h_out, rows)


def write_products(cfg: Config, se: SceneEmbeddings, out_dir, *, classes=(), queries=(),
                   head: ClassHead | None = None, device: str = "cpu",
                   memory_mb: float = 512) -> dict[str, Path]:
    """The scene's maps as COGs in ``out_dir``, in the scene's CRS: ``class_map.tif`` (uint8
    class index, colour table, class names in the tags; 255 nodata) and ``class_score.tif``
    (its score) for ``head``'s classes (or ``classes`` zero-shot); ``query-<slug>.tif`` per
    query (:func:`query_scores`); ``embeddings.tif`` (one band per dimension, one pixel per
    tile). Rows are blended and written block by block within ``memory_mb``."""
    out_dir = Path(out_dir)
    t = se.tiling
    h_out, w_out = t.out_shape
    common = {"crs": t.crs, "shape": (h_out, w_out)}
    tags = {"encoder": se.encoder, "scene": se.scene, "bands": ",".join(se.bands),
            "tile_px": str(t.tile_px), "stride_px": str(t.stride_px), "cell_px": str(t.cell_px),
            "stats": se.stats}
    written: dict[str, Path] = {}
    if classes and head is None:
        head = zero_shot_head(cfg, se, classes, device)
    if head is not None:
        if len(head.classes) > CLASS_NODATA:
            raise ConfigError(f"{len(head.classes)} classes: a class map holds at most "
                              f"{CLASS_NODATA}")
        blocks = _row_blocks(h_out, w_out, len(head.classes), memory_mb)
        maps = [(r, se.class_map(head, (r, min(r + blocks.step, h_out)))) for r in blocks]
        class_tags = {**tags, "classes": json.dumps(list(head.classes)),
                      "head": head.describe()}
        written["class_map"] = write_cog(
            out_dir / "class_map.tif",
            ((r, np.where(idx < 0, CLASS_NODATA, idx).astype(np.uint8)[None])
             for r, (idx, _) in maps), count=1, dtype="uint8",
            transform=t.out_transform(), nodata=CLASS_NODATA, descriptions=["class"],
            tags=class_tags, colormap={i: (*PALETTE[i % len(PALETTE)], 255)
                                       for i in range(len(head.classes))}, **common)
        written["class_score"] = write_cog(
            out_dir / "class_score.tif", ((r, score[None]) for r, (_, score) in maps), count=1,
            dtype="float32", transform=t.out_transform(), nodata=float("nan"),
            descriptions=[f"{head.score_name} of the class"], tags=class_tags, **common)
    blocks = _row_blocks(h_out, w_out, 1, memory_mb)
    for q in queries:
        name = f"query-{slug(q)}"
        scores, what = query_scores(cfg, se, q, head, device)
        written[name] = write_cog(
            out_dir / f"{name}.tif",
            ((r, se.blend(scores, (r, min(r + blocks.step, h_out))).transpose(2, 0, 1))
             for r in blocks), count=1, dtype="float32", transform=t.out_transform(),
            nodata=float("nan"), descriptions=[what],
            tags={**tags, "query": q}, **common)
    grid = se.features.reshape(t.rows, t.cols, -1).transpose(2, 0, 1)
    written["embeddings"] = write_cog(
        out_dir / "embeddings.tif", [(0, grid)], count=grid.shape[0], dtype="float32",
        transform=t.tile_grid_transform(), nodata=float("nan"), crs=t.crs,
        shape=(t.rows, t.cols), tags={**tags, "dims": str(grid.shape[0])})
    return written
