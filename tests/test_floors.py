"""Fair floors under every comparison (issue 37): the majority-class, training-mean and
label-prior predictors on hand-computed cases, RCF features deterministic and checked by hand,
a degenerate baseline flagged, and random init with estimated BatchNorm statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geofm_lib.evaluation import floors

BANDS = ["B02", "B03", "B04", "B08"]


def test_the_majority_class_floor_by_hand():
    """Training pixels: 5 "not tree", 2 "tree" (and one left out) -> "not tree" everywhere.
    Test: two 2x2 images, 5 "not tree" + 3 "tree" -> OA 5/8; IoU not tree 5/8, tree 0;
    mean IoU 31.25; boundary F1 0 on the image with a boundary (the constant map has none)."""
    y_train = np.array([[[0, 0], [0, 1]], [[0, 0], [1, -1]]])
    y_test = np.array([[[0, 0], [1, 1]], [[0, 0], [0, 1]]])
    fl = floors.majority_class_masks(y_train, y_test, ["not tree", "tree"], n_boot=50, seed=0)
    assert fl.scores["overall_accuracy"] == pytest.approx(100 * 5 / 8)
    assert fl.scores["iou"] == pytest.approx({"not tree": 100 * 5 / 8, "tree": 0.0})
    assert fl.scores["mean_iou"] == pytest.approx(100 * (5 / 8) / 2)
    assert fl.scores["boundary_f1"] == 0.0
    assert "'not tree'" in fl.what
    lo, hi = fl.ci["mean_iou"]
    assert lo <= fl.scores["mean_iou"] <= hi
    with pytest.raises(ValueError, match="no labelled pixel"):
        floors.majority_class_masks(np.full((1, 2, 2), -1), y_test, ["a", "b"])


def test_the_single_label_floor_and_the_training_mean_by_hand():
    fl = floors.majority_class_labels(np.array([2, 2, 1, 0, 2]), np.array([2, 1, 2, 2]),
                                      n_boot=20)
    assert fl.scores["accuracy"] == pytest.approx(75.0) and "class 2" in fl.what
    # density: training mean of the valid pixels (10, 30; -1 left out) = 20 for every pixel
    t_train = np.array([[[10.0, -1.0], [30.0, -1.0]]])
    t_test = np.array([[[20.0, 0.0], [40.0, -1.0]]])
    d = floors.mean_density(t_train, t_test, n_boot=20)
    errors = np.array([0.0, -20.0, 20.0])
    assert d.scores["rmse"] == pytest.approx(math.sqrt((errors ** 2).mean()))
    assert d.scores["mae"] == pytest.approx(np.abs(errors).mean())
    # R^2 against the test pixels' own mean (20): the same constant, so exactly 0
    assert d.scores["r2"] == pytest.approx(0.0)


def test_the_label_prior_f2_by_hand():
    """Label frequencies on six training places: A 5/6, B 1/2, C 1/6. F2 micro of the constant
    sets on the training labels: {A} 59.5, {A, B} (tp 8, fp 4, fn 1) 83.3, {A, B, C} (tp 9,
    fp 9) 83.3: a tie, broken toward the higher threshold -> {A, B} at 0.5. On the test places
    (A, B, C each once in three places): tp 2, fp 4, fn 1 -> F2 = 5*2/(5*2 + 4*1 + 4)."""
    y_train = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 0]], bool)
    y_test = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    fl = floors.label_prior(y_train, y_test, n_boot=50)
    assert fl.scores["threshold"] == 0.5 and fl.scores["labels"] == 2
    assert fl.scores["f2_micro"] == pytest.approx(100 * 10 / 18)
    pred = floors.prior_predictions(y_train, 3, fl.scores["threshold"])
    assert pred.tolist() == [[True, True, False]] * 3
    # a rare label everywhere is what F2's weight on recall rewards: chosen when it pays
    rare = np.array([[1, 0], [1, 0], [1, 1], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0]], bool)
    assert floors.label_prior(rare, rare, n_boot=5).scores["labels"] in (1, 2)


def test_a_baseline_at_the_floor_is_flagged_and_the_strongest_is_chosen():
    # 08's demo case (issue 37): random init mIoU 34.7 [33.1, 36.4] over the majority map 34.7
    assert floors.at_floor([33.1, 36.4], 34.7)
    assert not floors.at_floor([38.0, 41.0], 34.7)
    assert floors.at_floor([20.0, 25.0], 34.7)  # below its floor: flagged too
    assert floors.at_floor([10.0, 12.0], 11.0, higher_is_better=False)  # RMSE
    assert not floors.at_floor([math.nan, math.nan], 34.7)
    assert floors.strongest({"random init": 48.1, "RCF": 51.3}) == "RCF"
    assert floors.strongest({"a": 3.0, "b": 2.0}, higher_is_better=False) == "b"
    with pytest.raises(ValueError):
        floors.strongest({})


def test_rcf_features_are_deterministic_and_one_is_checked_by_hand():
    """torchgeo's RCF with empirical filters: the same images and seed give the same filters
    and features (seed 0 included: torchgeo ignores 0, so the seed is offset); feature j is the
    mean over positions of ReLU(conv with filter j + bias -1), and feature j + 256 that of
    ReLU(-(conv + bias))."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, len(BANDS), 16, 16)).astype(np.float32)
    a, b = floors.rcf_model(x, 0), floors.rcf_model(x, 0)
    assert torch.equal(a.weights, b.weights)
    assert not torch.equal(a.weights, floors.rcf_model(x, 1).weights)
    fa = floors.rcf_features(a, x[:3], batch=2)
    assert fa.shape == (3, floors.RCF_FEATURES) and fa.dtype == np.float32
    assert np.array_equal(fa, floors.rcf_features(b, x[:3], batch=2))
    assert np.allclose(fa, floors.rcf_features(b, x[:3]), rtol=1e-5)  # other batches
    w, j = a.weights[5:6], 5
    conv = F.conv2d(torch.from_numpy(x[1:2]), w) - 1.0
    assert fa[1, j] == pytest.approx(float(conv.clamp_min(0).mean()), rel=1e-5)
    assert fa[1, j + floors.RCF_FEATURES // 2] == pytest.approx(
        float((-conv).clamp_min(0).mean()), rel=1e-5)


def test_random_init_gets_estimated_batchnorm_statistics():
    """The fair random init: a copy whose BatchNorm running statistics are those of the images
    (mean 0 / variance 1 untouched in the original), so its frozen features vary with the
    image; the segmenter's encoder gets the same before a fit."""
    import torch

    from geofm_lib.evaluation.finetune import with_estimated_statistics
    from geofm_lib.evaluation.segmenter import build_segmenter, estimate_statistics
    from geofm_lib.models.backbones import make_backbone

    rng = np.random.default_rng(1)
    x = (3.0 + 2.0 * rng.normal(size=(16, len(BANDS), 32, 32))).astype(np.float32)
    net = make_backbone("resnet18", BANDS, "first_layer", 0, 32)
    fair = with_estimated_statistics(net, x)
    bn0 = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn1 = next(m for m in fair.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.all(bn0.running_mean == 0) and torch.all(bn0.running_var == 1)
    assert not torch.allclose(bn1.running_var, torch.ones_like(bn1.running_var))
    assert not fair.training
    seg = build_segmenter("unet", "resnet18", BANDS, 2)
    assert estimate_statistics(seg, None) == 0
    assert estimate_statistics(seg, x) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in seg.encoder.modules())
    first = next(m for m in seg.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(first.running_var, torch.ones_like(first.running_var), atol=0.05)


def test_the_index_says_which_baseline_is_at_the_floor():
    """The index's key metrics of 07 and 08 (issue 37): the RCF and label-prior numbers, the
    margin over the strongest fair baseline, the majority-class floor, and each encoder whose
    interval reaches its floor flagged in words."""
    from geofm_lib.records import SegmentationRecord, SslRecord
    from geofm_lib.report.summary import key_metrics

    m07 = SslRecord.of({
           "places_train": 100, "places_val": 20, "places_pretrained": 100, "final_loss": 1.0,
           "embedding_std": 0.1, "collapsed": False, "table": [], "headline_input": "s1/s2",
           "ssl_method": "moco", "ssl_mode": "sensor", "linear_probe_f2_s1s2": 60.0,
           "linear_probe_f2_s1s2_ci": [57.0, 63.0], "random_init_f2_s1s2": 45.0,
           "random_init_f2_s1s2_ci": [42.0, 48.0], "random_init_at_floor": True,
           "rcf_f2_s1s2": 50.0, "rcf_f2_s1s2_ci": [47.0, 53.0], "rcf_at_floor": False,
           "label_prior_f2_s1s2": 44.0, "label_prior_f2_s1s2_ci": [41.0, 47.0],
           "ssl_minus_random_init_f2_s1s2": 15.0, "ssl_minus_random_init_f2_s1s2_ci": [12, 18],
           "strongest_baseline": "RCF", "ssl_minus_strongest_f2_s1s2": 10.0,
           "ssl_minus_strongest_f2_s1s2_ci": [7.0, 13.0]})
    text = " ".join(key_metrics("07_ssl_pretrain", m07))
    assert "RCF 50.0" in text and "floor (label prior) 44.0" in text
    assert "+10.0" in text and "strongest fair baseline (RCF" in text
    assert text.count("baseline at the floor") == 1
    m08 = SegmentationRecord.of({
           "target": "trees", "decoder": "unet", "protocol": "frozen", "few_labels": 64,
           "decoders": ["unet"], "input": "s2", "protocols": ["frozen"],
           "classes": ["not tree", "tree"], "backbones": {}, "labelled": [64], "epochs": 1,
           "n_test": 10, "minus_random_init": {}, "minus_random_init_ci": {}, "table": [],
           "differences": [], "details": [], "density": [], "history": {},
           "mean_iou": {"random init": 35.0, "MoCo-v2": 60.0, "CLIP RN50-tiny": 34.0},
           "mean_iou_ci": {"random init": [33.0, 37.0], "MoCo-v2": [57.0, 63.0],
                           "CLIP RN50-tiny": [32.0, 36.0]},
           "at_floor": {"random init": True, "MoCo-v2": False, "CLIP RN50-tiny": True},
           "floor": {"name": "majority class", "what": "every pixel 'not tree'",
                     "mean_iou": 34.7, "overall_accuracy": 69.4}})
    lines = key_metrics("08_segmentation", m08)
    assert "baseline at the floor" in next(x for x in lines if x.startswith("random init"))
    clip = next(x for x in lines if x.startswith("CLIP"))
    assert "at the floor" in clip and "baseline" not in clip
    assert "MoCo" not in " ".join(x for x in lines if "at the floor" in x)
    assert any("floor (majority class): mean IoU 34.7, OA 69.4" in x for x in lines)


def test_the_label_prior_of_every_probed_dataset():
    from geofm_lib.evaluation.probes import Embeddings
    from geofm_lib.records import ProbesRecord
    from geofm_lib.report.summary import key_metrics

    labels = [["a"], ["a", "b"], ["a"], ["c"], ["b"], ["a"]]
    emb = Embeddings(np.zeros((6, 2), np.float32), np.arange(6),
                     np.array(["x"] * 4 + ["y"] * 2), labels, "trained")
    got = floors.label_prior_datasets(emb, emb, ["x", "y", "z"],
                                      {"x": ["a", "b", "c"], "y": ["a", "b", "c"],
                                       "z": ["a"]}, n_boot=10)
    assert set(got) == {"x", "y"}  # z has no images: no floor, no number
    assert got["x"].scores["labels"] >= 1
    probes = {"encoders": ["trained", "init"], "probes": ["linear"], "datasets": ["x", "y"]}
    text = " ".join(key_metrics("06_feature_probes", ProbesRecord.of({
        **probes, "mean_f2_micro": {"trained/linear": 50.0, "init/linear": 40.0},
        "mean_label_prior_f2_micro": 38.5, "per_dataset": {k: {} for k in "abcd"},
        "at_floor": ["init/x/linear", "init/y/mlp", "trained/x/linear"]})))
    assert "floor (label prior) 38.5" in text and "at the floor</b>: 3 of 4 probes" in text
    assert "linear probe: init on x; trained on x" in text
    assert "every probe's interval is above it" in " ".join(key_metrics(
        "06_feature_probes", ProbesRecord.of({**probes, "mean_f2_micro": {}, "per_dataset": {},
                                              "mean_label_prior_f2_micro": 38.5,
                                              "at_floor": []})))


def test_rcf_whitening_is_torchgeo_s_where_it_is_right_and_real_where_it_was_not():
    """torchgeo's RCF whitens with np.linalg.eig; on patches whose covariance is singular (S1
    alone: the S2 channels are 0) eig returned complex eigenvectors and torchgeo dropped their
    imaginary part. The eigh whitening equals torchgeo's on full-rank patches and is an exact
    ZCA on singular ones (the whitened patches' covariance is the identity on their span)."""
    import warnings

    import torch
    from torchgeo.models import RCF

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3, 12, 12)).astype(np.float32)
    ours = floors.rcf_model(x, 4, features=64)
    theirs = RCF(3, 64, 3, -1.0, seed=5, mode="empirical", dataset=floors._Images(x))
    assert torch.allclose(ours.weights, theirs.weights, rtol=1e-3, atol=1e-3)
    half = x.copy()
    half[:, 1:] = 0  # one channel of three: the other two are an absent sensor's zeros
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning
        floors.rcf_model(half, 0, features=64)
    # the whitening itself, against an independent ZCA by SVD, on a singular patch set
    patches = rng.normal(size=(32, 3, 3, 3))
    patches[:, 1:] = 0
    got = floors._symmetric_rcf()._normalize(None, patches.astype(np.float32))
    p = patches.reshape(32, -1)
    p = p - p.mean(1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    u, sv, _ = np.linalg.svd(p.T, full_matrices=True)
    ev = np.zeros(27)
    ev[:len(sv)] = sv ** 2 / 32
    zca = u @ np.diag((ev + 0.001) ** -0.5) @ u.T
    assert np.allclose(got.reshape(32, -1), p @ zca @ zca.T, rtol=1e-4, atol=1e-4)
