"""Training benchmarks (issue 6): print numbers and write them to ``<work>/bench/training.json``.

* **ours vs open_clip_train**: samples/s of geofm's optimisation step (``training.Step``:
  forward, ``ClipLoss``, backward, gradient clipping, AdamW, temperature clamp, ``loss.item()``)
  on an in-memory batch, against OpenCLIP's own trainer on its synthetic dataset
  (``bench_openclip``), same model config, batch size, image size, precision, device and
  thread count, one after the other in one run. open_clip_train's step time includes its
  per-sample transform and logging; its ``excl. data`` figure subtracts the logged data time
  and is the like-for-like number.
* **loader vs step**: batches from geofm's training stream (``training.TrainStream``: shards,
  shuffle, mixing, decoding, standardising, augmenting, tokenizing) alone, in samples/s,
  against the step alone.
* **1 vs 2 processes**: the same ``geofm train`` run launched by torchrun with 1 process and
  with 2 (gloo on the CPU, one thread each; the single process uses every core), same global
  batch; samples/s of the epoch.
* **CUDA** (only where a GPU is present): samples/s, peak memory and model FLOPs utilisation
  (MFU: FLOPs of forward + backward counted by ``torch.utils.flop_counter`` on one step, times
  steps/s, over the GPU's dense bf16 peak) for ViT-B-16 at 224 px in bf16.

    geofm bench-train [--quick]
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from geofm_lib.bench import openclip as bench_openclip
from geofm_lib.bench.results import write_results
from geofm_lib.config import load_config
from geofm_lib.data.build import build_shards
from geofm_lib.data.shards import load_manifest
from geofm_lib.models.factory import create_model
from geofm_lib.models.inputs import input_spec
from geofm_lib.paths import build_folder, checkpoint_dir
from geofm_lib.training.checkpoint import load_checkpoint
from geofm_lib.training.step import Step, make_scheduler, param_groups
from geofm_lib.training.step import channels_last as to_channels_last
from geofm_lib.training.stream import ShardedStream, TrainStream, train_stream

# dense bf16 peak of common training GPUs (NVIDIA data sheets), FLOP/s
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
             "L40S": 362e12, "A10": 125e12}


def _peak_flops(name: str) -> float | None:
    for key, peak in PEAK_BF16.items():  # "H100 PCIe" is tested before "H100"
        if key in name:
            return peak
    return None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def our_step_throughput(model_name: str = "RN50-tiny", batch_size: int = 64,
                        image_px: int = 64, precision: str = "fp32", device: str = "cpu",
                        steps: int = 20, warmup_steps: int = 3, threads: int | None = None,
                        compile: bool = False, grad_checkpointing: bool = False,
                        count_flops: bool = False, channels_last: bool = True,
                        feed=None, band_adapter: str = "rgb",
                        bands: list[str] | None = None, readback: str = "step") -> dict:
    """Samples/s of ``training.Step`` on a fixed in-memory batch (no data loading), with the
    image tower in channels-last layout as ``training.train`` has it (``channels_last=False``:
    the layout before that optimisation). With ``feed`` (an iterator of ``(images, tokens)``
    batches, e.g. the training stream on real shards) every step takes the next batch from it
    and moves it to the device, so the figure is the rate of training fed by that loader.
    ``band_adapter``/``bands``: the image tower takes those bands (``models.adapters``).

    ``readback="step"``: every step's loss is read back (``loss.item()``, as open_clip_train
    logs it, and as the loop did before issue 40) and each step is timed on its own;
    ``"window"``: as the loop does now, the losses are read back every
    ``loop.READBACK_STEPS`` steps, so the host queues steps ahead of the device, and the rate
    is the steps' total time (one sync before and after them)."""
    import open_clip

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model, tok = create_model(model_name, image_px, None, device, seed=0,
                                  band_adapter=band_adapter, bands=bands)
        channels = len(bands) if band_adapter != "rgb" else 3
        if grad_checkpointing:
            model.set_grad_checkpointing(True)
        if channels_last:
            to_channels_last(model)
        model.train()
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=5e-4, betas=(0.9, 0.98), eps=1e-6,
                                fused=device.startswith("cuda") or None)
        sched = make_scheduler(opt, steps + warmup_steps, 0.1)
        scaler = torch.amp.GradScaler(device.split(":")[0], enabled=precision == "fp16")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        dev_type = torch.device(device).type

        def autocast():
            return torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None)

        run = torch.compile(model) if compile else model
        step = Step(run, model, open_clip.ClipLoss(), opt, sched, scaler, autocast, 1, 1.0,
                    False)
        g = torch.Generator().manual_seed(0)
        images = torch.randn(batch_size, channels, image_px, image_px, generator=g).to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        tokens = tok([f"an overhead image number {i}" for i in range(batch_size)]).to(device)
        flops = None
        if count_flops:
            with FlopCounterMode(display=False) as counter:
                with autocast():
                    out = model(images, tokens)
                    loss = open_clip.ClipLoss()(out["image_features"], out["text_features"],
                                                out["logit_scale"])
                loss.backward()
            flops = counter.get_total_flops()
            opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def one(images, tokens):
            if feed is not None:  # a device feed's batches are on the device already
                images, tokens = next(feed)
                images = images.to(device, non_blocking=True, memory_format=fmt)
                tokens = tokens.to(device, non_blocking=True)
            return step(images, tokens)

        times = []
        if readback == "step":
            for i in range(steps + warmup_steps):
                _sync(device)
                t0 = time.perf_counter()
                float(one(images, tokens).item())  # every step's loss read back
                _sync(device)
                if i >= warmup_steps:
                    times.append(time.perf_counter() - t0)
            rate = batch_size / statistics.median(times)
            mean_rate = batch_size / statistics.fmean(times)
        else:
            from geofm_lib.training.loop import READBACK_STEPS

            for _ in range(warmup_steps):
                one(images, tokens)
            _sync(device)
            t0 = time.perf_counter()
            pending = []
            for _ in range(steps):
                pending.append(one(images, tokens).detach())
                if len(pending) >= READBACK_STEPS:
                    torch.stack(pending).tolist()
                    pending = []
            torch.stack(pending).tolist() if pending else None
            _sync(device)
            seconds = time.perf_counter() - t0
            times = [seconds / steps] * steps
            rate = mean_rate = batch_size * steps / seconds
        out = {"samples_per_s": rate, "samples_per_s_mean": mean_rate, "readback": readback,
               "step_seconds": [round(t, 5) for t in times], "threads": torch.get_num_threads()}
        if device.startswith("cuda"):
            out["peak_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            out["gpu"] = torch.cuda.get_device_name()
        if flops:
            out["flops_per_step"] = flops
            peak = _peak_flops(out.get("gpu", "")) if device.startswith("cuda") else None
            achieved = flops / statistics.median(times)
            out["achieved_TFLOPs"] = achieved / 1e12
            if peak:
                out["peak_TFLOPs"] = peak / 1e12
                out["MFU"] = achieved / peak
        return out
    finally:
        torch.set_num_threads(old_threads)


def _bench_config(work: Path, quick: bool, **kw):
    base = dict(group="all", samples_per_dataset=48 if quick else 160, image_px=64,
                shard_size=64, val_fraction=0.1, batch_size=32 if quick else 64,
                work_dir=str(work), run_name="bench")
    return load_config("demo", **{**base, **kw})


def shard_feed(cfg, num_workers: int = 0, mode: str = "exact", batch_size: int | None = None,
               pin_memory: bool = False, device: str | None = None):
    """The training stream of ``cfg``'s built shards (rank 0 of 1), as ``training.train``
    reads it; with ``device``, the device feed (stored integer types, prepared there)."""
    folder = build_folder(cfg)
    manifest = load_manifest(folder)
    stats, _ = input_spec(manifest.band_stats_for(cfg.dataset_keys))
    _, tok = create_model(cfg.model, cfg.image_px)
    return train_stream(folder, manifest, list(cfg.dataset_keys), stats, tok,
                        batch_size or cfg.batch_size, cfg.image_px, cfg.seed, 0, num_workers,
                        pin_memory=pin_memory, mode=mode, device=device)


def loader_throughput(cfg, batches: int = 20, warmup_batches: int = 2,
                      num_workers: int = 0, mode: str = "exact") -> dict:
    """Samples/s of the training stream alone (decode, standardise, augment, tokenize)."""
    it = shard_feed(cfg, num_workers, mode)
    for _ in range(warmup_batches):  # shuffle buffers fill here
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - t0
    return {"samples_per_s": batches * cfg.batch_size / seconds, "batches": batches,
            "num_workers": num_workers, "mode": mode}


def feed_host_side(cfg, batches: int = 20, warmup_batches: int = 2) -> dict:
    """What a loader process does per sample and what crosses to the device, for the host
    feed (decode, pick bands, standardise, augment, float32 batches) against the device feed's
    host side (decode, pick bands, draw the augmentation: stored types), on ``cfg``'s shards."""
    from geofm_lib.training.feed import FeedTable

    folder = build_folder(cfg)
    manifest = load_manifest(folder)
    stats, _ = input_spec(manifest.band_stats_for(cfg.dataset_keys))
    _, tok = create_model(cfg.model, cfg.image_px)
    out = {}
    for label, table in (("host", None), ("device", FeedTable(stats, list(cfg.dataset_keys)))):
        it = iter(TrainStream(folder, manifest, list(cfg.dataset_keys), stats, tok,
                              cfg.batch_size, cfg.image_px, cfg.seed, 0, table=table))
        for _ in range(warmup_batches):
            next(it)
        nbytes, t0 = 0, time.perf_counter()
        for _ in range(batches):
            b = next(it)
            nbytes += b.nbytes if table is not None else b[0].numel() * b[0].element_size()
        seconds = time.perf_counter() - t0
        out[label] = {"samples_per_s": batches * cfg.batch_size / seconds,
                      "bytes_per_sample": nbytes / (batches * cfg.batch_size)}
    out["bytes_ratio"] = out["device"]["bytes_per_sample"] / out["host"]["bytes_per_sample"]
    out["loader_speedup"] = out["device"]["samples_per_s"] / out["host"]["samples_per_s"]
    return out


def stream_scaling(cfg, quick: bool) -> dict:
    """Samples/s delivered to rank 0 of ``W`` simulated ranks (one process; rank 0's stream
    alone, as on a node of its own) with 0, 1, 2 loader workers, in both stream modes, and the
    raw bytes rank 0 reads per sample it gets, against one reader reading the whole stream."""
    folder = build_folder(cfg)
    manifest = load_manifest(folder)
    stats, _ = input_spec(manifest.band_stats_for(cfg.dataset_keys))
    _, tok = create_model(cfg.model, cfg.image_px)
    batches = 6 if quick else 24
    ranks, workers = ((1, 8), (0, 2)) if quick else ((1, 2, 4, 8), (0, 1, 2))
    out: dict = {"batch_size": cfg.batch_size, "batches_timed": batches, "rates": {},
                 "bytes_per_sample": {}}
    args = (folder, manifest, list(cfg.dataset_keys), stats, tok, cfg.batch_size,
            cfg.image_px, cfg.seed, 0)
    for mode in ("exact", "sharded"):
        for w in ranks:
            for n in workers:
                it = train_stream(*args, num_workers=n, rank=0, world_size=w, mode=mode)
                next(it)  # worker start and shuffle buffers fill here
                t0 = time.perf_counter()
                for _ in range(batches):
                    next(it)
                rate = batches * cfg.batch_size // w / (time.perf_counter() - t0)
                out["rates"][f"{mode} W={w} workers={n}"] = round(rate, 1)
                del it
            cls = ShardedStream if mode == "sharded" else TrainStream
            s = cls(*args, rank=0, world_size=w)
            raw = s.reader_samples(0, w) if mode == "sharded" else s._raw_samples()
            n_samples = 0
            for j, _ in enumerate(raw):  # rank 0's share of 16 global batches
                n_samples += mode == "sharded" or (j % cfg.batch_size) < cfg.batch_size // w
                if n_samples >= 16 * cfg.batch_size // w:
                    break
            out["bytes_per_sample"][f"{mode} W={w}"] = round(s.bytes_read / n_samples)
    r = out["rates"]
    for mode in ("exact", "sharded"):
        out[f"{mode}_W8_vs_W1"] = r[f"{mode} W=8 workers=0"] / r[f"{mode} W=1 workers=0"]
        out[f"{mode}_2workers_vs_0"] = r[f"{mode} W=1 workers=2"] / r[f"{mode} W=1 workers=0"]
    b = out["bytes_per_sample"]
    # bytes read per delivered sample at W over those at W=1: 1 = only its share
    out["sharded_bytes_W8_vs_W1"] = b["sharded W=8"] / b["sharded W=1"]
    out["exact_bytes_W8_vs_W1"] = b["exact W=8"] / b["exact W=1"]
    out["targets"] = {"sharded_W8_vs_W1": ">= 0.8", "sharded_2workers_vs_0": ">= 1.5",
                      "sharded_bytes_W8_vs_W1": "1 +- 0.1"}
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_scaling(shard_work: Path, quick: bool, model: str = "RN50-tiny") -> dict:
    """The same CPU training run under torchrun with 1 and with 2 gloo processes; two
    processes with the sharded stream (the default there) and, in the full run, also with
    the exact one, whose every process reads the whole stream."""
    out = {}
    runs = [(1, "auto"), (2, "sharded")] + ([] if quick else [(2, "exact")])
    for n, stream in runs:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            shutil.copytree(shard_work / "shards", work / "shards")
            params = dict(group="all", samples_per_dataset=48 if quick else 160, image_px=64,
                          shard_size=64, val_fraction=0.1, batch_size=32 if quick else 64,
                          epochs=1, model=model, run_name="bench", stream=stream)
            args = [f"{k}={v}" for k, v in {**params, "work_dir": str(work)}.items()]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "GEOFM_PROGRESS": "text"}
            env.pop("OMP_NUM_THREADS", None)  # torchrun sets 1 per process when n > 1
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
                   "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                   "-m", "geofm_lib.cli", "train", "--preset", "demo"]
            for a in args:
                cmd += ["-p", a]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode:
                raise RuntimeError(f"torchrun with {n} process(es) failed:\n"
                                   f"{done.stderr[-2000:]}")
            cfg = load_config("demo", **{**params, "work_dir": str(work)})
            state = load_checkpoint(checkpoint_dir(cfg) / "last.pt")
            rec = state["history"][0]
            key = f"{n}_process" + ("" if n == 1 else f"_{state['stream']['mode']}")
            out[key] = {"samples_per_s": rec["samples_per_s"],
                        "train_seconds": rec["seconds"], "steps": state["step"],
                        "final_loss": rec["train_loss_last"],
                        "wall_seconds": round(time.perf_counter() - t0, 1),
                        "world_size": state["world_size"], "stream": state["stream"]}
    one = out["1_process"]["samples_per_s"]
    for key in ("2_process_sharded", "2_process_exact"):
        if key in out:
            out[f"speedup_{key.split('_')[-1]}"] = out[key]["samples_per_s"] / one
    return out


def run(quick: bool = False, device: str | None = None, with_openclip: bool = True,
        with_ddp: bool = True, with_cpu: bool = True, with_compile: bool = False) -> dict:
    """All training benchmarks that fit this machine; returns and writes the results.
    ``with_cpu=False``: the CUDA figures (section 4) alone."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    steps = 8 if quick else 20
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(),
                                 "cores": cores, "torch": torch.__version__,
                                 "device": device},
                     "quick": quick}
    if with_cpu:
        _cpu_sections(results, quick, steps, cores, with_openclip, with_ddp)
    if device.startswith("cuda"):
        results["cuda"] = _cuda_section(quick, steps, cores, device, with_openclip,
                                        with_compile)
    for section in results.values():  # round floats for reading
        if isinstance(section, dict):
            for k, v in list(section.items()):
                if isinstance(v, float):
                    section[k] = round(v, 3)
    write_results("training.json" if with_cpu else "training_gpu.json", results)
    return results


def _cpu_sections(results: dict, quick: bool, steps: int, cores: int, with_openclip: bool,
                  with_ddp: bool) -> None:
    # 1. our step against open_clip_train, same settings, one after the other
    cpu_setting = dict(model_name="RN50-tiny", batch_size=64, image_px=64, precision="fp32")
    before = our_step_throughput(**cpu_setting, device="cpu", steps=steps, threads=cores,
                                 channels_last=False)
    ours = our_step_throughput(**cpu_setting, device="cpu", steps=steps, threads=cores)
    row = {"setting": {**cpu_setting, "device": "cpu", "threads": cores},
           "ours_samples_per_s": ours["samples_per_s"],
           "ours_before_channels_last_samples_per_s": before["samples_per_s"],
           "channels_last_speedup": ours["samples_per_s"] / before["samples_per_s"]}
    if with_openclip:
        theirs = bench_openclip.openclip_train_throughput(
            "RN50-tiny", 64, 64, "fp32", "cpu", steps=steps, threads=cores)
        row.update({"open_clip_train_samples_per_s": theirs["samples_per_s"],
                    "open_clip_train_excl_data_samples_per_s":
                        theirs["samples_per_s_excl_data"],
                    "ratio_vs_open_clip_train": ours["samples_per_s"] / theirs["samples_per_s"],
                    "ratio_vs_open_clip_train_excl_data":
                        ours["samples_per_s"] / theirs["samples_per_s_excl_data"],
                    "open_clip_version": theirs.get("open_clip_version")})
    results["ours_vs_open_clip_train"] = row
    # 2. the loader alone against the step alone, on real shards of the 8 datasets
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = _bench_config(work, quick)
        build_shards(cfg, show_progress=False)
        loader = loader_throughput(cfg, batches=8 if quick else 20)
        step = our_step_throughput("RN50-tiny", cfg.batch_size, cfg.image_px, "fp32", "cpu",
                                   steps=steps, threads=cores)
        fed = our_step_throughput("RN50-tiny", cfg.batch_size, cfg.image_px, "fp32", "cpu",
                                  steps=steps, threads=cores, feed=shard_feed(cfg))
        scale_cfg = _bench_config(work, quick, samples_per_dataset=160 if quick else 1000,
                                  shard_size=128)
        build_shards(scale_cfg, show_progress=False)
        results["stream_scaling"] = stream_scaling(scale_cfg, quick)
        results["feed_host_side"] = feed_host_side(cfg, batches=8 if quick else 20)
        results["loader_vs_step"] = {
            "batch_size": cfg.batch_size, "image_px": cfg.image_px,
            "datasets": len(cfg.dataset_keys),
            "loader_samples_per_s": loader["samples_per_s"],
            "step_samples_per_s": step["samples_per_s"],
            "step_fed_by_stream_samples_per_s": fed["samples_per_s"],
            "ratio": loader["samples_per_s"] / step["samples_per_s"], "target_ratio": 3.0}
        # 3. 1 against 2 processes (gloo), a real torchrun launch each
        if with_ddp:
            results["ddp_gloo_cpu"] = ddp_scaling(work, quick)


GPU_MODELS = (("ViT-B-16", 224, 256), ("ViT-B-32", 224, 256))


def _cuda_section(quick: bool, steps: int, cores: int, device: str,
                  with_openclip: bool, with_compile: bool = False,
                  models: tuple = GPU_MODELS) -> dict:
    # 4. the GPU figures, before and after issue 40 in one run: the step on a batch in memory,
    # then fed by the sharded stream reading real 224 px shards of the eight datasets, beside
    # that stream's rate alone. before: every step's loss read back, float32 batches from the
    # loader; after: losses read back every READBACK_STEPS steps, the device feed (stored
    # integer types through pinned memory, prepared on the GPU, one batch prefetched); after +
    # compile: the same with torch.compile
    gpu: dict = {}
    workers = max(1, min(8, cores - 2))
    with tempfile.TemporaryDirectory() as tmp:
        px, bs = models[0][1], models[0][2]
        gcfg = _bench_config(Path(tmp), quick, image_px=px, batch_size=bs,
                             samples_per_dataset=100 if quick else 600, shard_size=128)
        t0 = time.perf_counter()
        build_shards(gcfg, show_progress=False)
        print(f"{px} px shards built in {time.perf_counter() - t0:.0f} s", flush=True)
        for name, px, bs in models:
            row: dict = {"loader_workers": workers}
            variants = [("before", "step", False, None), ("after", "window", False, device)]
            if with_compile:
                variants.append(("after_compiled", "window", True, device))
            for label, readback, compiled, feed_device in variants:
                r = our_step_throughput(name, bs, px, "bf16", device, steps=steps,
                                        count_flops=True, readback=readback, compile=compiled)
                fed = our_step_throughput(
                    name, bs, px, "bf16", device, steps=steps, count_flops=True,
                    readback=readback, compile=compiled,
                    feed=shard_feed(gcfg, workers, "sharded", bs, pin_memory=True,
                                    device=feed_device))
                row[label] = {"samples_per_s": r["samples_per_s"], "MFU": r.get("MFU"),
                              "peak_memory_GiB": r.get("peak_memory_GiB"),
                              "flops_per_step": r.get("flops_per_step"),
                              "fed_samples_per_s": fed["samples_per_s"],
                              "fed_MFU": fed.get("MFU"),
                              "fed_over_in_memory": fed["samples_per_s"] / r["samples_per_s"]}
                print(f"{name} {label}: {r['samples_per_s']:.0f} samples/s in memory (MFU "
                      f"{r.get('MFU') or float('nan'):.3f}), {fed['samples_per_s']:.0f} fed "
                      f"({fed['samples_per_s'] / r['samples_per_s']:.2f}x)", flush=True)
            gpu[f"{name}@{px}px bf16 batch {bs}"] = row
        for label, feed_device in (("host feed", None), ("device feed", device)):
            it = shard_feed(gcfg, workers, "sharded", bs, pin_memory=True, device=feed_device)
            for _ in range(3):
                next(it)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                next(it)
            _sync(device)
            gpu[f"sharded stream alone, {px} px batch {bs}, {label}"] = {
                "samples_per_s": steps * bs / (time.perf_counter() - t0),
                "loader_workers": workers}
    if with_openclip:
        theirs = bench_openclip.openclip_train_throughput(
            "ViT-B-16", 256, 224, "bf16", device, steps=steps)
        gpu["open_clip_train ViT-B-16@224px bf16 batch 256"] = {
            "samples_per_s": theirs["samples_per_s"]}
    return gpu
