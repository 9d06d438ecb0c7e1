"""Segmentation encoders beyond notebook 07's (notebook 08's ``other_encoders``), each fed the
input it was trained on, rebuilt from the places' raw optical values (``Pairs.raw_optical``):

* ``clip``: this run's CLIP image tower (notebook 03's finished checkpoint);
  ``checkpoint:<path>``: the tower of another geofm checkpoint. The input is what 03 trained on
  (``models.inputs.to_model_input`` with the checkpoint's statistics: true colour B04/B03/B02,
  or every band with a band adapter), standardised as in training. The tower's last block (its
  ``forward_intermediates``: layer 4 of a ResNet tower, the last transformer block of a ViT) is
  the feature map of seed 001's UpConv decoder (``segmenter.UpConvMap``).
* ``torchgeo:resnet18:SENTINEL2_ALL_MOCO`` (any torchgeo ResNet weights whose metadata names
  their bands): the weights in a ResNet under UNet or DeepLabV3+, as 07's ResNets. The input is
  the weights' band order, bands placed by name (L2A data has no B10: left at 0), raw values
  normalised as the weights' transforms do. Their resize and crop to 224 px are left out: a
  dense task keeps the image's pixels.

Each comes with its baseline: the same architecture at random init, fed the same input, so a
paired difference compares weights and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geofm_lib.config import Config
from geofm_lib.encoders.torchgeo_weights import PREFIX, load, parse, weights_meta
from geofm_lib.errors import EncoderError
from geofm_lib.evaluation.segmenter import UpConvMap, build_segmenter
from geofm_lib.models.factory import create_model
from geofm_lib.models.inputs import to_model_input
from geofm_lib.training.checkpoint import (
    load_checkpoint,
    load_trained_model,
    model_from_checkpoint,
    stats_from_checkpoint,
)

USAGE = ("clip (this run's 03 tower), checkpoint:<path to a geofm last.pt>, or "
         "torchgeo:<resnet18|resnet50>:<weights naming their bands>, e.g. "
         "torchgeo:resnet18:SENTINEL2_ALL_MOCO")


@dataclass
class DenseEncoder:
    """A pretrained encoder for 08 and how to feed it.

    ``kind`` ``tower``: an OpenCLIP image tower (``tower``, under the UpConv decoder);
    ``resnet``: a timm ResNet's state (``state``, backbone ``backbone``) under UNet or
    DeepLabV3+. ``stats`` (dataset -> input statistics) and ``normalise`` (mean, std after
    placing, or None) make its input from raw values."""

    name: str
    label: str
    kind: str
    backbone: str
    channels: int
    stats: dict
    normalise: tuple[np.ndarray, np.ndarray] | None = None
    tower: torch.nn.Module | None = None
    model_name: str | None = None
    tower_kwargs: dict | None = None  # create_model's band adapter and bands (random init)
    state: dict | None = None

    def inputs(self, pairs, idx) -> np.ndarray:
        """(len(idx), channels, H, W) float32: the places' optical images as this encoder
        was trained to take them."""
        raw, sources = pairs.raw_optical(idx)
        missing = sorted(set(sources) - set(self.stats))
        if missing:
            raise EncoderError(f"{self.label} has no input statistics for {', '.join(missing)} "
                               f"(it knows {', '.join(self.stats)}); use data of the datasets "
                               f"it was trained on")
        x = np.stack([to_model_input(_product(img, pairs.optical_bands, pairs.band_stats[ds]),
                                     pairs.band_stats[ds]["bands"], self.stats[ds])
                      for img, ds in zip(raw, sources, strict=True)]).astype(np.float32)
        if self.normalise is not None:
            mean, std = self.normalise
            x = (x - mean[:, None, None]) / std[:, None, None]
        return x

    def segmenter(self, decoder: str, n_classes: int, image_px: int, seed: int,
                  pretrained: bool = True) -> torch.nn.Module:
        """The encoder (``pretrained``) or its architecture at random init under its
        decoder: UpConv on a tower, ``decoder`` (UNet / DeepLabV3+) on a ResNet."""
        if self.kind == "resnet":
            return build_segmenter(decoder, self.backbone, [f"c{i}" for i in
                                                             range(self.channels)],
                                   n_classes, "first_layer",
                                   self.state if pretrained else None, seed=seed)
        if pretrained:
            tower = _TowerMap(self.tower)
        else:
            model, _ = create_model(self.model_name, image_px, None, "cpu", seed,
                                    **(self.tower_kwargs or {}))
            tower = _TowerMap(model.visual)
        torch.manual_seed(seed)
        return UpConvMap(tower, n_classes, self.channels, image_px)

    def decoder_for(self, decoder: str) -> str:
        return "upconv" if self.kind == "tower" else decoder


def _product(img: np.ndarray, bands: list[str], band_stat: dict) -> np.ndarray:
    """A place's optical bands in its dataset's product layout (what the input statistics
    index), the dataset's other bands (SAR of a stacked product) at their means: absent, 0
    once standardised."""
    out = np.empty((len(band_stat["bands"]), *img.shape[1:]), np.float32)
    for j, b in enumerate(band_stat["bands"]):
        out[j] = img[bands.index(b)] if b in bands else band_stat["mean"][j]
    return out


class _TowerMap(torch.nn.Module):
    """An OpenCLIP image tower as a feature-map encoder: its last block's output, NCHW."""

    def __init__(self, visual: torch.nn.Module):
        super().__init__()
        if not hasattr(visual, "forward_intermediates"):
            raise EncoderError(f"the image tower {type(visual).__name__} has no "
                               f"forward_intermediates (OpenCLIP's ResNet and ViT towers "
                               f"have it); it cannot give a feature map")
        self.visual = visual

    def forward(self, x):
        out = self.visual.forward_intermediates(x, indices=1, stop_early=True,
                                                intermediates_only=True)
        return out["image_intermediates"][-1]


def check_name(name: str) -> None:
    """Refuse a bad name before any work."""
    if name == "clip" or name.startswith("checkpoint:"):
        return
    if name.startswith(PREFIX):
        model, weights = parse(name)
        if not model.startswith("resnet"):
            raise EncoderError(f"{name}: 08 takes torchgeo's ResNets (under UNet / "
                               f"DeepLabV3+); {model} has no feature pyramid for them")
        if weights is None:
            raise EncoderError(f"{name}: name the weights (torchgeo:{model}:<weights>); its "
                               f"random init is already the baseline of every ResNet")
        if "bands" not in weights_meta(model, weights):
            raise EncoderError(f"{name}: these weights do not name their bands, so their "
                               f"input cannot be placed by name; choose weights that do "
                               f"(e.g. SENTINEL2_ALL_MOCO)")
        return
    raise EncoderError(f"unknown segmentation encoder {name!r}; write {USAGE}")


def _clip(cfg: Config, name: str) -> DenseEncoder:
    if name == "clip":
        model, _, state = load_trained_model(cfg)
        label = f"CLIP {state['model_name']} (03)"
    else:
        path = Path(name.split(":", 1)[1]).expanduser()
        state = load_checkpoint(path)
        model, _ = model_from_checkpoint(state, "cpu", cfg.seed)
        label = f"CLIP {state['model_name']} ({path.parent.name})"
    stats = stats_from_checkpoint(state)
    channels = len(state.get("model_bands") or []) or 3
    return DenseEncoder(name, label, "tower", state["model_name"], channels, stats,
                        tower=model.visual, model_name=state["model_name"],
                        tower_kwargs={"band_adapter": state.get("band_adapter", "rgb"),
                                       "bands": state.get("model_bands")})


def _normalisation(transforms, name: str, channels: int):
    """The (mean, std) of the weights' transforms; their resize and crop are left out."""
    mean = std = None
    for m in (transforms.modules() if transforms is not None else []):
        kind = type(m).__name__
        if kind == "Normalize":
            mean = np.broadcast_to(np.asarray(m.mean, np.float32).ravel(), (channels,))
            std = np.broadcast_to(np.asarray(m.std, np.float32).ravel(), (channels,))
        elif kind not in ("Sequential", "AugmentationSequential", "Resize", "CenterCrop",
                          "ImageSequential"):
            raise EncoderError(f"{name}: its transforms hold {kind}, which 08 does not know how "
                               f"to apply to a dense input; only Resize, CenterCrop (left out) "
                               f"and Normalize are")
    if mean is None:
        raise EncoderError(f"{name}: its transforms have no Normalize, so the scale of its "
                           f"input is unknown")
    return np.array(mean), np.array(std)


def _torchgeo(name: str, band_stats: dict, image_px: int) -> DenseEncoder:
    model, weights = parse(name)
    # the registry's loader: downloads (or fails offline with the reason) and places each
    # dataset's raw bands by name into the weights' band order (their metadata names them)
    encoder, stats = load(name, band_stats, image_px)
    channels = next(iter(stats.values())).channels
    state = {k: v for k, v in encoder.visual.net.state_dict().items()
             if not k.startswith("fc.")}
    normalise = _normalisation(encoder.visual.transform, name, channels)
    return DenseEncoder(name, f"torchgeo {model} {weights}", "resnet", model, channels,
                        stats, normalise, state=state)


def dense_encoder(cfg: Config, name: str, pairs, image_px: int) -> DenseEncoder:
    """The encoder ``name`` for segmenting ``pairs`` (their optical bands and datasets).

    Raises:
        EncoderError: a bad name, a checkpoint that is missing or unfinished, torchgeo weights
            that cannot be loaded (offline), or data without any of the weights' bands.
    """
    check_name(name)
    if name.startswith(PREFIX):
        optical = {ds: pairs.band_stats[ds] for ds in sorted(set(pairs.optical_dataset))}
        return _torchgeo(name, optical, image_px)
    return _clip(cfg, name)
