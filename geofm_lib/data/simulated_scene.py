"""A simulated scene as the files a researcher would have: a GeoTIFF in its UTM zone with bands
named, and beside it the scene's land-cover truth as a class raster, for the scene maps
(notebook 09) to run anywhere and be scored against what the simulator drew.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geofm_lib.catalog import get_dataset
from geofm_lib.data.recipes import RECIPES
from geofm_lib.data.simulate import render
from geofm_lib.io import atomic_path

SCENE_INDEX = 10 ** 6
"""Simulated scenes are sample indices from here on: never a sample of the shards."""

TRUTH_NODATA = -1


@dataclass(frozen=True)
class SceneFiles:
    image: Path  # the scene GeoTIFF
    truth: Path  # int16 class raster on the same grid (-1: not a land-cover class)
    classes: tuple[str, ...]  # the truth raster's classes, by value
    dataset: str


def label_classes(dataset: str, index: int, seed: int = 0) -> int:
    """How many land-cover labels scene ``index`` of ``dataset`` is drawn with (its
    composition does not depend on its size: a small render tells)."""
    from geofm_lib.data.simulate import MIN_IMAGE_PX

    s = render(dataset, index, seed, image_px=MIN_IMAGE_PX)
    return sum(RECIPES[dataset].areas[a].label for a in s.layers.area_names)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone of a WGS84 point (WGS 84 / UTM north 326xx, south 327xx)."""
    zone = min(60, int(math.floor((lon + 180) / 6)) + 1)
    return (32600 if lat >= 0 else 32700) + zone


def write_simulated_scene(folder, dataset: str, scene_px: int, seed: int = 0,
                          index: int = SCENE_INDEX) -> SceneFiles:
    """Render ``dataset``'s scene ``index`` at ``scene_px`` pixels a side (the dataset's GSD)
    and write it as ``<dataset>-scene-<index>.tif`` (UTM, band names as descriptions, sensor,
    date and GSD as tags) with ``..._truth.tif`` beside it: the land-cover class each pixel
    was drawn from, only the classes that are the dataset's labels (others -1). Reused when
    both files exist."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{dataset}-scene-{index}-s{seed}-{scene_px}px"
    image, truth = folder / f"{stem}.tif", folder / f"{stem}_truth.tif"
    recipe = RECIPES[dataset]
    if image.is_file() and truth.is_file():
        with rasterio.open(truth) as src:
            classes = tuple(json.loads(src.tags()["classes"]))
        return SceneFiles(image, truth, classes, dataset)
    s = render(dataset, index, seed, image_px=scene_px)
    ds = get_dataset(dataset)
    lon, lat = s.meta["footprint"]["center"]
    epsg = utm_epsg(lon, lat)
    (x,), (y,) = warp("EPSG:4326", f"EPSG:{epsg}", [lon], [lat])
    gsd = float(s.meta["gsd_m"])
    half = scene_px * gsd / 2
    transform = from_origin(round(x - half, 2), round(y + half, 2), gsd, gsd)
    labels = [a for a in s.layers.area_names if recipe.areas[a].label]
    classes = tuple(sorted(labels, key=ds.labels.index))
    lookup = np.array([classes.index(a) if a in classes else TRUTH_NODATA
                       for a in s.layers.area_names], np.int16)
    common = {"driver": "GTiff", "height": scene_px, "width": scene_px, "crs": f"EPSG:{epsg}",
              "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
              "compress": "deflate"}
    with atomic_path(image) as tmp:
        with rasterio.open(tmp, "w", count=s.image.shape[0], dtype=s.image.dtype,
                           **common) as dst:
            dst.write(s.image)
            dst.descriptions = tuple(s.meta["bands"])
            dst.update_tags(dataset=dataset, sensor=s.meta["sensor"], date=s.meta["date"],
                            gsd_m=str(gsd), source="geofm simulator", seed=str(seed),
                            index=str(index))
    with atomic_path(truth) as tmp:
        with rasterio.open(tmp, "w", count=1, dtype="int16", nodata=TRUTH_NODATA,
                           **common) as dst:
            dst.write(lookup[s.layers.class_map][None])
            dst.update_tags(classes=json.dumps(list(classes)), dataset=dataset)
    return SceneFiles(image, truth, classes, dataset)
