"""Image-text tables (CSV or Parquet rows naming an image file, its captions and labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geofm_lib.catalog import DATASETS
from geofm_lib.config import Config
from geofm_lib.data.sources.base import (
    BAND_OPTIONS,
    Scene,
    SourceBase,
    _file_bounds_lonlat,
    _resolve_root,
    check_options,
    raster_bands,
    scene_meta,
    usage,
)
from geofm_lib.errors import ConfigError, ShardError
from geofm_lib.progress import get_logger

# --- a generic table of images, captions, labels and coordinates ----------------------------

def _read_image(path: Path, opts: dict, sensor: str | None
                ) -> tuple[np.ndarray, list, list[float] | None]:
    """(C, H, W) pixels in the file's dtype, band records, WGS84 bounds. GeoTIFFs keep all
    bands and their georeference, with bands from the file (``base.raster_bands``); other
    formats are decoded as 8-bit RGB (R, G, B)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            data = src.read()
            bands = raster_bands(src, {"sensor": sensor, **opts}, path.name)
        return data, bands, _file_bounds_lonlat(path)
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    return np.moveaxis(rgb, -1, 0), ["R", "G", "B"], None


def _split_field(value) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [v.strip() for v in str(value).split("|") if v.strip()]


log = get_logger()

class TableSource(SourceBase):
    """Images listed in a CSV or Parquet table with captions, labels and coordinates.

    Columns: ``image`` (required), ``caption`` or ``captions`` ("|"-separated), ``labels``
    ("|"-separated; the vocabulary is the catalog's for a catalog dataset, else the sorted set
    of labels in the table), ``lon`` and ``lat`` (WGS84 point; the footprint), ``split``
    (``train`` or anything else for validation; used with ``splits: official``). Rows without
    caption and labels, and unreadable images, stop the build (``on_bad: error``) or are
    skipped and counted (``on_bad: skip``).
    """

    def __init__(self, dataset: str, spec, cfg: Config):
        import pandas as pd

        if not spec.root or not spec.captions_file:
            raise ConfigError(f"sources.{dataset} (table) needs root and captions_file (a .csv "
                              f"or .parquet with columns image, caption(s), labels, lon, lat)")
        root = Path(_resolve_root(spec.root))
        table = root / spec.captions_file
        if not table.is_file():
            raise ConfigError(f"sources.{dataset}: no table {spec.captions_file!r} in "
                              f"{root.name!r}")
        try:
            df = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)
        except Exception as exc:  # noqa: BLE001 - any parser error is the same problem
            raise ConfigError(f"sources.{dataset}: {table.name} cannot be read as "
                              f"{'Parquet' if table.suffix == '.parquet' else 'CSV'}: "
                              f"{exc}") from None
        if "image" not in df.columns:
            raise ConfigError(f"sources.{dataset}: {table.name} has no 'image' column "
                              f"(columns: {', '.join(map(str, df.columns))})")
        self.dataset, self.spec, self.cfg = dataset, spec, cfg
        self.options = dict(spec.options)
        check_options(self.options, BAND_OPTIONS, f"sources.{dataset}.options")
        self.images = root / (spec.images_dir or ".")
        rows, self.skipped = [], {"no_caption_or_label": 0, "missing_image": 0,
                                  "unreadable_image": 0}
        self.found = len(df)
        problems = []
        for i, r in enumerate(df.to_dict(orient="records")):
            caps = _split_field(r.get("captions")) or _split_field(r.get("caption"))
            labels = _split_field(r.get("labels"))
            path = self.images / str(r["image"])
            if not caps and not labels:
                problems.append((i, "no caption or label", "no_caption_or_label"))
            elif not path.is_file():
                problems.append((i, f"missing image {r['image']}", "missing_image"))
            else:
                lon, lat = r.get("lon"), r.get("lat")
                point = None
                if lon is not None and lat is not None and np.isfinite([lon, lat]).all():
                    point = [float(lon), float(lat), float(lon), float(lat)]
                rows.append({"path": path, "captions": caps, "labels": labels, "point": point,
                             "split": str(r.get("split") or "train")})
        if problems and spec.on_bad == "error":
            shown = "; ".join(f"row {i}: {why}" for i, why, _ in problems[:3])
            raise ConfigError(f"sources.{dataset}: {len(problems)} bad rows in {table.name} "
                              f"({shown}); fix them or set on_bad: skip to leave them out "
                              f"(they are counted in the manifest)")
        for _, _, kind in problems:
            self.skipped[kind] += 1
        # a split column is only a split with splits: official; said, never dropped unsaid
        self.split_column_ignored = "split" in df.columns and spec.splits != "official"
        if self.split_column_ignored:
            named = df["split"].astype(str).value_counts().to_dict()
            log.warning("%s: %s has a split column (%s); it is not used: the split is seeded "
                        "by val_fraction. Set splits: official in sources.%s to use it",
                        dataset, table.name, ", ".join(f"{k} {v}" for k, v in named.items()),
                        dataset)
        # a catalog dataset or a dataset card fixes the vocabulary; else the table's labels
        self.info = cfg.dataset_info(dataset) if dataset in DATASETS or dataset in (
            cfg.dataset_cards or {}) else None
        known = self.info.labels if self.info is not None and self.info.labels else None
        seen = sorted({lab for r in rows for lab in r["labels"]})
        if known is not None:
            unknown = [lab for lab in seen if lab not in known]
            if unknown:
                raise ConfigError(f"sources.{dataset}: labels {unknown[:5]} are not in the "
                                  f"{dataset} vocabulary ({', '.join(known[:8])}"
                                  f"{' ...' if len(known) > 8 else ''}); fix the table or the "
                                  f"dataset card")
        self.vocabulary = tuple(known) if known is not None else tuple(seen)
        rng = np.random.default_rng([cfg.seed, 17, *dataset.encode()])
        take = sorted(rng.choice(len(rows), min(len(rows), cfg.samples_for(dataset)),
                                 replace=False).tolist()) if rows else []
        self.rows = [rows[i] for i in take]
        self.gsd_m = self.info.gsd_m if self.info is not None else None
        self.datasets = (dataset,)

    def count(self, dataset: str) -> int:
        return len(self.rows)

    def splits(self, dataset: str):
        if self.spec.splits != "official":
            return None
        out = {"train": [], "val": []}
        for i, r in enumerate(self.rows):
            out["train" if r["split"] == "train" else "val"].append(i)
        return out

    def report(self, dataset: str) -> dict:
        kept = self.found - sum(self.skipped.values())
        return {"reader": "table", "rows_used": len(self.rows), "skipped": dict(self.skipped),
                "on_bad": self.spec.on_bad,
                **({"split_column": "ignored: set splits: official to use it"}
                   if self.split_column_ignored else {}),
                **usage(self.found, len(self.rows), **self.skipped,
                        over_samples_per_dataset=kept - len(self.rows))}

    def scene(self, dataset: str, index: int) -> Scene:
        r = self.rows[index]
        try:
            image, bands, bounds = _read_image(
                r["path"], self.options, self.info.sensor_spec if self.info is not None
                else None)
        except ConfigError:  # the bands' description does not fit the file: not a bad image
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder error
            raise ShardError(f"{dataset}: image {r['path'].name} cannot be read "
                             f"({type(exc).__name__}: {exc}); fix or remove it (or set "
                             f"on_bad: skip and re-run)") from exc
        labels = [lab for lab in self.vocabulary if lab in set(r["labels"])]
        known = self.info is not None
        meta = scene_meta(dataset, index, "table",
                          group=self.info.group if known else "custom",
                          sensor=self.info.sensor_spec.name if known else "table",
                          bands=bands, gsd_m=self.gsd_m, bounds=r["point"] or bounds,
                          file=r["path"].name, scene_labels=labels, whole_image=True)
        if r["captions"]:
            meta["captions"] = r["captions"]
        return Scene(dataset, index, np.ascontiguousarray(image), meta, self.vocabulary,
                     lambda y0, x0, h, w: list(labels))
