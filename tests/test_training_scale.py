"""Training at scale (issue 6): the data stream split by rank and worker, exact kill-and-resume,
gradient accumulation that keeps the whole contrastive batch. The real torchrun runs (two
gloo "nodes" against one process, killed and resumed) are in test_multinode.py."""

import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from geofm_lib import paths, training  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.data import build, shards  # noqa: E402
from geofm_lib.models import factory, inputs  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny shards of group B (2 datasets x 12 scenes at 32 px), built once for the module."""
    work = tmp_path_factory.mktemp("work")
    build.build_shards(load_config("ci", group="B", work_dir=str(work)), show_progress=False)
    return work


def _fresh(work, tmp_path, name):
    """A new work folder holding a copy of the module's shards (own checkpoints)."""
    dst = tmp_path / name
    shutil.copytree(work / "shards", dst / "shards")
    return dst


def _cfg(work, **kw):
    return load_config("ci", **{**dict(group="B", work_dir=str(work), batch_size=8,
                                       run_name="t"), **kw})


def _stream(cfg, **kw):
    folder = paths.build_folder(cfg)
    manifest = shards.load_manifest(folder)
    stats, _ = inputs.input_spec({d: manifest["band_stats"][d] for d in cfg.dataset_keys})
    _, tok = factory.create_model("RN50-tiny", 32)
    return training.train_stream(folder, manifest, list(cfg.dataset_keys), stats, tok,
                                 cfg.batch_size, cfg.image_px, cfg.seed, epoch=0, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_stream_is_the_same_for_any_number_of_ranks_workers_and_start(work):
    cfg = _cfg(work)
    one = _take(_stream(cfg), 4)
    rank0 = _take(_stream(cfg, rank=0, world_size=2), 4)
    rank1 = _take(_stream(cfg, rank=1, world_size=2), 4)
    for b in range(4):  # each rank holds its half of the same global batch
        assert torch.equal(one[b][0], torch.cat([rank0[b][0], rank1[b][0]]))
        assert torch.equal(one[b][1], torch.cat([rank0[b][1], rank1[b][1]]))
    later = _take(_stream(cfg, start_batch=2), 2)  # resuming skips exactly two batches
    assert all(torch.equal(a[0], b[0]) for a, b in zip(later, one[2:], strict=True))
    workers = _take(_stream(cfg, num_workers=2), 4)  # loader workers interleave in order
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(workers, one, strict=True))
    other_epoch = training.train_stream(*_stream_args(cfg), epoch=1)
    assert not torch.equal(next(other_epoch)[0], one[0][0])


def _stream_args(cfg):
    folder = paths.build_folder(cfg)
    manifest = shards.load_manifest(folder)
    stats, _ = inputs.input_spec({d: manifest["band_stats"][d] for d in cfg.dataset_keys})
    _, tok = factory.create_model("RN50-tiny", 32)
    return (folder, manifest, list(cfg.dataset_keys), stats, tok, cfg.batch_size, cfg.image_px,
            cfg.seed)


def test_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(work, tmp_path):
    kw = dict(epochs=2, checkpoint_every_steps=2, keep_checkpoints=2)
    straight = training.train(_cfg(_fresh(work, tmp_path, "a"), **kw), show_progress=False)
    cfg = _cfg(_fresh(work, tmp_path, "b"), **kw)

    def kill(step, epoch, loss, lr):
        if step == 5:  # mid-epoch 2, one step after the step-4 checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, on_step=kill, show_progress=False)
    state = training.load_checkpoint(paths.checkpoint_dir(cfg) / "last.pt")
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (4, 1, 1)
    resumed = training.train(cfg, show_progress=False)
    assert resumed.parameters["resumed_at_step"] == 1
    assert resumed.step_losses == straight.step_losses
    a = torch.load(straight.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]
    steps = sorted(p.name for p in paths.checkpoint_dir(cfg).glob("step-*.pt"))
    assert len(steps) == 2 and steps[-1] == f"step-{b['step']:08d}.pt"  # the newest 2 kept
    assert os.path.samefile(paths.checkpoint_dir(cfg) / "last.pt",
                            paths.checkpoint_dir(cfg) / steps[-1])


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_gradient_accumulation_gives_the_full_batch_update(kind):
    """ViT (LayerNorm only): 4 micro-batches give the update of one batch of 8, for CLIP's
    loss and SigLIP's (whose logit bias, like the scale, gets its gradient once)."""
    from open_clip.loss import SigLipLoss

    results = []
    for accum in (1, 4):
        model, tok = factory.create_model("ViT-tiny", 32, seed=0, loss=kind)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(8, 3, 32, 32, generator=g)
        t = tok([f"scene number {i}" for i in range(8)])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        step = training.Step(model, model,
                             SigLipLoss() if kind == "siglip" else open_clip.ClipLoss(), opt, sched,
                             torch.amp.GradScaler("cpu", enabled=False),
                             lambda: torch.autocast("cpu", enabled=False), accum, 0.0, False)
        loss = step(x, t)
        results.append((loss.item(), {k: v.clone() for k, v in model.state_dict().items()}))
    (l1, w1), (l4, w4) = results
    assert abs(l1 - l4) < 1e-5
    for k in w1:
        assert torch.allclose(w1[k], w4[k], atol=2e-5), k


def test_batch_must_split_over_processes_and_micro_batches(work):
    with pytest.raises(ValueError, match="grad_accum_steps=3 does not divide batch_size=8"):
        _cfg(work, grad_accum_steps=3)  # refused with the parameters, before any work


_READBACKS = ("item", "tolist", "__bool__", "__float__", "__int__")


@pytest.mark.parametrize("accum", [1, 2])
def test_the_step_never_reads_a_tensor_back_and_skips_an_overflow_on_the_device(monkeypatch,
                                                                                 accum):
    """Issue 40: no host synchronisation inside the step. Every way a tensor's value reaches
    Python is made to fail while the step runs (fused AdamW, clipping, accumulation); an
    overflowing step is still skipped, by the fused kernel (weights and Adam's step count
    unchanged), and says so in ``bad``."""
    model, tok = factory.create_model("ViT-tiny", 32, seed=0)
    opt = torch.optim.AdamW(training.param_groups(model, 0.1), lr=1e-3, fused=True)
    step = training.Step(model, model, open_clip.ClipLoss(), opt,
                         training.make_scheduler(opt, 10, 0.1),
                         torch.amp.GradScaler("cpu", enabled=False),
                         lambda: torch.autocast("cpu", enabled=False), accum, 1.0, False)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = tok(["a", "b", "c", "d"])

    def no_readback(*a, **k):
        raise AssertionError("the step read a tensor back to the host")

    with monkeypatch.context() as m:
        for name in _READBACKS:
            m.setattr(torch.Tensor, name, no_readback)
        step(x, t)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        step(x, t, loss_hook=lambda loss, s: loss * 1e37)  # finite loss, overflowing gradients
    assert float(step.bad) == 1.0 and step.overflowed
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert {int(s["step"]) for s in opt.state.values()} == {1}
    step(x, t)
    assert float(step.bad) == 0.0 and {int(s["step"]) for s in opt.state.values()} == {2}


def test_losses_read_back_every_few_steps_are_those_of_every_step(work, tmp_path, monkeypatch):
    """The loop reads the losses back every READBACK_STEPS steps (and before checkpoints and at
    epoch ends): the losses, ``on_step``'s calls and the weights are those of reading every
    step back."""
    from geofm_lib.training import loop

    runs = []
    for window in (1, 4):
        monkeypatch.setattr(loop, "READBACK_STEPS", window)
        calls: list = []
        cfg = _cfg(_fresh(work, tmp_path, f"w{window}"), batch_size=4, epochs=2,
                   checkpoint_every_steps=0)
        result = training.train(cfg, on_step=lambda s, e, loss, lr, calls=calls:
                                calls.append((s, e, loss)), show_progress=False)
        runs.append((result, calls))
    (one, calls1), (four, calls4) = runs
    assert len(one.step_losses) == 10 and calls1 == calls4
    assert [c[0] for c in calls4] == list(range(1, 11)) and four.step_losses == one.step_losses
    a = torch.load(one.checkpoint, weights_only=True)["model"]
    b = torch.load(four.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_every_attention_block_of_both_towers_runs_fused_attention(monkeypatch):
    """Issue 40: the towers' attention is PyTorch's fused ``scaled_dot_product_attention``
    (open_clip's blocks call ``nn.MultiheadAttention`` without weights, which dispatches to it;
    flash or memory-efficient kernels on a GPU), forward and backward in training mode."""
    import torch.nn.functional as F

    calls = []
    fused = F.scaled_dot_product_attention

    def counted(*args, **kw):
        calls.append(args[0].shape)
        return fused(*args, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counted)
    model, tok = factory.create_model("ViT-tiny", 32, seed=0)
    model.train()
    out = model(torch.randn(2, 3, 32, 32), tok(["a", "b"]))
    (out["image_features"].sum() + out["text_features"].sum()).backward()
    blocks = len(model.visual.transformer.resblocks) + len(model.transformer.resblocks)
    assert len(calls) == blocks == 7


def test_siglip_trains_and_reloads_with_its_bias(work, tmp_path):
    """``loss: siglip``: the model starts with SigLIP's scale (10) and bias (-10), trains, keeps
    its bias in the checkpoint, and reloads with it (its validation loss is SigLIP's)."""
    model, _ = factory.create_model("ViT-tiny", 32, seed=0, loss="siglip")
    assert float(model.logit_scale.detach().exp()) == pytest.approx(10.0)
    assert float(model.logit_bias.detach()) == -10.0
    cfg = _cfg(_fresh(work, tmp_path, "siglip"), model="ViT-tiny", loss="siglip", epochs=2)
    result = training.train(cfg, show_progress=False)
    assert len(result.step_losses) == 6 and all(np.isfinite(result.step_losses))
    loaded, _, state = training.load_trained_model(cfg)
    assert "logit_bias" in state["model"] and float(loaded.logit_bias.detach()) != -10.0
    assert all(np.isfinite(h["val_loss"]) for h in result.history)
