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

from geofm_lib.bands import colour_bands, describe, wavelength_nm
from geofm_lib.errors import DataError
from geofm_lib.models.adapters import band_wavelength_nm, check_adapter, model_bands
from geofm_lib.progress import get_logger

log = get_logger()

# --- input mapping ------------------------------------------------------------------------------

def input_bands(bands: list[str], unusable=()) -> tuple[list[int], str]:
    """Indices of the 3 model channels in a product's band list, and the rule used.

    The bands are canonical names (``geofm_lib.bands``): Sentinel-2 B04/B03/B02, else
    Sentinel-1 VV+VH, else camera R/G/B, else the bands nearest red, green and blue by centre
    wavelength (a hyperspectral product), else a single band as grey. ``unusable`` bands
    (entirely nodata) are never picked. There is no fallback to "the first three bands".

    Raises:
        DataError: no red, green and blue can be found; the message lists the bands and the
            band adapters that take them.
    """
    idx = colour_bands(bands, unusable)
    if idx is not None and bands[idx[0]] == "B04":
        return idx, "sentinel2_true_colour"
    if "VV" in bands and "VH" in bands and not {"VV", "VH"} & set(unusable):
        return [bands.index("VV"), bands.index("VH")], "sar_vv_vh_ratio"
    if idx is not None:
        return idx, "rgb" if bands[idx[0]] == "R" else "rgb_by_wavelength"
    if len(bands) == 1 and bands[0] not in set(unusable):
        return [0, 0, 0], "grey"
    lacking = [b for b in bands if wavelength_nm(b) is None]
    hint = ("band_adapter: wavelength (every band has a wavelength), first_layer or conv1x1"
            if not lacking else "band_adapter: first_layer or conv1x1 (any bands)")
    dropped = f"; entirely nodata: {', '.join(unusable)}" if unusable else ""
    raise DataError(f"no red, green and blue among the bands {describe(bands)}{dropped}, by "
                    f"name (B04/B03/B02, R/G/B) or by wavelength, so the 3-channel RGB image "
                    f"tower cannot take them. Name or give wavelengths for the bands "
                    f"(options.band_names / options.band_wavelengths_nm / options.sensor), "
                    f"or use {hint}")


@dataclass(frozen=True)
class RGBInput:
    """How one dataset's products become the 3 channels of an RGB tower: the bands picked
    (``input_bands``, decided once per dataset from its manifest) and their statistics."""

    idx: tuple[int, ...] | None  # None: decided per sample (checkpoints written before 2026-12)
    rule: str | None
    mean: np.ndarray  # of the 3 model channels (training split)
    std: np.ndarray
    nodata: tuple = ()  # nodata value of each picked band (None: none), masked to its mean

    def __iter__(self):  # unpacks as (mean, std), as the statistics of older checkpoints
        return iter((self.mean, self.std))

    def to_state(self) -> dict:
        return {"kind": "rgb", "idx": list(self.idx), "rule": self.rule,
                "mean": self.mean.tolist(), "std": self.std.tolist(),
                "nodata": list(self.nodata)}

    @classmethod
    def from_state(cls, d) -> RGBInput:
        if isinstance(d, dict):
            return cls(tuple(d["idx"]), d["rule"], np.asarray(d["mean"], np.float32),
                       np.asarray(d["std"], np.float32), tuple(d.get("nodata", ())))
        return cls(None, None, np.asarray(d[0], np.float32), np.asarray(d[1], np.float32))


def channel_stats(band_stats: dict) -> dict[str, RGBInput]:
    """Per-dataset RGB input mapping and the mean and std of the 3 model channels, from the
    manifest's band statistics (bands entirely nodata in training are never picked)."""
    out = {}
    for ds, st in band_stats.items():
        bands, mean, std = st["bands"], np.asarray(st["mean"]), np.asarray(st["std"])
        try:
            idx, rule = input_bands(bands, st.get("all_nodata", ()))
        except DataError as exc:
            raise DataError(f"{ds}: {exc}") from None
        if rule == "sar_vv_vh_ratio":
            m = np.array([mean[idx[0]], mean[idx[1]], mean[idx[0]] - mean[idx[1]]])
            # the VV-VH spread is not in the manifest; the two bands' spreads bound it
            s = np.array([std[idx[0]], std[idx[1]], np.hypot(std[idx[0]], std[idx[1]])])
        else:
            m, s = mean[idx], std[idx]
        nodata = st.get("nodata") or [None] * len(bands)
        out[ds] = RGBInput(tuple(idx), rule, m.astype(np.float32),
                           np.maximum(s, 1e-6).astype(np.float32),
                           tuple(nodata[i] for i in idx[:2 if rule == "sar_vv_vh_ratio" else 3]))
    return out


@dataclass(frozen=True)
class BandSlots:
    """Where one dataset's bands go in a multi-band model input, with their statistics."""

    source: tuple[int, ...]  # band indices in the product
    slots: tuple[int, ...]   # channel positions in the model input
    channels: int            # model input channels
    mean: np.ndarray         # of the source bands (training split)
    std: np.ndarray
    nodata: tuple = ()       # nodata value of each source band (None: none), masked to its mean
    product_bands: int | None = None  # bands of the dataset's products

    def to_state(self) -> dict:
        return {"source": list(self.source), "slots": list(self.slots),
                "channels": self.channels, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "nodata": list(self.nodata), "product_bands": self.product_bands}

    @classmethod
    def place(cls, band_stat: dict, model_bands: list[str], raw: bool = False) -> BandSlots:
        """A dataset's manifest band statistics placed by name into a model's band layout.
        Bands outside the layout, and bands entirely nodata in this dataset's training split,
        are left out; layout bands the data lacks stay 0. ``raw``: values pass unscaled (for
        encoders that normalise their input themselves)."""
        src = band_stat["bands"]
        empty = set(band_stat.get("all_nodata", ()))
        keep = [i for i, b in enumerate(src) if b in model_bands and b not in empty]
        mean = np.asarray(band_stat["mean"], np.float32)[keep]
        std = np.maximum(np.asarray(band_stat["std"], np.float32)[keep], 1e-6)
        nodata = band_stat.get("nodata") or [None] * len(src)
        if raw:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        return cls(tuple(keep), tuple(model_bands.index(src[i]) for i in keep),
                   len(model_bands), mean, std, tuple(nodata[i] for i in keep), len(src))

    @classmethod
    def from_state(cls, d: dict) -> BandSlots:
        return cls(tuple(d["source"]), tuple(d["slots"]), int(d["channels"]),
                   np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32),
                   tuple(d.get("nodata", ())), d.get("product_bands"))


def input_spec(band_stats: dict, band_adapter: str = "rgb"
               ) -> tuple[dict, list[str] | None]:
    """How each dataset becomes model input: (per-dataset stats, model bands).

    With ``rgb`` the stats are ``channel_stats`` (3 channels) and there are no model bands;
    with a band adapter they are ``BandSlots`` into the union of the datasets' bands.
    """
    check_adapter(band_adapter)
    if band_adapter == "rgb":
        return channel_stats(band_stats), None
    bands = model_bands([[b for b in st["bands"] if b not in set(st.get("all_nodata", ()))]
                         for st in band_stats.values()])
    for ds, st in band_stats.items():
        if st.get("all_nodata"):  # docs/bands.md: dropped with a printed line, not an error
            log.warning("%s: %d band(s) entirely nodata in the training split are left out "
                        "of the model input: %s", ds, len(st["all_nodata"]),
                        describe(list(st["all_nodata"])))
    if not bands:
        raise DataError("every band of the run's datasets is entirely nodata in the training "
                        "split; check the files' nodata value (the manifest's band_stats)")
    if band_adapter in ("wavelength", "spectral"):
        for b in bands:
            band_wavelength_nm(b)  # every band needs a wavelength: fail now, not mid-training
    if band_adapter == "spectral":
        from geofm_lib.models.spectral import resampling

        resampling(bands)  # optical bands only (SAR is refused here, with the reason)
    return {ds: BandSlots.place(st, bands) for ds, st in band_stats.items()}, bands


def stats_to_state(stats: dict) -> dict:
    """Per-dataset input statistics as plain lists/dicts (for checkpoints)."""
    return {ds: v.to_state() for ds, v in stats.items()}


def stats_from_state(state: dict) -> dict:
    """Inverse of ``stats_to_state``."""
    return {ds: (BandSlots.from_state(v) if isinstance(v, dict) and v.get("kind") != "rgb"
                 else RGBInput.from_state(v)) for ds, v in state.items()}


def to_model_input(img: np.ndarray, bands: list[str],
                   stats: RGBInput | BandSlots) -> np.ndarray:
    """Model input from a (C, H, W) product, standardised per band: (3, H, W) float32 for the
    RGB towers, (model bands, H, W) with this product's bands filled for band adapters."""
    if isinstance(stats, BandSlots):
        expected = stats.product_bands or len(stats.source)
        if len(bands) != expected:
            raise DataError(f"product has {len(bands)} bands {describe(bands)}, the model's "
                            f"layout for its dataset expects {expected}")
        return _standardise_slots(img, stats)
    if not isinstance(stats, RGBInput):
        stats = RGBInput(None, None, *stats)
    idx, rule = (stats.idx, stats.rule) if stats.idx is not None else input_bands(bands)
    if max(idx) >= len(bands):
        raise DataError(f"product has {len(bands)} bands {describe(bands)}; the model's RGB "
                        f"mapping for its dataset reads band {max(idx) + 1} ({rule})")
    mean, std = stats.mean, stats.std
    if rule == "sar_vv_vh_ratio":
        vv, vh = _mask_nodata(img[list(idx)].astype(np.float32), stats.nodata, mean[:2])
        x = np.stack([vv, vh, vv - vh])
    else:
        x = _mask_nodata(img[list(idx)].astype(np.float32), stats.nodata, mean)
    x = (x - mean[:, None, None]) / std[:, None, None]
    if not np.isfinite(x).all():
        # NaN/inf nodata pixels of real products (counted per dataset in the manifest's
        # band_stats as nonfinite_values) are masked with the band mean, 0 after scaling
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def _standardise_slots(img: np.ndarray, stats: BandSlots) -> np.ndarray:
    """The band-adapter input: the source bands scaled in place of one float32 copy (x * 1/std
    - mean/std), nodata pixels 0 (the band mean, standardised) found with one comparison over
    all bands in the product's own dtype, NaN/inf of float products 0, then placed in the
    model's slots (no second copy when the slots are the channels in order). A 202-band EnMAP
    patch of 128 px took 15.7 ms with a per-band loop and separate passes, 5.8 ms so."""
    sel = img[np.asarray(stats.source, dtype=np.intp)]
    scale = (1.0 / stats.std).astype(np.float32)
    out = sel.astype(np.float32)
    out *= scale[:, None, None]
    out += (-stats.mean * scale).astype(np.float32)[:, None, None]
    nodata = list(stats.nodata)
    if img.dtype.kind in "iu":  # a value the dtype cannot hold is in no pixel
        info = np.iinfo(img.dtype)
        nodata = [v if v is not None and info.min <= v <= info.max else None for v in nodata]
    has = np.array([v is not None for v in nodata], bool)
    if len(nodata) == len(sel) and has.any():
        if img.dtype.kind in "iu":
            values = np.array([v if v is not None else 0 for v in nodata]).astype(img.dtype)
        else:
            values = np.array([v if v is not None else np.nan for v in nodata], img.dtype)
        mask = sel == values[:, None, None]
        mask &= has[:, None, None]
        out[mask] = 0.0
    if img.dtype.kind == "f" and not np.isfinite(out).all():
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if tuple(stats.slots) == tuple(range(stats.channels)):
        return out
    x = np.zeros((stats.channels, *img.shape[1:]), np.float32)
    x[list(stats.slots)] = out
    return x


def _mask_nodata(x: np.ndarray, nodata, mean: np.ndarray) -> np.ndarray:
    """Nodata pixels of each band set to the band's mean (0 after standardising)."""
    for j, value in enumerate(nodata):
        if value is not None:
            x[j][x[j] == value] = mean[j]
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
