"""CLIP pretraining on the shards: OpenCLIP model, tokenizer and ``ClipLoss``; AdamW with a
linear warmup and cosine decay; gradient clipping; autocast; atomic, resumable checkpoints.

An epoch is ``ceil(train samples / batch_size)`` steps (OpenCLIP's ``--dataset-resampled``
convention: a sample may be drawn twice or not at all within an epoch). A non-finite loss
stops training with ``TrainingDiverged`` before anything is overwritten, so the last good
checkpoint stays.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch

from geofm_lib import distributed
from geofm_lib.config import Config
from geofm_lib.data.build import ensure_shards
from geofm_lib.data.shards import Manifest, iter_shards, load_manifest, shard_paths
from geofm_lib.errors import ConfigError, DataError, ShardError, TrainingDiverged
from geofm_lib.evaluation.retrieval import encode_split, summary_metrics, zero_shot
from geofm_lib.io import folder_lock, remove_stale_temporaries
from geofm_lib.models import devices
from geofm_lib.models.devices import resolve_device, resolve_precision
from geofm_lib.models.factory import count_parameters, create_model
from geofm_lib.models.inputs import input_spec, stats_to_state
from geofm_lib.paths import checkpoint_dir
from geofm_lib.progress import get_logger, progress
from geofm_lib.training.checkpoint import (
    CHECKPOINT_FORMAT,
    check_checkpoint_run,
    load_checkpoint,
    save_step_checkpoint,
)
from geofm_lib.training.feed import feed_mode
from geofm_lib.training.step import (
    Step,
    _rng_state,
    _set_rng_state,
    channels_last,
    make_scheduler,
    param_groups,
)
from geofm_lib.training.stream import stream_mode, train_stream

log = get_logger()


# --- the loop --------------------------------------------------------------------------------

@dataclass
class TrainResult:
    checkpoint: Path
    history: list[dict]
    steps: int
    seconds: float
    device: str
    precision: str
    resumed_from_epoch: int
    already_finished: bool
    parameters: dict = field(default_factory=dict)
    truncated_captions: float = 0.0
    step_losses: list[float] = field(default_factory=list)


def _caption_lengths(folder: Path, tokenizer, limit: int = 2000) -> np.ndarray:
    texts = []
    for s in iter_shards(shard_paths(folder, "train")):
        texts.append(s["txt"])
        if len(texts) >= limit:
            break
    enc = getattr(tokenizer, "encode", None)
    if enc is None:
        return np.zeros(0)
    return np.array([len(enc(t)) + 2 for t in texts])  # + start and end tokens


def preflight(cfg: Config) -> tuple[Path, dict]:
    """Check everything a training run needs before the model is built (cheap once the data
    is there; without it, the shards are built first, as 01_data_prep would)."""
    folder = ensure_shards(cfg)
    manifest = load_manifest(folder)
    missing = [ds for ds in cfg.dataset_keys if ds not in manifest["counts"]]
    if missing:
        raise ShardError(f"the shards in {folder.name} have no {missing}; re-run "
                         f"01_data_prep with the same parameters")
    n_train = manifest.train_samples(cfg.dataset_keys)
    if n_train < cfg.batch_size:
        fits = max(2, 2 ** int(np.log2(max(n_train // 4, 2))))  # four steps per epoch or more
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the {n_train} training "
                         f"samples; lower batch_size (e.g. -p batch_size={fits}, four steps per "
                         f"epoch, with -p epochs=5 or more on so few samples) or raise "
                         f"samples_per_dataset")

    for ds in cfg.dataset_keys:
        if ds not in manifest["band_stats"]:
            raise ShardError(f"manifest of {folder.name} has no band statistics for {ds}; "
                             f"rebuild the shards")
    check_captions(manifest, cfg.dataset_keys)
    # the bands must fit the image tower: RGB found by name or wavelength, or a band adapter
    # that takes them (errors name the bands and the adapters that would)
    input_spec(manifest.band_stats_for(cfg.dataset_keys), cfg.band_adapter)
    return folder, manifest


def check_captions(manifest: Manifest, datasets) -> None:
    """Refuse to train CLIP on a dataset whose training images all carry the same caption
    (an unlabelled dataset captioned "no labelled objects", or a corpus with one caption):
    the contrastive loss would teach nothing about the images.

    Raises:
        DataError: naming the dataset, the caption count and what to do instead.
    """
    counts = manifest.get("captions")
    if counts is None:  # a build from before caption counts were kept
        return
    fix = ("Give it captions (karpathy or table reader) or labels, leave it out of this run, "
           "or pretrain on it self-supervised (07_ssl_pretrain)")
    for ds in datasets:
        n = manifest.count(ds, "train")
        c = counts.get(ds, {}).get("train", {"distinct": 0, "own": 0})
        if n > 1 and c["distinct"] < 2:
            raise DataError(f"{ds}: all {n} training images carry the same caption, so CLIP "
                            f"would learn nothing from them. {fix}")
        if n > 1 and not c["own"] and not manifest.label_frequency(ds, "train"):
            raise DataError(f"{ds}: none of its {n} training images has a label or a caption "
                            f"of its own (an unlabelled dataset), so its captions say nothing "
                            f"about the images. {fix}")


def plan_steps(cfg: Config, manifest: Manifest) -> tuple[int, int]:
    """(training samples, steps per epoch) of a run."""
    n_train = manifest.train_samples(cfg.dataset_keys)
    return n_train, math.ceil(n_train / cfg.batch_size)


def verify_finished(cfg: Config, result: TrainResult) -> dict:
    """The finished checkpoint of a run, read safely (``weights_only``) and checked: marked
    finished at the configured epoch, every logged loss finite and, over more than one epoch,
    the training loss lower at the end than after the first. Each failure names what is wrong
    and what to do; returns the checkpoint's state."""
    from geofm_lib.errors import CheckpointError, TrainingDiverged
    from geofm_lib.paths import shown

    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    if not state.get("finished") or state.get("epoch") != cfg.epochs:
        raise CheckpointError(f"{shown(result.checkpoint)} is not a finished run of "
                              f"{cfg.epochs} epochs (epoch {state.get('epoch')}, finished "
                              f"{bool(state.get('finished'))}); run 03_pretrain again, it resumes")
    bad = [h["epoch"] for h in result.history
           if not (math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]))]
    if bad:
        raise TrainingDiverged(f"the loss is not finite in epoch(s) {bad}; lower lr or check "
                               f"the inputs for unflagged nodata")
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    if cfg.epochs > 1 and not last < first:
        raise TrainingDiverged(f"the training loss did not decrease over {cfg.epochs} epochs "
                               f"({first:.4f} -> {last:.4f}); lower lr or train longer")
    return state


def ensure_trained(cfg: Config, show_progress: bool = True) -> None:
    """Make sure ``cfg``'s CLIP run has finished: a notebook run on its own (04, 05, 06 without
    03 before it) trains it first, through 03's call (resuming an interrupted run; its shards
    built first when missing), saying so in one line."""
    path = checkpoint_dir(cfg) / "last.pt"
    if path.is_file():
        try:
            if torch.load(path, map_location="cpu", weights_only=True).get("finished"):
                return
        except Exception:  # noqa: BLE001 - unreadable: load_trained_model says what to do
            return
    log.info("no finished CLIP run for train hash %s (03_pretrain has not run with these "
             "parameters): training it now, as it would", cfg.train_hash)
    train(cfg, show_progress=show_progress)


def train(cfg: Config, on_step: Callable | None = None, on_epoch: Callable | None = None,
          loss_hook: Callable | None = None, show_progress: bool = True) -> TrainResult:
    """Train (or resume, or just load) the CLIP run of ``cfg``; under torchrun, on every rank.

    Args:
        on_step: called as ``on_step(step, epoch, loss, lr)`` after every optimiser step
            (rank 0 only).
        on_epoch: called with the epoch's record (train/val loss, val mean R@1, ...).
        loss_hook: test hook, ``loss_hook(loss, step) -> loss`` (e.g. to inject a NaN).

    Checkpoints are written every ``checkpoint_every_steps`` steps and at the end of every
    epoch, with the optimiser, scheduler and random states and the position in the epoch's
    data stream, so a run killed at any point and resumed ends with the weights of an
    uninterrupted run (exactly, on the CPU).

    Only one process trains a configuration at a time: a second one is refused at once
    (``BusyError``) instead of both writing the same checkpoints.

    Raises:
        TrainingDiverged: on a non-finite loss, gradient or weight; the last good checkpoint is
            left as it was.
        CheckpointError: ``last.pt`` belongs to another configuration.
        BusyError: another process is training this configuration.
    """
    ckpt_dir = checkpoint_dir(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 holds the lock for the whole job
        return _train(cfg, on_step, on_epoch, loss_hook, show_progress)
    with folder_lock(ckpt_dir, f"the checkpoints of training run {cfg.train_hash} "
                               f"({cfg.name})", wait=False):
        if remove_stale_temporaries(ckpt_dir):
            log.info("removed the unfinished writes of an interrupted run in %s", ckpt_dir.name)
        return _train(cfg, on_step, on_epoch, loss_hook, show_progress)


@dataclass
class _Run:
    """What one training run is built from: made once by :func:`_setup`."""

    cfg: Config
    folder: Path
    manifest: Manifest
    dist: distributed.Dist
    device: str
    precision: str
    stats: dict
    bands: list[str] | None
    model: torch.nn.Module  # the model itself; ``step.model`` may wrap it (DDP, compile)
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    loss_fn: object
    n_train: int
    steps_per_epoch: int
    ckpt_dir: Path
    step: Step | None = None
    truncated: float = 0.0


@dataclass
class _Progress:
    """Where a run stands: what a checkpoint saves and a resume restores."""

    start_epoch: int = 0
    start_batch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)  # of the epoch in progress
    epoch_seconds: float = 0.0
    saved: str | None = None  # where the newest checkpoint stands, for the divergence message


def _setup(cfg: Config) -> _Run:
    """Check the data, join the process group, build model, optimiser, schedule and loss."""
    folder, manifest = preflight(cfg)
    dist, device = distributed.setup(resolve_device(cfg.device))
    if cfg.batch_size % (dist.world_size * cfg.grad_accum_steps):
        raise ConfigError(f"batch_size={cfg.batch_size} must split evenly into {dist.world_size} "
                         f"process(es) x grad_accum_steps={cfg.grad_accum_steps}; choose a "
                         f"multiple of {dist.world_size * cfg.grad_accum_steps}")
    precision = resolve_precision(cfg.precision, device.split(":")[0])
    stats, bands = input_spec(manifest.band_stats_for(cfg.dataset_keys), cfg.band_adapter)
    model, tokenizer = create_model(cfg.model, cfg.image_px, cfg.pretrained, device, cfg.seed,
                                    band_adapter=cfg.band_adapter, bands=bands, loss=cfg.loss)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    channels_last(model)
    n_train, steps_per_epoch = plan_steps(cfg, manifest)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(0.9, 0.98), eps=1e-6,
                                  # fused on the CPU too: 40 -> 9 ms a step for RN50-tiny
                                  fused=device.startswith(("cuda", "cpu")) or None)
    scheduler = make_scheduler(optimizer, steps_per_epoch * cfg.epochs, cfg.warmup_fraction)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=(precision == "fp16"))
    loss_fn = make_loss(cfg.loss, dist)
    return _Run(cfg, folder, manifest, dist, device, precision, stats, bands, model, tokenizer,
                optimizer, scheduler, scaler, loss_fn, n_train, steps_per_epoch,
                checkpoint_dir(cfg))


def make_loss(kind: str, dist: distributed.Dist):
    """open_clip's contrastive loss of a run: ``ClipLoss`` (features of all ranks gathered with
    gradients, so every rank's loss is the whole batch's) or ``SigLipLoss`` (each rank's images
    against every rank's texts, exchanged between neighbours; the rank's loss is its share,
    which the loop averages over the ranks for the logged value)."""
    if kind == "siglip":
        from open_clip.loss import SigLipLoss

        return SigLipLoss(rank=dist.rank, world_size=dist.world_size)
    return open_clip.ClipLoss(gather_with_grad=dist.enabled, rank=dist.rank,
                              world_size=dist.world_size)


def _rank_mean(loss: torch.Tensor, dist: distributed.Dist) -> torch.Tensor:
    """A loss averaged over the ranks (a collective on the device; no host sync)."""
    total = loss.detach().float().clone()
    torch.distributed.all_reduce(total)
    return total / dist.world_size


def _restore(run: _Run) -> _Progress:
    """Resume from ``last.pt`` when there is one (weights, optimiser, schedule, scaler, random
    states and the position in the epoch's stream); a fresh start otherwise."""
    cfg, ckpt = run.cfg, run.ckpt_dir / "last.pt"
    if not ckpt.is_file():
        return _Progress()
    state = load_checkpoint(ckpt, map_location=run.device)
    check_checkpoint_run(state, ckpt, {"train_hash": cfg.train_hash, "data_hash": cfg.data_hash})
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        run.scaler.load_state_dict(state["scaler"])
    start_epoch = int(state["epoch"])
    start_batch = int(state.get("step_in_epoch", 0))
    prog = _Progress(
        start_epoch, start_batch, history=list(state["history"]),
        step_losses=list(state.get("step_losses", [])),
        # at an epoch boundary the finished epoch's losses are in history, not in this epoch
        epoch_losses=list(state.get("epoch_losses", [])) if start_batch else [],
        epoch_seconds=float(state.get("epoch_seconds", 0.0)),
        saved=f"epoch {start_epoch + 1}, step {start_batch} of it")
    if "rng" in state:
        _set_rng_state(state["rng"], run.device)
    if run.dist.is_main and start_epoch >= cfg.epochs:  # nothing left to train
        log.info("the run in %s is finished (%d of %d epochs): its checkpoint is used as it is",
                 run.ckpt_dir.name, start_epoch, cfg.epochs)
    elif run.dist.is_main:
        log.info("resuming from %s: epoch %d of %d, step %d of it", run.ckpt_dir.name,
                 start_epoch + 1, cfg.epochs, start_batch)
        saved, now = state.get("stream") or {"mode": "exact"}, _stream_signature(run)
        if saved != now and not (saved["mode"] == now["mode"] == "exact"):
            log.warning("resuming with another training stream (%s, saved with %s): the run "
                        "continues from the same sample count, but its batches differ from "
                        "those of an uninterrupted run", now, saved)
    return prog


def _prepare_step(run: _Run) -> None:
    """Wrap the model (DDP, ``torch.compile``), warn about cut captions, make the step."""
    cfg, model = run.cfg, run.model
    if run.dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[run.dist.local_rank] if run.device.startswith("cuda") else None)
    if cfg.compile:
        model = torch.compile(model)
    lengths = _caption_lengths(run.folder, run.tokenizer)
    ctx = run.model.context_length if hasattr(run.model, "context_length") else 77
    run.truncated = float((lengths > ctx).mean()) if lengths.size else 0.0
    if run.truncated > 0 and run.dist.is_main:
        log.warning("%.1f %% of training captions exceed the %d-token context and are cut",
                    100 * run.truncated, ctx)
    def autocast():
        return devices.autocast(run.device, run.precision)

    run.step = Step(model, run.model, run.loss_fn, run.optimizer, run.scheduler, run.scaler,
                    autocast, cfg.grad_accum_steps, cfg.grad_clip_norm, run.dist.enabled)


def _snapshot(run: _Run, prog: _Progress, epoch_done: int, in_epoch: int, finished: bool,
              seconds: float) -> dict:
    """The checkpoint of a run at a position (``epoch_done`` epochs and ``in_epoch`` steps)."""
    cfg = run.cfg
    return {
        "format": CHECKPOINT_FORMAT, "model_name": cfg.model, "image_px": cfg.image_px,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
        "epoch": epoch_done, "step_in_epoch": in_epoch, "step": prog.step,
        # the losses of the epoch in progress (none at an epoch boundary)
        "epoch_losses": list(prog.epoch_losses) if in_epoch else [], "epoch_seconds": seconds,
        "history": prog.history, "step_losses": prog.step_losses, "finished": finished,
        "rng": _rng_state(run.device), "world_size": run.dist.world_size,
        "stream": _stream_signature(run),
        "params": json.loads(json.dumps(cfg.to_dict())),
        "train_hash": cfg.train_hash, "data_hash": cfg.data_hash,
        "channel_stats": stats_to_state(run.stats), "band_adapter": cfg.band_adapter,
        "model_bands": run.bands, "datasets": list(cfg.dataset_keys),
    }


def _stream_signature(run: _Run) -> dict:
    """What decides the order of the training batches besides seed and epoch: the stream mode,
    and for the sharded stream the number of readers (processes x loader workers). Every
    reader's position follows from the step in the epoch, saved beside it."""
    cfg = run.cfg
    mode = stream_mode(cfg.stream, run.dist.world_size, cfg.num_workers)
    return {"mode": mode, "world_size": run.dist.world_size,
            "num_workers": cfg.num_workers if mode == "sharded" else None}


def _diverged(run: _Run, prog: _Progress, bad: _Pending, loss: float, norm: float | None
              ) -> TrainingDiverged:
    """The error for a non-finite loss or gradient, saying what is kept and what to change."""
    cfg = run.cfg
    kept = (f"the last good checkpoint ({prog.saved}) is kept in checkpoints/"
            f"{run.ckpt_dir.name}/" if prog.saved else "no checkpoint was written yet")
    what = (f"the gradient norm became {norm} (the loss was {loss:.4g}; the update was not "
            f"applied)" if math.isfinite(loss) else f"loss became {loss}")
    return TrainingDiverged(
        f"{what} at epoch {bad.epoch + 1}, step {bad.step} "
        f"(lr {bad.lr_used:.2e}); training stopped and {kept}. "
        f"Lower lr (now {cfg.lr:g}), keep grad_clip_norm > 0 (now "
        f"{cfg.grad_clip_norm:g}) or use precision='fp32' (now {run.precision}).")


# Steps between two readbacks of the losses from the device: the step itself never waits for
# the device (a skipped update is decided there), so on a GPU the host queues up to this many
# steps ahead. The losses are also read back before every checkpoint and at the end of every
# epoch, so a non-finite step is always found before anything is written.
READBACK_STEPS = 16


@dataclass
class _Pending:
    """A step whose loss is still on the device."""

    step: int  # 1-based, over the run
    epoch: int
    loss: torch.Tensor
    bad: torch.Tensor  # 1.0: the update was skipped (non-finite loss or gradient norm)
    norm: torch.Tensor | None
    lr_used: float  # the step's learning rate
    lr: float  # the schedule's next one (what ``on_step`` is given)


def _read_back(run: _Run, prog: _Progress, pending: list[_Pending], on_step, bar) -> None:
    """Read the pending steps' losses back (one wait for the device), record them in order,
    call ``on_step`` for each; a non-finite one stops training (nothing was written after
    it, and its update was skipped)."""
    if not pending:
        return
    rows = torch.stack([torch.stack([p.loss.float(), p.bad.float(),
                                     p.norm.float() if p.norm is not None
                                     else torch.zeros((), device=p.loss.device)])
                        for p in pending]).tolist()
    for p, (loss, bad, norm) in zip(pending, rows, strict=True):
        if bad:
            bar.close()
            pending.clear()
            raise _diverged(run, prog, p, loss, norm if p.norm is not None else None)
        prog.epoch_losses.append(loss)
        prog.step_losses.append(loss)
        bar.update(1)
        if on_step is not None and run.dist.is_main:
            on_step(p.step, p.epoch + 1, loss, p.lr)
    pending.clear()


def _train_epoch(run: _Run, prog: _Progress, epoch: int, on_step, loss_hook,
                 show_progress: bool) -> dict:
    """One epoch (from where a resume left it): steps, step checkpoints; its record."""
    cfg, dist, n = run.cfg, run.dist, run.steps_per_epoch
    run.step.model.train()
    first = prog.start_batch if epoch == prog.start_epoch else 0
    if epoch != prog.start_epoch:
        prog.epoch_losses, prog.epoch_seconds = [], 0.0
    on_device = feed_mode(cfg.feed, run.device) == "device"
    it = train_stream(run.folder, run.manifest, list(cfg.dataset_keys), run.stats,
                      run.tokenizer, cfg.batch_size, cfg.image_px, cfg.seed, epoch,
                      cfg.num_workers, start_batch=first, rank=dist.rank,
                      world_size=dist.world_size, pin_memory=run.device.startswith("cuda"),
                      mode=cfg.stream, device=run.device if on_device else None)
    t0 = time.perf_counter() - prog.epoch_seconds
    bar = progress(total=n, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (show_progress and dist.is_main))
    pending: list[_Pending] = []
    for in_epoch in range(first, n):
        images, tokens = next(it)  # the device feed's are on the device already
        images = images.to(run.device, non_blocking=True, memory_format=torch.channels_last)
        tokens = tokens.to(run.device, non_blocking=True)
        lr_used = run.scheduler.get_last_lr()[0]
        loss = run.step(images, tokens, loss_hook, prog.step)
        if cfg.loss == "siglip" and dist.enabled:  # each rank's loss is its share
            loss = _rank_mean(loss, dist)
        prog.step += 1
        pending.append(_Pending(prog.step, epoch, loss.detach(), run.step.bad, run.step.norm,
                                lr_used, run.scheduler.get_last_lr()[0]))
        checkpoint = (cfg.checkpoint_every_steps and prog.step % cfg.checkpoint_every_steps == 0
                      and in_epoch + 1 < n and dist.is_main)
        if checkpoint or len(pending) >= READBACK_STEPS or in_epoch + 1 == n:
            _read_back(run, prog, pending, on_step, bar)
        if checkpoint:
            save_step_checkpoint(run.ckpt_dir, _snapshot(run, prog, epoch, in_epoch + 1, False,
                                                         time.perf_counter() - t0),
                                 prog.step, cfg.keep_checkpoints)
            prog.saved = f"epoch {epoch + 1}, step {in_epoch + 1} of it"
    bar.close()
    seconds = time.perf_counter() - t0
    return {"epoch": epoch + 1, "step": prog.step,
            "train_loss": float(np.mean(prog.epoch_losses)),
            "train_loss_last": prog.epoch_losses[-1], "lr_end": run.scheduler.get_last_lr()[0],
            "seconds": round(seconds, 1),
            "samples_per_s": round(n * cfg.batch_size / seconds, 1)}


def _validate(run: _Run, record: dict) -> None:
    """Add the validation loss on fixed mixed batches and zero-shot R@K to an epoch's record."""
    cfg = run.cfg
    enc = encode_split(run.model, run.tokenizer, shard_paths(run.folder, "val"), run.stats,
                       run.device, batch_size=256, image_px=cfg.image_px, with_captions=True,
                       show_progress=False, precision=run.precision)
    zs = summary_metrics(zero_shot(run.model, run.tokenizer, enc, cfg.caption_metadata,
                                   n_boot=200, seed=cfg.seed, device=run.device,
                                   vocabularies=run.manifest.get("vocabularies")))
    record.update({"val_loss": val_loss(enc, cfg.batch_size, cfg.seed),
                   "val_mean_R@1": zs["mean_R@1"], "val_mean_R@5": zs["mean_R@5"],
                   "val_mean_chance_R@1": zs["mean_chance_R@1"],  # the floor under R@1
                   "logit_scale": enc.logit_scale})


def _train(cfg: Config, on_step, on_epoch, loss_hook, show_progress: bool) -> TrainResult:
    """The body of :func:`train` (run while holding the checkpoint folder's lock)."""
    run = _setup(cfg)
    prog = _restore(run)
    _prepare_step(run)
    t_start = time.perf_counter()
    prog.step = prog.start_epoch * run.steps_per_epoch + prog.start_batch
    for epoch in range(prog.start_epoch, cfg.epochs):
        record = _train_epoch(run, prog, epoch, on_step, loss_hook, show_progress)
        if not run.dist.is_main:
            prog.history.append(record)
        else:
            _validate(run, record)
            prog.history.append(record)
            save_step_checkpoint(run.ckpt_dir, _snapshot(run, prog, epoch + 1, 0,
                                                         epoch + 1 == cfg.epochs, 0.0),
                                 prog.step, cfg.keep_checkpoints)
            prog.saved = f"end of epoch {epoch + 1}"
            log.info("epoch %d/%d: train loss %.3f, val loss %.3f, val mean R@1 %s",
                     epoch + 1, cfg.epochs, record["train_loss"], record["val_loss"],
                     record["val_mean_R@1"])
            if on_epoch is not None:
                on_epoch(record)
        distributed.barrier(run.dist)
    return TrainResult(
        checkpoint=run.ckpt_dir / "last.pt", history=prog.history, steps=prog.step,
        seconds=round(time.perf_counter() - t_start, 1), device=run.device,
        precision=run.precision, resumed_from_epoch=prog.start_epoch,
        already_finished=prog.start_epoch >= cfg.epochs,
        parameters={"steps_per_epoch": run.steps_per_epoch, "train_samples": run.n_train,
                    "total_steps": run.steps_per_epoch * cfg.epochs,
                    "model": count_parameters(run.model), "world_size": run.dist.world_size,
                    "resumed_at_step": prog.start_batch},
        truncated_captions=run.truncated, step_losses=prog.step_losses)


def val_loss(enc, batch_size: int, seed: int = 0) -> float:
    """Mean contrastive loss of the val captions and images in fixed, shuffled batches (CLIP's,
    or SigLIP's for a model with a logit bias)."""
    if enc.caption_features is None or len(enc.keys) < 2:
        return math.nan
    order = np.random.default_rng(seed).permutation(len(enc.keys))
    loss_fn = make_loss("siglip" if enc.logit_bias is not None else "clip", distributed.Dist())
    img = torch.from_numpy(enc.image_features)
    txt = torch.from_numpy(enc.caption_features)
    scale = torch.tensor(enc.logit_scale)
    extra = () if enc.logit_bias is None else (torch.tensor(enc.logit_bias),)
    losses, weights = [], []
    for i in range(0, len(order), batch_size):
        b = torch.from_numpy(order[i:i + batch_size])
        if len(b) < 2:
            continue
        losses.append(float(loss_fn(img[b], txt[b], scale, *extra)))
        weights.append(len(b))
    return float(np.average(losses, weights=weights))
