"""Paired data for self-supervision: the Sentinel-1 / Sentinel-2 images of each place, read
from the shards, and the views a pair mode makes of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from geofm_lib.bands import POLARISATIONS
from geofm_lib.catalog import DATASETS
from geofm_lib.config import SSL_MODES, Config
from geofm_lib.data.build import ensure_shards
from geofm_lib.data.shards import Manifest, iter_shards, load_manifest, shard_paths
from geofm_lib.errors import ConfigError, PairError

INPUTS = ("s1", "s2", "s1/s2")


# --- paired data ----------------------------------------------------------------------------

@dataclass
class Pairs:
    """The S1/S2 images of the places of one split, standardised, in memory."""

    optical_bands: list[str]
    sar_bands: list[str]
    optical: np.ndarray  # (N, optical bands, H, W) float32
    sar: np.ndarray      # (N, SAR bands, H, W) float32
    pair_ids: list[str]
    labels: list[list[str]]
    vocabulary: list[str]
    incomplete: int = 0  # places with only one sensor in this split (left out)
    dominant: list[str | None] = field(default_factory=list)  # single label, where known
    bounds: list[list[float] | None] = field(default_factory=list)  # lon/lat footprint
    # dense labels of the places (``data.masks``), where the shards have them for every place:
    # the class mask (indices into ``vocabulary`` and the codes) and the tree cover in percent
    masks: np.ndarray | None = None  # (N, H, W) uint8
    trees: np.ndarray | None = None  # (N, H, W) uint8
    # where each place's optical image comes from, and the statistics it was standardised
    # with: what undoes the standardisation for encoders that take raw values (``raw_optical``)
    optical_dataset: list[str] = field(default_factory=list)
    band_stats: dict = field(default_factory=dict)  # dataset -> the manifest's band stats

    def subset(self, idx) -> Pairs:
        """The places ``idx`` (in that order)."""
        idx = np.asarray(idx, int)
        pick = lambda seq: [seq[i] for i in idx] if seq else []  # noqa: E731
        return Pairs(self.optical_bands, self.sar_bands, self.optical[idx], self.sar[idx],
                     pick(self.pair_ids), pick(self.labels), self.vocabulary, self.incomplete,
                     pick(self.dominant), pick(self.bounds),
                     None if self.masks is None else self.masks[idx],
                     None if self.trees is None else self.trees[idx],
                     pick(self.optical_dataset), self.band_stats)

    @property
    def bands(self) -> list[str]:
        """The model's input layout: optical bands, then SAR."""
        return self.optical_bands + self.sar_bands

    def __len__(self) -> int:
        return len(self.pair_ids)

    def compose(self, idx, optical: bool, sar: bool) -> np.ndarray:
        """(len(idx), bands, H, W) images with one or both sensors' channels filled."""
        idx = np.atleast_1d(np.asarray(idx))
        n_opt = len(self.optical_bands)
        out = np.zeros((len(idx), len(self.bands), *self.optical.shape[2:]), np.float32)
        if optical:
            out[:, :n_opt] = self.optical[idx]
        if sar:
            out[:, n_opt:] = self.sar[idx]
        return out

    def inputs(self, idx, which: str) -> np.ndarray:
        """Images of one evaluation input: ``s1``, ``s2`` or ``s1/s2``."""
        if which not in self.input_names:
            raise PairError(f"these places have no {which!r} input (they have "
                            f"{', '.join(self.input_names)})")
        return self.compose(idx, optical=which != "s1", sar=which != "s2")

    @property
    def single_sensor(self) -> bool:
        """Optical images alone (e.g. hyperspectral scenes): no Sentinel-1 half."""
        return not self.sar_bands

    @property
    def input_names(self) -> tuple[str, ...]:
        """The evaluation inputs these places have: ``s1``, ``s2``, ``s1/s2``, or only ``s2``
        (the optical images) for single-sensor data."""
        return ("s2",) if self.single_sensor else INPUTS

    @property
    def sensor_name(self) -> str:
        """What the optical input is called in tables: Sentinel-2's ``s2``, or the product of
        single-sensor data (e.g. ``enmap_corine``)."""
        if self.single_sensor and self.optical_dataset:
            return "/".join(sorted(set(self.optical_dataset)))
        return "s2"

    def raw_optical(self, idx) -> tuple[np.ndarray, list[str]]:
        """(optical images as stored in the shards (e.g. reflectance x 10000), the dataset of
        each): the standardisation undone with each place's dataset statistics. Nodata pixels
        come back as the band's mean (what standardising made of them)."""
        idx = np.atleast_1d(np.asarray(idx))
        if not self.optical_dataset:
            raise ValueError("these pairs do not say which dataset each image came from; "
                             "load them with ssl.load_pairs")
        out = np.empty((len(idx), *self.optical.shape[1:]), np.float32)
        sources = [self.optical_dataset[i] for i in idx]
        for k, (i, ds) in enumerate(zip(idx, sources, strict=True)):
            st = self.band_stats[ds]
            pos = [st["bands"].index(b) for b in self.optical_bands]
            mean = np.asarray(st["mean"], np.float32)[pos][:, None, None]
            std = np.maximum(np.asarray(st["std"], np.float32)[pos], 1e-6)[:, None, None]
            out[k] = self.optical[i] * std + mean
        return out, sources


def _standardise(img: np.ndarray, band_stat: dict, idx: list[int]) -> np.ndarray:
    mean = np.asarray(band_stat["mean"], np.float32)[idx][:, None, None]
    std = np.maximum(np.asarray(band_stat["std"], np.float32)[idx], 1e-6)[:, None, None]
    x = img[idx].astype(np.float32)
    for j, value in enumerate(band_stat.get("nodata") or []):  # nodata: the band's mean
        if value is not None and j in idx:
            k = idx.index(j)
            x[k][x[k] == value] = mean[k, 0, 0]
    x = (x - mean) / std
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def may_have_pairs(manifest: Manifest, datasets) -> bool:
    """Whether a build can hold S1/S2 pairs (from its band lists, without reading shards): one
    dataset with both sensors, or a SAR and an optical dataset."""
    kinds = set()
    for ds in datasets:
        bands = manifest.bands(ds)
        sar = any(b in POLARISATIONS for b in bands)
        optical = any(b not in POLARISATIONS for b in bands)
        kinds.add("both" if sar and optical else "sar" if sar else "optical")
    return "both" in kinds or {"sar", "optical"} <= kinds


def _band_mismatch(part: str, ds: str, names: list[str], other: str,
                   theirs: list[str]) -> str:
    """Why two datasets cannot share a pair layout, naming both and the bands they differ in
    (e.g. SSL4EO-S12's L1C with B10 beside BigEarthNet's L2A without it)."""
    only_here = [b for b in names if b not in theirs]
    only_there = [b for b in theirs if b not in names]
    differ = "; ".join(x for x in (
        f"{ds} has {', '.join(only_here)}, which {other} lacks" if only_here else "",
        f"{other} has {', '.join(only_there)}, which {ds} lacks" if only_there else "")
        if x) or f"the same bands in another order ({', '.join(names)} against " \
                 f"{', '.join(theirs)})"
    level = (" (Sentinel-2 L1C has B10, the cirrus band; L2A products drop it: use one product "
             "level, e.g. SSL4EO-S12's s2a (L2A) beside BigEarthNet, as ssl4eo_s12_s2a)"
             if "B10" in only_here + only_there else "")
    return (f"the {part} images of {ds} and {other} cannot share one input layout: {differ}"
            f"{level}; pair datasets of one sensor product")


def load_pairs(cfg: Config, split: str) -> Pairs:
    """The places of ``split`` with both a Sentinel-1 and an optical image.

    Sources: two datasets whose samples share ``pair_id`` (BigEarthNet S1/S2 of the simulator,
    BigEarthNet or SSL4EO-S12 through torchgeo), or one dataset with both sensors stacked
    (SEN12MS, ``bigearthnet_s1s2``). Bands are standardised with each dataset's training-split
    statistics from the shard manifest; bands the manifest lists as nodata everywhere (EnMAP's
    water-vapour bands) are left out, as from the image towers' input.

    Data without any SAR band (hyperspectral EnMAP scenes, an optical-only build) gives
    single-sensor places: every image its own place, no SAR half (``Pairs.single_sensor``),
    for ``ssl_mode=augment``.
    """
    folder = ensure_shards(cfg)  # built first when 01_data_prep has not run
    manifest = load_manifest(folder)
    optical_only = not any(b in POLARISATIONS for ds in cfg.dataset_keys
                           for b in manifest["band_stats"][ds]["bands"])
    halves: dict[str, dict] = {}
    opt_bands = sar_bands = None
    first_of: dict[str, str] = {}  # part -> the dataset whose bands set it
    vocab: list[str] = []
    for ds in cfg.dataset_keys:
        st = manifest["band_stats"][ds]
        bands = st["bands"]
        empty = set(st.get("all_nodata") or ())
        sar_idx = [i for i, b in enumerate(bands) if b in POLARISATIONS and b not in empty]
        opt_idx = [i for i, b in enumerate(bands) if b not in POLARISATIONS and b not in empty]
        if opt_idx and not vocab:
            vocab = (manifest.vocabulary(ds)
                     or list(DATASETS[ds].labels if ds in DATASETS else []))
        for n_seen, s in enumerate(iter_shards(shard_paths(folder, split, ds), dense=True)):
            m = s["json"]
            pid = m.get("pair_id") or (s["__key__"] if (sar_idx and opt_idx) or optical_only
                                       else None)
            if optical_only:  # every image a place of its own
                pid = f"{ds}/{s['__key__']}"
            if pid is None:
                if n_seen == 0:  # a dataset of unpaired images (a reader pairs all or none):
                    break        # its other samples are not decoded
                continue
            rec = halves.setdefault(pid, {"labels": set()})
            rec["labels"].update(m.get("labels") or [])
            if m.get("dominant_label") and (opt_idx or "dominant" not in rec):
                rec["dominant"] = m["dominant_label"]  # the optical image's, if they differ
            if (m.get("footprint") or {}).get("bounds") and "bounds" not in rec:
                rec["bounds"] = m["footprint"]["bounds"]
            for dense in ("mask", "trees"):  # the optical image's, as the dominant class
                if dense in s and (opt_idx or dense not in rec):
                    rec[dense] = s[dense]
            if opt_idx:
                rec["optical_ds"] = ds
            for part, idx in (("sar", sar_idx), ("optical", opt_idx)):
                if idx:
                    names = [bands[i] for i in idx]
                    first_of.setdefault(part, ds)
                    if part == "sar":
                        sar_bands = sar_bands or names
                        ok, theirs = names == sar_bands, sar_bands
                    else:
                        opt_bands = opt_bands or names
                        ok, theirs = names == opt_bands, opt_bands
                    if not ok:
                        raise PairError(_band_mismatch(part, ds, names, first_of[part], theirs))
                    rec[part] = _standardise(s["img"], st, idx)
    complete = [pid for pid, r in halves.items()
                if "optical" in r and ("sar" in r or optical_only)]
    if optical_only:
        if not complete:
            raise PairError(f"the {split} split of {', '.join(cfg.dataset_keys)} has no "
                            f"images; run notebook 01 (data prep) with more samples")
        complete.sort()
        n_px = halves[complete[0]]["optical"].shape[1:]
        for p in complete:
            halves[p]["sar"] = np.zeros((0, *n_px), np.float32)
        sar_bands = []
    if not complete:
        raise PairError(
            f"no place in the {split} split has both a Sentinel-1 and an optical image "
            f"(datasets {', '.join(cfg.dataset_keys)}); use group A (bigearthnet_s2 + "
            f"bigearthnet_s1), SEN12MS, bigearthnet_s1s2 or the SSL4EO-S12 pair")
    complete.sort()
    dense = {d: (np.stack([halves[p][d] for p in complete])
                 if all(d in halves[p] for p in complete) else None) for d in ("mask", "trees")}
    return Pairs(opt_bands, sar_bands,
                 np.stack([halves[p]["optical"] for p in complete]),
                 np.stack([halves[p]["sar"] for p in complete]), complete,
                 [sorted(halves[p]["labels"]) for p in complete], vocab,
                 incomplete=len(halves) - len(complete),
                 dominant=[halves[p].get("dominant") for p in complete],
                 bounds=[halves[p].get("bounds") for p in complete],
                 masks=dense["mask"], trees=dense["trees"],
                 optical_dataset=[halves[p]["optical_ds"] for p in complete],
                 band_stats={ds: manifest["band_stats"][ds] for ds in cfg.dataset_keys})


def non_overlapping(bounds: list, seed: int = 0) -> np.ndarray:
    """Indices of a subset of footprints no two of which overlap (touching edges is fine),
    chosen greedily in a seeded random order, as seed 003's non-overlapping SEN12MS subset.
    A grid hash keeps it near linear in the number of footprints."""
    missing = [i for i, b in enumerate(bounds) if not b]
    if missing:
        raise PairError(f"{len(missing)} of {len(bounds)} places have no footprint bounds, so "
                        f"overlap cannot be decided; use ssl_patches=all for this data")
    box = np.asarray(bounds, float)
    flipped = np.flatnonzero((box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1]))
    if len(flipped):
        raise PairError(f"{len(flipped)} footprints have west > east or south > north (e.g. "
                        f"{bounds[flipped[0]]}; one crossing the antimeridian?); use "
                        f"ssl_patches=all for this data")
    cell = max(float(np.median(box[:, 2] - box[:, 0])), float(np.median(box[:, 3] - box[:, 1])),
               1e-9)
    grid: dict[tuple[int, int], list[int]] = {}
    kept = []
    tol = 1e-9 * cell  # footprints that share an edge (adjacent tiles) do not overlap
    for i in np.random.default_rng([seed, 3]).permutation(len(box)):
        x0, y0, x1, y1 = box[i]
        cells = [(gx, gy) for gx in range(int(x0 // cell), int(x1 // cell) + 1)
                 for gy in range(int(y0 // cell), int(y1 // cell) + 1)]
        clash = False
        for c in cells:
            for j in grid.get(c, ()):
                a = box[j]
                if min(x1, a[2]) - max(x0, a[0]) > tol and min(y1, a[3]) - max(y0, a[1]) > tol:
                    clash = True
                    break
            if clash:
                break
        if not clash:
            kept.append(i)
            for c in cells:
                grid.setdefault(c, []).append(int(i))
    return np.sort(np.asarray(kept, int))


# --- pair modes: which two inputs of a place (or image) make a positive pair ------------------

def _augment_views(i: int, rng: random.Random) -> tuple[int, tuple[str, str]]:
    # every place gives two samples: its S2 image, then its S1 image, each seen twice
    return i // 2, ("s2", "s2") if i % 2 == 0 else ("s1", "s1")


def _sensor_views(i: int, rng: random.Random) -> tuple[int, tuple[str, str]]:
    return i, ("s1", "s2") if rng.random() < 0.5 else ("s2", "s1")


def _fusion_all_views(i: int, rng: random.Random) -> tuple[int, tuple[str, str]]:
    return i, ("s1/s2", "s1/s2")


def _fusion_partial_views(i: int, rng: random.Random) -> tuple[int, tuple[str, str]]:
    one = rng.choice(INPUTS)
    return i, (one, one)


VIEWS = {"augment": _augment_views, "sensor": _sensor_views, "fusion_all": _fusion_all_views,
         "fusion_partial": _fusion_partial_views}
"""(sample index, random generator) -> (place, (query input, key input)) of each ``ssl_mode``
(``config.SSL_MODES`` names them); a new mode is one entry here and one there."""
SAMPLES_PER_PLACE = {"augment": 2}
PAIR_MODES = tuple(SSL_MODES)
if set(VIEWS) != set(SSL_MODES):
    raise ImportError(f"ssl.pairs.VIEWS {sorted(VIEWS)} and config.SSL_MODES "
                      f"{sorted(SSL_MODES)} name different pair modes")


class PairViews(torch.utils.data.Dataset):
    """Samples of one pair mode: ``image`` holds the two views stacked along the channels
    (query first); ``pair_q``/``pair_k`` and ``sensor_q``/``sensor_k`` say what they are.

    An index is ``i`` or ``(epoch, i)`` (from :class:`EpochSampler`); the random choices of a
    sample (which sensor is the query, which input in ``fusion_partial``) are drawn from a
    generator seeded by (seed, epoch, i), so they do not depend on workers, ranks or resuming.
    """

    def __init__(self, pairs: Pairs, mode: str, seed: int = 0):
        if mode not in PAIR_MODES:
            raise ValueError(f"unknown ssl_mode {mode!r}; choose one of {', '.join(PAIR_MODES)}")
        if pairs.single_sensor and mode != "augment":
            raise PairError(f"ssl_mode={mode} pairs Sentinel-1 with Sentinel-2 images, and "
                            f"this data has optical images only "
                            f"({', '.join(sorted(set(pairs.optical_dataset))) or 'one sensor'});"
                            f" use ssl_mode=augment (two augmentations of each image)")
        self.pairs, self.mode, self.seed = pairs, mode, seed

    def __len__(self) -> int:
        if self.pairs.single_sensor:  # one image per place: each seen once per epoch
            return len(self.pairs)
        return SAMPLES_PER_PLACE.get(self.mode, 1) * len(self.pairs)

    def _view(self, i: int, sensor: str) -> torch.Tensor:
        return torch.from_numpy(self.pairs.inputs(i, sensor)[0])

    def __getitem__(self, index) -> dict:
        epoch, i = index if isinstance(index, tuple) else (0, index)
        rng = random.Random(f"{self.seed}-{epoch}-{i}")  # str seeds hash the same everywhere
        if self.pairs.single_sensor:
            sensors = ("s2", "s2")
        else:
            i, sensors = VIEWS[self.mode](i, rng)
        q, k = (self._view(i, s) for s in sensors)
        pid = self.pairs.pair_ids[i]
        return {"image": torch.cat([q, k]), "pair_q": pid, "pair_k": pid,
                "sensor_q": sensors[0], "sensor_k": sensors[1]}


class EpochSampler(torch.utils.data.Sampler):
    """The global batches of an epoch are a permutation seeded by (seed, epoch), cut into
    ``global_batch`` pieces (the last partial one dropped); rank ``r`` of ``world`` yields its
    ``global_batch / world`` slice of each, as ``(epoch, i)`` pairs. One process or several see
    the same global batches, and a run resumed at an epoch boundary sees what it would have."""

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ConfigError(f"ssl_batch_size={global_batch} does not split over {world} "
                             f"processes; use a multiple of {world}")
        self.n, self.batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.n // self.batch) * (self.batch // self.world)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n)
        per = self.batch // self.world
        for b in range(self.n // self.batch):
            batch = order[b * self.batch:(b + 1) * self.batch]
            chunk = batch[self.rank * per:(self.rank + 1) * per]
            yield from ((self.epoch, int(i)) for i in chunk)
