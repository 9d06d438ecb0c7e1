import json
import tarfile

import numpy as np
import pytest

from geofm_lib import errors, paths
from geofm_lib.config import load_config
from geofm_lib.data import build, shards


@pytest.fixture
def cfg(tmp_path):
    return load_config("ci", work_dir=str(tmp_path / "work"), group="B", samples_per_dataset=10,
                       shard_size=4)


def test_build_reads_back_with_manifest(cfg):
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    assert m["data_hash"] == cfg.data_hash
    assert m["counts"]["seadronessee"] == {"train": 8, "val": 2}  # 25 % of 10 scenes
    assert m["duplicates_across_splits"] == 0
    samples = list(shards.iter_shards(shards.shard_paths(folder, "val")))
    assert len(samples) == 4
    s = samples[0]
    assert s["img"].dtype == np.uint8 and s["img"].shape == (3, 32, 32)
    assert s["json"]["split"] == "val" and s["json"]["gsd_m"] == 0.06
    assert set(s["json"]["labels"]) <= set(s["json"]["scene_labels"])
    assert s["txt"].endswith(".")
    st = m["band_stats"]["agriculture_vision"]
    assert st["bands"] == ["R", "G", "B"] and all(0 < v < 255 for v in st["mean"])
    shards.verify_shards(folder)
    train_keys = {s["__key__"] for s in shards.iter_shards(shards.shard_paths(folder, "train"))}
    assert not train_keys & {s["__key__"] for s in samples}


def test_validation_images_never_occur_in_training(cfg):
    """Disjoint pixel content between splits, recomputed from the decoded images and equal to
    what the sidecars (used by 04_zero_shot_eval's check) record."""
    import hashlib

    folder = build.build_shards(cfg, show_progress=False)

    def hashes(split):
        return {hashlib.sha256(s["img"].tobytes()).hexdigest()[:32]
                for s in shards.iter_shards(shards.shard_paths(folder, split))}

    train, val = hashes("train"), hashes("val")
    assert train and val and not train & val
    assert shards.content_hashes(shards.shard_paths(folder, "val")) == val
    assert shards.content_hashes(shards.shard_paths(folder, "train")) == train


def test_same_seed_gives_byte_identical_shards(tmp_path):
    a = build.build_shards(load_config("ci", group="A", work_dir=str(tmp_path / "a")), None,
                            False)
    b = build.build_shards(load_config("ci", group="A", work_dir=str(tmp_path / "b")), None,
                            False)
    files = sorted(p.name for p in a.glob("*.tar"))
    assert files and files == sorted(p.name for p in b.glob("*.tar"))
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    c = build.build_shards(load_config("ci", group="A", seed=1, work_dir=str(tmp_path / "c")),
                            None, False)
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()


def test_interrupted_build_resumes(cfg):
    folder = build.build_shards(cfg, show_progress=False)
    first = sorted(folder.glob("*.tar"))
    keep = first[0].stat().st_mtime_ns
    (folder / "manifest.json").unlink()  # as if the run died before the manifest
    first[1].unlink()
    (folder / (first[2].name + ".tmp")).write_bytes(b"half a shard")
    again = build.build_shards(cfg, show_progress=False)
    assert first[0].stat().st_mtime_ns == keep  # finished shards are kept, not rewritten
    assert first[1].is_file() and not list(folder.glob("*.tmp"))
    shards.verify_shards(again)


def test_foreign_files_refused(cfg):
    folder = paths.build_folder(cfg)
    folder.mkdir(parents=True)
    (folder / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(errors.ShardError, match="holiday.jpg"):
        build.build_shards(cfg, show_progress=False)


def test_truncated_shard_names_the_file(cfg):
    folder = build.build_shards(cfg, show_progress=False)
    path = shards.shard_paths(folder, "train")[0]
    path.write_bytes(path.read_bytes()[:15000])
    with pytest.raises(errors.ShardError, match=f"{path.name} has 15000 bytes.*truncated"):
        shards.verify_shards(folder)
    with pytest.raises(errors.ShardError, match=path.name):
        list(shards.iter_shards([path]))


def test_corrupt_member_is_named(cfg, tmp_path):
    folder = build.build_shards(cfg, show_progress=False)
    src = shards.shard_paths(folder, "val")[0]
    bad = tmp_path / "val-bad-000000.tar"
    with tarfile.open(src) as tin, tarfile.open(bad, "w") as tout:
        for info in tin.getmembers():
            data = tin.extractfile(info).read()
            if info.name.endswith((".img.png", ".img.npy.blosc")):
                data = b"not an array"
                info.size = len(data)
            import io
            tout.addfile(info, io.BytesIO(data))
    with pytest.raises(errors.ShardError, match=r"member .*\.img\.png cannot be decoded"):
        list(shards.iter_shards([bad]))


def test_bad_inputs(tmp_path):
    from geofm_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="too small for bigearthnet_s2.*image_px >= 12"):
        build.build_shards(load_config("ci", group="A", image_px=8, work_dir=str(tmp_path)),
                            None, False)
    assert not (tmp_path / "shards").exists()  # refused before writing anything
    with pytest.raises(errors.ShardError, match="no manifest"):
        shards.load_manifest(tmp_path)


def test_scenes_are_cut_into_patches_with_their_own_labels(tmp_path):
    cfg = load_config("ci", datasets=["xview"], group="C", image_px=32, scene_px=96,
                      samples_per_dataset=3, work_dir=str(tmp_path))
    folder = build.build_shards(cfg, show_progress=False)
    samples = list(shards.iter_shards(shards.shard_paths(folder, "train") +
                                      shards.shard_paths(folder, "val")))
    assert len(samples) == 3 * 9
    by_scene = {}
    for s in samples:
        by_scene.setdefault(s["json"]["index"], []).append(s)
    for patches in by_scene.values():
        assert len({p["json"]["split"] for p in patches}) == 1  # a scene never straddles splits
        union = set().union(*(p["json"]["labels"] for p in patches))
        assert union <= set(patches[0]["json"]["scene_labels"])
    lon0s = {tuple(p["json"]["footprint"]["bounds"]) for p in by_scene[0]}
    assert len(lon0s) == 9  # every patch has its own footprint
    json.dumps(samples[0]["json"])  # metadata stays JSON


def test_sentinel1_and_sentinel2_of_a_place_share_their_split():
    s1 = build.split_scenes(200, 0.1, 0, "bigearthnet_s1")
    s2 = build.split_scenes(200, 0.1, 0, "bigearthnet_s2")
    assert s1 == s2 and len(s1["val"]) == 20
    assert build.split_scenes(200, 0.1, 0, "xview") != s2  # unpaired datasets: their own draw


def test_every_sample_carries_the_scene_contract_and_a_reader_that_breaks_it_is_refused(cfg):
    from geofm_lib.data.sources import SCENE_KEYS, SimulatorSource

    folder = build.build_shards(cfg, show_progress=False)
    for s in shards.iter_shards(shards.shard_paths(folder, "train")[:2]):
        assert set(SCENE_KEYS) <= set(s["json"]), sorted(set(SCENE_KEYS) - set(s["json"]))

    class Forgetful(SimulatorSource):  # a reader that builds its metadata by hand, without date
        def scene(self, dataset, index):
            sc = super().scene(dataset, index)
            sc.meta = {k: v for k, v in sc.meta.items() if k != "date"}
            return sc

    other = cfg.model_copy(update={"seed": cfg.seed + 1})
    with pytest.raises(errors.DataError, match=r"lacks metadata \['date'\].*scene_meta"):
        build.build_shards(other, source=Forgetful(other), show_progress=False)
    assert not (paths.build_folder(other) / "manifest.json").exists()


def test_a_dataset_without_a_validation_sample_is_named_with_the_fix(tmp_path):
    cfg = load_config("ci", group="A", datasets=["bigearthnet_s2"], samples_per_dataset=1,
                      image_px=32, work_dir=str(tmp_path))
    manifest = shards.load_manifest(build.build_shards(cfg, show_progress=False))
    with pytest.raises(errors.DataError, match=r"bigearthnet_s2 has no val samples \(train 1, "
                                               r"val 0\): raise samples_per_dataset \(now 1\)"):
        build.check_splits(manifest, cfg.dataset_keys)
    with pytest.raises(errors.DataError, match="no samples of bigearthnet_s1"):
        build.check_splits(manifest, ["bigearthnet_s2", "bigearthnet_s1"])
    ok = load_config("ci", group="A", datasets=["bigearthnet_s2"], samples_per_dataset=4,
                     image_px=32, work_dir=str(tmp_path))
    build.check_splits(shards.load_manifest(build.build_shards(ok, show_progress=False)),
                       ok.dataset_keys)
