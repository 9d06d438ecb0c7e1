"""Multispectral input for CLIP image towers: band adapters chosen by the ``band_adapter``
parameter.

OpenCLIP's image towers (ModifiedResNet, VisionTransformer) start with a 3-channel convolution,
``visual.conv1``. Four ways to feed them remote-sensing products:

* ``rgb`` (default): no adapter; every product is mapped to 3 channels in
  ``models.inputs.to_model_input`` (Sentinel-2 B04/B03/B02, Sentinel-1 VV/VH/VV-VH, camera RGB).
* ``conv1x1``: a learned 1x1 convolution from the run's N input bands to 3 channels, in front of
  the stock tower (seed 003's input layer). Bands matched to red, green and blue start as the
  identity onto the R, G, B channels, so pretrained RGB weights see true colour at step 0.
* ``first_layer``: ``conv1`` widened to N input channels. Its kernels are initialised from the
  tower's RGB kernels: bands matched to red/green/blue copy the R/G/B kernels, every other band
  gets the mean RGB kernel scaled by 3/N (so a flat image gives the response of a grey one).
* ``wavelength``: a wavelength-conditioned ``conv1`` in the spirit of DOFA (seed 002): the
  kernel of each input band is generated from its centre wavelength (and polarisation, for
  SAR) by a small MLP, so one set of weights takes Sentinel-2, Sentinel-1 and RGB; a sensor
  unseen in training only needs its wavelengths (``set_bands``). Differences from DOFA: one MLP
  per band (DOFA's generator is a transformer across the bands) and no generated bias.
* ``spectral``: seed 001's spectral stem (``models.spectral``): each pixel's spectrum resampled
  onto a fixed wavelength grid and passed through 1-D convolutions, then ``conv1`` on the
  stem's feature maps (its kernels start as the mean RGB kernel x 3/C, as ``first_layer``'s
  extra bands). For hyperspectral products; like ``wavelength`` it takes any optical band set.

Channel layout: a run's model input is the ordered union of the bands of its datasets
(``model_bands``), e.g. group A is S2's 12 bands then VV, VH (14 channels). A sample fills the
channels of its own bands, standardised with its dataset's training-split statistics from the
shard manifest, and leaves the others at 0; a 0 channel contributes nothing to the first
convolution, so an S1 image is seen through the VV/VH kernels only.
"""

from __future__ import annotations

import difflib
import math

import numpy as np
import torch
import torch.nn.functional as F

from geofm_lib.bands import POLARISATIONS, wavelength_nm
from geofm_lib.errors import AdapterError

ADAPTERS = ("rgb", "conv1x1", "first_layer", "wavelength", "spectral")


# which bands stand for red, green and blue (for initialising from RGB weights)
RGB_ALIASES = ({"B04", "red", "R"}, {"B03", "green", "G"}, {"B02", "blue", "B"})


def check_adapter(name: str) -> str:
    """The adapter name, or an error with the closest valid names."""
    if name not in ADAPTERS:
        close = difflib.get_close_matches(name, ADAPTERS, n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise AdapterError(f"unknown band_adapter {name!r}{hint} Choose one of "
                           f"{', '.join(ADAPTERS)}")
    return name


def band_wavelength_nm(name: str) -> float:
    """Centre wavelength (nm) of a band by canonical name (``bands.wavelength_nm``), or an
    error that says how to give one."""
    nm = wavelength_nm(name)
    if nm is None:
        raise AdapterError(f"band {name!r} has no known centre wavelength; give the bands' "
                           f"wavelengths (options.band_wavelengths_nm or a dataset card), "
                           f"name them with catalog names (B01-B12, VV, VH, R, G, B, PAN) or "
                           f"red/green/blue/nir (options.band_names), or use "
                           f"band_adapter='first_layer'")
    return nm


def model_bands(band_lists: list[list[str]]) -> list[str]:
    """The model's input channels: the ordered union of the datasets' band names."""
    out: list[str] = []
    for bands in band_lists:
        out.extend(b for b in bands if b not in out)
    return out


def _rgb_slots(bands: list[str]) -> list[tuple[int, int]]:
    """(input channel, RGB channel) pairs for the bands that stand for red, green or blue."""
    return [(i, c) for i, b in enumerate(bands) for c, names in enumerate(RGB_ALIASES)
            if b in names]


def adapt_visual(visual, adapter: str, bands: list[str]) -> None:
    """Replace the image tower's first convolution in place so it takes ``len(bands)`` channels.

    Raises:
        AdapterError: unknown adapter, a tower without ``conv1``, no bands.
    """
    check_adapter(adapter)
    if adapter == "rgb":
        return
    conv = getattr(visual, "conv1", None)
    if not isinstance(conv, torch.nn.Conv2d) or conv.in_channels != 3:
        raise AdapterError(f"band_adapter={adapter!r} needs an OpenCLIP tower whose first layer "
                           f"is a 3-channel conv1 (ModifiedResNet, VisionTransformer); "
                           f"{type(visual).__name__} has none; use band_adapter='rgb'")
    if not bands:
        raise AdapterError("band adapter needs at least one input band")
    n = len(bands)
    device = conv.weight.device
    if adapter == "conv1x1":
        new = ChannelMixer(n, bands, conv)
    elif adapter == "first_layer":
        new = widen_conv(conv, bands)
    elif adapter == "spectral":
        from geofm_lib.models.spectral import SpectralFirst, SpectralStem

        stem = SpectralStem(bands)
        new = SpectralFirst(stem, widen_conv(conv, [f"stem{i}" for i in
                                                    range(stem.out_channels)]))
    else:
        new = WavelengthConv(conv, bands)
    visual.conv1 = new.to(device)
    visual.input_bands = list(bands)


def widen_conv(conv, bands: list[str]):
    """``conv`` with ``len(bands)`` input channels: RGB-matched bands copy the R/G/B kernels,
    the others get the mean RGB kernel x 3/N."""
    n = len(bands)
    new = torch.nn.Conv2d(n, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          bias=conv.bias is not None)
    with torch.no_grad():
        w = conv.weight
        mean = w.mean(dim=1, keepdim=True) * (3.0 / n)
        new.weight.copy_(mean.expand(-1, n, -1, -1))
        for i, c in _rgb_slots(bands):
            new.weight[:, i] = w[:, c]
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class ChannelMixer(torch.nn.Module):
    """A learned 1x1 convolution N bands -> 3, then the tower's own RGB ``conv1``."""

    def __init__(self, n: int, bands: list[str], rgb_conv):
        super().__init__()
        self.mix = torch.nn.Conv2d(n, 3, kernel_size=1, bias=True)
        with torch.no_grad():
            self.mix.bias.zero_()
            slots = _rgb_slots(bands)
            if slots:  # true colour passes straight through at initialisation
                for i, _ in slots:
                    self.mix.weight[:, i] = 0.0
                for i, c in slots:
                    self.mix.weight[c, i] = 1.0
        self.rgb = rgb_conv

    def forward(self, x):
        _check_channels(x, self.mix.in_channels)
        return self.rgb(self.mix(x))

    @property
    def weight(self) -> torch.Tensor:
        """The RGB convolution's weight (lightly's masked ViT initialises
        ``patch_embed.proj.weight``; without this, MAE with ``conv1x1`` failed to build)."""
        return self.rgb.weight


def stem_conv1x1(conv, bands: list[str]) -> ChannelMixer:
    """Seed 003's stem: a learned 1x1 convolution N -> 3, then a 3-channel first convolution of
    the same shape as ``conv`` (used by the SSL encoders and the segmentation models that take
    their weights)."""
    rgb = torch.nn.Conv2d(3, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          bias=conv.bias is not None)
    return ChannelMixer(len(bands), bands, rgb)


class WavelengthConv(torch.nn.Module):
    """``conv1`` whose per-band kernels are generated from the bands' wavelengths."""

    n_freq = 8  # log10-wavelength frequencies: 665 vs 705 nm differ by ~1 rad at the top

    def __init__(self, rgb_conv, bands: list[str], hidden: int = 64):
        super().__init__()
        self.out_channels = rgb_conv.out_channels
        self.kernel_size = rgb_conv.kernel_size
        self.stride, self.padding = rgb_conv.stride, rgb_conv.padding
        k = self.kernel_size[0] * self.kernel_size[1]
        # the shared part of every band's kernel starts as the mean RGB kernel
        self.base = torch.nn.Parameter(rgb_conv.weight.detach().mean(dim=1, keepdim=True)
                                       .clone())
        n_in = 2 * self.n_freq + len(POLARISATIONS) + 1
        self.generator = torch.nn.Sequential(
            torch.nn.Linear(n_in, hidden), torch.nn.GELU(),
            torch.nn.Linear(hidden, self.out_channels * k))
        with torch.no_grad():  # band-specific parts start small next to the base kernel
            self.generator[-1].weight.mul_(0.1 * float(self.base.std()) /
                                           max(float(self.generator[-1].weight.std()), 1e-8))
            self.generator[-1].bias.zero_()
        self.register_buffer("band_code", torch.zeros(0, n_in), persistent=False)
        self.set_bands(bands)

    def set_bands(self, bands: list[str]) -> None:
        """Take another band layout (e.g. a sensor not seen in training)."""
        codes = [self.encode(b) for b in bands]
        device = self.base.device
        self.band_code = torch.tensor(np.array(codes), dtype=torch.float32, device=device)
        self.bands = list(bands)

    @classmethod
    def encode(cls, band: str) -> np.ndarray:
        """Sinusoidal code of log10(wavelength) plus a one-hot polarisation."""
        lam = math.log10(band_wavelength_nm(band))  # 2.6 (blue) ... 7.7 (C-band SAR)
        freqs = np.pi * 2.0 ** np.arange(cls.n_freq) / 8.0
        pol = np.zeros(len(POLARISATIONS) + 1)
        pol[POLARISATIONS.get(band, 0)] = 1.0
        return np.concatenate([np.sin(lam * freqs), np.cos(lam * freqs), pol])

    def weight(self):
        n = self.band_code.shape[0]
        delta = self.generator(self.band_code)  # (n, out * k)
        delta = delta.view(n, self.out_channels, *self.kernel_size).transpose(0, 1)
        return (self.base + delta) * (3.0 / n)

    def forward(self, x):
        _check_channels(x, self.band_code.shape[0])
        w = self.weight().to(x.dtype)
        return F.conv2d(x, w, None, self.stride, self.padding)


def _check_channels(x, expected: int) -> None:
    if x.shape[1] != expected:
        raise AdapterError(f"the image tower takes {expected} bands, this batch has "
                           f"{x.shape[1]}; build the input with the model's band layout "
                           f"(models.inputs.input_spec) or retrain with these bands")
