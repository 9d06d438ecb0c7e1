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


class PairError(ValueError):
    """The data holds no usable S1/S2 pairs, with the fix."""


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
                 incomplete=len(halves) - len(complete))


class PairViews(torch.utils.data.Dataset):
    """Samples of one pair mode: ``image`` holds the two views stacked along the channels
    (query first); ``pair_q``/``pair_k`` and ``sensor_q``/``sensor_k`` say what they are."""

    def __init__(self, pairs: Pairs, mode: str):
        if mode not in PAIR_MODES:
            raise ValueError(f"unknown ssl_mode {mode!r}; choose one of {', '.join(PAIR_MODES)}")
        self.pairs, self.mode = pairs, mode

    def __len__(self) -> int:
        return 2 * len(self.pairs) if self.mode == "augment" else len(self.pairs)

    def _view(self, i: int, sensor: str) -> torch.Tensor:
        return torch.from_numpy(self.pairs.inputs(i, sensor)[0])

    def __getitem__(self, i: int) -> dict:
        # python's random: Lightning's seed_everything seeds it, so runs repeat
        if self.mode == "augment":
            i, sensors = i // 2, ("s2", "s2") if i % 2 == 0 else ("s1", "s1")
        elif self.mode == "sensor":
            sensors = ("s1", "s2") if random.random() < 0.5 else ("s2", "s1")
        elif self.mode == "fusion_all":
            sensors = ("s1/s2", "s1/s2")
        else:
            one = random.choice(INPUTS)
            sensors = (one, one)
        q, k = (self._view(i, s) for s in sensors)
        pid = self.pairs.pair_ids[i]
        return {"image": torch.cat([q, k]), "pair_q": pid, "pair_k": pid,
                "sensor_q": sensors[0], "sensor_k": sensors[1]}


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


def build_task(cfg: Config, bands: list[str]):
    """torchgeo's MoCoTask (v2) for ``bands`` input channels, with the two fixes of the module
    docstring (key side starts as a copy of the query side; the conv1x1 stem)."""
    from torchgeo.trainers import MoCoTask

    torch.manual_seed(cfg.seed)
    milestones = [max(1, int(cfg.ssl_epochs * 0.6)), max(2, int(cfg.ssl_epochs * 0.8))]
    task = MoCoTask(model=cfg.ssl_backbone, in_channels=len(bands), version=2, layers=2,
                    hidden_dim=2048, output_dim=128, lr=cfg.ssl_lr, weight_decay=1e-4,
                    momentum=0.9, schedule=milestones, temperature=cfg.moco_temperature,
                    memory_bank_size=cfg.moco_queue, moco_momentum=cfg.moco_momentum,
                    size=cfg.image_px, augmentation1=augmentations(cfg.ssl_augment, cfg.image_px),
                    augmentation2=augmentations(cfg.ssl_augment, cfg.image_px))
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
        embedding std (collapse), on the un-augmented batch, the model briefly in eval mode."""

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
                filled = min(step * x.shape[0], bank.shape[0])
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

    class AtomicLast(Callback):
        """``last.ckpt`` after every epoch, written to a temporary file and renamed."""

        def __init__(self, path: Path):
            self.path = path

        def on_train_epoch_end(self, trainer, module):
            tmp = self.path.with_name(self.path.name + ".tmp")
            trainer.save_checkpoint(tmp, weights_only=False)  # optimiser too: resumable
            os.replace(tmp, self.path)

    return Monitor, AtomicLast


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


def pretrain(cfg: Config, show_progress: bool = True, log_every: int = 2) -> SSLResult:
    """Pretrain (or resume, or load) the MoCo-v2 encoder of ``cfg`` on the train places."""
    from lightning.pytorch import Trainer, seed_everything

    from .models import resolve_device, resolve_precision
    from .training import load_checkpoint, save_checkpoint

    folder = ssl_dir(cfg)
    out = folder / "encoder.pt"
    if out.is_file():
        state = load_checkpoint(out, expected_format=SSL_FORMAT)
        if state.get("finished"):
            return SSLResult(out, state["history"], 0.0, True, False, state["pairs"])
    pairs = load_pairs(cfg, "train")
    if len(pairs) < cfg.ssl_batch_size:
        raise ValueError(f"ssl_batch_size={cfg.ssl_batch_size} is larger than the "
                         f"{len(pairs)} training places; lower it or add data")
    device = resolve_device(cfg.device)
    precision = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[
        resolve_precision(cfg.precision, device)]
    seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task(cfg, pairs.bands)
    loader = torch.utils.data.DataLoader(
        PairViews(pairs, cfg.ssl_mode), batch_size=cfg.ssl_batch_size, shuffle=True,
        drop_last=True, num_workers=cfg.num_workers, pin_memory=device == "cuda")
    monitor_cls, atomic_cls = _callbacks()
    monitor = monitor_cls(log_every, cfg.ssl_epochs * len(loader), show_progress)
    folder.mkdir(parents=True, exist_ok=True)
    last = folder / "last.ckpt"
    with _quiet_lightning():
        trainer = Trainer(max_epochs=cfg.ssl_epochs, accelerator="gpu" if device == "cuda" else
                          "cpu", devices="auto" if device == "cuda" else 1,
                          precision=precision, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[monitor, atomic_cls(last)], log_every_n_steps=1)
    t0 = time.perf_counter()
    resumed = last.is_file()
    with _quiet_lightning():
        trainer.fit(task, loader, ckpt_path=str(last) if resumed else None,
                    weights_only=False if resumed else None)
    if trainer.global_rank == 0:
        save_checkpoint(out, {
            "format": SSL_FORMAT, "backbone": cfg.ssl_backbone, "adapter": cfg.ssl_adapter,
            "bands": pairs.bands, "image_px": cfg.image_px, "mode": cfg.ssl_mode,
            "state_dict": task.backbone.state_dict(), "history": monitor.history,
            "pairs": len(pairs), "finished": True, "ssl_hash": cfg.ssl_hash,
            "params": json.loads(json.dumps(cfg.to_dict()))})
    return SSLResult(out, monitor.history, round(time.perf_counter() - t0, 1), False, resumed,
                     len(pairs), {"steps": trainer.global_step,
                                  "incomplete_places": pairs.incomplete})


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
                     seed: int, device: str = "cpu", batch: int = 64):
    """``net`` + a linear multi-label head trained with BCE, AdamW, flips and rotations; returns
    a function giving 0/1 predictions for images."""
    from .training import augment

    dim = features_of(net, x_tr[:2], device).shape[1]
    torch.manual_seed(seed)
    head = torch.nn.Linear(dim, y_tr.shape[1]).to(device)
    model = torch.nn.Sequential(net, head).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng, aug = np.random.default_rng(seed), random.Random(seed)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(x_tr))
        for i in range(0, len(order) - 1, batch):
            b = order[i:i + batch]
            if len(b) < 2:
                continue
            xb = torch.from_numpy(np.stack([augment(x_tr[j], aug) for j in b])).to(device)
            loss = loss_fn(model(xb), torch.from_numpy(y_tr[b]).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def predict(x: np.ndarray) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                out.append(torch.sigmoid(model(torch.from_numpy(x[i:i + 256]).to(device)))
                           .cpu().numpy() > 0.5)
        return np.concatenate(out)

    return predict


def evaluate(cfg: Config, encoder_path: Path, finetune_epochs: int = 5, n_boot: int = 300,
             device: str = "cpu", show_progress: bool = True) -> list[dict]:
    """Seed 003's table: rows (random init + linear probe, supervised from scratch, the SSL
    encoder with a linear probe and fine-tuned) x inputs (s1, s2, s1/s2), F2 micro with 95 %
    intervals on the validation places. Labelled data: ``labelled_samples`` training places."""
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
    init = make_backbone(state["backbone"], state["bands"], state["adapter"], cfg.seed + 1)
    rows = []
    bar = progress(total=len(INPUTS) * 4, desc="evaluation", unit="fit",
                   disable=not show_progress)
    for which in INPUTS:
        x_tr, x_te = train.inputs(idx, which), test.inputs(np.arange(len(test)), which)

        def add(method, pred, which=which):
            m = multilabel_metrics(y_te, pred)
            ci = bootstrap_metrics(y_te, pred, n_boot=n_boot, seed=cfg.seed)
            rows.append({"method": method, "input": which, "f2_micro": m["f2_micro"],
                         "f2_micro_ci": ci["f2_micro"], "precision_micro": m["precision_micro"],
                         "hamming_loss": m["hamming_loss"], "n_train": len(idx),
                         "n_test": len(test)})
            bar.update(1)

        for name, net in (("random init, linear probe", init),
                          (f"MoCo-v2 {state['mode']}, linear probe", ssl_net)):
            r = run_probe("linear", features_of(net, x_tr, device), y_tr.astype(bool),
                          features_of(net, x_te, device), y_te, seed=cfg.seed, n_boot=n_boot)
            rows.append({"method": name, "input": which, "f2_micro": r.test["f2_micro"],
                         "f2_micro_ci": r.ci["f2_micro"],
                         "precision_micro": r.test["precision_micro"],
                         "hamming_loss": r.test["hamming_loss"], "n_train": len(idx),
                         "n_test": len(test)})
            bar.update(1)
        scratch = make_backbone(state["backbone"], state["bands"], state["adapter"],
                                cfg.seed + 2).to(device)
        add("supervised from scratch", train_classifier(
            scratch, x_tr, y_tr, finetune_epochs, 1e-3, cfg.seed, device)(x_te))
        tuned = copy.deepcopy(ssl_net)  # the same recipe as from scratch: only the start differs
        add(f"MoCo-v2 {state['mode']}, fine-tuned", train_classifier(
            tuned, x_tr, y_tr, finetune_epochs, 1e-3, cfg.seed, device)(x_te))
    bar.close()
    return rows
