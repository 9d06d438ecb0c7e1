"""Example inputs in real on-disk formats, written from the simulator.

``write_karpathy_corpus`` writes an image-text corpus exactly as RSICD, UCM-captions, RSITMD and
Sydney-captions are distributed: an ``images/`` folder of JPEGs and a Karpathy-style
``dataset.json`` (``{"images": [{"filename", "imgid", "split", "sentences": [{"raw",
"tokens"}], ...}]}``) with five captions per image. It lets the image-text path (the
``karpathy`` reader, multi-caption training and retrieval) run end to end anywhere; for real
work point the reader at RSICD or another corpus instead.
"""

from __future__ import annotations

import bz2
import io
import json
from pathlib import Path

import numpy as np

from geofm_lib.data import simulate
from geofm_lib.data.captions import caption
from geofm_lib.data.display import display_rgb
from geofm_lib.data.sources.bigearthnet import bigearthnet_product
from geofm_lib.errors import ConfigError
from geofm_lib.io import atomic_write_bytes
from geofm_lib.progress import progress

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


def bigearthnet_torchgeo_root(out: Path, s2_dir: Path | None = None, s1_dir: Path | None = None,
                              splits_dir: Path | None = None, sensor: str = "s2",
                              seed: int = 0) -> dict:
    """Make the root layout torchgeo's ``BigEarthNet`` expects from patch folders as they are
    distributed (``<S2 dir>/<patch>/``, ``<S1 dir>/<patch>/``), with symlinks, nothing copied.

    torchgeo wants ``BigEarthNet-v1.0/``, ``BigEarthNet-S1-v1.0/`` and
    ``bigearthnet-{train,val,test}.csv`` rows ``<S2 patch>,<S1 patch>``; it downloads the CSVs
    itself when online. Here the rows come from the S1 patches' ``corresponding_s2_patch``
    (``sensor='s1'``: every S1 patch; ``'s2'``: every S2 patch; ``'pairs'``: only patches with
    both), and the split of each row from the official lists in ``splits_dir``
    (``{train,val,test}.csv[.bz2]`` of S2 names) when given; patches that no list names (the
    official lists leave out cloudy and snowy patches) are left out and counted. Without
    ``splits_dir`` the rows are split here by Sentinel-2 product (tile and date: neighbouring
    patches stay on one side), seeded, about 70/15/15 % of the products to train/val/test;
    that needs at least three products.

    Returns counts: rows per split, patches left out and how the split was made.

    Raises:
        ConfigError: fewer than three products and no ``splits_dir``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s1_of: dict[str, str] = {}
    if s1_dir is not None:
        for p in sorted(Path(s1_dir).iterdir()):
            meta = next(p.glob("*labels_metadata.json"), None)
            if meta is not None:
                s1_of[json.loads(meta.read_text())["corresponding_s2_patch"]] = p.name
    s2_names = sorted(p.name for p in Path(s2_dir).iterdir()) if s2_dir is not None else []
    if sensor == "s2":
        rows = [(s2, s1_of.get(s2, "none")) for s2 in s2_names]
    elif sensor == "s1":
        rows = sorted((s2, s1) for s2, s1 in s1_of.items())
    elif sensor == "pairs":
        rows = [(s2, s1_of[s2]) for s2 in s2_names if s2 in s1_of]
    else:
        raise ValueError(f"sensor must be s1, s2 or pairs, not {sensor!r}")
    for link, target in (("BigEarthNet-v1.0", s2_dir), ("BigEarthNet-S1-v1.0", s1_dir)):
        if target is not None and not (out / link).exists():
            (out / link).symlink_to(Path(target).resolve(), target_is_directory=True)
    split_rows: dict[str, list] = {"train": [], "val": [], "test": []}
    left_out = 0
    if splits_dir is not None:
        member = {}
        for split in split_rows:
            for cand in (Path(splits_dir) / f"{split}.csv.bz2", Path(splits_dir) / f"{split}.csv"):
                if cand.is_file():
                    text = (bz2.decompress(cand.read_bytes()).decode() if cand.suffix == ".bz2"
                            else cand.read_text())
                    member.update({line.split(",")[0].strip(): split
                                   for line in text.splitlines() if line.strip()})
                    break
        for row in rows:
            if row[0] in member:
                split_rows[member[row[0]]].append(row)
            else:
                left_out += 1
    else:
        split_rows = _split_by_product(rows, seed)
    for split, items in split_rows.items():
        atomic_write_bytes(out / f"bigearthnet-{split}.csv",
                           "".join(f"{a},{b}\n" for a, b in items).encode())
    made = ("the official lists" if splits_dir is not None else
            f"by Sentinel-2 product (tile and date), seed {seed}: not the official lists")
    return {"rows": {k: len(v) for k, v in split_rows.items()}, "left_out": left_out,
            "split": made}


def _split_by_product(rows: list[tuple[str, str]], seed: int) -> dict[str, list]:
    """Rows to train/val/test by the S2 product of their patch (seeded), so that patches of
    one product (neighbours in one tile on one day) never straddle two splits."""
    products = sorted({bigearthnet_product(s2) for s2, _ in rows})
    if len(products) < 3:
        raise ConfigError(f"the {len(rows)} patches come from {len(products)} Sentinel-2 "
                          f"product(s); a train/val/test split by product needs at least "
                          f"three. Give the official lists with --splits, or more patches")
    order = np.random.default_rng([seed, 7]).permutation(len(products))
    n_held = max(1, round(0.15 * len(products)))
    side = {}
    for rank, k in enumerate(order.tolist()):
        side[products[k]] = "val" if rank < n_held else "test" if rank < 2 * n_held else "train"
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    for row in rows:
        out[side[bigearthnet_product(row[0])]].append(row)
    return out
