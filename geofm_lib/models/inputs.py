"""Model input from shard images.

With ``band_adapter='rgb'`` (the default) the stock image towers take 3 channels, so every
product is mapped to 3 channels here (``to_model_input``), then standardised with the
per-dataset band statistics of the training split (from the shard manifest):

* Sentinel-2 (12/13 bands, reflectance x 10000): B04, B03, B02 (true colour), as seed 000 used
  three Sentinel-2 channels;
* Sentinel-1 (VV, VH in dB): VV, VH and VV - VH (the cross-polarisation ratio in dB);
* RGB cameras: R, G, B; panchromatic: the grey band three times.

With a band adapter (``conv1x1``, ``first_layer``, ``wavelength``; ``models/adapters.py``)
the tower takes every band: the input is the ordered union of the run's bands, each sample
filling its own bands' channels (``BandSlots``), standardised per band the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from geofm_lib.models.adapters import band_wavelength_nm, check_adapter, model_bands

# --- input mapping ------------------------------------------------------------------------------

def input_bands(bands: list[str]) -> tuple[list[int], str]:
    """Indices of the 3 model channels in a product's band list, and the rule used."""
    if "B04" in bands and "B03" in bands and "B02" in bands:
        return [bands.index(b) for b in ("B04", "B03", "B02")], "sentinel2_true_colour"
    if bands[:2] == ["VV", "VH"] or ("VV" in bands and "VH" in bands):
        return [bands.index("VV"), bands.index("VH")], "sar_vv_vh_ratio"
    lower = [b.lower() for b in bands]
    if {"red", "green", "blue"} <= set(lower):  # named colour bands in any order
        return [lower.index(c) for c in ("red", "green", "blue")], "rgb"
    if len(bands) >= 3:
        return [0, 1, 2], "rgb"
    if len(bands) == 1:
        return [0, 0, 0], "grey"
    raise ValueError(f"cannot map bands {bands} to 3 model channels: need Sentinel-2 B02-B04, "
                     f"Sentinel-1 VV+VH, 3 colour bands or 1 grey band")


def channel_stats(band_stats: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-dataset mean and std of the 3 model channels, from the manifest's band statistics."""
    out = {}
    for ds, st in band_stats.items():
        bands, mean, std = st["bands"], np.asarray(st["mean"]), np.asarray(st["std"])
        idx, rule = input_bands(bands)
        if rule == "sar_vv_vh_ratio":
            m = np.array([mean[idx[0]], mean[idx[1]], mean[idx[0]] - mean[idx[1]]])
            # the VV-VH spread is not in the manifest; the two bands' spreads bound it
            s = np.array([std[idx[0]], std[idx[1]], np.hypot(std[idx[0]], std[idx[1]])])
        else:
            m, s = mean[idx], std[idx]
        out[ds] = (m.astype(np.float32), np.maximum(s, 1e-6).astype(np.float32))
    return out


@dataclass(frozen=True)
class BandSlots:
    """Where one dataset's bands go in a multi-band model input, with their statistics."""

    source: tuple[int, ...]  # band indices in the product
    slots: tuple[int, ...]   # channel positions in the model input
    channels: int            # model input channels
    mean: np.ndarray         # of the source bands (training split)
    std: np.ndarray

    def to_state(self) -> dict:
        return {"source": list(self.source), "slots": list(self.slots),
                "channels": self.channels, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def place(cls, band_stat: dict, model_bands: list[str], raw: bool = False) -> BandSlots:
        """A dataset's manifest band statistics placed by name into a model's band layout.
        Bands outside the layout are left out; layout bands the data lacks stay 0. ``raw``:
        values pass unscaled (for encoders that normalise their input themselves)."""
        src = band_stat["bands"]
        keep = [i for i, b in enumerate(src) if b in model_bands]
        mean = np.asarray(band_stat["mean"], np.float32)[keep]
        std = np.maximum(np.asarray(band_stat["std"], np.float32)[keep], 1e-6)
        if raw:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        return cls(tuple(keep), tuple(model_bands.index(src[i]) for i in keep),
                   len(model_bands), mean, std)

    @classmethod
    def from_state(cls, d: dict) -> BandSlots:
        return cls(tuple(d["source"]), tuple(d["slots"]), int(d["channels"]),
                   np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def input_spec(band_stats: dict, band_adapter: str = "rgb"
               ) -> tuple[dict, list[str] | None]:
    """How each dataset becomes model input: (per-dataset stats, model bands).

    With ``rgb`` the stats are ``channel_stats`` (3 channels) and there are no model bands;
    with a band adapter they are ``BandSlots`` into the union of the datasets' bands.
    """
    check_adapter(band_adapter)
    if band_adapter == "rgb":
        return channel_stats(band_stats), None
    bands = model_bands([st["bands"] for st in band_stats.values()])
    if band_adapter == "wavelength":
        for b in bands:
            band_wavelength_nm(b)  # every band needs a wavelength: fail now, not mid-training
    return {ds: BandSlots.place(st, bands) for ds, st in band_stats.items()}, bands


def stats_to_state(stats: dict) -> dict:
    """Per-dataset input statistics as plain lists/dicts (for checkpoints)."""
    return {ds: (v.to_state() if isinstance(v, BandSlots) else [v[0].tolist(), v[1].tolist()])
            for ds, v in stats.items()}


def stats_from_state(state: dict) -> dict:
    """Inverse of ``stats_to_state``."""
    return {ds: (BandSlots.from_state(v) if isinstance(v, dict) else
                 (np.asarray(v[0], np.float32), np.asarray(v[1], np.float32)))
            for ds, v in state.items()}


def to_model_input(img: np.ndarray, bands: list[str],
                   stats: tuple[np.ndarray, np.ndarray] | BandSlots) -> np.ndarray:
    """Model input from a (C, H, W) product, standardised per band: (3, H, W) float32 for the
    RGB towers, (model bands, H, W) with this product's bands filled for band adapters."""
    if isinstance(stats, BandSlots):
        if len(bands) != len(stats.source):
            raise ValueError(f"product has {len(bands)} bands {bands}, the model's layout for "
                             f"its dataset expects {len(stats.source)}")
        x = np.zeros((stats.channels, *img.shape[1:]), np.float32)
        sel = img[list(stats.source)].astype(np.float32)
        x[list(stats.slots)] = (sel - stats.mean[:, None, None]) / stats.std[:, None, None]
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        return x
    idx, rule = input_bands(bands)
    if rule == "sar_vv_vh_ratio":
        vv, vh = img[idx[0]].astype(np.float32), img[idx[1]].astype(np.float32)
        x = np.stack([vv, vh, vv - vh])
    else:
        x = img[idx].astype(np.float32)
    mean, std = stats
    x = (x - mean[:, None, None]) / std[:, None, None]
    if not np.isfinite(x).all():
        # NaN/inf nodata pixels of real products (counted per dataset in the manifest's
        # band_stats as nonfinite_values) are masked with the band mean, 0 after scaling
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


# --- augmentation ------------------------------------------------------------------------

def augment(x: np.ndarray, rng: random.Random) -> np.ndarray:
    """A random one of the 8 flips/90-degree rotations of a (C, H, W) image."""
    k = rng.randrange(4)
    if k:
        x = np.rot90(x, k, axes=(1, 2))
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x)
