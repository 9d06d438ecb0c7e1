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
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .captions import caption, join_labels
from .catalog import DATASETS
from .config import Config
from .progress import progress

SCHEMA_VERSION = 1
_OURS = re.compile(r"^(train|val)-[\w.-]+-\d{6}\.tar(\.json)?(\.tmp)?$|^manifest\.json(\.tmp)?$")


class ShardError(RuntimeError):
    """A shard or build folder that cannot be used, with the file (and member) named."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (never a half file)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_shard(path: Path, samples: Iterable[dict]) -> dict:
    """Write samples (dicts with __key__, img, txt, json) to one tar, atomically.

    Returns the sidecar dict (sha256, sample count, keys, image content hashes).
    """
    import webdataset as wds

    tmp = path.with_name(path.name + ".tmp")
    keys, hashes = [], []
    with open(tmp, "wb") as f:
        # fixed owner and mtime: the same samples give a byte-identical tar
        with wds.TarWriter(f, encoder=False, mtime=0.0, user="geofm", group="geofm") as tw:
            for s in samples:
                img = encode_npy(s["img"])
                tw.write({"__key__": s["__key__"], "img.npy": img,
                          "txt": s["txt"].encode(),
                          "json": json.dumps(s["json"], sort_keys=True).encode()})
                keys.append(s["__key__"])
                hashes.append(hashlib.sha256(s["img"].tobytes()).hexdigest()[:32])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
                             f"{member} member; the shard is incomplete - rebuild it")
        try:
            out[member.split(".")[0]] = fn(raw[member])
        except Exception as exc:  # noqa: BLE001
            raise ShardError(f"shard {Path(str(url)).name}: member {key}.{member} cannot be "
                             f"decoded ({type(exc).__name__}: {exc}); the shard is corrupt - "
                             f"delete it and rebuild") from exc
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
                             f"({type(exc).__name__}: {str(exc)[:200]}); delete it and "
                             f"rebuild") from exc


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


def verify_shards(folder: Path, manifest: dict | None = None) -> None:
    """Check every shard of a build against the sha256 in its manifest."""
    manifest = manifest or load_manifest(folder)
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            raise ShardError(f"shard {entry['file']} listed in the manifest is missing; "
                             "rebuild the data")
        if file_sha256(path) != entry["sha256"]:
            raise ShardError(f"shard {entry['file']} does not match its checksum in "
                             "manifest.json: it was changed or truncated; delete it and rebuild")


def load_manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise ShardError(f"no manifest.json in {Path(folder).name}: the build is missing or "
                         "unfinished; run notebooks/01_data_prep.ipynb (or `geofm data`)")
    return json.loads(path.read_text())


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


def _unit_stats(samples: list[dict]) -> dict:
    """Per-band sums for normalisation statistics, and label counts, of one shard."""
    if not samples:
        return {"pixels": 0, "sum": [], "sumsq": [], "labels": {}}
    imgs = np.stack([s["img"] for s in samples]).astype(np.float64)
    labels = Counter(lab for s in samples for lab in s["json"]["labels"])
    finite = np.isfinite(imgs)
    nonfinite = int(finite.size - finite.sum())
    if nonfinite:  # NaN/inf pixels (nodata of float products) stay out of the statistics
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
    """Build (or resume, or reuse) the shards of ``cfg``; returns the build folder.

    A finished build with the same data hash is reused as is. An interrupted build resumes: shards
    whose tar and sidecar exist and agree are kept, the rest are written.
    """
    from .sources import open_source

    folder = build_folder(cfg)
    check_folder(folder)
    if (folder / "manifest.json").is_file():
        return folder
    source = source or open_source(cfg)  # validates the source before any writing
    if cfg.samples_per_dataset < 1:
        raise ShardError("samples_per_dataset must be at least 1")
    units = plan_units(cfg, source)
    if not units:
        raise ShardError("the source yielded no scenes; check samples_per_dataset and "
                         "source_path")
    folder.mkdir(parents=True, exist_ok=True)
    for tmp in folder.glob("*.tmp"):  # leftovers of an interrupted write
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
    return folder


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
