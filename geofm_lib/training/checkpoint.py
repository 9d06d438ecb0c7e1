"""Checkpoints: ``<work>/checkpoints/<train_hash>/last.pt`` holds model, optimiser, scheduler and
history; it is written to a temporary file and renamed, loads with
``torch.load(weights_only=True)``, and is what an interrupted run resumes from. Nothing
non-finite is ever saved, and a checkpoint is checked against the run that reads it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from geofm_lib.config import Config
from geofm_lib.errors import CheckpointError, TrainingDiverged
from geofm_lib.io import atomic_path, temporary_name
from geofm_lib.models.factory import create_model
from geofm_lib.models.inputs import stats_from_state
from geofm_lib.paths import checkpoint_dir

CHECKPOINT_FORMAT = "geofm-clip-1"


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


def check_finite_state(state: dict, where: str, keys=("model", "optimizer"),
                       previous: Path | None = None) -> None:
    """Refuse to write a checkpoint whose weights or optimiser state hold NaN or inf.

    Raises:
        TrainingDiverged: naming the first bad tensors; the previous checkpoint stays.
    """
    bad = [n for k in keys if k in state for n in nonfinite_tensors(state[k], k)]
    if bad:
        kept = (f"the last good one ({previous.name}) is kept" if previous is not None and
                previous.is_file() else "no earlier checkpoint exists (the run diverged before "
                                        "its first one)")
        raise TrainingDiverged(
            f"{where}: {len(bad)} tensor(s) of the weights or optimiser state are NaN or "
            f"infinite (e.g. {', '.join(bad[:3])}); the checkpoint was not written and {kept}. "
            f"Lower lr, keep grad_clip_norm > 0 or use precision='fp32'")


def save_checkpoint(path: Path, state: dict, previous: Path | None = None) -> None:
    """torch.save to a temporary file of this process, fsync, rename: a checkpoint that exists
    is whole. Weights and optimiser state are checked finite first (``previous``: the
    checkpoint that stays when they are not; default ``path`` itself)."""
    check_finite_state(state, f"checkpoint {path.name}",
                       previous=path if previous is None else previous)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_step_checkpoint(folder: Path, state: dict, step: int, keep: int) -> Path:
    """Write ``step-<step>.pt`` atomically, point ``last.pt`` at it (hard link, atomic
    rename), and delete all but the newest ``keep`` step checkpoints."""
    path = folder / f"step-{step:08d}.pt"
    save_checkpoint(path, state, previous=folder / "last.pt")
    tmp = temporary_name(folder / "last.pt")
    try:
        os.link(path, tmp)
    except OSError:  # file systems without hard links get a copy

        shutil.copyfile(path, tmp)
    os.replace(tmp, folder / "last.pt")
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, map_location: str = "cpu",
                    expected_format: str = CHECKPOINT_FORMAT) -> dict:
    """Load a geofm checkpoint with ``weights_only=True`` (no code runs on load)."""
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
    return stats_from_state(state["channel_stats"])


def loss_of(state: dict) -> str:
    """The loss a checkpoint was trained with (SigLIP models carry a logit bias)."""
    return "siglip" if "logit_bias" in state["model"] else "clip"


def model_from_checkpoint(state: dict, device: str = "cpu", seed: int = 0):
    """(model, tokenizer) of a checkpoint's architecture, band adapter and weights."""
    model, tokenizer = create_model(state["model_name"], state["image_px"], None, device, seed,
                                    band_adapter=state.get("band_adapter", "rgb"),
                                    bands=state.get("model_bands"), loss=loss_of(state))
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
