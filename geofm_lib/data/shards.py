"""WebDataset shards: atomic, resumable, checksummed, with a manifest.

Layout of one build (``<work>/shards/<data_hash>/``)::

    train-bigearthnet_s2-000000.tar     one shard: samples of one dataset and split
    train-bigearthnet_s2-000000.tar.json  its sidecar: sha256, keys, content hashes, statistics
    ...
    manifest.json                       written last: the build is complete when it exists

Each sample holds its image losslessly compressed, in the product's own dtype and all its
bands: ``img.png`` for 8-bit images of one or three bands (PNG), else ``img.npy.blosc`` (the
``.npy`` file compressed by Blosc: zstd with byte shuffle, which groups the high and low bytes of
16-bit and float values; ``numcodecs.Blosc().decode`` gives the ``.npy`` bytes back). Builds of
older workspaces hold plain ``img.npy`` and still read. Then ``txt`` (the caption) and
``json`` (labels, dataset, group, sensor, GSD, footprint, date, split, pair id, the dominant
land-cover class where the source knows it, ...), and where the source has dense labels
``mask.png`` and ``trees.png`` (``data.masks``). Shards are written
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
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import webdataset as wds

from geofm_lib.bands import BandRecord
from geofm_lib.data.masks import DENSE_MEMBERS
from geofm_lib.errors import ShardError
from geofm_lib.io import atomic_path, atomic_write_bytes, atomic_write_json

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


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


IMAGE_MEMBERS = ("img.png", "img.npy.blosc", "img.npy")  # written (first two) and read


def _blosc():
    from numcodecs import Blosc, blosc

    blosc.use_threads = False  # one thread: workers run in parallel already, output is fixed
    return Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)


def encode_image(array: np.ndarray) -> tuple[str, bytes]:
    """(member name, bytes) of a (bands, H, W) image, lossless: PNG for 8-bit images of one or
    three bands, else the .npy file compressed by Blosc (zstd, byte shuffle by the value's
    size, so the high and low bytes of 16-bit and float values are compressed apart)."""
    from PIL import Image

    array = np.ascontiguousarray(array)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[0] in (1, 3):
        img = Image.fromarray(array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1),
                              "L" if array.shape[0] == 1 else "RGB")
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=6)
        return "img.png", buf.getvalue()
    raw = encode_npy(array)  # its header is padded to a multiple of 64 bytes: values stay
    width = array.dtype.itemsize  # aligned for the shuffle
    return "img.npy.blosc", _blosc().encode(np.frombuffer(raw, dtype=f"u{width}")
                                            if len(raw) % width == 0 else raw)


def decode_image(member: str, data: bytes) -> np.ndarray:
    """The (bands, H, W) array of an image member written by :func:`encode_image` (or a plain
    ``img.npy`` of older builds)."""
    if member == "img.png":
        from PIL import Image

        a = np.asarray(Image.open(io.BytesIO(data)))
        return a[None] if a.ndim == 2 else np.ascontiguousarray(np.moveaxis(a, -1, 0))
    if member == "img.npy.blosc":
        data = bytes(_blosc().decode(data))
    return np.load(io.BytesIO(data), allow_pickle=False)


def write_shard(path: Path, samples: Iterable[dict]) -> dict:
    """Write samples (dicts with __key__, img, txt, json) to one tar, atomically.

    Returns the sidecar dict (sha256, sample count, keys, image content hashes).
    """
    keys, hashes = [], []
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # fixed owner and mtime: the same samples give a byte-identical tar (an integer
        # mtime: a float one costs each member an extra 1 KB pax header)
        with wds.TarWriter(f, encoder=False, mtime=0, user="geofm", group="geofm") as tw:
            for s in samples:
                member, img = encode_image(s["img"])
                dense = {f"{n}.png": encode_image(s[n][None])[1] for n in DENSE_MEMBERS
                         if n in s}
                tw.write({"__key__": s["__key__"], member: img, **dense,
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

def decode_sample(raw: dict, dense: bool = False) -> dict:
    """Decode one raw WebDataset sample; a bad member raises ShardError naming it. ``dense``:
    also the dense labels (``mask``, ``trees``) where the sample has them (readers that do
    not use them skip two PNG decodes per sample)."""
    url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
    out = {"__key__": key, "__url__": url}
    image = next((m for m in IMAGE_MEMBERS if m in raw), "img.png")
    for member, fn in ((image, lambda b: decode_image(image, b)),
                       ("txt", bytes.decode), ("json", json.loads)):
        if member not in raw:
            what = "image (img.png, img.npy.blosc or img.npy)" if member == image else member
            raise ShardError(f"shard {Path(str(url)).name}: sample {key!r} has no "
                             f"{what} member; the shard is incomplete - {_REBUILD}")
        try:
            out[member.split(".")[0]] = fn(raw[member])
        except Exception as exc:  # noqa: BLE001
            raise ShardError(f"shard {Path(str(url)).name}: member {key}.{member} cannot be "
                             f"decoded ({type(exc).__name__}: {exc}); the shard is corrupt - "
                             f"{_REBUILD}") from exc
    for name in DENSE_MEMBERS if dense else ():  # dense labels (data.masks), where present
        if f"{name}.png" in raw:
            try:
                out[name] = decode_image("img.png", raw[f"{name}.png"])[0]
            except Exception as exc:  # noqa: BLE001
                raise ShardError(f"shard {Path(str(url)).name}: member {key}.{name}.png "
                                 f"cannot be decoded ({type(exc).__name__}: {exc}); the shard "
                                 f"is corrupt - {_REBUILD}") from exc
    meta = out["json"]
    missing = [k for k in SAMPLE_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ShardError(f"shard {Path(str(url)).name}: sample {key!r} has no {missing} in its "
                         f"json member (it was not written by this workspace's data stage, or "
                         f"by an older one) - {_REBUILD}")
    img, bands = out["img"], meta.get("bands") or []
    if img.ndim != 3 or (bands and img.shape[0] != len(bands)):
        listed = ", ".join(bands[:4]) + (" ..." if len(bands) > 4 else "")
        raise ShardError(f"shard {Path(str(url)).name}: sample {key!r} holds an image of shape "
                         f"{tuple(img.shape)}, but its record lists {len(bands)} bands "
                         f"({listed}); its payload is another product's (or was replaced) - "
                         f"{_REBUILD}")
    return out


def iter_shards(paths: Iterable[Path], dense: bool = False) -> Iterator[dict]:
    """Iterate decoded samples (img, txt, json; with ``dense`` also mask and trees where
    they are) over shards, in order, with WebDataset.

    Raises:
        ShardError: on a truncated or corrupt tar, naming the file and the last good member.
    """
    for path in paths:
        path = Path(path)
        last = None
        expected = _sidecar_content(path)
        try:
            # every process reads the shards it is given: no splitting by node or worker (the
            # training stream splits samples itself, see training.TrainStream)
            for k, raw in enumerate(wds.WebDataset(str(path), shardshuffle=False,
                                                   empty_check=False, nodesplitter=None,
                                                   workersplitter=None)):
                sample = decode_sample(raw, dense)
                last = sample["__key__"]
                if expected is not None and k % CONTENT_CHECK_EVERY == 0:
                    _check_content(path, k, sample, expected)
                yield sample
        except ShardError:
            raise
        except Exception as exc:  # tarfile.ReadError, EOFError, ...
            after = f"after member {last}.json" if last else "at its first member"
            raise ShardError(f"shard {path.name} is truncated or corrupt {after} "
                             f"({type(exc).__name__}: {str(exc)[:200]}); {_REBUILD}") from exc


CONTENT_CHECK_EVERY = 8
"""Every how many samples a reader checks the image against its sidecar's content hash (the
tar's sha256 is checked whole; this catches a tar and sidecar changed together, at about 1/8
of a SHA-256 over the pixels per sample)."""


def _sidecar_content(path: Path) -> list | None:
    side = path.with_name(path.name + ".json")
    try:
        data = json.loads(side.read_text())
        return list(zip(data["keys"], data["content"], strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no sidecar (a shard read alone): the tar's own checks apply


def _check_content(path: Path, k: int, sample: dict, expected: list) -> None:
    digest = hashlib.sha256(sample["img"].tobytes()).hexdigest()[:32]
    if k >= len(expected) or expected[k] != (sample["__key__"], digest):
        # the tar and its sidecar agree with each other (a resumed build keeps them), so the
        # fix is to remove both: the next build writes the shard again
        raise ShardError(f"shard {path.name}: sample {sample['__key__']!r} does not match the "
                         f"content hash its sidecar recorded when it was written (the tar and "
                         f"its sidecar were changed after the build): remove {path} and "
                         f"{path.name}.json beside it, then re-run notebooks/01_data_prep.ipynb "
                         f"(or `geofm data`) with the same parameters to write it again")


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


class Manifest(dict):
    """A build's ``manifest.json`` (a dict, as written), with accessors for what readers ask:

    ``counts`` {dataset: {split: n}}, ``band_stats`` {dataset: {bands, mean, std, ...}} of the
    training split, ``vocabularies`` {dataset: labels}, ``label_frequencies``, ``shards`` (file,
    split, dataset, n, sha256, bytes), ``data_hash``, ``total_samples``, ``reports``."""

    def count(self, dataset: str, split: str) -> int:
        return int(self["counts"].get(dataset, {}).get(split, 0))

    def train_samples(self, datasets) -> int:
        return sum(self["counts"][ds]["train"] for ds in datasets)

    def band_stats_for(self, datasets) -> dict:
        """{dataset: its band statistics}, for the datasets of a run."""
        return {ds: self["band_stats"][ds] for ds in datasets}

    def bands(self, dataset: str) -> list[str]:
        return list(self["band_stats"].get(dataset, {}).get("bands", []))

    def band_records(self, dataset: str) -> list[BandRecord]:
        """The dataset's bands as records: canonical name, wavelength, width, units, nodata."""
        return [BandRecord.from_dict(d) for d in self.get("band_records", {}).get(dataset, [])]

    def empty_bands(self, dataset: str) -> list[str]:
        """Bands without one measurement in the training split (entirely nodata)."""
        return list(self["band_stats"].get(dataset, {}).get("all_nodata", []))

    def vocabulary(self, dataset: str) -> list[str]:
        """The dataset's label vocabulary; empty for caption corpora and unlabelled data."""
        return list((self.get("vocabularies") or {}).get(dataset) or [])

    def label_frequency(self, dataset: str, split: str = "train") -> dict[str, int]:
        return dict(self["label_frequencies"].get(dataset, {}).get(split, {}))


def load_manifest(folder: Path, verify: bool = True) -> Manifest:
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
    return Manifest(manifest)


def shard_paths(folder: Path, split: str, dataset: str | None = None) -> list[Path]:
    """Shards of a split (and dataset) of a finished build, from its manifest."""
    manifest = load_manifest(folder)
    return [Path(folder) / s["file"] for s in manifest["shards"]
            if s["split"] == split and (dataset is None or s["dataset"] == dataset)]
