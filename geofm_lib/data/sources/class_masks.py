"""Images with one mask of class indices each (Houston Harvey in FloodNet's layout).

Layout (``root``; FloodNet-Supervised v1.0, the Hurricane Harvey UAV release)::

    train/train-org-img/<id>.jpg
    train/train-label-img/<id>_lab.png     one band: the class index of each pixel
    val/val-org-img/ ... val/val-label-img/ ...
    test/test-org-img/ ... test/test-label-img/ ...   (read as validation with splits: official)

FloodNet's indices: 0 background, 1 building flooded, 2 building non-flooded, 3 road flooded,
4 road non-flooded, 5 water, 6 tree, 7 vehicle, 8 pool, 9 grass. The catalog's Houston Harvey
dataset has the five flood classes (1-5); the others are no label of it and are not counted as
labels. ``options.class_names`` (one name per index, ``null`` for none) reads another
dataset's masks. A pixel value outside the list is bad input: the build stops naming the file
(``on_bad: skip``: the image is left out and counted). A class is in a patch when it covers
``min_mask_share`` of the patch's pixels.
"""

from __future__ import annotations

import numpy as np

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
from geofm_lib.errors import ConfigError, DataError

FLOODNET_CLASSES = ("Background", "Building-flooded", "Building-non-flooded", "Road-flooded",
                    "Road-non-flooded", "Water", "Tree", "Vehicle", "Pool", "Grass")
# FloodNet's names -> the catalog's Houston Harvey labels (None: not one of its five)
FLOODNET_TO_HARVEY = {"Building-flooded": "Flooded building",
                      "Building-non-flooded": "Non-flooded building",
                      "Road-flooded": "Flooded road", "Road-non-flooded": "Non-flooded road",
                      "Water": "Water"}

SPLIT_FOLDERS = {"train": "train", "val": "val", "test": "val"}


class ClassMaskSource(AnnotatedSource):
    """``reader: class_masks``; options ``class_names`` (index -> name, default FloodNet's)."""

    def __init__(self, dataset: str, spec, cfg: Config):
        opts = reader_options(spec, dataset, ("class_names",))
        root = open_root(dataset, spec, "train/train-org-img and train/train-label-img (and "
                                        "val/, test/)")
        where = f"sources.{dataset}"
        names = opts.get("class_names")
        if names is None:
            ids = {i: FLOODNET_TO_HARVEY.get(n) for i, n in enumerate(FLOODNET_CLASSES)}
            vocab = cfg.dataset_info(dataset).labels
            ids = {i: lab if lab in vocab else None for i, lab in ids.items()}
        else:
            mapped = catalog_labels(dataset, cfg, [n for n in names if n is not None], where)
            it = iter(mapped)
            ids = {i: (next(it) if n is not None else None) for i, n in enumerate(names)}
        if not any(ids.values()):
            raise ConfigError(f"{where}: none of the mask classes is a label of {dataset}; "
                              f"give options.class_names")
        problems = Problems(spec.on_bad, where)
        items, found = [], 0
        for folder_split, split in SPLIT_FOLDERS.items():
            images = root / folder_split / f"{folder_split}-org-img"
            if not images.is_dir():
                continue
            labels = root / folder_split / f"{folder_split}-label-img"
            files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
            found += len(files)
            for image in files:
                mask = labels / f"{image.stem}_lab.png"
                if not mask.is_file():
                    problems.bad("label masks missing", f"{image.name} has no "
                                 f"{labels.name}/{mask.name}", "unpack the whole release")
                    continue
                if image_size(mask) != image_size(image):
                    problems.bad("masks of another size", f"{labels.name}/{mask.name} is "
                                 f"{image_size(mask)[::-1]} px, its image "
                                 f"{image_size(image)[::-1]}", "masks must have their "
                                 "image's size")
                    continue
                items.append(Item((image,), split=split, class_mask=mask, class_ids=ids,
                                  extra={"image_id": image.stem}))
        if not found:
            raise ConfigError(f"{where}: no train/train-org-img (or val/, test/) under {root}")
        super().__init__(cfg, dataset, spec, items, cfg.dataset_info(dataset).labels,
                         band_records(dataset, cfg, ["R", "G", "B"], where), "class_masks",
                         problems, found)

    def scene(self, dataset: str, index: int):
        item = self.items[index]
        values = np.unique(self._mask(item.class_mask, image_size(item.images[0]), item))
        unknown = sorted(int(v) for v in values if int(v) not in item.class_ids)
        if unknown:
            raise DataError(f"{dataset}: {item.class_mask.name} holds class indices {unknown}, "
                            f"none of the {len(item.class_ids)} classes "
                            f"(0-{len(item.class_ids) - 1}); check the file, give "
                            f"options.class_names, or set on_bad: skip")
        return super().scene(dataset, index)
