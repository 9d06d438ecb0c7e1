"""Oriented boxes as DOTA text rows (MAFAT's satellite-vision challenge; DOTA itself).

Layout (``root``; MAFAT 2023's ``dataset/`` folder, or the DOTA devkit's)::

    train/images/<frame>.tif       (or .tiff / .png; a frame name such as 10011_0_5120)
    train/labelTxt/<frame>.txt
    val/images/ ... val/labelTxt/ ...   (optional; without split folders: images/ + labelTxt/)

A label file has one object per row, ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]``: the four
corners of the oriented box in pixels, possibly beyond the image (objects cut by the frame
edge), then the class name. DOTA's files may start with ``imagesource:...`` and ``gsd:...``
lines (the gsd is kept per image as ``gsd_header_m``); MAFAT's have neither header nor the
difficulty column. An empty label file is a frame without objects; a missing one is bad input.
Class names map to the catalog's labels by name (``small_vehicle`` -> Small Vehicle). MAFAT's
frames are single-band 16-bit images, read in their own dtype.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.sources.annotated import (
    AnnotatedSource,
    Item,
    Problems,
    band_records,
    catalog_labels,
    clip_objects,
    image_size,
    open_root,
    reader_options,
)
from geofm_lib.data.sources.base import _norm
from geofm_lib.errors import ConfigError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".bmp")


class DotaSource(AnnotatedSource):
    """``reader: dota``; ``root`` holds ``<split>/images`` + ``<split>/labelTxt`` (or
    ``images`` + ``labelTxt``)."""

    def __init__(self, dataset: str, spec, cfg: Config):
        reader_options(spec, dataset)
        root = open_root(dataset, spec, "images/ and labelTxt/ (or train/ and val/ with both)")
        where = f"sources.{dataset}"
        splits = [(s, root / s) for s in ("train", "val") if (root / s / "images").is_dir()] \
            or [(None, root)]
        if not (splits[0][1] / "images").is_dir():
            raise ConfigError(f"{where}: no images/ folder in {root} or in its train/ and val/; "
                              f"the DOTA layout is <split>/images/ and <split>/labelTxt/")
        info = cfg.dataset_info(dataset)
        vocab = {_norm(v): v for v in info.labels}
        problems = Problems(spec.on_bad, where)
        items, found = [], 0
        for split, folder in splits:
            files = sorted(p for p in (folder / "images").iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES)
            found += len(files)
            for image in files:
                label = folder / "labelTxt" / (image.stem + ".txt")
                if not label.is_file():
                    problems.bad("label files missing", f"{image.name} has no "
                                 f"{folder.name}/labelTxt/{label.name}",
                                 "restore it (an empty file marks a frame without objects)")
                    continue
                objects, gsd = _read_rows(label, vocab, problems, dataset, cfg)
                scene = frame_scene(image.stem)
                item = Item((image,), split=split, objects=objects, group=scene,
                            extra={"frame": image.stem, "scene": scene,
                                   **({"gsd_header_m": gsd} if gsd else {})})
                clip_objects(item, image_size(image), problems)
                items.append(item)
        orphans = _orphan_labels(splits)
        if orphans["files"]:  # label files whose frame is absent: counted, with their objects
            problems.known("label files without their image", orphans["files"])
            problems.known("objects in label files without their image", orphans["objects"])
        super().__init__(cfg, dataset, spec, items, info.labels,
                         band_records(dataset, cfg, list(info.sensor_spec.band_names), where,
                                      sample=items[0].images[0] if items else None),
                         "dota", problems, found)


def _orphan_labels(splits) -> dict[str, int]:
    """Label files (and their object rows) in ``labelTxt/`` whose image is not in
    ``images/``: a partial download, or frames removed by hand."""
    files = objects = 0
    for _, folder in splits:
        stems = {p.stem for p in (folder / "images").iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES}
        labels = folder / "labelTxt"
        for txt in sorted(labels.glob("*.txt")) if labels.is_dir() else []:
            if txt.stem not in stems:
                files += 1
                objects += sum(1 for line in txt.read_text(errors="replace").splitlines()
                               if len(line.split()) >= 9)
    return {"files": files, "objects": objects}


# a frame cut from a larger scene: MAFAT's <scene>_<row>_<col> (10011_1280_0) and the DOTA
# devkit's crops <image>__<rate>__<left>___<top> (P0001__1024__0___0)
_MAFAT_FRAME = re.compile(r"^(?P<scene>.+?)_\d+_\d+$")
_DOTA_CROP = re.compile(r"^(?P<scene>.+?)__[\d.]+__-?\d+___-?\d+$")


def frame_scene(stem: str) -> str:
    """The scene a frame was cut from, by its name (``10011_1280_0`` -> ``10011``); a name in
    neither pattern is a scene of its own. Frames of one scene overlap or touch, so a random
    split keeps them on one side."""
    found = _DOTA_CROP.match(stem) or _MAFAT_FRAME.match(stem)
    return found["scene"] if found else stem


def _read_rows(path: Path, vocab: dict, problems: Problems, dataset: str, cfg: Config):
    """[(label, (4, 2) corners)], gsd of the header (or None) of one DOTA label file."""
    objects, gsd = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0].startswith(("imagesource:", "gsd:")):
            if tokens[0].startswith("gsd:") and tokens[0][4:] not in ("", "null", "None"):
                gsd = float(tokens[0][4:])
            continue
        try:
            corners = np.array([float(v) for v in tokens[:8]]).reshape(4, 2)
            name = tokens[8]
        except (ValueError, IndexError):
            problems.bad("malformed rows", f"{path.name} line {n} is not 'x1 y1 ... x4 y4 "
                         f"class [difficult]': {line[:80]!r}", "fix the row")
            continue
        if _norm(name) not in vocab:
            problems.bad("unknown classes", f"{path.name} line {n}: class {name!r} is not one "
                         f"of {dataset}'s {len(vocab)} classes "
                         f"({', '.join(sorted(vocab.values())[:6])}, ...)",
                         "check the class names, or declare them in a dataset card")
            continue
        objects.append((catalog_labels(dataset, cfg, [name], path.name)[0], corners))
    return objects, gsd
