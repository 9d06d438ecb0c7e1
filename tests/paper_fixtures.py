"""Small files in the published on-disk layouts of seed 000's datasets (xView, SeaDronesSee v2,
MAFAT, ...), written by the tests as torchgeo's tests write theirs. Each writer returns the
annotations it wrote, in pixel coordinates, for the tests to check every patch's labels
against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# --- xView: train_images/<id>.tif + xView_train.geojson -------------------------------------

# (image file, type_id, xmin, ymin, xmax, ymax); 96 x 96 px images, 32-px patches
XVIEW_BOXES = [
    ("10.tif", 73, 4, 4, 20, 20),      # Building, inside patch (0, 0)
    ("10.tif", 18, 28, 40, 44, 50),    # Small Car across a border: 1/4 in (32, 0), 3/4 in (32, 32)
    ("10.tif", 75, 50, 50, 60, 60),    # type id 75: in the file, none of the 60 classes
    ("10.tif", 86, 90, 90, 110, 110),  # Storage Tank, partly beyond the image edge
    ("11.tif", 40, 66, 2, 94, 30),     # Maritime Vessel in patch (0, 64)
]
XVIEW_EMPTY_IMAGE = "12.tif"  # an image with no feature


def write_xview(root: Path, crs: bool = True) -> list[tuple]:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import from_origin

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the files without CRS

    (root / "train_images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, name in enumerate(("10.tif", "11.tif", XVIEW_EMPTY_IMAGE)):
        img = rng.integers(0, 255, (3, 96, 96), dtype=np.uint8)
        kw = dict(crs="EPSG:32617", transform=from_origin(500000 + 100 * k, 3300000, 0.3, 0.3)) \
            if crs else {}
        with rasterio.open(root / "train_images" / name, "w", driver="GTiff", width=96,
                           height=96, count=3, dtype="uint8", photometric="RGB", **kw) as dst:
            dst.write(img)
    features = []
    for i, (image, type_id, x0, y0, x1, y1) in enumerate(XVIEW_BOXES):
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[
            [-81.0, 29.8], [-81.0, 29.81], [-80.99, 29.81], [-80.99, 29.8], [-81.0, 29.8]]]},
            "properties": {"bounds_imcoords": f"{x0},{y0},{x1},{y1}", "edited_by": "wwj",
                           "cat_id": "1040010028371A00", "type_id": type_id,
                           "image_id": image, "index_right": 2356, "feature_id": 2000 + i,
                           "point_geom": "0101000020E6100000"}})
    features.append({"type": "Feature", "geometry": None,  # a malformed feature
                     "properties": {"bounds_imcoords": "", "type_id": 73, "image_id": "11.tif"}})
    (root / "xView_train.geojson").write_text(json.dumps({
        "type": "FeatureCollection", "name": "xView_train",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": features}))
    return XVIEW_BOXES


# --- SeaDronesSee v2: annotations/instances_<split>.json + images/<split>/<id>.jpg ----------

SEADRONESSEE_CATEGORIES = [
    {"id": 0, "name": "ignored", "supercategory": "ignored"},
    {"id": 1, "name": "swimmer", "supercategory": "person"},
    {"id": 2, "name": "boat", "supercategory": "boat"},
    {"id": 3, "name": "jetski", "supercategory": "boat"},
    {"id": 4, "name": "life_saving_appliances", "supercategory": "object"},
    {"id": 5, "name": "buoy", "supercategory": "object"}]

# split -> [(image id, width, height, meta, [(category, x, y, w, h), ...])]
SEADRONESSEE_IMAGES = {
    "train": [
        (48, 96, 64, {"image_name": "DJI_0032_005415.jpg", "datetime(utc)": "2020-08-25 14:19:21",
                      "latitude": 47.6712, "longitude": 9.2701,
                      "height_above_takeoff(meter)": 31.4, "gimbal_pitch(degrees)": -56.2},
         [(1, 2, 2, 10, 10), (2, 24, 34, 16, 20), (0, 60, 10, 20, 20)]),
        (52, 96, 64, None, []),                      # no flight record, no objects
    ],
    "val": [
        (7001, 64, 64, {"date_time": "2021-06-03T10:02:11", "gps_latitude_ref": 47.65,
                        "gps_longitude_ref": 9.18, "altitude": 60.0, "gimbal_pitch": -90},
         [(5, 40, 40, 6, 6), (4, 1, 33, 30, 30)]),
    ],
}


def write_seadronessee(root: Path) -> dict:
    from PIL import Image

    rng = np.random.default_rng(1)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, images in SEADRONESSEE_IMAGES.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        coco = {"info": {"year": "2022", "version": "2"}, "licenses": [],
                "categories": SEADRONESSEE_CATEGORIES, "images": [], "annotations": []}
        for image_id, w, h, meta, boxes in images:
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{image_id}.jpg", quality=95)
            entry = {"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w,
                     "source": {"drone": "mavic", "folder_name": "DJI_0032"}, "meta": meta}
            if meta and "datetime(utc)" in meta:
                entry["date_time"] = "2020-08-25T14:19:21.647133"
            coco["images"].append(entry)
            for cat, x, y, bw, bh in boxes:
                coco["annotations"].append({"id": ann_id, "image_id": image_id,
                                            "bbox": [x, y, bw, bh], "area": bw * bh,
                                            "category_id": cat})
                ann_id += 1
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return SEADRONESSEE_IMAGES


# --- MAFAT: train/images/<frame>.tif (16-bit, one band) + train/labelTxt/<frame>.txt --------

MAFAT_ROWS = {  # frame -> rows as in MAFAT's label files (no header, no difficulty column)
    "10011_0_0": ["2.00 2.00 20.00 2.00 20.00 12.00 2.00 12.00 small_vehicle",
                  "40.00 -4.00 52.00 -4.00 52.00 8.00 40.00 8.00 pylon",  # cut by the edge
                  "30.00 40.00 50.00 40.00 50.00 60.00 30.00 60.00 container",
                  "8.00 36.00 14.00 42.00 8.00 48.00 2.00 42.00 bus"],  # oriented (a diamond)
    "10011_0_1280": [],                            # a frame without objects: empty file
    "1081_0_5120": ["imagesource:MAFAT", "gsd:0.52",  # DOTA's header lines, if present
                    "60.0 -4.0 70.0 -4.0 70.0 6.0 60.0 6.0 small_vessel 0",
                    "20.0 40.0 30.0 40.0 30.0 50.0 20.0 50.0 small_vehicle 0"],
}


def write_mafat(root: Path, drop_label: str | None = None) -> dict:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # MAFAT's frames have no CRS

    rng = np.random.default_rng(2)
    for sub in ("images", "labelTxt"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for frame, rows in MAFAT_ROWS.items():
        with rasterio.open(root / "train" / "images" / f"{frame}.tif", "w", driver="GTiff",
                           width=64, height=64, count=1, dtype="uint16") as dst:
            dst.write(rng.integers(200, 4000, (1, 64, 64), dtype=np.uint16))
        if frame != drop_label:
            (root / "train" / "labelTxt" / f"{frame}.txt").write_text(
                "".join(r + "\n" for r in rows))
    return MAFAT_ROWS


def box_share(box, y: int, x: int, p: int) -> float:
    """Share of an axis-aligned box (x0, y0, x1, y1) inside the patch at (y, x) of side p."""
    x0, y0, x1, y1 = box
    w = max(0.0, min(x1, x + p) - max(x0, x))
    h = max(0.0, min(y1, y + p) - max(y0, y))
    return w * h / ((x1 - x0) * (y1 - y0))


# --- Agriculture-Vision: <split>/images/{rgb,nir}, boundaries, masks, labels/<class> --------

AGRIVISION_TILES = {  # split -> {tile: {class folder: (x0, y0, x1, y1) of its mask}}
    "train": {"UG6H862FY_2777-3999-3289-4511": {"double_plant": (0, 0, 20, 20),
                                                 "waterway": (40, 40, 64, 64)},
              "ZAD3NZMXK_5223-878-5735-1390": {}},      # a tile with no anomaly
    "val": {"K8PJ2HQ7A_1024-512-1536-1024": {"weed_cluster": (0, 32, 32, 64)}},
}
AGRIVISION_INVALID = (0, 32, 32, 64)  # outside the field in the first train tile: dropped


def write_agriculture_vision(root: Path, extra_folder: str | None = None,
                             mask_px: int = 64) -> dict:
    from PIL import Image

    rng = np.random.default_rng(3)
    classes = ("double_plant", "waterway", "weed_cluster") + \
        ((extra_folder,) if extra_folder else ())
    for split, tiles in AGRIVISION_TILES.items():
        base = root / split
        for sub in ("images/rgb", "images/nir", "boundaries", "masks",
                    *(f"labels/{c}" for c in classes)):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for k, (tile, boxes) in enumerate(tiles.items()):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                base / "images" / "rgb" / f"{tile}.jpg")
            Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(
                base / "images" / "nir" / f"{tile}.jpg")
            boundary = np.full((64, 64), 255, np.uint8)
            if split == "train" and k == 0:
                x0, y0, x1, y1 = AGRIVISION_INVALID
                boundary[y0:y1, x0:x1] = 0
            Image.fromarray(boundary).save(base / "boundaries" / f"{tile}.png")
            Image.fromarray(np.full((mask_px, mask_px), 255, np.uint8)).save(
                base / "masks" / f"{tile}.png")
            for c in classes:
                m = np.zeros((64, 64), np.uint8)
                if c in boxes:
                    x0, y0, x1, y1 = boxes[c]
                    m[y0:y1, x0:x1] = 255
                Image.fromarray(m).save(base / "labels" / c / f"{tile}.png")
    return AGRIVISION_TILES


# --- Houston Harvey, FloodNet layout: <split>/<split>-org-img, <split>-label-img/<id>_lab.png

FLOODNET_IMAGES = {"train": {"6467": [(1, 0, 0, 40, 20), (5, 0, 40, 64, 64)],   # index, box
                             "7021": [(6, 0, 0, 64, 64)]},                     # only trees
                   "val": {"10807": [(3, 32, 0, 64, 32), (8, 0, 0, 4, 4)]}}


def write_floodnet(root: Path, bad_value: int | None = None) -> dict:
    from PIL import Image

    rng = np.random.default_rng(4)
    for split, images in FLOODNET_IMAGES.items():
        (root / split / f"{split}-org-img").mkdir(parents=True, exist_ok=True)
        (root / split / f"{split}-label-img").mkdir(parents=True, exist_ok=True)
        for image_id, regions in images.items():
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                root / split / f"{split}-org-img" / f"{image_id}.jpg")
            m = np.zeros((64, 64), np.uint8)
            for value, x0, y0, x1, y1 in regions:
                m[y0:y1, x0:x1] = value
            if bad_value is not None:
                m[63, 63] = bad_value
            Image.fromarray(m).save(root / split / f"{split}-label-img" / f"{image_id}_lab.png")
    return FLOODNET_IMAGES


def mask_share(box, y: int, x: int, p: int, valid=None) -> float:
    """Share of a patch's valid pixels covered by an axis-aligned mask region."""
    x0, y0, x1, y1 = box
    inside = np.zeros((64, 64), bool)
    inside[y0:y1, x0:x1] = True
    ok = np.ones((64, 64), bool) if valid is None else valid
    n = ok[y:y + p, x:x + p].sum()
    return float((inside & ok)[y:y + p, x:x + p].sum() / n) if n else 0.0


# --- QFabric: vectors/<split>/COCO/metadata.json + <location>.json, five dates per place ----

QFABRIC_OPTIONS = [
    ["Residential", "Commercial", "Industrial", "Road", "Demolition", "Mega Projects"],
    ["Prior Construction", "Greenland", "Land Cleared", "Excavation", "Materials Dumped",
     "Construction Started", "Construction Midway", "Construction Done", "Operational"],
    ["Dense Urban", "Sparse Urban", "Rural"],
    ["River", "Hills"]]
# location -> (split, [(polygon corners, change type, {date: status}, urban, geography)])
QFABRIC_LOCATIONS = {
    "loc_0001": ("train", [
        ([(2, 2), (30, 2), (30, 20), (2, 20)], 0, {"0": [1], "4": [8]}, [1], [0]),
        ([(40, 40), (60, 40), (60, 60), (40, 60)], 3, {"0": [0], "4": [6]}, [0], [])]),
    "loc_0002": ("val", []),    # a place where nothing changed
}


def write_qfabric(root: Path, urban=None, geography=None, statuses=None) -> dict:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(5)
    coco = root / "vectors" / "random-split-1_2023_02_05-11_47_30" / "COCO"
    coco.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    options = [list(o) for o in QFABRIC_OPTIONS]
    for k, given in ((1, statuses), (2, urban), (3, geography)):  # the release's own lists
        if given:
            options[k] = list(given)
    (coco / "metadata.json").write_text(json.dumps({
        "dataset": {s: [f"{loc}.json" for loc, (sp, _) in QFABRIC_LOCATIONS.items() if sp == s]
                    for s in ("train", "val")},
        "label:metadata": [{"name": n, "options": o} for n, o in zip(
            ("change_type", "change_status", "urban_type", "geography_type"), options)]}))
    for k, (loc, (_, polys)) in enumerate(QFABRIC_LOCATIONS.items()):
        images = []
        for d in range(5):
            name = f"images/{loc}_d{d}.tif"
            with rasterio.open(root / name, "w", driver="GTiff", width=64, height=64, count=3,
                               dtype="uint8", crs="EPSG:32643", photometric="RGB",
                               transform=from_origin(300000 + 1000 * k, 2000000, 0.5, 0.5)) as f:
                f.write(rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
            images.append({"id": d, "file_name": name, "width": 64, "height": 64,
                           "date_captured": f"201{5 + d}-03-0{d + 1}"})
        anns = []
        for i, (corners, ct, status, urban_i, geo) in enumerate(polys):
            flat = [float(v) for c in corners + [corners[0]] for v in c]
            xs, ys = flat[0::2], flat[1::2]
            anns.append({"id": i, "image_id": 0, "segmentation": [flat],
                         "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                         "properties": [{"labels": [ct]}, {"labels": status},
                                        {"labels": urban_i}, {"labels": geo}]})
        (coco / f"{loc}.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return QFABRIC_LOCATIONS
