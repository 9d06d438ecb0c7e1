"""Real files from ../shared/data through the same sources, patching and shards."""

import numpy as np
import pytest

from geofm_lib.config import load_config
from geofm_lib.data import build, shards


def test_bigearthnet_folders_to_shards(shared_data, tmp_path):
    root = shared_data / "bigearthnet-v1-examples"
    cfg = load_config("ci", source="bigearthnet", source_path=str(root), group="A",
                      image_px=120, val_fraction=0.2, work_dir=str(tmp_path))
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    assert sum(m["counts"]["bigearthnet_s2"].values()) == 12  # ci preset: 12 of 14 patches
    assert sum(m["counts"]["bigearthnet_s1"].values()) == 9
    s2 = [s for s in shards.iter_shards(shards.shard_paths(folder, "train", "bigearthnet_s2"))]
    s = s2[0]
    assert s["img"].shape == (12, 120, 120) and s["img"].dtype == np.uint16
    assert s["json"]["labels"] and s["json"]["source"] == "bigearthnet"
    lon0, lat0, lon1, lat1 = s["json"]["footprint"]["bounds"]
    assert 34 < lat0 < lat1 < 72 and -11 < lon0 < lon1 < 35  # Europe, from the UTM box
    s1 = next(shards.iter_shards(shards.shard_paths(folder, "train", "bigearthnet_s1")))
    assert s1["img"].dtype == np.float32 and s1["img"].shape == (2, 120, 120)
    assert s1["json"]["pair_id"].startswith("S2")  # the twin Sentinel-2 patch
    # real reflectance: vegetation is brighter in B08 (NIR) than in B04 (red) on average
    mean = m["band_stats"]["bigearthnet_s2"]["mean"]
    assert mean[7] > mean[3]


def test_bigearthnet_needs_whole_patches(shared_data, tmp_path):
    from geofm_lib.errors import ConfigError
    cfg = load_config("ci", source="bigearthnet", group="A", image_px=64, work_dir=str(tmp_path),
                      source_path=str(shared_data / "bigearthnet-v1-examples"))
    with pytest.raises(ConfigError, match="image_px=120"):
        build.build_shards(cfg, show_progress=False)


def test_landsat_scene_patched_with_polygon_labels(shared_data, tmp_path):
    tif = shared_data / "landsat8-scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    cfg = load_config("ci", source="geotiff", source_path=str(tif), image_px=128,
                      samples_per_dataset=1000, val_fraction=0.1, shard_size=64,
                      work_dir=str(tmp_path))
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    n = sum(m["counts"]["geotiff"].values())
    assert 150 < n <= (2041 // 128) * (1860 // 128)  # mostly-nodata patches are skipped
    samples = list(shards.iter_shards(shards.shard_paths(folder, "train")))
    labelled = [s for s in samples if s["json"]["labels"]]
    assert labelled, "polygons must label some patches"
    names = {lab for s in labelled for lab in s["json"]["labels"]}
    assert names <= {"water", "crop", "tree", "developed"}
    s = labelled[0]
    assert s["img"].dtype == np.uint16 and s["img"].shape == (3, 128, 128)
    lon0, lat0, lon1, lat1 = s["json"]["footprint"]["bounds"]
    assert -62 < lon0 < lon1 < -54 and -32 < lat0 < lat1 < -20  # UTM 21S, southern Brazil
    assert m["duplicates_across_splits"] == 0
