"""WebDataset shards: atomic, resumable, checksummed, with a manifest.

Layout of one build (``<work>/shards/<data_hash>/``)::

    train-bigearthnet_s2-000000.tar     one shard: samples of one dataset and split
    train-bigearthnet_s2-000000.tar.json  its sidecar: sha256, keys, content hashes, statistics
    ...
    manifest.json                       written last: the build is complete when it exists

Each sample holds ``img.npy`` (all bands, the product's own dtype, no lossy compression),
``txt`` (the caption) and ``json`` (labels, dataset, group, sensor, GSD, footprint, date, split,
pair id, the dominant land-cover class where the source knows it, ...). Shards are written
to a temporary name and renamed, so a shard that exists is whole; a build that is interrupted
resumes from the shards it has. Splits are assigned per scene (all patches of a scene go to the
same split) and checked by content hash: an image that also occurs in train is removed from
validation.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .captions import caption, join_labels
from .catalog import DATASETS
from .config import Config
from .errors import DataError, ShardError
from .io import atomic_path, atomic_write_bytes, atomic_write_json, folder_lock
from .progress import get_logger, progress

log = get_logger()

__all__ = ["ShardError", "atomic_write_bytes", "atomic_write_json"]  # re-exported helpers

SCHEMA_VERSION = 1
_TMP = r"(\.tmp|\.\d+-[0-9a-f]+\.tmp)?"  # legacy and per-process temporary names
_OURS = re.compile(rf"^(train|val)-[\w.-]+-\d{{6}}\.tar(\.json)?{_TMP}$"
                   rf"|^(manifest|verified)\.json{_TMP}$")
VERIFY_CACHE = "verified.json"  # sha256 of each shard, keyed by its size and mtime
# the metadata every sample's json member must carry (readers decode by these)
SAMPLE_KEYS = ("dataset", "bands", "labels", "split")
MANIFEST_KEYS = ("schema_version", "data_hash", "datasets", "counts", "band_stats", "shards",
                 "total_samples")
# a measured value of this magnitude (or more) is no physical remote-sensing quantity
# (reflectance, radiance, backscatter, heights, temperatures are all far below it): it is an
# unflagged nodata value such as -3.4e38 (float32's lowest), which would swamp the statistics
NON_PHYSICAL_ABS = 1e9


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_shard(path: Path, samples: Iterable[dict]) -> dict:
    """Write samples (dicts with __key__, img, txt, json) to one tar, atomically.

    Returns the sidecar dict (sha256, sample count, keys, image content hashes).
    """
    import webdataset as wds

    keys, hashes = [], []
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # fixed owner and mtime: the same samples give a byte-identical tar
        with wds.TarWriter(f, encoder=False, mtime=0.0, user="geofm", group="geofm") as tw:
            for s in samples:
                img = encode_npy(s["img"])
                tw.write({"__key__": s["__key__"], "img.npy": img,
                          "txt": s["txt"].encode(),
                          "json": json.dumps(s["json"], sort_keys=True).encode()})
                keys.append(s["__key__"])
                hashes.append(hashlib.sha256(s["img"].tobytes()).hexdigest()[:32])
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "n": len(keys), "keys": keys, "content": hashes}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- reading --------------------------------------------------------------------------------

def decode_sample(raw: dict) -> dict:
    """Decode one raw WebDataset sample; a bad member raises ShardError naming it."""
    url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
    out = {"__key__": key, "__url__": url}
    for member, fn in (("img.npy", lambda b: np.load(io.BytesIO(b), allow_pickle=False)),
                       ("txt", bytes.decode), ("json", json.loads)):
        if member not in raw:
            raise ShardError(f"shard {Path(str(url)).name}: sample {key!r} has no "
                             f"{member} member; the shard is incomplete - {_REBUILD}")
        try:
            out[member.split(".")[0]] = fn(raw[member])
        except Exception as exc:  # noqa: BLE001
            raise ShardError(f"shard {Path(str(url)).name}: member {key}.{member} cannot be "
                             f"decoded ({type(exc).__name__}: {exc}); the shard is corrupt - "
                             f"{_REBUILD}") from exc
    meta = out["json"]
    missing = [k for k in SAMPLE_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ShardError(f"shard {Path(str(url)).name}: sample {key!r} has no {missing} in its "
                         f"json member (it was not written by this workspace's data stage, or "
                         f"by an older one) - {_REBUILD}")
    return out


def iter_shards(paths: Iterable[Path]) -> Iterator[dict]:
    """Iterate decoded samples (img, txt, json) over shards, in order, with WebDataset.

    Raises:
        ShardError: on a truncated or corrupt tar, naming the file and the last good member.
    """
    import webdataset as wds

    for path in paths:
        path = Path(path)
        last = None
        try:
            # every process reads the shards it is given: no splitting by node or worker (the
            # training stream splits samples itself, see training.TrainStream)
            for raw in wds.WebDataset(str(path), shardshuffle=False, empty_check=False,
                                      nodesplitter=None, workersplitter=None):
                sample = decode_sample(raw)
                last = sample["__key__"]
                yield sample
        except ShardError:
            raise
        except Exception as exc:  # tarfile.ReadError, EOFError, ...
            after = f"after member {last}.json" if last else "at its first member"
            raise ShardError(f"shard {path.name} is truncated or corrupt {after} "
                             f"({type(exc).__name__}: {str(exc)[:200]}); {_REBUILD}") from exc


def content_hashes(paths: Iterable[Path]) -> set[str]:
    """Pixel-content hashes of every image in these shards, from their sidecars (no decoding)."""
    out: set[str] = set()
    for path in paths:
        side = Path(path).with_name(Path(path).name + ".json")
        if not side.is_file():
            raise ShardError(f"shard {Path(path).name} has no sidecar {side.name}; rebuild the "
                             "data")
        out.update(json.loads(side.read_text())["content"])
    return out


def read_samples(paths: Iterable[Path], keys: Iterable[str]) -> dict[str, dict]:
    """The decoded samples with these keys (one pass over the shards; missing keys are an
    error naming them)."""
    wanted = set(keys)
    found = {}
    for s in iter_shards(paths):
        if s["__key__"] in wanted:
            found[s["__key__"]] = s
            if len(found) == len(wanted):
                break
    missing = wanted - set(found)
    if missing:
        raise ShardError(f"{len(missing)} sample(s) not found in the shards, e.g. "
                         f"{sorted(missing)[:3]}; were the shards rebuilt after evaluation? "
                         "Re-run the notebooks in order")
    return found


_REBUILD = ("re-run notebooks/01_data_prep.ipynb (or `geofm data`) with the same parameters: "
            "it rebuilds missing and damaged shards")


def _read_manifest(folder: Path) -> dict:
    """manifest.json of a build, parsed and checked for the keys readers use (no shard I/O)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise ShardError(f"no manifest.json in {Path(folder).name}: the build is missing or "
                         "unfinished; run notebooks/01_data_prep.ipynb (or `geofm data`)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{Path(folder).name}/manifest.json is not valid JSON ({exc}); it is "
                         f"damaged: {_REBUILD}") from None
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise ShardError(f"{Path(folder).name}/manifest.json has no {missing}: it is damaged or "
                         f"not a geofm manifest; {_REBUILD}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ShardError(f"{Path(folder).name}/manifest.json has schema version "
                         f"{manifest['schema_version']!r}, this workspace reads "
                         f"{SCHEMA_VERSION}; {_REBUILD}")
    bad = [e for e in manifest["shards"] if not isinstance(e, dict) or
           not {"file", "split", "dataset", "n", "sha256", "bytes"} <= set(e)]
    if bad:
        raise ShardError(f"{Path(folder).name}/manifest.json lists {len(bad)} shard(s) without "
                         f"file, split, dataset, n, sha256 and bytes; {_REBUILD}")
    return manifest


def _stat_key(path: Path) -> list[int] | None:
    """What changes whenever a file's bytes may have changed: size, inode, mtime and ctime
    (``cp -p``, ``rsync -a`` or ``touch -r`` can restore an mtime; nobody can set a ctime)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _read_cache(path: Path) -> dict:
    """verified.json, with anything malformed read as "not verified" (never an error)."""
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(cache, dict):
        return {}
    return {k: v for k, v in cache.items()
            if isinstance(v, dict) and {"tar", "sidecar", "sha256", "n"} <= set(v)}


_VERIFIED: dict[tuple, bool] = {}  # builds verified in this process, by their files' stats


def build_problems(folder: Path, manifest: dict, use_cache: bool = True) -> list[tuple[str, str]]:
    """What is wrong with a finished build: ``[(file, problem), ...]``, empty when whole.

    Checked, cheaply first: each listed shard exists with the manifest's size; its sidecar
    exists and agrees with the manifest (sha256, sample count, keys); the manifest's counts
    equal the sum of its shards; and each shard's sha256 equals the manifest's. The hashes
    are cached in ``verified.json`` (keyed by each tar's and sidecar's size and mtime) and in
    memory, so a build is hashed once, not on every read.
    """
    folder = Path(folder)
    entries = manifest["shards"]
    stats = {e["file"]: (_stat_key(folder / e["file"]),
                         _stat_key(folder / (e["file"] + ".json"))) for e in entries}
    memo = (str(folder.resolve()), json.dumps(_stat_key(folder / "manifest.json")),
            json.dumps(stats, sort_keys=True))
    if use_cache and memo in _VERIFIED:
        return []
    problems: list[tuple[str, str]] = []
    counts: dict = defaultdict(lambda: defaultdict(int))
    for e in entries:
        counts[e["dataset"]][e["split"]] += e["n"]
    for ds, per_split in counts.items():
        for split, n in per_split.items():
            listed = (manifest["counts"].get(ds) or {}).get(split)
            if listed != n:
                problems.append(("manifest.json", f"counts {ds}/{split} = {listed!r}, but its "
                                                  f"shards hold {n} samples"))
    if manifest["total_samples"] != sum(e["n"] for e in entries):
        problems.append(("manifest.json", f"total_samples = {manifest['total_samples']!r}, but "
                                          f"the shards hold {sum(e['n'] for e in entries)}"))
    cache_path = folder / VERIFY_CACHE
    cache = _read_cache(cache_path) if use_cache else {}
    new_cache = {}
    for e in entries:
        tar_stat, side_stat = stats[e["file"]]
        if tar_stat is None:
            problems.append((e["file"], "is missing"))
            continue
        if tar_stat[0] != e["bytes"]:
            problems.append((e["file"], f"has {tar_stat[0]} bytes, the manifest says "
                                        f"{e['bytes']} (changed or truncated)"))
            continue
        if side_stat is None:
            problems.append((e["file"], f"has no sidecar {e['file']}.json"))
            continue
        hit = cache.get(e["file"])
        if hit and hit["tar"] == tar_stat and hit["sidecar"] == side_stat \
                and hit["sha256"] == e["sha256"] and hit.get("n") == e["n"]:
            new_cache[e["file"]] = hit
            continue
        try:
            side = json.loads((folder / (e["file"] + ".json")).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append((e["file"], f"its sidecar is not valid JSON ({exc})"))
            continue
        if side.get("sha256") != e["sha256"] or side.get("n") != e["n"] or \
                len(side.get("keys") or ()) != e["n"]:
            problems.append((e["file"], "its sidecar disagrees with manifest.json (sha256 or "
                                        "sample count)"))
            continue
        digest = file_sha256(folder / e["file"])
        if digest != e["sha256"]:
            problems.append((e["file"], "does not match its checksum in manifest.json (its "
                                        "bytes were changed: copied over, edited or damaged)"))
            continue
        new_cache[e["file"]] = {"tar": tar_stat, "sidecar": side_stat, "sha256": digest,
                                "n": e["n"]}
    if use_cache and new_cache != cache:
        _write_cache(cache_path, new_cache)
    if not problems:
        _VERIFIED[memo] = True
    return problems


def _write_cache(path: Path, cache: dict) -> None:
    try:  # a read-only build (e.g. shared data) is still verified, just not cached
        atomic_write_json(path, cache)
    except OSError:
        pass


def _seed_cache(folder: Path, manifest: dict) -> None:
    """Record a build that this process just wrote (or checked) as verified, without hashing
    it again: each shard's sha256 in the manifest came from hashing the file after writing."""
    cache = {}
    for e in manifest["shards"]:
        cache[e["file"]] = {"tar": _stat_key(folder / e["file"]),
                            "sidecar": _stat_key(folder / (e["file"] + ".json")),
                            "sha256": e["sha256"], "n": e["n"]}
    _write_cache(folder / VERIFY_CACHE, cache)


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished build that matches its manifest (what
    :func:`build_shards` reuses as it is)."""
    try:
        return not build_problems(folder, _read_manifest(folder))
    except ShardError:
        return False


def verify_build(folder: Path, manifest: dict, use_cache: bool = True) -> None:
    """Raise :class:`ShardError` naming the damaged files of a build (see
    :func:`build_problems`) and the fix."""
    problems = build_problems(folder, manifest, use_cache)
    if problems:
        shown = "; ".join(f"{f} {why}" for f, why in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ShardError(f"the shards in {Path(folder).name} do not match their manifest: "
                         f"{shown}{more}; {_REBUILD}")


def verify_shards(folder: Path, manifest: dict | None = None) -> None:
    """Check every shard of a build against its manifest, hashing every file again."""
    verify_build(folder, manifest or _read_manifest(folder), use_cache=False)


def load_manifest(folder: Path, verify: bool = True) -> dict:
    """The manifest of a finished build, after checking the build against it.

    Every reader of shards (training, evaluation, probes, SSL, the notebooks) comes through
    here or :func:`shard_paths`, so none reads a shard that was changed, truncated, copied
    over or removed since the build. ``verify=False`` skips the shard checks (the data stage
    uses it to find what to rebuild).

    Raises:
        ShardError: no manifest, a damaged manifest, or shards that do not match it.
    """
    manifest = _read_manifest(folder)
    if verify:
        verify_build(Path(folder), manifest)
    return manifest


def shard_paths(folder: Path, split: str, dataset: str | None = None) -> list[Path]:
    """Shards of a split (and dataset) of a finished build, from its manifest."""
    manifest = load_manifest(folder)
    return [Path(folder) / s["file"] for s in manifest["shards"]
            if s["split"] == split and (dataset is None or s["dataset"] == dataset)]


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
    """Seeded scene-level split; at least one validation scene when n > 1.

    Datasets imaging the same places (Sentinel-1 and Sentinel-2 of BigEarthNet v1/v2 and
    SSL4EO-S12, paired by ``pair_id``, scene ``i`` of one the same place as scene ``i`` of the
    other) share the split of their scenes, so a validation place is never seen in training
    through the other sensor.
    """
    from .catalog import pair_family

    family = pair_family(dataset)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1 if n > 1 else 0), n - 1) if n > 1 else 0
    order = np.random.default_rng([seed, 99, *family.encode()]).permutation(n)
    val = sorted(order[:n_val].tolist())
    vs = set(val)
    return {"train": [i for i in range(n) if i not in vs], "val": val}


def plan_units(cfg: Config, source) -> list[Unit]:
    """Deterministic list of shards for a build."""
    step = cfg.patch_stride_px or cfg.image_px
    per_scene = max((cfg.effective_scene_px - cfg.image_px) // step + 1, 1) ** 2
    scenes_per_shard = max(cfg.shard_size // per_scene, 1)
    units = []
    for dataset in source.datasets:
        n = source.count(dataset)
        official = getattr(source, "splits", lambda _ds: None)(dataset)
        plan = official or split_scenes(n, cfg.val_fraction, cfg.seed, dataset)
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


def _patches(cfg: Config, scene, split: str) -> Iterator[dict]:
    p = cfg.image_px
    if scene.meta.get("whole_image"):  # labels/captions describe the whole image: resize
        native = list(scene.image.shape[1:])
        scene.image = resize_image(scene.image, p)
        scene.meta = dict(scene.meta, native_px=native)
    _, h, w = scene.image.shape
    if h < p or w < p:
        raise ShardError(f"scene {scene.dataset}/{scene.index} is {h}x{w} px, smaller than "
                         f"image_px={p}")
    step = cfg.patch_stride_px or p
    origins = [(y, x) for y in range(0, h - p + 1, step) for x in range(0, w - p + 1, step)]
    bounds = scene.meta.get("footprint", {}).get("bounds")
    for k, (y, x) in enumerate(origins):
        labels = scene.label_window(y, x, p, p)
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
        elif scene.dataset in DATASETS:
            text = caption(scene.dataset, labels, cfg.caption_metadata, cfg.seed,
                           scene.index * 4096 + k)
        else:  # a custom source (e.g. a GeoTIFF scene) has no catalog entry for sensor phrases
            text = "An overhead image showing " + join_labels(labels) + "."
        yield {"__key__": f"{scene.dataset}-{scene.index:07d}-{k:03d}",
               "img": scene.image[:, y:y + p, x:x + p], "txt": text, "json": meta}


def _valid_mask(img: np.ndarray, nodata) -> np.ndarray:
    """Pixels that hold a measurement: finite and not the file's declared nodata value."""
    valid = np.isfinite(img) if np.issubdtype(img.dtype, np.floating) else \
        np.ones(img.shape, bool)
    if nodata is not None and np.isfinite(nodata):
        valid &= img != nodata
    return valid


def _unit_stats(samples: list[dict]) -> dict:
    """Per-band sums for normalisation statistics, and label counts, of one shard."""
    if not samples:
        return {"pixels": 0, "sum": [], "sumsq": [], "labels": {}}
    imgs = np.stack([s["img"] for s in samples]).astype(np.float64)
    labels = Counter(lab for s in samples for lab in s["json"]["labels"])
    # NaN/inf and declared nodata values are no measurements: kept out of the statistics
    finite = np.stack([_valid_mask(s["img"], s["json"].get("nodata")) for s in samples])
    nonfinite = int(finite.size - finite.sum())
    if nonfinite:
        imgs = np.where(finite, imgs, 0.0)
    return {"pixels": int(imgs.shape[0] * imgs.shape[2] * imgs.shape[3]),
            "band_pixels": finite.sum(axis=(0, 2, 3)).tolist(), "nonfinite": nonfinite,
            "sum": imgs.sum(axis=(0, 2, 3)).tolist(),
            "sumsq": (imgs ** 2).sum(axis=(0, 2, 3)).tolist(),
            "labels": dict(labels), "bands": samples[0]["json"]["bands"],
            "empty_label_sets": sum(1 for s in samples if not s["json"]["labels"])}


def build_folder(cfg: Config) -> Path:
    return cfg.path("shards", cfg.data_hash)


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
    from .sources import open_source

    folder = build_folder(cfg)
    check_folder(folder)
    if is_complete(folder):  # no lock needed to reuse a whole build (it may be read-only)
        return folder
    if source is None:
        source = open_source(cfg)  # validates the source before anything is written or removed
    with folder_lock(folder, f"the shard build {folder.name}", wait=True, log=log):
        check_folder(folder)
        if (folder / "manifest.json").is_file() and not _damaged_build(folder):
            return folder  # another process finished (or repaired) it while we waited
        return _build_locked(cfg, folder, source, show_progress)


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


def _build_locked(cfg: Config, folder: Path, source, show_progress: bool) -> Path:
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
    sidecars = {}
    for unit in progress(units, desc="writing shards", unit="shard",
                         disable=not show_progress):
        side_path = folder / (unit.file + ".json")
        tar_path = folder / unit.file
        if side_path.is_file() and tar_path.is_file():
            side = json.loads(side_path.read_text())
            if side.get("sha256") == file_sha256(tar_path):
                sidecars[unit.file] = side
                continue
        scenes, unreadable = [], []
        for i in unit.scenes:
            try:
                scenes.append(source.scene(unit.dataset, i))
            except ShardError as exc:  # an image that exists but cannot be decoded
                if cfg.source_for(unit.dataset).on_bad != "skip":
                    raise
                unreadable.append(str(exc)[:200])
        samples = [s for sc in scenes for s in _patches(cfg, sc, unit.split)]
        check_physical(samples, unit.dataset)
        side = write_shard(tar_path, samples)
        side["vocabulary"] = list(scenes[0].vocabulary) if scenes else []
        side["unreadable_skipped"] = unreadable
        # normalisation statistics come from train only; val keeps just its label counts
        side.update(split=unit.split, dataset=unit.dataset,
                    stats=_unit_stats(samples if unit.split == "train" else []),
                    val_labels=dict(Counter(lab for s in samples for lab in s["json"]["labels"]))
                    if unit.split == "val" else {})
        atomic_write_json(side_path, side)
        sidecars[unit.file] = side
    removed = _drop_val_duplicates(folder, sidecars)
    reports = {ds: source.report(ds) for ds in source.datasets} if hasattr(source, "report") \
        else {}
    manifest = _manifest(cfg, units, sidecars, removed, reports)
    atomic_write_json(folder / "manifest.json", manifest)
    _seed_cache(folder, manifest)  # readers find the build verified without hashing it again
    return folder


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
        valid = _valid_mask(img, s["json"].get("nodata"))
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
        kept = [s for s in iter_shards([folder / name]) if s["__key__"] not in dup]
        new = write_shard(folder / name, ({"__key__": s["__key__"], "img": s["img"],
                                           "txt": s["txt"], "json": s["json"]} for s in kept))
        new.update(split="val", dataset=side["dataset"], stats=side["stats"],
                   vocabulary=side.get("vocabulary", []),
                   unreadable_skipped=side.get("unreadable_skipped", []),
                   val_labels=dict(Counter(lab for s in kept for lab in s["json"]["labels"])))
        atomic_write_json(folder / (name + ".json"), new)
        sidecars[name] = new
        removed += len(dup)
    return removed


def _vocabularies(units: list[Unit], sidecars: dict) -> dict[str, list[str]]:
    """Each dataset's label vocabulary as its source gave it (catalog or vector file)."""
    out: dict[str, list[str]] = {}
    for u in units:
        vocab = sidecars[u.file].get("vocabulary") or []
        if vocab or u.dataset not in out:
            out[u.dataset] = vocab
    return out


def _manifest(cfg: Config, units: list[Unit], sidecars: dict, removed: int,
              source_reports: dict | None = None) -> dict:
    counts: dict = defaultdict(lambda: {"train": 0, "val": 0})
    freq: dict = defaultdict(lambda: {"train": Counter(), "val": Counter()})
    sums: dict = {}
    shards = []
    for unit in units:
        side = sidecars[unit.file]
        counts[unit.dataset][unit.split] += side["n"]
        st = side["stats"]
        freq[unit.dataset][unit.split].update(st["labels"] if unit.split == "train"
                                              else side.get("val_labels", {}))
        if st.get("pixels"):
            acc = sums.setdefault(unit.dataset, {"pixels": 0, "sum": 0, "sumsq": 0,
                                                 "band_pixels": 0, "nonfinite": 0,
                                                 "bands": st["bands"], "empty": 0})
            acc["pixels"] += st["pixels"]
            acc["band_pixels"] = np.add(acc["band_pixels"], st.get("band_pixels", st["pixels"]))
            acc["nonfinite"] += st.get("nonfinite", 0)
            acc["sum"] = np.add(acc["sum"], st["sum"])
            acc["sumsq"] = np.add(acc["sumsq"], st["sumsq"])
            acc["empty"] += st["empty_label_sets"]
        shards.append({"file": unit.file, "split": unit.split, "dataset": unit.dataset,
                       "n": side["n"], "sha256": side["sha256"], "bytes": side["bytes"]})
    band_stats = {}
    for ds, acc in sums.items():
        n = np.maximum(np.asarray(acc["band_pixels"], dtype=np.float64), 1)
        mean = acc["sum"] / n
        std = np.sqrt(np.maximum(acc["sumsq"] / n - mean ** 2, 0))
        band_stats[ds] = {"bands": acc["bands"], "mean": np.round(mean, 4).tolist(),
                          "std": np.round(std, 4).tolist(), "pixels": acc["pixels"],
                          "nonfinite_values": int(acc["nonfinite"]),
                          "from_split": "train"}
    all_train = {h for s in sidecars.values() if s["split"] == "train" for h in s["content"]}
    all_val = {h for s in sidecars.values() if s["split"] == "val" for h in s["content"]}
    return {
        "schema_version": SCHEMA_VERSION, "data_hash": cfg.data_hash, "params_hash": cfg.hash,
        "params": {k: cfg.to_dict()[k] for k in ("group", "datasets", "source",
                                                  "samples_per_dataset", "image_px",
                                                  "scene_px", "caption_metadata",
                                                  "val_fraction", "shard_size", "seed")},
        "datasets": list(counts),
        "counts": {ds: dict(c) for ds, c in counts.items()},
        "label_frequencies": {ds: {sp: dict(sorted(c.items())) for sp, c in f.items()}
                              for ds, f in freq.items()},
        "band_stats": band_stats,
        "vocabularies": _vocabularies(units, sidecars),
        "source_reports": source_reports or {},
        "unreadable_skipped": {ds: n for ds, n in Counter(
            u.dataset for u in units for _ in sidecars[u.file].get("unreadable_skipped", [])
        ).items()},
        "val_duplicates_removed": removed,
        "duplicates_across_splits": len(all_train & all_val),
        "shards": shards,
        "total_samples": sum(s["n"] for s in shards),
        "total_bytes": sum(s["bytes"] for s in shards),
    }
