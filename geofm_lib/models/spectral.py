"""A spectral stem for hyperspectral input (seed 001's spectral ResNet / ViT): 1-D convolutions
over each pixel's spectrum in front of a spatial backbone.

Seed 001 puts a small stack of 1-D convolutions over the band axis before a ResNet-50 or a ViT,
so that the spatial network sees a few dozen learned spectral features instead of 202 raw
bands, and calls it the *spectral adapter*: in its third protocol only this part (about 56 K
parameters) and the head are fine-tuned. This module builds one from the bands' names:

1. **Onto a fixed wavelength grid.** Each band is known by its centre wavelength (``bands``;
   a band without one is refused, as are SAR polarisations), and the spectrum is resampled onto
   400-2500 nm in 10 nm steps: linear interpolation between the two bands around a grid point
   where they are at most ``max_gap_nm`` apart, the nearest band where one lies within half a
   step, and nothing elsewhere. A second channel marks which grid points hold a value, so the
   water-vapour gaps of EnMAP (bands left out of the input) or the sparse bands of a
   multispectral sensor are gaps the convolutions can see, never invented reflectance. The
   1-D convolutions therefore always see the same wavelengths at the same positions, whatever
   the sensor: the stem built for EnMAP takes HySpecNet-11k's or another sensor's bands
   (``set_bands``), as the wavelength adapter of the image towers does.
2. **1-D convolutions over the grid**, per pixel: three strided convolutions with ReLU
   (kernel 4 stride 4, then kernel 2 stride 2 twice: 40, 80 and 160 nm between outputs),
   average-pooled to ``positions`` points and mixed by a linear layer into ``out_channels``
   features per pixel. No normalisation layer: the input is standardised per band, and the
   backbone's first BatchNorm follows. (A LayerNorm here made random-init features of
   different scenes nearly identical; fine-tuning's BatchNorm statistics are re-estimated
   after each fit instead, ``evaluation.finetune.precise_batchnorm``.)
3. The spatial backbone's first layer then takes those ``out_channels`` maps (``attach``).

Cost: the convolutions run once per pixel, so a 64 x 64 image is 4,096 spectra; at the default
width (16) that is about 50 K multiply-adds a pixel, comparable with a ResNet-18's first
layer on 32 channels. ``geofm bench-hyperspectral`` times the step with it.
"""

from __future__ import annotations

import numpy as np
import torch

from geofm_lib.bands import POLARISATIONS, wavelength_nm
from geofm_lib.errors import AdapterError

GRID_NM = np.arange(400.0, 2500.0 + 1e-6, 10.0)  # 211 points
MAX_GAP_NM = 30.0  # interpolate between bands at most this far apart (EnMAP: 6.5-12 nm)
# (kernel, stride) of the three 1-D convolutions over the grid: 40, 80 and 160 nm between
# outputs. Windows that do not overlap make each a reshape and one matrix product.
KERNELS = ((4, 4), (2, 2), (2, 2))


def resampling(bands: list[str], grid_nm: np.ndarray = GRID_NM,
               max_gap_nm: float = MAX_GAP_NM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left band index, right band index, right weight) per grid point, and whether the point
    holds a value: the linear interpolation of the module docstring. Bands may come in any
    order; their wavelengths decide."""
    if not bands:
        raise AdapterError("the spectral stem needs at least one band")
    sar = [b for b in bands if b in POLARISATIONS]
    if sar:
        raise AdapterError(f"the spectral stem resamples optical spectra; {', '.join(sar)} "
                           f"are SAR polarisations. Use ssl_adapter=conv1x1 or first_layer "
                           f"for SAR or S1/S2 input")
    nm = []
    for b in bands:
        w = wavelength_nm(b)
        if w is None:
            raise AdapterError(f"band {b!r} has no known centre wavelength, so the spectral "
                               f"stem cannot place it; name bands by wavelength (e.g. "
                               f"'463nm'), give options.band_wavelengths_nm, or use "
                               f"ssl_adapter=conv1x1")
        nm.append(float(w))
    nm_arr = np.asarray(nm)
    order = np.argsort(nm_arr, kind="stable")
    lam = nm_arr[order]
    step = float(np.median(np.diff(grid_nm))) if len(grid_nm) > 1 else 10.0
    left = np.zeros(len(grid_nm), np.int64)
    right = np.zeros(len(grid_nm), np.int64)
    weight = np.zeros(len(grid_nm), np.float32)
    valid = np.zeros(len(grid_nm), bool)
    for g, x in enumerate(grid_nm):
        r = int(np.searchsorted(lam, x))  # first band at or beyond x
        near = int(np.argmin(np.abs(lam - x)))
        if 0 < r < len(lam) and lam[r] - lam[r - 1] <= max_gap_nm:
            t = (x - lam[r - 1]) / max(lam[r] - lam[r - 1], 1e-9)
            left[g], right[g], weight[g], valid[g] = order[r - 1], order[r], t, True
        elif r < len(lam) and lam[r] == x:
            left[g] = right[g] = order[r]
            valid[g] = True
        elif abs(lam[near] - x) <= step / 2:
            left[g] = right[g] = order[near]
            valid[g] = True
    if not valid.any():
        raise AdapterError(f"none of the bands ({lam.min():.0f}-{lam.max():.0f} nm) falls on "
                           f"the spectral stem's {grid_nm[0]:.0f}-{grid_nm[-1]:.0f} nm grid")
    return left, right, weight, valid


class SpectralStem(torch.nn.Module):
    """Per-pixel spectra (B, C, H, W) -> (B, out_channels, H, W) learned spectral features (the
    module docstring)."""

    def __init__(self, bands: list[str], out_channels: int = 32, width: int = 16,
                 positions: int = 4):
        super().__init__()
        self.out_channels, self.width, self.positions = out_channels, width, positions
        g = len(GRID_NM)
        # (kernel, stride) of the three 1-D convolutions; each is a Linear on the unfolded
        # windows, which is the same convolution (no padding) and several times faster on a CPU
        # than Conv1d over B·H·W short sequences (its backward dominated the step)
        self.kernels = KERNELS
        self.convs = torch.nn.ModuleList([torch.nn.Linear(2 * k, c) for (k, _), c in zip(
            KERNELS, (width, width, width), strict=True)])
        self.convs[1] = torch.nn.Linear(KERNELS[1][0] * width, width)
        self.convs[2] = torch.nn.Linear(KERNELS[2][0] * width, width)
        self.mix = torch.nn.Linear(width * positions, out_channels)
        # He initialisation, zero biases: PyTorch's default (variance 1/(3 fan-in)) shrank the
        # spectrum's signal about six-fold per layer under the biases, so at random init
        # every scene gave nearly the same features (embedding std 0.0017 against 0.016 for
        # first_layer on the same scenes; the collapse check's floor is 0.0044)
        with torch.no_grad():
            for lin in (*self.convs, self.mix):
                torch.nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
                lin.bias.zero_()
        self.register_buffer("left", torch.zeros(g, dtype=torch.long), persistent=False)
        self.register_buffer("right", torch.zeros(g, dtype=torch.long), persistent=False)
        self.register_buffer("weight", torch.zeros(g), persistent=False)
        self.register_buffer("valid", torch.zeros(g), persistent=False)
        self.set_bands(bands)
        k0, s0 = KERNELS[0]
        length = self.grid_padded = g + (-(g - k0)) % s0
        for k, st in self.kernels:
            length = (length - k) // st + 1
        if length < positions:
            raise AdapterError(f"the spectral grid leaves {length} points for {positions} "
                               f"positions")
        self.length = length

    def set_bands(self, bands: list[str]) -> None:
        """Take another band set (another sensor, or bands left out): only the resampling onto
        the grid changes; the learned convolutions stay."""
        left, right, weight, valid = resampling(list(bands))
        device = self.mix.weight.device
        self.left = torch.from_numpy(left).to(device)
        self.right = torch.from_numpy(right).to(device)
        self.weight = torch.from_numpy(weight).to(device)
        self.valid = torch.from_numpy(valid.astype(np.float32)).to(device)
        self.bands = list(bands)

    def on_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B·H·W, grid, 2): the resampled spectra and the validity channel."""
        if x.shape[1] != len(self.bands):
            raise AdapterError(f"the spectral stem takes {len(self.bands)} bands, this batch "
                               f"has {x.shape[1]}; build the input with the model's band "
                               f"layout or call set_bands")
        b, c, h, w = x.shape
        px = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
        wt, valid = self.weight.to(px.dtype), self.valid.to(px.dtype)
        spec = (px[:, self.left] * (1 - wt) + px[:, self.right] * wt) * valid
        return torch.stack([spec, valid.expand_as(spec)], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        z = self.on_grid(x)  # (N, G, 2)
        z = torch.nn.functional.pad(z, (0, 0, 0, self.grid_padded - z.shape[1]))
        for (k, st), lin in zip(self.kernels, self.convs, strict=True):
            if k == st:  # windows that do not overlap: a reshape, no copy
                n, length, c = z.shape
                win = z[:, :length // k * k].reshape(n, length // k, k * c)
            else:
                win = z.unfold(1, k, st).flatten(2)  # (N, L', C·k)
            z = torch.relu(lin(win))  # (N, L', width)
        n, length, width = z.shape
        keep = length // self.positions * self.positions  # average-pool to ``positions``
        z = z[:, :keep].reshape(n, self.positions, -1, width).mean(2).flatten(1)
        z = self.mix(z)
        return z.view(b, h, w, self.out_channels).permute(0, 3, 1, 2).contiguous()


class SpectralFirst(torch.nn.Sequential):
    """The spectral stem, then the backbone's own first layer on its feature maps."""

    def __init__(self, stem: SpectralStem, first: torch.nn.Module):
        super().__init__(stem, first)

    @property
    def stem(self) -> SpectralStem:
        return self[0]

    @property
    def weight(self) -> torch.Tensor:
        """The first layer's weight (lightly's masked ViT initialises ``patch_embed.proj``'s)."""
        return self[1].weight


def spectral_first(conv: torch.nn.Conv2d, bands: list[str], out_channels: int = 32):
    """A spectral stem for ``bands`` and a first convolution shaped like ``conv`` that takes
    the stem's ``out_channels`` maps (random init)."""
    stem = SpectralStem(bands, out_channels)
    first = torch.nn.Conv2d(out_channels, conv.out_channels, conv.kernel_size, conv.stride,
                            conv.padding, bias=conv.bias is not None)
    return SpectralFirst(stem, first)


def find_stem(net: torch.nn.Module) -> SpectralStem | None:
    """The spectral stem inside ``net`` (None when it has none)."""
    for m in net.modules():
        if isinstance(m, SpectralStem):
            return m
    return None


def parameter_count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
