"""The one supervised fitting loop, configured by a named recipe.

Every supervised fit of the workspace runs :func:`fit_epochs`: the fine-tuning of 06
(``encoders.finetune``), seed 003's fine-tuned and from-scratch rows and seed 001's protocols in
07 (``evaluation.finetune.fit_head``) and the segmenters of 08 (``evaluation.segmenter``). What
differs between them is a :class:`Recipe`, by name, recorded beside the numbers it made:

- ``lp-ft`` (Kumar et al., 2022; 06's fine-tuning and seed 001's protocols): the head starts as
  the frozen protocol's linear probe and learns at a tenth of the base rate, the encoder at a
  hundredth; BatchNorm frozen (eval mode: the probe's function); pretraining's flips and
  rotations; AdamW with weight decay 0.05 at a constant rate.
- ``new-head`` (seed 003's fine-tuning and supervised baseline): a new random head, one rate for
  everything, BatchNorm trained (its statistics re-estimated over the training images after the
  fit), the same augmentation and optimiser.
- ``segmentation`` (seed 001's segmenters): decoder and head at the base rate, a fine-tuned
  encoder at a tenth; AdamW with weight decay 1e-4 on a cosine schedule over the run; no
  augmentation; images in each mini-batch in index order.

The batch order of each epoch is a seeded permutation; a last batch smaller than ``min_batch``
is skipped (BatchNorm cannot train on one image).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Recipe:
    """How a supervised fit trains (the values go into the records beside its numbers).

    ``head_lr_divisor`` / ``encoder_lr_divisor``: the head's and the encoder's rate are the
    base rate divided by these (an encoder divisor of None: the encoder learns at the head's
    rate). ``batchnorm``: ``train`` (layers that learn normalise each mini-batch by its own
    statistics) or ``frozen`` (running statistics throughout). ``order_stream``: the seed of
    the batch order is ``[seed, *order_stream]``. ``loss_mean``: the epoch's training loss as
    the mean over ``batches`` or over ``images``."""

    name: str
    head_init: str
    head_lr_divisor: float
    encoder_lr_divisor: float | None
    batchnorm: str
    augmentation: bool
    weight_decay: float
    schedule: str
    min_batch: int
    order_stream: tuple[int, ...]
    sort_batches: bool
    loss_mean: str

    def values(self) -> dict:
        """The recipe as a record shows it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def head_lr(self, lr: float) -> float:
        return lr / self.head_lr_divisor if self.head_lr_divisor != 1 else lr

    def encoder_lr(self, lr: float) -> float:
        return self.head_lr(lr) if self.encoder_lr_divisor is None \
            else lr / self.encoder_lr_divisor


RECIPES = {
    "lp-ft": Recipe("lp-ft", head_init="probe", head_lr_divisor=10, encoder_lr_divisor=100,
                    batchnorm="frozen", augmentation=True, weight_decay=0.05,
                    schedule="constant", min_batch=2, order_stream=(), sort_batches=False,
                    loss_mean="batches"),
    "new-head": Recipe("new-head", head_init="random", head_lr_divisor=1,
                       encoder_lr_divisor=None, batchnorm="train", augmentation=True,
                       weight_decay=0.05, schedule="constant", min_batch=2, order_stream=(),
                       sort_batches=False, loss_mean="batches"),
    "segmentation": Recipe("segmentation", head_init="random", head_lr_divisor=1,
                           encoder_lr_divisor=10, batchnorm="train", augmentation=False,
                           weight_decay=1e-4, schedule="cosine", min_batch=1,
                           order_stream=(8,), sort_batches=True, loss_mean="images"),
}


HEAD_RECIPES = ("lp-ft", "new-head")  # the recipes of an encoder with a linear head (fit_head)


def recipe(name: str) -> Recipe:
    """A recipe by name, or an error naming the choices."""
    if name not in RECIPES:
        raise ValueError(f"unknown fitting recipe {name!r}; choose {', '.join(RECIPES)}")
    return RECIPES[name]


def fit_epochs(groups: list[dict], r: Recipe, *, n_train: int, batch_size: int, seed: int,
               epochs: int, batch_loss: Callable[[np.ndarray], torch.Tensor],
               set_modes: Callable[[], None], after_epoch: Callable[[dict], None] | None = None,
               first_epoch: int = 1) -> tuple[list[dict], float]:
    """Train for ``epochs`` epochs: AdamW over the parameter ``groups`` (each with its ``lr``;
    empty groups left out) with the recipe's weight decay and schedule; each epoch
    ``set_modes()`` (train / eval modes), then the seeded batch order, ``batch_loss(idx)`` the
    loss of the images ``idx``, one optimiser step per batch. ``after_epoch(row)`` adds to the
    epoch's history row (validation scores). Returns (history, seconds)."""
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=r.weight_decay)
    sched = None
    if r.schedule == "cosine":
        steps_per_epoch = max(1, int(np.ceil(n_train / batch_size)))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    elif r.schedule != "constant":
        raise ValueError(f"recipe {r.name}: unknown schedule {r.schedule!r}")
    rng = np.random.default_rng([seed, *r.order_stream] if r.order_stream else seed)
    history: list[dict] = []
    t0 = time.perf_counter()
    for epoch in range(first_epoch, first_epoch + epochs):
        set_modes()
        order = rng.permutation(n_train)
        total, images, losses = 0.0, 0, []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < r.min_batch:
                continue
            if r.sort_batches:
                idx = np.sort(idx)
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            value = float(loss.detach())
            losses.append(value)
            total += value * len(idx)
            images += len(idx)
        if r.loss_mean == "images":
            row = {"epoch": epoch, "train_loss": total / images}
        else:
            row = {"epoch": epoch, "steps": len(losses),
                   "train_loss": float(np.mean(losses)) if losses else math.nan}
        if after_epoch is not None:
            after_epoch(row)
        history.append(row)
    return history, time.perf_counter() - t0
