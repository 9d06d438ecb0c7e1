"""DINO and MAE beside MoCo (issue 20, part 1): the teacher's momentum rule, multi-crop, the MAE
masking ratio and its loss on the present sensor's channels, exact resume, pretraining and
evaluation through the same path as MoCo, the parameters checked before any work."""

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightly")
pytest.importorskip("lightning")

from geofm_lib import errors, paths, ssl  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.ssl import callbacks, methods  # noqa: E402

VIT = dict(ssl_method="mae", ssl_backbone="vit_tiny_patch16", mae_decoder_dim=64,
           mae_decoder_depth=1)
DINO = dict(ssl_method="dino", dino_out_dim=256, dino_local_crops=2)


@pytest.fixture
def work(paired_shards):
    """Group A at 32 px (conftest's paired_shards, built once for the session)."""
    return paired_shards


def _cfg(work, **kw):
    base = dict(group="A", work_dir=str(work), samples_per_dataset=24, ssl_batch_size=8,
                ssl_epochs=1, run_name="ssl")
    return load_config("ci", **{**base, **kw})


def _batch(cfg, mode="sensor", n=8):
    pairs = ssl.load_pairs(cfg, "train")
    views = ssl.PairViews(pairs, mode, cfg.seed)
    return pairs, torch.utils.data.default_collate([views[i] for i in range(n)])


def _fit(task, batches, steps, stop_after=None):
    """``steps`` steps over ``batches``; ``stop_after``: stop after that many steps of a run
    planned for ``steps`` (schedules see the planned length)."""
    from lightning.pytorch import Callback, Trainer

    class Stop(Callback):
        def on_train_batch_end(self, trainer, *args):
            if stop_after is not None and trainer.global_step >= stop_after:
                trainer.should_stop = True

    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    with callbacks.quiet_lightning():
        Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False,
                callbacks=[Stop()]).fit(task, loader)


# --- parameters ------------------------------------------------------------------------------

def test_each_method_is_checked_against_its_backbone_before_any_work():
    with pytest.raises(errors.ConfigError, match="needs a ViT backbone"):
        load_config("ci", ssl_method="mae", ssl_backbone="resnet18")
    with pytest.raises(errors.ConfigError, match="ResNets"):
        load_config("ci", ssl_method="moco", ssl_backbone="vit_small_patch16")
    with pytest.raises(errors.ConfigError, match="multiple of 16"):
        load_config("ci", image_px=40, ssl_method="dino", ssl_backbone="vit_small_patch16")
    assert load_config("ci", ssl_method="dino", ssl_backbone="resnet18").ssl_method == "dino"


def test_methods_beside_a_run_name_their_backbone_and_are_checked():
    cfg = load_config("ci")
    assert ssl.parse_method("dino", "resnet18") == ("dino", "resnet18")
    assert ssl.parse_method("mae:vit_tiny_patch16", "resnet18") == ("mae", "vit_tiny_patch16")
    mae = ssl.method_config(cfg, "mae:vit_tiny_patch16", 3)
    assert (mae.ssl_method, mae.ssl_backbone, mae.ssl_epochs) == ("mae", "vit_tiny_patch16", 3)
    assert ssl.method_label("mae", "vit_tiny_patch16", "resnet18") == "MAE ViT-Ti/16"
    assert ssl.method_label("dino", "resnet18", "resnet18") == "DINO"
    assert ssl.backbone_label("vit_small_patch8") == "ViT-S/8"
    with pytest.raises(errors.ConfigError, match="unknown SSL method 'simclr'"):
        ssl.parse_method("simclr", "resnet18")
    with pytest.raises(errors.ConfigError, match="unknown backbone 'vit_huge'"):
        ssl.parse_method("mae:vit_huge", "resnet18")
    with pytest.raises(errors.ConfigError, match="ViT"):
        ssl.method_config(cfg, "mae")  # MAE on the run's ResNet


def test_a_run_hashes_only_its_own_method_s_parameters():
    base = load_config("ci", group="A")
    assert base.ssl_learning_rate == 0.03  # MoCo's SGD rate when ssl_lr is None
    assert load_config("ci", group="A", dino_out_dim=512).ssl_hash == base.ssl_hash
    dino = load_config("ci", group="A", ssl_method="dino")
    assert dino.ssl_hash != base.ssl_hash
    assert dino.ssl_learning_rate == pytest.approx(5e-4 * dino.ssl_batch_size / 256)
    assert load_config("ci", group="A", ssl_method="dino", moco_queue=7).ssl_hash == dino.ssl_hash
    assert load_config("ci", group="A", ssl_method="dino", dino_out_dim=512).ssl_hash != \
        dino.ssl_hash
    # an explicit ssl_lr equal to the method's own is the same run
    assert load_config("ci", group="A", ssl_lr=0.03).ssl_hash == base.ssl_hash


# --- DINO ------------------------------------------------------------------------------------

def test_dino_teacher_follows_the_momentum_rule_and_the_student_sees_every_crop(work):
    cfg = _cfg(work, **DINO, dino_momentum=0.9, ssl_augment="none")
    pairs, batch = _batch(cfg)
    task = methods.build_module(cfg, pairs.bands)
    assert isinstance(task, methods.DINOTask)
    name = "layer1.0.conv1.weight"
    s0 = dict(task.backbone.named_parameters())[name].detach().clone()
    with torch.no_grad():  # make teacher and student differ, so the rule is visible
        dict(task.teacher_backbone.named_parameters())[name].mul_(0.5)
    t0 = dict(task.teacher_backbone.named_parameters())[name].detach().clone()
    seen = []
    hook = task.head.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    _fit(task, [batch] * 10, steps=10, stop_after=1)  # step 0 of a 10-step run
    hook.remove()
    assert task.global_step == 1
    t1 = dict(task.teacher_backbone.named_parameters())[name]
    # step 0 of the cosine schedule: m = dino_momentum; t <- m t + (1 - m) s
    assert torch.allclose(t1, 0.9 * t0 + 0.1 * s0, atol=1e-6)
    assert not t1.requires_grad
    assert not torch.equal(dict(task.backbone.named_parameters())[name], s0)  # student learned
    assert len(seen) == 2 + cfg.dino_local_crops  # two large crops and the small ones
    assert task.criterion.center.abs().sum() > 0  # the teacher's centre moved
    # the schedule reaches 1 at the end of the run
    from lightly.utils.scheduler import cosine_schedule
    assert cosine_schedule(99, 100, 0.9, 1.0) == pytest.approx(1.0)


def test_dino_s_loss_is_computed_in_fp32_under_bf16_autocast(work):
    """Under bf16 autocast the head's outputs are bf16; the loss (teacher logits / 0.04,
    softmax, cross-entropy over K outputs) is computed from them cast to fp32, so it is an
    fp32 number (a bf16 loss moves in steps of 1/16 around 9)."""
    from lightning.pytorch import Callback, Trainer

    cfg = _cfg(work, **DINO, ssl_augment="none")
    pairs, batch = _batch(cfg)
    task = methods.build_module(cfg, pairs.bands)
    losses = []

    class Grab(Callback):
        def on_train_batch_end(self, trainer, module, outputs, *args):
            losses.append(outputs["loss"])

    loader = torch.utils.data.DataLoader([batch] * 2, batch_size=None)
    with callbacks.quiet_lightning():
        Trainer(max_steps=2, accelerator="cpu", precision="bf16-mixed", logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[Grab()]).fit(task, loader)
    assert len(losses) == 2 and all(v.dtype == torch.float32 for v in losses)
    assert task.criterion.center.dtype == torch.float32


def test_dino_on_a_vit_takes_small_crops_of_whole_patches(work):
    cfg = _cfg(work, **DINO, ssl_backbone="vit_tiny_patch16")
    assert methods.local_crop_px(64, "vit_small_patch16") == 16
    assert methods.local_crop_px(224, "vit_small_patch16") == 96  # DINO's 96 of 224
    assert methods.local_crop_px(64, "resnet18") == 27
    assert methods.local_crop_px(32, "resnet18") == 24  # not 13: see RESNET_MIN_CROP_PX
    pairs, batch = _batch(cfg)
    task = methods.build_module(cfg, pairs.bands)
    _fit(task, [batch], steps=1)
    stats = task.monitor_stats(batch["image"], 1, 1)
    assert 0 <= stats["teacher_entropy"] <= stats["max_entropy"] + 1e-6
    assert stats["max_entropy"] == pytest.approx(np.log(cfg.dino_out_dim))
    assert stats["feature_dim"] == task.backbone.num_features


# --- MAE -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_mae_masks_the_configured_share_of_patches(work, ratio):
    cfg = _cfg(work, **VIT, mae_mask_ratio=ratio, image_px=32)
    pairs, batch = _batch(cfg)
    task = methods.build_module(cfg, pairs.bands)
    x = batch["image"][:, :len(pairs.bands)]
    present = task.present(batch["sensor_q"])
    loss, pred, target, keep, mask, _ = task.reconstruct(x, present)
    n_patches = (32 // 16) ** 2
    assert mask.shape[1] == round(ratio * n_patches)  # masked patch tokens
    assert keep.shape[1] == 1 + n_patches - mask.shape[1]  # the class token is always kept
    assert pred.shape == target.shape and torch.isfinite(loss)


def test_mae_scores_only_the_channels_of_the_sensors_in_the_view(work):
    cfg = _cfg(work, **VIT)
    pairs, batch = _batch(cfg)
    task = methods.build_module(cfg, pairs.bands)
    present = task.present(["s1", "s2", "s1/s2"])
    sar = np.array([b in ("VV", "VH") for b in pairs.bands])
    assert present[0].numpy().tolist() == sar.tolist()
    assert present[1].numpy().tolist() == (~sar).tolist()
    assert bool(present[2].all())
    # the loss does not depend on what the model predicts for an absent sensor's channels
    x = torch.from_numpy(pairs.inputs(np.arange(4), "s2"))
    only_s2 = task.present(["s2"] * 4)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        a = task.reconstruct(x, only_s2)[0]
    with torch.no_grad():  # change the prediction of the SAR channels only
        w = task.decoder_pred.weight.view(-1, len(pairs.bands), task.decoder_pred.in_features)
        w[:, torch.from_numpy(sar)] += 1.0
    with torch.random.fork_rng():
        torch.manual_seed(3)
        b = task.reconstruct(x, only_s2)[0]
    assert torch.allclose(a, b)


def test_mae_reconstruction_loss_falls_and_its_reconstructions_are_images(work):
    cfg = _cfg(work, **VIT, ssl_augment="none", ssl_lr=2e-3, image_px=32)
    pairs, batch = _batch(cfg, mode="fusion_all")
    task = methods.build_module(cfg, pairs.bands)
    before = task.monitor_stats(batch["image"], 0, 1, batch["sensor_q"])["reconstruction_loss"]
    _fit(task, [batch] * 30, steps=30)
    after = task.monitor_stats(batch["image"], 30, 1, batch["sensor_q"])["reconstruction_loss"]
    assert after < 0.8 * before, (before, after)
    x = batch["image"][:4, :len(pairs.bands)]
    shown = task.reconstructions(x, batch["sensor_q"][:4])
    assert shown["image"].shape == shown["reconstruction"].shape == tuple(x.shape)
    assert shown["masked_share"] == pytest.approx(cfg.mae_mask_ratio)
    hidden = (shown["visible"] == 0).all(axis=1)  # masked patches are blank in the input shown
    assert 0.5 < hidden.mean() < 1.0


# --- the run ---------------------------------------------------------------------------------

class _Crash(Exception):
    pass


@pytest.mark.parametrize("kw", [DINO, VIT], ids=["dino", "mae"])
def test_an_interrupted_run_resumes_to_the_same_weights(work, kw):
    """Killed after epoch 1 of 2, then resumed: the encoder and the history equal the
    uninterrupted run's (DINO's teacher, centre and schedules, MAE's masks)."""
    from lightning.pytorch.callbacks import Callback

    class CrashAfterFirstEpoch(Callback):
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 0:
                raise _Crash("simulated kill")

    name = kw["ssl_method"]
    whole = ssl.pretrain(_cfg(work, **kw, ssl_epochs=2, run_name=f"{name}-whole"),
                         show_progress=False, log_every=1)
    cut_dir = work / f"cut-{name}"
    shutil.copytree(work / "shards", cut_dir / "shards", dirs_exist_ok=True)
    cut = _cfg(work, **kw, ssl_epochs=2, run_name=f"{name}-cut", work_dir=str(cut_dir))
    with pytest.raises(_Crash):
        ssl.pretrain(cut, show_progress=False, log_every=1, callbacks=[CrashAfterFirstEpoch()])
    assert (paths.ssl_dir(cut) / "last.ckpt").is_file()
    resumed = ssl.pretrain(cut, show_progress=False, log_every=1)
    assert resumed.resumed
    a = torch.load(whole.encoder_path, weights_only=True)
    b = torch.load(resumed.encoder_path, weights_only=True)
    assert a["method"] == b["method"] == name
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]


@pytest.mark.parametrize("kw", [DINO, VIT], ids=["dino", "mae"])
def test_pretrain_and_evaluate_as_moco_does(work, kw):
    cfg = _cfg(work, **kw, ssl_epochs=2, labelled_samples=12, run_name=kw["ssl_method"] + "-e")
    result = ssl.pretrain(cfg, show_progress=False, log_every=1)
    keys = {"dino": "teacher_entropy", "mae": "reconstruction_loss"}[cfg.ssl_method]
    assert all(keys in h and np.isfinite(h["loss"]) for h in result.history)
    net, state = ssl.read_encoder(result.encoder_path)
    assert state["method"] == cfg.ssl_method and state["backbone"] == cfg.ssl_backbone
    pairs = ssl.load_pairs(cfg, "val")
    feats = ssl.features_of(net, pairs.inputs(np.arange(len(pairs)), "s1/s2"))
    assert feats.shape == (len(pairs), net.num_features)
    assert not ssl.collapse_check(torch.from_numpy(feats))["collapsed"]
    rows = ssl.evaluate(cfg, result.encoder_path, finetune_epochs=1, n_boot=20,
                        show_progress=False, tasks=("multi-label",))
    label = {"dino": "DINO sensor", "mae": "MAE sensor"}[cfg.ssl_method]
    assert {r["method"] for r in rows} == {
        "label prior (floor)", "random init, linear probe", "RCF, linear probe",
        "supervised from scratch", f"{label}, linear probe", f"{label}, fine-tuned"}
    head = ssl.headline_scores(rows)
    assert "ssl_minus_random_init_f2_s1s2_ci" in head
    if cfg.ssl_method == "mae":
        # 07 beside MoCo: the frozen protocol alone, then 08 finds the run by method:backbone
        frozen = ssl.evaluate(cfg, result.encoder_path, finetune_epochs=1, n_boot=20,
                              show_progress=False, tasks=("multi-label",), finetune=False,
                              scratch=False)
        assert {r["method"] for r in frozen} == {"label prior (floor)", "random init, linear probe",
                                                 "RCF, linear probe", f"{label}, linear probe"}
        ssl.save_evaluation(cfg, frozen, {"n_boot": 20})
        resnet_cfg = _cfg(work, labelled_samples=12)
        found = ssl.finished_encoders(resnet_cfg, ["mae:vit_tiny_patch16"])
        assert found == {"mae:vit_tiny_patch16": result.encoder_path}
        with pytest.raises(errors.DataError, match="ssl_method=mae ssl_backbone=vit_small_patch16"):
            ssl.finished_encoders(resnet_cfg, ["mae:vit_small_patch16"])
    if cfg.ssl_method == "mae":  # the decoder is kept: the notebook shows reconstructions
        shown = ssl.mae_reconstructions(cfg, result.encoder_path,
                                        pairs.inputs(np.arange(3), "s2"), ["s2"] * 3)
        assert shown["reconstruction"].shape == (3, len(pairs.bands), 32, 32)
        from geofm_lib.report import plots  # the figure 07 shows with ssl_method=mae

        fig = plots.mae_reconstructions(shown, pairs.bands)
        assert len(fig.axes) == 3 * 3
        for h in result.history:  # and the curves of an MAE run
            assert "reconstruction_loss" in h
        assert len(plots.ssl_curves(result.history).axes) == 3
    else:
        with pytest.raises(errors.CheckpointError, match="not a finished MAE run"):
            ssl.mae_reconstructions(cfg, result.encoder_path, np.zeros((1, 14, 32, 32)), ["s2"])


@pytest.mark.parametrize("kw", [DINO, VIT], ids=["dino", "mae"])
def test_torchrun_two_processes_train_dino_and_mae(work, kw):
    """DINO and MAE under torchrun as MoCo: two gloo processes each train on their share of
    the places (Lightning DDP; DINO's centre is all-reduced by lightly's loss), rank 0 alone
    writes the encoder, and the run records its world size."""
    from conftest import torchrun_ssl

    args = dict(group="A", work_dir=str(work), samples_per_dataset=24, ssl_batch_size=8,
                ssl_epochs=1, run_name="ddp-" + kw["ssl_method"], **kw)
    report = torchrun_ssl(args, {"dino": "29541", "mae": "29542"}[kw["ssl_method"]])
    assert report["world_size"] == 2 and np.isfinite(report["final_loss"])
    cfg = _cfg(work, **{k: v for k, v in args.items() if k != "work_dir"})
    net, state = ssl.read_encoder(paths.ssl_dir(cfg) / "encoder.pt")
    assert state["run"]["world_size"] == 2 and state["method"] == kw["ssl_method"]
    assert state["run"]["steps"] >= 1
