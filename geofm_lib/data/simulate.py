"""A seeded multi-sensor scene simulator for the eight datasets of the catalog.

Why a simulator: the real datasets are hundreds of GB, yet every notebook must run anywhere and
show real learning. Scenes are built in metres, then imaged by a sensor model at the dataset's
ground sample distance (GSD), so resolution effects follow from physics: a 4.5 m car covers ~90
pixels at 30 cm and 8 % of one pixel at 10 m, and its label is kept only where it is visible.

A scene is
  * a footprint (centre, bounds in lon/lat) in the dataset's real region, and a date;
  * land cover: smooth random fields (correlation length in metres) partitioned into classes,
    drawn from a landscape context so classes co-occur plausibly (forest with woodland, sea
    with beaches, ...); each class mixes two materials with a fine texture;
  * discrete objects (vehicles, vessels, buildings, swimmers, ...) with sizes in metres,
    placed only on surfaces where they belong (vessels on water, cars on paved ground).
Materials carry reflectance spectra (control points in nm, with the vegetation red edge, water
absorbing in the NIR/SWIR, the 1375 nm cirrus band near zero) and C-band backscatter (VV/VH
in dB). Sensors turn them into products with real dtypes: Sentinel-2 L2A uint16 reflectance
x 10000 with 20/60 m bands blurred to their native resolution, Sentinel-1 float32 dB with
multiplicative gamma speckle, 8-bit RGB and panchromatic cameras.

Everything is deterministic for (seed, dataset, index). BigEarthNet-S1 and -S2 of the same
index image the same scene (same footprint, date and land cover) and share a ``pair_id``.
"""

from __future__ import annotations

import datetime as _dt
import zlib
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from geofm_lib.bands import resolve_bands
from geofm_lib.catalog import (
    ENMAP_NODATA,
    ENMAP_VNIR_BANDS,
    SENSORS,
    Dataset,
    get_dataset,
    water_vapour_bands,
)
from geofm_lib.data.masks import MASK_BACKGROUND
from geofm_lib.data.recipes import _MAT_INDEX, _SCENE_FAMILY, _VEGETATED, RECIPES, _signature_table

MIN_IMAGE_PX = 8
"""Smallest image side the simulator renders (a single 60 m Sentinel-2 pixel needs 6 px)."""


MIN_VISIBLE_PX = 4.0

# materials of tree crowns (the tree-cover layer counts them)
TREE_MATERIALS = ("broadleaf", "conifer")
"""An object is labelled only if it covers at least this many pixels' worth of area."""


# --- random fields ----------------------------------------------------------------------------

@lru_cache(maxsize=256)
def _interp_matrix(out_px: int, n_coarse: int, offset: float) -> np.ndarray:
    """Bilinear interpolation weights from a coarse grid of n points onto out_px pixels."""
    pos = (np.arange(out_px) + 0.5) / out_px * (n_coarse - 2) + offset
    lo = np.clip(np.floor(pos).astype(int), 0, n_coarse - 2)
    frac = pos - lo
    m = np.zeros((out_px, n_coarse), np.float32)
    m[np.arange(out_px), lo] = 1 - frac
    m[np.arange(out_px), lo + 1] = frac
    return m


def smooth_fields(rng: np.random.Generator, k: int, out_px: int, extent_m: float,
                  corr_m: float) -> np.ndarray:
    """``k`` smooth Gaussian random fields of shape (out_px, out_px).

    The fields are white noise on a coarse lattice of spacing ``corr_m`` metres, bilinearly
    interpolated onto the pixel grid: features keep their size in metres whatever the GSD.
    """
    n = int(np.ceil(extent_m / corr_m)) + 2
    if n * n > 4 * out_px * out_px:  # finer than the pixels: plain white noise is the same
        return rng.standard_normal((k, out_px, out_px), dtype=np.float32)
    coarse = rng.standard_normal((k, n, n), dtype=np.float32)
    m = _interp_matrix(out_px, n, float(np.round(rng.random() * 0.5, 2)))
    return m @ coarse @ m.T


# --- scenes -------------------------------------------------------------------------------------

@dataclass
class SceneLayers:
    """What the sensor saw, kept for labelling patches: per-pixel class and object boxes."""

    class_map: np.ndarray  # (H, W) int16 index into ``area_names``
    area_names: tuple[str, ...]
    area_is_label: tuple[bool, ...]
    # objects: rows of (class index into ``object_names``, cy_px, cx_px, half_extent_y_px,
    # half_extent_x_px, area_px)
    objects: np.ndarray
    object_names: tuple[str, ...]
    object_is_label: tuple[bool, ...]
    # dense layers for segmentation: the share of each pixel covered by tree crowns (broadleaf
    # or conifer material, after objects are drawn over it) and by each object class
    tree_fraction: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    object_cover: np.ndarray | None = None  # (H, W, len(cover_names)) float32 in [0, 1]
    cover_names: tuple[str, ...] = ()  # the object classes placed in the scene


def _stable_code(text: str) -> int:
    return zlib.crc32(text.encode())


def scene_rng(seed: int, dataset: str, index: int, stream: str = "scene") -> np.random.Generator:
    """The random generator of one scene; paired datasets share the 'scene' stream."""
    family = _SCENE_FAMILY.get(dataset, dataset)
    key = family if stream == "scene" else f"{dataset}/{stream}"
    return np.random.default_rng([seed, _stable_code(key), index])


def _footprint(rng: np.random.Generator, ds: Dataset, extent_m: float) -> dict:
    region = ds.regions[rng.integers(len(ds.regions))]
    lon = float(rng.uniform(region.lon_min, region.lon_max))
    lat = float(rng.uniform(region.lat_min, region.lat_max))
    dlat = extent_m / 2 / 111_320.0
    dlon = dlat / max(np.cos(np.radians(lat)), 1e-6)
    d0 = _dt.date.fromisoformat(ds.date_range[0])
    d1 = _dt.date.fromisoformat(ds.date_range[1])
    date = d0 + _dt.timedelta(days=int(rng.integers((d1 - d0).days + 1)))
    r6 = lambda v: round(v, 6)  # noqa: E731  (microdegrees: ~10 cm)
    return {
        "region": region.name, "center": [r6(lon), r6(lat)],
        "bounds": [r6(lon - dlon), r6(lat - dlat), r6(lon + dlon), r6(lat + dlat)],
        "date": date.isoformat(), "extent_m": round(extent_m, 3),
    }


def _senescence(date: str, lat: float) -> float:
    """Fraction of dry vegetation from the season (0 at peak summer, ~0.45 in winter)."""
    doy = _dt.date.fromisoformat(date).timetuple().tm_yday
    phase = (doy - 200) / 365.25 * 2 * np.pi
    season = (1 - np.cos(phase)) / 2  # 0 in mid-July, 1 in mid-January
    if lat < 0:
        season = 1 - season
    return 0.45 * season


def _draw_classes(rng, names, weights, n):
    weights = np.asarray(weights, float)
    n = int(min(n, np.count_nonzero(weights)))
    if n <= 0:
        return []
    idx = rng.choice(len(names), size=n, replace=False, p=weights / weights.sum())
    return [names[i] for i in idx]


@cache
def _recipe_tables(dataset: str):
    """Context-membership matrices of a recipe, precomputed once (priors folded in)."""
    recipe = RECIPES[dataset]
    ctx = list(recipe.contexts)
    area = np.array([[a.prior * (c in a.contexts) for c in ctx] for a in recipe.areas.values()])
    obj = np.array([[o.prior * (c in o.contexts) for c in ctx]
                    for o in recipe.objects.values()]).reshape(len(recipe.objects), len(ctx))
    ctx_prior = np.array([recipe.contexts[c] for c in ctx]) * 0.7 + 1e-3
    return ctx_prior, area, obj


def _compose(rng: np.random.Generator, dataset: str):
    """Pick the scene's context, area classes and object classes (co-occurrence lives here)."""
    recipe = RECIPES[dataset]
    ctx_prior, area_w, obj_w = _recipe_tables(dataset)
    ctx_w = rng.dirichlet(ctx_prior)
    area_names = list(recipe.areas)
    n_area = 1 + rng.poisson(recipe.classes_per_scene)
    areas = _draw_classes(rng, area_names, area_w @ ctx_w, n_area)
    if not recipe.objects:
        return areas, []
    fits = np.array([any(p in areas for p in o.on) for o in recipe.objects.values()])
    n_obj = rng.poisson(recipe.object_classes_per_scene) + 1
    return areas, _draw_classes(rng, list(recipe.objects), (obj_w @ ctx_w) * fits, n_obj)


def _render_objects(rng, recipe, objects, class_map, area_order, mix_sig, sig_table, gsd,
                    extent_m, omit=(), n_sig=None, placed=()):
    """Place objects on allowed surfaces and blend them into the per-pixel signatures.
    Channels from ``n_sig`` on are dense layers: the tree share (the table's own column)
    and, for the k-th class of ``placed``, channel ``n_sig + 1 + k`` (1 where it covers)."""
    h, w = class_map.shape
    rows = []
    names = tuple(recipe.objects)
    for name in objects:
        spec = recipe.objects[name]
        allowed = [area_order.index(a) for a in spec.on if a in area_order]
        count = int(rng.integers(1, spec.max_count + 1))
        # candidate centres on the allowed surfaces (checked on the class map)
        cand = rng.random((count * 8, 2))
        cy = np.minimum((cand[:, 0] * h).astype(int), h - 1)
        cx = np.minimum((cand[:, 1] * w).astype(int), w - 1)
        ok = np.isin(class_map[cy, cx], allowed)
        cand = cand[ok][:count]
        sig = sig_table[_MAT_INDEX[spec.material]].copy()
        if n_sig is not None:
            sig[n_sig + 1 + placed.index(name)] = 1.0
        for fy, fx in cand:
            length = spec.length_m * rng.uniform(0.85, 1.15)
            width = spec.width_m * rng.uniform(0.85, 1.15)
            theta = rng.uniform(0, np.pi)
            rows.append(_stamp(mix_sig, sig, fy * h, fx * w, length / gsd, width / gsd,
                               theta, names.index(name), draw=name not in omit))
    return np.array(rows, float).reshape(-1, 6), names


def _stamp(img, sig, cy, cx, length_px, width_px, theta, cls_idx, draw=True):
    """Blend a rotated rectangle into ``img`` (H, W, C) with exact total area.

    Edge pixels get fractional cover; objects smaller than a pixel deposit their area
    fraction (a mixed pixel), which is what a real detector integrates.
    """
    h, w = img.shape[:2]
    c, s = np.cos(theta), np.sin(theta)
    hy = 0.5 * (abs(length_px * s) + abs(width_px * c))
    hx = 0.5 * (abs(length_px * c) + abs(width_px * s))
    y0, y1 = max(int(cy - hy - 1), 0), min(int(cy + hy + 2), h)
    x0, x1 = max(int(cx - hx - 1), 0), min(int(cx + hx + 2), w)
    area_px = length_px * width_px
    if draw and y1 > y0 and x1 > x0:
        yy = np.arange(y0, y1)[:, None] + 0.5 - cy
        xx = np.arange(x0, x1)[None, :] + 0.5 - cx
        u = np.abs(xx * c + yy * s) - length_px / 2
        v = np.abs(-xx * s + yy * c) - width_px / 2
        cover = np.clip(0.5 - u, 0, 1) * np.clip(0.5 - v, 0, 1)
        total = cover.sum()
        if total > 0:  # the edge approximation is off for small objects: keep the true area
            cover = np.minimum(cover * (area_px / total), 1.0)
        cover = cover[..., None]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - cover) + sig * cover
    return (cls_idx, cy, cx, hy, hx, area_px)


@dataclass
class Sample:
    """One rendered sample: image (C, H, W) in the product's dtype, labels and metadata."""

    image: np.ndarray
    labels: list[str]
    meta: dict
    layers: SceneLayers


def render(dataset: str, index: int, seed: int = 0, image_px: int = 64,
           gsd_m: float | None = None, extent_m: float | None = None,
           omit_objects: tuple[str, ...] = (), sensor: str | None = None) -> Sample:
    """Render sample ``index`` of ``dataset``.

    Args:
        dataset: catalog key, e.g. ``"bigearthnet_s2"``.
        index: sample index; (seed, dataset, index) fixes the sample completely.
        seed: global seed.
        image_px: side of the rendered image in pixels (at the dataset's GSD the footprint is
            ``image_px * gsd`` metres).
        gsd_m: render the same scene at another ground sample distance (for resolution
            experiments); by default the dataset's own.
        extent_m: footprint side in metres; by default ``image_px`` times the native GSD.
        omit_objects: object classes placed in the scene but not drawn (the same scene without
            them, for controlled experiments); they are not labelled either.
        sensor: image the scene with another sensor of the same kind (a ``SENSORS`` key), e.g.
            ``sentinel2_l1c`` for 13-band Sentinel-2 (B10 cirrus included) instead of the
            dataset's 12-band L2A; by default the dataset's own.

    Returns:
        A :class:`Sample` with labels computed from what was rendered.
    """
    ds = get_dataset(dataset)
    if image_px < MIN_IMAGE_PX:
        raise ValueError(f"image_px={image_px} is too small: the simulator needs at least "
                         f"{MIN_IMAGE_PX} px; use image_px >= {MIN_IMAGE_PX}")
    recipe = RECIPES[dataset]
    extent = float(extent_m if extent_m is not None else image_px * ds.gsd_m)
    gsd = float(gsd_m if gsd_m is not None else ds.gsd_m)
    px = int(round(extent / gsd))
    if px < 1:
        raise ValueError(f"footprint of {extent} m is smaller than one {gsd} m pixel")
    rng = scene_rng(seed, dataset, index)
    footprint = _footprint(rng, ds, extent)
    areas, objects = _compose(rng, dataset)
    sensor_key = sensor or ds.sensor
    if SENSORS[sensor_key].kind != SENSORS[ds.sensor].kind:
        raise ValueError(f"{dataset} is imaged by a {SENSORS[ds.sensor].kind} sensor; "
                         f"{sensor_key} is {SENSORS[sensor_key].kind}")

    # land cover: K smooth fields, each biased by the class's share of the scene
    shares = rng.dirichlet(np.full(len(areas), 1.5))
    fields = smooth_fields(rng, len(areas), px, extent, recipe.parcel_m)
    fields += 0.35 * smooth_fields(rng, len(areas), px, extent, recipe.parcel_m / 4)
    fields += 1.2 * np.log(shares)[:, None, None]
    class_map = np.argmax(fields, axis=0).astype(np.int16)
    texture = smooth_fields(rng, 1, px, extent, recipe.texture_m)[0]

    sig_table = _signature_table(sensor_key).astype(np.float32)
    if SENSORS[sensor_key].kind != "sar":
        dry = sig_table[_MAT_INDEX["crop_dry"]]
        sen = _senescence(footprint["date"], footprint["center"][1])
        sig_table[_VEGETATED] = (1 - sen) * sig_table[_VEGETATED] + sen * dry
    specs = [recipe.areas[a] for a in areas]
    sig_a = np.stack([sig_table[_MAT_INDEX[s.materials[0]]] for s in specs])
    sig_b = np.stack([sig_table[_MAT_INDEX[s.materials[1]]] for s in specs])
    # np.take: several times faster than fancy indexing for these small gathers
    mix = np.take(np.array([s.mix for s in specs], np.float32), class_map)
    amp = np.take(np.array([s.texture for s in specs], np.float32), class_map)
    alpha = np.clip(mix + amp * texture, 0, 1)
    # (H, W, C): per-pixel signature, a two-material mix per class
    signal = np.take(sig_a, class_map, axis=0)
    signal += alpha[..., None] * np.take(sig_b - sig_a, class_map, axis=0)

    # dense layers ride along as extra channels: objects are blended into them exactly as into
    # the signal (each channel on its own, so the image is the same as without them)
    n_sig = signal.shape[-1]
    tree = np.array([m in TREE_MATERIALS for m in _MAT_INDEX], np.float32)
    tree_a = np.take(np.array([tree[_MAT_INDEX[sp.materials[0]]] for sp in specs], np.float32),
                     class_map)
    tree_b = np.take(np.array([tree[_MAT_INDEX[sp.materials[1]]] for sp in specs], np.float32),
                     class_map)
    placed = tuple(dict.fromkeys(objects))  # a channel per object class in the scene only
    n_obj = len(placed)
    dense = np.zeros((*class_map.shape, 1 + n_obj), np.float32)
    dense[..., 0] = tree_a + alpha * (tree_b - tree_a)
    signal = np.concatenate([signal, dense], axis=-1)
    extra = np.zeros((len(sig_table), 1 + n_obj), np.float32)
    extra[:, 0] = tree
    obj_rows, obj_names = _render_objects(rng, recipe, objects, class_map, areas, signal,
                                          np.concatenate([sig_table, extra], axis=1), gsd,
                                          extent, set(omit_objects), n_sig, placed)
    signal, dense = signal[..., :n_sig], signal[..., n_sig:]
    if omit_objects:
        keep = [obj_names[int(r[0])] not in omit_objects for r in obj_rows]
        obj_rows = obj_rows[np.array(keep, bool)] if len(obj_rows) else obj_rows
    noise_rng = scene_rng(seed, dataset, index, stream="sensor")
    image = _sensor_model(sensor_key, signal, gsd, noise_rng)

    layers = SceneLayers(
        class_map=class_map, area_names=tuple(areas),
        area_is_label=tuple(recipe.areas[a].label for a in areas),
        objects=obj_rows, object_names=obj_names,
        object_is_label=tuple(recipe.objects[o].label for o in obj_names),
        tree_fraction=np.clip(dense[..., 0], 0, 1), object_cover=np.clip(dense[..., 1:], 0, 1),
        cover_names=placed)
    labels = window_labels(layers, 0, 0, px, px, ds.labels, recipe.min_area_fraction)
    scene_labels = sorted({a for a in areas if recipe.areas[a].label} |
                          {obj_names[int(r[0])] for r in obj_rows
                           if recipe.objects[obj_names[int(r[0])]].label},
                          key=ds.labels.index)
    pair = ds.pair_dataset
    meta = {
        "dataset": dataset, "group": ds.group, "sensor": SENSORS[sensor_key].name,
        "bands": list(SENSORS[sensor_key].band_names),
        "band_info": [r.to_dict() for r in _band_records(sensor_key)], "gsd_m": gsd,
        "index": index,
        "seed": seed,
        "footprint": footprint, "date": footprint["date"],
        "pair_id": f"{_SCENE_FAMILY[dataset]}-{seed}-{index}" if pair else None,
        "scene_labels": scene_labels, "source": "simulator",
    }
    return Sample(image=image, labels=labels, meta=meta, layers=layers)


@cache
def _band_records(sensor_key: str) -> tuple:
    nodata = ENMAP_NODATA if SENSORS[sensor_key].kind == "hyperspectral" else None
    return tuple(resolve_bands(SENSORS[sensor_key].band_names, sensor=sensor_key,
                               nodata=nodata))


def window_labels(layers: SceneLayers, y0: int, x0: int, h: int, w: int,
                  vocabulary: tuple[str, ...], min_area_fraction: float = 0.01) -> list[str]:
    """Labels visible inside a pixel window, in vocabulary order.

    An area class counts if it covers at least ``min_area_fraction`` of the window; an object
    counts if at least ``MIN_VISIBLE_PX`` pixels of it fall inside and either 30 % of the
    object or 30 % of the window is covered (so a ship filling a small patch is labelled,
    the tip of one is not).
    """
    found = set()
    cm = layers.class_map[y0:y0 + h, x0:x0 + w]
    counts = np.bincount(cm.ravel(), minlength=len(layers.area_names))
    for i, n in enumerate(counts):
        if layers.area_is_label[i] and n >= max(1.0, min_area_fraction * cm.size):
            found.add(layers.area_names[i])
    for cls, cy, cx, hy, hx, area in layers.objects:
        name = layers.object_names[int(cls)]
        if not layers.object_is_label[int(cls)]:
            continue
        oy = max(0.0, min(cy + hy, y0 + h) - max(cy - hy, y0))
        ox = max(0.0, min(cx + hx, x0 + w) - max(cx - hx, x0))
        frac_inside = (oy * ox) / max(4 * hy * hx, 1e-9)
        visible = area * frac_inside
        if visible >= MIN_VISIBLE_PX and (frac_inside >= 0.3 or visible >= 0.3 * h * w):
            found.add(name)
    return sorted(found, key=vocabulary.index)


def window_mask(layers: SceneLayers, y0: int, x0: int, h: int, w: int,
                vocabulary: tuple[str, ...]) -> np.ndarray:
    """(h, w) uint8 class mask of a pixel window: the vocabulary index of each pixel's class,
    an object class where objects cover at least half of the pixel (the most covering one),
    else the land-cover class; ``MASK_BACKGROUND`` for a class outside the vocabulary (an
    unlabelled surface or object)."""
    cm = layers.class_map[y0:y0 + h, x0:x0 + w]
    to_vocab = np.array([vocabulary.index(n) if lab and n in vocabulary else MASK_BACKGROUND
                         for n, lab in zip(layers.area_names, layers.area_is_label,
                                           strict=True)], np.uint8)
    out = np.take(to_vocab, cm)
    if layers.object_cover is not None and layers.object_cover.shape[-1]:
        cover = layers.object_cover[y0:y0 + h, x0:x0 + w]
        top = cover.argmax(axis=-1)
        covered = np.take_along_axis(cover, top[..., None], axis=-1)[..., 0] >= 0.5
        label = dict(zip(layers.object_names, layers.object_is_label, strict=True))
        obj = np.array([vocabulary.index(n) if label[n] and n in vocabulary else MASK_BACKGROUND
                        for n in layers.cover_names], np.uint8)
        out = np.where(covered, np.take(obj, top), out)
    return out.astype(np.uint8)


def window_trees(layers: SceneLayers, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """(h, w) uint8 tree cover of a pixel window in percent (0-100): the share of each pixel
    under tree crowns (seed 001's forest use case: tree density; >= 50 is a tree pixel)."""
    tf = layers.tree_fraction[y0:y0 + h, x0:x0 + w]
    return np.rint(100 * tf).astype(np.uint8)


def window_dominant(layers: SceneLayers, y0: int, x0: int, h: int, w: int) -> str | None:
    """The labelled land-cover class covering most of a pixel window (the single label of a
    scene, as SEN12MS's majority IGBP class); None when no labelled area class is in it."""
    cm = layers.class_map[y0:y0 + h, x0:x0 + w]
    counts = np.bincount(cm.ravel(), minlength=len(layers.area_names)).astype(float)
    counts[~np.asarray(layers.area_is_label, bool)] = 0
    return layers.area_names[int(counts.argmax())] if counts.max() > 0 else None


# --- sensor models ------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _block_matrix(n: int, factor: int) -> np.ndarray:
    """(n, n) matrix that averages blocks of ``factor`` pixels and repeats them back."""
    block = np.arange(n) // factor
    m = (block[:, None] == block[None, :]).astype(np.float32)
    return m / m.sum(axis=1, keepdims=True)


def _block_blur(bands: np.ndarray, factor: int) -> np.ndarray:
    """Average (C, H, W) over factor x factor blocks, on the same grid: a coarser band.

    Done as two small matrix products, which is several times faster than reshaping.
    """
    _, h, w = bands.shape
    return _block_matrix(h, factor) @ bands @ _block_matrix(w, factor).T


# Sensor noise comes from a fixed bank of standard-normal values read at a random offset per
# sample: independent draws per pixel cost more than the rest of a 64 px render here, and a
# 2**22-value bank read at random offsets is statistically indistinguishable for sensor noise.
_NOISE_BANK = np.random.default_rng(20231006).standard_normal(1 << 22, dtype=np.float32)


def _gaussian_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard-normal float32 noise of ``shape``, a window of the noise bank."""
    n = int(np.prod(shape))
    if n >= _NOISE_BANK.size // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, _NOISE_BANK.size - n))
    return _NOISE_BANK[start:start + n].reshape(shape)


def _sensor_model(sensor_key: str, signal: np.ndarray, gsd: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Turn per-pixel signatures (H, W, C) into the stored product (C, H, W)."""
    sensor = SENSORS[sensor_key]
    chw = np.moveaxis(signal, -1, 0)
    if sensor.kind == "multispectral":
        out = np.ascontiguousarray(chw)
        factors = np.array([max(int(round(b.gsd_m / gsd)), 1) for b in sensor.bands])
        for factor in np.unique(factors[factors > 1]):
            sel = np.flatnonzero(factors == factor)
            out[sel] = _block_blur(out[sel], int(factor))
        # noise + residual atmosphere: 40 reflectance units (x 10000), as float32
        out = out * 10000 + _gaussian_noise(rng, out.shape) * 40 + 0.5  # +0.5: round on cast
        return np.clip(out, 0, 65535, out=out).astype(np.uint16)
    if sensor.kind == "hyperspectral":
        return _hyperspectral(sensor, chw, rng)
    if sensor.kind == "sar":
        looks = 4.4  # equivalent number of looks of IW GRD high resolution
        speckle = rng.gamma(looks, 1 / looks, chw.shape)
        return (10 * np.log10(np.maximum(chw * speckle, 1e-6))).astype(np.float32)
    # 8-bit cameras: exposure, display gamma, sensor noise
    dn = 255 * np.clip(chw * 2.2, 0, 1) ** (1 / 2.2)
    dn += _gaussian_noise(rng, dn.shape) * 2.0
    return np.clip(np.rint(dn), 0, 255).astype(np.uint8)


# EnMAP's noise in reflectance x 10000: SNR of about 400 (VNIR) and 180 (SWIR) at a reflectance
# of 0.3, rising towards the SWIR's long end where the signal fades
_HSI_NOISE = (7.5, 17.0)


def _hyperspectral(sensor, chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """EnMAP L2A: int16 reflectance x 10000 with the detector noise of each spectrometer; the
    water-vapour bands (``catalog.ENMAP_WATER_VAPOUR``) hold no measurement (nodata)."""
    sigma = np.where(np.arange(len(sensor.bands)) < ENMAP_VNIR_BANDS, *_HSI_NOISE)
    sigma = sigma * (1 + np.clip((np.array([b.center_nm for b in sensor.bands]) - 2200) / 250,
                                 0, None))
    out = chw * 10000 + _gaussian_noise(rng, chw.shape) * sigma[:, None, None].astype(np.float32)
    out = np.clip(np.rint(out), -32767, 32767).astype(np.int16)
    dropped = set(water_vapour_bands())
    out[[i for i, b in enumerate(sensor.bands) if b.name in dropped]] = ENMAP_NODATA
    return out


def render_many(dataset: str, indices, seed: int = 0, image_px: int = 64) -> list[Sample]:
    """Render several samples of one dataset (a convenience over :func:`render`)."""
    return [render(dataset, int(i), seed=seed, image_px=image_px) for i in indices]


def check_dataset_keys(keys) -> None:
    """Fail early on unknown dataset keys, naming the valid ones."""
    bad = [k for k in keys if k not in RECIPES]
    if bad:
        raise ValueError(f"no simulator for dataset(s) {bad}; the simulator renders "
                         f"{', '.join(RECIPES)}")
