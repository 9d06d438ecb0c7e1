"""Real on-disk layouts through the source adapters into shards: torchgeo dataset classes
(BigEarthNet on the real patches in ../shared/data; EuroSAT, UC Merced and RESISC45 on seeded
fixture files in their real formats) and Karpathy-style image-text corpora."""

import bz2
import json
from pathlib import Path

import numpy as np
import pytest

from geofm_lib import errors
from geofm_lib.config import load_config
from geofm_lib.data import build, shards
from geofm_lib.errors import ConfigError
from geofm_lib.models import inputs

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("torchgeo")


def _cfg(tmp_path, sources, **kw):
    base = dict(group="custom", datasets=list(sources), sources=sources, image_px=64,
                samples_per_dataset=50, val_fraction=0.25, shard_size=16,
                work_dir=str(tmp_path / "work"))
    return load_config("ci", **{**base, **kw})


def _all(folder):
    return [s for split in ("train", "val") for s in
            shards.iter_shards(shards.shard_paths(folder, split))]


# --- BigEarthNet v1 (real files) ---------------------------------------------------------------

def _bigearthnet_root(shared: Path, root: Path, sensor: str, splits: bool = False) -> Path:
    """torchgeo's layout built from the shared sample folders (symlinks, nothing copied)."""
    from geofm_lib.data.examples import bigearthnet_torchgeo_root

    src = shared / "bigearthnet-v1-examples"
    bigearthnet_torchgeo_root(root, src / "BigEarthNet-S2", src / "BigEarthNet-S1",
                              src / "splits" if splits else None, sensor)
    return root


def test_bigearthnet_root_without_lists_splits_by_product_never_one_patch_everywhere(
        shared_data, tmp_path):
    """Issue 36, item 2: without --splits every patch went into train, val and test."""
    from geofm_lib.data.examples import bigearthnet_torchgeo_root
    from geofm_lib.data.sources.bigearthnet import bigearthnet_product

    src = shared_data / "bigearthnet-v1-examples"
    counts = bigearthnet_torchgeo_root(tmp_path / "r", src / "BigEarthNet-S2",
                                       src / "BigEarthNet-S1", None, "s2")
    listed = {split: [line.split(",")[0] for line in
                      (tmp_path / "r" / f"bigearthnet-{split}.csv").read_text().splitlines()]
              for split in ("train", "val", "test")}
    assert sum(map(len, listed.values())) == len(list((src / "BigEarthNet-S2").iterdir()))
    assert all(listed.values()) and "not the official lists" in counts["split"]
    products = {split: {bigearthnet_product(p) for p in names}
                for split, names in listed.items()}
    assert not (products["train"] & products["val"]) and not (products["train"] &
                                                                 products["test"])
    assert not products["val"] & products["test"]
    two = tmp_path / "two"
    (two / "S2").mkdir(parents=True)
    for name in ("S2A_MSIL2A_20170613T101031_87_48", "S2A_MSIL2A_20170613T101031_87_49"):
        (two / "S2" / name).mkdir()
    with pytest.raises(ConfigError, match="1 Sentinel-2 product.*at least three.*--splits"):
        bigearthnet_torchgeo_root(two / "root", two / "S2", None, None, "s2")


@pytest.mark.parametrize("sensor", ["s2", "s1"])
def test_bigearthnet_real_patches_through_torchgeo(shared_data, tmp_path, sensor):
    root = _bigearthnet_root(shared_data, tmp_path / "ben", sensor)
    key = f"bigearthnet_{sensor}"
    cfg = _cfg(tmp_path, {key: {"reader": "torchgeo", "dataset_class": "BigEarthNet",
                                "root": str(root)}}, image_px=120)
    folder = build.build_shards(cfg, show_progress=False)
    samples = _all(folder)
    src = shared_data / "bigearthnet-v1-examples" / f"BigEarthNet-{sensor.upper()}"
    assert len(samples) == len(list(src.iterdir()))
    for s in samples:
        m = s["json"]
        raw = json.loads((src / m["patch_name"] / f"{m['patch_name']}_labels_metadata.json")
                         .read_text())
        assert sorted(m["labels"]) == sorted(raw["labels"])  # real labels, 43 classes
        lon0, lat0, lon1, lat1 = m["footprint"]["bounds"]
        assert -11 < lon0 < lon1 < 32 and 35 < lat0 < lat1 < 71  # Europe
        assert 1100 < (lon1 - lon0) * 111e3 * np.cos(np.radians(lat0)) < 1300  # 1.2 km
        assert m["source"] == "torchgeo.BigEarthNet" and m["date"].startswith("201")
    img = samples[0]["img"]
    if sensor == "s2":
        assert img.dtype == np.uint16 and img.shape == (12, 120, 120)
    else:
        assert img.dtype == np.float32 and img.shape == (2, 120, 120)
        assert samples[0]["json"]["bands"] == ["VV", "VH"]
        assert (np.abs(img - np.round(img)) > 1e-3).mean() > 0.5  # dB not truncated
        assert img[0].mean() > img[1].mean()  # VV backscatter above VH
        with rasterio.open(src / samples[0]["json"]["patch_name"] /
                           f"{samples[0]['json']['patch_name']}_VV.tif") as f:
            assert np.allclose(img[0], f.read(1), atol=1e-5)
        s2_names = {p.name for p in (src.parent / "BigEarthNet-S2").iterdir()}
        assert sum(s["json"]["pair_id"] in s2_names for s in samples) == 6  # real S1/S2 pairs


def test_bigearthnet_official_splits_from_the_official_lists(shared_data, tmp_path):

    root = _bigearthnet_root(shared_data, tmp_path / "ben", "s2", splits=True)
    cfg = _cfg(tmp_path, {"bigearthnet_s2": {"reader": "torchgeo", "dataset_class": "BigEarthNet",
                                             "root": str(root), "splits": "official"}},
               samples_per_dataset=100, val_fraction=0.5, image_px=120)
    folder = build.build_shards(cfg, show_progress=False)
    lists = {split: set(bz2.decompress((shared_data / "bigearthnet-v1-examples" / "splits" /
                                        f"{split}.csv.bz2").read_bytes()).decode().split())
             for split in ("train", "val")}
    for split in ("train", "val"):
        names = {s["json"]["patch_name"] for s in shards.iter_shards(
            shards.shard_paths(folder, split))}
        assert names and names <= lists[split]  # each patch in the split its official list says


# --- EuroSAT, UC Merced, RESISC45 (fixture files in the real formats) ----------------------------

EUROSAT_DIR = ("ds", "images", "remote_sensing", "otherDatasets", "sentinel_2", "tif")


def _write_eurosat(root: Path, per_class: int = 4) -> dict:
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    names = {}
    for c, cls in enumerate(("AnnualCrop", "SeaLake")):
        d = root.joinpath(*EUROSAT_DIR, cls)
        d.mkdir(parents=True)
        for i in range(per_class):
            name = f"{cls}_{i + 1}.tif"
            img = rng.integers(500 + 2000 * c, 1500 + 2000 * c, (13, 64, 64)).astype(np.uint16)
            with rasterio.open(d / name, "w", driver="GTiff", width=64, height=64, count=13,
                               dtype="uint16", crs="EPSG:32633",
                               transform=from_origin(400000 + 640 * i, 5500000, 10, 10)) as f:
                f.write(img)
            names[name] = (cls, img)
    files = sorted(names)
    (root / "eurosat-train.txt").write_text("\n".join(files[::2]) + "\n")
    (root / "eurosat-val.txt").write_text("\n".join(files[1::2]) + "\n")
    (root / "eurosat-test.txt").write_text("")
    return names


def test_eurosat_13_bands_with_georeferenced_footprints(tmp_path):
    names = _write_eurosat(tmp_path / "eurosat")
    cfg = _cfg(tmp_path, {"eurosat": {"reader": "torchgeo", "dataset_class": "EuroSAT",
                                      "root": str(tmp_path / "eurosat"), "splits": "official"}})
    samples = _all(build.build_shards(cfg, show_progress=False))
    assert len(samples) == 8  # 4 official train files, 4 official val files
    for s in samples:
        cls, img = names[s["json"]["file"]]
        assert s["img"].dtype == np.uint16 and np.array_equal(s["img"], img)  # lossless
        assert s["json"]["labels"] == [{"AnnualCrop": "Annual crop",
                                        "SeaLake": "Sea or lake"}[cls]]
        assert s["json"]["bands"][-1] == "B8A" and len(s["json"]["bands"]) == 13
        lon0, lat0, lon1, lat1 = s["json"]["footprint"]["bounds"]
        assert 13 < lon0 < lon1 < 16 and 49 < lat0 < lat1 < 50  # UTM 33N reprojected
    splits = {s["json"]["file"]: s["json"]["split"] for s in samples}
    train_files = (tmp_path / "eurosat" / "eurosat-train.txt").read_text().split()
    assert all(splits[f] == "train" for f in train_files if f in splits)


def test_a_split_option_beside_official_splits_is_refused(tmp_path):
    """The fault round's re-run: options.split under splits: official was ignored silently."""
    _write_eurosat(tmp_path / "eurosat")
    cfg = _cfg(tmp_path, {"eurosat": {"reader": "torchgeo", "dataset_class": "EuroSAT",
                                      "root": str(tmp_path / "eurosat"), "splits": "official",
                                      "options": {"split": "val"}}})
    with pytest.raises(ConfigError, match="options.split='val' and splits: official contradict"):
        build.build_shards(cfg, show_progress=False)


def test_eurosat_partial_split_lists_are_reported_not_dropped_silently(tmp_path, caplog):
    names = _write_eurosat(tmp_path / "eurosat", per_class=12)  # 24 files on disk
    crop, sea = (sorted(f for f in names if f.startswith(c)) for c in ("AnnualCrop", "SeaLake"))
    root = tmp_path / "eurosat"
    # 6 files listed for train, 4 for val (torchgeo wants every class in every list)
    (root / "eurosat-train.txt").write_text("\n".join(crop[:3] + sea[:3]) + "\n")
    (root / "eurosat-val.txt").write_text("\n".join(crop[3:5] + sea[3:5]) + "\n")
    spec = {"reader": "torchgeo", "dataset_class": "EuroSAT", "root": str(root)}
    with caplog.at_level("WARNING", logger="geofm"):
        folder = build.build_shards(_cfg(tmp_path, {"eurosat": spec}), show_progress=False)
    m = shards.load_manifest(folder)
    report = m["source_reports"]["eurosat"]
    # a random split reads every list; the empty test list cannot be read and says so
    assert report["splits_read"] == ["train", "val"] and "test" in report["unreadable_lists"]
    assert "the test list cannot be read" in caplog.text
    assert (report["found"], report["listed"], report["used"]) == (24, 10, 10)
    assert report["not_used"] == {"not in the train/val list(s)": 14}
    assert sum(m["counts"]["eurosat"].values()) == 10
    capped = build.build_shards(_cfg(tmp_path, {"eurosat": spec}, samples_per_dataset=4,
                                     work_dir=str(tmp_path / "w2")), show_progress=False)
    assert shards.load_manifest(capped)["source_reports"]["eurosat"]["not_used"] == {
        "not in the train/val list(s)": 14, "over samples_per_dataset": 6}


def test_eurosat_rgb_keeps_three_bands(tmp_path):
    _write_eurosat(tmp_path / "eurosat")
    cfg = _cfg(tmp_path, {"eurosat_rgb": {"reader": "torchgeo", "dataset_class": "EuroSAT",
                                          "root": str(tmp_path / "eurosat")}})
    s = _all(build.build_shards(cfg, show_progress=False))[0]
    assert s["json"]["bands"] == ["B04", "B03", "B02"] and s["img"].shape == (3, 64, 64)


def _write_image_folder(base: Path, classes, per_class, size, ext, split_prefix, root):
    from PIL import Image

    rng = np.random.default_rng(1)
    files = []
    for c, cls in enumerate(classes):
        d = base / cls
        d.mkdir(parents=True)
        for i in range(per_class):
            name = f"{cls}{i:02d}.{ext}" if ext == "tif" else f"{cls}_{i + 1:03d}.{ext}"
            arr = rng.integers(40 * c, 40 * c + 60, (size, size, 3)).astype(np.uint8)
            Image.fromarray(arr).save(d / name)
            files.append(name)
    for split in ("train", "val", "test"):
        (root / f"{split_prefix}-{split}.txt").write_text("\n".join(files) + "\n")


def test_ucmerced_resized_to_image_px_and_labelled(tmp_path):
    root = tmp_path / "ucm"
    _write_image_folder(root / "UCMerced_LandUse" / "Images", ["baseballdiamond", "storagetanks"],
                        3, 256, "tif", "uc_merced", root)
    cfg = _cfg(tmp_path, {"ucmerced": {"reader": "torchgeo", "dataset_class": "UCMerced",
                                       "root": str(root)}})
    samples = _all(build.build_shards(cfg, show_progress=False))
    assert len(samples) == 6
    assert {s["json"]["labels"][0] for s in samples} == {"Baseball diamond", "Storage tanks"}
    s = samples[0]
    assert s["img"].dtype == np.uint8 and s["img"].shape == (3, 64, 64)
    assert s["json"]["native_px"] == [256, 256] and s["json"]["footprint"]["bounds"] is None
    assert "baseball diamond" in s["txt"].lower() or "storage tanks" in s["txt"].lower()


def test_resisc45_jpgs(tmp_path):
    root = tmp_path / "resisc"
    _write_image_folder(root / "NWPU-RESISC45", ["sea_ice", "thermal_power_station"], 2, 256,
                        "jpg", "resisc45", root)
    cfg = _cfg(tmp_path, {"resisc45": {"reader": "torchgeo", "dataset_class": "RESISC45",
                                       "root": str(root)}})
    samples = _all(build.build_shards(cfg, show_progress=False))
    assert {s["json"]["labels"][0] for s in samples} == {"Sea ice", "Thermal power station"}


def test_incomplete_root_names_the_expected_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = _cfg(tmp_path, {"eurosat": {"reader": "torchgeo", "dataset_class": "EuroSAT",
                                      "root": str(tmp_path / "empty")}})
    with pytest.raises(ConfigError, match=r"eurosat-\{train,val,test\}.txt.*download: true"):
        build.build_shards(cfg, show_progress=False)
    with pytest.raises(ConfigError, match="not supported"):
        build.build_shards(_cfg(tmp_path, {"eurosat": {"reader": "torchgeo",
                                                        "dataset_class": "SEN99",
                                                        "root": "x"}}), show_progress=False)
    assert not (cfg.path("shards", cfg.data_hash) / "manifest.json").exists()


def test_real_source_mixed_with_the_simulator(tmp_path):
    _write_eurosat(tmp_path / "eurosat")
    cfg = _cfg(tmp_path, {"eurosat": {"reader": "torchgeo", "dataset_class": "EuroSAT",
                                      "root": str(tmp_path / "eurosat")}},
               datasets=["eurosat", "bigearthnet_s2"], samples_per_dataset=8)
    m = shards.load_manifest(build.build_shards(cfg, show_progress=False))
    assert set(m["counts"]) == {"eurosat", "bigearthnet_s2"}
    assert sum(m["counts"]["bigearthnet_s2"].values()) == 8  # simulated
    assert m["band_stats"]["eurosat"]["bands"][-1] == "B8A"


# --- Karpathy-style image-text corpora ------------------------------------------------------------

def write_karpathy(root: Path, n: int = 8, sizes=(224, 256)) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(2)
    (root / "images").mkdir(parents=True)
    entries = []
    for i in range(n):
        size = sizes[i % len(sizes)]
        Image.fromarray(rng.integers(0, 255, (size, size, 3)).astype(np.uint8)).save(
            root / "images" / f"img_{i}.jpg")
        entries.append({"filename": f"img_{i}.jpg", "imgid": i,
                        "split": "train" if i % 4 else "test",
                        "sentences": [{"raw": f"caption {j} of image {i} .", "tokens": []}
                                      for j in range(5)]})
    (root / "dataset_rsicd.json").write_text(json.dumps({"images": entries, "dataset": "rsicd"}))
    return entries


def test_karpathy_corpus_keeps_every_caption_and_the_splits(tmp_path):
    entries = write_karpathy(tmp_path / "rsicd")
    spec = {"reader": "karpathy", "root": str(tmp_path / "rsicd"),
            "captions_file": "dataset_rsicd.json", "images_dir": "images", "splits": "official"}
    samples = _all(build.build_shards(_cfg(tmp_path, {"rsicd": spec}), show_progress=False))
    assert len(samples) == 8
    by_file = {e["filename"]: e for e in entries}
    for s in samples:
        e = by_file[s["json"]["file"]]
        assert s["json"]["captions"] == [x["raw"] for x in e["sentences"]]
        assert s["txt"] == e["sentences"][0]["raw"]
        assert s["json"]["split"] == ("train" if e["split"] == "train" else "val")
        assert s["img"].shape == (3, 64, 64)  # 224 and 256 px inputs, resized
        assert s["json"]["labels"] == []


def test_karpathy_bad_input_is_named(tmp_path):
    entries = write_karpathy(tmp_path / "c")
    spec = {"reader": "karpathy", "root": str(tmp_path / "c"),
            "captions_file": "dataset_rsicd.json", "images_dir": "images"}
    (tmp_path / "c" / "images" / "img_3.jpg").unlink()
    with pytest.raises(ConfigError, match="missing from images/.*img_3.jpg"):
        build.build_shards(_cfg(tmp_path, {"rsicd": spec}), show_progress=False)
    write_karpathy(tmp_path / "d")
    entries[0]["sentences"] = []
    (tmp_path / "d" / "dataset_rsicd.json").write_text(json.dumps({"images": entries}))
    with pytest.raises(ConfigError, match="no filename or no caption.*img_0.jpg"):
        build.build_shards(_cfg(tmp_path, {"rsicd": {**spec, "root": str(tmp_path / "d")}}),
                            show_progress=False)


# --- large GeoTIFF scenes with vector labels -------------------------------------------------

def _write_scene(root: Path) -> tuple[Path, Path]:
    """A 3-band UTM scene (blue, green, red order) with a nodata band on the right, and a
    GeoJSON in WGS84 with one polygon and two points."""
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp

    root.mkdir()
    tif = root / "scene.tif"
    img = np.random.default_rng(3).integers(900, 1100, (3, 96, 128)).astype(np.uint16)
    img[:, :, 96:] = 0  # outside the acquisition
    img[2, :48, :48] += 2000  # bright red in the top-left corner (where the polygon is)
    transform = from_origin(600000, 4000000, 10, 10)
    with rasterio.open(tif, "w", driver="GTiff", width=128, height=96, count=3, dtype="uint16",
                       crs="EPSG:32610", transform=transform, nodata=0) as f:
        f.write(img)
        f.descriptions = ("blue", "green", "red")

    def lonlat(x, y):
        lon, lat = warp("EPSG:32610", "EPSG:4326", [x], [y])
        return [lon[0], lat[0]]

    poly = [lonlat(600000, 4000000), lonlat(600480, 4000000), lonlat(600480, 3999520),
            lonlat(600000, 3999520), lonlat(600000, 4000000)]  # the top-left 48 x 48 px
    features = [
        {"type": "Feature", "properties": {"kind": "field"},
         "geometry": {"type": "Polygon", "coordinates": [poly]}},
        {"type": "Feature", "properties": {"kind": "well"},  # pixel (row 40, col 70)
         "geometry": {"type": "Point", "coordinates": lonlat(600705, 3999595)}},
        {"type": "Feature", "properties": {"kind": "well"},  # in the nodata band: never seen
         "geometry": {"type": "Point", "coordinates": lonlat(601105, 3999595)}},
    ]
    labels = root / "labels.geojson"
    labels.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return tif, labels


def test_geotiff_scene_with_polygons_and_points_any_crs(tmp_path):
    tif, labels = _write_scene(tmp_path / "scene")
    spec = {"reader": "geotiff", "root": str(tif),
            "options": {"labels": str(labels), "label_column": "kind", "stride_px": 16}}
    cfg = _cfg(tmp_path, {"my_scene": spec}, image_px=32, samples_per_dataset=1000,
               val_fraction=0.2)
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    assert m["vocabularies"]["my_scene"] == ["field", "well"]
    # origins every 16 px: 5 rows x 7 columns = 35; windows more than half in nodata skipped
    report = m["source_reports"]["my_scene"]
    assert report["patches"] + report["skipped_mostly_nodata"] == 35
    assert report["skipped_mostly_nodata"] == 5 * 1  # x0=96 is all nodata; x0=80 half -> kept
    assert (report["found"], report["used"]) == (35, 30)
    assert report["not_used"] == {"more than max nodata": 5}
    samples = {tuple(s["json"]["origin_px"]): s for s in _all(folder)}
    assert samples[(0, 0)]["json"]["labels"] == ["field"]  # polygon covers the patch
    assert samples[(32, 64)]["json"]["labels"] == ["well"]  # the point at row 40, col 70
    assert "field" in samples[(32, 32)]["json"]["labels"]  # 16 x 16 px of the polygon inside
    assert samples[(64, 64)]["json"]["labels"] == []
    assert samples[(0, 80)]["json"]["nodata_pixels"] == 32 * 16
    # the file's band descriptions, resolved to canonical names (the file's kept beside them)
    assert samples[(0, 0)]["json"]["bands"] == ["B", "G", "R"]
    assert [b["source_name"] for b in samples[(0, 0)]["json"]["band_info"]] == \
        ["blue", "green", "red"]
    lon0, lat0, lon1, lat1 = samples[(0, 0)]["json"]["footprint"]["bounds"]
    assert -122 < lon0 < lon1 < -120 and 36 < lat0 < lat1 < 37  # UTM 10N to WGS84

    idx, rule = inputs.input_bands(samples[(0, 0)]["json"]["bands"])
    assert idx == [2, 1, 0] and rule == "rgb"


def test_geotiff_patches_are_drawn_over_the_scene_and_split_by_blocks(tmp_path):
    """Issue 36, item 2: the reader took the first patches in raster order (a Landsat run got
    the top strip only) and split them patch by patch, validation patches beside training
    ones. Now a cap draws patches over the whole scene, and a random split keeps blocks of
    split_block_px whole."""
    tif, labels = _write_scene(tmp_path / "scene")
    spec = {"reader": "geotiff", "root": str(tif),
            "options": {"labels": str(labels), "label_column": "kind", "stride_px": 16,
                        "split_block_px": 48}}
    cfg = _cfg(tmp_path, {"my_scene": spec}, image_px=32, samples_per_dataset=12,
               val_fraction=0.3)
    folder = build.build_shards(cfg, show_progress=False)
    samples = _all(folder)
    rows = {s["json"]["origin_px"][0] for s in samples}
    cols = {s["json"]["origin_px"][1] for s in samples}
    assert len(samples) == 12 and len(rows) >= 3 and len(cols) >= 3  # not one strip
    sides: dict = {}
    for s in samples:
        y, x = s["json"]["origin_px"]
        key = s["json"]["split_key"]
        assert key == f"block {(y + 16) // 48},{(x + 16) // 48}"
        sides.setdefault(key, set()).add(s["json"]["split"])
    assert all(len(v) == 1 for v in sides.values()) and len(sides) >= 3
    assert {"train", "val"} == set().union(*sides.values())
    m = shards.load_manifest(folder)
    build.check_splits(m, cfg.dataset_keys)
    assert m["split_units"]["my_scene"]["on_both_sides"] == 0
    again = _all(build.build_shards(cfg, show_progress=False))  # the draw is seeded
    assert sorted(s["json"]["origin_px"] for s in again) == sorted(
        s["json"]["origin_px"] for s in samples)
    with pytest.raises(ConfigError, match="split_block_px=16 is smaller than image_px=32"):
        build.build_shards(_cfg(tmp_path, {"my_scene": {**spec, "options": {
            **spec["options"], "split_block_px": 16}}}, image_px=32), show_progress=False)


def test_landsat_patches_cover_the_scene_not_its_top_strip(shared_data, tmp_path):
    tif = shared_data / "landsat8-scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    spec = {"reader": "geotiff", "root": str(tif),
            "options": {"labels": str(tif.with_name(tif.stem + "_polygons.gpkg"))}}
    cfg = _cfg(tmp_path, {"landsat": spec}, image_px=128, samples_per_dataset=12,
               val_fraction=0.25)
    folder = build.build_shards(cfg, show_progress=False)
    samples = _all(folder)
    rows = [s["json"]["origin_px"][0] for s in samples]
    assert len(samples) == 12 and max(rows) - min(rows) > 1860 / 2  # top to bottom
    sides: dict = {}
    for s in samples:
        sides.setdefault(s["json"]["split_key"], set()).add(s["json"]["split"])
    assert all(len(v) == 1 for v in sides.values())
    build.check_splits(shards.load_manifest(folder), cfg.dataset_keys)


def test_geotiff_bad_inputs(tmp_path):
    tif, labels = _write_scene(tmp_path / "scene")
    bad = {"reader": "geotiff", "root": str(tif), "options": {"labels": str(labels)}}
    with pytest.raises(ConfigError, match="no column 'name'.*kind"):
        build.build_shards(_cfg(tmp_path, {"s": bad}, image_px=32), show_progress=False)
    with pytest.raises(ConfigError, match="smaller than image_px=128"):
        build.build_shards(_cfg(tmp_path, {"s": {**bad, "options": {
            "labels": str(labels), "label_column": "kind"}}}, image_px=128),
            show_progress=False)
    with pytest.raises(ConfigError, match="unknown dataset.*unless the reader is geotiff"):
        _cfg(tmp_path, {"my_scene": {"reader": "karpathy", "root": "x"}})


def test_landsat_scene_with_point_labels_through_sources(shared_data, tmp_path):
    tif = shared_data / "landsat8-scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    spec = {"reader": "geotiff", "root": str(tif),
            "options": {"labels": str(tif.with_name(tif.stem + "_points.gpkg")),
                        "band_names": ["blue", "green", "red"]}}
    cfg = _cfg(tmp_path, {"landsat": spec}, image_px=128, samples_per_dataset=1000,
               val_fraction=0.1)
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    samples = _all(folder)
    labelled = [s for s in samples if s["json"]["labels"]]
    # six labelled points: at most six patches carry a label, and every point's class shows up
    assert 1 <= len(labelled) <= 6
    assert {lab for s in labelled for lab in s["json"]["labels"]} <= set(m["vocabularies"]
                                                                          ["landsat"])
    assert m["vocabularies"]["landsat"] == ["crop", "developed", "tree", "water"]
    assert m["source_reports"]["landsat"]["crs"] == "EPSG:32621"


def test_karpathy_skip_counts_bad_entries(tmp_path):
    write_karpathy(tmp_path / "c")
    (tmp_path / "c" / "images" / "img_3.jpg").unlink()
    spec = {"reader": "karpathy", "root": str(tmp_path / "c"), "on_bad": "skip",
            "captions_file": "dataset_rsicd.json", "images_dir": "images"}
    m = shards.load_manifest(build.build_shards(_cfg(tmp_path, {"rsicd": spec}),
                                                 show_progress=False))
    assert sum(m["counts"]["rsicd"].values()) == 7
    assert m["source_reports"]["rsicd"]["skipped"] == {"no_caption": 0, "missing_image": 1}
    report = m["source_reports"]["rsicd"]
    assert (report["found"], report["used"]) == (8, 7)
    assert report["not_used"] == {"image file missing": 1}


# --- CSV / Parquet tables -------------------------------------------------------------------------

def _write_table(root: Path, fmt: str) -> Path:
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(4)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (80, 80, 3)).astype(np.uint8)).save(
            root / "img" / f"{i}.png")
        rows.append({"image": f"{i}.png", "captions": f"a field number {i}|crops in row {i}",
                     "labels": "crop|road" if i % 2 else "crop", "lon": 10.0 + i,
                     "lat": 45.0, "split": "train" if i < 4 else "val"})
    rows.append({"image": "6.png", "captions": None, "labels": None, "lon": None, "lat": None,
                 "split": "train"})  # neither caption nor label, and no file
    df = pd.DataFrame(rows)
    path = root / f"pairs.{fmt}"
    df.to_parquet(path) if fmt == "parquet" else df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_of_images_captions_labels_and_points(tmp_path, fmt):
    table = _write_table(tmp_path / "t", fmt)
    spec = {"reader": "table", "root": str(tmp_path / "t"), "captions_file": table.name,
            "images_dir": "img", "splits": "official"}
    with pytest.raises(ConfigError, match="1 bad rows.*row 6: no caption or label.*on_bad"):
        build.build_shards(_cfg(tmp_path, {"my_pairs": spec}), show_progress=False)
    cfg = _cfg(tmp_path, {"my_pairs": {**spec, "on_bad": "skip"}})
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    assert m["counts"]["my_pairs"] == {"train": 4, "val": 2}
    assert m["vocabularies"]["my_pairs"] == ["crop", "road"]
    assert m["source_reports"]["my_pairs"]["skipped"]["no_caption_or_label"] == 1
    report = m["source_reports"]["my_pairs"]
    assert (report["found"], report["used"], report["not_used"]) == (
        7, 6, {"no caption or label": 1})
    for s in _all(folder):
        i = int(s["json"]["file"].split(".")[0])
        assert s["json"]["captions"] == [f"a field number {i}", f"crops in row {i}"]
        assert s["json"]["labels"] == (["crop", "road"] if i % 2 else ["crop"])
        assert s["json"]["footprint"]["bounds"] == [10.0 + i, 45.0, 10.0 + i, 45.0]
        assert s["img"].shape == (3, 64, 64)


def test_nan_pixels_are_counted_and_kept_out_of_band_statistics(tmp_path):
    from rasterio.transform import from_origin

    root = tmp_path / "nan"
    root.mkdir()
    img = np.random.default_rng(5).normal(-12, 2, (2, 64, 64)).astype(np.float32)
    img[:, :8, :] = np.nan  # 8 rows of NaN in both bands
    with rasterio.open(root / "s1.tif", "w", driver="GTiff", width=64, height=64, count=2,
                       dtype="float32", crs="EPSG:32633",
                       transform=from_origin(400000, 5500000, 10, 10)) as f:
        f.write(img)
        f.descriptions = ("VV", "VH")
    spec = {"reader": "geotiff", "root": str(root / "s1.tif")}
    cfg = _cfg(tmp_path, {"sar_scene": spec}, image_px=32, samples_per_dataset=100,
               val_fraction=0.25)
    m = shards.load_manifest(build.build_shards(cfg, show_progress=False))
    st = m["band_stats"]["sar_scene"]
    assert st["nonfinite_values"] > 0 and np.isfinite(st["mean"]).all()
    assert abs(st["mean"][0] + 12) < 0.5  # NaN kept out of the mean

    stats = inputs.channel_stats({"sar_scene": st})["sar_scene"]
    x = inputs.to_model_input(img[:, :32, :32], ["VV", "VH"], stats)
    assert np.isfinite(x).all() and (x[:, :8] == 0).all()  # masked with the band mean


def test_undecodable_image_stops_or_is_skipped_and_counted(tmp_path):
    write_karpathy(tmp_path / "c")
    (tmp_path / "c" / "images" / "img_5.jpg").write_bytes(b"not a jpeg at all")
    spec = {"reader": "karpathy", "root": str(tmp_path / "c"),
            "captions_file": "dataset_rsicd.json", "images_dir": "images"}
    with pytest.raises(errors.ShardError, match="img_5.jpg cannot be read"):
        build.build_shards(_cfg(tmp_path, {"rsicd": spec}), show_progress=False)
    cfg = _cfg(tmp_path, {"rsicd": {**spec, "on_bad": "skip"}}, work_dir=str(tmp_path / "w2"))
    m = shards.load_manifest(build.build_shards(cfg, show_progress=False))
    assert m["unreadable_skipped"] == {"rsicd": 1}
    assert sum(m["counts"]["rsicd"].values()) == 7


def test_bigearthnet_s1_and_s2_stacked(shared_data, tmp_path):
    root = _bigearthnet_root(shared_data, tmp_path / "ben", "pairs")
    cfg = _cfg(tmp_path, {"bigearthnet_s1s2": {"reader": "torchgeo", "dataset_class": "BigEarthNet",
                                               "root": str(root)}}, image_px=120)
    samples = _all(build.build_shards(cfg, show_progress=False))
    assert len(samples) == 6  # the six real S1/S2 pairs
    s = samples[0]
    assert s["img"].dtype == np.float32 and s["img"].shape == (14, 120, 120)
    assert s["json"]["bands"][:3] == ["VV", "VH", "B01"]
    assert s["img"][0].mean() < 0 < s["img"][2:].mean()  # dB first, then reflectance
    src = shared_data / "bigearthnet-v1-examples" / "BigEarthNet-S2" / s["json"]["patch_name"]
    with rasterio.open(src / f"{s['json']['patch_name']}_B04.tif") as f:
        assert np.array_equal(s["img"][2 + 3], f.read(1).astype(np.float32))  # B04, exact
    with pytest.raises(ConfigError, match="do not fit the dataset key"):
        build.build_shards(_cfg(tmp_path, {"bigearthnet_s1s2": {
            "reader": "torchgeo", "dataset_class": "BigEarthNet", "root": str(root),
            "options": {"bands": "s2"}}}, image_px=120), show_progress=False)


def _write_sen12ms(root: Path, n: int = 4) -> None:
    """SEN12MS's layout with n patches of scene 1 in spring: georeferenced lc/s1/s2 GeoTIFFs."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(6)
    for season in ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter"):
        (root / season).mkdir(parents=True)
    names = []
    for p in range(n):
        for src, count, dtype in (("lc", 4, "uint16"), ("s1", 2, "float32"), ("s2", 13, "uint16")):
            d = root / "ROIs1158_spring" / f"{src}_1"
            d.mkdir(exist_ok=True)
            if src == "lc":
                data = np.zeros((4, 32, 32), np.uint16)
                data[0] = 12  # croplands
                data[0, :16, :] = 17 if p % 2 else 10  # water bodies or grasslands
            elif src == "s1":
                data = rng.normal(-14, 3, (2, 32, 32)).astype(np.float32)
            else:
                data = rng.integers(500, 3000, (13, 32, 32)).astype(np.uint16)
            with rasterio.open(d / f"ROIs1158_spring_{src}_1_p{p}.tif", "w", driver="GTiff",
                               width=32, height=32, count=count, dtype=dtype, crs="EPSG:32631",
                               transform=from_origin(500000 + 320 * p, 5000000, 10, 10)) as f:
                f.write(data)
        names.append(f"ROIs1158_spring_s2_1_p{p}.tif")
    (root / "train_list.txt").write_text("\n".join(names[:3]) + "\n")
    (root / "test_list.txt").write_text(names[3] + "\n")


def test_sen12ms_s1_s2_with_igbp_labels(tmp_path):
    _write_sen12ms(tmp_path / "sen12ms")
    spec = {"reader": "torchgeo", "dataset_class": "SEN12MS", "root": str(tmp_path / "sen12ms"),
            "splits": "official"}
    folder = build.build_shards(_cfg(tmp_path, {"sen12ms": spec}, image_px=32),
                                 show_progress=False)
    m = shards.load_manifest(folder)
    assert m["counts"]["sen12ms"] == {"train": 3, "val": 1}  # the official test list
    for s in _all(folder):
        p = int(s["json"]["file"].split("_p")[1].split(".")[0])
        assert s["json"]["labels"] == (["Croplands", "Water bodies"] if p % 2 else
                                       ["Grasslands", "Croplands"])
        assert s["img"].dtype == np.float32 and s["img"].shape == (15, 32, 32)
        assert s["json"]["bands"][:3] == ["VV", "VH", "B01"] and s["img"][0].mean() < 0
        lon0, lat0, lon1, lat1 = s["json"]["footprint"]["bounds"]
        assert 2.9 < lon0 < lon1 < 3.2 and 45 < lat0 < lat1 < 45.2  # UTM 31N
    from geofm_lib import ssl

    pairs = ssl.load_pairs(_cfg(tmp_path, {"sen12ms": spec}, image_px=32), "train")
    assert len(pairs) == 3 and pairs.sar_bands == ["VV", "VH"] and len(pairs.optical_bands) == 13
    assert all(d in labs for d, labs in zip(pairs.dominant, pairs.labels, strict=True))
    with pytest.raises(ConfigError, match="cannot download"):
        build.build_shards(_cfg(tmp_path, {"sen12ms": {**spec, "download": True}},
                                 image_px=32), show_progress=False)


def _write_bigearthnet_v2(root: Path) -> list[dict]:
    """reBEN's layout: S2/S1 tile folders, reference maps and metadata.parquet (19 classes)."""
    import pandas as pd
    from rasterio.transform import from_origin

    rng = np.random.default_rng(7)
    rows = []
    res = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
           "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20}
    for i, split in enumerate(("train", "train", "validation", "test")):
        tile = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
        patch = f"{tile}_26_{50 + i}"
        s1_tile = "S1A_IW_GRDH_1SDV_20170613T165043"
        s1_name = f"{s1_tile}_33UUP_61_{40 + i}"
        origin = (400000 + 1200 * i, 5400000)
        for band, m in res.items():
            d = root / "BigEarthNet-S2" / tile / patch
            d.mkdir(parents=True, exist_ok=True)
            px = 1200 // m
            with rasterio.open(d / f"{patch}_{band}.tif", "w", driver="GTiff", width=px,
                               height=px, count=1, dtype="uint16", crs="EPSG:32633",
                               transform=from_origin(*origin, m, m)) as f:
                f.write(rng.integers(100, 4000, (1, px, px)).astype(np.uint16))
        d = root / "BigEarthNet-S1" / s1_tile / s1_name
        d.mkdir(parents=True)
        for pol, mean in (("VV", -9.0), ("VH", -16.0)):
            with rasterio.open(d / f"{s1_name}_{pol}.tif", "w", driver="GTiff", width=120,
                               height=120, count=1, dtype="float32", crs="EPSG:32633",
                               transform=from_origin(*origin, 10, 10)) as f:
                f.write(rng.normal(mean, 2, (1, 120, 120)).astype(np.float32))
        d = root / "Reference_Maps" / tile / patch
        d.mkdir(parents=True)
        with rasterio.open(d / f"{patch}_reference_map.tif", "w", driver="GTiff", width=120,
                           height=120, count=1, dtype="uint16", crs="EPSG:32633",
                           transform=from_origin(*origin, 10, 10)) as f:
            f.write(np.full((1, 120, 120), 312, np.uint16))
        labels = ["Coniferous forest"] + (["Inland waters"] if i % 2 else [])
        rows.append({"patch_id": patch, "s1_name": s1_name, "split": split,
                     "labels": labels, "country": "Austria"})
    pd.DataFrame(rows).to_parquet(root / "metadata.parquet")
    return rows


@pytest.mark.parametrize("sensor", ["s2", "s1"])
def test_bigearthnet_v2_through_torchgeo(tmp_path, sensor):
    rows = _write_bigearthnet_v2(tmp_path / "reben")
    spec = {"reader": "torchgeo", "dataset_class": "BigEarthNetV2",
            "root": str(tmp_path / "reben"), "splits": "official"}
    key = f"bigearthnet_v2_{sensor}"
    folder = build.build_shards(_cfg(tmp_path, {key: spec}, image_px=120), show_progress=False)
    m = shards.load_manifest(folder)
    assert m["counts"][key] == {"train": 2, "val": 1}  # 'validation' rows; test left out
    by_patch = {r["patch_id"]: r for r in rows}
    for s in _all(folder):
        assert sorted(s["json"]["labels"]) == sorted(by_patch[s["json"]["patch_name"]]["labels"])
        lon0, lat0, lon1, lat1 = s["json"]["footprint"]["bounds"]
        assert 13 < lon0 < lon1 < 14 and 48 < lat0 < lat1 < 49
        if sensor == "s1":
            assert s["img"].dtype == np.float32 and s["json"]["bands"] == ["VV", "VH"]
            assert s["img"][0].mean() > s["img"][1].mean()  # VV above VH, not swapped
            assert (np.abs(s["img"] - np.round(s["img"])) > 1e-3).mean() > 0.5  # not truncated
        else:
            assert s["img"].dtype == np.uint16 and s["img"].shape == (12, 120, 120)


def test_bigearthnet_v2_rows_without_files_are_counted_and_maps_not_needed(tmp_path):
    import shutil

    rows = _write_bigearthnet_v2(tmp_path / "reben")
    root = tmp_path / "reben"
    gone = rows[1]["patch_id"]  # a partial download: one train row has no files
    shutil.rmtree(root / "BigEarthNet-S2" / "_".join(gone.split("_")[:-2]) / gone)
    shutil.rmtree(root / "Reference_Maps")  # never used: labels come from metadata.parquet
    spec = {"reader": "torchgeo", "dataset_class": "BigEarthNetV2", "root": str(root)}
    folder = build.build_shards(_cfg(tmp_path, {"bigearthnet_v2_s2": spec}, image_px=120),
                                show_progress=False)
    m = shards.load_manifest(folder)
    assert sum(m["counts"]["bigearthnet_v2_s2"].values()) == 3
    report = m["source_reports"]["bigearthnet_v2_s2"]
    assert (report["found"], report["listed"], report["used"]) == (3, 3, 3)
    assert report["not_used"] == {"listed, but no files on disk": 1}


def test_ssl4eo_locations_not_starting_at_zero_and_an_empty_root(tmp_path):
    _write_ssl4eo(tmp_path / "ssl4eo", n_locations=2, first=100000)  # 0100000, 0100001
    spec = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo")}
    folder = build.build_shards(_cfg(tmp_path, {"ssl4eo_s12_s2c": spec}), show_progress=False)
    assert {s["json"]["location"] for s in _all(folder)} == {"0100000", "0100001"}
    (tmp_path / "empty" / "s2c").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"found no complete dataset.*found under root: "
                                          r"s2c/ \(0 folders, 0 files\)"):
        build.build_shards(_cfg(tmp_path, {"ssl4eo_s12_s2c": {**spec, "root": str(
            tmp_path / "empty")}}, work_dir=str(tmp_path / "w2")), show_progress=False)


def _write_ssl4eo(root: Path, n_locations: int = 3, first: int = 0,
                  dates: dict | None = None) -> None:
    """SSL4EO-S12's layout for s1 and s2c: location folders with dated season folders
    (``dates``: per split, the acquisition days written at every location)."""
    from rasterio.transform import from_origin
    from torchgeo.datasets import SSL4EOS12

    rng = np.random.default_rng(8)
    dates = dates or {}
    for split, dtype, stamp in (("s2c", "uint16", "{d}T103021_{d}T103027_T32UMU"),
                                ("s2a", "uint16", "{d}T103021_{d}T103027_T32UMU"),
                                ("s1", "float32", "S1A_IW_GRDH_1SDV_{d}T052153_{d}T052218")):
        if split == "s2a" and "s2a" not in dates:
            continue  # written where asked for (L2A: 12 bands, no B10)
        for loc in range(first, first + n_locations):
            for d in dates.get(split, ("20200315", "20200620")):
                folder = root / split / f"{loc:07}" / stamp.format(d=d)
                folder.mkdir(parents=True)
                for band in SSL4EOS12.metadata[split]["bands"]:
                    data = (rng.normal(-12, 3, (1, 66, 66)) if split == "s1"
                            else rng.integers(100, 5000, (1, 66, 66))).astype(dtype)
                    with rasterio.open(folder / f"{band}.tif", "w", driver="GTiff", width=66,
                                       height=66, count=1, dtype=dtype, crs="EPSG:32632",
                                       transform=from_origin(500000 + 3000 * (loc - first),
                                                             5300000,
                                                             40, 40)) as f:
                        f.write(data)


def test_ssl4eo_s12_pairs_by_date_whatever_order_the_season_folders_are_listed_in(
        tmp_path, monkeypatch):
    """Issue 36, item 1: torchgeo draws a season per sensor from os.listdir, and the S1 and S2
    trees list their season folders in different orders, so a seeded draw paired June's S2
    with September's S1. Here the S1 folders are listed in reverse: every pair still matches
    the nearest dates, within pair_max_days, recorded per pair."""
    import os

    s2_days = ("20200315", "20200604", "20200903", "20201210")
    s1_days = ("20200317", "20200607", "20200906", "20201208")
    _write_ssl4eo(tmp_path / "ssl4eo", n_locations=6, dates={"s2c": s2_days, "s1": s1_days})
    listdir = os.listdir

    def listed(path):  # the two trees list their folders in opposite orders
        names = sorted(listdir(path))
        return names[::-1] if f"{os.sep}s1{os.sep}" in f"{os.fspath(path)}{os.sep}" else names

    monkeypatch.setattr(os, "listdir", listed)
    spec = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo")}
    cfg = _cfg(tmp_path, {"ssl4eo_s12_s2c": spec, "ssl4eo_s12_s1": spec}, image_px=64)
    folder = build.build_shards(cfg, show_progress=False)
    samples = _all(folder)
    by_place: dict = {}
    for s in samples:
        by_place.setdefault(s["json"]["location"], {})[s["json"]["dataset"]] = s["json"]
    assert len(by_place) == 6
    import datetime as dt

    drawn = set()
    for place in by_place.values():
        s2, s1 = place["ssl4eo_s12_s2c"], place["ssl4eo_s12_s1"]
        gap = abs((dt.date.fromisoformat(s2["date"]) - dt.date.fromisoformat(s1["date"])).days)
        assert gap <= 3 and s1["pair_gap_days"] == s2["pair_gap_days"] == gap
        assert s1["pair_id"] == s2["pair_id"] is not None and s2["pair_max_days"] == 15
        assert s2["season_folder"].startswith(s2["date"].replace("-", ""))
        drawn.add(s2["date"])
    assert len(drawn) > 1  # the season is drawn per place, not always the first
    report = shards.load_manifest(folder)["source_reports"]["ssl4eo_s12_s1"]["pairing"]
    assert report["paired"] == 6 and report["largest_gap_days"] <= 3


def test_ssl4eo_s12_a_place_without_a_close_s1_acquisition_is_read_unpaired(tmp_path):
    _write_ssl4eo(tmp_path / "ssl4eo", n_locations=3,
                  dates={"s2c": ("20200315", "20200604"), "s1": ("20200901", "20201201")})
    spec = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo"),
            "options": {"pair_max_days": 30}}
    cfg = _cfg(tmp_path, {"ssl4eo_s12_s2c": spec, "ssl4eo_s12_s1": spec}, image_px=64)
    folder = build.build_shards(cfg, show_progress=False)
    metas = [s["json"] for s in _all(folder)]
    assert all(m["pair_id"] is None and m["pair_gap_days"] > 30 for m in metas)
    report = shards.load_manifest(folder)["source_reports"]["ssl4eo_s12_s2c"]["pairing"]
    assert report["paired"] == 0
    assert report["unpaired: no acquisition of the other sensor within 30 days"] == 3
    with pytest.raises(ConfigError, match="pair_max_days='a week'"):
        build.build_shards(_cfg(tmp_path, {"ssl4eo_s12_s2c": {**spec, "options": {
            "pair_max_days": "a week"}}}, work_dir=str(tmp_path / "w2")), show_progress=False)


def test_ssl4eo_s12_locations_pair_s1_and_s2(tmp_path):
    _write_ssl4eo(tmp_path / "ssl4eo")
    spec = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo")}
    cfg = _cfg(tmp_path, {"ssl4eo_s12_s2c": spec, "ssl4eo_s12_s1": spec}, image_px=64)
    samples = _all(build.build_shards(cfg, show_progress=False))
    assert len(samples) == 6  # 3 locations on disk (torchgeo reports 251079), two sensors
    by = {}
    for s in samples:
        m = s["json"]
        by.setdefault(m["pair_id"], set()).add(m["dataset"])
        assert m["labels"] == [] and m["date"] in ("2020-03-15", "2020-06-20")
        lon0, lat0, lon1, lat1 = m["footprint"]["bounds"]
        assert 8.9 < lon0 < lon1 < 9.3 and 47.7 < lat0 < lat1 < 47.9
    assert all(v == {"ssl4eo_s12_s2c", "ssl4eo_s12_s1"} for v in by.values())  # S1/S2 pairs
    from geofm_lib import ssl

    train, val = (ssl.load_pairs(cfg, split) for split in ("train", "val"))
    assert (len(train), len(val)) == (2, 1)  # S1 and S2 of a location share their split
    assert train.incomplete == val.incomplete == 0 and train.sar_bands == ["VV", "VH"]
    assert len(train.optical_bands) == 13 and train.dominant == [None] * 2  # unlabelled
    capped = _all(build.build_shards(_cfg(tmp_path, {"ssl4eo_s12_s2c": spec,
                                                      "ssl4eo_s12_s1": spec}, image_px=64,
                                           samples_per_dataset=2, work_dir=str(tmp_path / "w3")),
                                      show_progress=False))
    ids = {d: sorted(s["json"]["pair_id"] for s in capped if s["json"]["dataset"] == d)
           for d in ("ssl4eo_s12_s2c", "ssl4eo_s12_s1")}
    assert len(ids["ssl4eo_s12_s1"]) == 2 and ids["ssl4eo_s12_s1"] == ids["ssl4eo_s12_s2c"]
    s1 = next(s for s in samples if s["json"]["dataset"] == "ssl4eo_s12_s1")
    assert s1["img"].dtype == np.float32 and s1["json"]["bands"] == ["VV", "VH"]
    again = _all(build.build_shards(_cfg(tmp_path, {"ssl4eo_s12_s2c": spec}, image_px=64,
                                          work_dir=str(tmp_path / "w2")), show_progress=False))
    first = {s["__key__"]: s["json"]["date"] for s in samples
             if s["json"]["dataset"] == "ssl4eo_s12_s2c"}
    assert {s["__key__"]: s["json"]["date"] for s in again} == first  # seasons drawn by seed


def test_a_misspelt_torchgeo_option_is_named_before_any_work(tmp_path):
    """Issue 36, item 5: a misspelt option ended in torchgeo's raw TypeError."""
    _write_ssl4eo(tmp_path / "ssl4eo", n_locations=2)
    spec = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo"),
            "options": {"seasonz": 1}}
    with pytest.raises(ConfigError, match=r"options: seasonz is not an argument of torchgeo's "
                                          r"SSL4EOS12 \(did you mean 'seasons'\?\); it takes "
                                          r"seasons"):
        build.build_shards(_cfg(tmp_path, {"ssl4eo_s12_s2c": spec}), show_progress=False)


def test_torchgeo_options_that_geofm_sets_itself_are_refused_with_where_to_set_them(tmp_path):
    """The issue 36 fault round's re-run: `options: {transforms: x}` ended in a raw TypeError,
    `options: {root: ...}` was answered "did you mean 'root'?", and `options: {split: val}` was
    ignored under `splits: official`."""
    _write_ssl4eo(tmp_path / "ssl4eo", n_locations=2)
    base = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo")}
    for opts, said in (({"transforms": "x"}, "transforms is not an option here: geofm reads raw"),
                       ({"root": "/etc"}, r"root is not an option here: set the folder as the "
                                          r"source's root"),
                       ({"download": True}, "download is not an option here: set download")):
        with pytest.raises(ConfigError, match=said):
            build.build_shards(_cfg(tmp_path, {"ssl4eo_s12_s2c": {**base, "options": opts}}),
                               show_progress=False)


def test_ssl4eo_l2a_can_be_chosen_and_l1c_beside_l2a_is_named(tmp_path):
    """Issue 36, item 5: SSL4EO-S12's s2a folder could not be chosen, and L1C (13 bands) beside
    BigEarthNet's L2A (12) failed with a PairError naming neither dataset nor B10."""
    from geofm_lib import ssl
    from geofm_lib.errors import PairError

    days = ("20200315", "20200620")
    _write_ssl4eo(tmp_path / "ssl4eo", n_locations=4, dates={"s2c": days, "s2a": days,
                                                             "s1": days})
    spec = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo")}
    cfg = _cfg(tmp_path, {"ssl4eo_s12_s2a": spec, "ssl4eo_s12_s1": spec}, image_px=64)
    build.build_shards(cfg, show_progress=False)
    train = ssl.load_pairs(cfg, "train")
    assert len(train.optical_bands) == 12 and "B10" not in train.optical_bands
    assert train.incomplete == 0 and train.sar_bands == ["VV", "VH"]
    mixed = load_config("ci", group="custom", image_px=64, samples_per_dataset=8,
                        val_fraction=0.25, work_dir=str(tmp_path / "w2"),
                        datasets=["ssl4eo_s12_s2c", "ssl4eo_s12_s1", "bigearthnet_s2",
                                  "bigearthnet_s1"],
                        sources={"ssl4eo_s12_s2c": spec, "ssl4eo_s12_s1": spec})
    build.build_shards(mixed, show_progress=False)
    with pytest.raises(PairError, match=r"optical images of bigearthnet_s2 and ssl4eo_s12_s2c "
                                        r"cannot share one input layout: ssl4eo_s12_s2c has "
                                        r"B10, which bigearthnet_s2 lacks.*ssl4eo_s12_s2a"):
        ssl.load_pairs(mixed, "train")

