"""COCO-style object detection (SeaDronesSee v2, and any dataset published the same way).

Layout (``root``; SeaDronesSee's object-detection v2 release)::

    annotations/instances_train.json   COCO: images, annotations (bbox = x, y, w, h), categories
    annotations/instances_val.json
    images/train/<id>.jpg
    images/val/<id>.jpg

The split is the annotation file's (``splits: official`` keeps it). Categories map to the
catalog's labels by name (``swimmer`` -> Swimmer, ``life_saving_appliances`` -> Life-saving
appliance, ...); SeaDronesSee's category 0, ``ignored``, marks regions not to learn from and is
left out and counted. An image entry without annotations is an image with no objects (its
patches are kept, with empty label sets).

SeaDronesSee's image entries carry the drone's flight record in ``meta`` where one exists
(DJI logs: ``latitude``, ``longitude``, ``height_above_takeoff(meter)``, ``gimbal_pitch
(degrees)``; EXIF style: ``gps_latitude``, ``gps_longitude``, ``altitude``) and the capture
time in ``date_time``. The camera position becomes the footprint (a point: the image's ground
extent depends on altitude and pitch, which are kept as ``altitude_m`` and ``gimbal_pitch_deg``);
images without a position have none.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.sources.annotated import (
    AnnotatedSource,
    Item,
    Problems,
    band_records,
    catalog_labels,
    clip_objects,
    open_root,
    reader_options,
)
from geofm_lib.errors import ConfigError

IGNORED_CATEGORIES = ("ignored",)  # SeaDronesSee's category 0


class CocoSource(AnnotatedSource):
    """``reader: coco``; options ``train_annotations`` / ``val_annotations`` (default
    SeaDronesSee's ``annotations/instances_<split>.json``) and ``images_dir`` (default
    ``images/{split}``; ``{split}`` is replaced by train / val)."""

    def __init__(self, dataset: str, spec, cfg: Config):
        opts = reader_options(spec, dataset, ("train_annotations", "val_annotations",
                                              "images_dir"))
        root = open_root(dataset, spec, "annotations/instances_<split>.json and images/<split>/")
        where = f"sources.{dataset}"
        files = {s: opts.get(f"{s}_annotations") or f"annotations/instances_{s}.json"
                 for s in ("train", "val")}
        files = {s: f for s, f in files.items()
                 if opts.get(f"{s}_annotations") or (root / f).is_file()}
        if not files:
            raise ConfigError(f"{where}: no annotations/instances_train.json or "
                              f"instances_val.json under {root}; name the COCO files with "
                              f"options.train_annotations / val_annotations")
        problems = Problems(spec.on_bad, where)
        items, found = [], 0
        for split, rel in sorted(dict(files).items()):
            path = root / rel
            if not path.is_file():
                raise ConfigError(f"{where}: annotation file {rel} not found under {root}")
            images = root / str(opts.get("images_dir") or "images/{split}").format(split=split)
            got, n = _read_coco(path, images, split, dataset, cfg, problems)
            items += got
            found += n
        super().__init__(cfg, dataset, spec, items, cfg.dataset_info(dataset).labels,
                         band_records(dataset, cfg, ["R", "G", "B"], where), "coco", problems,
                         found)


def _read_coco(path: Path, images: Path, split: str, dataset: str, cfg: Config,
               problems: Problems) -> tuple[list[Item], int]:
    try:
        coco = json.loads(path.read_text())
        cats = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        entries = coco["images"]
        anns = coco.get("annotations") or []
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path.name} is not a COCO annotation file ({type(exc).__name__}: "
                          f"{exc}); it needs categories, images and annotations") from None
    used = {k: v for k, v in cats.items() if v.lower() not in IGNORED_CATEGORIES}
    labels = dict(zip(used, catalog_labels(dataset, cfg, list(used.values()),
                                           f"{path.name} categories"), strict=True))
    by_image: dict[int, list] = {}
    for a in anns:
        cat = int(a.get("category_id", -1))
        if cat not in cats:
            problems.bad("unknown category ids", f"{path.name}: annotation {a.get('id')} has "
                         f"category_id {cat}, not in its categories {sorted(cats)}",
                         "use the annotation file as published")
            continue
        if cat not in labels:
            problems.known("annotations of the ignored category")
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        poly = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
        by_image.setdefault(int(a["image_id"]), []).append((labels[cat], poly))
    items = []
    for e in entries:
        file = images / e["file_name"]
        if not file.is_file():
            problems.bad("images referenced but absent", f"{path.name} lists {e['file_name']}, "
                         f"which is not in {images}", "unpack all of the split's images there")
            problems.known("annotations of absent images", len(by_image.pop(int(e["id"]), [])))
            continue
        meta = e.get("meta") or {}
        lon, lat = _position(meta)
        extra = {"image_id": e["id"]}
        for key, name in (("altitude_m", ("height_above_takeoff(meter)", "altitude")),
                          ("gimbal_pitch_deg", ("gimbal_pitch(degrees)", "gimbal_pitch"))):
            value = next((meta[k] for k in name if meta.get(k) is not None), None)
            if value is not None:
                extra[key] = float(value)
        date = str(e.get("date_time") or meta.get("date_time") or "")[:10] or None
        item = Item((file,), split=split, objects=by_image.pop(int(e["id"]), []), date=date,
                    bounds=[lon, lat, lon, lat] if lon is not None else None, extra=extra)
        clip_objects(item, (int(e["height"]), int(e["width"])), problems)
        items.append(item)
    orphans = sum(len(v) for v in by_image.values())
    if orphans:
        problems.bad("annotations of images not listed", f"{path.name}: {orphans} annotations "
                     f"refer to image ids not in its images list", "use the file as published",
                     n=orphans)
    return items, len(entries)


def _position(meta: dict) -> tuple[float | None, float | None]:
    """(lon, lat) of a SeaDronesSee flight record, either schema, or (None, None). Some EXIF
    records hold the coordinates in ``gps_*_ref`` and lack ``gps_latitude`` /
    ``gps_longitude``: those numbers are used."""
    for lon_key, lat_key in (("longitude", "latitude"), ("gps_longitude", "gps_latitude"),
                             ("gps_longitude_ref", "gps_latitude_ref")):
        try:
            return float(meta[lon_key]), float(meta[lat_key])
        except (KeyError, TypeError, ValueError):  # absent, null, or a letter such as "N"
            continue
    return None, None
