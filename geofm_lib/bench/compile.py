"""Shard-compile benchmark (issue 17): prints numbers and writes ``<work>/bench/compile.json``.

* **workers**: the same build (the demo preset: 8 datasets x 1000 scenes of 64 px) written by
  one process, by two, and by a local Dask cluster of two workers, each into a fresh folder,
  alternating, ``--repeats`` times; seconds of ``build_shards`` (median), the speed-up over one
  process, and whether every shard, sidecar and the manifest are byte-identical (sha256).
* **bytes per sample**, per dataset: the shards as written now (PNG / Blosc members, tar
  without pax headers) against the same decoded samples written in the format before issue 17
  (``img.npy`` members, a float mtime, hence a pax header per member).
* **loader vs step**: samples/s of the training stream on these shards against the
  optimisation step (RN50-tiny, 64 px, fp32, CPU), as ``geofm bench-train`` measures them.

    geofm bench-compile [--quick] [--repeats N]
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from geofm_lib.bench.results import write_results
from geofm_lib.config import load_config
from geofm_lib.data import shards
from geofm_lib.data.build import build_shards

VARIANTS = {"1 process": {"data_workers": 1}, "2 processes": {"data_workers": 2},
            "Dask, local cluster of 2": {"data_workers": 2, "data_engine": "dask"}}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != shards.VERIFY_CACHE}


def _legacy_bytes(path: Path, out: Path) -> int:
    """Bytes of one shard's samples in the format before issue 17 (raw .npy, pax headers)."""
    import webdataset as wds

    with open(out, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0.0, user="geofm",
                                             group="geofm") as tw:
        for s in shards.iter_shards([path]):
            tw.write({"__key__": s["__key__"], "img.npy": shards.encode_npy(s["img"]),
                      "txt": s["txt"].encode(),
                      "json": json.dumps(s["json"], sort_keys=True).encode()})
    size = out.stat().st_size
    out.unlink()
    return size


def bytes_per_sample(folder: Path) -> dict:
    manifest = shards.load_manifest(folder)
    now, before, n = defaultdict(int), defaultdict(int), defaultdict(int)
    for e in manifest["shards"]:
        now[e["dataset"]] += e["bytes"]
        before[e["dataset"]] += _legacy_bytes(folder / e["file"], folder.parent / "legacy.tmp")
        n[e["dataset"]] += e["n"]
    rows = {ds: {"samples": n[ds], "before": round(before[ds] / n[ds]),
                 "after": round(now[ds] / n[ds]), "ratio": round(now[ds] / before[ds], 3)}
            for ds in n}
    total_before, total_now = sum(before.values()), sum(now.values())
    rows["whole build"] = {"samples": sum(n.values()),
                           "before": round(total_before / sum(n.values())),
                           "after": round(total_now / sum(n.values())),
                           "ratio": round(total_now / total_before, 3), "target_ratio": 0.6}
    return rows


def compile_speed(work: Path, base: dict, repeats: int) -> tuple[dict, Path]:
    seconds, digests, folder = defaultdict(list), {}, None
    for r in range(repeats):
        for name, kw in VARIANTS.items():
            cfg = load_config("demo", work_dir=str(work / f"{r}-{len(seconds[name])}-{kw}"),
                              **base, **kw)
            t0 = time.perf_counter()
            built = build_shards(cfg, show_progress=False)
            seconds[name].append(time.perf_counter() - t0)
            digests.setdefault(name, _digests(built))
            folder = folder or built
    one = statistics.median(seconds["1 process"])
    out = {name: {"seconds": [round(s, 2) for s in times],
                  "median_s": round(statistics.median(times), 2),
                  "speedup_vs_1": round(one / statistics.median(times), 2),
                  "byte_identical_to_1": digests[name] == digests["1 process"]}
           for name, times in seconds.items()}
    out["files_compared"] = len(digests["1 process"])
    out["target_speedup_2"] = 1.7
    return out, folder


def loader_vs_step(folder_cfg) -> dict:
    from geofm_lib.bench.train import loader_throughput, our_step_throughput

    loader = loader_throughput(folder_cfg, batches=20)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    step = our_step_throughput("RN50-tiny", folder_cfg.batch_size, folder_cfg.image_px, "fp32",
                               "cpu", steps=10, threads=cores)
    return {"loader_samples_per_s": round(loader["samples_per_s"], 1),
            "step_samples_per_s": round(step["samples_per_s"], 1),
            "ratio": round(loader["samples_per_s"] / step["samples_per_s"], 2),
            "target_ratio": 3.0}


def main(quick: bool = False, repeats: int = 1) -> dict:
    base = {"samples_per_dataset": 150 if quick else 1000}
    results = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": len(os.sched_getaffinity(0))
                           if hasattr(os, "sched_getaffinity") else os.cpu_count()},
               "build": f"demo preset, samples_per_dataset={base['samples_per_dataset']}"}
    with tempfile.TemporaryDirectory() as tmp:
        speed, folder = compile_speed(Path(tmp), base, repeats)
        results["compile"] = speed
        print(json.dumps({"compile": speed}, indent=1), flush=True)
        results["bytes_per_sample"] = bytes_per_sample(folder)
        print(json.dumps({"bytes_per_sample": results["bytes_per_sample"]}, indent=1),
              flush=True)
        cfg = load_config("demo", work_dir=str(folder.parent.parent), **base, data_workers=1)
        results["loader_vs_step"] = loader_vs_step(cfg)
        print(json.dumps({"loader_vs_step": results["loader_vs_step"]}, indent=1))
    write_results("compile.json", results)
    return results


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)
