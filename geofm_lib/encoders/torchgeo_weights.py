"""torchgeo backbones as frozen-feature encoders (notebook 06): ``torchgeo:<model>[:<weights>]``.

Examples: ``torchgeo:resnet50:SENTINEL2_ALL_MOCO`` (SSL4EO-S12 MoCo, 13 Sentinel-2 L1C bands),
``torchgeo:vit_small_patch16_224:SENTINEL2_ALL_DINO``, ``torchgeo:resnet50:SENTINEL1_GRD_MOCO``
(VV, VH), ``torchgeo:dofa_base_patch16_224:DOFA_MAE`` (any bands, by wavelength; seed 002's
model), or without weights (``torchgeo:resnet50``) the same architecture at random init.

Input, by case:

* weights whose ``meta['bands']`` name their bands (SSL4EO, SatlasPretrain, ...): the model's
  band order; each dataset's bands placed by name (``B8a`` = ``B8A``, ``B1`` = ``B01``), bands
  the data lacks (B10 for L2A data) left at 0, raw values (reflectance x 10000, dB) handed to the
  weights' own transforms (``weights.transforms``: resize, crop, the normalisation used in
  pretraining);
* DOFA: the data's own bands, standardised with the training-split statistics of the manifest,
  with their centre wavelengths in micrometres (``adapters.band_wavelength_nm``); with weights
  the images are resized to the 224 px the position embeddings were trained at;
* no weights: the data's bands, standardised, at the data's image size.

Weights are downloaded by torchgeo (``torch.hub``, cached under ``~/.cache/torch/hub``) only
when named; offline they fail with the reason, never falling back to random weights.
"""

from __future__ import annotations

import difflib
import re

import torch

from geofm_lib.errors import EncoderError, unavailable
from geofm_lib.models.adapters import band_wavelength_nm, model_bands
from geofm_lib.models.inputs import BandSlots

PREFIX = "torchgeo:"


# the backbones that give one pooled feature vector per image with num_classes=0
SUPPORTED = ("resnet18", "resnet50", "resnet152", "vit_small_patch16_224",
             "vit_base_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224",
             "dofa_small_patch16_224", "dofa_base_patch16_224", "dofa_large_patch16_224",
             "dofa_huge_patch14_224")


def parse(encoder: str) -> tuple[str, str | None]:
    """(model name, weights name or None) of ``torchgeo:<model>[:<weights>]``, validated
    against torchgeo's registry with the closest valid names on a mistake."""
    parts = encoder.split(":")
    if len(parts) not in (2, 3) or parts[0] + ":" != PREFIX or not parts[1]:
        raise EncoderError(f"encoder {encoder!r}: write torchgeo:<model>[:<weights>], e.g. "
                           f"torchgeo:resnet50:SENTINEL2_ALL_MOCO or torchgeo:resnet18")
    name = parts[1]
    weights = parts[2] if len(parts) == 3 and parts[2] else None
    if name not in SUPPORTED:
        close = difflib.get_close_matches(name, SUPPORTED, n=3)
        raise EncoderError(f"torchgeo model {name!r} is not an encoder here"
                           + (f"; did you mean {', '.join(close)}?" if close else "")
                           + f" Supported: {', '.join(SUPPORTED)}")
    if weights is not None:
        from torchgeo.models import get_model_weights

        members = list(get_model_weights(name).__members__)
        if weights not in members:
            close = difflib.get_close_matches(weights, members, n=3)
            raise EncoderError(f"torchgeo has no weights {weights!r} for {name}"
                               + (f"; did you mean {', '.join(close)}?" if close else "")
                               + f" Weights for {name}: {', '.join(members) or 'none'}")
    return name, weights


def weights_meta(model: str, weights: str) -> dict:
    """The metadata of torchgeo's weights ``weights`` for ``model`` (bands, ...)."""
    from torchgeo.models import get_model_weights  # deferred: torchgeo takes seconds to import

    return dict(get_model_weights(model)[weights].meta)


def canonical_band(name: str) -> str:
    """torchgeo's band names in the catalog's spelling: B1 -> B01, B8a -> B8A."""
    up = name.upper()
    m = re.fullmatch(r"B(\d)", up)
    return f"B0{m.group(1)}" if m else up


def place_bands(band_stats: dict, layout: list[str], encoder: str, raw: bool = False) -> dict:
    """Each dataset's bands placed by name into an encoder's input ``layout`` (``BandSlots``):
    standardised with the manifest's statistics, or ``raw`` for encoders that normalise
    themselves; bands outside the layout are dropped, layout bands the data lacks stay 0."""
    stats = {}
    for ds, st in band_stats.items():
        if not any(b in layout for b in st["bands"]):
            raise EncoderError(f"{ds} has bands {st['bands']}; {encoder} takes {layout}: none "
                               f"in common. Choose weights for this sensor, no weights, or "
                               f"leave {ds} out (datasets: [...])")
        stats[ds] = BandSlots.place(st, layout, raw=raw)
    return stats


def load(encoder: str, band_stats: dict, image_px: int, device: str = "cpu", seed: int = 0):
    """(model with ``encode_image`` and ``visual``, per-dataset input spec) of a torchgeo
    encoder for datasets with these manifest band statistics.

    Raises:
        EncoderError: bad name, data without any of the weights' bands, weights that cannot be
            downloaded or read (offline).
    """
    from torchgeo.models import get_model, get_model_weights

    name, weights_name = parse(encoder)
    weights = get_model_weights(name)[weights_name] if weights_name else None
    dofa = name.startswith("dofa")
    data_bands = model_bands([st["bands"] for st in band_stats.values()])
    named = weights is not None and "bands" in weights.meta
    layout = [canonical_band(b) for b in weights.meta["bands"]] if named else data_bands
    stats = place_bands(band_stats, layout, encoder, raw=named)
    kwargs: dict = {"num_classes": 0}
    if not dofa and weights is None:
        kwargs["in_chans"] = len(layout)
    if weights is None and not name.startswith("resnet"):
        kwargs["img_size"] = image_px
    torch.manual_seed(seed)
    if weights is None:
        net = get_model(name, **kwargs)
    else:
        try:
            net = get_model(name, weights=weights, **kwargs)
        except Exception as exc:  # noqa: BLE001  (download, hub and file errors)
            raise EncoderError(unavailable(
                f"could not load torchgeo weights {weights_name} for {name}", exc,
                "download them once where there is internet (torch caches them under "
                "~/.cache/torch/hub/checkpoints), or drop the weights name for a "
                "random-init baseline", 200)) from exc
    if dofa:
        wavelengths_um = [band_wavelength_nm(b) / 1000.0 for b in layout]
        transform = (torch.nn.Upsample(size=(224, 224), mode="bilinear")
                     if weights is not None else None)
    else:
        wavelengths_um = None
        transform = weights.transforms if weights is not None else None
    return TorchGeoEncoder(net, transform, wavelengths_um).to(device).eval(), stats


class _Tower(torch.nn.Module):
    """A torchgeo backbone with its input transform (and DOFA's wavelengths)."""

    def __init__(self, net, transform, wavelengths_um):
        super().__init__()
        self.net, self.transform, self.wavelengths_um = net, transform, wavelengths_um

    def forward(self, x):
        if self.transform is not None:
            x = self.transform(x)
        if self.wavelengths_um is not None:
            return self.net(x, self.wavelengths_um)
        return self.net(x)


class TorchGeoEncoder(torch.nn.Module):
    """An image backbone (torchgeo's, or notebook 07's ResNet) with ``encode_image`` and
    ``visual``, as geofm's CLIP models have them."""

    def __init__(self, net, transform, wavelengths_um):
        super().__init__()
        self.visual = _Tower(net, transform, wavelengths_um)

    def encode_image(self, x, normalize: bool = False):
        f = self.visual(x)
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f
