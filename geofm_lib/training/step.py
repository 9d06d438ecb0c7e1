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
    statistics (as in open_clip_train).

    The step never waits for the device: a non-finite loss or gradient norm is found on the
    device and, with a fused optimiser (the training loop's AdamW), the update is skipped there
    through the optimiser's ``found_inf`` (as torch's grad scaler does), so the host reads the
    loss back only when the loop asks (every few steps, see ``loop.READBACK_STEPS``). Another
    optimiser makes the step read the check back at once (one sync) to skip the update."""

    def __init__(self, model, raw_model, loss_fn, optimizer, scheduler, scaler, autocast,
                 accum: int, clip_norm: float, ddp: bool):
        self.model, self.raw, self.loss_fn = model, raw_model, loss_fn
        self.opt, self.sched, self.scaler, self.autocast = optimizer, scheduler, scaler, autocast
        self.accum, self.clip_norm, self.ddp = accum, clip_norm, ddp
        self.norm: torch.Tensor | None = None  # of the last step, before clipping (on device)
        self.bad: torch.Tensor | None = None  # 1.0 when the last update was skipped (device)
        self._fused = bool(optimizer.defaults.get("fused"))

    @property
    def grad_norm(self) -> float | None:
        """The last step's gradient norm before clipping (reads it back from the device)."""
        return None if self.norm is None else float(self.norm)

    @property
    def overflowed(self) -> bool:
        """The last step's gradients were infinite or NaN while the loss was finite, and the
        update was skipped. Under fp16 the grad scaler skips such steps itself and lowers its
        scale, which is normal, so this is then always False."""
        return (self.grad_norm is not None and not math.isfinite(self.grad_norm)
                and not self.scaler.is_enabled())

    def _loss(self, image_features, text_features, out):
        """The contrastive loss; SigLIP models (a ``logit_bias`` in their output) pass it on."""
        if out.get("logit_bias") is not None:
            return self.loss_fn(image_features, text_features, out["logit_scale"],
                                out["logit_bias"])
        return self.loss_fn(image_features, text_features, out["logit_scale"])

    def loss(self, images, tokens):
        with self.autocast():
            out = self.model(images, tokens)
            return self._loss(out["image_features"], out["text_features"], out)

    def __call__(self, images, tokens, loss_hook=None, step=0):
        """Forward, backward and update on one batch; returns the loss (before the update), a
        tensor on the device.

        A non-finite loss, or a finite loss with infinite or NaN gradients (an overflow in
        backward), skips the update, so the weights stay as they were: ``bad`` is then 1 and,
        for an overflow, ``grad_norm`` not finite (the loop stops with
        :class:`TrainingDiverged` when it reads them back). With fp16 the grad scaler handles
        overflows itself (it skips such steps and lowers its scale)."""
        self.opt.zero_grad(set_to_none=True)
        self.norm = self.bad = None
        if self.accum == 1:
            loss = self.loss(images, tokens)
            if loss_hook is not None:
                loss = loss_hook(loss, step)
            self.scaler.scale(loss).backward()
        else:
            loss = self._accumulated(images, tokens, loss_hook, step)
        params = [q for q in self.raw.parameters() if q.grad is not None]
        if self.clip_norm > 0:
            self.scaler.unscale_(self.opt)
            self.norm = torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        elif not self.scaler.is_enabled():
            self.norm = torch.nn.utils.get_total_norm([q.grad for q in params])
        if self.scaler.is_enabled():  # the scaler finds and skips overflows itself
            self.scaler.step(self.opt)
            self.scaler.update()
            self.bad = (~torch.isfinite(loss.detach())).float()
        else:
            bad = ~torch.isfinite(loss.detach())
            if self.norm is not None:
                bad |= ~torch.isfinite(self.norm)
            self.bad = bad.float()
            if self._fused:  # the fused kernel skips the update on the device
                self.opt.found_inf = self.bad
                try:
                    self.opt.step()
                finally:
                    del self.opt.found_inf
            elif bool(self.bad):  # one sync: this optimiser cannot skip on the device
                return loss
            else:
                self.opt.step()
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
                    loss = self._loss(torch.cat(img[:i] + [out["image_features"]] + img[i + 1:]),
                                      torch.cat(txt[:i] + [out["text_features"]] + txt[i + 1:]),
                                      out)
                if loss_hook is not None:
                    loss = loss_hook(loss, step)
                self.scaler.scale(loss).backward()
            loss_value = loss.detach() if loss_value is None else loss_value
        for p in (self.raw.logit_scale, getattr(self.raw, "logit_bias", None)):
            if p is not None and p.grad is not None:  # added in full by every micro-batch
                p.grad.div_(self.accum)
        return loss_value
