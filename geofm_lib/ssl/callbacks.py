"""Lightning callbacks of a pretraining run: progress and loss history, collapse monitor,
per-epoch seeds, the MoCo queue in the checkpoint, atomic resumable checkpoints.

Importing this module loads Lightning (seconds); ``ssl.pretraining`` imports it when a run
starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from geofm_lib.progress import get_logger, progress
from geofm_lib.ssl.methods import method_stats
from geofm_lib.ssl.model import METHOD_LABELS
from geofm_lib.training.checkpoint import check_finite_state

log = get_logger()


class Monitor(Callback):
    """Every ``every`` steps: the loss and the method's statistics (``methods.method_stats``:
    MoCo's pair similarities and queue, DINO's teacher entropy and centre, MAE's reconstruction
    loss; the embedding std, collapse, for all), on the un-augmented batch, the model briefly
    in eval mode. Under DDP these are rank 0's slice of the global batch."""

    def __init__(self, every: int, total_steps: int, show_progress: bool):
        self.every, self.total, self.show = every, total_steps, show_progress
        self.history: list[dict] = []
        self.bar = None

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state):
        self.history = list(state["history"])

    def on_train_start(self, trainer, module):
        self.bar = progress(total=trainer.max_epochs * trainer.num_training_batches,
                            initial=trainer.global_step, unit="step",
                            desc=METHOD_LABELS[getattr(module, "method", "moco")],
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
        was = module.training
        module.eval()
        stats = method_stats(module, batch, step, trainer.world_size)
        module.train(was)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.history.append({
            "step": step, "epoch": trainer.current_epoch + 1, "loss": float(loss), **stats,
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"])})

    def on_train_epoch_end(self, trainer, module):
        if self.history:
            r = self.history[-1]
            extra = {"queue_filled": "keys enqueued %d", "teacher_entropy":
                     "teacher entropy %.3f", "reconstruction_loss": "reconstruction %.4f"}
            said = ", ".join(f % r[k] for k, f in extra.items() if k in r)
            log.info("epoch %d/%d: loss %.3f, %sembedding std %.4f", r["epoch"],
                     trainer.max_epochs, r["loss"], said + ", " if said else "",
                     r["embedding_std"])

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
        checkpoint["geofm"] = {"ssl_hash": self.ssl_hash}  # checked before resuming
        bank = getattr(getattr(module, "criterion", None), "memory_bank", None)
        if bank is None:  # DINO and MAE keep no queue
            return
        checkpoint["moco_queue"] = {"bank": bank.bank.detach().cpu().clone(),
                                    "bank_ptr": bank.bank_ptr.detach().cpu().clone()}

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
        # weights and optimiser state finite, or the last good last.ckpt stays
        check_finite_state({"model": module.state_dict(),
                            "optimizer": trainer.optimizers[0].state_dict()},
                           f"{self.path.name} after epoch {trainer.current_epoch + 1}",
                           previous=self.path)
        # one name for all ranks (Lightning writes on rank 0 only); only this run writes
        # here (it holds the folder's lock)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # weights_only=False here means "with the optimiser and loop state" (Lightning's
        # flag); the file still reads with torch.load(weights_only=True). All ranks call.
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:  # rank 0 wrote it
            os.replace(tmp, self.path)



@contextlib.contextmanager
def quiet_lightning():
    """Lightning's banners and tips (GPU/TPU available, litlogger, no val loop) say nothing
    about this run; its warnings and errors still show."""
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
