"""Embeddings out of the workspace as GeoParquet: one row per tile of a scene or per image of a
shard split, with its geometry, dataset, labels and embedding vector, for geopandas, DuckDB,
QGIS or a vector database.

Columns: ``key``, ``dataset``, ``split``, ``labels`` (list of strings; a scene's tiles have
none), ``encoder``, ``vector`` (list of float32, L2-normalised), ``geometry`` (a scene's tiles:
polygons in the scene's CRS; shard images: their footprint box in WGS84, or null where a
sample has no footprint). Scene tiles also carry ``row``, ``col`` and ``nodata_fraction``;
tiles without an embedding (too much nodata) are left out and counted in the log.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.encoders.embeddings import embed
from geofm_lib.encoders.scene import SceneEmbeddings
from geofm_lib.io import atomic_path
from geofm_lib.progress import get_logger

log = get_logger()


def scene_table(se: SceneEmbeddings):
    """The kept tiles of a scene as a GeoDataFrame (tile polygons in the scene's CRS)."""
    import geopandas as gpd
    from shapely.geometry import box

    t = se.tiling
    a = t.affine()
    rows, geoms, vectors = [], [], []
    for i in np.flatnonzero(se.kept):
        y, x = t.origin(int(i))
        (x0, y0), (x1, y1) = a @ (x, y), a @ (x + t.tile_px, y + t.tile_px)
        geoms.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        rows.append({"key": f"{Path(se.scene).stem}-r{y // t.stride_px}-c{x // t.stride_px}",
                     "dataset": f"scene:{se.scene}", "split": "scene", "labels": [],
                     "encoder": se.encoder, "row": int(i) // t.cols, "col": int(i) % t.cols,
                     "nodata_fraction": float(se.nodata_fraction[i])})
        vectors.append(se.features[i])
    left = int((~se.kept).sum())
    if left:
        log.info("%s: %d of %d tiles have no embedding (more nodata than max_nodata) and are "
                 "left out", se.scene, left, len(se.kept))
    gdf = gpd.GeoDataFrame(rows, geometry=geoms, crs=t.crs)
    gdf["vector"] = vectors
    return gdf


def shard_table(cfg: Config, encoder: str, split: str = "val", device: str = "cpu"):
    """Every image of a shard split with its embedding by ``encoder`` (from the embedding
    cache when it matches) and its footprint (WGS84)."""
    import geopandas as gpd
    from shapely.geometry import box

    from geofm_lib.data.shards import iter_shards, shard_paths
    from geofm_lib.paths import build_folder

    emb = embed(cfg, encoder, split, device, show_progress=False)
    where = {k: i for i, k in enumerate(emb.keys.tolist())}
    rows, geoms, vectors, missing = [], [], [], 0
    for s in iter_shards(shard_paths(build_folder(cfg), split)):
        m = s["json"]
        bounds = (m.get("footprint") or {}).get("bounds")
        geoms.append(box(*bounds) if bounds else None)
        missing += not bounds
        i = where[s["__key__"]]
        rows.append({"key": s["__key__"], "dataset": m["dataset"], "split": split,
                     "labels": list(m["labels"]), "encoder": encoder})
        vectors.append(emb.features[i])
    if missing:
        log.info("%d of %d images have no footprint: their geometry is null", missing, len(rows))
    gdf = gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:4326")
    gdf["vector"] = vectors
    return gdf


def write_geoparquet(gdf, path) -> Path:
    """Write a table of this module as GeoParquet (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        gdf.to_parquet(tmp, index=False)
    return path


def read_geoparquet(path):
    """(GeoDataFrame, (N, D) float32 vectors) of a file :func:`write_geoparquet` wrote."""
    import geopandas as gpd

    gdf = gpd.read_parquet(path)
    vectors = np.stack([np.asarray(v, np.float32) for v in gdf["vector"]]) if len(gdf) else \
        np.zeros((0, 0), np.float32)
    return gdf, vectors
