"""Band-aware display of images (used by figures, maps and the example corpus).

  * Sentinel-2: false colour NIR/red/green (B08, B04, B03) with a fixed stretch (reflectance
    0-0.5 NIR, 0-0.3 red and green, gamma 1.4), so vegetation is red, water dark, and images
    compare with each other.
  * Sentinel-1: VV backscatter in dB shown in grey between -25 dB and 0 dB.
  * 8-bit RGB and panchromatic products: shown as stored.
"""

from __future__ import annotations

import numpy as np

S2_DISPLAY_MAX = np.array([5000.0, 3000.0, 3000.0], dtype=np.float32)  # B08, B04, B03 (x 10000)


def display_rgb(image: np.ndarray, bands: list[str]) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] for showing a (C, H, W) product."""
    if "B08" in bands:  # Sentinel-2 false colour, fixed reflectance stretch
        idx = [bands.index(b) for b in ("B08", "B04", "B03")]
        rgb = image[idx].astype(np.float32) / S2_DISPLAY_MAX[:, None, None]
        return np.moveaxis(np.clip(rgb, 0, 1) ** (1 / 1.4), 0, -1)
    if "VV" in bands:
        vv = np.clip((image[bands.index("VV")] + 25) / 25, 0, 1)
        return np.repeat(vv[..., None], 3, axis=-1)
    lower = [b.lower() for b in bands]
    if {"red", "green", "blue"} <= set(lower):  # e.g. a Landsat scene: named bands, any order
        image = image[[lower.index(c) for c in ("red", "green", "blue")]]
    if image.dtype.kind in "iuf" and image.size and float(np.nanmax(image)) > 255:
        # other products with more than 8 bits: each band stretched between its 2nd and
        # 98th percentile (ignoring zeros, the usual fill value)
        rgb = image[:3].astype(np.float32) if image.shape[0] >= 3 else \
            np.repeat(image[:1].astype(np.float32), 3, axis=0)
        out = np.zeros_like(rgb)
        for b in range(3):
            valid = rgb[b][rgb[b] > 0]
            if valid.size:
                lo, hi = np.percentile(valid, [2, 98])
                out[b] = np.clip((rgb[b] - lo) / max(hi - lo, 1e-6), 0, 1)
        return np.moveaxis(out, 0, -1)
    img = image.astype(np.float32)
    if img.max() > 1.5:
        img = img / 255.0
    if img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    return np.moveaxis(img[:3], 0, -1)
