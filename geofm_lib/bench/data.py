"""Data-stage benchmarks: print numbers and write them to ``<work>/bench/data_stage.json``.

* simulator throughput, samples/s on one core, per dataset, at 64 px and 512 px;
* shard write and read throughput (MB/s, samples/s), and reading relative to iterating the
  same decoded arrays in memory.

Run ``geofm bench`` (or ``python -m geofm_lib.bench``); ``--quick`` takes fewer samples.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from geofm_lib.bench.results import write_results
from geofm_lib.catalog import PAPER_DATASETS as DATASETS
from geofm_lib.data import shards, simulate


def _one_core():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:  # pragma: no cover
        return None


def simulator_throughput(px: int, seconds: float = 2.0, max_n: int = 2000) -> dict:
    out = {}
    for key in DATASETS:
        simulate.render(key, 0, image_px=px)  # warm caches
        n, t0 = 0, time.perf_counter()
        while n < max_n and time.perf_counter() - t0 < seconds:
            simulate.render(key, n + 1, image_px=px)
            n += 1
        out[key] = round(n / (time.perf_counter() - t0), 1)
    return out


def shard_throughput(n: int = 2000) -> dict:
    samples = [{"__key__": f"s-{i:07d}", "img": s.image, "txt": "x",
                "json": {**s.meta, "labels": [], "split": "train"}}
               for i, s in enumerate(simulate.render("bigearthnet_s2", i, image_px=64)
                                     for i in range(n))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train-bench-000000.tar"
        t0 = time.perf_counter()
        shards.write_shard(path, samples)
        write_s = time.perf_counter() - t0
        mb = path.stat().st_size / 1e6
        t0 = time.perf_counter()
        total = 0.0
        for s in shards.iter_shards([path]):
            total += float(s["img"][0, 0, 0])
        read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in samples:  # the same arrays, already decoded, in memory
        total += float(s["img"][0, 0, 0])
    mem_s = max(time.perf_counter() - t0, 1e-9)
    return {"samples": n, "megabytes": round(mb, 1),
            "write_MB_s": round(mb / write_s, 1), "write_samples_s": round(n / write_s, 1),
            "read_MB_s": round(mb / read_s, 1), "read_samples_s": round(n / read_s, 1),
            "memory_samples_s": round(n / mem_s, 1),
            "read_vs_memory": f"1 : {read_s / mem_s:.0f} (shard read is this many times slower)"}


def main(quick: bool = False) -> dict:
    _one_core()
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_used": 1},
        "simulator_samples_per_s_64px": simulator_throughput(64, 0.5 if quick else 3.0),
        "simulator_samples_per_s_512px": simulator_throughput(512, 0.5 if quick else 3.0,
                                                              max_n=200),
        "shards_bigearthnet_s2_64px": shard_throughput(200 if quick else 2000),
        "target": "simulator >= 500 samples/s at 64 px for the 10 m datasets (one core)",
    }
    print(json.dumps(results, indent=1))
    write_results("data_stage.json", results)
    return results


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)
