"""The self-supervised methods of seed 001 beside MoCo: DINO and MAE, as Lightning modules built
from lightly's components, and the registry that builds any of the three for a run.

* ``moco``: torchgeo's ``MoCoTask`` (``ssl.model.build_task``), ResNets.
* ``dino``: self-distillation with no labels. A student (backbone + lightly's
  ``DINOProjectionHead``) and a teacher of the same shape that is the student's exponential
  moving average (momentum ``dino_momentum`` raised to 1 on a cosine over the run, lightly's
  ``update_momentum`` and ``cosine_schedule``); lightly's ``DINOLoss`` (teacher outputs
  centred and sharpened, cross-entropy to the student's) over multi-crop views: two large crops,
  one from each view of the pair (S1 and S2 of a place with ``ssl_mode=sensor``), seen by both
  networks, and ``dino_local_crops`` small crops (alternately from the two views) seen by the
  student only. The head's last layer is frozen during the first epoch (DINO's recipe).
  ResNet or ViT backbones; AdamW with a linear warm-up and a cosine decay.
* ``mae``: masked autoencoder on a timm ViT (lightly's ``MaskedVisionTransformerTIMM`` encoder
  and ``MaskedVisionTransformerDecoderTIMM``): ``mae_mask_ratio`` of the patches hidden, the
  encoder sees the rest, the decoder predicts the hidden patches' pixels, normalised per patch
  (MAE's best target). It takes the first view of each sample: one sensor's image with
  ``ssl_mode=sensor`` or ``augment`` (S1 or S2, drawn per sample), both stacked with the fusion
  modes; the loss counts the channels of the sensors present only (the absent sensor's
  channels are zeros, not something to reconstruct).

Importing this module loads Lightning; ``ssl.pretraining`` imports it when a run starts.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
from lightning.pytorch import LightningModule

from geofm_lib.bands import POLARISATIONS
from geofm_lib.config import Config, vit_patch_px
from geofm_lib.ssl.model import augmentations, build_task, embedding_std, make_backbone


def _warmup_cosine(optimizer, total_steps: int, warmup_fraction: float = 0.1):
    """Per-step learning-rate factor: linear warm-up over the first tenth, cosine to 0."""
    warm = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimizer(module: LightningModule, lr: float, weight_decay: float):
    """AdamW without weight decay on biases and norms (1-d parameters), the per-step schedule."""
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr)
    total = int(module.trainer.estimated_stepping_batches)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": _warmup_cosine(opt, total),
                                               "interval": "step"}}


# ResNet small crops are at least this side: below ~17 px the last stage gets 1x1 maps, and
# with them the ResNet-18's layer4.0.conv1 weight gradient came out NaN in about half of the
# runs under CPU bf16 autocast (torch 2.14.1; activations finite; not at 20 px and up)
RESNET_MIN_CROP_PX = 24


def local_crop_px(image_px: int, backbone: str) -> int:
    """Side of DINO's small crops: 3/7 of the image (DINO's 96 of 224 px), a whole number of
    patches for a ViT (at least one), at least ``RESNET_MIN_CROP_PX`` for a ResNet."""
    side = image_px * 3 // 7
    if backbone.startswith("vit_"):
        patch = vit_patch_px(backbone)
        return max(patch, side // patch * patch)
    return min(image_px, max(RESNET_MIN_CROP_PX, side))


def _crops(size: int, scale: tuple[float, float]):
    import kornia.augmentation as K  # noqa: N812

    return torch.nn.Sequential(K.RandomResizedCrop((size, size), scale=scale),
                               K.RandomHorizontalFlip(), K.RandomVerticalFlip())


class DINOTask(LightningModule):
    """DINO on the two views of each sample (see the module docstring)."""

    method = "dino"

    def __init__(self, backbone: torch.nn.Module, image_px: int, local_px: int, out_dim: int,
                 local_crops: int, teacher_temp: float, momentum: float, lr: float,
                 augment: str, weight_decay: float = 0.04):
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead

        super().__init__()
        self.backbone = backbone
        dim = backbone.num_features
        with warnings.catch_warnings():  # lightly's head still uses the old weight_norm
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            self.head = DINOProjectionHead(dim, 2048, 256, out_dim, freeze_last_layer=1)
            # the weight-normalised last layer cannot be deep-copied: a twin, then the
            # student's weights (the teacher starts as a copy of the student, as in DINO)
            self.teacher_head = DINOProjectionHead(dim, 2048, 256, out_dim)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head.load_state_dict(self.head.state_dict())
        for p in (*self.teacher_backbone.parameters(), *self.teacher_head.parameters()):
            p.requires_grad = False
        # the teacher temperature is constant (DINO's default 0.04 starts where it ends)
        self.criterion = DINOLoss(output_dim=out_dim, warmup_teacher_temp=teacher_temp,
                                  teacher_temp=teacher_temp, warmup_teacher_temp_epochs=1)
        self.global_aug = (augmentations(augment, image_px) if augment != "none"
                           else torch.nn.Identity())
        self.local_aug = _crops(local_px, (0.05, 0.4))
        self.local_crops, self.teacher_temp = local_crops, teacher_temp
        self.base_momentum, self.lr, self.weight_decay = momentum, lr, weight_decay

    def teacher_momentum(self) -> float:
        """The EMA momentum at this step: ``dino_momentum`` raised to 1 on a cosine."""
        from lightly.utils.scheduler import cosine_schedule

        total = max(1, int(self.trainer.estimated_stepping_batches))
        return float(cosine_schedule(self.global_step, total, self.base_momentum, 1.0))

    def training_step(self, batch, batch_idx):
        from lightly.models.utils import update_momentum

        x = batch["image"]
        c = x.shape[1] // 2
        views = (x[:, :c], x[:, c:])
        m = self.teacher_momentum()
        update_momentum(self.backbone, self.teacher_backbone, m)
        update_momentum(self.head, self.teacher_head, m)
        large = [self.global_aug(v) for v in views]
        small = [self.local_aug(views[i % 2]) for i in range(self.local_crops)]
        with torch.no_grad():
            teacher = [self.teacher_head(self.teacher_backbone(v)) for v in large]
        student = [self.head(self.backbone(v)) for v in (*large, *small)]
        # the loss in fp32, outside autocast: in bf16 the logits / 0.04 (teacher temperature)
        # step by 1.6 at |logit| 8-16 and the loss itself by 1/16 (the demo's DINO logged
        # 8.9375 for four epochs running)
        with torch.autocast(x.device.type, enabled=False):
            loss = self.criterion([t.float() for t in teacher], [s.float() for s in student],
                                  epoch=self.current_epoch)
        self.log("loss", loss, prog_bar=False)
        return loss

    def on_after_backward(self):
        self.head.cancel_last_layer_gradients(self.current_epoch)

    def configure_optimizers(self):
        return _optimizer(self, self.lr, self.weight_decay)

    @torch.no_grad()
    def monitor_stats(self, x: torch.Tensor, step: int, world: int) -> dict:
        """On the un-augmented views: the teacher's output entropy (DINO's two collapses: all
        outputs uniform, entropy = log K; one dimension for every input, entropy near 0), the
        entropy of the batch-mean teacher distribution (how many of the K outputs are used),
        the student-teacher KL, the centre's norm, the cosine similarity of the backbone
        features of the two views, and the embedding std."""
        c = x.shape[1] // 2
        v1, v2 = x[:, :c], x[:, c:]
        h1, h2 = self.backbone(v1), self.backbone(v2)
        t = torch.softmax((self.teacher_head(self.teacher_backbone(v1)).float()
                           - self.criterion.center[0]) / self.teacher_temp, dim=-1)
        s = torch.log_softmax(self.head(h2).float() / self.criterion.student_temp, dim=-1)
        ent = -(t * torch.log(t.clamp_min(1e-12))).sum(-1).mean()
        mean_t = t.mean(0)
        used = -(mean_t * torch.log(mean_t.clamp_min(1e-12))).sum()
        kl = (t * (torch.log(t.clamp_min(1e-12)) - s)).sum(-1).mean()
        return {"teacher_entropy": float(ent), "teacher_batch_entropy": float(used),
                "max_entropy": math.log(t.shape[1]), "kl_teacher_student": float(kl),
                "center_norm": float(self.criterion.center.norm()),
                "teacher_momentum": self.teacher_momentum(),
                "positive_similarity": float(torch.nn.functional.cosine_similarity(
                    h1.float(), h2.float()).mean()),
                "embedding_std": embedding_std(h1), "feature_dim": int(h1.shape[1])}


class MAETask(LightningModule):
    """MAE on a timm ViT (see the module docstring)."""

    method = "mae"

    def __init__(self, vit: torch.nn.Module, bands: list[str], image_px: int, patch_px: int,
                 mask_ratio: float, decoder_dim: int, decoder_depth: int, lr: float,
                 augment: str, weight_decay: float = 0.05):
        from lightly.models.modules import (
            MaskedVisionTransformerDecoderTIMM,
            MaskedVisionTransformerTIMM,
        )

        super().__init__()
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)
        # lightly's masked ViT carries a mask token for SimMIM-style inputs; MAE drops the
        # masked patches instead and never uses it. Frozen, so that DDP does not wait for its
        # gradient (AdamW skipped it anyway: its gradient was always None)
        self.encoder.mask_token.requires_grad_(False)
        self.decoder_embed = torch.nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches, embed_dim=decoder_dim,
            depth=decoder_depth, num_heads=max(1, decoder_dim // 64),
            num_prefix_tokens=vit.num_prefix_tokens)
        self.decoder_pred = torch.nn.Linear(decoder_dim, patch_px ** 2 * len(bands))
        self.patch, self.mask_ratio, self.bands = patch_px, mask_ratio, list(bands)
        sar = torch.tensor([b in POLARISATIONS for b in bands])
        self.register_buffer("sar_channels", sar, persistent=False)
        # crops and flips keep the pixels a patch is made of (blur would change the target)
        self.aug = (augmentations("set1", image_px) if augment != "none"
                    else torch.nn.Identity())
        self.lr, self.weight_decay = lr, weight_decay

    @property
    def backbone(self) -> torch.nn.Module:
        """The ViT (what ``encoder.pt`` keeps)."""
        return self.encoder.vit

    def present(self, sensors) -> torch.Tensor:
        """(B, C) bool: the channels of the sensors in each view (``s1``, ``s2``, ``s1/s2``)."""
        rows = [(self.sar_channels if "s1" in s else torch.zeros_like(self.sar_channels))
                | (~self.sar_channels if "s2" in s else torch.zeros_like(self.sar_channels))
                for s in sensors]
        return torch.stack(rows)

    def reconstruct(self, x: torch.Tensor, present: torch.Tensor):
        """(loss, predicted patches, target patches, idx_keep, idx_mask) for images ``x``:
        the masked patches' pixels, each patch's target normalised over its present
        channels, the loss their mean squared error over the present channels."""
        from lightly.models import utils

        b = x.shape[0]
        length = self.encoder.sequence_length
        idx_keep, idx_mask = utils.random_token_mask((b, length), self.mask_ratio,
                                                     device=x.device)
        enc = self.encoder.encode(x, idx_keep=idx_keep)
        tokens = utils.repeat_token(self.decoder.mask_token, (b, length))
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder_embed(enc).type_as(tokens))
        dec = self.decoder(tokens)
        pred = self.decoder_pred(utils.get_at_index(dec, idx_mask)).float()
        prefix = self.encoder.vit.num_prefix_tokens
        target = utils.get_at_index(utils.patchify(x.float(), self.patch), idx_mask - prefix)
        n_ch = x.shape[1]
        t = target.view(b, target.shape[1], -1, n_ch)
        p = pred.view_as(t)
        w = present[:, None, None, :].to(t.dtype)
        n = w.sum(-1, keepdim=True) * t.shape[2]
        mean = (t * w).sum((2, 3), keepdim=True) / n
        var = (((t - mean) ** 2) * w).sum((2, 3), keepdim=True) / n
        t = (t - mean) / torch.sqrt(var + 1e-6)
        loss = (((p - t) ** 2) * w).sum() / w.expand_as(t).sum().clamp_min(1)
        return loss, p, t, idx_keep, idx_mask, (mean, var)

    def training_step(self, batch, batch_idx):
        x = batch["image"]
        x = self.aug(x[:, :x.shape[1] // 2])
        loss = self.reconstruct(x, self.present(batch["sensor_q"]))[0]
        self.log("loss", loss, prog_bar=False)
        return loss

    def configure_optimizers(self):
        return _optimizer(self, self.lr, self.weight_decay)

    @torch.no_grad()
    def monitor_stats(self, x: torch.Tensor, step: int, world: int, sensors=None) -> dict:
        """The reconstruction loss of the un-augmented first views under a fixed mask (the
        same masks at every logged step, drawn without touching the run's random stream),
        and the embedding std of the unmasked encoder's features."""
        x = x[:, :x.shape[1] // 2]
        present = (self.present(sensors) if sensors is not None
                   else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(0)
            loss = self.reconstruct(x, present)[0]
        h = self.encoder(x)
        return {"reconstruction_loss": float(loss), "embedding_std": embedding_std(h),
                "feature_dim": int(h.shape[1])}

    @torch.no_grad()
    def reconstructions(self, x: torch.Tensor, sensors, seed: int = 0) -> dict:
        """For a figure: the images, the visible patches (masked ones at 0) and the
        reconstruction (visible patches as given, masked ones predicted and mapped back to
        pixels with each patch's own mean and std), all (B, C, H, W) numpy arrays."""
        from lightly.models import utils

        was = self.training
        self.eval()
        present = self.present(sensors)
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(seed)
            _, p, _, idx_keep, idx_mask, (mean, var) = self.reconstruct(x, present)
        self.train(was)
        prefix = self.encoder.vit.num_prefix_tokens
        patches = utils.patchify(x.float(), self.patch)
        pixels = (p * torch.sqrt(var + 1e-6) + mean).flatten(2)
        recon = utils.set_at_index(patches.clone(), idx_mask - prefix, pixels)
        hidden = utils.set_at_index(patches.clone(), idx_mask - prefix, torch.zeros_like(pixels))
        n_ch = x.shape[1]
        to_img = lambda t: utils.unpatchify(t, self.patch, n_ch).cpu().numpy()  # noqa: E731
        keep = present[:, :, None, None].cpu().numpy()
        return {"image": x.float().cpu().numpy() * keep, "visible": to_img(hidden) * keep,
                "reconstruction": to_img(recon) * keep,
                "masked_share": idx_mask.shape[1] / (idx_mask.shape[1] + idx_keep.shape[1]
                                                     - prefix)}


def build_module(cfg: Config, bands: list[str], world: int = 1) -> LightningModule:
    """The Lightning module of ``cfg.ssl_method`` for ``bands`` input channels (seeded)."""
    torch.manual_seed(cfg.seed)
    if cfg.ssl_method == "moco":
        return build_task(cfg, bands, world)
    backbone = make_backbone(cfg.ssl_backbone, bands, cfg.ssl_adapter, cfg.seed, cfg.image_px)
    if cfg.ssl_method == "dino":
        return DINOTask(backbone, cfg.image_px, local_crop_px(cfg.image_px, cfg.ssl_backbone),
                        cfg.dino_out_dim, cfg.dino_local_crops, cfg.dino_teacher_temp,
                        cfg.dino_momentum, cfg.ssl_learning_rate, cfg.ssl_augment)
    return MAETask(backbone, bands, cfg.image_px, vit_patch_px(cfg.ssl_backbone),
                   cfg.mae_mask_ratio, cfg.mae_decoder_dim, cfg.mae_decoder_depth,
                   cfg.ssl_learning_rate, cfg.ssl_augment)


def moco_stats(module, x: torch.Tensor, step: int, world: int) -> dict:
    """MoCo-v2 on the un-augmented batch: positive-pair similarity, the similarity to the
    queue's negatives, how full the queue is, and the embedding std of features and keys."""
    c = x.shape[1] // 2
    with torch.no_grad():
        q, h = module.forward(x[:, :c])
        k = module.forward_momentum(x[:, c:])
        q = torch.nn.functional.normalize(q, dim=1)
        k = torch.nn.functional.normalize(k, dim=1)
        # lightly starts the queue with random unit vectors; real keys replace them
        # batch by batch, so the statistics are over the keys enqueued so far
        bank = module.criterion.memory_bank.bank
        # keys of every process enter the queue (gathered): world x this batch per step
        filled = min(step * x.shape[0] * world, bank.shape[0])
        keys = bank[:filled] if filled else bank
        return {"positive_similarity": float((q * k).sum(dim=1).mean()),
                "negative_similarity": float((q @ keys.T).mean()), "queue_filled": filled,
                "queue_std": embedding_std(keys) if len(keys) > 1 else float("nan"),
                "embedding_std": embedding_std(h), "feature_dim": int(h.shape[1])}


def method_stats(module, batch: dict, step: int, world: int) -> dict:
    """The monitor's statistics of any of the three methods."""
    x = batch["image"]
    if isinstance(module, MAETask):
        return module.monitor_stats(x, step, world, batch.get("sensor_q"))
    if isinstance(module, DINOTask):
        return module.monitor_stats(x, step, world)
    return moco_stats(module, x, step, world)

