"""Band adapters: CLIP image towers that take 2 to 13 bands (issue 6, item 1)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from geofm_lib import training  # noqa: E402
from geofm_lib.catalog import SENSORS  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.data import build  # noqa: E402
from geofm_lib.errors import ConfigError  # noqa: E402
from geofm_lib.models import adapters, factory, inputs  # noqa: E402

S2_L2A = list(SENSORS["sentinel2_l2a"].band_names)  # 12 bands
S2_L1C = list(SENSORS["sentinel2_l1c"].band_names)  # 13 bands
BAND_SETS = {2: ["VV", "VH"], 3: ["R", "G", "B"], 4: ["B02", "B03", "B04", "B08"],
             12: S2_L2A, 13: S2_L1C}
ADAPTED = ("conv1x1", "first_layer", "wavelength")


def _one_step(model, tokenizer, n_bands, px=32, batch=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n_bands, px, px, generator=g)
    texts = tokenizer([f"scene {i}" for i in range(batch)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.visual.conv1.parameters()]
    out = model(x, texts)
    loss = open_clip.ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"])
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = list(model.visual.conv1.parameters())
    return loss, before, after


@pytest.mark.parametrize("adapter", ADAPTED)
@pytest.mark.parametrize("n_bands", sorted(BAND_SETS))
def test_each_adapter_takes_the_band_count_and_trains_a_step(adapter, n_bands):
    model_name = "RN50-tiny" if n_bands != 13 else "ViT-tiny"  # both tower kinds
    model, tok = factory.create_model(model_name, 32, seed=0, band_adapter=adapter,
                                     bands=BAND_SETS[n_bands])
    loss, before, after = _one_step(model, tok, n_bands)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), \
        "the adapter's weights did not move"
    model.eval()
    with torch.no_grad():
        emb = model.encode_image(torch.zeros(1, n_bands, 32, 32))
    assert emb.shape == (1, model.text_projection.shape[1])


def test_first_layer_copies_rgb_kernels_and_averages_the_rest():
    rgb, _ = factory.create_model("RN50-tiny", 32, seed=1)
    wide, _ = factory.create_model("RN50-tiny", 32, seed=1, band_adapter="first_layer",
                                  bands=S2_L2A)
    w0, w = rgb.visual.conv1.weight, wide.visual.conv1.weight
    assert w.shape[1] == 12
    for band, c in (("B04", 0), ("B03", 1), ("B02", 2)):
        assert torch.equal(w[:, S2_L2A.index(band)], w0[:, c])
    expected_other = w0.mean(dim=1) * 3 / 12
    assert torch.allclose(w[:, S2_L2A.index("B11")], expected_other)


def test_conv1x1_starts_as_the_identity_on_true_colour():
    rgb, _ = factory.create_model("RN50-tiny", 32, seed=2)
    mixed, _ = factory.create_model("RN50-tiny", 32, seed=2, band_adapter="conv1x1",
                                   bands=["B02", "B03", "B04", "B08"])
    x4 = torch.randn(2, 4, 32, 32)
    x3 = x4[:, [2, 1, 0]]  # B04, B03, B02 = R, G, B
    with torch.no_grad():
        a, b = rgb.visual.conv1(x3), mixed.visual.conv1(x4)
        # the NIR band adds a random 1x1 contribution; with it zeroed the outputs agree
        mixed.visual.conv1.mix.weight[:, 3] = 0
        c = mixed.visual.conv1(x4)
    assert torch.allclose(a, c, atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-3)


def test_wavelength_adapter_takes_another_sensor_with_the_same_weights():
    model, _ = factory.create_model("RN50-tiny", 32, seed=0, band_adapter="wavelength",
                                   bands=S2_L2A + ["VV", "VH"])
    conv = model.visual.conv1
    w_s2 = conv.weight()[:, S2_L2A.index("B04")].detach().clone()
    w_vv, w_vh = conv.weight()[:, 12].detach(), conv.weight()[:, 13].detach()
    assert not torch.allclose(w_vv, w_vh)  # polarisations differ, not only wavelengths
    conv.set_bands(["B04", "B03", "B02"])  # an RGB layout, no retraining
    model.eval()
    with torch.no_grad():
        assert model.encode_image(torch.randn(1, 3, 32, 32)).shape[0] == 1
    # the same band gets the same kernel up to the 3/N scale of the layout
    assert torch.allclose(conv.weight()[:, 0].detach() * 3 / 3, w_s2 * 14 / 3, atol=1e-6)


def test_errors_name_the_problem_and_the_fix():
    model, _ = factory.create_model("RN50-tiny", 32, seed=0, band_adapter="first_layer",
                                   bands=S2_L2A)
    model.eval()
    with pytest.raises(RuntimeError, match="expected input.*12 channels|12"):
        model.encode_image(torch.zeros(1, 3, 32, 32))
    mixed, _ = factory.create_model("RN50-tiny", 32, seed=0, band_adapter="conv1x1",
                                   bands=S2_L2A)
    mixed.eval()
    with pytest.raises(adapters.AdapterError, match="takes 12 bands, this batch has 3"):
        mixed.encode_image(torch.zeros(1, 3, 32, 32))
    with pytest.raises(adapters.AdapterError, match="did you mean 'first_layer'"):
        adapters.check_adapter("first-layer")
    with pytest.raises(ConfigError, match="band_adapter.*one of rgb, conv1x1"):
        load_config("ci", band_adapter="dofa")
    with pytest.raises(adapters.AdapterError, match="no known centre wavelength"):
        inputs.input_spec({"x": {"bands": ["thermal_9"], "mean": [0.0], "std": [1.0]}},
                          "wavelength")
    with pytest.raises(adapters.AdapterError, match="needs the model's input bands"):
        factory.create_model("RN50-tiny", 32, band_adapter="conv1x1")


def test_band_slots_place_each_product_in_the_union_layout():
    stats = {"s2": {"bands": S2_L2A, "mean": [1000.0] * 12, "std": [500.0] * 12},
             "s1": {"bands": ["VV", "VH"], "mean": [-10.0, -17.0], "std": [3.0, 4.0]}}
    spec, bands = inputs.input_spec(stats, "first_layer")
    assert bands == S2_L2A + ["VV", "VH"]
    img = np.stack([np.full((8, 8), -7.0), np.full((8, 8), -21.0)]).astype(np.float32)
    x = inputs.to_model_input(img, ["VV", "VH"], spec["s1"])
    assert x.shape == (14, 8, 8)
    assert np.allclose(x[12], 1.0) and np.allclose(x[13], -1.0) and not x[:12].any()
    back = inputs.stats_from_state(inputs.stats_to_state(spec))
    assert back["s1"].slots == (12, 13) and np.allclose(back["s2"].mean, 1000.0)


def test_group_a_trains_with_all_bands_and_reloads(tmp_path):
    cfg = load_config("ci", group="A", work_dir=str(tmp_path), batch_size=8,
                      band_adapter="first_layer", run_name="t")
    build.build_shards(cfg, show_progress=False)
    result = training.train(cfg, show_progress=False)
    assert np.isfinite(result.history[-1]["train_loss"])
    model, _, state = training.load_trained_model(cfg)
    assert state["model_bands"] == S2_L2A + ["VV", "VH"]
    assert model.visual.conv1.in_channels == 14
    rgb = load_config("ci", group="A", work_dir=str(tmp_path), batch_size=8, run_name="t")
    assert rgb.train_hash != cfg.train_hash  # the adapter is part of the run's identity


def test_band_slots_standardise_as_the_textbook_formula():
    """The fused band-adapter input equals (x - mean) / std per band, nodata (and NaN) at 0,
    slots left empty where the data lacks a band, for int16, uint16 (a nodata value it cannot
    hold) and float32 products."""
    rng = np.random.default_rng(0)
    mean, std = np.array([100.0, 50.0, 7.0], np.float32), np.array([10.0, 5.0, 2.0], np.float32)
    for dtype, nodata in ((np.int16, (-32768, None, 0)), (np.uint16, (-9999, 3, None)),
                          (np.float32, (-1.0, None, None))):
        img = rng.integers(1, 200, (4, 6, 6)).astype(dtype)
        img[0, 0, :2] = nodata[0] if dtype != np.uint16 else 0
        img[2, 1, 1] = 0
        if dtype == np.float32:
            img[1, 2, 2] = np.nan
        slots = inputs.BandSlots((0, 1, 3), (1, 2, 4), 5, mean, std, nodata, 4)
        x = inputs.to_model_input(img, ["a", "b", "c", "d"], slots)
        want = np.zeros((5, 6, 6), np.float32)
        for k, (src, slot) in enumerate(zip((0, 1, 3), (1, 2, 4), strict=True)):
            band = img[src].astype(np.float64)
            z = (band - mean[k]) / std[k]
            if nodata[k] is not None:
                z[band == nodata[k]] = 0.0
            want[slot] = np.nan_to_num(z, nan=0.0)
        np.testing.assert_allclose(x, want, atol=1e-5)
        assert x.dtype == np.float32 and not x[[0, 3]].any()
