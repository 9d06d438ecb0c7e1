"""Seed 001's systems, timed: the optimisation step of each SSL method (MoCo-v2, DINO, MAE, as
07 trains them under Lightning) and of each segmenter (UNet / DeepLabV3+ on the ResNet, UpConv
on the ViT, frozen and fine-tuned, as 08 trains them), at a preset's sizes, on a batch held in
memory (no data loading; the host-to-device copy of the batch is in the step, as it is in a
run). For each: samples/s (median over the timed steps), peak device memory, and the seconds
one epoch takes at the preset's number of places, which is what the seed 001 study's ``full``
preset spends per epoch on this device. Prints and writes ``<work>/bench/ssl.json``.

    geofm bench-ssl [--preset full] [--device cuda] [--quick]

Inputs are Sentinel-2's 12 L2A bands and Sentinel-1's VV/VH (BigEarthNet's pairs, 14 channels),
each SSL sample being the two views of a place stacked, as ``ssl.PairViews`` gives them.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

from geofm_lib.bench.results import write_results
from geofm_lib.config import load_config
from geofm_lib.evaluation.segmenter import build_segmenter, decoder_for
from geofm_lib.models.devices import autocast, resolve_device, resolve_precision
from geofm_lib.report.ssl_study import SEED001_DECODERS, SEED001_METHODS, SEED001_PROTOCOLS
from geofm_lib.ssl.methods import build_module
from geofm_lib.ssl.model import method_config, method_label

S2_L2A = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
BANDS = S2_L2A + ["VV", "VH"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _memory(device: str) -> dict:
    if not device.startswith("cuda"):
        return {}
    return {"peak_memory_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def _reset_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _mfu(flops: float, samples_per_s: float, batch: int, device: str) -> dict:
    """FLOPs per step and sample, and MFU where the device's peak is known."""
    from geofm_lib.bench.train import _peak_flops

    out = {"flops_per_sample": round(flops / batch)}
    peak = _peak_flops(torch.cuda.get_device_name()) if device.startswith("cuda") else None
    if peak and flops:
        out["MFU"] = round(flops * samples_per_s / batch / peak, 4)
    return out


def ssl_step_rate(cfg, steps: int, warmup: int, device: str, precision: str) -> dict:
    """Samples/s of ``cfg.ssl_method``'s Lightning step on one fixed batch of paired views,
    its FLOPs and MFU."""
    from lightning.pytorch import Callback, Trainer
    from torch.utils.flop_counter import FlopCounterMode

    from geofm_lib.ssl.callbacks import quiet_lightning

    b, px = cfg.ssl_batch_size, cfg.image_px
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(b, 2 * len(BANDS), px, px, generator=g),
             "pair_q": list(range(b)), "pair_k": list(range(b)),
             "sensor_q": ["s2"] * b, "sensor_k": ["s1"] * b}
    if device.startswith("cuda"):
        batch["image"] = batch["image"].pin_memory()
    ends: list[float] = []

    class Clock(Callback):
        """Times from one step's end to the next: the fetch, the copy to the device (which
        Lightning makes before ``on_train_batch_start``) and the step."""

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            _sync(device)
            ends.append(time.perf_counter())
            if batch_idx == warmup - 1:
                _reset_memory(device)

    lightning_precision = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[precision]

    def fit(n: int, callbacks=()):
        module = build_module(cfg, BANDS)
        loader = torch.utils.data.DataLoader([batch] * n, batch_size=None)
        with quiet_lightning():
            Trainer(max_steps=n, accelerator="gpu" if device.startswith("cuda")
                    else "cpu", devices=1, precision=lightning_precision, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, callbacks=list(callbacks)).fit(module, loader)

    with FlopCounterMode(display=False) as counter:  # one step, counted
        fit(1)
    flops = counter.get_total_flops()
    fit(steps + warmup, [Clock()])
    times = [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]
    rate = b / statistics.median(times)
    return {"samples_per_s": round(rate, 1), "batch_size": b, "timed_steps": len(times),
            **_mfu(flops, rate, b, device), **_memory(device)}


def segmentation_step_rate(decoder: str, backbone: str, protocol: str, image_px: int,
                           batch_size: int, steps: int, warmup: int, device: str,
                           precision: str, n_classes: int = 2) -> dict:
    """Samples/s of 08's training step (the loss of ``segmenter._train``: cross-entropy per
    pixel; AdamW; ``frozen`` trains the decoder only, the encoder in eval mode)."""
    model = build_segmenter(decoder, backbone, BANDS, n_classes, image_px=image_px).to(device)
    encoder = model.encoder
    enc_ids = {id(p) for p in encoder.parameters()}
    if protocol == "frozen":
        for p in encoder.parameters():
            p.requires_grad = False
    params = [p for p in model.parameters() if p.requires_grad or id(p) not in enc_ids]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, len(BANDS), image_px, image_px, generator=g)
    y = torch.randint(0, n_classes, (batch_size, image_px, image_px), generator=g)
    if device.startswith("cuda"):
        x, y = x.pin_memory(), y.pin_memory()
    model.train()
    if protocol == "frozen":
        encoder.eval()
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # one step's forward and backward
        with autocast(device, precision):
            logits = model(x.to(device))
        torch.nn.functional.cross_entropy(logits.float(), y.to(device)).backward()
    flops = counter.get_total_flops()
    opt.zero_grad(set_to_none=True)
    times = []
    for i in range(steps + warmup):
        if i == warmup:
            _reset_memory(device)
        _sync(device)
        t0 = time.perf_counter()
        xb, yb = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(xb)
        loss = torch.nn.functional.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    rate = batch_size / statistics.median(times)
    return {"samples_per_s": round(rate, 1), "batch_size": batch_size,
            "timed_steps": len(times), **_mfu(flops, rate, batch_size, device),
            **_memory(device)}


def run(preset: str = "full", device: str | None = None, quick: bool = False,
        methods=None, **overrides) -> dict:
    """Every SSL method of the seed 001 study and every segmenter it trains, timed at
    ``preset``'s sizes on ``device``; writes ``<work>/bench/ssl.json``."""
    if quick:  # CPU-sized: the code path, not the numbers
        overrides = {"image_px": 32, "ssl_batch_size": 4, "dino_out_dim": 256,
                     "dino_local_crops": 2, "mae_decoder_dim": 64, "mae_decoder_depth": 1,
                     "moco_queue": 64, **overrides}
    cfg = load_config(preset, None, **overrides)
    device = resolve_device(device or cfg.device)
    precision = resolve_precision(cfg.precision, device)
    steps, warmup = (2, 1) if quick else (20, 5)
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(),
                                 "torch": torch.__version__, "device": device,
                                 "gpu": torch.cuda.get_device_name()
                                 if device.startswith("cuda") else None},
                     "preset": preset, "image_px": cfg.image_px, "precision": precision,
                     "bands": BANDS, "places_per_epoch": cfg.samples_per_dataset,
                     "ssl": {}, "segmentation": {}}
    vit_backbones = []
    for spec in methods or SEED001_METHODS:
        mcfg = method_config(cfg, spec)
        label = method_label(mcfg.ssl_method, mcfg.ssl_backbone, cfg.ssl_backbone)
        r = ssl_step_rate(mcfg, steps, warmup, device, precision)
        r.update(method=mcfg.ssl_method, backbone=mcfg.ssl_backbone,
                 epoch_seconds=round(cfg.samples_per_dataset / r["samples_per_s"], 1))
        if mcfg.ssl_method == "dino":
            r["local_crops"] = mcfg.dino_local_crops
            r["out_dim"] = mcfg.dino_out_dim
        results["ssl"][label] = r
        print(f"{label:>18}: {r['samples_per_s']:8.1f} samples/s "
              f"({r['epoch_seconds']} s per epoch of {cfg.samples_per_dataset:,} places)"
              + (f", MFU {r['MFU']:.3f}" if "MFU" in r else "")
              + (f", peak {r['peak_memory_GiB']} GiB" if "peak_memory_GiB" in r else ""),
              flush=True)
        if mcfg.ssl_backbone.startswith("vit_"):
            vit_backbones.append(mcfg.ssl_backbone)
    seg_batch = 4 if quick else 32
    pairs = [(d, cfg.ssl_backbone) for d in SEED001_DECODERS]
    pairs += [(decoder_for(b, "unet"), b) for b in dict.fromkeys(vit_backbones)]
    for decoder, backbone in pairs:
        for protocol in SEED001_PROTOCOLS:
            r = segmentation_step_rate(decoder, backbone, protocol, cfg.image_px, seg_batch,
                                       steps, warmup, device, precision)
            key = f"{decoder} on {backbone}, {protocol}"
            results["segmentation"][key] = r
            print(f"{key:>34}: {r['samples_per_s']:8.1f} samples/s"
                  + (f", MFU {r['MFU']:.3f}" if "MFU" in r else "")
                  + (f", peak {r['peak_memory_GiB']} GiB" if "peak_memory_GiB" in r else ""),
                  flush=True)
    write_results("ssl.json", results)
    return results
