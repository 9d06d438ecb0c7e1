"""xView (DIUx, 2018) as published: ``train_images/<id>.tif`` WorldView-3 RGB GeoTIFFs and one
``xView_train.geojson`` of boxes.

Each GeoJSON feature holds ``properties.image_id`` (the file name, ``104.tif``),
``properties.type_id`` (one of the 60 class ids of ``xview_class_labels.txt`` of the xView
baseline), ``properties.bounds_imcoords`` (``"xmin,ymin,xmax,ymax"`` in pixels of that image)
and a lon/lat polygon. Type ids 75 and 82 occur in the file but are none of the 60 classes (the
baseline and the YOLOv5 converter drop them too): they are left out and counted. Any other id is
an error naming it. A feature with an empty or malformed ``bounds_imcoords`` is left out and
counted (the baseline skips them as well). Footprints come from each GeoTIFF's georeference;
xView's files all carry one, so an image without CRS is bad input.

Layout (``root``)::

    train_images/104.tif ...
    xView_train.geojson          (options.labels: another name)

xView publishes no validation labels: the shard build splits the labelled images by seed.
"""

from __future__ import annotations

import json

import numpy as np

from geofm_lib.catalog import XVIEW_60
from geofm_lib.config import Config
from geofm_lib.data.sources.annotated import (
    AnnotatedSource,
    Item,
    Problems,
    band_records,
    clip_objects,
    image_size,
    open_root,
    raster_lonlat,
    reader_options,
)
from geofm_lib.errors import ConfigError

# xview_class_labels.txt of the xView baseline: type id -> class, in the catalog's order
XVIEW_TYPE_IDS = (11, 12, 13, 15, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 32, 33, 34,
                  35, 36, 37, 38, 40, 41, 42, 44, 45, 47, 49, 50, 51, 52, 53, 54, 55, 56, 57,
                  59, 60, 61, 62, 63, 64, 65, 66, 71, 72, 73, 74, 76, 77, 79, 83, 84, 86, 89,
                  91, 93, 94)
XVIEW_CLASSES = dict(zip(XVIEW_TYPE_IDS, XVIEW_60, strict=True))
XVIEW_UNLISTED = (75, 82)  # in xView_train.geojson, in none of the 60 classes


class XViewSource(AnnotatedSource):
    """``reader: xview``; ``root`` holds ``train_images/`` and ``xView_train.geojson``."""

    def __init__(self, dataset: str, spec, cfg: Config):
        opts = reader_options(spec, dataset, ("labels", "images_dir"))
        root = open_root(dataset, spec, "train_images/ and xView_train.geojson")
        where = f"sources.{dataset}"
        labels = root / opts.get("labels", "xView_train.geojson")
        images = root / opts.get("images_dir", "train_images")
        if not labels.is_file():
            raise ConfigError(f"{where}: no {labels.name} in {root}; xView's labels come as "
                              f"train_labels.zip holding xView_train.geojson: unpack it there, "
                              f"or name the file with options.labels")
        if not images.is_dir():
            raise ConfigError(f"{where}: no folder {images.name}/ in {root} (xView's "
                              f"train_images.zip); unpack it there or set options.images_dir")
        problems = Problems(spec.on_bad, where)
        boxes = _read_boxes(labels, problems)
        tifs = sorted(images.glob("*.tif"))
        items = []
        for tif in tifs:
            bounds, has_crs = raster_lonlat(tif)
            if not has_crs:
                problems.bad("images without CRS", f"{tif.name} has no CRS (xView's GeoTIFFs "
                             f"are georeferenced)", "use the published train_images files")
                continue
            item = Item((tif,), objects=boxes.pop(tif.name, []), bounds=bounds,
                        extra={"image_id": tif.name})
            clip_objects(item, image_size(tif), problems)
            items.append(item)
        missing = sum(len(v) for v in boxes.values())
        if missing:  # boxes of images that are not on disk
            shown = ", ".join(sorted(boxes)[:3])
            problems.bad("boxes of images not found", f"{missing} boxes of {len(boxes)} images "
                         f"not in {images.name}/ (e.g. {shown})",
                         "unpack all of train_images.zip")
        super().__init__(cfg, dataset, spec, items, XVIEW_60,
                         band_records(dataset, cfg, ["R", "G", "B"], where), "xview",
                         problems, len(tifs))


def _read_boxes(path, problems: Problems) -> dict[str, list]:
    """{image file name: [(class, polygon (4, 2) x/y), ...]} from xView_train.geojson."""
    try:
        features = json.loads(path.read_text())["features"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path.name} is not a GeoJSON FeatureCollection ({exc}); use the "
                          f"file of xView's train_labels.zip") from None
    out: dict[str, list] = {}
    unlisted = 0
    for f in features:
        p = f.get("properties") or {}
        type_id = int(p.get("type_id", -1))
        if type_id in XVIEW_UNLISTED:
            unlisted += 1
            continue
        if type_id not in XVIEW_CLASSES:
            problems.bad("unknown type ids", f"{path.name}: feature of {p.get('image_id')} has "
                         f"type_id {type_id}, which is none of xView's 60 class ids",
                         "check that the file is xView_train.geojson")
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in str(p["bounds_imcoords"]).split(","))
        except (KeyError, ValueError):
            problems.known("features without pixel bounds")
            continue
        poly = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        out.setdefault(str(p["image_id"]), []).append((XVIEW_CLASSES[type_id], poly))
    if unlisted:
        problems.known("type ids 75 and 82 (not among the 60 classes)", unlisted)
    return out
