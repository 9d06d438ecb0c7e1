"""Fine-tuning an encoder with a linear head: notebook 06's fine-tuned encoders and notebook
07's fine-tuned backbones (seed 001 and 003's protocols beside the frozen probes), through the
one fitting loop with a named recipe (:mod:`geofm_lib.evaluation.fitting`: ``lp-ft`` or
``new-head``).

AdamW (weight decay 0.05), the flips and 90-degree rotations of pretraining, mini-batches in a
seeded order (a last batch of one image is skipped: BatchNorm cannot train on it), binary
cross-entropy on multi-hot rows or, with ``single``, cross-entropy on class indices; then the
BatchNorm statistics re-estimated over the training images (``precise_batchnorm``).
Predictions: threshold 0.5 on the sigmoid, or the arg-max class.

``head_init="probe"`` is LP-FT (Kumar et al., 2022): the head starts as the frozen protocol's
linear probe of the encoder's features of the training images (the scikit-learn logistic
regression of ``evaluation.probes``, with its standardisation kept in front of the head), so
that fine-tuning starts from the frozen protocol's predictions and the first steps do not push
a random head's large gradients into pretrained weights. When the whole encoder trains, its
BatchNorm statistics are first estimated on the training images (a random-init net has never
run). ``encoder_lr`` gives the encoder's weights their own (lower) rate; ``batchnorm="frozen"``
keeps BatchNorm in eval mode while training (mini-batches of 32 otherwise normalise with their
own statistics, unlike the probe and the predictions).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from geofm_lib.evaluation import fitting
from geofm_lib.evaluation.fitting import Recipe
from geofm_lib.evaluation.probes import linear_probe_weights, single_label_probe_weights
from geofm_lib.models.devices import autocast, channels_last, images_to
from geofm_lib.models.inputs import augment


@dataclass
class FineTuned:
    """A trained encoder + head: ``predict(images)`` and the mean training loss per epoch."""

    predict: Callable[[np.ndarray], np.ndarray]
    history: list[dict] = field(default_factory=list)
    recipe: Recipe | None = None


def output_width(net, x: np.ndarray, device: str = "cpu") -> int:
    """The width of ``net``'s output for images like ``x`` (one forward pass in eval mode)."""
    net.eval()
    with torch.no_grad():
        return int(net(torch.from_numpy(x[:2]).to(device)).shape[1])


def precise_batchnorm(trained, net, x: np.ndarray, device: str, batch: int = 64,
                      precision: str = "fp32") -> int:
    """BatchNorm statistics of the layers in ``trained`` re-estimated over the images ``x``
    (no augmentation), as a plain average over batches ("precise BN"), after fine-tuning.

    A fit of a few dozen steps leaves running averages (momentum 0.1) that trail weights which
    moved much in those steps. With the spectral stem in front of a ResNet this was the
    difference between 14 % and 47 % single-label accuracy on the demo's EnMAP scenes in eval
    mode, with the same training loss. Returns the number of layers re-estimated."""
    layers = [m for m in trained.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    was = [(m, m.training) for m in net.modules()]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    with torch.no_grad(), autocast(device, precision):
        for i in range(0, len(x), batch):
            if len(x[i:i + batch]) < 2:
                continue
            net(images_to(x[i:i + batch], device))
    for m, mom in zip(layers, momenta, strict=True):
        m.momentum = mom
    for m, training in was:
        m.train(training)
    return len(layers)


def with_estimated_statistics(net, x: np.ndarray, device: str = "cpu",
                              precision: str = "fp32", batch: int = 64):
    """A copy of ``net`` (a random-init encoder) whose BatchNorm statistics are estimated over
    the images ``x`` (no labels): the fair random init. Never estimated, they stay mean 0 and
    variance 1, and a frozen random-init net then feeds its probe or decoder features that
    barely vary between images (the demo's segmenter on them learnt the majority class; the
    frozen random-init probe of the spectral study scored 41.9 F1 against 47.9 with
    statistics). Pretrained encoders carry the statistics of their pretraining on the same
    images, so this puts random init on the same footing."""
    fair = copy.deepcopy(net).to(device)
    precise_batchnorm(fair, fair, x, device, batch, precision)
    fair.eval()
    return fair


class Standardise(torch.nn.Module):
    """Fixed per-feature standardisation (the statistics of the features it was fitted on)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, z):
        return (z - self.mean) / self.std


def probe_head(net, head: torch.nn.Linear, x: np.ndarray, target: torch.Tensor, device: str,
               precision: str = "fp32", single: bool = False, seed: int = 0,
               batch: int = 256) -> tuple[float, Standardise]:
    """Set ``head`` in place to the frozen protocol's linear probe on ``net``'s features of
    ``x`` (eval mode, no augmentation): the scikit-learn logistic regression of
    ``evaluation.probes`` (one-vs-rest, ``C`` chosen by F2 micro on a held-out fifth; with
    ``single``, multinomial with ``C`` chosen by accuracy), whose predictions the head then
    makes exactly. Returns the probe's training loss (the fine-tuning loss, no penalty) and
    its standardisation, which goes in front of the head as a fixed layer: the head's weights
    stay at the scale of standardised features, where AdamW's steps (about ``lr`` per weight,
    whatever the weight's size) are small. Folded into the head instead, the weights of
    features with a large spread were tiny and the first fine-tuning steps overwrote them."""
    net.eval()
    with torch.no_grad(), autocast(device, precision):
        feats = torch.cat([net(images_to(x[i:i + batch], device)).float()
                           for i in range(0, len(x), batch)])
    f, y = feats.cpu().numpy(), target.numpy()
    probe = (single_label_probe_weights(f, y, head.out_features, seed) if single
             else linear_probe_weights(f, y, seed))
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(probe.weight))
        head.bias.copy_(torch.from_numpy(probe.bias))
    scale = Standardise(torch.from_numpy(probe.mean), torch.from_numpy(probe.scale)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss() if single else torch.nn.BCEWithLogitsLoss()
    with torch.no_grad():
        return float(loss_fn(head(scale(feats)), target.to(device))), scale


def frozen_batchnorm(net) -> list:
    """Every BatchNorm layer of ``net`` that tracks statistics, put in eval mode: it normalises
    with its running statistics and keeps them (its scale and shift still learn)."""
    layers = [m for m in net.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in layers:
        m.eval()
    return layers


def fit_head(net, x_tr: np.ndarray, y_tr: np.ndarray, epochs: int, lr: float, seed: int,
             device: str = "cpu", batch: int = 64, single: bool = False,
             precision: str = "fp32", train_only=None, recipe: Recipe | str = "new-head",
             on_epoch=None) -> FineTuned:
    """Train ``net`` and a new linear head on (images, targets) with a named fitting
    ``recipe`` (:mod:`evaluation.fitting`: ``lp-ft`` or ``new-head``): multi-label (``y_tr`` 0/1
    rows) or, with ``single``, single-label (``y_tr`` class indices); forward passes under the
    autocast of ``precision`` (a resolved one), the loss in fp32. ``lr`` is the base rate the
    recipe divides for the head and the encoder.

    ``train_only``: modules of ``net`` that learn with the head, at the head's rate (seed 001's
    adapter fine-tuning: the spectral stem); the rest of ``net`` stays as it is, weights and
    BatchNorm statistics (eval mode). None: all of ``net`` learns, at the recipe's encoder rate.

    The recipe's ``head_init``: ``random`` (a new head) or ``probe`` (LP-FT: the head fitted
    first as a linear probe on the frozen features, :func:`probe_head`; the history's first
    entry, epoch 0, is its loss). Its ``batchnorm``: ``train`` (BatchNorm layers that learn
    normalise each mini-batch by its own statistics; afterwards their running statistics are
    re-estimated over the training images, ``precise_batchnorm``) or ``frozen`` (every BatchNorm
    layer normalises with its running statistics throughout and keeps them, so the training
    steps see the function the probe was fitted to and the one that predicts; their scale and
    shift still learn). Its ``augmentation``: the flips and rotations of pretraining on each
    training image (False: the images as they are, as the probe saw them).

    ``on_epoch(predict)``: called with the model's ``predict`` after the head's start (epoch 0)
    and after every epoch; what it returns (a dict) goes into that epoch's history entry: a
    convergence curve. With ``batchnorm="train"`` the statistics are re-estimated before each
    call, as at the end."""
    r = fitting.recipe(recipe) if isinstance(recipe, str) else recipe
    if r.head_init not in ("random", "probe"):
        raise ValueError(f"recipe {r.name}: head_init={r.head_init!r}: choose random or probe")
    if r.batchnorm not in ("train", "frozen"):
        raise ValueError(f"recipe {r.name}: batchnorm={r.batchnorm!r}: choose train or frozen")
    dim = output_width(net, x_tr, device)
    torch.manual_seed(seed)
    n_out = int(y_tr.max()) + 1 if single else y_tr.shape[1]
    head = torch.nn.Linear(dim, n_out).to(device)
    target = torch.from_numpy(y_tr.astype(np.int64 if single else np.float32))
    history = [{"epoch": 0}]
    parts = [net]
    if r.head_init == "probe":
        if train_only is None:  # every BatchNorm will train: its statistics on these images
            # first, or a net never run on them (random init: running mean 0, variance 1)
            # gives the probe features unlike those the training steps see
            precise_batchnorm(net, net, x_tr, device, batch, precision)
        loss, scale = probe_head(net, head, x_tr, target, device, precision, single, seed)
        history[0]["train_loss"] = loss
        parts.append(scale)
    model = channels_last(torch.nn.Sequential(*parts, head).to(device))
    if train_only is not None:
        learn = {id(p) for m in train_only for p in m.parameters()}
        for p in net.parameters():
            p.requires_grad_(id(p) in learn)
    groups = [{"params": list(head.parameters()), "lr": r.head_lr(lr)},
              {"params": [p for p in net.parameters() if p.requires_grad],
               "lr": r.head_lr(lr) if train_only is not None else r.encoder_lr(lr)}]
    loss_fn = torch.nn.CrossEntropyLoss() if single else torch.nn.BCEWithLogitsLoss()
    aug = random.Random(seed)

    def predict(x: np.ndarray) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad(), autocast(device, precision):
            for i in range(0, len(x), 256):
                logits = model(images_to(x[i:i + 256], device)).float()
                out.append((logits.argmax(1) if single else torch.sigmoid(logits) > 0.5)
                           .cpu().numpy())
        return np.concatenate(out)

    def settle():  # the statistics predictions use, after steps with BatchNorm training
        if r.batchnorm == "train":
            precise_batchnorm(net if train_only is None else torch.nn.ModuleList(train_only),
                              net, x_tr, device, batch, precision)

    def set_modes():
        model.train()
        if train_only is not None:
            net.eval()
            for m in train_only:
                m.train()
        if r.batchnorm == "frozen":
            frozen_batchnorm(net)

    def batch_loss(b: np.ndarray) -> torch.Tensor:
        xb = images_to(np.stack([augment(x_tr[j], aug) for j in b]) if r.augmentation
                       else x_tr[b], device)
        with autocast(device, precision):
            logits = model(xb)
        return loss_fn(logits.float(), target[b].to(device))

    def after_epoch(row: dict) -> None:
        if on_epoch is not None:
            settle()
            row.update(on_epoch(predict))

    if on_epoch is not None:
        history[0].update(on_epoch(predict))
    epochs_run, _ = fitting.fit_epochs(groups, r, n_train=len(x_tr), batch_size=batch,
                                       seed=seed, epochs=epochs, batch_loss=batch_loss,
                                       set_modes=set_modes, after_epoch=after_epoch)
    history += epochs_run
    if epochs and on_epoch is None:
        settle()
    history = [h for h in history if len(h) > 1]  # epoch 0 says something with a probe head
    return FineTuned(predict, history, r)
