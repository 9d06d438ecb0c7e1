"""Run bookkeeping: what produced a result, written beside it.

``run.json`` holds the resolved parameters and their hash, the git commit and whether the tree
was dirty, package versions, the device, the seed and hashes of the data read. Nothing in it is
an absolute path of the machine, an environment dump or a secret.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from geofm_lib import records
from geofm_lib.config import Config, project_root
from geofm_lib.errors import DataError
from geofm_lib.io import atomic_write_json
from geofm_lib.models import devices
from geofm_lib.paths import shown, stage_dir
from geofm_lib.records import StageRecord

PACKAGES = ("geofm", "numpy", "torch", "torchvision", "open_clip_torch", "torchgeo",
            "webdataset", "scikit-learn", "umap-learn", "papermill", "nbconvert", "leafmap")


def git_state(root: Path | None = None) -> dict:
    """{'commit': sha or None, 'dirty': bool or None} of the workspace."""
    root = root or project_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, timeout=10).stdout
        return {"commit": commit, "dirty": bool(status.strip()) if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    """CPU/GPU the run used (imports torch, so only where a run trains or evaluates)."""
    info = {"machine": platform.machine(), "python": platform.python_version()}
    try:
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpus"] = torch.cuda.device_count()
        info["threads"] = torch.get_num_threads()
        # the CPU kernels torch chose (AVX2, AVX512 ...): fp32 sums differ in the last digits
        # from one to another, so a run's numbers are reproduced only on the same capability
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cpu_native_bf16"] = devices.cpu_has_native_bf16()
    except ImportError:
        info["cuda"] = False
    return info


def run_record(cfg: Config, stage: str, data: dict | None = None,
               with_device: bool = False) -> dict:
    """The bookkeeping record of one stage of a run (paths in ``data`` relative to the
    project)."""
    data = {k: shown(str(v)) if isinstance(v, Path) else v for k, v in (data or {}).items()}
    rec = {
        "stage": stage, "run": cfg.name, "params": cfg.to_dict(), "params_hash": cfg.hash,
        "data_hash": cfg.data_hash, "seed": cfg.seed, "git": git_state(),
        "packages": package_versions(), "data": data,
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    rec["params"]["work_dir"] = shown(rec["params"]["work_dir"])
    if with_device:
        rec["device"] = device_info()
        # what precision: auto resolved to here (bf16 on GPUs and AMX CPUs, else fp32)
        used = devices.resolve_device(cfg.device)
        rec["device"].update(device=used,
                             precision=devices.resolve_precision(cfg.precision, used))
    return rec


def save_stage(cfg: Config, record: StageRecord | str, metrics: dict | None = None,
               data: dict | None = None, with_device: bool = False,
               undefined: tuple[str, ...] = ()) -> Path:
    """Write ``<work>/runs/<run>/<stage>.json`` with the stage's record and the run's
    bookkeeping, atomically: the one writer of stage records.

    ``record``: the typed record of one of the workspace's notebooks (:mod:`geofm_lib.records`),
    checked against its definition before it is written; or, for a notebook of your own, its
    stage name with ``metrics`` a mapping of plain values.

    ``undefined``: keys whose NaN means "not defined on this data", not a failure (08's
    boundary F1 of images without any boundary, the IoU of a class in neither the targets nor
    the predictions, and their intervals): recorded as null.

    Raises:
        DataError: a metric that is NaN or infinite (a diverged fit, inputs out of range),
            named by its place in the record: a stage never publishes it as a number.
        RecordError: a workspace stage given as a plain mapping, or a record whose values do
            not match its definition.
    """
    if isinstance(record, StageRecord):
        stage, metrics = record.STAGE, record.to_dict()
    else:
        stage = str(record)
        if stage in records.RECORDS:
            raise records.RecordError(
                f"{stage}: its record is typed; write records.{records.RECORDS[stage].__name__}"
                f"(...) with save_stage(cfg, record), not a mapping")
        if not isinstance(metrics, dict):
            raise records.RecordError(f"{stage}: give the metrics as a mapping")
    metrics = _nan_to_null(metrics, set(undefined)) if undefined else metrics
    bad = non_finite(metrics)
    if bad:
        where, value = bad[0]
        raise DataError(f"{stage}: {len(bad)} result value(s) are not finite, e.g. "
                        f"{where} = {value}; a fit diverged or its inputs are out of range (a "
                        f"learning rate too high, unflagged nodata). Nothing was recorded; fix "
                        f"the cause and run the notebook again")
    if isinstance(record, StageRecord):  # what is written reads back as its definition
        type(record).from_dict(metrics, f"the {stage} record being written")
    folder = stage_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    rec = run_record(cfg, stage, data, with_device)
    rec["metrics"] = metrics
    path = folder / f"{stage}.json"
    atomic_write_json(path, rec)
    return path


def _nan_to_null(record, keys: set[str], inside: bool = False):
    """The record with NaN replaced by None under the keys named (at any depth)."""
    if isinstance(record, dict):
        return {k: _nan_to_null(v, keys, inside or k in keys) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [_nan_to_null(v, keys, inside) for v in record]
    if inside and isinstance(record, float) and math.isnan(record):
        return None
    return record


def non_finite(record, where: str = "metrics") -> list[tuple[str, float]]:
    """(place, value) of every NaN or infinite float in a nested record."""
    if isinstance(record, float):
        return [] if math.isfinite(record) else [(where, record)]
    if isinstance(record, dict):
        return [hit for k, v in record.items() for hit in non_finite(v, f"{where}.{k}")]
    if isinstance(record, (list, tuple)):
        return [hit for i, v in enumerate(record) for hit in non_finite(v, f"{where}[{i}]")]
    if hasattr(record, "dtype") and getattr(record, "size", 0):  # numpy values and arrays
        import numpy as np

        values = np.asarray(record, dtype=float).ravel()
        bad = np.flatnonzero(~np.isfinite(values))
        return [(f"{where}[{i}]" if values.size > 1 else where, float(values[i])) for i in bad]
    return []


def load_stages(cfg: Config) -> dict[str, dict]:
    """All stage records of a run, by stage name."""
    folder = stage_dir(cfg)
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
