"""Band-aware display of images (used by figures, maps and the example corpus).

  * Sentinel-2: false colour NIR/red/green (B08, B04, B03) with a fixed stretch (reflectance
    0-0.5 NIR, 0-0.3 red and green, gamma 1.4), so vegetation is red, water dark, and images
    compare with each other.
  * Sentinel-1: VV backscatter in dB shown in grey between -25 dB and 0 dB.
  * Hyperspectral products (20 or more bands with wavelengths, e.g. EnMAP): the same false
    colour and stretch from the bands nearest 842, 665 and 560 nm.
  * 8-bit RGB and panchromatic products: shown as stored; other products: the bands nearest
    red, green and blue (by name or wavelength), stretched between the 2nd and 98th
    percentile, of the image alone or (``ranges``, :func:`display_ranges`) of all images of a
    dataset shown together, so that one scene's patches keep one colour scale.
"""

from __future__ import annotations

import numpy as np

from geofm_lib.bands import colour_bands, wavelength_nm

S2_DISPLAY_MAX = np.array([5000.0, 3000.0, 3000.0], dtype=np.float32)  # B08, B04, B03 (x 10000)
FALSE_COLOUR_NM = (842.0, 665.0, 560.0)  # Sentinel-2's B08, B04, B03


def _false_colour_bands(bands: list[str]) -> list[int] | None:
    """The bands nearest 842/665/560 nm (each within 15 nm) of a product with 20 or more bands
    with wavelengths (a hyperspectral one), else None."""
    nm = [wavelength_nm(b) for b in bands]
    known = [(i, w) for i, w in enumerate(nm) if w is not None and w < 3000]
    if len(known) < 20:
        return None
    pick = [min(known, key=lambda iw, t=t: abs(iw[1] - t)) for t in FALSE_COLOUR_NM]
    if any(abs(w - t) > 15 for (_, w), t in zip(pick, FALSE_COLOUR_NM, strict=True)):
        return None
    return [i for i, _ in pick]


def _shown_bands(bands: list[str]) -> list[int]:
    idx = colour_bands(list(bands))
    return idx if idx is not None else [0, 0, 0]


def display_ranges(images: list[np.ndarray], bands: list[str]) -> list[tuple[float, float]] | None:
    """The stretch of products with more than 8 bits that :func:`display_rgb` would compute per
    image, pooled over ``images`` (a dataset's patches shown together): per shown band, the
    2nd and 98th percentile of its valid values (zeros, the usual fill value, and NaN left
    out). None where the images need no stretch."""
    if not images:
        return None
    idx = _shown_bands(bands)
    stack = np.stack([np.asarray(im)[idx] for im in images]).astype(np.float32)
    if not (stack.size and np.nanmax(stack) > 255):
        return None
    out = []
    for b in range(3):
        valid = stack[:, b][np.isfinite(stack[:, b]) & (stack[:, b] > 0)]
        out.append(tuple(float(v) for v in np.percentile(valid, [2, 98])) if valid.size
                   else (0.0, 1.0))
    return out


def display_rgb(image: np.ndarray, bands: list[str],
                ranges: list[tuple[float, float]] | None = None) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] for showing a (C, H, W) product.

    ``bands`` are canonical names (``geofm_lib.bands``): the colours are found by name or by
    wavelength, never by band order; a product with no red, green and blue is shown as its
    first band in grey (not in colours it does not have). ``ranges``: the stretch of a
    product with more than 8 bits (:func:`display_ranges`), else the image's own.
    """
    if "B08" in bands and "B04" in bands and "B03" in bands:
        # Sentinel-2 false colour, fixed reflectance stretch
        idx = [bands.index(b) for b in ("B08", "B04", "B03")]
        rgb = image[idx].astype(np.float32) / S2_DISPLAY_MAX[:, None, None]
        return np.moveaxis(np.clip(rgb, 0, 1) ** (1 / 1.4), 0, -1)
    spectral = _false_colour_bands(list(bands))
    if spectral is not None:  # the same false colour from the nearest bands
        rgb = image[spectral].astype(np.float32) / S2_DISPLAY_MAX[:, None, None]
        return np.moveaxis(np.clip(rgb, 0, 1) ** (1 / 1.4), 0, -1)
    if "VV" in bands:
        vv = np.clip((image[bands.index("VV")] + 25) / 25, 0, 1)
        return np.repeat(vv[..., None], 3, axis=-1)
    idx = colour_bands(list(bands))
    rgb = image[idx] if idx is not None else np.repeat(image[:1], 3, axis=0)
    if ranges is not None or (rgb.dtype.kind in "iuf" and rgb.size and
                              float(np.nanmax(rgb)) > 255):
        # products with more than 8 bits: each band stretched between its 2nd and 98th
        # percentile (ignoring zeros, the usual fill value, and NaN)
        ranges = ranges or display_ranges([image], bands)
        rgb = rgb.astype(np.float32)
        out = np.zeros_like(rgb)
        for b, (lo, hi) in enumerate(ranges):
            out[b] = np.clip((rgb[b] - lo) / max(hi - lo, 1e-6), 0, 1)
        return np.moveaxis(np.nan_to_num(out), 0, -1)
    img = rgb.astype(np.float32)
    if np.nanmax(img) > 1.5:
        img = img / 255.0
    return np.moveaxis(np.nan_to_num(np.clip(img, 0, 1)), 0, -1)
