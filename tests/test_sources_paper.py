"""Readers of seed 000's datasets in their published formats: fixtures in the real layouts ->
shards, every patch's labels checked against the annotations written, and the bad inputs."""

import json

import numpy as np
import pytest
from paper_fixtures import (
    AGRIVISION_INVALID,
    AGRIVISION_TILES,
    FLOODNET_IMAGES,
    MAFAT_ROWS,
    QFABRIC_LOCATIONS,
    QFABRIC_OPTIONS,
    SEADRONESSEE_IMAGES,
    XVIEW_BOXES,
    box_share,
    mask_share,
    write_agriculture_vision,
    write_floodnet,
    write_mafat,
    write_qfabric,
    write_seadronessee,
    write_xview,
)

from geofm_lib import errors
from geofm_lib.config import load_config
from geofm_lib.data import build, shards


def _cfg(tmp_path, dataset, spec, **kw):
    base = dict(datasets=[dataset], group="C" if dataset in ("xview", "mafat") else "B",
                sources={dataset: spec}, image_px=32, samples_per_dataset=50,
                val_fraction=0.34, shard_size=64, work_dir=str(tmp_path / "work"))
    return load_config("ci", **{**base, **kw})


def _samples(folder):
    return [s for split in ("train", "val") for s in
            shards.iter_shards(shards.shard_paths(folder, split))]


def _expected(boxes, y, x, p=32, share=0.5):
    """Labels of a patch from axis-aligned boxes (label, x0, y0, x1, y1), independently of the
    reader: the box's share inside the patch."""
    return {lab for lab, *box in boxes if box_share(box, y, x, p) >= share}


XVIEW_NAMES = {73: "Building", 18: "Small Car", 86: "Storage Tank", 40: "Maritime Vessel"}


def test_xview_geojson_and_geotiffs_to_patches_with_their_boxes(tmp_path):
    write_xview(tmp_path / "xview")
    folder = build.build_shards(_cfg(tmp_path, "xview", {"reader": "xview",
                                                         "root": str(tmp_path / "xview")}),
                                None, False)
    samples = _samples(folder)
    assert len(samples) == 3 * 9  # three 96-px images, nine 32-px patches each
    for s in samples:
        m = s["json"]
        y, x = m["patch_origin_px"]
        boxes = [(XVIEW_NAMES[t], x0, y0, x1, y1) for img, t, x0, y0, x1, y1 in XVIEW_BOXES
                 if img == m["file"] and t in XVIEW_NAMES]
        assert set(m["labels"]) == _expected(boxes, y, x), (m["file"], y, x, m["labels"])
        assert m["footprint"]["bounds"] and -82 < m["footprint"]["bounds"][0] < -80
        assert s["img"].dtype == np.uint8 and m["bands"] == ["R", "G", "B"]
    by_patch = {(s["json"]["file"], *s["json"]["patch_origin_px"]): s["json"]["labels"]
                for s in samples}
    assert by_patch[("10.tif", 32, 32)] == ["Small Car"] and by_patch[("10.tif", 32, 0)] == []
    assert by_patch[("10.tif", 64, 64)] == []  # the tank's box is 9 % inside the image
    assert by_patch[("10.tif", 0, 0)] == ["Building"]
    manifest = shards.load_manifest(folder)
    report = manifest["source_reports"]["xview"]
    assert report["found"] == 3 and report["used"] == 3
    assert report["not_used"] == {"type ids 75 and 82 (not among the 60 classes)": 1,
                                  "features without pixel bounds": 1}
    assert manifest["patches"]["xview"] == {"cut": 27, "dropped": 0, "empty": 27 - sum(
        1 for s in samples if s["json"]["labels"])}


def test_seadronessee_coco_splits_categories_and_flight_records(tmp_path):
    write_seadronessee(tmp_path / "sds")
    cfg = _cfg(tmp_path, "seadronessee", {"reader": "coco", "root": str(tmp_path / "sds"),
                                          "splits": "official"})
    folder = build.build_shards(cfg, None, False)
    samples = _samples(folder)
    names = {1: "Swimmer", 2: "Boat", 4: "Life-saving appliance", 5: "Buoy"}
    entries = {image_id: (split, boxes) for split, images in SEADRONESSEE_IMAGES.items()
               for image_id, _, _, _, boxes in images}
    assert len(samples) == 6 + 6 + 4
    for s in samples:
        m = s["json"]
        split, boxes = entries[m["image_id"]]
        assert m["split"] == split
        y, x = m["patch_origin_px"]
        expected = _expected([(names[c], bx, by, bx + w, by + h) for c, bx, by, w, h in boxes
                              if c in names], y, x)
        assert set(m["labels"]) == expected, (m["image_id"], y, x)
    first = next(s["json"] for s in samples if s["json"]["image_id"] == 48)
    assert first["footprint"]["bounds"] == [9.2701, 47.6712, 9.2701, 47.6712]
    assert first["altitude_m"] == 31.4 and first["date"] == "2020-08-25"
    quirk = next(s["json"] for s in samples if s["json"]["image_id"] == 7001)
    assert quirk["footprint"]["bounds"][:2] == [9.18, 47.65]  # numbers held in gps_*_ref
    assert next(s["json"] for s in samples if s["json"]["image_id"] == 52)["footprint"][
        "bounds"] is None
    report = shards.load_manifest(folder)["source_reports"]["seadronessee"]
    assert report["not_used"] == {"annotations of the ignored category": 1}


def test_mafat_dota_rows_16_bit_frames_oriented_and_cut_boxes(tmp_path):
    write_mafat(tmp_path / "mafat")
    folder = build.build_shards(_cfg(tmp_path, "mafat", {"reader": "dota",
                                                         "root": str(tmp_path / "mafat")}),
                                None, False)
    samples = _samples(folder)
    assert len(samples) == 3 * 4
    label = {"small_vehicle": "Small Vehicle", "pylon": "Pylon", "container": "Container",
             "small_vessel": "Small Vessel", "bus": "Bus"}
    for s in samples:
        m = s["json"]
        assert s["img"].dtype == np.uint16 and m["bands"] == ["PAN"]
        y, x = m["patch_origin_px"]
        boxes = []
        for row in MAFAT_ROWS[m["frame"]]:
            t = row.split()
            if len(t) >= 9:
                xy = np.array([float(v) for v in t[:8]]).reshape(4, 2)
                boxes.append((label[t[8]], *xy.min(0), *xy.max(0)))
        expected = _expected([b for b in boxes if b[0] != "Bus"], y, x)
        if (m["frame"], y, x) == ("10011_0_0", 32, 0):
            expected.add("Bus")  # the diamond lies wholly inside this patch
        assert set(m["labels"]) == expected, (m["frame"], y, x, m["labels"])
    assert {s["json"].get("gsd_header_m") for s in samples} == {None, 0.52}


def test_frames_of_one_scene_stay_on_one_side_of_a_random_split(tmp_path):
    """Issue 36, item 2: MAFAT's frames 10011_0_0 and 10011_1280_0 are neighbouring crops of
    scene 10011; a split by frame put them on both sides. Every scene now lands on one side,
    and the manifest counts the scenes per side."""
    import rasterio

    write_mafat(tmp_path / "mafat")
    rng = np.random.default_rng(5)
    images = tmp_path / "mafat" / "train" / "images"
    for frame in ("10011_1280_0", "10011_1280_1280", "2044_0_0", "2044_0_1280", "3055_0_0",
                  "3055_1280_0", "P0007__1024__0___0", "P0007__1024__824___0"):
        with rasterio.open(images / f"{frame}.tif", "w", driver="GTiff", width=64, height=64,
                           count=1, dtype="uint16") as dst:
            dst.write(rng.integers(200, 4000, (1, 64, 64), dtype=np.uint16))
        (images.parent / "labelTxt" / f"{frame}.txt").write_text(
            "4 4 20 4 20 20 4 20 small_vehicle\n")
    folder = build.build_shards(_cfg(tmp_path, "mafat", {"reader": "dota",
                                                         "root": str(tmp_path / "mafat")},
                                     val_fraction=0.4), None, False)
    sides: dict = {}
    for s in _samples(folder):
        sides.setdefault(s["json"]["scene"], set()).add(s["json"]["split"])
        assert s["json"]["split_key"] == s["json"]["scene"]
    assert set(sides) == {"10011", "1081", "2044", "3055", "P0007"}
    assert all(len(v) == 1 for v in sides.values()), sides
    assert {"train", "val"} == set().union(*sides.values())
    units = shards.load_manifest(folder)["split_units"]["mafat"]
    assert units["train"] + units["val"] == 5 and units["on_both_sides"] == 0


def test_one_scene_cannot_be_split_and_the_message_says_why(tmp_path):
    write_mafat(tmp_path / "mafat")
    (tmp_path / "mafat" / "train" / "images" / "1081_0_5120.tif").unlink()
    (tmp_path / "mafat" / "train" / "labelTxt" / "1081_0_5120.txt").unlink()
    cfg = _cfg(tmp_path, "mafat", {"reader": "dota", "root": str(tmp_path / "mafat")})
    manifest = shards.load_manifest(build.build_shards(cfg, None, False))
    with pytest.raises(errors.DataError, match="mafat has no val samples.*one split unit"):
        build.check_splits(manifest, cfg.dataset_keys)


def test_bad_annotations_are_named_or_skipped_and_counted(tmp_path):
    # a frame whose label file is missing
    write_mafat(tmp_path / "m", drop_label="10011_0_1280")
    spec = {"reader": "dota", "root": str(tmp_path / "m")}
    with pytest.raises(errors.DataError, match=r"10011_0_1280.tif has no train/labelTxt/"
                                               r"10011_0_1280.txt.*on_bad: skip"):
        build.build_shards(_cfg(tmp_path, "mafat", spec), None, False)
    folder = build.build_shards(_cfg(tmp_path, "mafat", {**spec, "on_bad": "skip"}), None,
                                False)
    assert shards.load_manifest(folder)["source_reports"]["mafat"]["not_used"] == {
        "label files missing": 1}
    # an unknown class, a malformed row and a box outside its image
    rows = tmp_path / "m" / "train" / "labelTxt" / "10011_0_0.txt"
    rows.write_text("1 1 5 1 5 5 1 5 tank\n1 2 3\n100 100 120 100 120 120 100 120 bus\n")
    with pytest.raises(errors.DataError, match="class 'tank' is not one of mafat's 13"):
        build.build_shards(_cfg(tmp_path, "mafat", spec, seed=1), None, False)
    folder = build.build_shards(_cfg(tmp_path, "mafat", {**spec, "on_bad": "skip"}, seed=1),
                                None, False)
    assert shards.load_manifest(folder)["source_reports"]["mafat"]["not_used"] == {
        "label files missing": 1, "unknown classes": 1, "malformed rows": 1,
        "objects outside their image": 1}


def test_every_file_and_object_is_accounted_for(tmp_path):
    """Issue 36, item 3: orphan label files, objects in no patch and images skipped as
    unreadable were counted nowhere, and a dataset emptied by on_bad: skip built with rc 0."""
    import rasterio

    from geofm_lib.data.manifest import data_accounting

    root = tmp_path / "m"
    write_mafat(root)
    labels = root / "train" / "labelTxt"
    (labels / "20001_0_0.txt").write_text("1 1 9 1 9 9 1 9 small_vehicle\n"
                                          "2 2 8 2 8 8 2 8 bus\n")  # its frame is absent
    # 48 px patches of 64 px frames: one patch at (0, 0), a 16 px strip uncut along the edges
    cfg = _cfg(tmp_path, "mafat", {"reader": "dota", "root": str(root)}, image_px=48)
    manifest = shards.load_manifest(build.build_shards(cfg, None, False))
    report = manifest["source_reports"]["mafat"]
    assert report["not_used"] == {"label files without their image": 1,
                                  "objects in label files without their image": 2}
    objects = manifest["objects"]["mafat"]
    # 10011_0_0: the car and the bus lie in the patch; the container's centre (40, 50) lies in
    # the strip; the pylon (x 40..52, y -4..8, its centre in the patch) has 44 % of its area
    # in the patch, under min_object_share 0.5. 1081_0_5120: its car is in, its vessel's
    # centre (65, 1) in the strip
    assert objects["objects"] == 6 and objects["in a patch's labels"] == 3
    assert objects["not in a patch: in the edge strip no whole patch covers"] == 2
    assert objects["not in a patch: spread over patches, none holds min_object_share of "
                   "it"] == 1
    row = data_accounting(manifest)[0]
    assert row["objects in no patch (why)"].startswith("3: ")
    assert "label files without their image: 1" in row["not used (why)"]
    # frames of another band count than the reader's are unreadable: skipped, counted, named
    bad = tmp_path / "b"
    write_mafat(bad)
    for tif in (bad / "train" / "images").glob("*.tif"):
        with rasterio.open(tif, "w", driver="GTiff", width=64, height=64, count=3,
                           dtype="uint16") as dst:
            dst.write(np.ones((3, 64, 64), np.uint16))
    spec = {"reader": "dota", "root": str(bad), "on_bad": "skip"}
    with pytest.raises(errors.DataError, match=r"mafat: every one of its 3 images was "
                                               r"unreadable.*has 3 bands, the reader expects 1"):
        build.build_shards(_cfg(tmp_path, "mafat", spec, work_dir=str(tmp_path / "w2")),
                           None, False)


def test_xview_unknown_type_ids_missing_images_and_files_without_crs(tmp_path):
    root = tmp_path / "x"
    write_xview(root)
    data = json.loads((root / "xView_train.geojson").read_text())
    data["features"][0]["properties"]["type_id"] = 99
    (root / "xView_train.geojson").write_text(json.dumps(data))
    spec = {"reader": "xview", "root": str(root)}
    with pytest.raises(errors.DataError, match="type_id 99, which is none of xView's 60"):
        build.build_shards(_cfg(tmp_path, "xview", spec), None, False)
    data["features"][0]["properties"]["type_id"] = 73
    (root / "xView_train.geojson").write_text(json.dumps(data))
    (root / "train_images" / "11.tif").unlink()
    with pytest.raises(errors.DataError, match=r"boxes of 1 images not in train_images/ "
                                               r"\(e.g. 11.tif\)"):
        build.build_shards(_cfg(tmp_path, "xview", spec, seed=1), None, False)
    flat = tmp_path / "flat"
    write_xview(flat, crs=False)
    with pytest.raises(errors.DataError, match="10.tif has no CRS"):
        build.build_shards(_cfg(tmp_path, "xview", {"reader": "xview", "root": str(flat)},
                                seed=2), None, False)
    (root / "xView_train.geojson").unlink()
    with pytest.raises(errors.ConfigError, match="no xView_train.geojson.*train_labels.zip"):
        build.build_shards(_cfg(tmp_path, "xview", spec, seed=3), None, False)


def test_coco_images_referenced_but_absent_and_unknown_categories(tmp_path):
    root = tmp_path / "s"
    write_seadronessee(root)
    (root / "images" / "train" / "52.jpg").unlink()
    spec = {"reader": "coco", "root": str(root)}
    with pytest.raises(errors.DataError, match="instances_train.json lists 52.jpg, which is not"):
        build.build_shards(_cfg(tmp_path, "seadronessee", spec), None, False)
    coco = json.loads((root / "annotations" / "instances_val.json").read_text())
    coco["annotations"][0]["category_id"] = 9
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    folder = build.build_shards(_cfg(tmp_path, "seadronessee", {**spec, "on_bad": "skip"}),
                                None, False)
    assert shards.load_manifest(folder)["source_reports"]["seadronessee"]["not_used"] == {
        "images referenced but absent": 1, "unknown category ids": 1,
        "annotations of the ignored category": 1}


def test_agriculture_vision_rgb_nir_class_masks_inside_the_valid_field(tmp_path):
    write_agriculture_vision(tmp_path / "av")
    cfg = _cfg(tmp_path, "agriculture_vision", {"reader": "agriculture_vision",
                                                "root": str(tmp_path / "av"),
                                                "splits": "official"})
    folder = build.build_shards(cfg, None, False)
    samples = _samples(folder)
    assert len(samples) == 3 * 4 - 1  # the patch outside the field is dropped
    names = {"double_plant": "Double plant", "waterway": "Waterway",
             "weed_cluster": "Weed cluster"}
    first = next(iter(AGRIVISION_TILES["train"]))
    for s in samples:
        m = s["json"]
        tile = f"{m['field_id']}_{'-'.join(map(str, m['field_window_px']))}"
        split = next(sp for sp, tiles in AGRIVISION_TILES.items() if tile in tiles)
        assert m["split"] == split and s["img"].shape == (4, 32, 32)
        assert m["bands"] == ["R", "G", "B", "nir"] and m["band_info"][3]["center_nm"] == 842
        valid = np.ones((64, 64), bool)
        if tile == first:
            x0, y0, x1, y1 = AGRIVISION_INVALID
            valid[y0:y1, x0:x1] = False
        y, x = m["patch_origin_px"]
        expected = {names[c] for c, box in AGRIVISION_TILES[split][tile].items()
                    if mask_share(box, y, x, 32, valid) >= 0.01}
        assert set(m["labels"]) == expected, (tile, y, x, m["labels"])
    manifest = shards.load_manifest(folder)
    assert manifest["patches"]["agriculture_vision"]["dropped"] == 1
    assert manifest["patches"]["agriculture_vision"]["cut"] == 12


def test_agriculture_vision_unknown_class_folders_and_masks_of_another_size(tmp_path):
    write_agriculture_vision(tmp_path / "a", extra_folder="cloud_shadow")
    spec = {"reader": "agriculture_vision", "root": str(tmp_path / "a")}
    with pytest.raises(errors.DataError, match=r"train/labels/cloud_shadow is none of "
                                               r"agriculture_vision's classes.*class_folders"):
        build.build_shards(_cfg(tmp_path, "agriculture_vision", spec), None, False)
    folder = build.build_shards(_cfg(tmp_path, "agriculture_vision",
                                     {**spec, "options": {"class_folders": [
                                         "cloud_shadow=Water"]}}), None, False)
    assert "Water" in shards.load_manifest(folder)["vocabularies"]["agriculture_vision"]
    write_agriculture_vision(tmp_path / "b", mask_px=48)
    with pytest.raises(errors.DataError, match=r"masks of another size|mask is \(48, 48\)"):
        build.build_shards(_cfg(tmp_path, "agriculture_vision",
                                {"reader": "agriculture_vision", "root": str(tmp_path / "b")}),
                           None, False)


def test_houston_harvey_floodnet_index_masks_to_the_five_flood_labels(tmp_path):
    write_floodnet(tmp_path / "fn")
    folder = build.build_shards(_cfg(tmp_path, "houston_harvey", {
        "reader": "class_masks", "root": str(tmp_path / "fn"), "splits": "official"},
        group="C"), None, False)
    samples = _samples(folder)
    assert len(samples) == 3 * 4
    names = {1: "Flooded building", 3: "Flooded road", 5: "Water"}  # 6 tree, 8 pool: no label
    for s in samples:
        m = s["json"]
        split = next(sp for sp, imgs in FLOODNET_IMAGES.items() if m["image_id"] in imgs)
        assert m["split"] == split
        y, x = m["patch_origin_px"]
        expected = {names[v] for v, *box in FLOODNET_IMAGES[split][m["image_id"]]
                    if v in names and mask_share(box, y, x, 32) >= 0.01}
        assert set(m["labels"]) == expected, (m["image_id"], y, x, m["labels"])


def test_class_indices_outside_the_list_stop_or_are_skipped(tmp_path):
    write_floodnet(tmp_path / "fn", bad_value=12)
    spec = {"reader": "class_masks", "root": str(tmp_path / "fn")}
    with pytest.raises(errors.DataError, match=r"6467_lab.png holds class indices \[12\]"):
        build.build_shards(_cfg(tmp_path, "houston_harvey", spec, group="C"), None, False)
    with pytest.raises(errors.DataError, match=r"houston_harvey: every one of its 3 images was "
                                               r"unreadable and skipped \(on_bad: skip\)"):
        build.build_shards(_cfg(tmp_path, "houston_harvey", {**spec, "on_bad": "skip"},
                                group="C"), None, False)


@pytest.mark.parametrize("date", [4, 0])
def test_qfabric_change_polygons_with_the_status_at_the_scene_date(tmp_path, date):
    write_qfabric(tmp_path / "qf")
    spec = {"reader": "qfabric", "root": str(tmp_path / "qf"), "splits": "official",
            "options": {"date": date}}
    folder = build.build_shards(_cfg(tmp_path, "qfabric", spec, group="C"), None, False)
    samples = _samples(folder)
    assert len(samples) == 2 * 4
    types, status, urban, geo = QFABRIC_OPTIONS
    for s in samples:
        m = s["json"]
        split, polys = QFABRIC_LOCATIONS[m["location"]]
        assert m["split"] == split and m["date"] == f"201{5 + date}-03-0{date + 1}"
        assert m["footprint"]["bounds"] and 70 < m["footprint"]["bounds"][0] < 80
        y, x = m["patch_origin_px"]
        expected = set()
        for corners, ct, st, ur, ge in polys:
            xs, ys = [c[0] for c in corners], [c[1] for c in corners]
            if box_share((min(xs), min(ys), max(xs), max(ys)), y, x, 32) >= 0.5:
                expected |= {types[ct], *(status[i] for i in st.get(str(date), [])),
                             *(urban[i] for i in ur), *(geo[i] for i in ge)}
        assert set(m["labels"]) == expected, (m["location"], y, x, m["labels"])
    by = {(s["json"]["location"], *s["json"]["patch_origin_px"]): s["json"]["labels"]
          for s in samples}
    assert ("Operational" if date == 4 else "Greenland") in by[("loc_0001", 0, 0)]


def test_qfabric_reads_the_release_vocabulary_with_its_own_names(tmp_path):
    """Issue 36, item 6: the catalog's reconstructed context names refused the release's own
    ("Urban Slum", "Industrial" as an urban type, "Lakes", ...), and context_labels: false did
    not help for "Materials Introduced", a change status."""
    statuses = QFABRIC_OPTIONS[1][:4] + ["Materials Introduced"] + QFABRIC_OPTIONS[1][4:]
    write_qfabric(tmp_path / "qf", urban=["Industrial", "Urban Slum", "Rural"],
                  geography=["Lakes", "Grass Land"], statuses=statuses)
    spec = {"reader": "qfabric", "root": str(tmp_path / "qf"), "splits": "official"}
    folder = build.build_shards(_cfg(tmp_path, "qfabric", spec, group="C"), None, False)
    m = shards.load_manifest(folder)
    vocab = m["vocabularies"]["qfabric"]
    # the urban "Industrial" is its own label beside the change type; "Lakes" is the paper's Lake
    assert {"Industrial", "Industrial Area", "Lake", "Urban Slum", "Grassland",
            "Materials Introduced"} <= set(vocab)  # "Grass Land": the catalog's Grassland
    assert "Lakes" not in vocab and "Wetland" not in vocab  # only what the release lists
    report = m["source_reports"]["qfabric"]
    assert report["labels_not_in_catalog"] == ["Materials Introduced", "Urban Slum"]
    labels = {lab for s in _samples(folder) for lab in s["json"]["labels"]}
    # loc_0001's first polygon: urban type 1 (Urban Slum), geography 0 (Lakes); the second:
    # urban type 0 (Industrial); at the last date, status 8 of the shifted list: Construction Done
    assert {"Urban Slum", "Lake", "Industrial Area", "Construction Done"} <= labels


def test_the_six_datasets_from_their_real_layouts_through_notebooks_01_to_05(tmp_path):
    """Seed 000's six non-Sentinel datasets, each from a fixture in its published layout, in
    one run of the notebook chain on the ci preset."""
    import yaml

    from geofm_lib.report import reports

    data = tmp_path / "data"
    write_xview(data / "xview")
    write_seadronessee(data / "seadronessee")
    write_mafat(data / "mafat")
    write_agriculture_vision(data / "agriculture_vision")
    write_floodnet(data / "houston_harvey")
    write_qfabric(data / "qfabric")
    readers = {"xview": "xview", "seadronessee": "coco", "mafat": "dota",
               "agriculture_vision": "agriculture_vision", "houston_harvey": "class_masks",
               "qfabric": "qfabric"}
    params = tmp_path / "paper_datasets.yaml"
    params.write_text(yaml.safe_dump({
        "group": "all", "datasets": list(readers), "image_px": 32, "samples_per_dataset": 50,
        "val_fraction": 0.34, "batch_size": 8,
        "sources": {ds: {"reader": r, "root": str(data / ds)} for ds, r in readers.items()}}))
    out = reports.run_report("ci", str(params), chain=["01", "02", "03", "04", "05"],
                             reports_dir=tmp_path / "reports", work_dir=str(tmp_path / "work"))
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok", run
    assert {p.stem for p in out.glob("*.html")} >= {"01_data_prep", "02_explore_data",
                                                    "03_pretrain", "04_zero_shot_eval",
                                                    "05_map_viz"}
    metrics = json.loads((out / "metrics.json").read_text())
    zs = metrics["04_zero_shot_eval"]
    # each dataset scored, or named with the reason it cannot be (a val split without labels)
    assert set(zs["per_dataset"]) | set(zs["not_evaluable"]) == set(readers)
    assert zs["per_dataset"] and zs["mean_R@1"] is not None
    manifest = metrics["01_data_prep"]
    assert manifest["samples"] == 86 and manifest["shards"] == 12
    assert str(tmp_path) not in (out / "01_data_prep.html").read_text()


def test_every_catalog_reader_exists():
    from geofm_lib.catalog import DATASETS
    from geofm_lib.config import READERS

    named = {d.reader for d in DATASETS.values() if d.reader}
    assert named and named <= set(READERS)
    assert all(d.format_status for d in DATASETS.values() if d.reader)
