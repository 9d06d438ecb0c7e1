"""Example inputs in real on-disk formats, written from the simulator.

``write_karpathy_corpus`` writes an image-text corpus exactly as RSICD, UCM-captions, RSITMD and
Sydney-captions are distributed: an ``images/`` folder of JPEGs and a Karpathy-style
``dataset.json`` (``{"images": [{"filename", "imgid", "split", "sentences": [{"raw",
"tokens"}], ...}]}``) with five captions per image. It lets the image-text path (the
``karpathy`` reader, multi-caption training and retrieval) run end to end anywhere; for real
work point the reader at RSICD or another corpus instead.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .captions import caption
from .plots import display_rgb
from .progress import progress
from .shards import atomic_write_bytes

CORPUS_DATASETS = ("agriculture_vision", "seadronessee", "xview", "qfabric", "houston_harvey",
                   "mafat")


def write_karpathy_corpus(folder: Path, n_images: int = 1200, image_px: int = 96,
                          seed: int = 0, datasets=CORPUS_DATASETS,
                          show_progress: bool = True) -> Path:
    """Write ``n_images`` captioned images (spread over ``datasets``) into ``folder``.

    Splits follow the usual Karpathy proportions: 80 % train, 10 % val, 10 % test. Returns the
    caption file. An existing complete corpus with the same settings is kept as it is.
    """
    from PIL import Image

    from . import simulate

    folder = Path(folder)
    cap_file = folder / "dataset.json"
    settings = {"n_images": n_images, "image_px": image_px, "seed": seed,
                "datasets": list(datasets)}
    if cap_file.is_file() and json.loads(cap_file.read_text()).get("settings") == settings:
        return cap_file
    (folder / "images").mkdir(parents=True, exist_ok=True)
    split_rng = np.random.default_rng([seed, 21])
    entries = []
    for i in progress(range(n_images), desc="example corpus", unit="img",
                      disable=not show_progress):
        ds = datasets[i % len(datasets)]
        sample = simulate.render(ds, i // len(datasets), seed=seed, image_px=image_px)
        rgb = (display_rgb(sample.image, sample.meta["bands"]) * 255).round().astype(np.uint8)
        name = f"{ds}_{i // len(datasets):05d}.jpg"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
        atomic_write_bytes(folder / "images" / name, buf.getvalue())
        texts = list(dict.fromkeys(caption(ds, sample.labels, False, seed + k, i)
                                   for k in range(12)))[:5]
        u = split_rng.random()
        entries.append({
            "filename": name, "imgid": i,
            "split": "train" if u < 0.8 else ("val" if u < 0.9 else "test"),
            "sentences": [{"raw": t, "tokens": t.lower().rstrip(".").split(), "imgid": i}
                          for t in texts],
        })
    atomic_write_bytes(cap_file, json.dumps({"images": entries, "dataset": "example_captions",
                                             "settings": settings}).encode())
    return cap_file
