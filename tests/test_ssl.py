"""MoCo-v2 with sensor-based positive pairs (issue 8): pairs, queue, momentum rule, the loss on a
fixed batch, adapters for 2 and 13 bands, the collapse check, real S1/S2 pairs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")
pytest.importorskip("lightning")

from geofm_lib import shards, ssl  # noqa: E402
from geofm_lib.catalog import SENSORS  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Group A (BigEarthNet S2 + S1, paired by place) at 32 px, built once for the module."""
    work = tmp_path_factory.mktemp("work")
    shards.build_shards(_cfg(work), show_progress=False)
    return work


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
    with ssl._quiet_lightning():
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
    net, state = ssl.load_encoder(first.encoder_path)
    assert state["bands"][-2:] == ["VV", "VH"] and state["mode"] == "sensor"
    rows = ssl.evaluate(cfg, first.encoder_path, finetune_epochs=1, n_boot=20,
                        show_progress=False)
    assert {r["input"] for r in rows} == set(ssl.INPUTS) and len(rows) == 12
    assert all(0 <= r["f2_micro"] <= 100 and r["n_train"] == 12 for r in rows)
    from geofm_lib import features  # the SSL encoder plugs into notebook 06's probes

    emb = features.embed(cfg, f"ssl:{first.encoder_path}", "val", show_progress=False)
    assert emb.features.shape[1] == 512 and np.isfinite(emb.features).all()
    assert set(emb.datasets) == {"bigearthnet_s2", "bigearthnet_s1"}


def test_no_pairs_is_a_clear_error(tmp_path):
    cfg = load_config("ci", group="B", work_dir=str(tmp_path))
    shards.build_shards(cfg, show_progress=False)
    with pytest.raises(ssl.PairError, match="both a Sentinel-1 and an optical image"):
        ssl.load_pairs(cfg, "train")


def test_real_bigearthnet_pairs_load(shared_data, tmp_path):
    """The six real S1/S2 pairs of ../shared/data (stacked through torchgeo) as a format check."""
    from geofm_lib.examples import bigearthnet_torchgeo_root

    src = shared_data / "bigearthnet-v1-examples"
    root = tmp_path / "ben"
    bigearthnet_torchgeo_root(root, src / "BigEarthNet-S2", src / "BigEarthNet-S1", None, "pairs")
    cfg = load_config("ci", group="custom", datasets=["bigearthnet_s1s2"], image_px=120,
                      sources={"bigearthnet_s1s2": {"reader": "torchgeo",
                                                    "dataset_class": "BigEarthNet",
                                                    "root": str(root)}},
                      val_fraction=0.25, work_dir=str(tmp_path / "w"))
    shards.build_shards(cfg, show_progress=False)
    both = [ssl.load_pairs(cfg, split) for split in ("train", "val")]
    assert sum(len(p) for p in both) == 6
    p = both[0]
    assert p.sar_bands == ["VV", "VH"] and len(p.optical_bands) == 12
    assert np.isfinite(p.optical).all() and abs(float(p.sar.mean())) < 1.0  # standardised dB
