"""CLIP pretraining on the shards: OpenCLIP model, tokenizer and ``ClipLoss``; AdamW with a
linear warmup and cosine decay; gradient clipping; autocast; atomic, resumable checkpoints.

Data: one WebDataset stream per dataset (shards resampled with a fixed seed, a shuffle
buffer), mixed by ``webdataset.RandomMix`` in proportion to each dataset's training samples,
so every contrastive batch holds all datasets of the group. An epoch is
``ceil(train samples / batch_size)`` steps (OpenCLIP's ``--dataset-resampled`` convention: a
sample may be drawn twice or not at all within an epoch). Training images get random flips and
90-degree rotations (overhead imagery has no "up").

Checkpoints: ``<work>/checkpoints/<train_hash>/last.pt`` holds model, optimiser, scheduler and
history; it is written after every epoch to a temporary file and renamed, loads with
``torch.load(weights_only=True)``, and is what an interrupted run resumes from. A non-finite
loss stops training with ``TrainingDiverged`` before anything is overwritten, so the last
good checkpoint stays.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .errors import CheckpointError, ConfigError, TrainingDiverged
from .io import atomic_path, folder_lock, temporary_name
from .progress import get_logger
from .shards import ShardError, build_folder, load_manifest, shard_paths

log = get_logger()
CHECKPOINT_FORMAT = "geofm-clip-1"


# --- data ----------------------------------------------------------------------------------

def augment(x: np.ndarray, rng: random.Random) -> np.ndarray:
    """A random one of the 8 flips/90-degree rotations of a (C, H, W) image."""
    k = rng.randrange(4)
    if k:
        x = np.rot90(x, k, axes=(1, 2))
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x)


def _prepare(raw: dict, channel_stats: dict, rng: random.Random) -> tuple[np.ndarray, str]:
    """Decode one raw training sample into (model input, caption), augmented with ``rng``."""
    from .models import to_model_input
    from .shards import decode_sample

    s = decode_sample(raw)
    m = s["json"]
    x = augment(to_model_input(s["img"], m["bands"], channel_stats[m["dataset"]]), rng)
    text = s["txt"]
    if len(m.get("captions") or ()) > 1:  # corpora with several captions per image
        text = m["captions"][rng.randrange(len(m["captions"]))]
    return x, text


def _collate(tokenizer, image_px: int):
    import torch

    def fn(batch):
        imgs, texts = zip(*batch, strict=True)
        x = torch.from_numpy(np.stack(imgs))
        if x.shape[-1] != image_px or x.shape[-2] != image_px:
            x = torch.nn.functional.interpolate(x, size=(image_px, image_px), mode="bilinear",
                                                antialias=True, align_corners=False)
        return x, tokenizer(list(texts))

    return fn


def _resampled(urls: list[str], rng: random.Random):
    """Shard URLs drawn with replacement from a private generator (WebDataset's
    ``ResampledShards`` seeds itself per worker and rank, which would split the stream)."""
    while True:
        yield {"url": rng.choice(urls)}


class TrainStream(torch.utils.data.IterableDataset):
    """The training batches of one epoch, identical whatever the number of processes.

    One global stream of samples is defined by (seed, epoch) alone: per dataset, shards drawn
    with replacement and a shuffle buffer; the datasets mixed in proportion to their training
    counts; sample ``j`` of the epoch is augmented with a generator seeded by ``j``. Global
    batch ``b`` is samples ``b*B .. (b+1)*B - 1``. A process of rank ``r`` out of ``W`` keeps
    the ``r``-th slice of ``B/W`` samples of every batch, and DataLoader worker ``w`` of ``n``
    decodes the batches with ``b % n == w`` (the loader interleaves workers in order), so:

    * 1 process with batch B and W processes with B/W each see the same global batches;
    * resuming at batch ``k`` skips the raw samples of the first k batches without decoding
      them and continues with exactly the batches an uninterrupted run would have seen.

    Every process reads the raw bytes of the whole stream and decodes only its share: exact,
    at the price of reading ``W`` times the bytes (fine for one node; see the README).
    """

    def __init__(self, folder: Path, manifest: dict, datasets: list[str], channel_stats: dict,
                 tokenizer, batch_size: int, image_px: int, seed: int, epoch: int,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 2000):
        super().__init__()
        if batch_size % world_size:
            raise ConfigError(f"batch_size={batch_size} is not divisible by the {world_size} "
                             f"processes; choose a multiple of {world_size}")
        self.urls = [[str(p) for p in shard_paths(folder, "train", ds)] for ds in datasets]
        self.counts = [manifest["counts"][ds]["train"] for ds in datasets]
        self.stats, self.tokenizer, self.image_px = channel_stats, tokenizer, image_px
        self.batch_size, self.local = batch_size, batch_size // world_size
        self.epoch_seed = seed * 100_003 + epoch
        self.start_batch, self.rank = start_batch, rank
        self.shuffle_buffer = shuffle_buffer

    def _raw_samples(self):
        import webdataset as wds

        streams = []
        for i, (urls, n) in enumerate(zip(self.urls, self.counts, strict=True)):
            streams.append(iter(wds.DataPipeline(
                lambda urls=urls, i=i: _resampled(urls, random.Random(self.epoch_seed + 7919 * i)),
                wds.tarfile_to_samples(),
                wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, max(n // 2, 1)),
                            rng=random.Random(self.epoch_seed + 31 * i)))))
        mix = random.Random(self.epoch_seed)
        which = range(len(streams))
        while True:
            yield next(streams[mix.choices(which, weights=self.counts)[0]])

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        collate = _collate(self.tokenizer, self.image_px)
        batch = []
        for j, raw in enumerate(self._raw_samples()):
            b, pos = divmod(j, self.batch_size)
            if b < self.start_batch or (b - self.start_batch) % n_workers != worker \
                    or not lo <= pos < hi:
                continue
            batch.append(_prepare(raw, self.stats, random.Random(self.epoch_seed * 1_000_003 + j)))
            if len(batch) == self.local:
                yield collate(batch)
                batch = []


def train_stream(folder: Path, manifest: dict, datasets: list[str], channel_stats: dict,
                 tokenizer, batch_size: int, image_px: int, seed: int, epoch: int,
                 num_workers: int = 0, start_batch: int = 0, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False):
    """An endless iterator of this process's (images, tokens) batches (see ``TrainStream``)."""
    stream = TrainStream(folder, manifest, datasets, channel_stats, tokenizer, batch_size,
                         image_px, seed, epoch, start_batch, rank, world_size)
    if num_workers:
        return iter(torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
            prefetch_factor=4, persistent_workers=False))
    return iter(stream)


# --- optimisation --------------------------------------------------------------------------

def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norm/scale gains, embeddings or logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
                   or "logit_scale" in name or "embedding" in name)
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_scheduler(optimizer, total_steps: int, warmup_fraction: float):
    """Linear warmup from 1 % of the peak lr, then cosine decay to 0 (torch's schedulers)."""
    import torch

    warmup = int(round(total_steps * warmup_fraction))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup,
                                                                            1))
    if warmup == 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0,
                                               total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


# --- checkpoints ----------------------------------------------------------------------------

def checkpoint_dir(cfg: Config) -> Path:
    return cfg.path("checkpoints", cfg.train_hash)


def nonfinite_tensors(state, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) state that hold NaN or inf."""
    bad = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            bad.append(prefix or "tensor")
    elif isinstance(state, dict):
        for k, v in state.items():
            bad += nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(state, list | tuple):
        for i, v in enumerate(state):
            bad += nonfinite_tensors(v, f"{prefix}[{i}]")
    return bad


def check_finite_state(state: dict, where: str, keys=("model", "optimizer")) -> None:
    """Refuse to write a checkpoint whose weights or optimiser state hold NaN or inf.

    Raises:
        TrainingDiverged: naming the first bad tensors; the previous checkpoint stays.
    """
    bad = [n for k in keys if k in state for n in nonfinite_tensors(state[k], k)]
    if bad:
        raise TrainingDiverged(
            f"{where}: {len(bad)} tensor(s) of the weights or optimiser state are NaN or "
            f"infinite (e.g. {', '.join(bad[:3])}); the checkpoint was not written and the last "
            f"good one is kept. Lower lr, keep grad_clip_norm > 0 or use precision='fp32'")


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file of this process, fsync, rename: a checkpoint that exists
    is whole. Weights and optimiser state are checked finite first."""
    import torch

    check_finite_state(state, f"checkpoint {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_step_checkpoint(folder: Path, state: dict, step: int, keep: int) -> Path:
    """Write ``step-<step>.pt`` atomically, point ``last.pt`` at it (hard link, atomic
    rename), and delete all but the newest ``keep`` step checkpoints."""
    path = folder / f"step-{step:08d}.pt"
    save_checkpoint(path, state)
    tmp = temporary_name(folder / "last.pt")
    try:
        os.link(path, tmp)
    except OSError:  # file systems without hard links get a copy
        import shutil

        shutil.copyfile(path, tmp)
    os.replace(tmp, folder / "last.pt")
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, map_location: str = "cpu",
                    expected_format: str = CHECKPOINT_FORMAT) -> dict:
    """Load a geofm checkpoint with ``weights_only=True`` (no code runs on load)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path.parent.name}/{path.name}: run notebooks/03_pretrain.ipynb "
            f"with the same parameters first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path.name} cannot be read ({type(exc).__name__}: "
                              f"{str(exc)[:300]}); delete it and re-run 03_pretrain") from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path.name} is not a geofm checkpoint of this kind (format "
                              f"{found!r}, expected {expected_format!r})")
    return state


def check_checkpoint_run(state: dict, path: Path, expected: dict[str, str]) -> None:
    """Refuse a checkpoint written by another configuration (a file copied into this run's
    folder, or a folder renamed): each of ``expected`` (e.g. ``train_hash``, ``data_hash``)
    must equal the checkpoint's.

    Raises:
        CheckpointError: naming both hashes and the fix.
    """
    for key, want in expected.items():
        have = state.get(key)
        if have != want:
            raise CheckpointError(
                f"{path.parent.name}/{path.name} was written by another configuration: its "
                f"{key} is {have!r}, this run's is {want!r}. It was copied or moved here; "
                f"remove it (or put it back in checkpoints/{have}/) and re-run with the "
                f"parameters you mean")


def stats_from_checkpoint(state: dict) -> dict:
    """Per-dataset input statistics of a checkpoint (3-channel tuples or ``BandSlots``)."""
    from .models import stats_from_state

    return stats_from_state(state["channel_stats"])


def model_from_checkpoint(state: dict, device: str = "cpu", seed: int = 0):
    """(model, tokenizer) of a checkpoint's architecture, band adapter and weights."""
    from .models import create_model

    model, tokenizer = create_model(state["model_name"], state["image_px"], None, device, seed,
                                    band_adapter=state.get("band_adapter", "rgb"),
                                    bands=state.get("model_bands"))
    model.load_state_dict(state["model"])
    return model, tokenizer


def load_trained_model(cfg: Config, device: str = "cpu", require_finished: bool = True):
    """(model, tokenizer, checkpoint state) of this configuration's training run."""
    path = checkpoint_dir(cfg) / "last.pt"
    state = load_checkpoint(path)
    check_checkpoint_run(state, path, {"train_hash": cfg.train_hash, "data_hash": cfg.data_hash})
    if require_finished and not state.get("finished"):
        raise CheckpointError(
            f"the checkpoint of run {cfg.name} stopped after epoch {state['epoch']} of "
            f"{cfg.epochs}; re-run notebooks/03_pretrain.ipynb to finish (it resumes)")
    model, tokenizer = model_from_checkpoint(state, device, cfg.seed)
    model.eval()
    return model, tokenizer, state


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
    from .shards import iter_shards

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
    """Check everything a training run needs before the model is built (cheap)."""
    folder = build_folder(cfg)
    manifest = load_manifest(folder)  # names 01_data_prep when missing
    missing = [ds for ds in cfg.dataset_keys if ds not in manifest["counts"]]
    if missing:
        raise ShardError(f"the shards in {folder.name} have no {missing}; re-run "
                         f"01_data_prep with the same parameters")
    n_train = sum(manifest["counts"][ds]["train"] for ds in cfg.dataset_keys)
    if n_train < cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the {n_train} training "
                         f"samples; lower batch_size or raise samples_per_dataset")
    from .models import input_bands, input_spec

    for ds in cfg.dataset_keys:
        if ds not in manifest["band_stats"]:
            raise ShardError(f"manifest of {folder.name} has no band statistics for {ds}; "
                             f"rebuild the shards")
        bands = manifest["band_stats"][ds]["bands"]
        if cfg.band_adapter != "rgb":
            continue
        try:
            input_bands(bands)
        except ValueError as exc:
            raise ConfigError(f"{ds}: its {len(bands)} bands {bands} do not fit the 3-channel "
                             f"image tower of {cfg.model}: {exc}. Name the bands (e.g. "
                             f"options.band_names: [red, green, blue]), use a band adapter "
                             f"(band_adapter: first_layer) or drop the dataset") from None
    input_spec({ds: manifest["band_stats"][ds] for ds in cfg.dataset_keys}, cfg.band_adapter)
    return folder, manifest


def plan_steps(cfg: Config, manifest: dict) -> tuple[int, int]:
    """(training samples, steps per epoch) of a run."""
    n_train = sum(manifest["counts"][ds]["train"] for ds in cfg.dataset_keys)
    return n_train, math.ceil(n_train / cfg.batch_size)


def channels_last(model) -> None:
    """Keep the image tower's convolutions in channels-last layout: oneDNN (CPU) and cuDNN
    run them faster that way (RN50-tiny step on 2 CPU cores: about 1.15x, ``geofm
    bench-train``). Values are unchanged; only the memory layout of 4-d weights is."""
    model.visual.to(memory_format=torch.channels_last)


def _rng_state(device: str) -> dict:
    out = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def _set_rng_state(state: dict, device: str) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"].cpu())


class Step:
    """One optimisation step of CLIP with gradient accumulation that keeps the full contrastive
    batch (OpenCLIP's ``accum_freq`` scheme): the features of every micro-batch are computed
    without gradients first, then each micro-batch is recomputed with gradients against the
    cached features of the others, so the loss and the gradients are those of the whole batch.
    The temperature's gradient, which every micro-batch's loss would add in full, is divided by
    the number of micro-batches. With BatchNorm towers the micro-batches have their own batch
    statistics (as in open_clip_train)."""

    def __init__(self, model, raw_model, loss_fn, optimizer, scheduler, scaler, autocast,
                 accum: int, clip_norm: float, ddp: bool):
        self.model, self.raw, self.loss_fn = model, raw_model, loss_fn
        self.opt, self.sched, self.scaler, self.autocast = optimizer, scheduler, scaler, autocast
        self.accum, self.clip_norm, self.ddp = accum, clip_norm, ddp
        self.grad_norm: float | None = None  # of the last step, before clipping

    @property
    def overflowed(self) -> bool:
        """The last step's gradients were infinite or NaN while the loss was finite, and the
        update was skipped. Under fp16 the grad scaler skips such steps itself and lowers its
        scale, which is normal, so this is then always False."""
        return (self.grad_norm is not None and not math.isfinite(self.grad_norm)
                and not self.scaler.is_enabled())

    def loss(self, images, tokens):
        with self.autocast():
            out = self.model(images, tokens)
            return self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"])

    def __call__(self, images, tokens, loss_hook=None, step=0):
        """Forward, backward and update on one batch; returns the loss (before the update).

        A finite loss can still give infinite or NaN gradients (an overflow in backward);
        then ``grad_norm`` is not finite and the update is skipped, so the weights stay as
        they were (the loop stops with :class:`TrainingDiverged`). With fp16 the grad scaler
        handles overflows itself (it skips such steps and lowers its scale)."""
        self.opt.zero_grad(set_to_none=True)
        self.grad_norm = None
        if self.accum == 1:
            loss = self.loss(images, tokens)
            if loss_hook is not None:
                loss = loss_hook(loss, step)
            if not torch.isfinite(loss):
                return loss
            self.scaler.scale(loss).backward()
        else:
            loss = self._accumulated(images, tokens, loss_hook, step)
            if not torch.isfinite(loss):
                return loss
        if self.clip_norm > 0:
            self.scaler.unscale_(self.opt)
            norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.clip_norm)
        elif not self.scaler.is_enabled():
            norm = torch.nn.utils.get_total_norm(
                [q.grad for q in self.raw.parameters() if q.grad is not None])
        else:
            norm = None
        if norm is not None:
            self.grad_norm = float(norm)
            if not math.isfinite(self.grad_norm) and not self.scaler.is_enabled():
                self.opt.zero_grad(set_to_none=True)
                return loss
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        with torch.no_grad():  # OpenCLIP's training clamps the temperature at 100
            self.raw.logit_scale.clamp_(0, math.log(100))
        return loss

    def _accumulated(self, images, tokens, loss_hook, step):
        import contextlib

        chunks = list(zip(images.chunk(self.accum), tokens.chunk(self.accum), strict=True))
        with torch.no_grad(), self.autocast():
            cached = [self.model(x, t) for x, t in chunks]
        img = [c["image_features"] for c in cached]
        txt = [c["text_features"] for c in cached]
        loss_value = None
        for i, (x, t) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if (last or not self.ddp) else self.model.no_sync()
            with sync:
                with self.autocast():
                    out = self.model(x, t)
                    loss = self.loss_fn(torch.cat(img[:i] + [out["image_features"]] + img[i + 1:]),
                                        torch.cat(txt[:i] + [out["text_features"]] + txt[i + 1:]),
                                        out["logit_scale"])
                if loss_hook is not None:
                    loss = loss_hook(loss, step)
                if not torch.isfinite(loss):
                    return loss
                self.scaler.scale(loss).backward()
            loss_value = loss.detach() if loss_value is None else loss_value
        if self.raw.logit_scale.grad is not None:
            self.raw.logit_scale.grad.div_(self.accum)
        return loss_value


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
        return _train(cfg, on_step, on_epoch, loss_hook, show_progress)


def _train(cfg: Config, on_step, on_epoch, loss_hook, show_progress: bool) -> TrainResult:
    """The body of :func:`train` (run while holding the checkpoint folder's lock)."""
    import open_clip

    from . import distributed
    from .evaluation import encode_split, summary_metrics, zero_shot
    from .models import (
        count_parameters,
        create_model,
        input_spec,
        resolve_device,
        resolve_precision,
        stats_to_state,
    )
    from .progress import progress

    folder, manifest = preflight(cfg)
    dist, device = distributed.setup(resolve_device(cfg.device))
    if cfg.batch_size % (dist.world_size * cfg.grad_accum_steps):
        raise ConfigError(f"batch_size={cfg.batch_size} must split evenly into {dist.world_size} "
                         f"process(es) x grad_accum_steps={cfg.grad_accum_steps}; choose a "
                         f"multiple of {dist.world_size * cfg.grad_accum_steps}")
    precision = resolve_precision(cfg.precision, device.split(":")[0])
    stats, bands = input_spec({ds: manifest["band_stats"][ds] for ds in cfg.dataset_keys},
                              cfg.band_adapter)
    model, tokenizer = create_model(cfg.model, cfg.image_px, cfg.pretrained, device, cfg.seed,
                                    band_adapter=cfg.band_adapter, bands=bands)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    channels_last(model)
    datasets = list(cfg.dataset_keys)
    n_train, steps_per_epoch = plan_steps(cfg, manifest)
    total_steps = steps_per_epoch * cfg.epochs
    on_cuda = device.startswith("cuda")

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(0.9, 0.98), eps=1e-6, fused=on_cuda or None)
    scheduler = make_scheduler(optimizer, total_steps, cfg.warmup_fraction)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=(precision == "fp16"))
    loss_fn = open_clip.ClipLoss(gather_with_grad=dist.enabled, rank=dist.rank,
                                 world_size=dist.world_size)
    ckpt_dir = checkpoint_dir(cfg)
    ckpt = ckpt_dir / "last.pt"
    history: list[dict] = []
    step_losses: list[float] = []
    epoch_losses: list[float] = []
    start_epoch, start_batch, epoch_seconds = 0, 0, 0.0
    saved = None  # where the newest checkpoint stands, for the divergence message
    if ckpt.is_file():
        state = load_checkpoint(ckpt, map_location=device)
        check_checkpoint_run(state, ckpt, {"train_hash": cfg.train_hash,
                                           "data_hash": cfg.data_hash})
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        step_losses = list(state.get("step_losses", []))
        start_epoch = int(state["epoch"])
        start_batch = int(state.get("step_in_epoch", 0))
        # at an epoch boundary the finished epoch's losses are in history, not in this epoch
        epoch_losses = list(state.get("epoch_losses", [])) if start_batch else []
        epoch_seconds = float(state.get("epoch_seconds", 0.0))
        if "rng" in state:
            _set_rng_state(state["rng"], device)
        saved = f"epoch {start_epoch + 1}, step {start_batch} of it"
        if dist.is_main:
            log.info("resuming from %s: epoch %d of %d, step %d of it", ckpt_dir.name,
                     start_epoch + 1, cfg.epochs, start_batch)
    raw_model = model
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if on_cuda else None)
    if cfg.compile:
        model = torch.compile(model)
    lengths = _caption_lengths(folder, tokenizer)
    ctx = raw_model.context_length if hasattr(raw_model, "context_length") else 77
    truncated = float((lengths > ctx).mean()) if lengths.size else 0.0
    if truncated > 0 and dist.is_main:
        log.warning("%.1f %% of training captions exceed the %d-token context and are cut",
                    100 * truncated, ctx)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    dev_type = torch.device(device).type

    def autocast():
        return torch.autocast(dev_type, dtype=autocast_dtype, enabled=autocast_dtype is not None)

    run_step = Step(model, raw_model, loss_fn, optimizer, scheduler, scaler, autocast,
                    cfg.grad_accum_steps, cfg.grad_clip_norm, dist.enabled)

    def snapshot(epoch_done: int, in_epoch: int, finished: bool, seconds: float) -> dict:
        # epoch_losses: the losses of the epoch in progress (none at an epoch boundary)
        return {
            "format": CHECKPOINT_FORMAT, "model_name": cfg.model, "image_px": cfg.image_px,
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch_done, "step_in_epoch": in_epoch, "step": step,
            "epoch_losses": list(epoch_losses) if in_epoch else [], "epoch_seconds": seconds,
            "history": history, "step_losses": step_losses, "finished": finished,
            "rng": _rng_state(device), "world_size": dist.world_size,
            "params": json.loads(json.dumps(cfg.to_dict())),
            "train_hash": cfg.train_hash, "data_hash": cfg.data_hash,
            "channel_stats": stats_to_state(stats), "band_adapter": cfg.band_adapter,
            "model_bands": bands, "datasets": datasets,
        }

    t_start = time.perf_counter()
    step = start_epoch * steps_per_epoch + start_batch
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        first = start_batch if epoch == start_epoch else 0
        if epoch != start_epoch:
            epoch_losses, epoch_seconds = [], 0.0
        it = train_stream(folder, manifest, datasets, stats, tokenizer, cfg.batch_size,
                          cfg.image_px, cfg.seed, epoch, cfg.num_workers, start_batch=first,
                          rank=dist.rank, world_size=dist.world_size, pin_memory=on_cuda)
        t0 = time.perf_counter() - epoch_seconds
        bar = progress(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", disable=not (show_progress and dist.is_main))
        for in_epoch in range(first, steps_per_epoch):
            images, tokens = next(it)
            images = images.to(device, non_blocking=True,
                               memory_format=torch.channels_last)
            tokens = tokens.to(device, non_blocking=True)
            loss = run_step(images, tokens, loss_hook, step)
            bad_norm = run_step.overflowed
            if not torch.isfinite(loss) or bad_norm:
                bar.close()
                kept = (f"the last good checkpoint ({saved}) is kept in "
                        f"checkpoints/{ckpt_dir.name}/" if saved else
                        "no checkpoint was written yet")
                what = (f"the gradient norm became {run_step.grad_norm} (the loss was "
                        f"{loss.item():.4g}; the update was not applied)" if bad_norm and
                        torch.isfinite(loss) else f"loss became {loss.item()}")
                raise TrainingDiverged(
                    f"{what} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr {scheduler.get_last_lr()[0]:.2e}); training stopped and {kept}. "
                    f"Lower lr (now {cfg.lr:g}), keep grad_clip_norm > 0 (now "
                    f"{cfg.grad_clip_norm:g}) or use precision='fp32' (now {precision}).")
            step += 1
            epoch_losses.append(float(loss.item()))
            step_losses.append(epoch_losses[-1])
            bar.update(1)
            if (cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0
                    and in_epoch + 1 < steps_per_epoch and dist.is_main):
                save_step_checkpoint(ckpt_dir, snapshot(epoch, in_epoch + 1, False,
                                                        time.perf_counter() - t0),
                                     step, cfg.keep_checkpoints)
                saved = f"epoch {epoch + 1}, step {in_epoch + 1} of it"
            if on_step is not None and dist.is_main:
                on_step(step, epoch + 1, epoch_losses[-1], scheduler.get_last_lr()[0])
        bar.close()
        train_seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(epoch_losses)),
                  "train_loss_last": epoch_losses[-1], "lr_end": scheduler.get_last_lr()[0],
                  "seconds": round(train_seconds, 1),
                  "samples_per_s": round(steps_per_epoch * cfg.batch_size / train_seconds, 1)}
        if dist.is_main:  # validation: loss on fixed mixed batches and zero-shot R@K
            enc = encode_split(raw_model, tokenizer, shard_paths(folder, "val"), stats,
                               device, batch_size=256, image_px=cfg.image_px,
                               with_captions=True, show_progress=False)
            zs = summary_metrics(zero_shot(raw_model, tokenizer, enc, cfg.caption_metadata,
                                           n_boot=200, seed=cfg.seed, device=device,
                                           vocabularies=manifest.get("vocabularies")))
            record.update({"val_loss": val_loss(enc, cfg.batch_size, cfg.seed),
                           "val_mean_R@1": zs["mean_R@1"], "val_mean_R@5": zs["mean_R@5"],
                           "logit_scale": enc.logit_scale})
            history.append(record)
            save_step_checkpoint(ckpt_dir, snapshot(epoch + 1, 0, epoch + 1 == cfg.epochs,
                                                    0.0), step, cfg.keep_checkpoints)
            saved = f"end of epoch {epoch + 1}"
            log.info("epoch %d/%d: train loss %.3f, val loss %.3f, val mean R@1 %s",
                     epoch + 1, cfg.epochs, record["train_loss"], record["val_loss"],
                     record["val_mean_R@1"])
            if on_epoch is not None:
                on_epoch(record)
        else:
            history.append(record)
        distributed.barrier(dist)
    return TrainResult(
        checkpoint=ckpt, history=history, steps=step,
        seconds=round(time.perf_counter() - t_start, 1), device=device, precision=precision,
        resumed_from_epoch=start_epoch, already_finished=start_epoch >= cfg.epochs,
        parameters={"steps_per_epoch": steps_per_epoch, "train_samples": n_train,
                    "total_steps": total_steps, "model": count_parameters(raw_model),
                    "world_size": dist.world_size, "resumed_at_step": start_batch},
        truncated_captions=truncated, step_losses=step_losses)


def val_loss(enc, batch_size: int, seed: int = 0) -> float:
    """Mean CLIP loss of the val captions and images in fixed, shuffled batches."""
    import open_clip
    import torch

    if enc.caption_features is None or len(enc.keys) < 2:
        return math.nan
    order = np.random.default_rng(seed).permutation(len(enc.keys))
    loss_fn = open_clip.ClipLoss()
    img = torch.from_numpy(enc.image_features)
    txt = torch.from_numpy(enc.caption_features)
    scale = torch.tensor(enc.logit_scale)
    losses, weights = [], []
    for i in range(0, len(order), batch_size):
        b = torch.from_numpy(order[i:i + batch_size])
        if len(b) < 2:
            continue
        losses.append(float(loss_fn(img[b], txt[b], scale)))
        weights.append(len(b))
    return float(np.average(losses, weights=weights))
