"""What a CLIP model sees over a whole scene (notebook 09): the trained image tower run tile by
tile over a scene (``encoders.scene``), a zero-shot class map and query heatmaps as COGs, and,
where the scene's land cover is known (the simulator's scenes), the class map scored against it
beside its floors. One function per step:

1. :func:`settings` — the notebook's own parameters, checked before any work;
2. :func:`scene` — the scene file: a GeoTIFF of yours (``scene_path``) or a simulated one of a
   run dataset, with its truth raster;
3. :func:`embed` — the tile embeddings of the trained encoder and of its baseline (``init``: the
   same architecture at random weights), cached;
4. :func:`heads` — how each encoder's tiles become classes, the same way for both: zero-shot
   (class prompts by the text tower) or a linear probe fitted on the run's labelled patches of
   ``scene_dataset`` (the way for encoders without a text tower: ``ssl:``, ``torchgeo:``);
5. :func:`products` — the class map, its score and the query heatmaps as COGs;
6. :func:`score` — per-cell accuracy of each class map against the truth, with a block
   bootstrap interval, beside the majority class of the truth and chance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geofm_lib import paths
from geofm_lib.config import Config
from geofm_lib.data.simulated_scene import (
    SCENE_INDEX,
    SceneFiles,
    label_classes,
    write_simulated_scene,
)
from geofm_lib.encoders import check_encoder_name, has_text_tower
from geofm_lib.encoders import embed as embed_split
from geofm_lib.encoders import scene as tiled
from geofm_lib.errors import ConfigError
from geofm_lib.evaluation.bootstrap import interval, resamples
from geofm_lib.records import SceneAccuracy
from geofm_lib.studies import parameters

PARAMETERS = {
    "scene_path": (None, "a GeoTIFF/COG of yours; None: a simulated scene of scene_dataset"),
    "scene_options": (None, "band_names / sensor / nodata of your file, as a geotiff source's"),
    "scene_dataset": (None, "the run dataset whose simulated scene is mapped; None: qfabric "
                            "where the run has it, else its first with land-cover labels"),
    "scene_size_px": (None, "side of the simulated scene in pixels; None: 8 tiles"),
    "scene_min_classes": (4, "the simulated scene: the first with this many land-cover labels"),
    "scene_encoder": ("trained", "the encoder mapped: a CLIP (trained, checkpoint:, open_clip:, "
                                 "remoteclip:) or an image-only one (ssl:, torchgeo:, rcf)"),
    "scene_baseline": ("init", "the same maps by this encoder, as the floor beside it"),
    "scene_head": (None, "zero-shot | probe: how tiles become classes, the same for both "
                         "encoders; None: zero-shot where both have a text tower, else a "
                         "linear probe on scene_dataset's labelled train patches"),
    "scene_classes": (None, "class names of the class map; None: the truth's legend, or the "
                            "classes of scene_labels"),
    "scene_labels": (None, "labelled polygons or points of your scene (GeoPackage, GeoJSON, "
                           "shapefile: what geopandas reads) to score its class map against"),
    "scene_label_column": ("name", "the column of scene_labels that holds each class name"),
    "scene_queries": (None, "queries drawn as heatmaps; None: road and construction site for a "
                            "CLIP, the probe's first two classes for an image-only encoder"),
    "scene_tile_px": (None, "tile side in scene pixels; None: image_px"),
    "scene_stride_px": (None, "tile step; None: half a tile"),
    "scene_cell_px": (None, "product cell side; None: a quarter of the stride"),
    "scene_stats": (None, "'scene' or a run dataset; None: scene_dataset's for a simulated "
                          "scene, the scene's own for yours"),
    "scene_memory_mb": (512, "pixels read at once (the maps do not depend on it)"),
    "n_boot": (1000, "bootstrap draws of the intervals"),
}
NAMES = tuple(PARAMETERS)

BLOCK_CELLS = 8
"""The accuracy's interval resamples square blocks of this many cells a side: neighbouring
cells share tiles and land cover, so they are not independent draws."""


@dataclass(frozen=True)
class Settings:
    path: Path | None
    options: dict
    dataset: str
    size_px: int
    min_classes: int
    encoder: str
    baseline: str | None
    head: str  # tiled.ZERO_SHOT or tiled.PROBE
    classes: list[str] | None
    labels: Path | None  # a vector file of labelled features (a scene of yours)
    label_column: str
    queries: list[str] | None  # None: DEFAULT_QUERIES, or the probe's first classes
    tile_px: int
    stride_px: int | None
    cell_px: int | None
    stats: str
    memory_mb: float
    n_boot: int

    def describe(self, cfg: Config) -> str:
        where = str(self.path) if self.path else \
            f"a simulated {self.dataset} scene of {self.size_px} px"
        head = self.head if self.head == tiled.ZERO_SHOT else \
            f"{self.head} on {self.dataset}'s labelled train patches"
        return (f"run {cfg.name}: {self.encoder} over {where}, tiles of {self.tile_px} px, "
                f"statistics: {self.stats}; baseline: {self.baseline or 'none'}; classes by "
                f"{head}")


PREFERRED_DATASET = "qfabric"


def default_dataset(cfg: Config) -> str | None:
    """The run dataset whose simulated scene 09 maps by default: qfabric where the run has it,
    else the first the simulator draws with land-cover labels (None: none has, e.g. an
    image-text corpus)."""
    from geofm_lib.data.recipes import RECIPES

    usable = [ds for ds in cfg.dataset_keys if ds in RECIPES and
              any(a.label for a in RECIPES[ds].areas.values())]
    return PREFERRED_DATASET if PREFERRED_DATASET in usable else next(iter(usable), None)


def not_applicable(cfg: Config, params: dict) -> str | None:
    """Why 09 cannot run on this run with these parameters (None: it can)."""
    if params.get("scene_path") or params.get("scene_dataset") or default_dataset(cfg):
        return None
    return ("no dataset of this run has a simulated scene with land-cover labels (an image-text "
            "corpus, or files of yours): give the scene with -p scene_path /path/scene.tif")


def settings(cfg: Config, namespace: dict) -> Settings:
    p = parameters.read(namespace, PARAMETERS)
    path = Path(p["scene_path"]).expanduser() if p["scene_path"] else None
    if path is not None and not path.is_file():
        raise ConfigError(f"scene_path {str(path)!r}: no such file; give a GeoTIFF or COG")
    if path is None and not p["scene_dataset"]:
        p["scene_dataset"] = default_dataset(cfg)
        if p["scene_dataset"] is None:
            raise ConfigError(not_applicable(cfg, {}))
    if path is None and p["scene_dataset"] not in cfg.dataset_keys:
        raise ConfigError(f"scene_dataset {p['scene_dataset']!r} is not a dataset of this run "
                          f"({', '.join(cfg.dataset_keys)}); name one, or give scene_path")
    for name in ("scene_encoder", "scene_baseline"):
        if p[name]:
            check_encoder_name(p[name])
    head = _head_kind(p["scene_head"], [p["scene_encoder"], p["scene_baseline"]])
    if head == tiled.PROBE and not p["scene_dataset"]:
        raise ConfigError("scene_head 'probe' fits a linear probe on a run dataset's labelled "
                          "patches: name it with scene_dataset (its labels are the classes)")
    queries = None if p["scene_queries"] is None else parameters.as_list(p["scene_queries"])
    if queries is not None and not all(isinstance(q, str) and q.strip() for q in queries):
        raise ConfigError(f"scene_queries: {queries!r}; give a list of texts")
    classes = parameters.as_list(p["scene_classes"]) if p["scene_classes"] else None
    labels = Path(p["scene_labels"]).expanduser() if p["scene_labels"] else None
    if labels is not None and not labels.is_file():
        raise ConfigError(f"scene_labels {str(labels)!r}: no such file; give a GeoPackage, "
                          f"GeoJSON or shapefile of labelled polygons or points")
    if labels is not None and path is None:
        raise ConfigError("scene_labels scores a scene of yours (scene_path); a simulated scene "
                          "is scored against its own truth")
    stats = p["scene_stats"] or ("scene" if path else p["scene_dataset"])
    dataset = p["scene_dataset"] or "-"
    opts = p["scene_options"] or {}
    if not isinstance(opts, dict):
        raise ConfigError(f"scene_options: {opts!r}; give a mapping, e.g. "
                          f"{{band_names: [red, green, blue]}}")
    tile_px = parameters.whole("scene_tile_px", p["scene_tile_px"] or cfg.image_px, 8)
    return Settings(path, opts, dataset,
                    parameters.whole("scene_size_px", p["scene_size_px"] or 8 * tile_px, 32),
                    parameters.whole("scene_min_classes", p["scene_min_classes"], 1),
                    p["scene_encoder"], p["scene_baseline"] or None, head, classes, labels,
                    str(p["scene_label_column"]), queries,
                    tile_px,
                    p["scene_stride_px"], p["scene_cell_px"], stats,
                    parameters.positive("scene_memory_mb", p["scene_memory_mb"]),
                    parameters.whole("n_boot", p["n_boot"], 10))


HEADS = {"zero-shot": tiled.ZERO_SHOT, "probe": tiled.PROBE}


def _head_kind(asked, encoders) -> str:
    """The class head of both encoders: as asked, else zero-shot where each has a text tower
    and a linear probe otherwise (one head for both: the comparison stays like for like)."""
    if asked is not None:
        if asked not in HEADS:
            raise ConfigError(f"scene_head {asked!r}: choose zero-shot or probe")
        head = HEADS[asked]
        if head == tiled.ZERO_SHOT:
            for name in filter(None, encoders):
                if not has_text_tower(name):
                    raise ConfigError(f"scene_head 'zero-shot': {name} has no text tower; use "
                                      f"scene_head 'probe' (a linear probe on labelled patches)")
        return head
    text = all(has_text_tower(name) for name in filter(None, encoders))
    return tiled.ZERO_SHOT if text else tiled.PROBE


SCENES_LOOKED_AT = 20


def scene(cfg: Config, s: Settings) -> SceneFiles | Path:
    """The scene: ``scene_path``, or the first simulated scene of ``scene_dataset`` (from
    :data:`SCENE_INDEX` on) with ``scene_min_classes`` land-cover labels; where none of the
    first :data:`SCENES_LOOKED_AT` has as many, the first with the most (said in a line)."""
    if s.path is not None:
        return s.path
    counts = {}
    for index in range(SCENE_INDEX, SCENE_INDEX + SCENES_LOOKED_AT):
        counts[index] = label_classes(s.dataset, index, cfg.seed)
        if counts[index] >= s.min_classes:
            break
    index = max(counts, key=lambda i: (counts[i], -i))
    if counts[index] < s.min_classes:
        print(f"no {s.dataset} scene among the first {SCENES_LOOKED_AT} has {s.min_classes} "
              f"land-cover labels: scene {index} has the most ({counts[index]})")
    if counts[index] == 0:
        raise ConfigError(f"{s.dataset}'s simulated scenes have no land-cover labels to map; "
                          f"choose another scene_dataset or give scene_path")
    return write_simulated_scene(cfg.path("scenes", "simulated"), s.dataset, s.size_px,
                                 cfg.seed, index)


def image_of(sc) -> Path:
    return sc.image if isinstance(sc, SceneFiles) else sc


def classes_of(sc, s: Settings) -> list[str]:
    """The class map's classes: ``scene_classes``, else the simulated scene's legend, else the
    classes named in ``scene_labels`` (sorted)."""
    if s.classes:
        return s.classes
    if isinstance(sc, SceneFiles):
        return list(sc.classes)
    if s.labels is not None:
        return sorted(read_labels(s)[s.label_column].astype(str).unique())
    raise ConfigError("scene_classes: give the class names of your scene's map (a file of "
                      "yours has no legend here), or scene_labels to take them from")


def read_labels(s: Settings):
    """The labelled features of ``scene_labels`` (a GeoDataFrame), checked: a CRS, the class
    column, polygons or points."""
    import geopandas as gpd

    try:
        gdf = gpd.read_file(s.labels)
    except Exception as exc:  # noqa: BLE001 - pyogrio's errors name the format problem
        raise ConfigError(f"scene_labels {s.labels.name}: cannot be read as vector data "
                          f"({str(exc)[:200]})") from None
    if s.label_column not in gdf.columns:
        raise ConfigError(f"scene_labels {s.labels.name} has no column {s.label_column!r} "
                          f"(columns: {', '.join(c for c in gdf.columns if c != 'geometry')}); "
                          f"name the class column with scene_label_column")
    if gdf.crs is None:
        raise ConfigError(f"scene_labels {s.labels.name} has no CRS: set it (e.g. in QGIS, or "
                          f"geopandas' set_crs) so the features can be placed on the scene")
    kinds = set(gdf.geom_type.dropna())
    if not kinds <= {"Polygon", "MultiPolygon", "Point", "MultiPoint"}:
        raise ConfigError(f"scene_labels {s.labels.name}: {sorted(kinds)} geometries; labels are "
                          f"polygons or points")
    return gdf[gdf.geometry.notna() & gdf[s.label_column].notna()]


LABEL_SAMPLES = 4
"""Polygons are rasterised at this many samples a cell side; a cell takes the class covering at
least half of its samples."""


def label_cells(s: Settings, classes: list[str], tiling: tiled.Tiling) -> tuple[np.ndarray, str]:
    """``scene_labels`` on the product cells (class index, -1: unlabelled) and a line saying
    what was used: polygons by the class covering at least half of a cell (rasterised at
    :data:`LABEL_SAMPLES` samples a side, in the scene's CRS), points by the cell they fall in
    (where no polygon labels it). Features of other classes are left out, and said."""
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    gdf = read_labels(s)
    names = gdf[s.label_column].astype(str)
    known = names.isin(classes)
    gdf, names = gdf[known].to_crs(tiling.crs), names[known]
    h, w = tiling.out_shape
    f = LABEL_SAMPLES
    fine = Affine(*tiling.out_transform()[:6]) @ Affine.scale(1 / f)
    index = names.map({c: i for i, c in enumerate(classes)}).to_numpy()
    polygons = gdf.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    cells = np.full((h, w), -1, np.int16)
    if polygons.any():
        samples = rasterize(zip(gdf.geometry[polygons], index[polygons], strict=True),
                            out_shape=(h * f, w * f), transform=fine, fill=-1, dtype="int16")
        cells = _cell_majority(samples, h, w, f, len(classes))
    if (~polygons).any():
        marks = rasterize(zip(gdf.geometry[~polygons], index[~polygons], strict=True),
                          out_shape=(h, w), transform=tiling.out_transform(), fill=-1,
                          dtype="int16")
        cells = np.where(cells >= 0, cells, marks).astype(np.int16)
    left = int((~known).sum())
    note = (f"{s.labels.name}: {int(polygons.sum())} polygons and {int((~polygons).sum())} "
            f"points of {len(classes)} classes label {int((cells >= 0).sum())} cells"
            + (f"; {left} features of other classes left out" if left else ""))
    return cells, note


def truth_of(s: Settings, sc, classes: list[str], tiling: tiled.Tiling):
    """(truth cells, what they are) of the scene: the simulated scene's land cover, your
    ``scene_labels``, or (None, why not)."""
    if isinstance(sc, SceneFiles):
        if list(classes) != list(sc.classes):
            return None, (f"scene_classes {classes} are not the truth's legend "
                          f"{list(sc.classes)}: the class map is shown, not scored")
        return truth_cells(sc.truth, tiling), "the simulated scene's land cover"
    if s.labels is not None:
        return label_cells(s, classes, tiling)
    return None, ("a scene of yours without scene_labels has no truth here: the maps are "
                  "shown, not scored")


def embed(cfg: Config, s: Settings, sc, device: str = "cpu") -> dict[str, tiled.SceneEmbeddings]:
    """Tile embeddings of the encoder and its baseline (cached per file, encoder and tiling)."""
    out = {}
    for name in filter(None, (s.encoder, s.baseline)):
        out[name] = tiled.embed_scene(cfg, image_of(sc), name, tile_px=s.tile_px,
                                      stride_px=s.stride_px, cell_px=s.cell_px, stats=s.stats,
                                      options=s.options, device=device,
                                      memory_mb=s.memory_mb)
    return out


def heads(cfg: Config, s: Settings, embedded: dict, classes: list[str],
          device: str = "cpu") -> dict[str, tiled.ClassHead]:
    """Each encoder's class head (``s.head`` for all): the class prompts by its text tower, or a
    linear probe fitted on its frozen embeddings of ``scene_dataset``'s labelled train patches
    (06's linear probe; the scene is not among them: simulated scenes are drawn from their own
    index, :data:`SCENE_INDEX`)."""
    out = {}
    for name, se in embedded.items():
        if s.head == tiled.ZERO_SHOT:
            out[name] = tiled.zero_shot_head(cfg, se, classes, device)
            continue
        emb = embed_split(cfg, name, "train", device, show_progress=False, dataset=s.dataset)
        out[name] = tiled.probe_head(emb.features, emb.labels, classes,
                                     f"{s.dataset} (train split)", cfg.seed)
    return out


DEFAULT_QUERIES = ["road", "construction site"]


def queries_of(s: Settings, heads: dict) -> list[str]:
    """The queries drawn: ``scene_queries``; by default two texts for a CLIP, and for an
    image-only encoder (whose queries are its probe's classes) the first two classes."""
    if s.queries is not None:
        return s.queries
    if has_text_tower(s.encoder):
        return list(DEFAULT_QUERIES)
    return list(heads[s.encoder].classes[:2])


def products(cfg: Config, s: Settings, embedded: dict, heads: dict,
             device: str = "cpu") -> dict[str, dict[str, Path]]:
    """The COGs of each encoder: ``work/runs/<run>/scene/<encoder>/``."""
    out = {}
    for name, se in embedded.items():
        folder = paths.scene_dir(cfg) / tiled.slug(name)
        out[name] = tiled.write_products(cfg, se, folder, head=heads[name],
                                         queries=queries_of(s, heads)
                                         if name == s.encoder else (),
                                         device=device, memory_mb=s.memory_mb)
    return out


def truth_cells(truth: Path, tiling: tiled.Tiling) -> np.ndarray:
    """The truth raster on the product cells: each cell's most frequent class (-1: none of the
    legend's classes covers half of it)."""
    import rasterio

    with rasterio.open(truth) as src:
        t = src.read(1)
    c = tiling.cell_px
    h, w = tiling.out_shape
    padded = np.full((h * c, w * c), -1, np.int16)
    padded[:t.shape[0], :t.shape[1]] = t
    return _cell_majority(padded, h, w, c, int(t.max()) + 1 if t.size else 0)


def _cell_majority(samples: np.ndarray, h: int, w: int, c: int, k: int) -> np.ndarray:
    """(h, w) class of each cell of ``c`` x ``c`` samples: the most frequent of classes
    ``0..k-1`` where it covers at least half of the cell, else -1."""
    blocks = samples.reshape(h, c, w, c).transpose(0, 2, 1, 3).reshape(h, w, c * c)
    if k <= 0:
        return np.full((h, w), -1, np.int16)
    counts = np.stack([(blocks == j).sum(-1) for j in range(k)], -1)
    return np.where(counts.max(-1) * 2 >= c * c, counts.argmax(-1), -1).astype(np.int16)


def _block_accuracy(correct: np.ndarray, scored: np.ndarray, n_boot: int, seed: int):
    """Accuracy over the scored cells and its 95 % interval from resampling square blocks of
    :data:`BLOCK_CELLS` cells."""
    b = BLOCK_CELLS
    h, w = correct.shape
    hb, wb = -(-h // b), -(-w // b)
    pad = np.zeros((hb * b, wb * b), bool)
    hits, n = pad.copy(), pad.copy()
    hits[:h, :w], n[:h, :w] = correct & scored, scored
    hits = hits.reshape(hb, b, wb, b).sum((1, 3)).ravel()
    n = n.reshape(hb, b, wb, b).sum((1, 3)).ravel()
    keep = n > 0
    hits, n = hits[keep], n[keep]
    acc = 100 * hits.sum() / max(n.sum(), 1)
    draws = [100 * hits[i].sum() / max(n[i].sum(), 1) for i in resamples(len(n), n_boot, seed)]
    return float(acc), interval(draws), int(n.sum()), int(len(n))


def score(cfg: Config, s: Settings, sc, embedded: dict, heads: dict) -> pd.DataFrame | str:
    """Per-cell accuracy of each encoder's class map against the truth (:func:`truth_of`: the
    simulated scene's land cover or your ``scene_labels``), with 95 % block-bootstrap
    intervals, beside the truth's majority class (a floor that knows the class shares) and
    chance (1 / classes). Without a truth: why, instead of a table."""
    classes = list(next(iter(heads.values())).classes)
    truth, what = truth_of(s, sc, classes, next(iter(embedded.values())).tiling)
    if truth is None:
        return what
    if not (truth >= 0).any():
        return f"{what}: no cell is labelled, so the class map is shown, not scored"
    # every row on the same cells: labelled, and mapped by every encoder (encoders reading
    # other bands may have other nodata)
    maps = {name: se.class_map(heads[name])[0] for name, se in embedded.items()}
    scored = (truth >= 0) & np.logical_and.reduce([idx >= 0 for idx in maps.values()])
    if not scored.any():
        return f"{what}: every labelled cell is nodata in a class map, so nothing is scored"
    rows = {}
    for name, idx in maps.items():
        acc, ci, cells, blocks = _block_accuracy(idx == truth, scored, s.n_boot, cfg.seed)
        rows[name] = {"accuracy %": round(acc, 1), "95 % CI": [round(v, 1) for v in ci],
                      "cells": cells, "blocks": blocks}
    major = np.bincount(truth[scored], minlength=len(classes)).argmax()
    acc, ci, cells, blocks = _block_accuracy(truth == major, scored, s.n_boot, cfg.seed)
    rows[f"majority class ({classes[major]}; knows the truth's shares)"] = {
        "accuracy %": round(acc, 1), "95 % CI": [round(v, 1) for v in ci], "cells": cells,
        "blocks": blocks}
    rows["chance (1 / classes)"] = {"accuracy %": round(100 / len(classes), 1),
                                    "95 % CI": "–", "cells": cells, "blocks": blocks}
    return pd.DataFrame.from_dict(rows, orient="index").astype(
        {"cells": int, "blocks": int, "accuracy %": float})


def accuracies(scores: pd.DataFrame | str) -> dict[str, SceneAccuracy] | None:
    """The rows of :func:`score` as the record's typed rows (None: not scored)."""
    if isinstance(scores, str):
        return None
    return {name: SceneAccuracy(accuracy=float(r["accuracy %"]),
                                ci95=list(r["95 % CI"]) if isinstance(r["95 % CI"], list)
                                else None, cells=int(r["cells"]), blocks=int(r["blocks"]))
            for name, r in scores.iterrows()}


def time_query(cfg: Config, se: tiled.SceneEmbeddings, query: str, head=None,
               device: str = "cpu"):
    """(heatmap, seconds) of one query from the cached tile embeddings: the text tower on the
    prompt, one matrix product and the blend (an image-only encoder: the probability of one of
    its probe ``head``'s classes)."""
    start = time.perf_counter()
    scores, _ = tiled.query_scores(cfg, se, query, head, device)
    return se.blend(scores)[..., 0], time.perf_counter() - start
