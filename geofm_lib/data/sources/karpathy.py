"""Image-caption corpora in the Karpathy JSON layout (``dataset_*.json`` and an image folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.data.sources.base import (
    Scene,
    SourceBase,
    _file_bounds_lonlat,
    _resolve_root,
    scene_meta,
    usage,
)
from geofm_lib.errors import ConfigError, ShardError

# --- image-text corpora in the Karpathy JSON format -----------------------------------------------

class KarpathySource(SourceBase):
    """RSICD, UCM-captions, RSITMD, Sydney-captions: ``captions_file`` (Karpathy-style JSON:
    ``{"images": [{"filename", "sentences": [{"raw"}], "split"}, ...]}``) and ``images_dir``
    under ``root``. Several captions per image; the JSON's ``split`` field gives the splits
    (``test`` counts as validation) when ``splits: official``."""

    def __init__(self, dataset: str, spec, cfg: Config):
        self.dataset, self.spec, self.cfg = dataset, spec, cfg
        if not spec.root or not spec.captions_file:
            raise ConfigError(f"sources.{dataset} (karpathy) needs root and captions_file, "
                              "e.g. {reader: karpathy, root: /data/RSICD, captions_file: "
                              "dataset_rsicd.json, images_dir: RSICD_images}")
        root = Path(_resolve_root(spec.root))
        cap_path = root / spec.captions_file
        self.images = root / (spec.images_dir or "images")
        if not cap_path.is_file():
            raise ConfigError(f"sources.{dataset}: no captions file {spec.captions_file!r} in "
                              f"root {root.name!r}; expected <root>/{spec.captions_file} and "
                              f"<root>/{spec.images_dir or 'images'}/<filename>")
        if not self.images.is_dir():
            raise ConfigError(f"sources.{dataset}: no images folder {self.images.name!r} in "
                              f"root {root.name!r}")
        try:
            entries = json.loads(cap_path.read_text())["images"]
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"sources.{dataset}: {cap_path.name} is not a Karpathy-style "
                              f"caption file (a JSON object with an 'images' list): {exc}") \
                from None
        bad = [e.get("filename", "?") for e in entries
               if not e.get("filename") or not [s for s in e.get("sentences", [])
                                                 if str(s.get("raw", "")).strip()]]
        if bad and spec.on_bad == "error":
            raise ConfigError(f"sources.{dataset}: {len(bad)} entries of {cap_path.name} have "
                              f"no filename or no caption, e.g. {bad[:3]}; fix them or set "
                              f"on_bad: skip (skipped entries are counted in the manifest)")
        self.found = len(entries)
        entries = [e for e in entries if e.get("filename", "?") not in set(bad)]
        missing = [e["filename"] for e in entries if not (self.images / e["filename"]).is_file()]
        if missing and spec.on_bad == "error":
            raise ConfigError(f"sources.{dataset}: {len(missing)} images listed in "
                              f"{cap_path.name} are missing from {self.images.name}/, e.g. "
                              f"{missing[:3]}; or set on_bad: skip")
        entries = [e for e in entries if e["filename"] not in set(missing)]
        self.skipped = {"no_caption": len(bad), "missing_image": len(missing)}
        rng = np.random.default_rng([cfg.seed, 13, *dataset.encode()])
        n = cfg.samples_for(dataset)
        if spec.splits == "official":  # caps per official split, as for torchgeo sources
            n_val = max(int(round(n * cfg.val_fraction)), 1)
            groups = {"train": [e for e in entries if e.get("split", "train") == "train"],
                      "val": [e for e in entries if e.get("split", "train") != "train"]}
            caps = {"train": max(n - n_val, 1), "val": n_val}
            self.entries = []
            for split, group in groups.items():
                take = sorted(rng.choice(len(group), min(len(group), caps[split]),
                                         replace=False).tolist())
                self.entries += [group[i] for i in take]
        else:
            take = sorted(rng.choice(len(entries), min(len(entries), n), replace=False).tolist())
            self.entries = [entries[i] for i in take]
        self.ds_info = cfg.dataset_info(dataset)  # the catalog's entry, or a dataset card
        self.datasets = (dataset,)

    def count(self, dataset: str) -> int:
        return len(self.entries)

    def report(self, dataset: str) -> dict:
        listed = self.found - sum(self.skipped.values())
        return {"reader": "karpathy", "images_used": len(self.entries),
                "skipped": dict(self.skipped), "on_bad": self.spec.on_bad,
                **usage(self.found, len(self.entries),
                        no_caption_or_filename=self.skipped["no_caption"],
                        image_file_missing=self.skipped["missing_image"],
                        over_samples_per_dataset=listed - len(self.entries))}

    def splits(self, dataset: str) -> dict[str, list[int]] | None:
        if self.spec.splits != "official":
            return None
        out = {"train": [], "val": []}
        for i, e in enumerate(self.entries):
            out["train" if e.get("split", "train") == "train" else "val"].append(i)
        return out

    def scene(self, dataset: str, index: int) -> Scene:
        from PIL import Image

        e = self.entries[index]
        path = self.images / e["filename"]
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise ShardError(f"{dataset}: image {path.name} cannot be read ({exc})") from exc
        captions = [str(s["raw"]).strip() for s in e["sentences"] if str(s["raw"]).strip()]
        ds = self.ds_info
        meta = scene_meta(dataset, index, "karpathy", group=ds.group,
                          sensor=ds.sensor_spec.name, bands=["R", "G", "B"], gsd_m=ds.gsd_m,
                          bounds=_file_bounds_lonlat(path), file=e["filename"],
                          scene_labels=[], whole_image=True, captions=captions)
        return Scene(dataset, index, np.ascontiguousarray(np.moveaxis(rgb, -1, 0)), meta, (),
                     lambda y0, x0, h, w: [])
