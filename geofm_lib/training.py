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

from .config import Config
from .progress import get_logger
from .shards import ShardError, build_folder, load_manifest, shard_paths

log = get_logger()
CHECKPOINT_FORMAT = "geofm-clip-1"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# --- data ----------------------------------------------------------------------------------

def augment(x: np.ndarray, rng: random.Random) -> np.ndarray:
    """A random one of the 8 flips/90-degree rotations of a (C, H, W) image."""
    k = rng.randrange(4)
    if k:
        x = np.rot90(x, k, axes=(1, 2))
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x)


def _preprocess(channel_stats: dict, train: bool, seed: int):
    from .models import to_model_input
    from .shards import decode_sample

    rng = random.Random(seed)

    def fn(raw: dict):
        s = decode_sample(raw)
        m = s["json"]
        x = to_model_input(s["img"], m["bands"], channel_stats[m["dataset"]])
        text = s["txt"]
        if train:
            x = augment(x, rng)
            if len(m.get("captions") or ()) > 1:  # corpora with several captions per image
                text = m["captions"][rng.randrange(len(m["captions"]))]
        return x, text

    return fn


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


def train_stream(folder: Path, manifest: dict, datasets: list[str], channel_stats: dict,
                 tokenizer, batch_size: int, image_px: int, seed: int, epoch: int,
                 num_workers: int = 0, shuffle_buffer: int = 2000):
    """An endless stream of (images, tokens) batches mixing the datasets' training shards."""
    import webdataset as wds

    epoch_seed = seed * 100_003 + epoch
    counts = {ds: manifest["counts"][ds]["train"] for ds in datasets}
    streams = []
    for i, ds in enumerate(datasets):
        urls = [str(p) for p in shard_paths(folder, "train", ds)]
        streams.append(wds.DataPipeline(
            wds.ResampledShards(urls, seed=epoch_seed + 7919 * i, deterministic=True),
            wds.tarfile_to_samples(),
            wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, max(counts[ds] // 2, 1)),
                        rng=random.Random(epoch_seed + 31 * i)),
            wds.map(_preprocess(channel_stats, train=True, seed=epoch_seed + 17 * i)),
        ))
    random.seed(epoch_seed)  # RandomMix draws with the module-level generator
    mix = wds.RandomMix(streams, probs=[counts[ds] for ds in datasets])
    pipeline = wds.DataPipeline(mix, wds.batched(batch_size, collation_fn=_collate(
        tokenizer, image_px), partial=False))
    if num_workers:
        return wds.WebLoader(pipeline, batch_size=None, num_workers=num_workers)
    return pipeline


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


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, fsync, rename: a checkpoint that exists is whole."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict:
    """Load a geofm checkpoint with ``weights_only=True`` (no code runs on load)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path.parent.name}/{path.name}: run notebooks/03_pretrain.ipynb "
            f"with the same parameters first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"checkpoint {path.name} cannot be read ({type(exc).__name__}: "
                           f"{exc}); delete it and re-run 03_pretrain") from exc
    if state.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path.name} is not a geofm checkpoint (format "
                           f"{state.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    return state


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
    state = load_checkpoint(checkpoint_dir(cfg) / "last.pt")
    if require_finished and not state.get("finished"):
        raise RuntimeError(
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
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the {n_train} training "
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
            raise ValueError(f"{ds}: its {len(bands)} bands {bands} do not fit the 3-channel "
                             f"image tower of {cfg.model}: {exc}. Name the bands (e.g. "
                             f"options.band_names: [red, green, blue]), use a band adapter "
                             f"(band_adapter: first_layer) or drop the dataset") from None
    input_spec({ds: manifest["band_stats"][ds] for ds in cfg.dataset_keys}, cfg.band_adapter)
    return folder, manifest


def plan_steps(cfg: Config, manifest: dict) -> tuple[int, int]:
    """(training samples, steps per epoch) of a run."""
    n_train = sum(manifest["counts"][ds]["train"] for ds in cfg.dataset_keys)
    return n_train, math.ceil(n_train / cfg.batch_size)


def train(cfg: Config, on_step: Callable | None = None, on_epoch: Callable | None = None,
          loss_hook: Callable | None = None, show_progress: bool = True) -> TrainResult:
    """Train (or resume, or just load) the CLIP run of ``cfg``.

    Args:
        on_step: called as ``on_step(step, epoch, loss, lr)`` after every optimiser step.
        on_epoch: called with the epoch's record (train/val loss, val mean R@1, ...).
        loss_hook: test hook, ``loss_hook(loss, step) -> loss`` (e.g. to inject a NaN).

    Raises:
        TrainingDiverged: on a non-finite loss; the last good checkpoint is left as it was.
    """
    import open_clip
    import torch

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
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    stats, bands = input_spec({ds: manifest["band_stats"][ds] for ds in cfg.dataset_keys},
                              cfg.band_adapter)
    model, tokenizer = create_model(cfg.model, cfg.image_px, cfg.pretrained, device, cfg.seed,
                                    band_adapter=cfg.band_adapter, bands=bands)
    datasets = list(cfg.dataset_keys)
    n_train, steps_per_epoch = plan_steps(cfg, manifest)
    total_steps = steps_per_epoch * cfg.epochs

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(0.9, 0.98), eps=1e-6)
    scheduler = make_scheduler(optimizer, total_steps, cfg.warmup_fraction)
    scaler = torch.amp.GradScaler(device, enabled=(precision == "fp16"))
    loss_fn = open_clip.ClipLoss()
    ckpt = checkpoint_dir(cfg) / "last.pt"
    history: list[dict] = []
    step_losses: list[float] = []
    start_epoch = 0
    if ckpt.is_file():
        state = load_checkpoint(ckpt, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        step_losses = list(state.get("step_losses", []))
        start_epoch = int(state["epoch"])
        log.info("resuming from %s: %d of %d epochs done", ckpt.parent.name, start_epoch,
                 cfg.epochs)
    lengths = _caption_lengths(folder, tokenizer)
    ctx = model.context_length if hasattr(model, "context_length") else 77
    truncated = float((lengths > ctx).mean()) if lengths.size else 0.0
    if truncated > 0:
        log.warning("%.1f %% of training captions exceed the %d-token context and are cut",
                    100 * truncated, ctx)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    dev_type = torch.device(device).type

    def autocast():
        return torch.autocast(dev_type, dtype=autocast_dtype, enabled=autocast_dtype is not None)

    t_start = time.perf_counter()
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        stream = train_stream(folder, manifest, datasets, stats, tokenizer, cfg.batch_size,
                              cfg.image_px, cfg.seed, epoch, cfg.num_workers)
        it = iter(stream)
        losses = []
        t0 = time.perf_counter()
        bar = progress(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", disable=not show_progress)
        for _ in range(steps_per_epoch):
            images, tokens = next(it)
            images, tokens = images.to(device, non_blocking=True), tokens.to(device)
            with autocast():
                out = model(images, tokens)
                loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            if loss_hook is not None:
                loss = loss_hook(loss, step)
            if not torch.isfinite(loss):
                bar.close()
                kept = (f"the last good checkpoint (epoch {history[-1]['epoch']}) is kept "
                        f"in checkpoints/{ckpt.parent.name}/" if history
                        else "no checkpoint was written yet")
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr {scheduler.get_last_lr()[0]:.2e}); training stopped and {kept}. "
                    f"Lower lr (now {cfg.lr:g}), keep grad_clip_norm > 0 (now "
                    f"{cfg.grad_clip_norm:g}) or use precision='fp32' (now {precision}).")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            with torch.no_grad():  # OpenCLIP's training clamps the temperature at 100
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            losses.append(float(loss.item()))
            step_losses.append(losses[-1])
            bar.update(1)
            if on_step is not None:
                on_step(step, epoch + 1, losses[-1], scheduler.get_last_lr()[0])
        bar.close()
        train_seconds = time.perf_counter() - t0
        # validation: loss on fixed mixed batches and zero-shot R@K on the val split
        val = shard_paths(folder, "val")
        enc = encode_split(model, tokenizer, val, stats, device, batch_size=256,
                           image_px=cfg.image_px, with_captions=True, show_progress=False)
        zs = summary_metrics(zero_shot(model, tokenizer, enc, cfg.caption_metadata,
                                       n_boot=200, seed=cfg.seed, device=device,
                                       vocabularies=manifest.get("vocabularies")))
        record = {
            "epoch": epoch + 1, "step": step, "train_loss": float(np.mean(losses)),
            "train_loss_last": losses[-1], "val_loss": val_loss(enc, cfg.batch_size, cfg.seed),
            "val_mean_R@1": zs["mean_R@1"], "val_mean_R@5": zs["mean_R@5"],
            "lr_end": scheduler.get_last_lr()[0], "logit_scale": enc.logit_scale,
            "seconds": round(train_seconds, 1),
            "samples_per_s": round(steps_per_epoch * cfg.batch_size / train_seconds, 1),
        }
        history.append(record)
        save_checkpoint(ckpt, {
            "format": CHECKPOINT_FORMAT, "model_name": cfg.model, "image_px": cfg.image_px,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch + 1, "step": step, "history": history, "step_losses": step_losses,
            "finished": epoch + 1 == cfg.epochs, "params": json.loads(json.dumps(cfg.to_dict())),
            "train_hash": cfg.train_hash, "data_hash": cfg.data_hash,
            "channel_stats": stats_to_state(stats), "band_adapter": cfg.band_adapter,
            "model_bands": bands, "datasets": datasets,
        })
        log.info("epoch %d/%d: train loss %.3f, val loss %.3f, val mean R@1 %s",
                 epoch + 1, cfg.epochs, record["train_loss"], record["val_loss"],
                 record["val_mean_R@1"])
        if on_epoch is not None:
            on_epoch(record)
    return TrainResult(
        checkpoint=ckpt, history=history, steps=step,
        seconds=round(time.perf_counter() - t_start, 1), device=device, precision=precision,
        resumed_from_epoch=start_epoch, already_finished=start_epoch >= cfg.epochs,
        parameters={"steps_per_epoch": steps_per_epoch, "train_samples": n_train,
                    "total_steps": total_steps, "model": count_parameters(model)},
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
