"""Self-supervised pretraining with sensor-based positive pairs (seed 003): MoCo-v2 on
Sentinel-1 / Sentinel-2 images of the same place, and its evaluation on a small labelled set.
Seed 001's DINO and MAE run through the same path (``ssl_method``; ``ssl.methods`` describes
them); what follows is MoCo's part.

The model and loss are torchgeo's ``MoCoTask`` (version 2: a timm ResNet query encoder and its
momentum key encoder, the 2-layer MLP projection head, InfoNCE with a temperature against a
queue of negatives kept by lightly's ``NTXentLoss`` memory bank), trained by Lightning. The task
takes one tensor holding both views stacked along the channels; the views of different sensors
fit because every image is laid out in the union of the pair's bands (Sentinel-2's, then VV,
VH), each sensor filling its own channels and leaving the other's at 0. So the first layer is,
in effect, one input adapter per sensor:

* ``first_layer``: the ResNet's first convolution takes all N bands (timm ``in_chans=N``);
* ``conv1x1``: seed 003's learned 1x1 convolution N bands -> 3 in front of the RGB stem
  (``adapters.ChannelMixer``; seed 003 kept it frozen during pretraining, here it learns).

Positive pairs (``ssl_mode``):

* ``augment``: two augmentations of one image (each place gives its S2 and its S1 image);
* ``sensor``: the S1 and the S2 image of the same ``pair_id`` (which one is the query is drawn
  per sample), each augmented;
* ``fusion_all``: S1 and S2 stacked, two augmentations of it;
* ``fusion_partial``: per sample S1, S2 or S1+S2 with equal probability, two augmentations.

Augmentations (``ssl_augment``, seed 003's sets): ``set1`` random resized crop (and flips),
``set2`` plus Gaussian blur, ``none``. Colour jitter and grayscale (set 3) assume RGB and are
left out for multispectral input.

Two fixes to torchgeo's task, both stated where they are made: its momentum encoder and head
start from their own random weights, MoCo starts them as copies of the query side; and the
``conv1x1`` stem is swapped in on both sides.

Evaluation (seed 003): a labelled subset of the training places (``labelled_samples``, 1,024)
and the validation places as the test set; inputs S1, S2 and S1+S2 (the absent sensor's channels
0, seed 003's zero padding); a linear probe on frozen features of the SSL encoder and of its
random-init twin, the SSL encoder fine-tuned, and a supervised baseline trained from scratch on
the same subset; multi-label F2 (micro) with bootstrap 95 % intervals.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from geofm_lib.config import Config
from geofm_lib.distributed import from_env
from geofm_lib.errors import CheckpointError, ConfigError
from geofm_lib.io import folder_lock, remove_stale_temporaries
from geofm_lib.models.devices import channels_last, resolve_device, resolve_precision
from geofm_lib.paths import ssl_dir
from geofm_lib.progress import get_logger
from geofm_lib.ssl.model import SSL_FORMAT, make_backbone
from geofm_lib.ssl.pairs import EpochSampler, PairViews, load_pairs, non_overlapping
from geofm_lib.training.checkpoint import check_checkpoint_run, load_checkpoint, save_checkpoint

log = get_logger()


@dataclass
class SSLResult:
    encoder_path: Path
    history: list[dict]
    seconds: float
    already_finished: bool
    resumed: bool
    pairs: int
    params: dict = field(default_factory=dict)


def pretrain(cfg: Config, show_progress: bool = True, log_every: int = 2,
             callbacks=()) -> SSLResult:
    """Pretrain (or resume, or load) the SSL encoder of ``cfg`` (``ssl_method``: MoCo-v2, DINO
    or MAE, ``ssl.methods``) on the train places.

    Under ``torchrun`` (``python -m torch.distributed.run ... -m geofm_lib.cli ssl``) every
    process runs this: Lightning's DDP on the launcher's processes (NCCL on GPUs, gloo on CPU),
    ``ssl_batch_size`` is the global batch, each process takes its slice of every global batch
    (:class:`EpochSampler`) and the queue receives the keys of all of them. Every process must
    see the same ``work_dir`` (a shared filesystem across nodes): rank 0 writes ``last.ckpt``
    and every rank resumes from it. ``callbacks``: more Lightning callbacks (tests use one to
    interrupt a run).

    Only one process pretrains a configuration at a time (a second is refused with
    ``BusyError``); ``encoder.pt`` and ``last.ckpt`` of another configuration are refused
    (``CheckpointError``).
    """
    folder = ssl_dir(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 holds the lock for the whole job
        return _pretrain(cfg, show_progress, log_every, callbacks)
    with folder_lock(folder, f"the checkpoints of SSL run {cfg.ssl_hash} ({cfg.name})",
                     wait=False):
        remove_stale_temporaries(folder)  # encoder.pt's unfinished writes of a killed run
        return _pretrain(cfg, show_progress, log_every, callbacks)


def _pretrain(cfg: Config, show_progress: bool, log_every: int, callbacks) -> SSLResult:
    """The body of :func:`pretrain`, run while holding the checkpoint folder's lock."""
    # deferred: Lightning takes seconds to import; it is loaded when a run pretrains
    from lightning.pytorch import Trainer, seed_everything

    from geofm_lib.ssl.callbacks import AtomicLast, EpochSeed, Monitor, QueueState, quiet_lightning
    from geofm_lib.ssl.methods import build_module

    folder = ssl_dir(cfg)
    out = folder / "encoder.pt"
    if out.is_file():
        state = load_checkpoint(out, expected_format=SSL_FORMAT)
        check_checkpoint_run(state, out, {"ssl_hash": cfg.ssl_hash})
        if state.get("finished"):
            return SSLResult(out, state["history"], 0.0, True, False, state["pairs"],
                             dict(state.get("run", {})))
    last = folder / "last.ckpt"
    if last.is_file():  # before any data is read: a checkpoint of another run is refused now
        _check_last_ckpt(last, cfg)
    dist = from_env()
    rank, world = dist.rank, dist.world_size
    all_pairs = load_pairs(cfg, "train")
    pairs = all_pairs
    if cfg.ssl_patches == "non_overlapping":
        pairs = all_pairs.subset(non_overlapping(all_pairs.bounds, cfg.seed))
        log.info("non-overlapping subset: %d of %d places", len(pairs), len(all_pairs))
    views = PairViews(pairs, cfg.ssl_mode, cfg.seed)
    if len(views) < cfg.ssl_batch_size:
        raise ConfigError(f"ssl_batch_size={cfg.ssl_batch_size} is larger than the "
                         f"{len(views)} training samples; lower it or add data")
    device = resolve_device(cfg.device)
    precision = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[
        resolve_precision(cfg.precision, device)]
    seed_everything(cfg.seed, workers=True, verbose=False)
    task = channels_last(build_module(cfg, pairs.bands, world))
    sampler = EpochSampler(len(views), cfg.ssl_batch_size, cfg.seed, rank, world)
    loader = torch.utils.data.DataLoader(
        views, batch_size=cfg.ssl_batch_size // world, sampler=sampler, drop_last=True,
        num_workers=cfg.num_workers, pin_memory=device == "cuda",
        persistent_workers=cfg.num_workers > 0,
        # its own generator: making an iterator then draws nothing from torch's global RNG,
        # which EpochSeed sets for the augmentations (when the iterator is made differs
        # between a fresh and a resumed run)
        generator=torch.Generator().manual_seed(cfg.seed))
    monitor = Monitor(log_every, cfg.ssl_epochs * len(loader), show_progress and rank == 0)
    folder.mkdir(parents=True, exist_ok=True)
    if world > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="nccl" if device == "cuda" else "gloo")
        devices, nodes = dist.local_world_size, world // dist.local_world_size
    else:
        strategy, devices, nodes = "auto", 1, 1
    with quiet_lightning():
        trainer = Trainer(max_epochs=cfg.ssl_epochs, accelerator="gpu" if device == "cuda" else
                          "cpu", devices=devices, num_nodes=nodes, strategy=strategy,
                          precision=precision, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False,
                          use_distributed_sampler=False,
                          callbacks=[monitor, EpochSeed(cfg.seed), QueueState(cfg.ssl_hash),
                                     AtomicLast(last), *callbacks], log_every_n_steps=1)
    t0 = time.perf_counter()
    resumed = last.is_file()
    with quiet_lightning():
        trainer.fit(task, loader, ckpt_path=str(last) if resumed else None,
                    weights_only=True if resumed else None)  # tensors and plain values only
    run = {"steps": trainer.global_step, "world_size": world, "places": len(all_pairs),
           "places_pretrained": len(pairs), "incomplete_places": pairs.incomplete}
    bank = getattr(getattr(task, "criterion", None), "memory_bank", None)
    if bank is not None:  # MoCo: where its queue's pointer ended (keys enqueued, modulo K)
        run["queue_ptr"] = int(bank.bank_ptr)
    if trainer.global_rank == 0:
        save_checkpoint(out, {
            "format": SSL_FORMAT, "method": cfg.ssl_method, "backbone": cfg.ssl_backbone,
            "adapter": cfg.ssl_adapter,
            "bands": pairs.bands, "image_px": cfg.image_px, "mode": cfg.ssl_mode,
            "state_dict": task.backbone.state_dict(), "history": monitor.history,
            "pairs": len(pairs), "finished": True, "ssl_hash": cfg.ssl_hash, "run": run,
            # MAE's decoder too: the notebook shows its reconstructions
            **({"task_state_dict": task.state_dict()} if cfg.ssl_method == "mae" else {}),
            "params": json.loads(json.dumps(cfg.to_dict()))})
        # a finished encoder.pt is what every later call reads (it returns above); last.ckpt
        # (weights, optimiser and loop state: 3-4x encoder.pt) is never read again
        last.unlink(missing_ok=True)
    return SSLResult(out, monitor.history, round(time.perf_counter() - t0, 1), False, resumed,
                     len(pairs), run)


def _check_last_ckpt(last: Path, cfg: Config) -> None:
    """``last.ckpt`` is readable and was written by this configuration."""
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{last.parent.name}/{last.name} cannot be read "
                              f"({type(exc).__name__}: {str(exc)[:300]}); delete it to start "
                              f"this run over") from None
    mark = ckpt.get("geofm") if isinstance(ckpt, dict) else None
    if mark is None:
        log.warning("%s was written by an older geofm that did not record its configuration; "
                    "resuming from it unchecked", last.name)
        return
    check_checkpoint_run(mark, last, {"ssl_hash": cfg.ssl_hash})


def read_encoder(path: Path, device: str = "cpu"):
    """(backbone, checkpoint state) of a pretrained SSL encoder (``encoder.pt``)."""
    state = load_checkpoint(path, map_location=device, expected_format=SSL_FORMAT)
    net = make_backbone(state["backbone"], state["bands"], state["adapter"], 0,
                        state.get("image_px"))
    net.load_state_dict(state["state_dict"])
    return net.to(device).eval(), state


def mae_reconstructions(cfg: Config, encoder_path: Path, images, sensors, seed: int = 0) -> dict:
    """MAE's reconstructions of ``images`` ((B, C, H, W) standardised, ``sensors`` each
    ``s1``, ``s2`` or ``s1/s2``) by the finished run at ``encoder_path``, under masks drawn
    from ``seed`` (``methods.MAETask.reconstructions``)."""
    from geofm_lib.ssl.methods import build_module

    state = load_checkpoint(encoder_path, expected_format=SSL_FORMAT)
    if state.get("method") != "mae" or "task_state_dict" not in state:
        raise CheckpointError(f"{encoder_path.parent.name}/{encoder_path.name} is not a "
                              f"finished MAE run (method {state.get('method', 'moco')})")
    task = build_module(cfg, list(state["bands"]))
    task.load_state_dict(state["task_state_dict"])
    x = torch.as_tensor(images, dtype=torch.float32)
    return task.reconstructions(x, list(sensors), seed)
