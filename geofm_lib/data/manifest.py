"""The manifest of a shard build, made from its units' sidecars: counts, label frequencies,
band statistics (from the training split), vocabularies, band records, caption and patch
counts, what each reader found and left out. ``build.build_shards`` writes it last."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from geofm_lib.catalog import pair_family
from geofm_lib.config import Config
from geofm_lib.data.shards import SCHEMA_VERSION


def _vocabularies(units: list, sidecars: dict) -> dict[str, list[str]]:
    """Each dataset's label vocabulary as its source gave it (catalog or vector file)."""
    out: dict[str, list[str]] = {}
    for u in units:
        vocab = sidecars[u.file].get("vocabulary") or []
        if vocab or u.dataset not in out:
            out[u.dataset] = vocab
    return out


def _caption_counts(units: list, sidecars: dict) -> dict[str, dict[str, dict]]:
    """Per dataset and split: how many different captions (1: every image the same text) and
    how many images carry captions of their own (a corpus) rather than ones made from
    labels."""
    seen: dict = defaultdict(lambda: defaultdict(set))
    own: dict = defaultdict(Counter)
    for u in units:
        seen[u.dataset][u.split].update(sidecars[u.file].get("caption_hashes", []))
        own[u.dataset][u.split] += sidecars[u.file].get("own_captions", 0)
    return {ds: {sp: {"distinct": len(h), "own": own[ds][sp]} for sp, h in splits.items()}
            for ds, splits in seen.items()}


def _patch_counts(units: list, sidecars: dict) -> dict[str, dict[str, int]]:
    """Per dataset: patches cut from its scenes, dropped (too little valid area) and kept
    without any label (``empty``; before validation duplicates are removed)."""
    out: dict = defaultdict(Counter)
    for u in units:
        out[u.dataset].update(sidecars[u.file].get("patches", {}))
    return {ds: {k: c[k] for k in ("cut", "dropped", "empty")} for ds, c in out.items()}


def _band_records(units: list, sidecars: dict) -> dict[str, list[dict]]:
    """Each dataset's band records (``geofm_lib.bands.BandRecord``), from its shards."""
    out: dict[str, list[dict]] = {}
    for u in units:
        info = sidecars[u.file].get("band_info")
        if info and u.dataset not in out:
            out[u.dataset] = info
    return out


def _split_units(cfg: Config, units: list, sidecars: dict) -> dict[str, dict]:
    """Per dataset: how many split units (scenes, tiles, locations, blocks: the reader's
    ``split_key``) each side holds, and the units found on both sides, looked up across the
    sensors of a pair family (S1 and S2 of one place share a unit). A random split never puts
    a unit on both sides; a dataset's own split lists may (``official``: reported, not
    changed)."""
    keys: dict = defaultdict(lambda: {"train": set(), "val": set()})
    for u in units:
        keys[u.dataset][u.split].update(sidecars[u.file].get("split_keys", []))
    family: dict = defaultdict(lambda: {"train": set(), "val": set()})
    for ds, sides in keys.items():
        for split, found in sides.items():
            family[pair_family(ds)][split] |= found
    out = {}
    for ds, sides in keys.items():
        both = family[pair_family(ds)]
        across = sorted((sides["train"] & both["val"]) | (sides["val"] & both["train"]))
        out[ds] = {"train": len(sides["train"]), "val": len(sides["val"]),
                   "official": cfg.source_for(ds).splits == "official",
                   # the reader groups scenes (else every scene is a unit of its own)
                   "grouped": any(not k.startswith("scene ")
                                  for k in sides["train"] | sides["val"]),
                   "on_both_sides": len(across), "examples": across[:5]}
    return out


def _with_unreadable(reports: dict, units: list, sidecars: dict) -> dict:
    """The readers' reports with the images the build skipped as unreadable (``on_bad:
    skip``) moved from ``used`` to ``not_used``, and the first reasons kept."""
    reports = {ds: dict(r) for ds, r in reports.items()}
    why: dict = defaultdict(list)
    for u in units:
        why[u.dataset] += sidecars[u.file].get("unreadable_skipped", [])
    for ds, messages in why.items():
        if messages and ds in reports:
            r = reports[ds]
            r["not_used"] = {**r.get("not_used", {}),
                             "unreadable (on_bad: skip)": len(messages)}
            if isinstance(r.get("used"), int):
                r["used"] = r["used"] - len(messages)
            r["unreadable_examples"] = list(dict.fromkeys(messages))[:3]
    return reports


def _object_counts(units: list, sidecars: dict) -> dict[str, dict[str, int]]:
    """Per dataset: annotated objects, and those that went into no patch's labels, by why."""
    out: dict = defaultdict(Counter)
    for u in units:
        out[u.dataset].update(sidecars[u.file].get("objects", {}))
    return {ds: dict(c) for ds, c in out.items() if c}


def make_manifest(cfg: Config, units: list, sidecars: dict, removed: int,
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
                                                 "bands": st["bands"], "empty": 0,
                                                 "nodata": st.get("nodata")})
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
        valid = np.asarray(acc["band_pixels"], dtype=np.float64)
        n = np.maximum(valid, 1)
        mean = acc["sum"] / n
        std = np.sqrt(np.maximum(acc["sumsq"] / n - mean ** 2, 0))
        band_stats[ds] = {"bands": acc["bands"], "mean": np.round(mean, 4).tolist(),
                          "std": np.round(std, 4).tolist(), "pixels": acc["pixels"],
                          "nonfinite_values": int(acc["nonfinite"]),
                          # per band: values that are NaN or the band's nodata (not counted)
                          "nodata_pixels": (acc["pixels"] - valid).astype(int).tolist(),
                          "nodata": acc["nodata"] or [None] * len(acc["bands"]),
                          # bands with no measurement at all: no statistics, not model input
                          "all_nodata": [b for b, v in zip(acc["bands"], valid) if v == 0],
                          "from_split": "train"}
    all_train = {h for s in sidecars.values() if s["split"] == "train" for h in s["content"]}
    all_val = {h for s in sidecars.values() if s["split"] == "val" for h in s["content"]}
    return {
        "schema_version": SCHEMA_VERSION, "data_hash": cfg.data_hash, "params_hash": cfg.hash,
        "params": {k: cfg.to_dict()[k] for k in ("group", "datasets", "source",
                                                  "samples_per_dataset", "dataset_mix", "image_px",
                                                  "scene_px", "caption_metadata",
                                                  "val_fraction", "shard_size", "seed")},
        "datasets": list(counts),
        "counts": {ds: dict(c) for ds, c in counts.items()},
        "label_frequencies": {ds: {sp: dict(sorted(c.items())) for sp, c in f.items()}
                              for ds, f in freq.items()},
        "band_stats": band_stats,
        "vocabularies": _vocabularies(units, sidecars),
        "band_records": _band_records(units, sidecars),
        "captions": _caption_counts(units, sidecars),
        "source_reports": _with_unreadable(source_reports or {}, units, sidecars),
        "objects": _object_counts(units, sidecars),
        "unreadable_skipped": {ds: n for ds, n in Counter(
            u.dataset for u in units for _ in sidecars[u.file].get("unreadable_skipped", [])
        ).items()},
        "patches": _patch_counts(units, sidecars),
        "split_units": _split_units(cfg, units, sidecars),
        "val_duplicates_removed": removed,
        "duplicates_across_splits": len(all_train & all_val),
        "shards": shards,
        "total_samples": sum(s["n"] for s in shards),
        "total_bytes": sum(s["bytes"] for s in shards),
    }


def dataset_cards(cfg: Config, manifest) -> list[dict]:
    """One row per dataset of a build: what it is (the catalog's entry or your dataset card:
    name, group, ground sample distance, where its samples come from) and its bands as they
    entered the shards (name, centre wavelength or polarisation, units, nodata). The 02 page
    shows it beside the data accounting."""
    rows = []
    for ds in manifest["datasets"]:
        info = cfg.dataset_info(ds)
        bands = [b.name + (f" {b.center_nm:g} nm" if b.center_nm else
                           f" ({b.polarisation})" if b.polarisation and b.polarisation != b.name
                           else "")
                 for b in manifest.band_records(ds)]
        units = sorted({b.units for b in manifest.band_records(ds) if b.units})
        nodata = sorted({b.nodata for b in manifest.band_records(ds) if b.nodata is not None})
        spec = cfg.source_for(ds)
        rows.append({"dataset": ds, "name": info.name, "group": info.group,
                     "GSD (m)": info.gsd_m,
                     "from": (f"your files ({spec.reader} reader)" if spec.reader != "simulator"
                              else "the simulator"),
                     "card": "yours" if ds in (cfg.dataset_cards or {}) else "catalog",
                     "bands": ", ".join(bands) or "-", "units": ", ".join(units) or "-",
                     "nodata": ", ".join(f"{v:g}" for v in nodata) or "-",
                     "labels": len(manifest.vocabulary(ds))})
    return rows


def data_accounting(manifest: dict) -> list[dict]:
    """One row per dataset of a build: what its reader found on disk, what it used, what it
    left out and why, the patches cut and dropped, the annotated objects and those in no
    patch's labels (with why), and the split units on each side. The 01 and 02 pages show it,
    so that nothing is dropped unsaid.

    Returns:
        rows of plain values (``pandas.DataFrame(rows)`` shows them as a table).
    """
    def why(reasons: dict) -> str:
        return "; ".join(f"{k}: {v}" for k, v in reasons.items() if v) or "-"

    rows = []
    reports = manifest.get("source_reports") or {}
    for ds in manifest.get("datasets", []):
        report = reports.get(ds, {})
        patches = (manifest.get("patches") or {}).get(ds, {})
        objects = (manifest.get("objects") or {}).get(ds, {})
        units = (manifest.get("split_units") or {}).get(ds, {})
        counts = manifest["counts"].get(ds, {})
        missed = {k.removeprefix("not in a patch: "): v for k, v in objects.items()
                  if k.startswith("not in a patch")}
        reader = report.get("reader") or "simulator"
        scenes = units.get("train", 0) + units.get("val", 0)  # one unit a scene, simulated
        simulated = reader.lower().startswith("simulator")
        rows.append({
            "dataset": ds, "reader": reader,
            "found": report.get("found") if report.get("found") is not None else (
                f"{scenes} scenes simulated" if simulated else "-"),
            "used": report.get("used") if report.get("used") is not None else (
                scenes if simulated else "-"),
            "not used (why)": why(report.get("not_used") or {}),
            "patches cut": patches.get("cut"), "dropped (valid area)": patches.get("dropped"),
            "samples train / val": f"{counts.get('train', 0)} / {counts.get('val', 0)}",
            "objects": objects.get("objects", "-"),
            "objects in no patch (why)": (f"{sum(missed.values())}: {why(missed)}"
                                          if missed else ("0" if objects else "-")),
            "split units train / val": (f"{units.get('train', 0)} / {units.get('val', 0)}"
                                        + (f" ({units['on_both_sides']} on both sides, the "
                                           f"dataset's own lists)"
                                           if units.get("on_both_sides") else "")),
        })
    return rows
