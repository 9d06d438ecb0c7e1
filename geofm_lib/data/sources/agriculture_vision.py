"""Agriculture-Vision (CVPR 2020/2021 challenges) as released: RGB + NIR tiles of farmland with
one binary mask per anomaly class.

Layout (``root``, per split ``train`` / ``val``; ``test`` has no labels and is not read)::

    train/images/rgb/<field>_<x1>-<y1>-<x2>-<y2>.jpg    512 x 512 RGB
    train/images/nir/<same>.jpg                        512 x 512, one band
    train/boundaries/<same>.png                        255: inside the field
    train/masks/<same>.png                             255: valid pixel
    train/labels/<class>/<same>.png                    255: the class is there

The image is R, G, B and NIR (``options.nir: false``: RGB only), in their 8-bit values. Only
pixels inside the field boundary *and* valid count (as in the challenge's evaluation): a class
is in a patch when it covers ``min_mask_share`` of the patch's counted pixels, and a patch with
less than ``min_valid`` of its pixels counted is dropped (counted in the manifest). Class
folders map to the catalog's labels by name (``double_plant`` -> Double plant); a folder the
catalog does not list (the 2020 release's ``cloud_shadow`` or ``standing_water``) is bad input:
name its catalog label with ``options.class_folders`` or leave it out with ``on_bad: skip``. The
tile name gives the field and the tile's pixel window in the field (``field_id``,
``field_window_px``); the release carries no coordinates or dates.
"""

from __future__ import annotations

import re

from geofm_lib.config import Config
from geofm_lib.data.sources.annotated import (
    AnnotatedSource,
    Item,
    Problems,
    band_records,
    catalog_labels,
    image_size,
    open_root,
    reader_options,
)
from geofm_lib.errors import ConfigError

_TILE = re.compile(r"^(?P<field>[A-Za-z0-9]+)_(?P<win>\d+-\d+-\d+-\d+)$")


class AgricultureVisionSource(AnnotatedSource):
    """``reader: agriculture_vision``; options ``nir`` (default true), ``class_folders``
    (a list of ``folder=Catalog label`` pairs for folders named otherwise)."""

    def __init__(self, dataset: str, spec, cfg: Config):
        opts = reader_options(spec, dataset, ("nir", "class_folders"))
        root = open_root(dataset, spec, "train/ and val/ with images/rgb, images/nir, "
                                        "boundaries, masks and labels/<class>")
        where = f"sources.{dataset}"
        splits = [s for s in ("train", "val") if (root / s / "images" / "rgb").is_dir()]
        if not splits:
            raise ConfigError(f"{where}: no train/images/rgb or val/images/rgb under {root}; "
                              f"point root at the release's folder that holds train/ and val/")
        renamed = dict(pair.split("=", 1) for pair in opts.get("class_folders", []))
        nir = bool(opts.get("nir", True))
        problems = Problems(spec.on_bad, where)
        items, found = [], 0
        for split in splits:
            folder = root / split
            classes = self._classes(folder, renamed, dataset, cfg, problems, where)
            tiles = sorted((folder / "images" / "rgb").glob("*.jpg"))
            found += len(tiles)
            for rgb in tiles:
                item = self._item(folder, rgb, split, classes, nir, problems)
                if item is not None:
                    items.append(item)
        names = ["R", "G", "B", "nir"] if nir else ["R", "G", "B"]
        super().__init__(cfg, dataset, spec, items, cfg.dataset_info(dataset).labels,
                         band_records(dataset, cfg, names, where), "agriculture_vision",
                         problems, found)

    @staticmethod
    def _classes(folder, renamed, dataset, cfg, problems, where) -> dict[str, str]:
        """{class folder: catalog label} of one split's labels/."""
        out = {}
        for sub in sorted(p for p in (folder / "labels").iterdir() if p.is_dir()):
            name = renamed.get(sub.name, sub.name)
            try:
                out[sub.name] = catalog_labels(dataset, cfg, [name], where)[0]
            except ConfigError:
                problems.bad("label folders not in the catalog",
                             f"{folder.name}/labels/{sub.name} is none of {dataset}'s classes "
                             f"({', '.join(cfg.dataset_info(dataset).labels)})",
                             f"map it with options.class_folders: [\"{sub.name}=<label>\"]")
        if not out:
            raise ConfigError(f"{where}: {folder.name}/labels/ holds no class folder the "
                              f"catalog knows; check root")
        return out

    @staticmethod
    def _item(folder, rgb, split, classes, nir, problems) -> Item | None:
        stem = rgb.stem
        files = {"nir": folder / "images" / "nir" / rgb.name,
                 "boundary": folder / "boundaries" / f"{stem}.png",
                 "mask": folder / "masks" / f"{stem}.png"}
        files.update({f"labels/{c}": folder / "labels" / c / f"{stem}.png" for c in classes})
        if not nir:
            files.pop("nir")
        absent = [k for k, p in files.items() if not p.is_file()]
        if absent:
            problems.bad("tiles with files missing", f"{folder.name} tile {stem} has no "
                         f"{', '.join(absent)}", "unpack the whole release")
            return None
        size = image_size(rgb)
        wrong = [k for k, p in files.items() if image_size(p) != size]
        if wrong:
            problems.bad("masks of another size", f"{folder.name} tile {stem}: {wrong[0]} is "
                         f"{image_size(files[wrong[0]])[::-1]} px, the image {size[::-1]}",
                         "masks must have their image's size")
            return None
        match = _TILE.match(stem)
        extra = {"field_id": match["field"],
                 "field_window_px": [int(v) for v in match["win"].split("-")]} if match else {}
        return Item((rgb, files["nir"]) if nir else (rgb,), split=split,
                    masks={label: files[f"labels/{c}"] for c, label in classes.items()},
                    valid=(files["boundary"], files["mask"]), extra=extra,
                    group=f"field {match['field']}" if match else None)
