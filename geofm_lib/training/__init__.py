"""CLIP pretraining: the shard stream, one optimisation step, checkpoints and the loop.
"""

from .checkpoint import (
    CHECKPOINT_FORMAT,
    check_checkpoint_run,
    check_finite_state,
    load_checkpoint,
    load_trained_model,
    model_from_checkpoint,
    nonfinite_tensors,
    save_checkpoint,
    save_step_checkpoint,
    stats_from_checkpoint,
)
from .loop import (
    TrainResult,
    ensure_trained,
    plan_steps,
    preflight,
    train,
    val_loss,
    verify_finished,
)
from .step import Step, channels_last, make_scheduler, param_groups
from .stream import TrainStream, train_stream

__all__ = [
    "TrainStream", "train_stream", "param_groups", "make_scheduler", "channels_last", "Step",
    "CHECKPOINT_FORMAT", "nonfinite_tensors", "check_finite_state", "save_checkpoint",
    "save_step_checkpoint", "load_checkpoint", "check_checkpoint_run", "stats_from_checkpoint",
    "model_from_checkpoint", "load_trained_model", "TrainResult", "preflight", "plan_steps",
    "train", "val_loss", "ensure_trained",
    "verify_finished",
]
