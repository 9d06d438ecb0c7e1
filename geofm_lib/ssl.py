"""Self-supervised pretraining with sensor-based positive pairs (seed 003): MoCo-v2 on
Sentinel-1 / Sentinel-2 images of the same place, and its evaluation on a small labelled set.

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

import contextlib
import copy
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .adapters import POLARISATIONS
from .config import Config
from .errors import ConfigError, PairError  # noqa: F401  (PairError re-exported)
from .progress import get_logger

log = get_logger()
PAIR_MODES = ("augment", "sensor", "fusion_all", "fusion_partial")
INPUTS = ("s1", "s2", "s1/s2")
SSL_FORMAT = "geofm-ssl-1"


# Seed 003, "aug set 2" tables: fine-tuned on 1,024 labelled samples, multi-label scene
# classification, ResNet50, printed as "accuracy" (None: not reported). SEN12MS and BigEarthNet.
SEED003_RESULTS = {
    "SEN12MS": {"supervised (1024)": (0.4003, 0.6108, 0.5856),
                "sensor-based augmentation": (None, 0.6277, 0.6697),
                "all fusion": (None, 0.6251, 0.5957),
                "partial fusion": (0.4729, 0.5812, 0.6072)},
    "BigEarthNet": {"supervised (1024)": (0.4008, 0.5496, 0.5423),
                    "partial fusion": (0.4279, 0.5351, 0.5352)},
}


# --- paired data ----------------------------------------------------------------------------

@dataclass
class Pairs:
    """The S1/S2 images of the places of one split, standardised, in memory."""

    optical_bands: list[str]
    sar_bands: list[str]
    optical: np.ndarray  # (N, optical bands, H, W) float32
    sar: np.ndarray      # (N, SAR bands, H, W) float32
    pair_ids: list[str]
    labels: list[list[str]]
    vocabulary: list[str]
    incomplete: int = 0  # places with only one sensor in this split (left out)
    dominant: list[str | None] = field(default_factory=list)  # single label, where known
    bounds: list[list[float] | None] = field(default_factory=list)  # lon/lat footprint

    def subset(self, idx) -> Pairs:
        """The places ``idx`` (in that order)."""
        idx = np.asarray(idx, int)
        pick = lambda seq: [seq[i] for i in idx] if seq else []  # noqa: E731
        return Pairs(self.optical_bands, self.sar_bands, self.optical[idx], self.sar[idx],
                     pick(self.pair_ids), pick(self.labels), self.vocabulary, self.incomplete,
                     pick(self.dominant), pick(self.bounds))

    @property
    def bands(self) -> list[str]:
        """The model's input layout: optical bands, then SAR."""
        return self.optical_bands + self.sar_bands

    def __len__(self) -> int:
        return len(self.pair_ids)

    def compose(self, idx, optical: bool, sar: bool) -> np.ndarray:
        """(len(idx), bands, H, W) images with one or both sensors' channels filled."""
        idx = np.atleast_1d(np.asarray(idx))
        n_opt = len(self.optical_bands)
        out = np.zeros((len(idx), len(self.bands), *self.optical.shape[2:]), np.float32)
        if optical:
            out[:, :n_opt] = self.optical[idx]
        if sar:
            out[:, n_opt:] = self.sar[idx]
        return out

    def inputs(self, idx, which: str) -> np.ndarray:
        """Images of one evaluation input: ``s1``, ``s2`` or ``s1/s2``."""
        return self.compose(idx, optical=which != "s1", sar=which != "s2")


def _standardise(img: np.ndarray, band_stat: dict, idx: list[int]) -> np.ndarray:
    mean = np.asarray(band_stat["mean"], np.float32)[idx][:, None, None]
    std = np.maximum(np.asarray(band_stat["std"], np.float32)[idx], 1e-6)[:, None, None]
    x = (img[idx].astype(np.float32) - mean) / std
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def may_have_pairs(manifest: dict, datasets) -> bool:
    """Whether a build can hold S1/S2 pairs (from its band lists, without reading shards): one
    dataset with both sensors, or a SAR and an optical dataset."""
    kinds = set()
    for ds in datasets:
        bands = manifest["band_stats"].get(ds, {}).get("bands", [])
        sar = any(b in POLARISATIONS for b in bands)
        optical = any(b not in POLARISATIONS for b in bands)
        kinds.add("both" if sar and optical else "sar" if sar else "optical")
    return "both" in kinds or {"sar", "optical"} <= kinds


def load_pairs(cfg: Config, split: str) -> Pairs:
    """The places of ``split`` with both a Sentinel-1 and an optical image.

    Sources: two datasets whose samples share ``pair_id`` (BigEarthNet S1/S2 of the simulator,
    BigEarthNet or SSL4EO-S12 through torchgeo), or one dataset with both sensors stacked
    (SEN12MS, ``bigearthnet_s1s2``). Bands are standardised with each dataset's training-split
    statistics from the shard manifest.
    """
    from .catalog import DATASETS
    from .shards import build_folder, iter_shards, load_manifest, shard_paths

    folder = build_folder(cfg)
    manifest = load_manifest(folder)
    halves: dict[str, dict] = {}
    opt_bands = sar_bands = None
    vocab: list[str] = []
    for ds in cfg.dataset_keys:
        st = manifest["band_stats"][ds]
        bands = st["bands"]
        sar_idx = [i for i, b in enumerate(bands) if b in POLARISATIONS]
        opt_idx = [i for i, b in enumerate(bands) if b not in POLARISATIONS]
        if opt_idx and not vocab:
            vocab = list((manifest.get("vocabularies") or {}).get(ds)
                         or (DATASETS[ds].labels if ds in DATASETS else []))
        for s in iter_shards(shard_paths(folder, split, ds)):
            m = s["json"]
            pid = m.get("pair_id") or (s["__key__"] if sar_idx and opt_idx else None)
            if pid is None:
                continue
            rec = halves.setdefault(pid, {"labels": set()})
            rec["labels"].update(m.get("labels") or [])
            if m.get("dominant_label") and (opt_idx or "dominant" not in rec):
                rec["dominant"] = m["dominant_label"]  # the optical image's, if they differ
            if (m.get("footprint") or {}).get("bounds") and "bounds" not in rec:
                rec["bounds"] = m["footprint"]["bounds"]
            for part, idx in (("sar", sar_idx), ("optical", opt_idx)):
                if idx:
                    names = [bands[i] for i in idx]
                    if part == "sar":
                        sar_bands = sar_bands or names
                        ok = names == sar_bands
                    else:
                        opt_bands = opt_bands or names
                        ok = names == opt_bands
                    if not ok:
                        raise PairError(f"{ds}: {part} bands {names} differ from another "
                                        f"dataset's; pair datasets of one sensor product")
                    rec[part] = _standardise(s["img"], st, idx)
    complete = [pid for pid, r in halves.items() if "sar" in r and "optical" in r]
    if not complete:
        raise PairError(
            f"no place in the {split} split has both a Sentinel-1 and an optical image "
            f"(datasets {', '.join(cfg.dataset_keys)}); use group A (bigearthnet_s2 + "
            f"bigearthnet_s1), SEN12MS, bigearthnet_s1s2 or the SSL4EO-S12 pair")
    complete.sort()
    return Pairs(opt_bands, sar_bands,
                 np.stack([halves[p]["optical"] for p in complete]),
                 np.stack([halves[p]["sar"] for p in complete]), complete,
                 [sorted(halves[p]["labels"]) for p in complete], vocab,
                 incomplete=len(halves) - len(complete),
                 dominant=[halves[p].get("dominant") for p in complete],
                 bounds=[halves[p].get("bounds") for p in complete])


def non_overlapping(bounds: list, seed: int = 0) -> np.ndarray:
    """Indices of a subset of footprints no two of which overlap (touching edges is fine),
    chosen greedily in a seeded random order, as seed 003's non-overlapping SEN12MS subset.
    A grid hash keeps it near linear in the number of footprints."""
    missing = [i for i, b in enumerate(bounds) if not b]
    if missing:
        raise PairError(f"{len(missing)} of {len(bounds)} places have no footprint bounds, so "
                        f"overlap cannot be decided; use ssl_patches=all for this data")
    box = np.asarray(bounds, float)
    flipped = np.flatnonzero((box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1]))
    if len(flipped):
        raise PairError(f"{len(flipped)} footprints have west > east or south > north (e.g. "
                        f"{bounds[flipped[0]]}; one crossing the antimeridian?); use "
                        f"ssl_patches=all for this data")
    cell = max(float(np.median(box[:, 2] - box[:, 0])), float(np.median(box[:, 3] - box[:, 1])),
               1e-9)
    grid: dict[tuple[int, int], list[int]] = {}
    kept = []
    tol = 1e-9 * cell  # footprints that share an edge (adjacent tiles) do not overlap
    for i in np.random.default_rng([seed, 3]).permutation(len(box)):
        x0, y0, x1, y1 = box[i]
        cells = [(gx, gy) for gx in range(int(x0 // cell), int(x1 // cell) + 1)
                 for gy in range(int(y0 // cell), int(y1 // cell) + 1)]
        clash = False
        for c in cells:
            for j in grid.get(c, ()):
                a = box[j]
                if min(x1, a[2]) - max(x0, a[0]) > tol and min(y1, a[3]) - max(y0, a[1]) > tol:
                    clash = True
                    break
            if clash:
                break
        if not clash:
            kept.append(i)
            for c in cells:
                grid.setdefault(c, []).append(int(i))
    return np.sort(np.asarray(kept, int))


class PairViews(torch.utils.data.Dataset):
    """Samples of one pair mode: ``image`` holds the two views stacked along the channels
    (query first); ``pair_q``/``pair_k`` and ``sensor_q``/``sensor_k`` say what they are.

    An index is ``i`` or ``(epoch, i)`` (from :class:`EpochSampler`); the random choices of a
    sample (which sensor is the query, which input in ``fusion_partial``) are drawn from a
    generator seeded by (seed, epoch, i), so they do not depend on workers, ranks or resuming.
    """

    def __init__(self, pairs: Pairs, mode: str, seed: int = 0):
        if mode not in PAIR_MODES:
            raise ValueError(f"unknown ssl_mode {mode!r}; choose one of {', '.join(PAIR_MODES)}")
        self.pairs, self.mode, self.seed = pairs, mode, seed

    def __len__(self) -> int:
        return 2 * len(self.pairs) if self.mode == "augment" else len(self.pairs)

    def _view(self, i: int, sensor: str) -> torch.Tensor:
        return torch.from_numpy(self.pairs.inputs(i, sensor)[0])

    def __getitem__(self, index) -> dict:
        epoch, i = index if isinstance(index, tuple) else (0, index)
        rng = random.Random(f"{self.seed}-{epoch}-{i}")  # str seeds hash the same everywhere
        if self.mode == "augment":
            i, sensors = i // 2, ("s2", "s2") if i % 2 == 0 else ("s1", "s1")
        elif self.mode == "sensor":
            sensors = ("s1", "s2") if rng.random() < 0.5 else ("s2", "s1")
        elif self.mode == "fusion_all":
            sensors = ("s1/s2", "s1/s2")
        else:
            one = rng.choice(INPUTS)
            sensors = (one, one)
        q, k = (self._view(i, s) for s in sensors)
        pid = self.pairs.pair_ids[i]
        return {"image": torch.cat([q, k]), "pair_q": pid, "pair_k": pid,
                "sensor_q": sensors[0], "sensor_k": sensors[1]}


class EpochSampler(torch.utils.data.Sampler):
    """The global batches of an epoch are a permutation seeded by (seed, epoch), cut into
    ``global_batch`` pieces (the last partial one dropped); rank ``r`` of ``world`` yields its
    ``global_batch / world`` slice of each, as ``(epoch, i)`` pairs. One process or several see
    the same global batches, and a run resumed at an epoch boundary sees what it would have."""

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ConfigError(f"ssl_batch_size={global_batch} does not split over {world} "
                             f"processes; use a multiple of {world}")
        self.n, self.batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.n // self.batch) * (self.batch // self.world)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n)
        per = self.batch // self.world
        for b in range(self.n // self.batch):
            batch = order[b * self.batch:(b + 1) * self.batch]
            chunk = batch[self.rank * per:(self.rank + 1) * per]
            yield from ((self.epoch, int(i)) for i in chunk)


# --- the MoCo-v2 model ----------------------------------------------------------------------

def augmentations(kind: str, image_px: int):
    """Seed 003's augmentation sets as kornia modules (tensors in, tensors out)."""
    import kornia.augmentation as K  # noqa: N812

    if kind == "none":
        return torch.nn.Identity()
    ops = [K.RandomResizedCrop((image_px, image_px), scale=(0.2, 1.0)),
           K.RandomHorizontalFlip(), K.RandomVerticalFlip()]
    if kind == "set2":
        k = max(3, (image_px // 10) | 1)  # odd kernel about a tenth of the image (MoCo-v2)
        ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=0.5))
    return torch.nn.Sequential(*ops)


def build_task(cfg: Config, bands: list[str], world: int = 1):
    """torchgeo's MoCoTask (v2) for ``bands`` input channels, with the two fixes of the module
    docstring (key side starts as a copy of the query side; the conv1x1 stem). With ``world``
    processes the keys of all of them are gathered before they enter the queue (as MoCo's
    ``concat_all_gather``), so the queue grows by the global batch per step. N processes still
    differ from one: BatchNorm statistics are per process (no SyncBN or MoCo's shuffled BN, as
    in torchgeo) and each process draws its own augmentations."""
    from torchgeo.trainers import MoCoTask

    torch.manual_seed(cfg.seed)
    milestones = [max(1, int(cfg.ssl_epochs * 0.6)), max(2, int(cfg.ssl_epochs * 0.8))]
    task = MoCoTask(model=cfg.ssl_backbone, in_channels=len(bands), version=2, layers=2,
                    hidden_dim=2048, output_dim=128, lr=cfg.ssl_lr, weight_decay=1e-4,
                    momentum=0.9, schedule=milestones, temperature=cfg.moco_temperature,
                    memory_bank_size=cfg.moco_queue, moco_momentum=cfg.moco_momentum,
                    size=cfg.image_px, augmentation1=augmentations(cfg.ssl_augment, cfg.image_px),
                    augmentation2=augmentations(cfg.ssl_augment, cfg.image_px),
                    gather_distributed=world > 1)
    if cfg.ssl_adapter == "conv1x1":
        for net in (task.backbone, task.backbone_momentum):
            net.conv1 = stem_conv1x1(net.conv1, bands)
    task.backbone_momentum.load_state_dict(task.backbone.state_dict())
    task.projection_head_momentum.load_state_dict(task.projection_head.state_dict())
    for p in (*task.backbone_momentum.parameters(), *task.projection_head_momentum.parameters()):
        p.requires_grad = False
    return task


def stem_conv1x1(conv, bands: list[str]):
    """Seed 003's stem: a learned 1x1 convolution N -> 3, then a 3-channel first convolution of
    the same shape as ``conv``."""
    from .adapters import ChannelMixer

    rgb = torch.nn.Conv2d(3, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          bias=conv.bias is not None)
    return ChannelMixer(len(bands), bands, rgb)


def make_backbone(name: str, bands: list[str], adapter: str, seed: int):
    """A timm ResNet taking ``bands`` (the architecture of the SSL encoder), random init."""
    import timm

    torch.manual_seed(seed)
    net = timm.create_model(name, in_chans=len(bands), num_classes=0)
    if adapter == "conv1x1":
        net.conv1 = stem_conv1x1(net.conv1, bands)
    return net


def embedding_std(features: torch.Tensor) -> float:
    """Mean over dimensions of the standard deviation of L2-normalised embeddings: about
    1/sqrt(d) when they spread over the sphere, near 0 when the encoder has collapsed."""
    z = torch.nn.functional.normalize(features.float(), dim=1)
    return float(z.std(dim=0).mean())


def collapse_check(features: torch.Tensor, ratio: float = 0.1) -> dict:
    """Representation collapse: embedding std below ``ratio`` x 1/sqrt(d)."""
    d = features.shape[1]
    std = embedding_std(features)
    return {"embedding_std": std, "uniform_std": 1 / math.sqrt(d),
            "collapsed": std < ratio / math.sqrt(d)}


# --- training -------------------------------------------------------------------------------

def _callbacks():
    from lightning.pytorch.callbacks import Callback

    class Monitor(Callback):
        """Every ``every`` steps: loss, positive-pair similarity, queue statistics and the
        embedding std (collapse), on the un-augmented batch, the model briefly in eval mode.
        Under DDP these are rank 0's slice of the global batch (the queue is shared)."""

        def __init__(self, every: int, total_steps: int, show_progress: bool):
            self.every, self.total, self.show = every, total_steps, show_progress
            self.history: list[dict] = []
            self.bar = None

        def state_dict(self):
            return {"history": self.history}

        def load_state_dict(self, state):
            self.history = list(state["history"])

        def on_train_start(self, trainer, module):
            from .progress import progress

            self.bar = progress(total=trainer.max_epochs * trainer.num_training_batches,
                                initial=trainer.global_step, unit="step", desc="MoCo-v2",
                                disable=not self.show)

        def on_train_end(self, trainer, module):
            if self.bar is not None:
                self.bar.close()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.bar is not None:
                self.bar.update(1)
            step = trainer.global_step
            if step % self.every and step != self.total:
                return
            x = batch["image"]
            c = x.shape[1] // 2
            was = module.training
            module.eval()
            with torch.no_grad():
                q, h = module.forward(x[:, :c])
                k = module.forward_momentum(x[:, c:])
                q = torch.nn.functional.normalize(q, dim=1)
                k = torch.nn.functional.normalize(k, dim=1)
                # lightly starts the queue with random unit vectors; real keys replace them
                # batch by batch, so the statistics are over the keys enqueued so far
                bank = module.criterion.memory_bank.bank
                # keys of every process enter the queue (gathered): world x this batch per step
                filled = min(step * x.shape[0] * trainer.world_size, bank.shape[0])
                keys = bank[:filled] if filled else bank
                neg = float((q @ keys.T).mean())
                queue_std = embedding_std(keys) if len(keys) > 1 else float("nan")
            module.train(was)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.history.append({
                "step": step, "epoch": trainer.current_epoch + 1, "loss": float(loss),
                "positive_similarity": float((q * k).sum(dim=1).mean()),
                "negative_similarity": neg, "queue_filled": filled,
                "queue_std": queue_std, "embedding_std": embedding_std(h),
                "feature_dim": int(h.shape[1]),
                "lr": float(trainer.optimizers[0].param_groups[0]["lr"])})

        def on_train_epoch_end(self, trainer, module):
            if self.history:
                r = self.history[-1]
                log.info("epoch %d/%d: loss %.3f, positive similarity %.3f, keys enqueued "
                         "%d, embedding std %.4f", r["epoch"], trainer.max_epochs, r["loss"],
                         r["positive_similarity"], r["queue_filled"], r["embedding_std"])

    class EpochSeed(Callback):
        """Seeds torch (the GPU-side kornia augmentations) at the start of every epoch from
        (seed, epoch, rank): an epoch's randomness does not depend on the epochs before it,
        so a run resumed from ``last.ckpt`` repeats the uninterrupted one."""

        def __init__(self, seed: int):
            self.seed = seed

        def on_train_epoch_start(self, trainer, module):
            state = np.random.SeedSequence([self.seed, trainer.current_epoch,
                                            trainer.global_rank, 11]).generate_state(1)[0]
            torch.manual_seed(int(state))

    class QueueState(Callback):
        """lightly registers the queue (``bank``, ``bank_ptr``) as non-persistent buffers, so
        Lightning's checkpoint leaves it out and a resumed run would start from random keys;
        this puts it into ``last.ckpt`` and back."""

        def __init__(self, ssl_hash: str = ""):
            self.ssl_hash = ssl_hash

        def on_save_checkpoint(self, trainer, module, checkpoint):
            bank = module.criterion.memory_bank
            checkpoint["moco_queue"] = {"bank": bank.bank.detach().cpu().clone(),
                                        "bank_ptr": bank.bank_ptr.detach().cpu().clone()}
            checkpoint["geofm"] = {"ssl_hash": self.ssl_hash}  # checked before resuming

        def on_load_checkpoint(self, trainer, module, checkpoint):
            if "moco_queue" in checkpoint:
                bank = module.criterion.memory_bank
                for name in ("bank", "bank_ptr"):
                    getattr(bank, name).copy_(checkpoint["moco_queue"][name])

    class AtomicLast(Callback):
        """``last.ckpt`` after every epoch, written to a temporary file and renamed."""

        def __init__(self, path: Path):
            self.path = path

        def on_train_epoch_end(self, trainer, module):
            from .training import check_finite_state

            # weights and optimiser state finite, or the last good last.ckpt stays
            check_finite_state({"model": module.state_dict(),
                                "optimizer": trainer.optimizers[0].state_dict()},
                               f"{self.path.name} after epoch {trainer.current_epoch + 1}")
            # one name for all ranks (Lightning writes on rank 0 only); only this run writes
            # here (it holds the folder's lock)
            tmp = self.path.with_name(self.path.name + ".tmp")
            # weights_only=False here means "with the optimiser and loop state" (Lightning's
            # flag); the file still reads with torch.load(weights_only=True). All ranks call.
            trainer.save_checkpoint(tmp, weights_only=False)
            if trainer.is_global_zero:  # rank 0 wrote it
                os.replace(tmp, self.path)

    return Monitor, AtomicLast, EpochSeed, QueueState


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's banners and tips (GPU/TPU available, litlogger, no val loop) say nothing
    about this run; its warnings and errors still show."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*validation_step.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


@dataclass
class SSLResult:
    encoder_path: Path
    history: list[dict]
    seconds: float
    already_finished: bool
    resumed: bool
    pairs: int
    params: dict = field(default_factory=dict)


def ssl_dir(cfg: Config) -> Path:
    return cfg.path("checkpoints", cfg.ssl_hash)


def pretrain(cfg: Config, show_progress: bool = True, log_every: int = 2,
             callbacks=()) -> SSLResult:
    """Pretrain (or resume, or load) the MoCo-v2 encoder of ``cfg`` on the train places.

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
    from .io import folder_lock

    folder = ssl_dir(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 holds the lock for the whole job
        return _pretrain(cfg, show_progress, log_every, callbacks)
    with folder_lock(folder, f"the checkpoints of SSL run {cfg.ssl_hash} ({cfg.name})",
                     wait=False):
        return _pretrain(cfg, show_progress, log_every, callbacks)


def _pretrain(cfg: Config, show_progress: bool, log_every: int, callbacks) -> SSLResult:
    """The body of :func:`pretrain`, run while holding the checkpoint folder's lock."""
    from lightning.pytorch import Trainer, seed_everything

    from .distributed import from_env
    from .models import resolve_device, resolve_precision
    from .training import check_checkpoint_run, load_checkpoint, save_checkpoint

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
    task = build_task(cfg, pairs.bands, world)
    sampler = EpochSampler(len(views), cfg.ssl_batch_size, cfg.seed, rank, world)
    loader = torch.utils.data.DataLoader(
        views, batch_size=cfg.ssl_batch_size // world, sampler=sampler, drop_last=True,
        num_workers=cfg.num_workers, pin_memory=device == "cuda",
        persistent_workers=cfg.num_workers > 0,
        # its own generator: making an iterator then draws nothing from torch's global RNG,
        # which EpochSeed sets for the augmentations (when the iterator is made differs
        # between a fresh and a resumed run)
        generator=torch.Generator().manual_seed(cfg.seed))
    monitor_cls, atomic_cls, seed_cls, queue_cls = _callbacks()
    monitor = monitor_cls(log_every, cfg.ssl_epochs * len(loader), show_progress and rank == 0)
    folder.mkdir(parents=True, exist_ok=True)
    if world > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="nccl" if device == "cuda" else "gloo")
        devices, nodes = dist.local_world_size, world // dist.local_world_size
    else:
        strategy, devices, nodes = "auto", 1, 1
    with _quiet_lightning():
        trainer = Trainer(max_epochs=cfg.ssl_epochs, accelerator="gpu" if device == "cuda" else
                          "cpu", devices=devices, num_nodes=nodes, strategy=strategy,
                          precision=precision, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False,
                          use_distributed_sampler=False,
                          callbacks=[monitor, seed_cls(cfg.seed), queue_cls(cfg.ssl_hash),
                                     atomic_cls(last), *callbacks], log_every_n_steps=1)
    t0 = time.perf_counter()
    resumed = last.is_file()
    with _quiet_lightning():
        trainer.fit(task, loader, ckpt_path=str(last) if resumed else None,
                    weights_only=True if resumed else None)  # tensors and plain values only
    run = {"steps": trainer.global_step, "world_size": world, "places": len(all_pairs),
           "places_pretrained": len(pairs), "incomplete_places": pairs.incomplete}
    if trainer.global_rank == 0:
        save_checkpoint(out, {
            "format": SSL_FORMAT, "backbone": cfg.ssl_backbone, "adapter": cfg.ssl_adapter,
            "bands": pairs.bands, "image_px": cfg.image_px, "mode": cfg.ssl_mode,
            "state_dict": task.backbone.state_dict(), "history": monitor.history,
            "pairs": len(pairs), "finished": True, "ssl_hash": cfg.ssl_hash, "run": run,
            "params": json.loads(json.dumps(cfg.to_dict()))})
    return SSLResult(out, monitor.history, round(time.perf_counter() - t0, 1), False, resumed,
                     len(pairs), run)


def _check_last_ckpt(last: Path, cfg: Config) -> None:
    """``last.ckpt`` is readable and was written by this configuration."""
    from .errors import CheckpointError
    from .training import check_checkpoint_run

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


def load_encoder(path: Path, device: str = "cpu"):
    """(backbone, checkpoint state) of a pretrained SSL encoder (``encoder.pt``)."""
    from .training import load_checkpoint

    state = load_checkpoint(path, map_location=device, expected_format=SSL_FORMAT)
    net = make_backbone(state["backbone"], state["bands"], state["adapter"], 0)
    net.load_state_dict(state["state_dict"])
    return net.to(device).eval(), state


# --- evaluation -----------------------------------------------------------------------------

def features_of(net, x: np.ndarray, device: str = "cpu", batch: int = 256) -> np.ndarray:
    """Pooled backbone features of images, without gradients, in eval mode."""
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(net(torch.from_numpy(x[i:i + batch]).to(device)).float().cpu().numpy())
    return np.concatenate(out)


def labelled_subset(pairs: Pairs, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of ``n`` labelled places (all of them if fewer)."""
    return np.sort(np.random.default_rng([seed, 1024]).permutation(len(pairs))[:n])


def train_classifier(net, x_tr: np.ndarray, y_tr: np.ndarray, epochs: int, lr: float,
                     seed: int, device: str = "cpu", batch: int = 64, single: bool = False):
    """``net`` + a linear head trained with AdamW, flips and rotations: multi-label (``y_tr``
    0/1 rows, BCE) or, with ``single``, single-label (``y_tr`` class indices, cross-entropy).
    Returns a function giving predictions for images (0/1 rows, or class indices)."""
    from .training import augment

    dim = features_of(net, x_tr[:2], device).shape[1]
    torch.manual_seed(seed)
    n_out = int(y_tr.max()) + 1 if single else y_tr.shape[1]
    head = torch.nn.Linear(dim, n_out).to(device)
    model = torch.nn.Sequential(net, head).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss() if single else torch.nn.BCEWithLogitsLoss()
    target = torch.from_numpy(y_tr.astype(np.int64 if single else np.float32))
    rng, aug = np.random.default_rng(seed), random.Random(seed)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(x_tr))
        for i in range(0, len(order) - 1, batch):
            b = order[i:i + batch]
            if len(b) < 2:
                continue
            xb = torch.from_numpy(np.stack([augment(x_tr[j], aug) for j in b])).to(device)
            loss = loss_fn(model(xb), target[b].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def predict(x: np.ndarray) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                logits = model(torch.from_numpy(x[i:i + 256]).to(device))
                out.append((logits.argmax(1) if single else torch.sigmoid(logits) > 0.5)
                           .cpu().numpy())
        return np.concatenate(out)

    return predict


def accuracy_ci(y_true: np.ndarray, y_pred: np.ndarray, n_boot: int, seed: int):
    """Accuracy (%) and its 95 % percentile-bootstrap interval over test places."""
    hit = (np.asarray(y_true) == np.asarray(y_pred)).astype(float)
    rng = np.random.default_rng(seed)
    draws = [hit[rng.integers(0, len(hit), len(hit))].mean() for _ in range(n_boot)]
    return 100 * float(hit.mean()), [100 * float(np.quantile(draws, q)) for q in (0.025, 0.975)]


def single_label_probe(x_tr, y_tr, x_te, seed: int = 0):
    """Multinomial logistic regression on standardised frozen features, ``C`` chosen by
    accuracy on a held-out 20 % of the training rows, then refitted on all of them. The
    tolerance is 1e-3 instead of scikit-learn's 1e-4: on the demo's 37 classes x 512 features
    that is 4-5x faster (122 vs 419 lbfgs iterations) with the same test accuracy (0.76)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    order = np.random.default_rng(seed).permutation(len(x_tr))
    n_val = max(int(round(len(order) * 0.2)), 1)
    val, fit = order[:n_val], order[n_val:]
    best, best_acc = 0.1, -1.0  # kept when the fitting rows hold a single class
    grid = (0.01, 0.1, 1.0) if len(np.unique(y_tr[fit])) > 1 else ()
    for c in grid:
        m = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, tol=1e-3))
        acc = float((m.fit(x_tr[fit], y_tr[fit]).predict(x_tr[val]) == y_tr[val]).mean())
        if acc > best_acc:
            best, best_acc = c, acc
    model = make_pipeline(StandardScaler(), LogisticRegression(C=best, max_iter=2000, tol=1e-3))
    return model.fit(x_tr, y_tr).predict(x_te)


@dataclass
class SingleLabels:
    """The single-label task of an evaluation: the labelled places with a dominant class, the
    classes they cover, and the test places' class indices (-1: a class absent from the
    labelled set, which no classifier trained on it can predict; it counts as an error)."""

    train_idx: np.ndarray   # into the labelled subset
    classes: list[str]
    y_train: np.ndarray
    y_test: np.ndarray


def single_labels(train: Pairs, idx: np.ndarray, test: Pairs) -> SingleLabels | None:
    """None when the data has no dominant classes (BigEarthNet has no land-cover map)."""
    if not train.dominant or not test.dominant:
        return None
    keep = np.array([k for k, i in enumerate(idx) if train.dominant[i]], int)
    classes = sorted({train.dominant[idx[k]] for k in keep},
                     key=lambda c: train.vocabulary.index(c) if c in train.vocabulary else 0)
    if len(classes) < 2 or not any(test.dominant):
        return None
    pos = {c: j for j, c in enumerate(classes)}
    return SingleLabels(keep, classes, np.array([pos[train.dominant[idx[k]]] for k in keep]),
                        np.array([pos.get(d, -1) if d else -2 for d in test.dominant]))


def evaluate(cfg: Config, encoder_path: Path, finetune_epochs: int = 5, n_boot: int = 300,
             device: str = "cpu", show_progress: bool = True,
             tasks: tuple[str, ...] = ("multi-label", "single-label")) -> list[dict]:
    """Seed 003's table: rows (random init + linear probe, supervised from scratch, the SSL
    encoder with a linear probe and fine-tuned) x inputs (s1, s2, s1/s2) x tasks, on the
    validation places (never seen in pretraining or fitting) with ``labelled_samples``
    training places as the labelled data. Multi-label: F2 micro (threshold 0.5).
    Single-label (the dominant land-cover class, where the data has one): accuracy. Every
    score has a bootstrap 95 % interval over test places. Rows: ``task, metric, method,
    input, score, ci, n_train, n_test``."""
    from .features import bootstrap_metrics, label_matrix, multilabel_metrics, run_probe
    from .progress import progress

    ssl_net, state = load_encoder(encoder_path, device)
    train, test = load_pairs(cfg, "train"), load_pairs(cfg, "val")
    if train.bands != state["bands"]:
        raise PairError(f"the encoder takes {state['bands']}, this data has {train.bands}")
    idx = labelled_subset(train, cfg.labelled_samples, cfg.seed)
    vocab = train.vocabulary
    y_tr = label_matrix([train.labels[i] for i in idx], vocab).astype(np.float32)
    y_te = label_matrix(test.labels, vocab).astype(bool)
    single = single_labels(train, idx, test) if "single-label" in tasks else None
    if single is not None:
        has = single.y_test > -2  # test places with a dominant class
    elif "single-label" in tasks:
        log.info("no dominant land-cover classes in this data: single-label rows left out")
    init = make_backbone(state["backbone"], state["bands"], state["adapter"], cfg.seed + 1)
    mode = state["mode"]
    rows = []
    n_tasks = ("multi-label" in tasks) + (single is not None)
    bar = progress(total=len(INPUTS) * 4 * n_tasks, desc="evaluation", unit="fit",
                   disable=not show_progress)

    def row(task, method, which, score, ci, n_train, n_test, **extra):
        rows.append({"task": task, "metric": "F2 micro" if task == "multi-label" else
                     "accuracy", "method": method, "input": which, "score": score,
                     "ci": [float(c) for c in ci], "n_train": n_train, "n_test": n_test,
                     **extra})
        bar.update(1)

    for which in INPUTS:
        x_tr, x_te = train.inputs(idx, which), test.inputs(np.arange(len(test)), which)
        feats = {name: (features_of(net, x_tr, device), features_of(net, x_te, device))
                 for name, net in (("random init", init), (f"MoCo-v2 {mode}", ssl_net))}
        if "multi-label" in tasks:
            for name, (f_tr, f_te) in feats.items():
                r = run_probe("linear", f_tr, y_tr.astype(bool), f_te, y_te, seed=cfg.seed,
                              n_boot=n_boot)
                row("multi-label", f"{name}, linear probe", which, r.test["f2_micro"],
                    r.ci["f2_micro"], len(idx), len(test),
                    precision_micro=r.test["precision_micro"],
                    hamming_loss=r.test["hamming_loss"])
            for name, start in (("supervised from scratch", None),
                                (f"MoCo-v2 {mode}, fine-tuned", ssl_net)):
                # the same recipe for both: only the starting weights differ
                net = (make_backbone(state["backbone"], state["bands"], state["adapter"],
                                     cfg.seed + 2) if start is None else copy.deepcopy(start))
                pred = train_classifier(net.to(device), x_tr, y_tr, finetune_epochs, 1e-3,
                                        cfg.seed, device)(x_te)
                m = multilabel_metrics(y_te, pred)
                ci = bootstrap_metrics(y_te, pred, n_boot=n_boot, seed=cfg.seed)
                row("multi-label", name, which, m["f2_micro"], ci["f2_micro"], len(idx),
                    len(test), precision_micro=m["precision_micro"],
                    hamming_loss=m["hamming_loss"])
        if single is not None:
            k, yt = single.train_idx, single.y_test[has]
            for name, (f_tr, f_te) in feats.items():
                pred = single_label_probe(f_tr[k], single.y_train, f_te[has], cfg.seed)
                row("single-label", f"{name}, linear probe", which,
                    *accuracy_ci(yt, pred, n_boot, cfg.seed), len(k), int(has.sum()))
            for name, start in (("supervised from scratch", None),
                                (f"MoCo-v2 {mode}, fine-tuned", ssl_net)):
                net = (make_backbone(state["backbone"], state["bands"], state["adapter"],
                                     cfg.seed + 2) if start is None else copy.deepcopy(start))
                pred = train_classifier(net.to(device), x_tr[k], single.y_train,
                                        finetune_epochs, 1e-3, cfg.seed, device,
                                        single=True)(x_te[has])
                row("single-label", name, which, *accuracy_ci(yt, pred, n_boot, cfg.seed),
                    len(k), int(has.sum()))
    bar.close()
    return rows


# --- comparing pair modes -------------------------------------------------------------------

MODE_NAMES = {"sensor": "sensor pairs", "fusion_all": "all fusion",
              "fusion_partial": "partial fusion", "augment": "augmentation pairs"}


def save_evaluation(cfg: Config, rows: list[dict], settings: dict) -> Path:
    """``evaluation.json`` beside the encoder: the rows of :func:`evaluate` and what they were
    run with, so runs of other pair modes on the same data can be put side by side."""
    from .shards import atomic_write_json

    path = ssl_dir(cfg) / "evaluation.json"
    atomic_write_json(path, {"ssl_hash": cfg.ssl_hash, "data_hash": cfg.data_hash,
                             "ssl_mode": cfg.ssl_mode, "ssl_patches": cfg.ssl_patches,
                             "ssl": {k: getattr(cfg, k) for k in
                                     ("ssl_backbone", "ssl_adapter", "ssl_augment",
                                      "ssl_epochs", "ssl_batch_size", "moco_queue")},
                             "labelled_samples": cfg.labelled_samples, "settings": settings,
                             "rows": rows})
    return path


def compare_runs(cfg: Config, settings: dict) -> list[dict]:
    """The evaluations of every finished MoCo run on this data with the same labelled set,
    evaluation settings, backbone and input adapter (pair modes, patch subsets, epochs, ...),
    as rows shaped like seed 003's table:
    the supervised baseline once, then each run's linear-probe and fine-tuned rows."""
    found = []
    settings = json.loads(json.dumps(settings))  # as stored
    for path in sorted(cfg.path("checkpoints").glob("*/evaluation.json")):
        rec = json.loads(path.read_text())
        # the baselines (random init, from scratch) are the architecture's: same backbone and
        # input adapter, or the rows would sit beside another network's baselines
        if (rec.get("data_hash") == cfg.data_hash and rec.get("settings") == settings
                and rec.get("labelled_samples") == cfg.labelled_samples
                and rec["ssl"]["ssl_backbone"] == cfg.ssl_backbone
                and rec["ssl"]["ssl_adapter"] == cfg.ssl_adapter):
            found.append(rec)
    order = {m: i for i, m in enumerate(MODE_NAMES)}
    found.sort(key=lambda r: (order.get(r["ssl_mode"], 9), r["ssl_patches"], r["ssl_hash"]))
    base_rows, out = [], []
    for rec in found:
        label = MODE_NAMES.get(rec["ssl_mode"], rec["ssl_mode"])
        if rec["ssl_patches"] != "all":
            label += ", non-overlapping"
        others = [r for r in found if r["ssl_mode"] == rec["ssl_mode"]
                  and r["ssl_patches"] == rec["ssl_patches"]]
        if len(others) > 1:  # the same mode with other SSL settings: say which
            label += f" [{rec['ssl_hash']}]"
        for r in rec["rows"]:
            # the baselines do not depend on the pretraining: shown once, from the first run
            base = {"supervised from scratch": "supervised from scratch (labelled set only)",
                    "random init, linear probe": "random init, linear probe"}.get(r["method"])
            if base:
                if rec is found[0]:
                    base_rows.append({**r, "run": base, "ssl_hash": None})
                continue
            how = "linear probe" if r["method"].endswith("linear probe") else "fine-tuned"
            out.append({**r, "run": f"{label}, {how}", "ssl_hash": rec["ssl_hash"]})
    return base_rows + out
