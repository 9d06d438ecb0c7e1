"""The device feed (issue 40, item 2): patches cross to the device in their stored integer type
and are standardised, masked, turned and resized there. On the CPU the device feed's batches
are the host feed's, bit for bit: stored types mixed in one batch (uint8, uint16, float32 SAR
with NaN), nodata in single bands, SAR's VV-VH channel, band slots of a band adapter, a resize,
and the real training stream of the simulator's Sentinel-1/2 shards in both stream modes."""

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from geofm_lib import paths, training  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.data import build, shards  # noqa: E402
from geofm_lib.errors import ConfigError  # noqa: E402
from geofm_lib.models import factory, inputs  # noqa: E402
from geofm_lib.training import feed, stream  # noqa: E402

S2 = ["B02", "B03", "B04", "B08"]


def _band_stats():
    return {
        "s2": {"bands": S2, "mean": [900.0, 1100.0, 1300.0, 2500.0],
               "std": [300.0, 350.0, 420.0, 800.0], "nodata": [None, 0, None, 0]},
        "cam": {"bands": ["R", "G", "B"], "mean": [120.0, 110.0, 90.0],
                "std": [40.0, 38.0, 35.0], "nodata": [None, None, 255]},
        "s1": {"bands": ["VV", "VH"], "mean": [-12.0, -19.0], "std": [3.0, 3.5],
               "nodata": [-9999.0, None]},
    }


def _samples(rng_np):
    """Patches of the three products in their real stored types, with nodata and NaN."""
    s2 = rng_np.integers(1, 4000, (4, 12, 12)).astype(np.uint16)
    s2[1, :3, :3] = 0  # nodata in B03 only
    s2[3, 5:, 5:] = 0
    cam = rng_np.integers(0, 255, (3, 12, 12)).astype(np.uint8)
    cam[2, 0, :] = 255  # nodata in blue
    s1 = rng_np.normal(-15, 3, (2, 12, 12)).astype(np.float32)
    s1[0, 4, 4] = -9999.0
    s1[1, 7, 2] = np.nan  # a NaN pixel of a real product
    out = []
    for i in range(9):
        ds, img, bands = [("s2", s2, S2), ("cam", cam, ["R", "G", "B"]),
                          ("s1", s1, ["VV", "VH"])][i % 3]
        caps = ["one caption", "another caption"] if i % 2 else []
        out.append({"img": img, "txt": f"scene {i} of {ds}",
                    "json": {"dataset": ds, "bands": bands, "captions": caps}})
    return out


def _both(samples, stats, datasets, image_px, tok):
    """(host batch, device-feed batch on the CPU) of the same samples and generators."""
    host_coll = stream._collate(tok, image_px)
    host = host_coll([_host(s, stats, random.Random(i)) for i, s in enumerate(samples)])
    table = feed.FeedTable(stats, datasets)
    raw = feed.collate_raw(tok)([feed.prepare_raw(s, table, random.Random(i))
                                 for i, s in enumerate(samples)])
    return host, raw, feed.to_model(raw, table, "cpu", image_px, channels_last=False)


def _host(s, stats, rng):
    """The host path's sample preparation (``stream._prepare`` after decoding)."""
    m = s["json"]
    x = inputs.augment(inputs.to_model_input(s["img"], m["bands"], stats[m["dataset"]]), rng)
    text = s["txt"]
    if len(m.get("captions") or ()) > 1:
        text = m["captions"][rng.randrange(len(m["captions"]))]
    return x, text


@pytest.mark.parametrize("image_px", [12, 16])
def test_rgb_picks_device_feed_equals_host_feed_bit_for_bit(image_px):
    _, tok = factory.create_model("RN50-tiny", 32)
    stats, _ = inputs.input_spec(_band_stats())
    host, raw, dev = _both(_samples(np.random.default_rng(0)), stats, ["s2", "cam", "s1"],
                           image_px, tok)
    # each stored type crosses as itself: uint16 S2, uint8 camera, float32 SAR
    assert sorted(str(p.dtype) for p in raw.parts) == ["torch.float32", "torch.int16",
                                                        "torch.uint8"]
    assert torch.equal(host[1], dev[1])  # the same captions drawn
    assert dev[0].shape == host[0].shape == (9, 3, image_px, image_px)
    assert torch.equal(host[0], dev[0])


def test_integer_batches_cross_in_their_stored_type_and_match_the_host_feed():
    _, tok = factory.create_model("RN50-tiny", 32)
    bs = _band_stats()
    stats, _ = inputs.input_spec({"s2": bs["s2"], "cam": bs["cam"]})
    samples = [s for s in _samples(np.random.default_rng(1)) if s["json"]["dataset"] != "s1"]
    host, raw, dev = _both(samples, stats, ["s2", "cam"], 12, tok)
    # uint8 and uint16 products together: uint16 values (carried as int16 bits), 2 bytes a
    # value instead of float32's 4
    assert raw.unsigned16 == (True, False)
    assert [p.dtype for p in raw.parts] == [torch.int16, torch.uint8]
    assert raw.nbytes == host[0][0].numel() * (2 * len(raw.parts[0]) + len(raw.parts[1]))
    assert torch.equal(host[0], dev[0])
    s2_only = [s for s in samples if s["json"]["dataset"] == "s2"]
    host, raw, dev = _both(s2_only, stats, ["s2", "cam"], 12, tok)
    assert torch.equal(host[0], dev[0])
    cam_only = [s for s in samples if s["json"]["dataset"] == "cam"]
    host, raw, dev = _both(cam_only, stats, ["s2", "cam"], 12, tok)
    assert [p.dtype for p in raw.parts] == [torch.uint8] and torch.equal(host[0], dev[0])


def test_band_slots_device_feed_equals_host_feed_bit_for_bit():
    _, tok = factory.create_model("RN50-tiny", 32)
    stats, bands = inputs.input_spec(_band_stats(), "conv1x1")
    assert len(bands) == 9  # S2's 4 + R, G, B + VV, VH
    host, raw, dev = _both(_samples(np.random.default_rng(2)), stats, ["s2", "cam", "s1"], 12,
                           tok)
    assert dev[0].shape == (9, 9, 12, 12) and torch.equal(host[0], dev[0])


def test_every_turn_and_flip_matches_numpy():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.int16).view(2, 3, 5, 5)
    for rot in range(4):
        for flip in (False, True):
            got = feed._augment(x, torch.tensor([rot, rot]), torch.tensor([flip, flip]))
            want = np.rot90(x.numpy(), rot, axes=(2, 3))
            want = want[..., ::-1] if flip else want
            assert np.array_equal(got.numpy(), want), (rot, flip)


def test_feed_mode_and_refusals():
    assert feed.feed_mode("auto", "cuda:0") == "device"
    assert feed.feed_mode("auto", "cpu") == "host"
    with pytest.raises(ConfigError, match="choose one of auto, host, device"):
        feed.feed_mode("gpu", "cpu")
    old = {"s2": inputs.RGBInput(None, None, np.zeros(3, np.float32), np.ones(3, np.float32))}
    with pytest.raises(ConfigError, match="use feed: host"):
        feed.FeedTable(old, ["s2"])


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    """The simulator's BigEarthNet S1 and S2 shards (group A, ci preset)."""
    work = tmp_path_factory.mktemp("feed")
    cfg = load_config("ci", group="A", work_dir=str(work), batch_size=8)
    build.build_shards(cfg, show_progress=False)
    return cfg


@pytest.mark.parametrize("adapter,mode", [("rgb", "exact"), ("conv1x1", "sharded")])
def test_the_training_stream_feeds_the_device_what_it_fed_the_host(sentinel, adapter, mode):
    cfg = sentinel
    folder = paths.build_folder(cfg)
    manifest = shards.load_manifest(folder)
    stats, _ = inputs.input_spec(manifest.band_stats_for(cfg.dataset_keys), adapter)
    _, tok = factory.create_model("RN50-tiny", 32)
    args = (folder, manifest, list(cfg.dataset_keys), stats, tok, 8, 48, cfg.seed, 0)
    host = training.train_stream(*args, mode=mode)
    dev = training.train_stream(*args, mode=mode, device="cpu", channels_last=False)
    assert isinstance(dev, feed.Prefetcher)
    for _ in range(3):
        (hx, ht), (dx, dt) = next(host), next(dev)
        assert torch.equal(ht, dt) and torch.equal(hx, dx)
    # stored 32 px patches in their own types: S2 uint16 (2 bytes), S1 float32 (dB, 4 bytes)
    sizes = dev.samples_by_itemsize
    assert sorted(sizes) == [2, 4] and sum(sizes.values()) == 3 * 8
    assert dev.bytes == (2 * sizes[2] + 4 * sizes[4]) * hx.shape[1] * 32 * 32


def test_training_on_the_device_feed_is_training_on_the_host_feed(sentinel, tmp_path):
    """``feed: device`` on the CPU: the same step losses and weights as ``feed: host``, bit for
    bit (Sentinel-1 float32 and Sentinel-2 uint16 patches in every batch)."""
    import shutil

    results = []
    for mode in ("host", "device"):
        cfg = sentinel.model_copy(update={"work_dir": str(tmp_path / mode), "feed": mode,
                                          "run_name": "t"})
        shutil.copytree(paths.build_folder(sentinel), paths.build_folder(cfg))
        results.append(training.train(cfg, show_progress=False))
    host, dev = results
    assert host.step_losses == dev.step_losses and len(host.step_losses) >= 2
    a = torch.load(host.checkpoint, weights_only=True)["model"]
    b = torch.load(dev.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
