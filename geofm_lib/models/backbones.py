"""timm encoders taking any named band set: the backbones of the SSL methods (notebook 07) and
of the segmenters (notebook 08), ResNets and ViTs."""

from __future__ import annotations

import torch

from geofm_lib.errors import ConfigError
from geofm_lib.models.adapters import stem_conv1x1
from geofm_lib.models.spectral import spectral_first


def make_backbone(name: str, bands: list[str], adapter: str, seed: int,
                  image_px: int | None = None):
    """A timm encoder taking ``bands`` (the architecture of the SSL encoder), random init,
    pooled features out. ResNets take any image size. ViTs (``vit_small_patch16`` is timm's
    ``vit_small_patch16_224``) are made for ``image_px`` (positional embeddings interpolated
    for other sizes, as DINO's small crops need), features averaged over the patch tokens
    after the final norm; ``conv1x1`` puts the N -> 3 mixer in front of the patch embedding,
    ``spectral`` the spectral stem (``models.spectral``: 1-D convolutions over each pixel's
    spectrum) in front of the first convolution or the patch embedding."""
    import timm

    torch.manual_seed(seed)
    if name.startswith("vit_"):
        if image_px is None:
            raise ConfigError(f"{name} is made for one image size: give image_px")
        net = timm.create_model(f"{name}_224", img_size=image_px, in_chans=len(bands),
                                num_classes=0, global_pool="avg", fc_norm=False,
                                dynamic_img_size=True)
        if adapter == "conv1x1":
            net.patch_embed.proj = stem_conv1x1(net.patch_embed.proj, bands)
        elif adapter == "spectral":
            net.patch_embed.proj = spectral_first(net.patch_embed.proj, bands)
        return net
    net = timm.create_model(name, in_chans=len(bands), num_classes=0)
    if adapter == "conv1x1":
        net.conv1 = stem_conv1x1(net.conv1, bands)
    elif adapter == "spectral":
        net.conv1 = spectral_first(net.conv1, bands)
    return net
