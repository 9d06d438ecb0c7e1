"""The shard build: scenes -> patches -> shards, resumable, locked, with the manifest last.

Units of work are (dataset, split, shard index); a unit whose shard and sidecar exist is done.
Splits are assigned per scene (all patches of a scene go to the same split) and checked by
content hash: an image that also occurs in train is removed from validation. Band statistics
for standardisation come from the training split only, with declared nodata left out.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from geofm_lib.catalog import DATASETS, pair_family
from geofm_lib.config import Config, command_for
from geofm_lib.data.captions import caption, join_labels
from geofm_lib.data.manifest import make_manifest
from geofm_lib.data.masks import DENSE_MEMBERS
from geofm_lib.data.parallel import run_units
from geofm_lib.data.shards import (
    _OURS,
    _read_manifest,
    _seed_cache,
    build_problems,
    file_sha256,
    is_complete,
    iter_shards,
    write_shard,
)
from geofm_lib.data.sources.base import missing_scene_keys
from geofm_lib.data.sources.registry import open_source
from geofm_lib.errors import DataError, GeofmError, ShardError
from geofm_lib.io import atomic_write_json, folder_lock
from geofm_lib.paths import build_folder
from geofm_lib.progress import get_logger

log = get_logger()


# a measured value of this magnitude (or more) is no physical remote-sensing quantity
# (reflectance, radiance, backscatter, heights, temperatures are all far below it): it is an
# unflagged nodata value such as -3.4e38 (float32's lowest), which would swamp the statistics
NON_PHYSICAL_ABS = 1e9


# --- building ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    """One shard to write: a run of scenes of one dataset and split."""

    split: str
    dataset: str
    number: int
    scenes: tuple[int, ...]

    @property
    def file(self) -> str:
        return f"{self.split}-{self.dataset}-{self.number:06d}.tar"


def split_scenes(n: int, val_fraction: float, seed: int, dataset: str) -> dict[str, list[int]]:
    """Seeded scene-level split of a reader without split units; at least one validation
    scene when n > 1.

    Datasets imaging the same places (Sentinel-1 and Sentinel-2 of the simulator's BigEarthNet,
    paired by ``pair_id``, scene ``i`` of one the same place as scene ``i`` of the other) share
    the split of their scenes, so a validation place is never seen in training through the
    other sensor. Readers that name split units are split by :func:`split_units`.
    """
    family = pair_family(dataset)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1 if n > 1 else 0), n - 1) if n > 1 else 0
    order = np.random.default_rng([seed, 99, *family.encode()]).permutation(n)
    val = sorted(order[:n_val].tolist())
    vs = set(val)
    return {"train": [i for i in range(n) if i not in vs], "val": val}


def split_units(units_by_dataset: dict[str, set[str]], val_fraction: float, seed: int,
                family: str) -> set[str]:
    """The validation units of a pair family (one dataset, or the sensors of one place),
    decided once for the whole family: a unit (scene, tile, place, block) is on one side for
    every dataset that has it, whichever units each dataset holds.

    A seeded permutation of the family's units (sorted, so the draw does not depend on reading
    order) gives ``val_fraction`` of them to validation; then a dataset with two or more units
    and none in validation gets its first unit in the permutation moved there (for the whole
    family), and one with all its units in validation gets its last moved back.
    """
    union = sorted(set().union(*units_by_dataset.values())) if units_by_dataset else []
    m = len(union)
    n_val = int(round(m * val_fraction))
    n_val = min(max(n_val, 1 if m > 1 else 0), m - 1) if m > 1 else 0
    order = [union[i] for i in np.random.default_rng([seed, 99, *family.encode()])
             .permutation(m).tolist()]
    val = set(order[:n_val])
    for _, units in sorted(units_by_dataset.items()):
        if len(units) > 1 and not units & val:
            val.add(next(k for k in order if k in units))
        if len(units) > 1 and units <= val:
            val.discard(next(k for k in reversed(order) if k in units))
    return val


def split_keys(source, dataset: str, n: int) -> list[str | None]:
    """Each scene's split unit (``Source.split_key``; readers without one: None)."""
    key_of = getattr(source, "split_key", None)
    return [key_of(dataset, i) if key_of else None for i in range(n)]


def plan_units(cfg: Config, source) -> list[Unit]:
    """Deterministic list of shards for a build."""
    step = cfg.patch_stride_px or cfg.image_px
    per_scene = max((cfg.effective_scene_px - cfg.image_px) // step + 1, 1) ** 2
    scenes_per_shard = max(cfg.shard_size // per_scene, 1)
    units = []
    counts = {ds: source.count(ds) for ds in source.datasets}
    official = {ds: source.splits(ds) for ds in source.datasets}
    keys = {ds: split_keys(source, ds, counts[ds]) for ds in source.datasets
            if official[ds] is None}
    keyed = {ds: k for ds, k in keys.items() if any(v is not None for v in k)}
    val_units: dict[str, set[str]] = {}  # per pair family: its validation units
    for family in sorted({pair_family(ds) for ds in keyed}):
        members = {ds: {k if k is not None else f"{ds} scene {i}" for i, k in enumerate(ks)}
                   for ds, ks in keyed.items() if pair_family(ds) == family}
        val_units[family] = split_units(members, cfg.val_fraction, cfg.seed, family)
    for dataset in source.datasets:
        n = counts[dataset]
        if official[dataset] is not None:
            plan = official[dataset]
        elif dataset in keyed:
            val = val_units[pair_family(dataset)]
            ks = [k if k is not None else f"{dataset} scene {i}"
                  for i, k in enumerate(keyed[dataset])]
            plan = {"train": [i for i in range(n) if ks[i] not in val],
                    "val": [i for i in range(n) if ks[i] in val]}
        else:
            plan = split_scenes(n, cfg.val_fraction, cfg.seed, dataset)
        for split, idx in plan.items():
            for k in range(0, len(idx), scenes_per_shard):
                units.append(Unit(split, dataset, k // scenes_per_shard,
                                  tuple(idx[k:k + scenes_per_shard])))
    return units


def resize_image(image: np.ndarray, px: int) -> np.ndarray:
    """(C, H, W) -> (C, px, px), band by band with PIL (box filter when shrinking, bilinear
    when enlarging), back in the product's dtype (integers rounded)."""
    from PIL import Image

    c, h, w = image.shape
    if (h, w) == (px, px):
        return image
    method = Image.BOX if px < min(h, w) else Image.BILINEAR
    out = np.empty((c, px, px), dtype=np.float32)
    for b in range(c):
        out[b] = np.asarray(Image.fromarray(image[b].astype(np.float32), mode="F")
                            .resize((px, px), method))
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
    return out.astype(image.dtype)


def _resized_window(full: np.ndarray, p: int, y: int, x: int, h: int, w: int) -> np.ndarray:
    """A window of ``full`` resized to p x p by nearest neighbour (class indices stay)."""
    rows = (np.arange(p) * full.shape[0] / p).astype(int)
    cols = (np.arange(p) * full.shape[1] / p).astype(int)
    return full[rows][:, cols][y:y + h, x:x + w]


def _patches(cfg: Config, scene, split: str, counts: Counter | None = None,
             objects: Counter | None = None) -> Iterator[dict]:
    missing = missing_scene_keys(scene.meta)
    if missing:
        raise DataError(f"scene {scene.dataset}/{scene.index} from {scene.meta.get('source')!r} "
                        f"lacks metadata {missing}; a reader fills them with "
                        f"data.sources.base.scene_meta")
    p = cfg.image_px
    if scene.meta.get("whole_image"):  # labels/captions describe the whole image: resize
        native = list(scene.image.shape[1:])
        scene.image = resize_image(scene.image, p)
        scene.meta = dict(scene.meta, native_px=native)
        for name in ("mask_window", "trees_window"):  # dense labels: nearest neighbour
            window = getattr(scene, name)
            if window is not None:
                setattr(scene, name, partial(_resized_window, window(0, 0, *native), p))
    _, h, w = scene.image.shape
    if h < p or w < p:
        raise ShardError(f"scene {scene.dataset}/{scene.index} is {h}x{w} px, smaller than "
                         f"image_px={p}")
    step = cfg.patch_stride_px or p
    origins = [(y, x) for y in range(0, h - p + 1, step) for x in range(0, w - p + 1, step)]
    bounds = scene.meta.get("footprint", {}).get("bounds")
    counts = Counter() if counts is None else counts
    cut = []
    for k, (y, x) in enumerate(origins):
        counts["cut"] += 1
        if scene.keep_window is not None and not scene.keep_window(y, x, p, p):
            counts["dropped"] += 1  # too little valid area (the reader's min_valid)
            cut.append((y, x, False))
            continue
        cut.append((y, x, True))
        labels = scene.label_window(y, x, p, p)
        counts["empty"] += not labels
        meta = dict(scene.meta)
        meta.update(split=split, patch=k, patch_origin_px=[y, x], image_px=p,
                    labels=labels, label_idx=[scene.vocabulary.index(lab) for lab in labels],
                    dtype=str(scene.image.dtype))
        if scene.dominant_window is not None:
            meta["dominant_label"] = scene.dominant_window(y, x, p, p)
        if len(origins) > 1:
            meta["scene_labels"] = scene.meta.get("scene_labels")  # of the whole scene
            if bounds:  # patch footprint by linear interpolation inside the scene's bounds
                lon0, lat0, lon1, lat1 = bounds
                meta["footprint"] = dict(scene.meta["footprint"], bounds=[
                    lon0 + (lon1 - lon0) * x / w, lat1 - (lat1 - lat0) * (y + p) / h,
                    lon0 + (lon1 - lon0) * (x + p) / w, lat1 - (lat1 - lat0) * y / h])
            if meta.get("pair_id"):
                meta["pair_id"] = f"{scene.meta['pair_id']}-p{k}"
        if meta.get("captions"):  # an image-text corpus: its own captions, the first as txt
            text = meta["captions"][0]
        elif scene.dataset in DATASETS or isinstance(cfg.caption_metadata, list):
            text = caption(scene.dataset, labels, cfg.caption_metadata, cfg.seed,
                           scene.index * 4096 + k, meta)
        else:  # a custom source (e.g. a GeoTIFF scene) has no catalog entry for sensor phrases
            text = "An overhead image showing " + join_labels(labels) + "."
        sample = {"__key__": f"{scene.dataset}-{scene.index:07d}-{k:03d}",
                  "img": scene.image[:, y:y + p, x:x + p], "txt": text, "json": meta}
        for name, window in (("mask", scene.mask_window), ("trees", scene.trees_window)):
            if window is not None:  # dense labels (data.masks), as one-band uint8 PNGs
                sample[name] = np.ascontiguousarray(window(y, x, p, p), np.uint8)
        dense = [n for n in DENSE_MEMBERS if n in sample]
        if dense:
            meta["dense"] = dense
        yield sample
    if scene.object_counts is not None and objects is not None:
        objects.update(scene.object_counts(cut, p))


def band_nodata(meta: dict) -> list[float | None]:
    """Each band's nodata value: from its band record, else the scene's one ``nodata``."""
    info = meta.get("band_info")
    if info:
        return [b.get("nodata") for b in info]
    return [meta.get("nodata")] * len(meta.get("bands", []))


def _valid_mask(img: np.ndarray, meta: dict) -> np.ndarray:
    """Values that hold a measurement: finite and not their band's declared nodata value."""
    valid = np.isfinite(img) if np.issubdtype(img.dtype, np.floating) else \
        np.ones(img.shape, bool)
    for b, value in enumerate(band_nodata(meta)[:img.shape[0]]):
        if value is not None and np.isfinite(value):
            valid[b] &= img[b] != value
    return valid


def _unit_stats(samples: list[dict]) -> dict:
    """Per-band sums for normalisation statistics, and label counts, of one shard."""
    if not samples:
        return {"pixels": 0, "sum": [], "sumsq": [], "labels": {}}
    imgs = np.stack([s["img"] for s in samples]).astype(np.float64)
    labels = Counter(lab for s in samples for lab in s["json"]["labels"])
    # NaN/inf and declared nodata values are no measurements: kept out of the statistics
    finite = np.stack([_valid_mask(s["img"], s["json"]) for s in samples])
    nonfinite = int(finite.size - finite.sum())
    if nonfinite:
        imgs = np.where(finite, imgs, 0.0)
    return {"pixels": int(imgs.shape[0] * imgs.shape[2] * imgs.shape[3]),
            "band_pixels": finite.sum(axis=(0, 2, 3)).tolist(), "nonfinite": nonfinite,
            "sum": imgs.sum(axis=(0, 2, 3)).tolist(),
            "sumsq": (imgs ** 2).sum(axis=(0, 2, 3)).tolist(),
            "labels": dict(labels), "bands": samples[0]["json"]["bands"],
            "nodata": band_nodata(samples[0]["json"]),
            "empty_label_sets": sum(1 for s in samples if not s["json"]["labels"])}


def check_folder(folder: Path) -> None:
    """Refuse a build folder that holds files this writer did not make."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ShardError(f"output path {folder.name!r} exists and is not a folder")
    foreign = sorted(p.name for p in folder.iterdir() if not _OURS.match(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ShardError(f"output folder {folder.name!r} holds files that are not shards of "
                         f"this workspace ({shown}); move them away or choose another "
                         f"work_dir")


def ensure_shards(cfg: Config, show_progress: bool = True) -> Path:
    """The build folder of ``cfg``, built first when it holds no finished build: a notebook run
    on its own (``papermill notebooks/03_pretrain.ipynb out.ipynb -p group C`` from a fresh
    clone) builds its data through the same call as 01_data_prep, saying so in one line. A
    source that cannot be read (a real data root that is absent) fails as 01 would, naming it."""
    folder = build_folder(cfg)
    if (folder / "manifest.json").is_file():
        return folder
    log.info("no shards for data %s yet (01_data_prep has not run with these parameters): "
             "building them now, as it would", cfg.data_hash)
    try:
        return build_shards(cfg, show_progress=show_progress)
    except GeofmError as exc:  # e.g. a data folder of yours that is absent: say how to retry
        raise type(exc)(
            f"{exc}. This notebook builds its shards (data {cfg.data_hash}) as 01_data_prep "
            f"does, and they cannot be built: fix that, then run this notebook again, or build "
            f"them alone with exactly these parameters: {command_for(cfg, 'data')}") from None


def build_shards(cfg: Config, source=None, show_progress: bool = True) -> Path:
    """Build (or resume, or reuse, or repair) the shards of ``cfg``; returns the build folder.

    A finished build with the same data hash is reused once it matches its manifest. An
    interrupted build resumes: shards whose tar and sidecar exist and agree are kept, the rest
    are written. A finished build with missing or damaged shards (or a damaged manifest) is
    repaired: the bad shards are written again from the source (builds are deterministic, so
    the result is byte-identical) and the manifest is rewritten.

    Only one process writes a build folder at a time: a second one waits for the first and
    then reuses its shards.
    """
    folder = build_folder(cfg)
    check_folder(folder)
    if is_complete(folder):  # no lock needed to reuse a whole build (it may be read-only)
        return folder
    opened_here = source is None
    if source is None:
        source = open_source(cfg)  # validates the source before anything is written or removed
    with folder_lock(folder, f"the shard build {folder.name}", wait=True, log=log):
        check_folder(folder)
        if (folder / "manifest.json").is_file() and not _damaged_build(folder):
            return folder  # another process finished (or repaired) it while we waited
        return _build_locked(cfg, folder, source, show_progress, opened_here)


def _damaged_build(folder: Path) -> bool:
    """Check a finished build; remove what is damaged (bad shards and their sidecars, the
    manifest) so that the build resumes. True when something was removed."""
    try:
        manifest = _read_manifest(folder)
        problems = build_problems(folder, manifest)
    except ShardError as exc:  # the manifest itself is damaged
        log.warning("rebuilding the manifest of %s: %s", folder.name, exc)
        (folder / "manifest.json").unlink()
        return True
    if not problems:
        return False
    shown = "; ".join(f"{f} {why}" for f, why in problems[:5])
    log.warning("repairing the shards of %s: %s%s", folder.name, shown,
                   f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
    for name, _ in problems:
        if name != "manifest.json":
            for path in (folder / name, folder / (name + ".json")):
                path.unlink(missing_ok=True)
    (folder / "manifest.json").unlink()
    return True


def _build_locked(cfg: Config, folder: Path, source, show_progress: bool,
                  opened_here: bool) -> Path:
    """The body of :func:`build_shards`, run while holding the build folder's lock."""
    if cfg.samples_per_dataset < 1:
        raise ShardError("samples_per_dataset must be at least 1")
    units = plan_units(cfg, source)
    if not units:
        raise ShardError("the source yielded no scenes; check samples_per_dataset and "
                         "source_path")
    folder.mkdir(parents=True, exist_ok=True)
    for tmp in folder.glob("*.tmp"):  # leftovers of an interrupted write (we hold the lock)
        tmp.unlink()
    sidecars, todo = {}, []
    for unit in units:  # shards whose tar and sidecar exist and agree are kept (a resume)
        side = _finished_unit(folder, unit)
        if side is None:
            todo.append(unit)
        else:
            sidecars[unit.file] = side
    if todo and len(todo) < len(units):
        log.info("resuming the build: %d of %d shards are written", len(units) - len(todo),
                 len(units))
    sidecars.update(run_units(cfg, folder, todo, source, write_unit, opened_here,
                              show_progress))
    removed = _drop_val_duplicates(folder, sidecars)
    reports = {ds: r for ds in source.datasets if (r := source.report(ds)) is not None}
    _refuse_emptied(units, sidecars)
    manifest = make_manifest(cfg, units, sidecars, removed, reports)
    atomic_write_json(folder / "manifest.json", manifest)
    _seed_cache(folder, manifest)  # readers find the build verified without hashing it again
    return folder


def _refuse_emptied(units: list[Unit], sidecars: dict) -> None:
    """A dataset whose every image was skipped as unreadable (``on_bad: skip``) is an error
    that names why, not a build of 0 samples that exits 0.

    Raises:
        DataError: the dataset, how many images and the first reasons.
    """
    by_ds: dict[str, list] = {}
    for u in units:
        side = sidecars[u.file]
        by_ds.setdefault(u.dataset, [0, []])
        by_ds[u.dataset][0] += side["n"]
        by_ds[u.dataset][1] += side.get("unreadable_skipped", [])
    for ds, (n, why) in by_ds.items():
        if n == 0 and why:
            reasons = Counter(why).most_common(2)
            shown = "; ".join(f"{r} ({k}x)" if k > 1 else r for r, k in reasons)
            raise DataError(f"{ds}: every one of its {len(why)} images was unreadable and "
                            f"skipped (on_bad: skip), which leaves the dataset empty: {shown}. "
                            f"Fix the files or the reader's options (skip only leaves a few "
                            f"bad files out)")


def _finished_unit(folder: Path, unit: Unit) -> dict | None:
    """The sidecar of a shard already written whole, else None. The sidecar's statistics and
    band records are checked against the shard's own samples first: the manifest is made from
    them, and a sidecar edited by hand (or by a bug) would carry wrong normalisation into every
    run (issue 36)."""
    side_path, tar_path = folder / (unit.file + ".json"), folder / unit.file
    if not (side_path.is_file() and tar_path.is_file()):
        return None
    try:
        side = json.loads(side_path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None  # a damaged sidecar: the shard is written again
    if not isinstance(side, dict) or side.get("sha256") != file_sha256(tar_path):
        return None
    try:
        samples = list(iter_shards([tar_path]))
    except ShardError as exc:
        log.warning("writing %s again: %s", unit.file, exc)
        return None
    fresh = _unit_stats(samples if side.get("split") == "train" else [])
    told = side.get("stats") or {}
    same = all(np.allclose(np.asarray(told.get(k, []), float), np.asarray(fresh.get(k, []),
                                                                          float), rtol=1e-9)
               for k in ("sum", "sumsq", "band_pixels")) and \
        told.get("pixels") == fresh.get("pixels") and told.get("labels") == fresh.get("labels")
    records = samples[0]["json"].get("band_info", []) if samples else []
    if not same or side.get("band_info", []) != records or side.get("n") != len(samples):
        log.warning("writing %s again: its sidecar's statistics or band records do not match "
                    "the samples in the shard", unit.file)
        return None
    return side


def write_unit(cfg: Config, folder: Path, unit: Unit, source) -> dict:
    """Read the scenes of one unit, cut them into patches and write its shard and sidecar
    (atomically); returns the sidecar. Runs in the build's process or in a worker."""
    scenes, unreadable = [], []
    key_of = getattr(source, "split_key", None)
    for i in unit.scenes:
        try:
            scene = source.scene(unit.dataset, i)
        except (ShardError, DataError) as exc:  # an image that cannot be decoded or used
            if cfg.source_for(unit.dataset).on_bad != "skip":
                raise
            unreadable.append(str(exc)[:200])
            continue
        key = key_of(unit.dataset, i) if key_of else None
        scene.meta = {**scene.meta, "split_key": key if key is not None else f"scene {i}"}
        scenes.append(scene)
    patches, objects = Counter(), Counter()
    samples = [s for sc in scenes for s in _patches(cfg, sc, unit.split, patches, objects)]
    check_physical(samples, unit.dataset)
    side = write_shard(folder / unit.file, samples)
    side["vocabulary"] = list(scenes[0].vocabulary) if scenes else []
    side["band_info"] = samples[0]["json"].get("band_info", []) if samples else []
    side["caption_hashes"] = _caption_hashes(samples)
    side["own_captions"] = sum(1 for x in samples if x["json"].get("captions"))
    side["unreadable_skipped"] = unreadable
    side["patches"] = {k: patches[k] for k in ("cut", "dropped", "empty")}
    side["split_keys"] = sorted({s["json"]["split_key"] for s in samples})
    side["objects"] = dict(objects)
    # normalisation statistics come from train only; val keeps just its label counts
    side.update(split=unit.split, dataset=unit.dataset,
                stats=_unit_stats(samples if unit.split == "train" else []),
                val_labels=dict(Counter(lab for s in samples for lab in s["json"]["labels"]))
                if unit.split == "val" else {})
    atomic_write_json(folder / (unit.file + ".json"), side)
    return side


def check_splits(manifest: dict, datasets) -> None:
    """Refuse a build that cannot be trained and evaluated: a dataset with no training or no
    validation sample, a dataset of the run missing, or an image in both splits.

    Raises:
        DataError: naming the dataset, what it has and how to get the missing split.
    """
    counts = manifest["counts"]
    missing = [ds for ds in datasets if ds not in counts]
    if missing:
        raise DataError(f"the build has no samples of {', '.join(missing)}; its source yielded "
                        f"none (see manifest.json -> source_reports)")
    for ds in datasets:
        c = counts[ds]
        for split in ("train", "val"):
            if c.get(split, 0) < 1:
                raise DataError(f"{ds} has no {split} samples (train {c.get('train', 0)}, val "
                                f"{c.get('val', 0)}): {_missing_split_cause(manifest, ds, split)}")
    for ds, unit in (manifest.get("split_units") or {}).items():
        if unit["on_both_sides"] and not unit["official"]:
            raise DataError(f"{ds}: {unit['on_both_sides']} split units (scenes, tiles or "
                            f"places, e.g. {', '.join(unit['examples'][:3])}) have patches in "
                            f"both train and val; rebuild the shards (work/shards/"
                            f"{manifest['data_hash']}) with this version of geofm")
    if manifest.get("duplicates_across_splits"):
        raise DataError(f"{manifest['duplicates_across_splits']} images occur in both train and "
                        f"val; rebuild the shards (the build removes such duplicates)")


def _missing_split_cause(manifest: dict, ds: str, split: str) -> str:
    """Why a dataset has no samples in ``split``, and the fix that helps (not always more
    samples: a single scene, unreadable images or an empty list need something else)."""
    unit = (manifest.get("split_units") or {}).get(ds, {})
    unreadable = (manifest.get("unreadable_skipped") or {}).get(ds, 0)
    patches = (manifest.get("patches") or {}).get(ds, {})
    params = manifest.get("params", {})
    if unreadable and not sum(manifest["counts"][ds].values()):
        return (f"all {unreadable} of its images were unreadable and skipped (on_bad: skip; "
                f"the reasons are in manifest.json -> unreadable_skipped); fix or replace the "
                f"files, or check the reader's options")
    if unit.get("official"):
        return (f"the dataset's own {split} list selects none of the files found on disk (see "
                f"manifest.json -> source_reports.{ds}); check the list, or use splits: random")
    if patches.get("cut") and patches.get("dropped") == patches.get("cut"):
        return (f"every one of its {patches['cut']} patches was dropped for too little valid "
                f"area (the reader's min_valid / max_nodata)")
    units = unit.get("train", 0) + unit.get("val", 0)
    if units == 1 and unit.get("grouped"):
        return ("all its images belong to one split unit (one scene, tile, place or block: "
                "the reader keeps a unit on one side so that neighbouring patches do not leak "
                "into validation); add images of another scene, use the dataset's own split "
                "lists (splits: official), or for one large GeoTIFF lower "
                "options.split_block_px")
    return (f"raise samples_per_dataset (now {params.get('samples_per_dataset')}) or "
            f"val_fraction (now {params.get('val_fraction')})")


def check_physical(samples: list[dict], dataset: str) -> None:
    """Refuse images holding values no measurement takes (``|x| >= NON_PHYSICAL_ABS``), such
    as an unflagged nodata value of -3.4e38: one such pixel makes the band's standard deviation
    about 1e36 and every normalised input zero. NaN and infinities are nodata and are left out
    of the statistics instead."""
    for s in samples:
        img = s["img"]
        if not np.issubdtype(img.dtype, np.floating) and np.iinfo(img.dtype).max < \
                NON_PHYSICAL_ABS:
            continue
        valid = _valid_mask(img, s["json"])
        big = np.abs(np.where(valid, img, 0).astype(np.float64)) >= NON_PHYSICAL_ABS
        if big.any():
            per_band = big.reshape(big.shape[0], -1).sum(axis=1)
            band_names = s["json"].get("bands") or [str(i) for i in range(len(per_band))]
            worst = int(np.argmax(per_band))
            value = float(img[worst][big[worst]].flat[0])
            raise DataError(
                f"{dataset}: sample {s['__key__']} has {int(per_band.sum())} pixel value(s) of "
                f"magnitude >= {NON_PHYSICAL_ABS:g} (band {band_names[worst]}: {value:g}), "
                f"which no remote-sensing measurement takes; it is probably a nodata value the "
                f"file does not declare. Declare it (e.g. rasterio: `rio edit-info --nodata "
                f"{value:g} FILE`, or write NaN there), or mask it before the data stage")


def _drop_val_duplicates(folder: Path, sidecars: dict) -> int:
    """Rewrite validation shards without images that also occur in train (by content hash)."""
    train = {h for s in sidecars.values() if s["split"] == "train" for h in s["content"]}
    removed = 0
    for name, side in sidecars.items():
        if side["split"] != "val":
            continue
        dup = {k for k, h in zip(side["keys"], side["content"]) if h in train}
        if not dup:
            continue
        kept = [s for s in iter_shards([folder / name], dense=True) if s["__key__"] not in dup]
        new = write_shard(folder / name, ({k: s[k] for k in ("__key__", "img", "txt", "json",
                                                              *DENSE_MEMBERS) if k in s}
                                          for s in kept))
        new.update(split="val", dataset=side["dataset"], stats=side["stats"],
                   vocabulary=side.get("vocabulary", []), band_info=side.get("band_info", []),
                   caption_hashes=_caption_hashes(kept),
                   own_captions=sum(1 for x in kept if x["json"].get("captions")),
                   unreadable_skipped=side.get("unreadable_skipped", []),
                   patches=side.get("patches", {}),
                   split_keys=sorted({s["json"]["split_key"] for s in kept
                                      if "split_key" in s["json"]}),
                   val_labels=dict(Counter(lab for s in kept for lab in s["json"]["labels"])))
        atomic_write_json(folder / (name + ".json"), new)
        sidecars[name] = new
        removed += len(dup)
    return removed


def _caption_hashes(samples) -> list[str]:
    """Short hashes of a shard's distinct captions (to count distinct captions per dataset)."""
    return sorted({hashlib.sha256(s["txt"].encode()).hexdigest()[:16] for s in samples})
