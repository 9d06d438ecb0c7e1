"""Hyperspectral shards, sized (issue 21): what an EnMAP sample costs on disk and whether the
loader keeps up with training on it. Prints and writes ``<work>/bench/hyperspectral.json``.

* **bytes per sample**: the shards of simulated EnMAP-CORINE patches (224 int16 bands, Blosc
  members) against the same pixels as raw int16 and as float32 (the issue's 14.7 MB at 128 px);
* **loader vs step**: samples/s of the training stream on these shards (decode, standardise the
  202 measured bands into the model's layout, augment, tokenize) against the optimisation step
  of a CLIP model taking every band through the ``wavelength`` adapter, and through the
  ``spectral`` stem, at the same batch and image size, on this machine.

    geofm bench-hyperspectral [--quick] [--image-px 128]
"""

from __future__ import annotations

import json
import platform
import tempfile
import time

from geofm_lib.bench.results import write_results
from geofm_lib.bench.train import our_step_throughput
from geofm_lib.catalog import ENMAP_BANDS
from geofm_lib.config import load_config
from geofm_lib.data.build import build_shards
from geofm_lib.data.shards import load_manifest
from geofm_lib.models.factory import create_model
from geofm_lib.models.inputs import input_spec
from geofm_lib.paths import build_folder
from geofm_lib.training.stream import train_stream


def run(quick: bool = False, image_px: int = 128, samples: int | None = None,
        batch_size: int = 32, model: str = "RN50-tiny") -> dict:
    samples = samples or (48 if quick else 400)
    steps = 3 if quick else 10
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine()},
                     "image_px": image_px, "bands": len(ENMAP_BANDS), "samples": samples}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("demo", group="H", work_dir=tmp, samples_per_dataset=samples,
                          image_px=image_px, shard_size=64, batch_size=batch_size,
                          band_adapter="wavelength", model=model, run_name="bench")
        t0 = time.perf_counter()
        build_shards(cfg, show_progress=False)
        results["build_seconds"] = round(time.perf_counter() - t0, 1)
        folder = build_folder(cfg)
        manifest = load_manifest(folder)
        n = sum(manifest["counts"]["enmap_corine"].values())
        on_disk = sum(e["bytes"] for e in manifest["shards"]) / n
        pixels = image_px * image_px * len(ENMAP_BANDS)
        results["bytes_per_sample"] = {
            "shards": round(on_disk), "raw_int16": pixels * 2, "float32": pixels * 4,
            "shards_vs_int16": round(on_disk / (pixels * 2), 3),
            "shards_vs_float32": round(on_disk / (pixels * 4), 3)}
        stats, bands = input_spec(manifest.band_stats_for(cfg.dataset_keys), "wavelength")
        results["model_bands"] = len(bands)
        _, tok = create_model(model, image_px, band_adapter="wavelength", bands=bands)
        feed = train_stream(folder, manifest, list(cfg.dataset_keys), stats, tok, batch_size,
                            image_px, cfg.seed, 0)
        next(feed)  # the shuffle buffer fills
        t0 = time.perf_counter()
        for _ in range(steps):
            next(feed)
        loader = steps * batch_size / (time.perf_counter() - t0)
        step = our_step_throughput(model, batch_size, image_px, "fp32", "cpu", steps=steps,
                                   warmup_steps=1, band_adapter="wavelength", bands=bands)
        # the same tower behind seed 001's spectral stem: 1-D convolutions once per pixel
        spectral = our_step_throughput(model, batch_size, image_px, "fp32", "cpu",
                                       steps=max(2, steps // 3), warmup_steps=1,
                                       band_adapter="spectral", bands=bands)
    results["loader_samples_per_s"] = round(loader, 1)
    results["step_samples_per_s"] = round(step["samples_per_s"], 1)
    results["loader_vs_step"] = round(loader / step["samples_per_s"], 2)
    results["spectral_step_samples_per_s"] = round(spectral["samples_per_s"], 1)
    results["loader_vs_spectral_step"] = round(loader / spectral["samples_per_s"], 2)
    results["setting"] = (f"{model} with the wavelength adapter on {len(bands)} bands, "
                          f"{image_px} px, batch {batch_size}, fp32, CPU, one process, no "
                          f"loader workers")
    print(json.dumps(results, indent=1))
    write_results("hyperspectral.json", results)
    return results
