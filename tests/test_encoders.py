"""Frozen encoders and the probes on their features: metrics agree with scikit-learn, probes
never see test data, caches are reused only when the encoder and data hashes match."""

import numpy as np
import pytest
from sklearn.metrics import fbeta_score, hamming_loss, precision_score

from geofm_lib import encoders, errors, evaluation, paths
from geofm_lib.data import build, shards


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random((40, 6)) < 0.3
    p = rng.random((40, 6)) < 0.3
    y[:, 5] = False  # a class absent from truth but predicted: counts in macro as sklearn does
    m = evaluation.multilabel_metrics(y, p)
    assert m["f2_micro"] == pytest.approx(100 * fbeta_score(y, p, beta=2, average="micro",
                                                            zero_division=0))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, p))
    assert m["precision_micro"] == pytest.approx(100 * precision_score(
        y, p, average="micro", zero_division=0))
    active = (y | p).any(axis=0)
    assert m["f2_macro"] == pytest.approx(100 * fbeta_score(
        y[:, active], p[:, active], beta=2, average="macro", zero_division=0))
    assert m["f2_per_class"] == pytest.approx(list(100 * fbeta_score(
        y, p, beta=2, average=None, zero_division=0)))


def test_hand_made_case():
    y = np.array([[1, 0], [1, 1]], bool)
    p = np.array([[1, 1], [0, 1]], bool)
    m = evaluation.multilabel_metrics(y, p)
    # tp=2, fp=1, fn=1: F2 = 5*2 / (5*2 + 4*1 + 1) = 10/15
    assert m["f2_micro"] == pytest.approx(100 * 10 / 15)
    assert m["hamming_loss"] == pytest.approx(0.5)


def _emb(keys, feats, labels, ds="d"):
    return evaluation.Embeddings(np.asarray(feats, np.float32), np.array(keys),
                               np.array([ds] * len(keys)), labels, "x")


def test_probes_learn_separable_labels_and_never_see_test_data():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.random((n, 3)) < 0.4
    x = y.astype(float) * 2 + rng.normal(0, 0.5, (n, 3))
    vocab = ("a", "b", "c")
    labels = [[vocab[j] for j in np.flatnonzero(r)] for r in y]
    train = _emb([f"k{i}" for i in range(150)], x[:150], labels[:150])
    test = _emb([f"k{i}" for i in range(150, n)], x[150:], labels[150:])
    res = evaluation.probe_dataset(train, test, "d", vocab, n_boot=50)
    for kind, r in res.items():
        assert r.test["f2_micro"] > 80, kind
        lo, hi = r.ci["f2_micro"]
        assert lo <= r.test["f2_micro"] <= hi
        assert r.n_test == 50
    leaked = _emb([f"k{i}" for i in range(140, n)], x[140:], labels[140:])
    with pytest.raises(AssertionError, match="occur in the probe's training data"):
        evaluation.probe_dataset(train, leaked, "d", vocab, n_boot=10)


def test_probes_spread_over_processes_give_the_same_results_as_one_by_one(monkeypatch):
    """run_probes (notebook 06's probes, over the cores) against the same probes in turn."""
    from geofm_lib.evaluation import probes

    monkeypatch.setattr(probes, "SMALL_BATCH_VALUES", 0)  # these tiny ones would stay in-process
    rng = np.random.default_rng(3)
    vocab = ("a", "b", "c", "d")
    train, test, sets = {}, {}, ["d1", "d2"]
    for name in ("enc1", "enc2"):
        parts_tr, parts_te = [], []
        for ds in sets:
            y = rng.random((120, 4)) < 0.4
            x = y.astype(float) + rng.normal(0, 0.7, (120, 4))
            labels = [[vocab[j] for j in np.flatnonzero(r)] for r in y]
            parts_tr.append(_emb([f"{ds}{i}" for i in range(90)], x[:90], labels[:90], ds))
            parts_te.append(_emb([f"{ds}{i}" for i in range(90, 120)], x[90:], labels[90:], ds))
        train[name], test[name] = (evaluation.Embeddings(
            np.concatenate([p.features for p in parts]), np.concatenate([p.keys for p in parts]),
            np.concatenate([p.datasets for p in parts]), sum((p.labels for p in parts), []), name)
            for parts in (parts_tr, parts_te))
    vocabs = {ds: vocab for ds in sets}
    kinds = ("linear", "random_forest")
    spread = evaluation.probe_datasets(train, test, sets, vocabs, kinds, n_boot=20, n_jobs=2)
    in_turn = evaluation.probe_datasets(train, test, sets, vocabs, kinds, n_boot=20, n_jobs=1)
    assert set(spread) == {(e, ds) for e in ("enc1", "enc2") for ds in sets}
    for key, by_probe in spread.items():
        assert list(by_probe) == list(kinds)
        for kind, r in by_probe.items():
            assert r.test == in_turn[key][kind].test and r.param == in_turn[key][kind].param
            assert np.array_equal(r.pred, in_turn[key][kind].pred)


def test_small_probes_fit_with_one_blas_thread_large_ones_with_all():
    from threadpoolctl import threadpool_info

    from geofm_lib.evaluation.probes import SMALL_PROBLEM_VALUES, blas_threads_for

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    usual = blas_threads()
    with blas_threads_for(np.zeros((512, 512), np.float32)):
        assert blas_threads() == {1}
    with blas_threads_for(np.zeros(SMALL_PROBLEM_VALUES + 1, np.float32)):
        assert blas_threads() == usual
    assert blas_threads() == usual


def test_label_efficiency_uses_fewer_samples():
    rng = np.random.default_rng(1)
    y = rng.random((300, 2)) < 0.5
    x = y.astype(float) + rng.normal(0, 0.3, (300, 2))
    r = evaluation.run_probe("linear", x[:250], y[:250], x[250:], y[250:], fit_fraction=0.1,
                           n_boot=10)
    assert r.n_train == 25


def test_unknown_encoder_names_the_fix(tmp_path):
    from geofm_lib.config import load_config

    cfg = load_config("ci", work_dir=str(tmp_path))
    with pytest.raises(errors.EncoderError, match="use 'trained', 'init'"):
        encoders.load_encoder(cfg, "dino")
    with pytest.raises(errors.EncoderError, match="did you mean"):
        encoders.load_encoder(cfg, "open_clip:ViT-B-23:openai")


def test_cache_reused_only_when_hashes_match(tmp_path, monkeypatch):
    from geofm_lib.config import load_config

    cfg = load_config("ci", group="B", work_dir=str(tmp_path))
    build.build_shards(cfg, show_progress=False)
    from geofm_lib.models.devices import resolve_precision

    first = encoders.embed(cfg, "init", "val", show_progress=False)
    precision = resolve_precision(cfg.precision, "cpu")
    assert not first.cached and encoders.cache_path(cfg, "init", "val", None, precision).is_file()
    again = encoders.embed(cfg, "init", "val", show_progress=False)
    assert again.cached and np.array_equal(again.features, first.features)
    other = load_config("ci", group="B", work_dir=str(tmp_path), model="ViT-tiny")
    assert encoders.cache_path(other, "init", "val") != encoders.cache_path(cfg, "init", "val")
    assert not encoders.embed(other, "init", "val", show_progress=False).cached
    # embeddings of another precision are not taken for these
    fp32 = load_config("ci", group="B", work_dir=str(tmp_path), precision="fp32")
    bf16 = load_config("ci", group="B", work_dir=str(tmp_path), precision="bf16")
    assert not encoders.embed(bf16 if precision == "fp32" else fp32, "init", "val",
                              show_progress=False).cached


def test_the_init_encoder_is_a_fair_random_init(tmp_path):
    """Issue 37: ``init`` (the ResNet tower at random weights) gets BatchNorm statistics
    estimated on the run's training images, no labels; the same seed gives the same ones, and
    its features then vary between images as a trained tower's do."""
    import torch

    from geofm_lib.config import load_config

    cfg = load_config("ci", group="B", work_dir=str(tmp_path), model="RN50-tiny")
    build.build_shards(cfg, show_progress=False)
    model, _ = encoders.load_encoder(cfg, "init")
    bns = [m for m in model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not all(torch.all(m.running_var == 1) for m in bns)
    assert not torch.allclose(bns[0].running_mean, torch.zeros_like(bns[0].running_mean))
    again, _ = encoders.load_encoder(cfg, "init")
    assert all(torch.equal(a.running_var, b.running_var) for a, b in zip(
        bns, [m for m in again.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)],
        strict=True))
    vit = load_config("ci", group="B", work_dir=str(tmp_path), model="ViT-tiny")
    encoders.load_encoder(vit, "init")  # no BatchNorm: nothing to estimate
    # RCF beside them (issue 37): the same input, torchgeo's filters from the training images,
    # the same features on every run, and nothing to fine-tune
    first = encoders.embed(cfg, "rcf", "val", show_progress=False)
    assert first.features.shape[1] == 512 and np.isfinite(first.features).all()
    assert not first.cached and encoders.embed(cfg, "rcf", "val", show_progress=False).cached
    encoders.cache_path(cfg, "rcf", "val").unlink(missing_ok=True)
    for p in tmp_path.rglob("features/*.npz"):
        p.unlink()
    assert np.array_equal(encoders.embed(cfg, "rcf", "val", show_progress=False).features,
                          first.features)
    with pytest.raises(ValueError, match="no weights to fine-tune"):
        encoders.finetune(cfg, "rcf", "agriculture_vision", epochs=1)


def test_checkpoint_encoder_of_another_run_and_mismatches(tmp_path):
    import torch

    from geofm_lib import training
    from geofm_lib.config import load_config

    cfg = load_config("ci", group="B", work_dir=str(tmp_path), run_name="a")
    build.build_shards(cfg, show_progress=False)
    training.train(cfg, show_progress=False)
    ckpt = paths.checkpoint_dir(cfg) / "last.pt"
    e = encoders.embed(cfg, f"checkpoint:{ckpt}", "val", show_progress=False)
    t = encoders.embed(cfg, "trained", "val", show_progress=False)
    assert np.allclose(e.features, t.features, atol=1e-5)  # the same weights, the same features
    other = load_config("ci", group="B", work_dir=str(tmp_path), image_px=48)
    build.build_shards(other, show_progress=False)
    with pytest.raises(errors.EncoderError, match="trained at 32 px, this data is 48 px"):
        encoders.load_encoder(other, f"checkpoint:{ckpt}")
    state = torch.load(ckpt, weights_only=True)
    state["model_name"] = "ViT-tiny"  # another architecture than the weights
    bad = tmp_path / "bad.pt"
    training.save_checkpoint(bad, state)
    with pytest.raises(errors.EncoderError, match="does not fit architecture 'ViT-tiny'"):
        encoders.load_encoder(cfg, f"checkpoint:{bad}")
    with pytest.raises(errors.EncoderError, match="no such checkpoint"):
        encoders.check_encoder_name(f"checkpoint:{tmp_path / 'nope.pt'}")


def test_finetune_scores_the_val_split_and_refuses_unlabelled_data(tmp_path):
    from geofm_lib import training
    from geofm_lib.config import load_config

    cfg = load_config("ci", group="B", work_dir=str(tmp_path), run_name="f")
    build.build_shards(cfg, show_progress=False)
    training.train(cfg, show_progress=False)
    r = encoders.finetune(cfg, "init", "agriculture_vision", epochs=2, batch_size=4, n_boot=20)
    n_val = shards.load_manifest(paths.build_folder(cfg))["counts"]["agriculture_vision"]["val"]
    # LP-FT (the default recipe): the probe head's starting loss, then one row per epoch
    assert r.n_test == n_val and r.recipe == "lp-ft" and [h["epoch"] for h in r.history] == [
        0, 1, 2]
    assert 0 <= r.test["f2_micro"] <= 100 and r.ci["f2_micro"][0] <= r.ci["f2_micro"][1]
    with pytest.raises(ValueError, match="no labels to fine-tune"):
        encoders.finetune(cfg, "init", "no_such_dataset", epochs=1)
    with pytest.raises(ValueError, match="unknown fine-tuning recipe"):
        encoders.finetune(cfg, "init", "agriculture_vision", epochs=1, recipe="lpft")


def _group_a(tmp_path, **kw):
    from geofm_lib.config import load_config

    cfg = load_config("ci", group="A", work_dir=str(tmp_path), run_name="tg", **kw)
    build.build_shards(cfg, show_progress=False)
    return cfg


@pytest.mark.parametrize("encoder", ["torchgeo:resnet18", "torchgeo:vit_small_patch16_224",
                                     "torchgeo:dofa_small_patch16_224"])
def test_torchgeo_encoders_take_every_band_at_random_init(tmp_path, encoder):
    """ResNet, ViT and DOFA from torchgeo on 13-band Sentinel-2 L1C and 2-band Sentinel-1."""
    cfg = _group_a(tmp_path, s2_product="L1C")
    model, stats = encoders.load_encoder(cfg, encoder)
    assert stats["bigearthnet_s2"].channels == 15 and stats["bigearthnet_s1"].slots == (13, 14)
    e = encoders.embed(cfg, encoder, "val", show_progress=False)
    assert e.features.shape[0] == len(e.keys) and np.isfinite(e.features).all()
    norms = np.linalg.norm(e.features, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)  # L2-normalised, as the CLIP embeddings
    assert e.features.std(axis=0).max() > 0  # not a constant output


def test_torchgeo_weights_place_bands_by_name_and_fail_clearly_offline(tmp_path, monkeypatch):
    from geofm_lib import encoders

    assert encoders.canonical_band("B8a") == "B8A" and encoders.canonical_band("B1") == "B01"
    with pytest.raises(errors.EncoderError, match="did you mean SENTINEL2_ALL_MOCO"):
        encoders.check_encoder_name("torchgeo:resnet50:SENTINEL2_ALL_MOC")
    with pytest.raises(errors.EncoderError, match="did you mean resnet50"):
        encoders.check_encoder_name("torchgeo:resnet5")
    cfg = _group_a(tmp_path, datasets=["bigearthnet_s2"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def offline(*args, **kwargs):  # what the download raises without a network
        import urllib.error

        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("torchvision.models._api.WeightsEnum.get_state_dict", offline)
    with pytest.raises(errors.EncoderError, match="offline.*cache/torch/hub"):
        encoders.load_encoder(cfg, "torchgeo:resnet18:SENTINEL2_ALL_MOCO")
    with pytest.raises(errors.EncoderError, match="none in common"):
        encoders.load("torchgeo:resnet18:SENTINEL2_ALL_MOCO",
                      {"s1": {"bands": ["VV", "VH"], "mean": [0, 0], "std": [1, 1]}}, 32)


def test_torchgeo_weights_path_uses_the_weights_band_order_and_transforms(tmp_path, monkeypatch):
    """The weights path end to end, with a stand-in state dict where torch.hub would download:
    the 13 SSL4EO bands in their order (L2A data leaves B10 at 0), raw values, the weights'
    resize/crop/normalise transform."""
    import timm

    cfg = _group_a(tmp_path, datasets=["bigearthnet_s2"])
    fake = timm.create_model("resnet18", in_chans=13, num_classes=0).state_dict()
    monkeypatch.setattr("torchvision.models._api.WeightsEnum.get_state_dict", lambda *a, **k: fake)
    model, stats = encoders.load_encoder(cfg, "torchgeo:resnet18:SENTINEL2_ALL_MOCO")
    spec = stats["bigearthnet_s2"]
    assert spec.channels == 13 and 10 not in spec.slots  # B10 is not in L2A data
    assert np.all(spec.mean == 0) and np.all(spec.std == 1)  # the transform normalises
    assert model.visual.transform is not None
    e = encoders.embed(cfg, "torchgeo:resnet18:SENTINEL2_ALL_MOCO", "val", show_progress=False)
    assert e.features.shape == (len(e.keys), 512) and np.isfinite(e.features).all()
