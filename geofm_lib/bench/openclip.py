"""Training throughput of OpenCLIP's own trainer (``open_clip_train``), for side-by-side
comparison with geofm's training loop.

``openclip_train_throughput`` runs ``open_clip_train.main.main`` in a child process for a fixed
number of steps on ``--dataset-type synthetic``, logging every step, and turns the per-step
times it logs into samples/s. The child process keeps OpenCLIP's logging setup (it reconfigures
the root logger and every existing logger), its model registry (geofm's configs are added there
with ``open_clip.add_model_config``) and torch's thread count out of the caller's process. All
its output, including the checkpoint it always writes after the last epoch, goes to a temporary
``--logs`` directory that is deleted afterwards; the child also runs with that directory as its
working directory, so nothing lands in the repository.

What one timed step contains (``open_clip_train/train.py``, ``train_one_epoch``): the trainer
stamps ``end = time.time()`` and logs ``batch_time = time.time() - end`` after the step, and
``data_time`` part-way through. So a step's ``Batch (t)`` covers, in order:

* the previous step's logging, because ``end`` is stamped *before* it: ``loss.item()``,
  ``logit_scale.item()``, formatting and writing the log line to stdout and ``out.log``;
* fetching the batch from the ``DataLoader``. The synthetic dataset (``data.py``,
  ``SyntheticDataset``) creates a single black PIL image once, in ``__init__``; there is no
  per-sample PIL image creation, but every sample still runs the training transform on that
  image (``RandomResizedCrop`` with bicubic resampling, ``convert("RGB")``, ``ToTensor``,
  ``Normalize``) and tokenizes the caption ``"Dummy caption"``; then ``default_collate``, and
  pinning on CUDA (``pin_memory=True``; ignored with a warning on CPU). With ``workers=0`` this
  runs in the training process, inside the step; with workers it runs in worker processes and
  only the hand-over is inside the step (worker start-up falls in the first step);
* the LR scheduler call and ``.to(device)`` of images and tokens;
* ``-- data_time is stamped here --``;
* ``optimizer.zero_grad()``, forward under the precision's autocast, ``ClipLoss``, backward
  (through ``GradScaler`` for ``amp``), gradient clipping (``--grad-clip-norm``, set here to
  match geofm's default of 1.0; OpenCLIP's default is no clipping), ``AdamW.step()`` and the
  in-place clamp of ``logit_scale``.

It excludes process start, imports, model and optimizer construction, ``DataLoader`` creation,
the checkpoint save and, here, the first ``warmup_steps`` steps (lazy initialisation, allocator
warm-up, worker start-up).

Fair comparison with geofm's loop, whose number is forward + ``ClipLoss`` + backward + AdamW step
+ grad clip on tensors already in memory: ``samples_per_s`` is *lower* than that would be by the
per-sample transform + tokenization + collate and the logging cost. ``samples_per_s_excl_data``
subtracts the logged ``Data (t)`` from each step and is the closer match on CPU; it still
includes ``zero_grad`` and the ``logit_scale`` clamp, but not the logging, which precedes the data
stamp. Two limits on it: ``Data (t)`` is logged with 3 decimals (1 ms resolution), while step
times are recovered from the logged samples/s (6 significant digits); and on CUDA the trainer
never synchronises inside the step, so GPU work still queued when the next step's logging calls
``.item()`` is waited for inside that step's ``data_time``. On CUDA use ``samples_per_s``
(steady-state step time is right, as every step synchronises once) and treat the data share as
unknown. Every synthetic sample is the same image and caption, which changes the loss value
(constant ln(batch)) but not the cost of the dense compute.

CLI: ``python -m geofm_lib.bench.openclip --model RN50-tiny --batch-size 64 --image-px 64``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from geofm_lib.models.names import CONFIG_DIR, known_model_names

# geofm precision names -> open_clip_train's. OpenCLIP's own "bf16"/"fp16" mean pure low
# precision weights, not autocast, so ours must be translated rather than passed through.
PRECISIONS = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}


_NATIVE_PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "pure_bf16", "pure_fp16")


# The child registers geofm's configs, pins threads and then hands over to OpenCLIP's trainer.
# It refuses an unavailable device up front: the trainer would silently fall back to CPU and
# train there first. The marker line lets the parent report what actually ran.
_CHILD = """\
import json, sys
spec = json.loads(sys.argv[1])
import torch
import open_clip
if spec["threads"]:
    torch.set_num_threads(spec["threads"])
open_clip.add_model_config(spec["config_dir"])
from open_clip_train.distributed import is_device_available
available, known = is_device_available(spec["device"])
if known and not available:
    sys.exit(f"device {spec['device']!r} is not available to torch here")
print("GEOFM_BENCH " + json.dumps({"open_clip_version": open_clip.__version__,
      "torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}), flush=True)
from open_clip_train.main import main
rc = main(spec["args"])
sys.exit(0 if rc is None else rc)
"""


_STEP_RE = re.compile(
    r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<seen>\d+)/(?P<total>\d+) \(\d+%\)\] "
    r"Data \(t\): (?P<data>[0-9.]+) Batch \(t\): (?P<batch>[0-9.]+), "
    r"(?P<sps>[0-9.eE+-]+|inf)/s")


_DEVICE_RE = re.compile(r"Running with a single process\. Device (?P<device>\S+)\.")


_MARKER = "GEOFM_BENCH "


def _check_model(model: str) -> None:
    # Schema-prefixed identifiers (hf-hub:, local-dir:) are resolved by OpenCLIP itself.

    if ":" in model or model in known_model_names():
        return
    raise ValueError(
        f"unknown model {model!r}: not an OpenCLIP model config nor one of geofm's "
        f"({', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.json')))} in {CONFIG_DIR}); "
        "see open_clip.list_models() for OpenCLIP's names")


def _openclip_precision(precision: str) -> str:
    if precision in PRECISIONS:
        return PRECISIONS[precision]
    if precision in _NATIVE_PRECISIONS:
        return precision
    raise ValueError(f"unknown precision {precision!r}; use one of {sorted(PRECISIONS)} "
                     f"(or an open_clip_train name: {', '.join(_NATIVE_PRECISIONS)})")


def _all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def openclip_train_throughput(model: str, batch_size: int, image_px: int,
                              precision: str = "fp32", device: str = "cpu", steps: int = 20,
                              warmup_steps: int = 3, workers: int = 0,
                              threads: int | None = None, lr: float = 5.0e-4,
                              grad_clip_norm: float | None = 1.0,
                              timeout_s: float | None = None) -> dict:
    """Run open_clip_train on its synthetic dataset and measure its training throughput.

    See the module docstring for exactly what a timed step includes.

    Args:
        model: OpenCLIP model config name, or one of geofm's (``RN50-tiny``, ``ViT-tiny``).
        batch_size: Samples per step.
        image_px: Square image side, passed as ``--force-image-size``.
        precision: ``fp32``, ``bf16`` (autocast bf16, ``amp_bf16``) or ``fp16`` (autocast fp16
            with a grad scaler, ``amp``); open_clip_train's own names are accepted too.
        device: Torch device for the trainer (``cpu``, ``cuda``, ``cuda:1``).
        steps: Optimizer steps to run (one epoch of ``batch_size * steps`` samples).
        warmup_steps: Leading steps left out of the statistics.
        workers: DataLoader worker processes.
        threads: Torch intra-op threads in the child; on CPU ``None`` means all usable cores,
            elsewhere ``None`` leaves torch's default.
        lr: Peak learning rate (``--lr``); it does not change the cost of a step.
        grad_clip_norm: ``--grad-clip-norm``; 1.0 matches geofm's default, ``None`` disables
            clipping (OpenCLIP's default).
        timeout_s: Kill the child after this many seconds (``None``: no limit).

    Returns:
        ``samples_per_s`` (batch_size / median step seconds), ``samples_per_s_mean``
        (batch_size / mean step seconds), ``samples_per_s_excl_data`` (same as
        ``samples_per_s`` with each step's logged data time subtracted), ``step_seconds`` and
        ``data_seconds`` (timed steps only), ``steps_timed``, ``args`` (the exact argument list
        given to ``open_clip_train.main.main``), ``open_clip_version``, ``torch_version``,
        ``torch_threads``, ``device_used`` (as reported by the trainer), ``wall_seconds`` (the
        whole child run), ``loadavg_1min_before`` (to spot runs
        disturbed by other work on the machine) and the call's settings.

    Raises:
        ValueError: Unknown model or precision, or inconsistent step counts.
        RuntimeError: The trainer failed, ran on another device than asked for, or its log
            could not be parsed; the message quotes the last lines of its output.
    """
    _check_model(model)
    oc_precision = _openclip_precision(precision)
    if batch_size < 1 or steps < 1 or warmup_steps < 0 or image_px < 1:
        raise ValueError("batch_size, steps and image_px must be >= 1 and warmup_steps >= 0")
    if warmup_steps >= steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be < steps ({steps})")
    if threads is None and device == "cpu":
        threads = _all_cores()

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if threads:
        # Also caps OpenMP/MKL pools that torch.set_num_threads does not reach.
        env["OMP_NUM_THREADS"] = str(threads)

    with tempfile.TemporaryDirectory(prefix="geofm-openclip-bench-") as tmp:
        logs = Path(tmp) / "logs"
        name = "bench"
        args = [
            "--dataset-type", "synthetic",
            "--model", model,
            "--batch-size", str(batch_size),
            "--force-image-size", str(image_px),
            "--precision", oc_precision,
            "--device", device,
            "--lr", repr(float(lr)),
            "--opt", "adamw",
            "--train-num-samples", str(batch_size * steps),
            "--epochs", "1",
            "--workers", str(workers),
            "--log-every-n-steps", "1",
            "--logs", str(logs),
            "--name", name,
            "--report-to", "",
            "--seed", "0",
        ]
        if grad_clip_norm is not None:
            args += ["--grad-clip-norm", repr(float(grad_clip_norm))]
        spec = {"args": args, "config_dir": str(CONFIG_DIR), "threads": threads,
                "device": device}
        # Other processes on the cores distort CPU timings badly (torch's OpenMP threads spin
        # at barriers), so the load seen just before the run is returned with the result.
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], cwd=tmp,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
            raise RuntimeError(f"open_clip_train did not finish in {timeout_s} s; last output:\n"
                               f"{_tail(out or '')}") from e
        wall = time.perf_counter() - t0
        output = proc.stdout
        log_file = logs / name / "out.log"
        log_text = log_file.read_text() if log_file.is_file() else output

    if proc.returncode != 0:
        raise RuntimeError(f"open_clip_train exited with status {proc.returncode}; last output:\n"
                           f"{_tail(output)}")

    info = {}
    for line in output.splitlines():
        if line.startswith(_MARKER):
            info = json.loads(line[len(_MARKER):])
    dev = _DEVICE_RE.search(log_text)
    device_used = dev.group("device") if dev else None
    # open_clip_train falls back to CPU with only a warning when the device is unavailable.
    if device_used is None or device_used.split(":")[0] != device.split(":")[0]:
        raise RuntimeError(f"asked for device {device!r} but open_clip_train reports "
                           f"{device_used!r}; last output:\n{_tail(output)}")

    rows = [m.groupdict() for m in _STEP_RE.finditer(log_text)]
    if len(rows) != steps:
        raise RuntimeError(f"parsed {len(rows)} per-step lines from open_clip_train's log, "
                           f"expected {steps}; its log format may have changed. Last output:\n"
                           f"{_tail(output)}")
    step_s, data_s = [], []
    for r in rows:
        # The samples/s field has 6 significant digits, "Batch (t)" only 3 decimals, so step
        # time comes from the former and the latter is kept as a check on our reading of it.
        sps = float(r["sps"])
        sec = batch_size / sps if sps > 0 else math.inf
        if not math.isfinite(sec) or abs(sec - float(r["batch"])) > 1.5e-3 + 1e-4 * sec:
            raise RuntimeError(f"per-step samples/s ({r['sps']}) and Batch (t) ({r['batch']}) "
                               f"disagree for batch {batch_size}; log format may have changed. "
                               f"Last output:\n{_tail(output)}")
        step_s.append(sec)
        data_s.append(float(r["data"]))
    step_s, data_s = step_s[warmup_steps:], data_s[warmup_steps:]
    compute_s = [max(s - d, 1e-9) for s, d in zip(step_s, data_s)]

    return {
        "samples_per_s": batch_size / statistics.median(step_s),
        "samples_per_s_mean": batch_size / statistics.fmean(step_s),
        "samples_per_s_excl_data": batch_size / statistics.median(compute_s),
        "step_seconds": step_s,
        "data_seconds": data_s,
        "steps_timed": len(step_s),
        "model": model,
        "batch_size": batch_size,
        "image_px": image_px,
        "precision": precision,
        "openclip_precision": oc_precision,
        "device": device,
        "device_used": device_used,
        "workers": workers,
        "threads": threads,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "wall_seconds": wall,
        "loadavg_1min_before": load,
        "args": args,
        "open_clip_version": info.get("open_clip_version"),
        "torch_version": info.get("torch_version"),
        "torch_threads": info.get("torch_threads"),
    }


def main(argv: list[str] | None = None) -> dict:
    """CLI entry point: run the benchmark and print its result as JSON."""
    p = argparse.ArgumentParser(prog="python -m geofm_lib.bench.openclip",
                                description="Training throughput of open_clip_train "
                                            "(synthetic data), as JSON.")
    p.add_argument("--model", default="RN50-tiny")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-px", type=int, default=64)
    p.add_argument("--precision", default="fp32",
                   help="fp32, bf16 or fp16 (autocast), or an open_clip_train name")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads in the trainer (default on CPU: all cores)")
    p.add_argument("--lr", type=float, default=5.0e-4)
    p.add_argument("--grad-clip-norm", type=float, default=1.0,
                   help="negative disables clipping (OpenCLIP's default)")
    p.add_argument("--timeout-s", type=float, default=None)
    a = p.parse_args(argv)
    result = openclip_train_throughput(
        a.model, a.batch_size, a.image_px, precision=a.precision, device=a.device,
        steps=a.steps, warmup_steps=a.warmup_steps, workers=a.workers, threads=a.threads,
        lr=a.lr, grad_clip_norm=None if a.grad_clip_norm < 0 else a.grad_clip_norm,
        timeout_s=a.timeout_s)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
