"""CLIP training: OpenCLIP pieces, the loss going down, checkpoints, NaN stop, resume, and the
errors a user meets before any training starts."""

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from geofm_lib import errors, paths, training  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.data import build, shards  # noqa: E402
from geofm_lib.errors import ConfigError  # noqa: E402
from geofm_lib.models import devices, factory, inputs  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny shards of group B (2 datasets x 12 scenes at 32 px), built once for the module."""
    work = tmp_path_factory.mktemp("work")
    cfg = load_config("ci", group="B", work_dir=str(work))
    build.build_shards(cfg, show_progress=False)
    return work


def _cfg(work, **kw):
    base = dict(group="B", work_dir=str(work), batch_size=8, run_name="t")
    return load_config("ci", **{**base, **kw})


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model, tokenizer = factory.create_model("RN50-tiny", 32, seed=0)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=g)
    texts = tokenizer([f"an overhead image showing label {i}" for i in range(8)])
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        out = model(images, texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_small_configs_are_registered_by_name():
    factory.register_configs()
    assert {"RN50-tiny", "ViT-tiny"} <= set(open_clip.list_models())
    model, _ = factory.create_model("ViT-tiny", 48, seed=0)
    x = torch.zeros(2, 3, 48, 48)
    assert model.encode_image(x).shape == (2, 128)


def test_same_seed_same_initialisation():
    a, _ = factory.create_model("RN50-tiny", 32, seed=3)
    b, _ = factory.create_model("RN50-tiny", 32, seed=3)
    c, _ = factory.create_model("RN50-tiny", 32, seed=4)
    pa, pb, pc = (next(iter(m.visual.parameters())) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_train_writes_a_checkpoint_that_round_trips(work):
    cfg = _cfg(work, epochs=2)
    result = training.train(cfg, show_progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert state["finished"] and state["train_hash"] == cfg.train_hash
    model, _, _ = training.load_trained_model(cfg)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model"][k]), k
    # a second call with the same parameters loads instead of training
    again = training.train(cfg, show_progress=False)
    assert again.already_finished and again.history == result.history
    assert not list(result.checkpoint.parent.glob("*.tmp"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(work):
    cfg = _cfg(work, epochs=2, lr=4e-4)
    n_train, steps = training.plan_steps(cfg, shards.load_manifest(paths.build_folder(cfg)))

    def poison(loss, step):
        return loss * float("nan") if step == steps + 1 else loss  # second step of epoch 2

    with pytest.raises(errors.TrainingDiverged, match="epoch 2") as err:
        training.train(cfg, loss_hook=poison, show_progress=False)
    assert "last good checkpoint (end of epoch 1)" in str(err.value) and "lr" in str(err.value)
    state = training.load_checkpoint(paths.checkpoint_dir(cfg) / "last.pt")
    assert state["epoch"] == 1 and not state["finished"]
    with pytest.raises(RuntimeError, match="re-run notebooks/03_pretrain"):
        training.load_trained_model(cfg)
    # without the fault the run resumes from epoch 1 and finishes
    result = training.train(cfg, show_progress=False)
    assert result.resumed_from_epoch == 1 and result.history[-1]["epoch"] == 2


def test_interrupted_run_resumes_where_it_stopped(work, tmp_path):
    """Killed at an epoch boundary (checkpoint_every_steps 0) and resumed, the run reports the
    per-epoch record of an uninterrupted run, train loss included (issue 14, item 5)."""
    import shutil

    straight_work = tmp_path / "straight"
    shutil.copytree(work / "shards", straight_work / "shards")
    straight = training.train(_cfg(straight_work, epochs=2, lr=3e-4), show_progress=False)
    cfg = _cfg(work, epochs=2, lr=3e-4)

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, on_epoch=stop_after_first, show_progress=False)
    result = training.train(cfg, show_progress=False)
    assert result.resumed_from_epoch == 1
    assert [h["epoch"] for h in result.history] == [1, 2]
    timing = {"seconds", "samples_per_s"}
    for a, b in zip(straight.history, result.history, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == \
            {k: v for k, v in b.items() if k not in timing}
    assert result.step_losses == straight.step_losses


def test_errors_before_training(work, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'RN50-tiny'"):
        load_config("ci", model="RN50-tiyn")
    with pytest.raises(ValueError, match="batch_size=64 is larger than the 18 training"):
        training.preflight(_cfg(work, batch_size=64))
    # run alone (no 01 before it), 03 builds its data first with the same call (issue 39)
    alone = load_config("ci", group="B", work_dir=str(tmp_path))
    assert not (paths.build_folder(alone) / "manifest.json").exists()
    folder, manifest = training.preflight(alone)
    assert folder == paths.build_folder(alone) and manifest.train_samples(alone.dataset_keys) > 0
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            devices.resolve_device("cuda")
        with pytest.raises(RuntimeError, match="fp16"):
            devices.resolve_precision("fp16", "cpu")
    assert devices.resolve_precision("auto", "cuda") == "bf16"
    assert devices.resolve_precision("auto", "mps") == "fp32"
    assert devices.resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_is_bf16_on_cpus_with_amx_only(monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert devices.cpu_has_native_bf16() is amx
    assert devices.resolve_precision("auto", "cpu") == ("bf16" if amx else "fp32")
    assert devices.resolve_precision("fp32", "cpu") == "fp32"
    with devices.autocast("cpu", devices.resolve_precision("auto", "cpu")):
        y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert y.dtype == (torch.bfloat16 if amx else torch.float32)


def test_pretrained_weights_never_fall_back_to_random(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.PretrainedUnavailable, match="no pretrained weights 'nonsense'"):
        factory.create_model("RN50", 64, pretrained="nonsense")
    with pytest.raises(errors.PretrainedUnavailable, match="no such file"):
        factory.create_model("RN50-tiny", 64, pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(errors.PretrainedUnavailable, match="HF_HUB_OFFLINE=1"):
        factory.create_model("RN50", 64, pretrained="openai")


def test_model_input_mapping():
    import numpy as np

    s2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    assert inputs.input_bands(s2) == ([3, 2, 1], "sentinel2_true_colour")
    assert inputs.input_bands(["VV", "VH"])[1] == "sar_vv_vh_ratio"
    assert inputs.input_bands(["PAN"]) == ([0, 0, 0], "grey")
    img = np.stack([np.full((4, 4), -10.0), np.full((4, 4), -16.0)]).astype(np.float32)
    stats = inputs.channel_stats({"s1": {"bands": ["VV", "VH"], "mean": [-10.0, -16.0],
                                         "std": [2.0, 2.0]}})["s1"]
    x = inputs.to_model_input(img, ["VV", "VH"], stats)
    assert x.shape == (3, 4, 4) and np.allclose(x, 0.0)
    with pytest.raises(ValueError, match="no red, green and blue among the bands X, Y"):
        inputs.input_bands(["X", "Y"])
    # three bands without names or wavelengths are not taken for R, G, B
    with pytest.raises(ValueError, match="band_adapter: first_layer or conv1x1"):
        inputs.input_bands(["band1", "band2", "band3"])


def test_a_notebook_run_alone_trains_the_clip_run_first_and_a_finished_one_is_left(
        tmp_path, monkeypatch):
    """Issue 39: 04/05/06 without 03 before them train through 03's call; a finished run is
    loaded, never trained again; an unfinished one resumes."""
    from geofm_lib.training import loop

    calls = []
    monkeypatch.setattr(loop, "train", lambda cfg, **kw: calls.append(cfg.train_hash))
    cfg = load_config("ci", group="B", work_dir=str(tmp_path), epochs=1)  # its own folder
    training.ensure_trained(cfg)  # no checkpoint yet
    assert calls == [cfg.train_hash]
    folder = paths.checkpoint_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"finished": False}, folder / "last.pt")
    training.ensure_trained(cfg)  # stopped part-way: resumed
    torch.save({"finished": True}, folder / "last.pt")
    training.ensure_trained(cfg)  # finished: left as it is
    assert calls == [cfg.train_hash, cfg.train_hash]
