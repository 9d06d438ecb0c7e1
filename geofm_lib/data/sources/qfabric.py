"""QFabric (Granular AI, 2021): five-date series of one place each, with change polygons that
carry a change type, a change status per date, and urban and geography context labels.

Layout (``root``; the release's vector folder as read by public code that loads it: *not
confirmed against the release itself*, see docs/data.md)::

    vectors/<split folder>/COCO/metadata.json     {"dataset": {"train": [...], "val": [...]},
                                                   "label:metadata": [{"options": [...]} x 4]}
    vectors/<split folder>/COCO/<location>.json   "images": one entry per date ("file_name"
                                                   relative to root), "annotations": polygons
    <the images those entries name>                GeoTIFF or PNG, RGB

Each annotation's ``properties`` list holds, in this order, the change type (an index into
the first ``options`` list of metadata.json), the status at each date (``{"0": [i], ...,
"4": [i]}``, the second list), the urban types (third list) and the geography types (fourth).
A scene is the image of one date (``options.date``, default the last); its labels are the
change type, the status *at that date*, and (``options.context_labels``, default true) the
context labels of the polygons inside each patch, by polygon area share.

Vocabulary: the release's own, from the ``options`` lists of ``metadata.json``. Public code that
reads the release lists 6 change types, 10 statuses (with ``Materials Introduced``), 5 urban
types (``Dense Urban``, ``Sparse Urban``, ``Rural``, ``Industrial``, ``Urban Slum``) and 11
geography types (``Desert``, ``Sparse Forest``, ``Lakes``, ``Dense Forest``, ``River``,
``Coastal``, ``Farms``, ``Hills``, ``Snow``, ``Barren Land``, ``Grass Land``): 32 names, where
seed 000 counts 33. A name is spelt as the catalog spells it where the catalog has it (by name,
case and separators aside: ``Grass Land`` is ``Grassland``), with two aliases
(:data:`RELEASE_ALIASES`): the urban type ``Industrial`` is ``Industrial Area`` (the change
type of that name is another label) and ``Lakes`` is ``Lake``, as seed 000's Fig. 2 writes
it. A name the catalog lacks is kept as the release writes it and listed in the reader's report
(``labels_not_in_catalog``); the catalog's context names are a reconstruction for the simulator
(see the catalog).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.sources.annotated import (
    AnnotatedSource,
    Item,
    Problems,
    band_records,
    clip_objects,
    image_size,
    open_root,
    raster_lonlat,
    reader_options,
)
from geofm_lib.data.sources.base import _norm
from geofm_lib.errors import ConfigError

RELEASE_ALIASES = {(2, "Industrial"): "Industrial Area", (3, "Lakes"): "Lake"}
"""(options list, the release's name) -> the catalog's label, where the two differ."""


class QFabricSource(AnnotatedSource):
    """``reader: qfabric``; options ``split_folder`` (under ``vectors/``; default: the only
    one), ``date`` (0-4, default 4), ``context_labels`` (default true)."""

    def __init__(self, dataset: str, spec, cfg: Config):
        opts = reader_options(spec, dataset, ("split_folder", "date", "context_labels"))
        root = open_root(dataset, spec, "vectors/<split folder>/COCO/metadata.json")
        where = f"sources.{dataset}"
        coco = self._coco_folder(root, opts, where)
        meta = _json(coco / "metadata.json", where)
        try:
            lists = [m["options"] for m in meta["label:metadata"]]
            listed = {split: list(meta["dataset"].get(split, [])) for split in ("train", "val")}
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: {coco.name}/metadata.json has no 'dataset' split lists "
                              f"or 'label:metadata' options ({exc})") from None
        if len(lists) < 2:
            raise ConfigError(f"{where}: metadata.json lists {len(lists)} label sets; QFabric's "
                              f"has change types, change statuses and context labels")
        context = bool(opts.get("context_labels", True))
        catalog = {_norm(v): v for v in cfg.dataset_info(dataset).labels}
        # each list's names: the catalog's spelling, an alias, or the release's own name
        mapped = [{n: RELEASE_ALIASES.get((i, n)) or catalog.get(_norm(n), n) for n in names}
                  for i, names in enumerate(lists)]
        used = [label for i, m in enumerate(mapped) if i < 2 or context for label in m.values()]
        vocabulary = [v for v in cfg.dataset_info(dataset).labels if v in used] + [
            v for v in dict.fromkeys(used) if v not in catalog.values()]
        date = int(opts.get("date", 4))
        problems = Problems(spec.on_bad, where)
        items, found = [], 0
        for split, files in listed.items():
            for name in files:
                found += 1
                item = self._item(root, coco / name, split, lists, mapped, date, context,
                                  problems)
                if item is not None:
                    items.append(item)
        super().__init__(cfg, dataset, spec, items, vocabulary,
                         band_records(dataset, cfg, ["R", "G", "B"], where), "qfabric",
                         problems, found, report={
                             "date_index": date, "context_labels": context,
                             "vocabulary_from": "the release's metadata.json",
                             "labels_not_in_catalog": [v for v in vocabulary
                                                       if v not in catalog.values()]})

    @staticmethod
    def _coco_folder(root: Path, opts: dict, where: str) -> Path:
        vectors = root / "vectors"
        found = sorted(p.parent.parent.name for p in vectors.glob("*/COCO/metadata.json"))
        if not found:
            raise ConfigError(f"{where}: no vectors/<split folder>/COCO/metadata.json under "
                              f"{root}")
        chosen = opts.get("split_folder") or (found[0] if len(found) == 1 else None)
        if chosen not in found:
            raise ConfigError(f"{where}: choose the split folder with options.split_folder: one "
                              f"of {', '.join(found)}")
        return vectors / chosen / "COCO"

    @staticmethod
    def _item(root, path, split, lists, mapped, date, context, problems) -> Item | None:
        if not path.is_file():
            problems.bad("location files missing", f"metadata.json lists {path.name}, which "
                         f"is not in {path.parent}", "unpack the whole release")
            return None
        loc = _json(path, path.name)
        images = loc.get("images") or []
        if not -len(images) <= date < len(images):
            problems.bad("locations without that date", f"{path.name} has {len(images)} dates, "
                         f"not date {date}", "choose options.date within them")
            return None
        entry = images[date]
        image = root / entry["file_name"]
        if not image.is_file():
            problems.bad("images referenced but absent", f"{path.name} names "
                         f"{entry['file_name']}, which is not under {root}",
                         "unpack the images of the release")
            return None
        objects = []
        for a in loc.get("annotations") or []:
            try:
                poly = np.asarray(a["segmentation"][0], float).reshape(-1, 2)
                props = a["properties"]
                picked = [mapped[0][lists[0][i]] for i in props[0]["labels"]]
                status = props[1]["labels"]
                picked += [mapped[1][lists[1][i]]
                           for i in status.get(str(date % len(images)), [])]
                if context:
                    picked += [mapped[k][lists[k][i]] for k in (2, 3)
                               if k < len(props) and k < len(lists) for i in props[k]["labels"]]
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                problems.bad("malformed annotations", f"{path.name}: annotation "
                             f"{a.get('id', '?')} ({type(exc).__name__}: {exc})",
                             "use the release's files")
                continue
            objects += [(label, poly) for label in dict.fromkeys(picked)]
        bounds, _ = raster_lonlat(image)
        item = Item((image,), split=split, objects=objects, bounds=bounds,
                    date=str(entry.get("date_captured") or entry.get("date") or "")[:10] or None,
                    extra={"location": path.stem, "date_index": date})
        clip_objects(item, image_size(image), problems)
        return item


def _json(path: Path, where: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: {path.name} cannot be read as JSON ({exc})") from None
