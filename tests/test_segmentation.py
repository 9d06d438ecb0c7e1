"""Dense labels and their scores (issue 20, part 2): class masks and tree cover in the shards
round-trip exactly and match the scene's class map; the readers' masks (FloodNet indices,
Agriculture-Vision's overlapping binary masks) come through with their codes; OA, IoU, mean
IoU and the boundary F1 against hand-computed cases."""

import math

import numpy as np
import pytest
from paper_fixtures import AGRIVISION_INVALID, write_agriculture_vision, write_floodnet

from geofm_lib.catalog import get_dataset
from geofm_lib.config import load_config
from geofm_lib.data import build, masks, shards, simulate
from geofm_lib.evaluation import segmentation as seg
from geofm_lib.paths import build_folder


def _samples(folder):
    return list(shards.iter_shards(sorted(folder.glob("*.tar")), dense=True))


# --- masks in the shards ---------------------------------------------------------------------

def test_simulated_masks_round_trip_and_match_the_scene_class_map(tmp_path):
    cfg = load_config("ci", group="all", work_dir=str(tmp_path), scene_px=64, image_px=32,
                      samples_per_dataset=4)
    build.build_shards(cfg, show_progress=False)
    samples = _samples(build_folder(cfg))
    seen = set()
    for s in samples:
        m = s["json"]
        assert m["dense"] == ["mask", "trees"]
        assert s["mask"].dtype == np.uint8 and s["mask"].shape == (32, 32)
        scene = simulate.render(m["dataset"], m["index"], seed=cfg.seed, image_px=64)
        y, x = m["patch_origin_px"]
        vocab = get_dataset(m["dataset"]).labels
        assert np.array_equal(s["mask"], simulate.window_mask(scene.layers, y, x, 32, 32, vocab))
        assert np.array_equal(s["trees"], simulate.window_trees(scene.layers, y, x, 32, 32))
        # where no object covers a pixel, the mask is the land-cover class map itself
        cm = scene.layers.class_map[y:y + 32, x:x + 32]
        free = (scene.layers.object_cover[y:y + 32, x:x + 32].max(-1, initial=0) < 0.5)
        areas = np.array([vocab.index(a) if lab else masks.MASK_BACKGROUND for a, lab in
                          zip(scene.layers.area_names, scene.layers.area_is_label, strict=True)])
        assert np.array_equal(s["mask"][free], areas[cm][free])
        # objects over at least half a pixel take it (the labels count the land cover under
        # them too: a flooded building on water leaves the patch labelled Water)
        top = scene.layers.object_cover[y:y + 32, x:x + 32]
        if top.shape[-1]:
            covered = top.max(-1) >= 0.5
            label = dict(zip(scene.layers.object_names, scene.layers.object_is_label,
                             strict=True))
            obj = np.array([vocab.index(n) if label[n] else masks.MASK_BACKGROUND
                            for n in scene.layers.cover_names])
            assert np.array_equal(s["mask"][covered], obj[top.argmax(-1)][covered])
        seen.add(m["dataset"])
    assert "bigearthnet_s2" in seen and "xview" in seen


def test_tree_cover_is_the_share_of_tree_crowns(tmp_path):
    scene = next(s for i in range(40)
                 if "Coniferous forest" in (s := simulate.render("bigearthnet_s2", i)).labels)
    layers = scene.layers
    j = layers.area_names.index("Coniferous forest")
    pure = layers.class_map == j  # conifer on conifer: every pixel all trees
    assert pure.any() and np.allclose(layers.tree_fraction[pure], 1.0)
    trees = simulate.window_trees(layers, 0, 0, *layers.class_map.shape)
    assert trees.max() <= 100 and (trees[pure] == 100).all()
    water = [i for i, a in enumerate(layers.area_names) if a == "Water bodies"]
    if water:
        assert (trees[layers.class_map == water[0]] == 0).all()


def test_codes_become_training_targets():
    stored = np.array([[0, 3, masks.MASK_BACKGROUND], [masks.MASK_SEVERAL, masks.MASK_NODATA, 1]],
                      np.uint8)
    assert masks.to_class_index(stored, 4).tolist() == [[0, 3, 4], [-1, -1, 1]]
    with pytest.raises(ValueError, match="neither vocabulary indices"):
        masks.to_class_index(np.array([[7]], np.uint8), 4)
    assert masks.mask_classes(["a", "b"]) == ["a", "b", "background"]
    a = np.zeros((2, 3), bool)
    a[0, :2] = True
    b = np.zeros((2, 3), bool)
    b[0, 1:] = True
    valid = np.ones((2, 3), bool)
    valid[1, 2] = False
    out = masks.from_class_masks({"a": a, "b": b}, ["a", "b"], valid)
    assert out.tolist() == [[0, masks.MASK_SEVERAL, 1], [250, 250, masks.MASK_NODATA]]


def test_floodnet_index_masks_reach_the_shards_as_harvey_classes(tmp_path):
    write_floodnet(tmp_path / "fn")
    cfg = load_config("ci", group="C", datasets=["houston_harvey"], work_dir=str(tmp_path),
                      image_px=32, sources={"houston_harvey": {
                          "reader": "class_masks", "root": str(tmp_path / "fn"),
                          "splits": "official"}})
    folder = build.build_shards(cfg, None, False)
    vocab = get_dataset("houston_harvey").labels
    names = {1: "Flooded building", 3: "Flooded road", 5: "Water"}  # others: background
    from paper_fixtures import FLOODNET_IMAGES
    for s in _samples(folder):
        m = s["json"]
        regions = FLOODNET_IMAGES[m["split"]][m["image_id"]]
        full = np.full((64, 64), masks.MASK_BACKGROUND, np.uint8)
        for value, x0, y0, x1, y1 in regions:
            full[y0:y1, x0:x1] = vocab.index(names[value]) if value in names else 250
        y, x = m["patch_origin_px"]
        assert np.array_equal(s["mask"], full[y:y + 32, x:x + 32]), (m["image_id"], y, x)
        assert "trees" not in s and m["dense"] == ["mask"]


def test_agriculture_vision_masks_keep_the_field_boundary(tmp_path):
    write_agriculture_vision(tmp_path / "av")
    cfg = load_config("ci", group="B", datasets=["agriculture_vision"], work_dir=str(tmp_path),
                      image_px=32, sources={"agriculture_vision": {
                          "reader": "agriculture_vision", "root": str(tmp_path / "av"),
                          "splits": "official"}})
    folder = build.build_shards(cfg, None, False)
    found = 0
    for s in _samples(folder):
        m = s["json"]
        if m["split"] == "train" and m["patch_origin_px"] == [0, 0]:
            tile = f"{m['field_id']}_{'-'.join(map(str, m['field_window_px']))}"
            if "UG6H862FY" in tile:  # double_plant over (0, 0)-(20, 20); outside the field
                vocab = list(get_dataset("agriculture_vision").labels)
                assert (s["mask"][:20, :20] == vocab.index("Double plant")).all()
                assert (s["mask"][20:, 20:] == masks.MASK_BACKGROUND).all()
                found += 1
        x0, y0, x1, y1 = AGRIVISION_INVALID  # the dropped patch: not in the shards
        assert m["patch_origin_px"] != [y0, x0] or "UG6H862FY" not in m.get("field_id", "")
    assert found == 1


# --- scores ----------------------------------------------------------------------------------

def test_oa_iou_and_mean_iou_by_hand():
    t = np.array([[0, 0], [1, 1]])
    p = np.array([[0, 1], [1, 1]])
    cm = seg.confusion(t, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    s = seg.scores(cm)
    assert s["overall_accuracy"] == 75.0
    assert s["iou"][0] == pytest.approx(50.0) and s["iou"][1] == pytest.approx(200 / 3)
    assert math.isnan(s["iou"][2])  # in neither: no IoU, and not in the mean
    assert s["mean_iou"] == pytest.approx((50 + 200 / 3) / 2)
    # ignored target pixels are left out of everything
    t2 = np.array([[0, -1], [1, 1]])
    assert seg.confusion(t2, p, 3).sum() == 3
    assert seg.scores(seg.confusion(t2, p, 3))["overall_accuracy"] == 100.0
    with pytest.raises(ValueError, match="outside"):
        seg.confusion(t, p + 5, 3)


def test_boundary_f1_by_hand():
    true = np.zeros((4, 4), int)
    true[:, 2:] = 1  # boundary columns 1 and 2
    assert seg.boundaries(true)[0].tolist() == [False, True, True, False]
    assert seg.boundary_f1(true, true) == 1.0
    shifted = np.zeros((4, 4), int)
    shifted[:, 3:] = 1  # boundary columns 2 and 3: half of each on the other's
    assert seg.boundary_f1(true, shifted, tolerance_px=0) == pytest.approx(0.5)
    assert seg.boundary_f1(true, shifted, tolerance_px=1) == pytest.approx(1.0)
    assert math.isnan(seg.boundary_f1(np.zeros((3, 3), int), np.zeros((3, 3), int)))
    assert seg.boundary_f1(true, np.zeros((4, 4), int)) == 0.0


def test_boundary_weights_mark_the_edges():
    m = np.zeros((4, 6), int)
    m[:, 3:] = 1
    m[0, 0] = -1
    w = seg.boundary_weights(m, width_px=1, weight=3.0)
    assert w[1].tolist() == [1, 1, 3, 3, 1, 1] and w[0, 0] == 0
    wide = seg.boundary_weights(m, width_px=2, weight=3.0)
    assert wide[1].tolist() == [1, 3, 3, 3, 3, 1]
    assert seg.boundary_weights(np.stack([m, m])).shape == (2, 4, 6)


def test_intervals_resample_images():
    t = np.zeros((2, 4, 4), int)
    t[:, :, 2:] = 1
    perfect = seg.evaluate_masks(t, t, ["a", "b"], n_boot=50)
    assert perfect.mean_iou == 100.0 and perfect.ci["mean_iou"] == [100.0, 100.0]
    assert perfect.boundary_f1 == 100.0 and perfect.n_pixels == 32
    half = t.copy()
    half[1] = 1 - t[1]  # the second image all wrong
    r = seg.evaluate_masks(t, half, ["a", "b"], n_boot=200)
    assert r.overall_accuracy == 50.0
    lo, hi = r.ci["overall_accuracy"]
    assert lo == 0.0 and hi == 100.0  # resampling images: all-wrong to all-right
    assert set(r.row()["iou"]) == {"a", "b"}


# --- the segmenter ---------------------------------------------------------------------------

BANDS = ["B02", "B03", "B04", "B08", "VV", "VH"]


def _toy(n, px=16, seed=0):
    """Class 1 where band 0 is positive, else 0, in 4 x 4 blocks (regions, as land cover
    comes), with pixel noise: a task a UNet learns in a few epochs."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(n, len(BANDS), px // 4, px // 4)).astype(np.float32)
    x = np.kron(coarse, np.ones((4, 4), np.float32))
    x += 0.2 * rng.normal(size=x.shape).astype(np.float32)
    y = np.kron(coarse[:, 0] > 0, np.ones((4, 4), int)).astype(np.int64)
    y[:, 0, 0] = -1  # a left-out pixel
    return x, y


def test_the_encoder_loads_pretrained_weights_and_refuses_others():
    import timm
    import torch

    from geofm_lib.evaluation.segmenter import build_segmenter

    src = timm.create_model("resnet18", in_chans=len(BANDS), num_classes=0)
    net = build_segmenter("unet", "resnet18", BANDS, 3, encoder_state=src.state_dict())
    got = net.encoder.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())
    other = timm.create_model("resnet34", in_chans=len(BANDS), num_classes=0)
    with pytest.raises(ValueError, match="do not fit resnet18"):
        build_segmenter("unet", "resnet18", BANDS, 3, encoder_state=other.state_dict())
    with pytest.raises(ValueError, match="takes decoder=upconv"):
        build_segmenter("unet", "vit_small_patch16", BANDS, 3, image_px=32)
    with pytest.raises(ValueError, match="ResNet encoders, the UpConv decoder ViTs"):
        build_segmenter("upconv", "resnet18", BANDS, 3)


def test_a_vit_encoder_gets_the_upconv_decoder_and_its_pretrained_weights():
    """Seed 001's UpConv decoder on a ViT's patch tokens (MAE's encoder): logits at the input's
    resolution, the encoder's weights exactly the pretrained ones, the frozen protocol keeps
    them, and a ResNet stem variant is refused."""
    import torch

    from geofm_lib.evaluation.segmenter import build_segmenter, decoder_for, fit_segmenter
    from geofm_lib.models.backbones import make_backbone

    assert decoder_for("vit_tiny_patch16", "unet") == "upconv"
    assert decoder_for("resnet18", "deeplabv3plus") == "deeplabv3plus"
    src = make_backbone("vit_tiny_patch16", BANDS, "first_layer", 3, 32)
    net = build_segmenter("upconv", "vit_tiny_patch16", BANDS, 2,
                          encoder_state=src.state_dict(), image_px=32)
    got = net.encoder.state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())
    assert tuple(net(torch.randn(2, len(BANDS), 32, 32)).shape) == (2, 2, 32, 32)
    # patch 8: three x2 stages instead of four
    p8 = build_segmenter("upconv", "vit_small_patch8", BANDS, 3, image_px=32)
    assert sum(isinstance(m, torch.nn.Upsample) for m in p8.decoder) == 3
    assert tuple(p8(torch.randn(1, len(BANDS), 32, 32)).shape) == (1, 3, 32, 32)
    x, y = _toy(16, px=32)
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    run = fit_segmenter(net, x, y, x[:4], y[:4], ["no", "yes"], protocol="frozen", epochs=2,
                        batch_size=8, n_boot=10)
    assert all(torch.equal(before[k], v) for k, v in net.encoder.state_dict().items())
    assert len(run.history) == 2 and run.predictions.shape == (4, 32, 32)
    with pytest.raises(ValueError, match="patch embedding instead"):
        build_segmenter("upconv", "vit_tiny_patch16", BANDS, 2, stem="detail", image_px=32)
    other = make_backbone("vit_small_patch16", BANDS, "first_layer", 0, 32)
    with pytest.raises(ValueError, match="do not fit vit_tiny_patch16"):
        build_segmenter("upconv", "vit_tiny_patch16", BANDS, 2,
                        encoder_state=other.state_dict(), image_px=32)


@pytest.mark.parametrize("protocol", ["frozen", "finetune"])
def test_protocols_train_what_they_say_and_the_model_learns(protocol):
    import torch

    from geofm_lib.evaluation.segmenter import build_segmenter, fit_segmenter

    x, y = _toy(48)
    xt, yt = _toy(16, seed=1)
    net = build_segmenter("unet", "resnet18", BANDS, 2, seed=0)
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    run = fit_segmenter(net, x, y, xt, yt, ["no", "yes"], protocol=protocol, epochs=10,
                        batch_size=8, lr=3e-3, n_boot=20)
    after = net.encoder.state_dict()
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert unchanged == (protocol == "frozen")  # weights and BatchNorm statistics
    assert [h["epoch"] for h in run.history] == list(range(1, 11))
    assert all("val_mean_iou" in h for h in run.history)
    losses = [h["train_loss"] for h in run.history]
    assert losses[-1] < losses[0], losses  # the decoder learns either way
    if protocol == "finetune":  # band 0's sign per pixel: easy with the whole network
        assert run.final.mean_iou > 75, run.history  # chance: about 33
    lo, hi = run.final.ci["mean_iou"]
    assert lo <= run.final.mean_iou <= hi
    assert run.final.n_pixels == 16 * 16 * 16 - 16  # the left-out pixels are not scored


@pytest.mark.parametrize("decoder,backbone,stem", [("unet", "resnet18", "detail"),
                                                    ("upconv", "vit_tiny_patch16", "standard")])
def test_frozen_features_computed_once_give_the_fit_of_an_encoder_run_on_every_batch(
        decoder, backbone, stem, monkeypatch, caplog):
    """The frozen protocol keeps its encoder's features of the training and test images
    (computed once) and trains the decoder on them: the same losses, scores and predictions,
    to the bit, as running the frozen encoder on every batch (its budget set to nothing),
    for a UNet on a ResNet with the detail stem (logits resized) and the UpConv decoder on a
    ViT; segmentation and the density regressor. Above the budget it says so and runs the
    encoder on every batch."""
    import logging

    from geofm_lib.evaluation import segmenter

    x, y = _toy(24, px=32)
    xt, yt = _toy(10, px=32, seed=1)
    runs = {}
    for budget in (0, segmenter.FEATURE_CACHE_BYTES):
        monkeypatch.setattr(segmenter, "FEATURE_CACHE_BYTES", budget)
        with caplog.at_level(logging.INFO, logger="geofm"):
            caplog.clear()
            net = segmenter.build_segmenter(decoder, backbone, BANDS, 2, stem=stem, seed=0,
                                            image_px=32)
            seg = segmenter.fit_segmenter(net, x, y, xt, yt, ["no", "yes"], protocol="frozen",
                                          epochs=2, batch_size=8, n_boot=10, statistics_from=x)
            net = segmenter.build_segmenter(decoder, backbone, BANDS, 1, stem=stem, seed=0,
                                            image_px=32)
            den = segmenter.fit_density(net, x, np.where(y < 0, -1, 80.0 * y + 10), xt,
                                        np.where(yt < 0, -1, 80.0 * yt + 10), protocol="frozen",
                                        epochs=2, batch_size=8, n_boot=10)
            runs[budget] = (seg, den, caplog.text)
    (seg0, den0, said), (seg1, den1, quiet) = runs[0], runs[segmenter.FEATURE_CACHE_BYTES]
    assert "runs on every batch" in said and "runs on every batch" not in quiet
    for a, b in ((seg0, seg1), (den0, den1)):
        assert a.history == b.history
        assert np.array_equal(a.predictions, b.predictions)
    assert seg0.final.mean_iou == seg1.final.mean_iou and den0.final == den1.final


def test_detail_stem_keeps_the_input_resolution_longer():
    import torch

    from geofm_lib.evaluation.segmenter import build_segmenter

    net = build_segmenter("unet", "resnet18", BANDS, 2, stem="detail")
    resnet = net.encoder.model
    assert resnet.conv1.stride == (1, 1) and isinstance(resnet.maxpool, torch.nn.Identity)
    assert resnet.layer1[0].conv1.stride == (2, 2)
    sizes = [tuple(f.shape[-2:]) for f in net.encoder(torch.randn(1, len(BANDS), 32, 32))]
    assert sizes[1] == (32, 32)  # the stem's features at full resolution (standard: 16)
    assert tuple(net(torch.randn(2, len(BANDS), 32, 32)).shape) == (2, 2, 32, 32)
    w = build_segmenter("deeplabv3plus", "resnet50", BANDS, 2, stem="detail")
    assert tuple(w(torch.randn(2, len(BANDS), 32, 32)).shape) == (2, 2, 32, 32)


def test_places_carry_their_masks(tmp_path):
    from geofm_lib import ssl

    cfg = load_config("ci", group="A", work_dir=str(tmp_path), samples_per_dataset=12)
    build.build_shards(cfg, show_progress=False)
    pairs = ssl.load_pairs(cfg, "train")
    assert pairs.masks.shape == (len(pairs), 32, 32) and pairs.trees.shape == pairs.masks.shape
    sub = pairs.subset([2, 0])
    assert np.array_equal(sub.masks[1], pairs.masks[0])
    by_key = {s["json"]["pair_id"]: s["mask"] for s in _samples(build_folder(cfg))
              if s["json"]["dataset"] == "bigearthnet_s2" and s["json"]["split"] == "train"}
    assert all(np.array_equal(by_key[p], m) for p, m in zip(pairs.pair_ids, pairs.masks,
                                                            strict=True))


def test_validation_shards_rewritten_without_duplicates_keep_their_masks(tmp_path):
    """The build drops validation images that also occur in train by rewriting the shard:
    the dense labels of the samples it keeps are rewritten with them."""
    from geofm_lib.data.build import _drop_val_duplicates

    img = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    other = img + 100
    mask = np.full((4, 4), 3, np.uint8)
    meta = {"dataset": "x", "bands": ["VV", "VH"], "labels": [], "split": "val"}

    def sample(key, image):
        return {"__key__": key, "img": image, "txt": "t", "json": dict(meta), "mask": mask,
                "trees": mask * 10}

    sidecars = {}
    for split, samples in (("train", [sample("a", img)]),
                           ("val", [sample("b", img), sample("c", other)])):
        name = f"{split}-x-000000.tar"
        side = shards.write_shard(tmp_path / name, samples)
        side.update(split=split, dataset="x", stats={})
        sidecars[name] = side
    _drop_val_duplicates(tmp_path, sidecars)
    (kept,) = shards.iter_shards([tmp_path / "val-x-000000.tar"], dense=True)
    assert kept["__key__"] == "c" and np.array_equal(kept["mask"], mask)
    assert np.array_equal(kept["trees"], mask * 10)
    (plain,) = shards.iter_shards([tmp_path / "val-x-000000.tar"])
    assert "mask" not in plain  # readers that do not ask skip the dense members


def test_tree_density_scores_by_hand():
    from geofm_lib.evaluation.segmentation import evaluate_density, paired_rmse_difference

    t = np.array([[[0, 50], [100, -1]], [[20, 20], [20, 20]]], float)  # -1: left out
    p = np.array([[[10, 50], [80, 99]], [[20, 20], [20, 30]]], float)
    s = evaluate_density(t, p, n_boot=50)
    err = np.array([10, 0, -20, 0, 0, 0, 10])  # the 7 valid pixels
    assert s["rmse"] == pytest.approx(np.sqrt((err ** 2).mean()))
    assert s["mae"] == pytest.approx(np.abs(err).mean())
    tv = np.array([0, 50, 100, 20, 20, 20, 20])
    assert s["r2"] == pytest.approx(1 - (err ** 2).sum() / ((tv - tv.mean()) ** 2).sum())
    assert s["n_pixels"] == 7 and s["n_images"] == 2
    assert s["ci"]["rmse"][0] <= s["rmse"] <= s["ci"]["rmse"][1]
    assert np.isfinite(s["ci"]["r2"]).all()  # draws without spread are left out, not NaN
    d, ci = paired_rmse_difference(t, t.clip(0), p, n_boot=50)
    assert d == pytest.approx(-s["rmse"]) and ci[1] <= 0  # perfect minus imperfect


def test_the_density_regressor_learns_the_cover():
    from geofm_lib.evaluation.segmenter import build_segmenter, fit_density

    x, y = _toy(48)
    cover = np.where(y < 0, -1, 80.0 * y + 10.0)  # 90 % where band 0 is positive, else 10 %
    xt, yt = _toy(16, seed=1)
    cover_t = np.where(yt < 0, -1, 80.0 * yt + 10.0)
    net = build_segmenter("unet", "resnet18", BANDS, 1, seed=0)
    run = fit_density(net, x, cover, xt, cover_t, protocol="finetune", epochs=10, batch_size=8,
                      lr=3e-3, n_boot=20)
    rmse = [h["val_rmse"] for h in run.history]
    assert rmse[-1] < rmse[0] and run.final["rmse"] < 25, rmse  # the target's std: ~40
    assert run.final["r2"] > 0.5
    assert run.predictions.shape == cover_t.shape
    assert 0 <= run.predictions.min() and run.predictions.max() <= 100
