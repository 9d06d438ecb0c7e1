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
    "scene_px": (None, "side of the simulated scene in pixels; None: 8 tiles"),
    "scene_min_classes": (4, "the simulated scene: the first with this many land-cover labels"),
    "scene_encoder": ("trained", "the encoder mapped: a CLIP (trained, checkpoint:, open_clip:, "
                                 "remoteclip:) or an image-only one (ssl:, torchgeo:, rcf)"),
    "scene_baseline": ("init", "the same maps by this encoder, as the floor beside it"),
    "scene_head": (None, "zero-shot | probe: how tiles become classes, the same for both "
                         "encoders; None: zero-shot where both have a text tower, else a "
                         "linear probe on scene_dataset's labelled train patches"),
    "scene_classes": (None, "class names of the class map; None: the truth's legend"),
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
    scene_px: int
    min_classes: int
    encoder: str
    baseline: str | None
    head: str  # tiled.ZERO_SHOT or tiled.PROBE
    classes: list[str] | None
    queries: list[str] | None  # None: DEFAULT_QUERIES, or the probe's first classes
    tile_px: int
    stride_px: int | None
    cell_px: int | None
    stats: str
    memory_mb: float
    n_boot: int

    def describe(self, cfg: Config) -> str:
        where = str(self.path) if self.path else \
            f"a simulated {self.dataset} scene of {self.scene_px} px"
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
    stats = p["scene_stats"] or ("scene" if path else p["scene_dataset"])
    dataset = p["scene_dataset"] or "-"
    opts = p["scene_options"] or {}
    if not isinstance(opts, dict):
        raise ConfigError(f"scene_options: {opts!r}; give a mapping, e.g. "
                          f"{{band_names: [red, green, blue]}}")
    tile_px = parameters.whole("scene_tile_px", p["scene_tile_px"] or cfg.image_px, 8)
    return Settings(path, opts, dataset,
                    parameters.whole("scene_px", p["scene_px"] or 8 * tile_px, 32),
                    parameters.whole("scene_min_classes", p["scene_min_classes"], 1),
                    p["scene_encoder"], p["scene_baseline"] or None, head, classes, queries,
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
    return write_simulated_scene(cfg.path("scenes", "simulated"), s.dataset, s.scene_px,
                                 cfg.seed, index)


def image_of(sc) -> Path:
    return sc.image if isinstance(sc, SceneFiles) else sc


def classes_of(sc, s: Settings) -> list[str]:
    if s.classes:
        return s.classes
    if isinstance(sc, SceneFiles):
        return list(sc.classes)
    raise ConfigError("scene_classes: give the class names of your scene's map (a file of "
                      "yours has no legend here)")


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
    blocks = padded.reshape(h, c, w, c).transpose(0, 2, 1, 3).reshape(h, w, c * c)
    k = int(t.max()) + 1 if t.size and t.max() >= 0 else 0
    counts = np.stack([(blocks == j).sum(-1) for j in range(k)], -1) if k else \
        np.zeros((h, w, 1), int)
    best = counts.argmax(-1)
    return np.where(counts.max(-1) * 2 >= c * c, best, -1).astype(np.int16)


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
    """Per-cell accuracy of each encoder's class map against the truth raster, with 95 %
    block-bootstrap intervals, beside the truth's majority class (a floor that knows the
    scene's class shares) and chance (1 / classes). A scene of yours has no truth here: said
    instead of scored."""
    if not isinstance(sc, SceneFiles):
        return "a scene of yours has no land-cover truth here: the maps are shown, not scored"
    classes = list(next(iter(heads.values())).classes)
    if list(classes) != list(sc.classes):
        return (f"scene_classes {classes} are not the truth's legend {list(sc.classes)}: "
                f"the class map is shown, not scored")
    rows = {}
    truth = None
    for name, se in embedded.items():
        if truth is None:
            truth = truth_cells(sc.truth, se.tiling)
        idx, _ = se.class_map(heads[name])
        scored = (truth >= 0) & (idx >= 0)
        acc, ci, cells, blocks = _block_accuracy(idx == truth, scored, s.n_boot, cfg.seed)
        rows[name] = {"accuracy %": round(acc, 1), "95 % CI": [round(v, 1) for v in ci],
                      "cells": cells, "blocks": blocks}
    scored = truth >= 0
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
