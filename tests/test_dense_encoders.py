"""08's other encoders (issue 20): the CLIP image tower of 03 and torchgeo's ResNet weights, each
fed the input it was trained on, rebuilt from raw values; their random-init baselines."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from geofm_lib import errors, ssl, training  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.data.shards import iter_shards, load_manifest, shard_paths  # noqa: E402
from geofm_lib.encoders import dense  # noqa: E402
from geofm_lib.evaluation import segmenter  # noqa: E402
from geofm_lib.paths import build_folder  # noqa: E402


def _cfg(work, **kw):
    base = dict(group="A", work_dir=str(work), samples_per_dataset=24, run_name="dense")
    return load_config("ci", **{**base, **kw})


def _stored_optical(cfg, split="val"):
    """pair_id -> the optical image as the shard stores it."""
    folder = build_folder(cfg)
    return {s["json"]["pair_id"]: s["img"].astype(np.float32)
            for s in iter_shards(shard_paths(folder, split, "bigearthnet_s2"))}


def test_raw_optical_gives_back_the_stored_values(paired_shards):
    cfg = _cfg(paired_shards)
    pairs = ssl.load_pairs(cfg, "val")
    raw, sources = pairs.raw_optical(np.arange(len(pairs)))
    assert set(sources) == {"bigearthnet_s2"} and raw.shape == pairs.optical.shape
    stored = _stored_optical(cfg)
    st = load_manifest(build_folder(cfg))["band_stats"]["bigearthnet_s2"]
    nodata = [v for v in (st.get("nodata") or []) if v is not None]
    for i, pid in enumerate(pairs.pair_ids):
        want = stored[pid][[st["bands"].index(b) for b in pairs.optical_bands]]
        ok = ~np.isin(want, nodata) if nodata else np.ones_like(want, bool)
        np.testing.assert_allclose(raw[i][ok], want[ok], rtol=1e-4, atol=0.05)
    sub = pairs.subset([2, 0])
    np.testing.assert_array_equal(sub.raw_optical([0])[0], raw[[2]])


def test_names_are_checked_before_any_work():
    dense.check_name("clip")
    dense.check_name("torchgeo:resnet18:SENTINEL2_ALL_MOCO")
    with pytest.raises(errors.EncoderError, match="unknown segmentation encoder 'clipp'"):
        dense.check_name("clipp")
    with pytest.raises(errors.EncoderError, match="ResNets"):
        dense.check_name("torchgeo:vit_small_patch16_224:SENTINEL2_ALL_DINO")
    with pytest.raises(errors.EncoderError, match="name the weights"):
        dense.check_name("torchgeo:resnet18")
    with pytest.raises(errors.EncoderError, match="do not name their bands"):
        dense.check_name("torchgeo:resnet50:FMOW_RGB_GASSL")
    with pytest.raises(errors.EncoderError, match="no weights 'SENTINEL2_ALL_MOCA'"):
        dense.check_name("torchgeo:resnet18:SENTINEL2_ALL_MOCA")


def test_torchgeo_weights_take_raw_reflectance_in_their_band_order(paired_shards, monkeypatch):
    """With a stand-in state dict where torch.hub would download: 13 SSL4EO bands in the
    weights' order, B10 (absent from L2A) at 0, the stored values / 10000 (the weights'
    Normalize; their resize and crop left out), and the weights in the UNet's encoder."""
    import timm

    fake = timm.create_model("resnet18", in_chans=13, num_classes=0).state_dict()
    monkeypatch.setattr("torchvision.models._api.WeightsEnum.get_state_dict",
                        lambda *a, **k: fake)
    cfg = _cfg(paired_shards)
    pairs = ssl.load_pairs(cfg, "val")
    enc = dense.dense_encoder(cfg, "torchgeo:resnet18:SENTINEL2_ALL_MOCO", pairs, cfg.image_px)
    assert (enc.kind, enc.backbone, enc.channels) == ("resnet", "resnet18", 13)
    x = enc.inputs(pairs, [0, 1])
    assert x.shape == (2, 13, cfg.image_px, cfg.image_px)
    order = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
             "B11", "B12"]
    assert np.all(x[:, order.index("B10")] == 0)
    stored = _stored_optical(cfg)[pairs.pair_ids[1]]
    st = load_manifest(build_folder(cfg))["band_stats"]["bigearthnet_s2"]
    b04 = stored[st["bands"].index("B04")] / 10000
    assert np.abs(x[1, order.index("B04")] - b04).max() < 1e-4
    net = enc.segmenter("unet", 2, cfg.image_px, seed=0)
    assert torch.equal(net.encoder.model.conv1.weight, fake["conv1.weight"])
    base = enc.segmenter("unet", 2, cfg.image_px, seed=0, pretrained=False)
    assert not torch.equal(base.encoder.model.conv1.weight, fake["conv1.weight"])
    run = segmenter.fit_segmenter(net, x, np.zeros((2, 32, 32), np.int64), x,
                                  np.zeros((2, 32, 32), np.int64), ["a", "b"], epochs=1,
                                  batch_size=2, n_boot=5)
    assert run.predictions.shape == (2, 32, 32)
    with pytest.raises(errors.EncoderError, match="none in common"):
        dense._torchgeo("torchgeo:resnet18:SENTINEL2_ALL_MOCO",
                        {"s1": {"bands": ["VV", "VH"], "mean": [0, 0], "std": [1, 1]}}, 32)


def test_the_clip_tower_of_03_segments_with_the_input_it_was_trained_on(paired_shards):
    from geofm_lib.models.inputs import to_model_input
    from geofm_lib.training.checkpoint import stats_from_checkpoint

    cfg = _cfg(paired_shards, epochs=1, batch_size=8)
    pairs = ssl.load_pairs(cfg, "val")
    with pytest.raises(errors.CheckpointError):  # no 03 run yet: a clear error, no fallback
        dense.dense_encoder(cfg, "clip", pairs, cfg.image_px)
    training.train(cfg, show_progress=False)
    enc = dense.dense_encoder(cfg, "clip", pairs, cfg.image_px)
    _, _, state = training.load_trained_model(cfg)
    assert enc.kind == "tower" and enc.decoder_for("unet") == "upconv" and enc.channels == 3
    x = enc.inputs(pairs, np.arange(3))
    st = load_manifest(build_folder(cfg))["band_stats"]["bigearthnet_s2"]
    stored = _stored_optical(cfg)
    spec = stats_from_checkpoint(state)["bigearthnet_s2"]
    for i in range(3):
        want = to_model_input(stored[pairs.pair_ids[i]], st["bands"], spec)
        np.testing.assert_allclose(x[i], want, atol=2e-3)
    net = enc.segmenter("upconv", 2, cfg.image_px, seed=0)
    tower = {k: v for k, v in state["model"].items() if k.startswith("visual.")}
    got = net.encoder.visual.state_dict()
    assert all(torch.equal(got[k[len("visual."):]], v) for k, v in tower.items())
    base = enc.segmenter("upconv", 2, cfg.image_px, seed=0, pretrained=False)
    assert any(not torch.equal(base.encoder.visual.state_dict()[k[len("visual."):]], v)
               for k, v in tower.items())
    with torch.no_grad():
        assert net.eval()(torch.from_numpy(x)).shape == (3, 2, cfg.image_px, cfg.image_px)
    y = np.zeros((3, cfg.image_px, cfg.image_px), np.int64)
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    segmenter.fit_segmenter(net, x, y, x, y, ["a", "b"], protocol="frozen", epochs=1,
                            batch_size=3, n_boot=5)
    assert all(torch.equal(before[k], v) for k, v in net.encoder.state_dict().items())
