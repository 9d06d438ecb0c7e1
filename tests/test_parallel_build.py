"""The shard build in parallel (processes, Dask) and the compact lossless image members."""

import hashlib
import tarfile

import numpy as np
import pytest

from geofm_lib import errors, paths
from geofm_lib.config import load_config
from geofm_lib.data import build, shards
from geofm_lib.data.sources import SimulatorSource


def _digests(folder):
    """sha256 of every file a build leaves (shards, sidecars, manifest), by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != shards.VERIFY_CACHE}


def _cfg(tmp_path, name, **kw):
    return load_config("ci", work_dir=str(tmp_path / name), group="B", samples_per_dataset=10,
                       shard_size=4, **kw)


def test_one_two_processes_and_dask_write_byte_identical_builds_that_resume(tmp_path):
    one = _digests(build.build_shards(_cfg(tmp_path, "one", data_workers=1), None, False))
    assert sum(n.endswith(".tar") for n in one) == 6
    cfg2 = _cfg(tmp_path, "two", data_workers=2)
    folder = build.build_shards(cfg2, None, False)
    assert _digests(folder) == one
    # interrupted: no manifest, a shard gone, half a shard left; the parallel build resumes
    tars = sorted(folder.glob("*.tar"))
    kept = tars[0].stat().st_mtime_ns
    (folder / "manifest.json").unlink()
    tars[3].unlink()
    (folder / (tars[4].name + ".tmp")).write_bytes(b"half")
    build.build_shards(cfg2, None, False)
    assert tars[0].stat().st_mtime_ns == kept and _digests(folder) == one
    dask = build.build_shards(_cfg(tmp_path, "dask", data_workers=2, data_engine="dask"),
                              None, False)
    assert _digests(dask) == one


class _Unreadable(SimulatorSource):
    """A reader whose fifth scene of SeaDronesSee cannot be decoded."""

    def scene(self, dataset, index):
        if dataset == "seadronessee" and index == 4:
            raise errors.DataError("seadronessee scene 4: bad file")
        return super().scene(dataset, index)


def test_a_worker_error_reaches_the_caller_as_itself_and_written_shards_stay(tmp_path):
    cfg = _cfg(tmp_path, "w", data_workers=2)
    with pytest.raises(errors.DataError, match="seadronessee scene 4: bad file"):
        build.build_shards(cfg, source=_Unreadable(cfg), show_progress=False)
    folder = paths.build_folder(cfg)
    assert not (folder / "manifest.json").exists() and not list(folder.glob("*.tmp"))


def test_workers_default_to_the_cores_and_never_exceed_the_shards():
    from geofm_lib.data.parallel import resolve_workers

    cfg = load_config("demo")
    assert cfg.data_workers == 0 and resolve_workers(cfg, 1000) >= 1
    assert resolve_workers(cfg.model_copy(update={"data_workers": 8}), 3) == 3
    other = cfg.model_copy(update={"data_workers": 5, "data_engine": "dask"})
    assert other.data_hash == cfg.data_hash  # the same shards: the same build folder


@pytest.mark.parametrize("array", [
    np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8),                  # RGB: PNG
    np.arange(64, dtype=np.uint8).reshape(1, 8, 8),                        # one band: PNG
    np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8),                 # RGB+NIR: Blosc
    np.random.default_rng(0).integers(0, 65535, (12, 8, 8), dtype=np.uint16),
    np.random.default_rng(1).integers(-32768, 32767, (2, 8, 8), dtype=np.int16),
    np.where(np.eye(8, dtype=bool)[None], np.nan,
             np.random.default_rng(2).normal(-15, 5, (2, 8, 8))).astype(np.float32),
    np.array([[[-0.0, 1e-40, np.inf, -3.4e38]]], dtype=np.float32),      # subnormal, inf
    np.random.default_rng(3).normal(0, 1, (3, 5, 7)),                      # float64, odd size
])
def test_images_are_stored_compressed_and_decode_exactly(array):
    member, data = shards.encode_image(array)
    assert member == ("img.png" if array.dtype == np.uint8 and array.shape[0] in (1, 3)
                      else "img.npy.blosc")
    back = shards.decode_image(member, data)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # bit for bit (NaN payloads, -0.0 included)


def test_reflectances_take_less_room_than_raw():
    rng = np.random.default_rng(0)  # 12-bit-like reflectances: smooth field plus sensor noise
    field = np.linspace(300, 3000, 64 * 64).reshape(1, 64, 64) * rng.uniform(0.5, 1.5, (12, 1, 1))
    image = (field + rng.normal(0, 20, (12, 64, 64))).astype(np.uint16)
    member, data = shards.encode_image(image)
    assert member == "img.npy.blosc" and len(data) < 0.6 * image.nbytes


def test_shards_hold_compressed_members_without_pax_headers(tmp_path):
    folder = build.build_shards(load_config("ci", group="A", work_dir=str(tmp_path)), None,
                                False)
    names = set()
    for tar in folder.glob("train-*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                names.add(m.name.split(".", 1)[1])
                assert not m.pax_headers, m.name  # 1 KB per member saved
    # S1 float32 and S2 uint16 images; the dense labels as one-band PNGs (data.masks)
    assert names == {"img.npy.blosc", "mask.png", "trees.png", "txt", "json"}
    s = next(shards.iter_shards(shards.shard_paths(folder, "train", "bigearthnet_s2")))
    assert s["img"].dtype == np.uint16 and s["img"].shape[0] == 12


def test_builds_of_the_older_format_still_read(tmp_path):
    import webdataset as wds

    path = tmp_path / "train-old-000000.tar"
    img = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    with open(path, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0.0) as tw:
        tw.write({"__key__": "a", "img.npy": shards.encode_npy(img), "txt": b"t",
                  "json": b'{"dataset": "x", "bands": ["VV", "VH"], "labels": [], '
                          b'"split": "train"}'})
    (s,) = shards.iter_shards([path])
    assert np.array_equal(s["img"], img)
    raw = {"__key__": "b", "__url__": str(path), "txt": b"t", "json": b"{}"}
    with pytest.raises(errors.ShardError, match=r"no image \(img.png, img.npy.blosc or img.npy\)"):
        shards.decode_sample(raw)


def test_a_script_without_a_main_guard_builds_in_parallel(tmp_path):
    """Workers do not re-import the caller's script, so one without ``if __name__ ==
    "__main__":`` builds once (not once per worker) and finishes."""
    import subprocess
    import sys

    script = tmp_path / "build.py"
    script.write_text(
        "from geofm_lib.config import load_config\n"
        "from geofm_lib.data.build import build_shards\n"
        f"cfg = load_config('ci', work_dir={str(tmp_path / 'w')!r}, group='B',\n"
        "                  samples_per_dataset=10, shard_size=4, data_workers=2)\n"
        "print('built', build_shards(cfg, show_progress=False).name)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("built ") == 1


def test_paper_mix_shares_the_total_as_seed_000s_compiled_set(tmp_path):
    from geofm_lib.catalog import paper_patches

    cfg = load_config("ci", group="all", dataset_mix="paper", samples_per_dataset=100,
                      work_dir=str(tmp_path))
    counts = {ds: cfg.samples_for(ds) for ds in cfg.dataset_keys}
    assert abs(sum(counts.values()) - 800) <= 8
    weights = {ds: paper_patches(ds) for ds in counts}
    total = sum(weights.values())
    assert total == 3_114_295  # whole 512-px patches of Table 1's images
    for ds, n in counts.items():
        assert n == max(round(800 * weights[ds] / total), 2)
    assert counts["houston_harvey"] > counts["qfabric"] > counts["bigearthnet_s2"] > \
        counts["xview"] > counts["seadronessee"] > counts["mafat"] > counts["agriculture_vision"]
    balanced = load_config("ci", group="all", samples_per_dataset=100)
    assert balanced.samples_for("mafat") == 100 and balanced.data_hash != cfg.data_hash
    small = load_config("ci", group="all", dataset_mix="paper", samples_per_dataset=12,
                        image_px=32, work_dir=str(tmp_path / "w"))
    manifest = shards.load_manifest(build.build_shards(small, None, False))
    for ds, c in manifest["counts"].items():
        assert c["train"] + c["val"] == small.samples_for(ds), ds
    assert manifest["params"]["dataset_mix"] == "paper"
    with pytest.raises(errors.ConfigError, match="eurosat is not one of them"):
        load_config("ci", group="custom", datasets=["xview", "eurosat"], dataset_mix="paper",
                    sources={"eurosat": {"reader": "torchgeo", "dataset_class": "EuroSAT",
                                         "root": str(tmp_path)}})
