"""The MoCo-v2 task (torchgeo's ``MoCoTask``), its augmentation sets, backbones with a band
stem (timm ResNets and ViTs), and collapse checks. DINO and MAE are in ``ssl.methods``.
"""

from __future__ import annotations

import math

import torch

from geofm_lib.config import Config
from geofm_lib.errors import ConfigError
from geofm_lib.models.adapters import stem_conv1x1
from geofm_lib.models.backbones import make_backbone  # noqa: F401 (the SSL encoders)
from geofm_lib.models.spectral import spectral_first

SSL_FORMAT = "geofm-ssl-1"

# the names results tables print for each method
METHOD_LABELS = {"moco": "MoCo-v2", "dino": "DINO", "mae": "MAE"}


def parse_method(spec: str, backbone: str) -> tuple[str, str]:
    """(method, backbone) of ``method`` or ``method:backbone`` (e.g. ``mae:vit_tiny_patch16``,
    for a method beside a run on another backbone; without one, ``backbone``)."""
    from geofm_lib.config import SSL_BACKBONES

    method, _, own = str(spec).partition(":")
    if method not in METHOD_LABELS:
        raise ConfigError(f"unknown SSL method {method!r} in {spec!r}; choose "
                          f"{', '.join(METHOD_LABELS)} (optionally method:backbone)")
    own = own or backbone
    if own not in SSL_BACKBONES:
        raise ConfigError(f"unknown backbone {own!r} in {spec!r}; choose "
                          f"{', '.join(SSL_BACKBONES)}")
    return method, own


def method_config(cfg: Config, spec: str, epochs: int | None = None) -> Config:
    """``cfg`` for the method (and backbone) of ``spec``, validated (MAE needs a ViT, MoCo a
    ResNet), for ``epochs`` epochs (None: ``cfg``'s)."""
    method, backbone = parse_method(spec, cfg.ssl_backbone)
    return cfg.with_params(ssl_method=method, ssl_backbone=backbone,
                           ssl_epochs=epochs or cfg.ssl_epochs)


def method_label(method: str, backbone: str, default_backbone: str | None = None) -> str:
    """``MAE`` or, on a backbone other than ``default_backbone``, ``MAE ViT-Ti/16``."""
    if backbone == default_backbone or default_backbone is None:
        return METHOD_LABELS[method]
    return f"{METHOD_LABELS[method]} {backbone_label(backbone)}"


def backbone_label(backbone: str) -> str:
    """``vit_tiny_patch16`` -> ``ViT-Ti/16``, ``resnet18`` -> ``ResNet-18``."""
    if backbone.startswith("vit_"):
        size, patch = backbone[4:].split("_patch")
        return f"ViT-{ {'tiny': 'Ti', 'small': 'S', 'base': 'B'}.get(size, size)}/{patch}"
    return f"ResNet-{backbone[6:]}"


# --- the MoCo-v2 model ----------------------------------------------------------------------

def augmentations(kind: str, image_px: int):
    """Seed 003's augmentation sets as kornia modules (tensors in, tensors out)."""
    import kornia.augmentation as K  # noqa: N812

    if kind == "none":
        return torch.nn.Identity()
    ops = [K.RandomResizedCrop((image_px, image_px), scale=(0.2, 1.0)),
           K.RandomHorizontalFlip(), K.RandomVerticalFlip()]
    if kind == "set2":
        k = max(3, (image_px // 10) | 1)  # odd kernel about a tenth of the image (MoCo-v2)
        ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=0.5))
    return torch.nn.Sequential(*ops)


def build_task(cfg: Config, bands: list[str], world: int = 1):
    """torchgeo's MoCoTask (v2) for ``bands`` input channels, with the two fixes of the module
    docstring (key side starts as a copy of the query side; the conv1x1 stem). With ``world``
    processes the keys of all of them are gathered before they enter the queue (as MoCo's
    ``concat_all_gather``), so the queue grows by the global batch per step. N processes still
    differ from one: BatchNorm statistics are per process (no SyncBN or MoCo's shuffled BN, as
    in torchgeo) and each process draws its own augmentations."""
    from torchgeo.trainers import MoCoTask

    torch.manual_seed(cfg.seed)
    milestones = [max(1, int(cfg.ssl_epochs * 0.6)), max(2, int(cfg.ssl_epochs * 0.8))]
    if cfg.ssl_backbone.startswith("vit_"):
        raise ConfigError(f"torchgeo's MoCoTask takes ResNets, not {cfg.ssl_backbone}; use "
                          f"ssl_backbone=resnet18/34/50 with MoCo, or ssl_method=dino/mae")
    task = MoCoTask(model=cfg.ssl_backbone, in_channels=len(bands), version=2, layers=2,
                    hidden_dim=2048, output_dim=128, lr=cfg.ssl_learning_rate, weight_decay=1e-4,
                    momentum=0.9, schedule=milestones, temperature=cfg.moco_temperature,
                    memory_bank_size=cfg.moco_queue, moco_momentum=cfg.moco_momentum,
                    size=cfg.image_px, augmentation1=augmentations(cfg.ssl_augment, cfg.image_px),
                    augmentation2=augmentations(cfg.ssl_augment, cfg.image_px),
                    gather_distributed=world > 1)
    if cfg.ssl_adapter in ("conv1x1", "spectral"):
        make = stem_conv1x1 if cfg.ssl_adapter == "conv1x1" else spectral_first
        for net in (task.backbone, task.backbone_momentum):
            net.conv1 = make(net.conv1, bands)
    task.backbone_momentum.load_state_dict(task.backbone.state_dict())
    task.projection_head_momentum.load_state_dict(task.projection_head.state_dict())
    for p in (*task.backbone_momentum.parameters(), *task.projection_head_momentum.parameters()):
        p.requires_grad = False
    return task


def embedding_std(features: torch.Tensor) -> float:
    """Mean over dimensions of the standard deviation of L2-normalised embeddings: about
    1/sqrt(d) when they spread over the sphere, near 0 when the encoder has collapsed."""
    z = torch.nn.functional.normalize(features.float(), dim=1)
    return float(z.std(dim=0).mean())


def collapse_check(features: torch.Tensor, ratio: float = 0.1) -> dict:
    """Representation collapse: embedding std below ``ratio`` x 1/sqrt(d)."""
    d = features.shape[1]
    std = embedding_std(features)
    return {"embedding_std": std, "uniform_std": 1 / math.sqrt(d),
            "collapsed": std < ratio / math.sqrt(d)}
