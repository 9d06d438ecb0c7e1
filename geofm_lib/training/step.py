"""One optimisation step: AdamW parameter groups, warmup + cosine schedule, autocast, gradient
clipping and accumulation, non-finite checks.
"""

from __future__ import annotations

import contextlib
import math

import torch

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
    warmup = int(round(total_steps * warmup_fraction))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup,
                                                                            1))
    if warmup == 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0,
                                               total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def channels_last(model) -> None:
    """Keep the image tower's convolutions in channels-last layout: oneDNN (CPU) and cuDNN
    run them faster that way (RN50-tiny step on 2 CPU cores: about 1.15x, ``geofm
    bench-train``). Values are unchanged; only the memory layout of 4-d weights is."""
    model.visual.to(memory_format=torch.channels_last)


def _rng_state(device: str) -> dict:
    out = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def _set_rng_state(state: dict, device: str) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"].cpu())


class Step:
    """One optimisation step of CLIP with gradient accumulation that keeps the full contrastive
    batch (OpenCLIP's ``accum_freq`` scheme): the features of every micro-batch are computed
    without gradients first, then each micro-batch is recomputed with gradients against the
    cached features of the others, so the loss and the gradients are those of the whole batch.
    The temperature's gradient, which every micro-batch's loss would add in full, is divided by
    the number of micro-batches. With BatchNorm towers the micro-batches have their own batch
    statistics (as in open_clip_train)."""

    def __init__(self, model, raw_model, loss_fn, optimizer, scheduler, scaler, autocast,
                 accum: int, clip_norm: float, ddp: bool):
        self.model, self.raw, self.loss_fn = model, raw_model, loss_fn
        self.opt, self.sched, self.scaler, self.autocast = optimizer, scheduler, scaler, autocast
        self.accum, self.clip_norm, self.ddp = accum, clip_norm, ddp
        self.grad_norm: float | None = None  # of the last step, before clipping

    @property
    def overflowed(self) -> bool:
        """The last step's gradients were infinite or NaN while the loss was finite, and the
        update was skipped. Under fp16 the grad scaler skips such steps itself and lowers its
        scale, which is normal, so this is then always False."""
        return (self.grad_norm is not None and not math.isfinite(self.grad_norm)
                and not self.scaler.is_enabled())

    def loss(self, images, tokens):
        with self.autocast():
            out = self.model(images, tokens)
            return self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"])

    def __call__(self, images, tokens, loss_hook=None, step=0):
        """Forward, backward and update on one batch; returns the loss (before the update).

        A finite loss can still give infinite or NaN gradients (an overflow in backward);
        then ``grad_norm`` is not finite and the update is skipped, so the weights stay as
        they were (the loop stops with :class:`TrainingDiverged`). With fp16 the grad scaler
        handles overflows itself (it skips such steps and lowers its scale)."""
        self.opt.zero_grad(set_to_none=True)
        self.grad_norm = None
        if self.accum == 1:
            loss = self.loss(images, tokens)
            if loss_hook is not None:
                loss = loss_hook(loss, step)
            if not torch.isfinite(loss):
                return loss
            self.scaler.scale(loss).backward()
        else:
            loss = self._accumulated(images, tokens, loss_hook, step)
            if not torch.isfinite(loss):
                return loss
        if self.clip_norm > 0:
            self.scaler.unscale_(self.opt)
            norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.clip_norm)
        elif not self.scaler.is_enabled():
            norm = torch.nn.utils.get_total_norm(
                [q.grad for q in self.raw.parameters() if q.grad is not None])
        else:
            norm = None
        if norm is not None:
            self.grad_norm = float(norm)
            if not math.isfinite(self.grad_norm) and not self.scaler.is_enabled():
                self.opt.zero_grad(set_to_none=True)
                return loss
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        with torch.no_grad():  # OpenCLIP's training clamps the temperature at 100
            self.raw.logit_scale.clamp_(0, math.log(100))
        return loss

    def _accumulated(self, images, tokens, loss_hook, step):
        chunks = list(zip(images.chunk(self.accum), tokens.chunk(self.accum), strict=True))
        with torch.no_grad(), self.autocast():
            cached = [self.model(x, t) for x, t in chunks]
        img = [c["image_features"] for c in cached]
        txt = [c["text_features"] for c in cached]
        loss_value = None
        for i, (x, t) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if (last or not self.ddp) else self.model.no_sync()
            with sync:
                with self.autocast():
                    out = self.model(x, t)
                    loss = self.loss_fn(torch.cat(img[:i] + [out["image_features"]] + img[i + 1:]),
                                        torch.cat(txt[:i] + [out["text_features"]] + txt[i + 1:]),
                                        out["logit_scale"])
                if loss_hook is not None:
                    loss = loss_hook(loss, step)
                if not torch.isfinite(loss):
                    return loss
                self.scaler.scale(loss).backward()
            loss_value = loss.detach() if loss_value is None else loss_value
        if self.raw.logit_scale.grad is not None:
            self.raw.logit_scale.grad.div_(self.accum)
        return loss_value
