"""Seed 001's hyperspectral SSL: the spectral stem, single-sensor places for notebook 07, the
three evaluation protocols, and a HySpecNet-11k-layout fixture pretrained on and evaluated on
EnMAP-CORINE (seed 001's pipeline: SpectralEarth pretraining, EnMAP-CORINE downstream)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from geofm_lib.catalog import ENMAP_BANDS, water_vapour_bands
from geofm_lib.errors import AdapterError, PairError
from geofm_lib.models.spectral import GRID_NM, SpectralStem, find_stem, resampling

WV = set(water_vapour_bands())
ENMAP_202 = [b.name for b in ENMAP_BANDS if b.name not in WV]
S2 = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


def test_enmap_spectra_land_on_the_grid_with_the_water_vapour_gaps_left_empty():
    left, right, weight, valid = resampling(ENMAP_202)
    assert len(ENMAP_202) == 202
    gap = (GRID_NM > 1360) & (GRID_NM < 1440)  # EnMAP's 1.4 um water-vapour bands left out
    assert not valid[gap].any()
    assert valid[(GRID_NM >= 420) & (GRID_NM <= 1280)].all()  # 1295 nm: the first gap band
    # a grid point between two bands is their linear interpolation
    stem = SpectralStem(ENMAP_202)
    x = torch.arange(202, dtype=torch.float32).view(1, 202, 1, 1)
    spec = stem.on_grid(x)[0, :, 0]
    nm = np.array([float(b[:-2]) for b in ENMAP_202])
    g = int(np.flatnonzero(GRID_NM == 700)[0])
    want = np.interp(700, nm, np.arange(202))
    assert float(spec[g]) == pytest.approx(want, abs=1e-4)
    assert float(stem.on_grid(x)[0, g, 1]) == 1.0 and float(stem.on_grid(x)[0, 140, 1]) == 0.0


def test_the_stem_places_bands_by_wavelength_not_by_position():
    torch.manual_seed(0)
    stem = SpectralStem(ENMAP_202).eval()
    x = torch.randn(2, 202, 4, 4)
    perm = torch.randperm(202)
    shuffled = SpectralStem([ENMAP_202[i] for i in perm]).eval()
    shuffled.load_state_dict(stem.state_dict())
    assert torch.allclose(stem(x), shuffled(x[:, perm]), atol=1e-5)
    # Sentinel-2's ten bands: a sparse spectrum, points near each band only
    _, _, _, valid = resampling(S2)
    assert 10 <= valid.sum() <= 20
    out = SpectralStem(S2)(torch.randn(1, 10, 8, 8))
    assert out.shape == (1, 32, 8, 8)


@pytest.mark.parametrize("bands, match", [
    (["B04", "VV"], "SAR polarisations"),
    (["B04", "thermal_mystery"], "no known centre wavelength"),
])
def test_the_stem_refuses_bands_it_cannot_place(bands, match):
    with pytest.raises(AdapterError, match=match):
        SpectralStem(bands)
    with pytest.raises(AdapterError, match="takes 1 bands"):
        SpectralStem(["B04"])(torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny_patch16"])
def test_ssl_backbones_take_hyperspectral_input_through_the_stem(backbone):
    from geofm_lib.models.backbones import make_backbone

    net = make_backbone(backbone, ENMAP_202, "spectral", 0, 32)
    stem = find_stem(net)
    assert stem is not None and stem.bands == ENMAP_202
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 202, 32, 32)).ndim == 2
    assert find_stem(make_backbone(backbone, ENMAP_202, "first_layer", 0, 32)) is None


def test_adapter_fine_tuning_changes_the_stem_and_nothing_else():
    from geofm_lib.evaluation.finetune import fit_head
    from geofm_lib.models.backbones import make_backbone

    net = make_backbone("resnet18", S2, "spectral", 0)
    stem = find_stem(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, len(S2), 16, 16)).astype(np.float32)
    y = (rng.random((16, 3)) < 0.5).astype(np.float32)
    fit_head(net, x, y, epochs=2, lr=1e-2, seed=0, batch=8, train_only=[stem])
    stem_keys = {f"conv1.0.{k}" for k in stem.state_dict()}
    after = net.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and changed <= stem_keys  # BatchNorm statistics of the ResNet too stay
    assert any(k.startswith("conv1.0.convs") for k in changed)


# --- single-sensor places and the protocols, on simulated EnMAP-CORINE ---------------------

@pytest.fixture(scope="module")
def enmap_cfg(tmp_path_factory):
    pytest.importorskip("webdataset")
    from geofm_lib.config import load_config
    from geofm_lib.data.build import build_shards

    work = tmp_path_factory.mktemp("enmap")
    cfg = load_config("ci", experiment="group_H", work_dir=str(work), samples_per_dataset=40,
                      image_px=16, labelled_samples=24, ssl_batch_size=8, ssl_epochs=1)
    build_shards(cfg, show_progress=False)
    return cfg


def test_hyperspectral_images_are_single_sensor_places(enmap_cfg):
    from geofm_lib import ssl

    train = ssl.load_pairs(enmap_cfg, "train")
    assert train.single_sensor and train.input_names == ("s2",)
    assert train.bands == ENMAP_202  # the water-vapour bands (nodata everywhere) left out
    assert train.sar.shape[1] == 0 and train.sensor_name == "enmap_corine"
    assert np.isfinite(train.optical).all()
    views = ssl.PairViews(train, "augment", 0)
    assert len(views) == len(train)
    item = views[(0, 3)]
    assert item["image"].shape[0] == 2 * 202 and item["sensor_q"] == "s2"
    with pytest.raises(PairError, match="use ssl_mode=augment"):
        ssl.PairViews(train, "sensor", 0)
    with pytest.raises(PairError, match="no 's1/s2' input"):
        train.inputs([0], "s1/s2")


def test_the_three_protocols_run_from_pretrained_and_random_weights(enmap_cfg):
    from geofm_lib import ssl

    res = ssl.pretrain(enmap_cfg, show_progress=False)
    rows = ssl.protocol_rows(enmap_cfg, {"MoCo-v2": res.encoder_path}, [8, 24], steps=2,
                             n_boot=20, show_progress=False)
    assert len(rows) == 3 * 2 * 2  # protocols x inits x sizes
    by = {(r["protocol"], r["init"], r["n_labelled"]): r for r in rows}
    stem = by[("fine-tuned spectral adapter", "MoCo-v2", 24)]["trainable"]
    full = by[("full fine-tuning", "MoCo-v2", 24)]["trainable"]
    assert by[("frozen encoder", "MoCo-v2", 24)]["trainable"] == 0 and 0 < stem < full / 100
    for r in rows:
        assert r["metric"] == "F1 micro" and r["ci"][0] <= r["score"] <= r["ci"][1]
        assert ("minus_random_init" in r) == (r["init"] == "MoCo-v2")
        assert r["recipe"] == (None if r["protocol"] == "frozen encoder" else "lp-ft")
        if r["protocol"] != "frozen encoder":  # convergence: from the probe's start to the end
            steps, f1 = zip(*r["curve"])
            assert steps[0] == 0 and steps[-1] >= 2 and f1[-1] == round(r["score"], 2)
    for init in ("MoCo-v2", "random init"):  # LP-FT's adapter fit starts at the frozen row
        frozen = by[("frozen encoder", init, 24)]["score"]
        start = by[("fine-tuned spectral adapter", init, 24)]["curve"][0][1]
        assert abs(start - frozen) < 1.0, (init, start, frozen)
    table = ssl.protocol_table(rows)
    assert len(table) == 6 and "24 labels" in table.columns[0]
    with pytest.raises(Exception, match="unknown protocol"):
        ssl.protocol_rows(enmap_cfg, {"MoCo-v2": res.encoder_path}, [8], ["linear"])
    with pytest.raises(Exception, match="choose from lp-ft, new-head"):
        ssl.protocol_rows(enmap_cfg, {"MoCo-v2": res.encoder_path}, [8], recipe="lpft")


def test_protocol_repeats_refit_per_seed_and_keep_the_first_seeds_row(enmap_cfg):
    """repeats: the first seed's rows are those of a run without repeats; every fit again per
    seed (random init drawn anew), mean and sample sd across seeds, differences paired per
    seed."""
    from geofm_lib import ssl

    res = ssl.pretrain(enmap_cfg, show_progress=False)
    args = dict(steps=2, n_boot=20, show_progress=False)
    one = ssl.protocol_rows(enmap_cfg, {"MoCo-v2": res.encoder_path}, [8],
                            ["frozen", "adapter"], **args)
    seeds = [enmap_cfg.seed, enmap_cfg.seed + 5]
    rows = ssl.protocol_rows(enmap_cfg, {"MoCo-v2": res.encoder_path}, [8],
                             ["frozen", "adapter"], seeds=seeds, **args)
    assert [r["score"] for r in rows] == [r["score"] for r in one]
    by = {(r["protocol"], r["init"]): r for r in rows}
    for r in rows:
        assert r["seeds"] == seeds and r["score_per_seed"][0] == r["score"]
        assert r["score_over_seeds"] == pytest.approx(np.mean(r["score_per_seed"]))
        assert r["score_seed_sd"] == pytest.approx(np.std(r["score_per_seed"], ddof=1))
    moco = by[("fine-tuned spectral adapter", "MoCo-v2")]
    rand = by[("fine-tuned spectral adapter", "random init")]
    assert moco["minus_random_init_per_seed"] == pytest.approx(
        [a - b for a, b in zip(moco["score_per_seed"], rand["score_per_seed"], strict=True)])
    assert "minus_random_init_per_seed" not in rand
    # the frozen pretrained encoder's probe is deterministic: the same score for every seed
    frozen = by[("frozen encoder", "MoCo-v2")]["score_per_seed"]
    assert frozen[0] == frozen[1]
    table = ssl.protocol_table(rows)
    assert "F1 micro over 2 seeds" in table.columns
    assert table.loc[("frozen encoder", "random init"), "minus random init over 2 seeds"] == "–"


def test_a_hyspecnet_layout_fixture_pretrains_an_encoder_scored_on_enmap_corine(enmap_cfg,
                                                                                tmp_path):
    """Seed 001's pipeline in small: 01 on HySpecNet-11k's files (unlabelled), 07's MoCo with
    the spectral stem on them, then the probes of the protocols on labelled EnMAP-CORINE places
    with the same 202 bands."""
    pytest.importorskip("torchgeo")
    from test_hyperspectral import _write_hyspecnet

    from geofm_lib import ssl
    from geofm_lib.config import load_config
    from geofm_lib.data.build import build_shards

    _write_hyspecnet(tmp_path / "hsn", n_patches=12, px=16)
    spec = {"reader": "torchgeo", "dataset_class": "HySpecNet11k", "root": str(tmp_path / "hsn")}
    cfg = load_config("ci", group="custom", datasets=["hyspecnet11k"],
                      sources={"hyspecnet11k": spec}, image_px=16, samples_per_dataset=50,
                      work_dir=str(tmp_path / "work"), ssl_mode="augment",
                      ssl_adapter="spectral", ssl_batch_size=4, ssl_epochs=1)
    build_shards(cfg, show_progress=False)
    places = ssl.load_pairs(cfg, "train")
    assert places.single_sensor and places.bands == ENMAP_202 and not places.vocabulary
    assert ssl.not_evaluable(places, ssl.load_pairs(cfg, "val"), cfg).startswith(
        "the data has no labels")
    res = ssl.pretrain(cfg, show_progress=False)
    assert res.history and np.isfinite(res.history[-1]["loss"])
    rows = ssl.protocol_rows(enmap_cfg, {"MoCo-v2 (HySpecNet)": res.encoder_path}, [24],
                             ["frozen"], n_boot=20, show_progress=False)
    assert [r["init"] for r in rows] == ["random init", "MoCo-v2 (HySpecNet)"]
    assert "minus_random_init_ci" in rows[1]


@pytest.mark.parametrize("model_name", ["RN50-tiny", "ViT-tiny"])
def test_clip_image_towers_take_hyperspectral_bands_through_the_stem(model_name):
    import open_clip

    from geofm_lib.models import factory

    model, tok = factory.create_model(model_name, 32, seed=0, band_adapter="spectral",
                                      bands=ENMAP_202)
    stem = find_stem(model.visual)
    assert stem is not None and stem.bands == ENMAP_202
    x = torch.randn(4, 202, 32, 32, generator=torch.Generator().manual_seed(0))
    out = model(x, tok([f"scene {i}" for i in range(4)]))
    loss = open_clip.ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"])
    before = [p.detach().clone() for p in stem.parameters()]
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, stem.parameters(), strict=True))


def test_the_spectral_band_adapter_refuses_sar_before_any_work():
    from geofm_lib.models.inputs import input_spec

    stats = {"s1": {"bands": ["VV", "VH"], "mean": [0, 0], "std": [1, 1]}}
    with pytest.raises(AdapterError, match="SAR polarisations"):
        input_spec(stats, "spectral")


def test_batchnorm_statistics_are_re_estimated_after_fine_tuning():
    """A short fit leaves BatchNorm's running averages behind weights that moved; after
    fit_head they are the plain average over the training images of the final weights."""
    from geofm_lib.evaluation.finetune import fit_head

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(32, 3, 8, 8)) * 3 + 2).astype(np.float32)
    y = (rng.random((32, 2)) < 0.5).astype(np.float32)
    fit_head(net, x, y, epochs=2, lr=0.05, seed=0, batch=8)
    with torch.no_grad():
        z = net[0](torch.from_numpy(x))
    assert torch.allclose(net[1].running_mean, z.mean((0, 2, 3)), atol=1e-4)
    assert net[1].momentum == 0.1  # put back for later training


# --- the study (`geofm study --study spectral`) ------------------------------------------

def test_the_spectral_study_plan_checks_every_method_before_any_work():
    from geofm_lib.errors import ConfigError
    from geofm_lib.report import reports, spectral_study

    plan = spectral_study.study_plan("ci")
    assert plan["overrides"]["run_name"] == "study-spectral-ci"
    assert plan["notebook_params"]["07"] == {"also_methods": ["dino", "mae:vit_small_patch8"],
                                             "also_epochs": None}  # equal epochs for all
    with pytest.raises(ConfigError, match="ViT"):
        spectral_study.study_plan("ci", ["moco", "mae"])
    with pytest.raises(ConfigError, match="spectral stem"):
        spectral_study.study_plan("ci", ssl_adapter="first_layer")
    root = Path(__file__).resolve().parents[1]
    assert set(reports.check_notebook_params(reports.notebooks(root),
                                             plan["notebook_params"])) == {"07_ssl_pretrain"}


def test_the_spectral_study_page_shows_the_run_s_protocols():
    """After run_all.sh ran `geofm study --study spectral --preset ci`: every row of the
    largest labelled set on the page, the curves, the paper's table, the index's link."""
    from geofm_lib import records

    root = Path(__file__).resolve().parents[1]
    page = root / "reports" / "study-spectral-ci.html"
    if not page.is_file():
        pytest.skip("no spectral study yet (tests/run_all.sh runs it before pytest)")
    text = page.read_text()
    run = root / "reports" / "study-spectral-ci"
    rows = records.read_run(run / "metrics.json")["07_ssl_pretrain"].protocols
    n = max(r.n_labelled for r in rows)
    assert {r.protocol for r in rows} == {"frozen encoder", "fine-tuned spectral adapter",
                                          "full fine-tuning"}
    assert {r.init for r in rows} >= {"MoCo-v2", "DINO", "MAE ViT-S/8"}
    for r in rows:
        if r.n_labelled == n:
            assert f"<b>{r.score:.1f}</b>" in text
    assert "data:image/png;base64," in text and "spectral ResNet-50" in text
    assert all(r.curve for r in rows if r.protocol != "frozen encoder")
    assert "alt='convergence of the fine-tuning fits'" in text
    assert 'href="study-spectral-ci/07_ssl_pretrain.html"' in text
    assert "study-spectral-ci.html" in (root / "reports" / "index.html").read_text()


def test_hyspecnet_files_go_through_01_and_07_to_the_protocols_on_enmap_corine(tmp_path):
    """The notebooks themselves: 01 reads HySpecNet-11k's files (unlabelled), 07 pretrains MoCo
    with the spectral stem on them, cannot score them (no labels) and says so, and runs seed
    001's protocols on labelled EnMAP-CORINE places (``protocol_data``) with the same bands."""
    pytest.importorskip("torchgeo")
    import json

    import yaml
    from test_hyperspectral import _write_hyspecnet

    from geofm_lib import records
    from geofm_lib.report.reports import run_report

    _write_hyspecnet(tmp_path / "hsn", n_patches=24, px=16, structured=True)
    exp = tmp_path / "hyspecnet.yaml"
    exp.write_text(yaml.safe_dump({
        "group": "custom", "datasets": ["hyspecnet11k"], "image_px": 16,
        "samples_per_dataset": 50, "ssl_mode": "augment", "ssl_adapter": "spectral",
        "ssl_batch_size": 8, "ssl_epochs": 3,
        "sources": {"hyspecnet11k": {"reader": "torchgeo", "dataset_class": "HySpecNet11k",
                                     "root": str(tmp_path / "hsn")}}}))
    folder = run_report("ci", str(exp), chain=["01", "07"], reports_dir=tmp_path / "reports",
                        notebook_params={"07": {"also_methods": [],
                                                "protocol_data": "group_H"}},
                        work_dir=str(tmp_path / "work"), run_name="hsn")
    m = records.read_run(folder / "metrics.json")["07_ssl_pretrain"]
    assert m.evaluation == "not evaluable" and "no labels" in m.reason
    assert {r.init for r in m.protocols} == {"random init", "MoCo-v2"}
    assert {r.protocol for r in m.protocols} == {"frozen encoder", "fine-tuned spectral adapter",
                                                 "full fine-tuning"}
    assert m.protocol_data != json.loads((folder / "run.json").read_text())["data_hash"]


def test_the_study_says_when_fine_tuning_is_too_short_to_compare_the_protocols():
    from record_fixtures import protocol_row as row

    from geofm_lib.report.spectral_study import findings

    diff = {"minus_random_init": 5.0, "minus_random_init_ci": [1.0, 9.0]}
    rows = [row("frozen encoder", "random init", 40, 35, 45),
            row("frozen encoder", "DINO", 50, 45, 55, **diff),
            row("fine-tuned spectral adapter", "DINO", 20, 15, 25, **diff),
            row("full fine-tuning", "DINO", 30, 25, 35, **diff)]
    said = " ".join(findings(rows))
    assert "too short to compare" in said and "40 optimiser steps" in said
    rows[2].score = rows[3].score = 52
    assert "too short" not in " ".join(findings(rows))


def test_convergence_curves_draw_each_fine_tuning_fit_by_protocol_and_labelled_set():
    import matplotlib

    matplotlib.use("Agg")
    from geofm_lib.report.plots import convergence_curves

    rows = [{"protocol": p, "init": i, "n_labelled": n, "score": 50.0,
             "curve": [[0, 40.0], [n // 8, 45.0], [n // 4, 50.0]]}
            for p in ("fine-tuned spectral adapter", "full fine-tuning")
            for i in ("random init", "MoCo-v2") for n in (32, 128)]
    rows.append({"protocol": "frozen encoder", "init": "MoCo-v2", "n_labelled": 32,
                 "score": 40.0})
    fig = convergence_curves(rows)
    axes = fig.axes
    assert len(axes) == 4 and all(len(ax.lines) == 2 for ax in axes)
    full_128 = axes[3]
    assert full_128.get_title() == "128 labelled places"
    assert list(full_128.lines[1].get_xdata()) == [0, 16, 32]
    assert full_128.lines[0].get_linestyle() == "--"  # random init dashed
    assert convergence_curves(rows[-1:]) is None


def _separable(n=48, d=6, k=3, seed=0):
    """Images whose mean over pixels carries the labels linearly (a net of one pooling
    layer sees them as features)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d, 4, 4)).astype(np.float32)
    w = rng.normal(size=(d, k))
    y = (x.mean((2, 3)) @ w > 0).astype(np.float32)
    return x, y


def _recipe(**changes):
    """new-head with the fields a test is about changed (evaluation.fitting's recipes)."""
    import dataclasses

    from geofm_lib.evaluation.fitting import RECIPES

    return dataclasses.replace(RECIPES["new-head"], name="test", **changes)


def test_lp_ft_starts_the_head_as_the_frozen_features_probe():
    """head_init='probe' sets the head to the frozen protocol's probe before any fine-tuning
    step: with no epoch at all it predicts unseen images exactly as run_probe('linear') does
    on the same frozen features (C chosen on the same held-out fifth), a column constant in
    the training rows included; a new random head guesses."""
    from geofm_lib.evaluation.finetune import fit_head
    from geofm_lib.evaluation.probes import run_probe

    x, y = _separable(n=160)
    y[:, 2] = 0  # a class no training image has: the probe predicts it absent, as must the head
    x_new, _ = _separable(n=200, seed=1)

    def pooled():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(6, 6, 1), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten())

    lp = fit_head(pooled(), x, y, epochs=0, lr=1e-3, seed=3, recipe=_recipe(head_init="probe"))
    net = pooled().eval()
    with torch.no_grad():
        f, f_new = net(torch.from_numpy(x)).numpy(), net(torch.from_numpy(x_new)).numpy()
    probe = run_probe("linear", f, y.astype(bool), f_new, np.zeros((200, 3), bool), seed=3,
                      n_boot=2)
    head = lp.predict(x_new)
    assert np.array_equal(head, probe.pred), (head != probe.pred).sum()
    assert head[:, :2].any() and not head[:, 2].any()
    rand = fit_head(pooled(), x, y, epochs=0, lr=1e-3, seed=0)
    acc = lambda f: float((f.predict(x) == y.astype(bool)).mean())  # noqa: E731
    assert acc(lp) > 0.9 > 0.75 > acc(rand), (acc(lp), acc(rand))
    assert lp.history[0]["epoch"] == 0 and lp.history[0]["train_loss"] < 0.3
    with pytest.raises(ValueError, match="choose random or probe"):
        fit_head(pooled(), x, y, epochs=0, lr=1e-3, seed=0, recipe=_recipe(head_init="linear"))


def test_lp_ft_single_label_head_is_the_multinomial_probe():
    """With ``single``, the head starts as fit_single_label_probe's multinomial regression: the
    same classes for unseen images, a class missing from the training rows never predicted."""
    from geofm_lib.evaluation.finetune import fit_head
    from geofm_lib.evaluation.probes import fit_single_label_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6, 4, 4)).astype(np.float32)
    w = rng.normal(size=(6, 3))
    y = np.where(np.arange(120) < 3, 3, (x.mean((2, 3)) @ w).argmax(1))  # class 3: 3 rows
    x_new = rng.normal(size=(90, 6, 4, 4)).astype(np.float32)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    lp = fit_head(net, x, y, epochs=0, lr=1e-3, seed=2, single=True,
                  recipe=_recipe(head_init="probe"))
    probe = fit_single_label_probe(x.mean((2, 3)), y, seed=2)
    assert np.array_equal(lp.predict(x_new), probe.predict(x_new.mean((2, 3))))
    # two classes in the rows (scikit-learn's one-logit case), class indices up to 4
    y2 = np.where(x.mean((2, 3))[:, 0] > 0, 4, 1)
    lp2 = fit_head(net, x, y2, epochs=0, lr=1e-3, seed=2, single=True,
                   recipe=_recipe(head_init="probe"))
    p2 = fit_single_label_probe(x.mean((2, 3)), y2, seed=2).predict(x_new.mean((2, 3)))
    assert np.array_equal(lp2.predict(x_new), p2) and set(p2) == {1, 4}


def test_frozen_batchnorm_keeps_its_statistics_while_its_scale_learns():
    """batchnorm='frozen': the running statistics after the fit are those before it (and no
    precise BN pass replaces them), while BatchNorm's scale and shift learn; 'train'
    re-estimates them."""
    from geofm_lib.evaluation.finetune import fit_head, precise_batchnorm

    x, y = _separable()

    def net_bn():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(6, 8, 1), torch.nn.BatchNorm2d(8),
                                   torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten())

    net = net_bn()
    bn = net[1]
    bn.running_mean.fill_(0.3)
    bn.running_var.fill_(2.0)
    weight = bn.weight.detach().clone()
    fit_head(net, x, y, epochs=2, lr=1e-2, seed=0, batch=16, recipe=_recipe(batchnorm="frozen"))
    assert torch.all(bn.running_mean == 0.3) and torch.all(bn.running_var == 2.0)
    assert not torch.equal(bn.weight, weight)
    # LP-FT estimates the statistics once on the training images, before the probe, and
    # keeps them through the fit
    lp, first = net_bn(), net_bn()
    precise_batchnorm(first, first, x, "cpu", batch=16)
    fit_head(lp, x, y, epochs=2, lr=1e-2, seed=0, batch=16,
             recipe=_recipe(head_init="probe", batchnorm="frozen"))
    assert torch.allclose(lp[1].running_mean, first[1].running_mean)
    assert torch.allclose(lp[1].running_var, first[1].running_var)
    other = net_bn()
    other[1].running_mean.fill_(0.3)
    fit_head(other, x, y, epochs=2, lr=1e-2, seed=0, batch=16, recipe=_recipe(batchnorm="train"))
    assert not torch.all(other[1].running_mean == 0.3)
    with pytest.raises(ValueError, match="choose train or frozen"):
        fit_head(net_bn(), x, y, epochs=0, lr=1e-3, seed=0, recipe=_recipe(batchnorm="eval"))


def test_the_encoder_learns_at_its_own_rate():
    """An encoder rate of 0 (a recipe's encoder divisor of infinity): full fine-tuning changes
    the head and leaves the encoder's weights."""
    from geofm_lib.evaluation.finetune import fit_head

    x, y = _separable()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(6, 6, 1), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    before = [p.detach().clone() for p in net.parameters()]
    fit = fit_head(net, x, y, epochs=2, lr=1e-2, seed=0, batch=16,
                   recipe=_recipe(encoder_lr_divisor=math.inf))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert fit.history[-1]["train_loss"] < fit.history[0]["train_loss"]
    fit_head(net, x, y, epochs=1, lr=1e-2, seed=0, batch=16, recipe=_recipe())
    assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_a_spectral_encoder_goes_under_unet_with_its_stem():
    """08 on hyperspectral data: the SSL encoder's weights (spectral stem included) load into
    the UNet's ResNet, also with seed 001's detail stem (stride 1 in the stem's convolution)."""
    from geofm_lib.evaluation.segmenter import build_segmenter
    from geofm_lib.models.backbones import make_backbone

    bands = S2
    enc = make_backbone("resnet18", bands, "spectral", 0)
    state = enc.state_dict()
    x = torch.randn(2, len(bands), 32, 32)
    for stem in ("standard", "detail"):
        net = build_segmenter("unet", "resnet18", bands, 2, "spectral", state, stem=stem).eval()
        resnet = net.net.encoder.model if stem == "detail" else net.encoder.model
        assert torch.equal(find_stem(resnet).mix.weight, find_stem(enc).mix.weight)
        with torch.no_grad():
            assert net(x).shape == (2, 2, 32, 32)
    assert resnet.conv1[-1].stride == (1, 1)
