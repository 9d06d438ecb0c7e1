"""MoCo-v2 with sensor-based positive pairs (issue 8): pairs, queue, momentum rule, the loss on a
fixed batch, adapters for 2 and 13 bands, the collapse check, real S1/S2 pairs."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")
pytest.importorskip("lightning")

from geofm_lib import encoders, errors, paths, ssl  # noqa: E402
from geofm_lib.catalog import SENSORS  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.data import build  # noqa: E402
from geofm_lib.ssl import callbacks  # noqa: E402
from geofm_lib.ssl import evaluation as ssl_evaluation  # noqa: E402


@pytest.fixture
def work(paired_shards):
    """Group A at 32 px (conftest's paired_shards, built once for the session)."""
    return paired_shards


def _cfg(work, **kw):
    base = dict(group="A", work_dir=str(work), samples_per_dataset=24, ssl_batch_size=8,
                ssl_epochs=1, moco_queue=16, run_name="ssl")
    return load_config("ci", **{**base, **kw})


def test_a_sensor_pair_is_one_place_seen_by_two_sensors(work):
    pairs = ssl.load_pairs(_cfg(work), "train")
    assert len(pairs) == 18 and pairs.incomplete == 0  # S1 and S2 share their split
    n_opt = len(pairs.optical_bands)
    loader = torch.utils.data.DataLoader(ssl.PairViews(pairs, "sensor"), batch_size=8)
    batch = next(iter(loader))
    assert batch["pair_q"] == batch["pair_k"]  # the same place ...
    c = batch["image"].shape[1] // 2
    for i, (sq, sk) in enumerate(zip(batch["sensor_q"], batch["sensor_k"], strict=True)):
        assert {sq, sk} == {"s1", "s2"}  # ... from the two sensors
        for view, sensor in ((batch["image"][i, :c], sq), (batch["image"][i, c:], sk)):
            optical, sar = view[:n_opt].abs().sum(), view[n_opt:].abs().sum()
            assert (optical > 0 and sar == 0) if sensor == "s2" else (optical == 0 and sar > 0)
    fused = ssl.PairViews(pairs, "fusion_all")[0]
    assert fused["image"][:n_opt].abs().sum() > 0 and fused["image"][n_opt:c].abs().sum() > 0
    assert len(ssl.PairViews(pairs, "augment")) == 2 * len(pairs)


def _fit(task, batches, steps):
    from lightning.pytorch import Trainer

    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    with callbacks.quiet_lightning():
        Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False).fit(task, loader)


def test_queue_updates_and_the_key_encoder_follows_the_momentum_rule(work):
    cfg = _cfg(work, moco_momentum=0.9, ssl_augment="none")
    pairs = ssl.load_pairs(cfg, "train")
    task = ssl.build_task(cfg, pairs.bands)
    assert all(torch.equal(a, b) for a, b in zip(task.backbone.state_dict().values(),
                                                  task.backbone_momentum.state_dict().values(),
                                                  strict=True))  # key side starts as a copy
    batch = torch.utils.data.default_collate([ssl.PairViews(pairs, "sensor")[i] for i in range(8)])
    name = "layer1.0.conv1.weight"
    q0 = dict(task.backbone.named_parameters())[name].detach().clone()
    with torch.no_grad():  # make the two sides differ, so the rule is visible
        dict(task.backbone_momentum.named_parameters())[name].mul_(0.5)
    k0 = dict(task.backbone_momentum.named_parameters())[name].detach().clone()
    ptr0 = int(task.criterion.memory_bank.bank_ptr)
    _fit(task, [batch], steps=1)
    k1 = dict(task.backbone_momentum.named_parameters())[name]
    assert torch.allclose(k1, 0.9 * k0 + 0.1 * q0, atol=1e-6)  # k <- m k + (1 - m) q
    assert int(task.criterion.memory_bank.bank_ptr) == (ptr0 + 8) % cfg.moco_queue
    assert task.criterion.memory_bank.bank[ptr0:ptr0 + 8].abs().sum() > 0  # keys enqueued
    assert not torch.equal(dict(task.backbone.named_parameters())[name], q0)  # query learned


def test_the_loss_on_a_fixed_batch_falls(work):
    cfg = _cfg(work, moco_queue=0, ssl_augment="none", ssl_lr=0.05, ssl_epochs=10)
    pairs = ssl.load_pairs(cfg, "train")
    task = ssl.build_task(cfg, pairs.bands)
    batch = torch.utils.data.default_collate([ssl.PairViews(pairs, "sensor")[i]
                                              for i in range(8)])
    losses = []
    original = task.training_step

    def step(b, i, *a):
        loss = original(b, i, *a)
        losses.append(float(loss.detach()))
        return loss

    task.training_step = step
    _fit(task, [batch] * 12, steps=12)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


@pytest.mark.parametrize("adapter", ["conv1x1", "first_layer"])
@pytest.mark.parametrize("bands", [["VV", "VH"], list(SENSORS["sentinel2_l1c"].band_names)])
def test_each_input_adapter_takes_2_and_13_bands(adapter, bands):
    net = ssl.make_backbone("resnet18", bands, adapter, seed=0)
    out = net(torch.randn(4, len(bands), 32, 32))
    assert out.shape == (4, 512)
    out.sum().backward()
    first = net.conv1.mix if adapter == "conv1x1" else net.conv1
    assert first.in_channels == len(bands) and first.weight.grad is not None


def test_a_collapsed_encoder_trips_the_collapse_check():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.randn(512))

        def forward(self, x):
            return self.bias.expand(len(x), -1) + 0 * x.mean()

    x = np.random.default_rng(0).normal(size=(64, 14, 32, 32)).astype(np.float32)
    collapsed = ssl.collapse_check(torch.from_numpy(ssl.features_of(Constant(), x)))
    assert collapsed["collapsed"] and collapsed["embedding_std"] < 1e-6
    healthy = ssl.collapse_check(torch.from_numpy(ssl.features_of(
        ssl.make_backbone("resnet18", ["VV"] * 14, "first_layer", 0), x)))
    assert not healthy["collapsed"]


def test_pretrain_resumes_and_evaluates(work):
    cfg = _cfg(work, ssl_epochs=2, labelled_samples=12)
    first = ssl.pretrain(cfg, show_progress=False)
    assert len(first.history) >= 2 and not first.already_finished
    again = ssl.pretrain(cfg, show_progress=False)
    assert again.already_finished and again.history == first.history
    net, state = ssl.read_encoder(first.encoder_path)
    assert state["bands"][-2:] == ["VV", "VH"] and state["mode"] == "sensor"
    rows = ssl.evaluate(cfg, first.encoder_path, finetune_epochs=1, n_boot=20,
                        show_progress=False)
    assert {r["input"] for r in rows} == set(ssl.INPUTS)
    # per input and task: the floor, random init, RCF, the MoCo probe, scratch, fine-tuned
    assert {r["task"] for r in rows} == {"multi-label", "single-label"} and len(rows) == 36
    floors_ = [r for r in rows if r.get("floor")]
    assert {r["method"] for r in floors_} == {"label prior (floor)", "majority class (floor)"}
    assert all("at_floor" in r for r in rows if r["method"].startswith(("random init", "RCF")))
    for r in rows:
        assert r["ci"][0] <= r["score"] <= r["ci"][1] and 0 <= r["score"] <= 100
        assert r["metric"] == ("F2 micro" if r["task"] == "multi-label" else "accuracy")
    assert all(r["n_train"] == 12 for r in rows if r["task"] == "multi-label")
    moco = [r for r in rows if r["method"].endswith("linear probe") and "MoCo" in r["method"]
            and r["task"] == "multi-label"]
    assert all(r["minus_random_init_ci"][0] <= r["minus_random_init"]
               <= r["minus_random_init_ci"][1] for r in moco) and len(moco) == 3
    assert all(r["minus_rcf_ci"][0] <= r["minus_rcf"] <= r["minus_rcf_ci"][1] for r in moco)
    head = ssl.headline_scores(rows)
    assert head["strongest_baseline"] in ("random init", "RCF")
    assert head["ssl_minus_strongest_f2_s1s2"] == round(
        moco[-1]["minus_random_init" if head["strongest_baseline"] == "random init"
                 else "minus_rcf"], 2)
    # the baselines do not depend on the encoder: a second evaluation takes them from the
    # store beside the checkpoints (18: random init, RCF and scratch x 3 inputs x 2 tasks),
    # with the same numbers, and redoes the rest
    stores = [p for p in cfg.path("checkpoints").glob("ssl-baselines/*.json")  # this backbone's
              if json.loads(p.read_text())["spec"]["backbone"] == state["backbone"]]
    assert len(stores) == 1 and len(json.loads(stores[0].read_text())["rows"]) == 18
    fitted = []
    real_fit = ssl_evaluation.fit_head
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ssl_evaluation, "fit_head", lambda *a, **k: fitted.append(1) or
                   real_fit(*a, **k))
        again_rows = ssl.evaluate(cfg, first.encoder_path, finetune_epochs=1, n_boot=20,
                                  show_progress=False)
    assert again_rows == rows
    assert len(fitted) == 6  # only the MoCo fine-tunes: 3 inputs x 2 tasks

    emb = encoders.embed(cfg, f"ssl:{first.encoder_path}", "val", show_progress=False)
    assert emb.features.shape[1] == 512 and np.isfinite(emb.features).all()
    assert set(emb.datasets) == {"bigearthnet_s2", "bigearthnet_s1"}


def test_no_pairs_is_a_clear_error(tmp_path):
    """Optical images alone are single-sensor places: pretraining with augmentation pairs
    works on them; sensor pairs are refused with what to use instead."""
    cfg = load_config("ci", group="B", work_dir=str(tmp_path))
    build.build_shards(cfg, show_progress=False)
    places = ssl.load_pairs(cfg, "train")
    assert places.single_sensor and places.bands == ["R", "G", "B"]
    with pytest.raises(errors.PairError, match="use ssl_mode=augment"):
        ssl.PairViews(places, "sensor", 0)


def test_real_bigearthnet_pairs_load(shared_data, tmp_path):
    """The six real S1/S2 pairs of ../shared/data (stacked through torchgeo) as a format check."""
    from geofm_lib.data.examples import bigearthnet_torchgeo_root

    src = shared_data / "bigearthnet-v1-examples"
    root = tmp_path / "ben"
    bigearthnet_torchgeo_root(root, src / "BigEarthNet-S2", src / "BigEarthNet-S1", None, "pairs")
    cfg = load_config("ci", group="custom", datasets=["bigearthnet_s1s2"], image_px=120,
                      sources={"bigearthnet_s1s2": {"reader": "torchgeo",
                                                    "dataset_class": "BigEarthNet",
                                                    "root": str(root)}},
                      val_fraction=0.25, work_dir=str(tmp_path / "w"))
    build.build_shards(cfg, show_progress=False)
    both = [ssl.load_pairs(cfg, split) for split in ("train", "val")]
    assert sum(len(p) for p in both) == 6
    p = both[0]
    assert p.sar_bands == ["VV", "VH"] and len(p.optical_bands) == 12
    assert np.isfinite(p.optical).all() and abs(float(p.sar.mean())) < 1.0  # standardised dB


def test_every_simulated_place_has_its_dominant_land_cover_class(work):
    pairs = ssl.load_pairs(_cfg(work), "train")
    assert all(d in labs for d, labs in zip(pairs.dominant, pairs.labels, strict=True))
    from geofm_lib.data import simulate

    s = simulate.render("bigearthnet_s2", 3, image_px=32)
    counts = {n: int((s.layers.class_map == i).sum()) for i, n in enumerate(s.layers.area_names)
              if s.layers.area_is_label[i]}
    assert simulate.window_dominant(s.layers, 0, 0, 32, 32) == max(counts, key=counts.get)


def test_single_label_targets_count_unseen_classes_as_errors():
    vocab = ["a", "b", "c"]
    blank = np.zeros((4, 1, 2, 2), np.float32)
    train = ssl.Pairs(["B04"], ["VV"], blank, blank, list("wxyz"), [["a"]] * 4, vocab,
                      dominant=["a", "b", None, "a"])
    test = ssl.Pairs(["B04"], ["VV"], blank, blank, list("WXYZ"), [["a"]] * 4, vocab,
                     dominant=["b", "c", None, "a"])
    sl = ssl.single_labels(train, np.arange(4), test)
    assert sl.classes == ["a", "b"] and list(sl.train_idx) == [0, 1, 3]
    assert list(sl.y_train) == [0, 1, 0] and list(sl.y_test) == [1, -1, -2, 0]
    no_map = ssl.Pairs(["B04"], ["VV"], blank, blank, list("wxyz"), [["a"]] * 4, vocab,
                       dominant=[None] * 4)
    assert ssl.single_labels(no_map, np.arange(4), test) is None
    acc, ci = ssl.accuracy_ci(np.array([1, -1, 0]), np.array([1, 0, 0]), 50, 0)
    assert acc == pytest.approx(200 / 3) and ci[0] <= acc <= ci[1]


def test_one_or_two_ranks_see_the_same_global_batches():
    one = list(ssl.EpochSampler(10, 4, seed=3))
    two = [list(ssl.EpochSampler(10, 4, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert len(one) == 8 and all(e == 0 for e, _ in one)
    for b in range(2):
        assert one[4 * b:4 * b + 4] == two[0][2 * b:2 * b + 2] + two[1][2 * b:2 * b + 2]
    s = ssl.EpochSampler(10, 4, seed=3)
    s.set_epoch(1)
    assert list(s) != one and {e for e, _ in s} == {1}
    with pytest.raises(ValueError, match="multiple of 3"):
        ssl.EpochSampler(10, 4, seed=3, world=3)


def test_non_overlapping_keeps_no_two_overlapping_footprints():
    # a 4x4 grid of unit tiles (adjacent: no overlap) and the same grid shifted by half a tile
    tiles = [[x, y, x + 1, y + 1] for x in range(4) for y in range(4)]
    shifted = [[x + 0.5, y + 0.5, x + 1.5, y + 1.5] for x in range(4) for y in range(4)]
    keep = ssl.non_overlapping(tiles + shifted, seed=0)
    boxes = np.array(tiles + shifted)[keep]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            assert min(a[2], b[2]) - max(a[0], b[0]) <= 1e-9 or \
                min(a[3], b[3]) - max(a[1], b[1]) <= 1e-9
    assert 8 <= len(keep) < 32
    assert list(ssl.non_overlapping(tiles)) == list(range(16))  # adjacent tiles all stay
    with pytest.raises(errors.PairError, match="ssl_patches=all"):
        ssl.non_overlapping([[0, 0, 1, 1], None])


def test_half_overlapping_patches_and_the_non_overlapping_subset(tmp_path):
    cfg = load_config("ci", group="A", work_dir=str(tmp_path), samples_per_dataset=6,
                      image_px=32, scene_px=64, patch_stride_px=16, ssl_patches="non_overlapping")
    build.build_shards(cfg, show_progress=False)
    pairs = ssl.load_pairs(cfg, "train")
    per_scene = 9  # origins 0, 16, 32 on both axes
    assert len(pairs) % per_scene == 0 and len(pairs) >= per_scene
    keep = ssl.non_overlapping(pairs.bounds, cfg.seed)
    assert len(pairs) // per_scene <= len(keep) <= 4 * len(pairs) // per_scene
    with pytest.raises(Exception, match="patch_stride_px=40 is larger than image_px=32"):
        load_config("ci", image_px=32, patch_stride_px=40)


class _Crash(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_weights(work):
    """Killed after epoch 1 of 2 (after last.ckpt was written), then resumed: the encoder is
    identical to the uninterrupted run's, as is the logged history."""
    from lightning.pytorch.callbacks import Callback

    class CrashAfterFirstEpoch(Callback):
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 0:
                raise _Crash("simulated kill")

    whole = ssl.pretrain(_cfg(work, ssl_epochs=2, run_name="whole", moco_temperature=0.3),
                         show_progress=False)
    cut = _cfg(work, ssl_epochs=2, run_name="cut", moco_temperature=0.3, work_dir=str(work / "cut"))
    import shutil

    shutil.copytree(work / "shards", work / "cut" / "shards", dirs_exist_ok=True)
    with pytest.raises(_Crash):
        ssl.pretrain(cut, show_progress=False, callbacks=[CrashAfterFirstEpoch()])
    assert (paths.ssl_dir(cut) / "last.ckpt").is_file()
    assert not (paths.ssl_dir(cut) / "encoder.pt").exists()
    resumed = ssl.pretrain(cut, show_progress=False)
    assert resumed.resumed
    a = torch.load(whole.encoder_path, weights_only=True)["state_dict"]
    b = torch.load(resumed.encoder_path, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]


def test_torchrun_two_processes_share_the_global_batch_and_the_queue(work):
    """Two gloo processes under torchrun: every process trains, rank 0 writes the encoder, and
    the queue holds the keys of both (gathered before enqueueing: 2 steps x 8 keys)."""
    from conftest import torchrun_ssl

    args = dict(group="A", work_dir=str(work), samples_per_dataset=24, ssl_batch_size=8,
                ssl_epochs=1, moco_queue=32, run_name="ddp", moco_temperature=0.25)
    report = torchrun_ssl(args, "29533")
    assert report["world_size"] == 2 and report["steps"] == 2  # 18 places // 8 per step
    cfg = _cfg(work, **{k: v for k, v in args.items() if k != "work_dir"})
    net, state = ssl.read_encoder(paths.ssl_dir(cfg) / "encoder.pt")
    assert state["run"]["world_size"] == 2
    assert state["run"]["queue_ptr"] == 16  # one process alone would enqueue 8
    # finished: last.ckpt (weights + optimiser state) is gone, encoder.pt is what is read
    assert not (paths.ssl_dir(cfg) / "last.ckpt").exists()


def test_runs_of_other_pair_modes_on_the_same_data_are_put_side_by_side(tmp_path):
    def rows(shift):
        return [{"task": "multi-label", "metric": "F2 micro", "method": m, "input": "s1/s2",
                 "score": s + shift, "ci": [0.0, 100.0], "n_train": 8, "n_test": 4}
                for m, s in (("random init, linear probe", 10.0), ("supervised from scratch", 20.0),
                             ("MoCo-v2 x, linear probe", 30.0), ("MoCo-v2 x, fine-tuned", 40.0))]

    settings = {"finetune_epochs": 1, "n_boot": 10}
    for mode, shift in (("augment", 1.0), ("sensor", 2.0)):
        cfg = load_config("ci", group="A", work_dir=str(tmp_path), ssl_mode=mode)
        paths.ssl_dir(cfg).mkdir(parents=True)
        ssl.save_evaluation(cfg, rows(shift), settings)
    other = load_config("ci", group="A", work_dir=str(tmp_path), ssl_mode="fusion_all",
                        labelled_samples=16)  # another labelled set: not comparable
    paths.ssl_dir(other).mkdir(parents=True)
    ssl.save_evaluation(other, rows(5.0), settings)
    table = ssl.compare_runs(cfg, settings)
    assert [r["run"] for r in table] == [
        "random init, linear probe", "supervised from scratch (labelled set only)",
        "MoCo-v2 sensor pairs, linear probe", "MoCo-v2 sensor pairs, fine-tuned",
        "MoCo-v2 augmentation pairs, linear probe", "MoCo-v2 augmentation pairs, fine-tuned"]
    assert [r["score"] for r in table] == [12.0, 22.0, 32.0, 42.0, 31.0, 41.0]
    assert ssl.compare_runs(cfg, {"finetune_epochs": 2, "n_boot": 10}) == []
