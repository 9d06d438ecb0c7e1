"""Parameters: named YAML sets merged, validated and frozen before any work starts.

Merge order (later wins)::

    parameters/defaults.yaml  <-  parameters/<preset>.yaml  <-  parameters/<experiment>.yaml
                              <-  notebook / papermill / command-line overrides

A preset sets the size of a run (``ci``, ``demo``, ``full``); an experiment sets what is run
(``group_A``, ``group_B``, ``group_C``, ``compiled``, ``group_C_metadata`` of seed 000).
Overrides that are ``None`` mean "keep the value of the sets above".

Every key is typed and range-checked by a pydantic model in strict mode (``"ten"`` is not an
integer, ``"yes"`` is not a boolean); errors name the key, the value, where it came from and
what is allowed, and are raised before any data is touched.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import types
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from geofm_lib.catalog import (
    DATASETS,
    GROUP_DATASETS,
    SENSORS,
    SIMULATED,
    dataset_from_card,
    paper_patches,
)
from geofm_lib.errors import ConfigError, PretrainedUnavailable
from geofm_lib.io import check_name, parse_yaml, read_yaml
from geofm_lib.models.devices import resolve_device, resolve_precision
from geofm_lib.models.names import check_pretrained, known_model_names

# The readers of the ``sources`` parameter (``data.sources.registry.READERS`` opens each).
READERS = ("simulator", "torchgeo", "karpathy", "geotiff", "table", "xview", "coco", "dota",
           "agriculture_vision", "class_masks", "qfabric", "spectral_earth")
# The whole-run ``source`` values (one reader for every dataset of the run).
SOURCES = ("simulator", "bigearthnet", "geotiff")

# The positive-pair modes of self-supervised pretraining (seed 003): name -> (the name seed
# 003's tables print, what a pair is). ``ssl.pairs.VIEWS`` draws the views of each.
SSL_MODES: dict[str, tuple[str, str]] = {
    "augment": ("augmentation pairs", "two views of one image"),
    "sensor": ("sensor pairs", "S1 and S2 of a place"),
    "fusion_all": ("all fusion", "S1+S2 stacked"),
    "fusion_partial": ("partial fusion", "S1, S2 or S1+S2 per sample"),
}

# Self-supervised methods (seed 001 compares the three; ``ssl.methods.METHODS`` builds each).
SSL_METHODS: dict[str, str] = {
    "moco": "MoCo-v2, torchgeo's MoCoTask: query/key encoders, a queue of negatives",
    "dino": "DINO, lightly's head and loss: a momentum teacher, multi-crop self-distillation",
    "mae": "MAE, lightly's masked ViT: reconstruct the masked patches (ViT backbones only)",
}
# Encoders of SSL runs: timm ResNets, and ViTs named by width and patch (timm's <name>_224,
# made at the data's image_px). ViT-S/16 is seed 001's; the tiny one is for CPU tests.
SSL_BACKBONES = ("resnet18", "resnet34", "resnet50", "vit_small_patch16", "vit_small_patch8",
                 "vit_tiny_patch16")


def vit_patch_px(backbone: str) -> int:
    """The patch side of a ViT backbone name (``vit_small_patch16`` -> 16)."""
    return int(backbone.rsplit("patch", 1)[1])


class SourceSpec(BaseModel):
    """Where one dataset's samples come from (an entry of the ``sources`` parameter).

    Readers:

    * ``simulator``: the embedded scene simulator (default for the 8 datasets of seed 000);
    * ``torchgeo``: a torchgeo dataset class on a local root (``dataset_class`` e.g.
      ``BigEarthNet``, ``EuroSAT``, ``UCMerced``, ``RESISC45``; ``options`` are passed to it,
      e.g. ``{bands: s2, num_classes: 43}``); ``download: true`` lets torchgeo download;
    * ``karpathy``: an image-text corpus with a Karpathy-style JSON (RSICD, UCM-captions,
      RSITMD, Sydney-captions): ``root`` holds ``captions_file`` and the ``images_dir``;
    * ``geotiff``: a large scene (``root`` is the .tif, any CRS) cut into patches; ``options``:
      ``labels`` (GeoPackage/GeoJSON polygons or points), ``label_column``, ``stride_px``,
      ``band_names``, ``max_nodata``. Its dataset key may be any name (labels come from the
      vector file). ``root`` may also be an EnMAP L1C/L2A product folder (or its
      METADATA.XML): its SPECTRAL_IMAGE is read with the band centres and widths of the
      product's metadata.
    * ``xview``, ``coco`` (SeaDronesSee v2), ``dota`` (MAFAT), ``agriculture_vision``,
      ``class_masks`` (Houston Harvey, FloodNet's layout), ``qfabric``: seed 000's datasets in their
      published formats (``data/sources/<reader>.py`` documents each layout); ``options``
      ``min_object_share``, ``min_mask_share``, ``min_valid`` set how patches are labelled.
    * ``spectral_earth``: SpectralEarth's EnMAP patches (``enmap/<location>/*.tif``, dataset
      ``spectral_earth``) and its EnMAP-CORINE task (``enmap/``, ``corine/``, ``splits/``,
      dataset ``enmap_corine``), ``data/sources/spectral_earth.py``.
    * ``table``: a CSV or Parquet file (``captions_file`` under ``root``) with columns
      ``image`` (path, relative to ``images_dir``), ``caption`` or ``captions`` ("|"-separated),
      optional ``labels`` ("|"-separated), ``lon``/``lat`` and ``split``.

    ``on_bad``: ``error`` (default) stops on an unreadable image or a row without caption or
    label; ``skip`` leaves such items out and counts them in the shard manifest.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    reader: Literal[READERS]
    root: str | None = None
    dataset_class: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    download: bool = False
    splits: Literal["official", "random"] = "random"
    captions_file: str | None = None
    images_dir: str | None = None
    on_bad: Literal["error", "skip"] = "error"

    @field_validator("options")
    @classmethod
    def _plain_options(cls, v):
        for k, x in v.items():
            if not isinstance(x, str | int | float | bool | list | type(None)):
                raise ValueError(f"option {k!r} must be a plain value, got {type(x).__name__}")
        return v


class CardBand(BaseModel):
    """One band of a dataset card: its name in the files, and its wavelength or polarisation."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    center_nm: float | None = Field(None, gt=0)
    fwhm_nm: float | None = Field(None, gt=0)
    polarisation: Literal["VV", "VH", "HH", "HV"] | None = None


class DatasetCard(BaseModel):
    """A dataset the catalog does not know, declared by the user (``dataset_cards`` in a
    parameter file, or ``dataset.yaml`` beside the data): usable with every reader.

    ``sensor`` is a catalog sensor key (``sentinel2_l2a``, ``aerial_rgb``, ...; ``geofm
    params`` lists them) or omitted with ``bands`` giving each band's wavelength.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str | None = None  # for tables and captions; default: the key
    sensor: str | None = None
    bands: tuple[CardBand, ...] | None = None
    units: str | None = None
    gsd_m: float = Field(gt=0, le=10_000)
    group: Literal["A", "B", "C", "custom"] = "custom"
    labels: tuple[str, ...] = ()
    label_kind: Literal["area", "object", "scene", "caption", "unlabelled"] = "area"

    @model_validator(mode="after")
    def _sensor_or_bands(self):
        if self.sensor is not None and self.sensor not in SENSORS:
            raise ValueError(f"sensor {self.sensor!r} is not a catalog sensor ({', '.join(SENSORS)}"
                             f"); leave it out and list the bands with their center_nm instead")
        if self.sensor is None and not self.bands:
            raise ValueError("a dataset card needs a catalog sensor or its bands (name and "
                             "center_nm or polarisation each)")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels has duplicates")
        return self


class Config(BaseModel):
    """The resolved parameters of a run. Frozen: a run cannot change its own parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # what to run
    group: Literal["A", "B", "C", "all", "H", "custom"] = Field(
        "all", description="resolution group of seed 000 (A: 10 m, B: 6 cm, C: 30-50 cm), all "
                           "(compiled), H (seed 001's hyperspectral EnMAP data), or custom "
                           "(exactly the `datasets` listed)")
    datasets: tuple[str, ...] | None = Field(
        None, description="subset of the group's datasets (catalog keys); None = all")
    sources: dict[str, SourceSpec] | None = Field(
        None, description="per-dataset sources (reader, root, ...); datasets not listed come "
                          "from the simulator")
    dataset_cards: dict[str, DatasetCard] | None = Field(
        None, description="datasets the catalog does not know: {key: {sensor or bands, gsd_m, "
                          "labels, group, name}}, usable with every reader")
    source: Literal[SOURCES] = Field(
        "simulator", description="where samples come from")
    source_path: str | None = Field(
        None, description="folder or file for the real-data sources")
    # data
    dataset_mix: Literal["balanced", "paper"] = Field(
        "balanced", description="balanced: samples_per_dataset scenes of every dataset; paper: "
                                "the same total, shared as seed 000's compiled set (Table 1 "
                                "after cutting into 512-px patches)")
    samples_per_dataset: int = Field(64, ge=1, le=10_000_000,
                                     description="scenes rendered per dataset")
    image_px: int = Field(64, ge=8, le=4096, description="side of stored patches, pixels")
    scene_px: int = Field(0, ge=0, le=65536,
                          description="side of rendered scenes; cut into image_px patches; "
                                      "0 = same as image_px")
    patch_stride_px: int = Field(
        0, ge=0, le=65536, description="step between the origins of patches cut from a scene; "
                                       "0 = image_px (no overlap), image_px/2 overlaps by half "
                                       "(as SEN12MS's patches)")
    caption_metadata: bool = Field(False, description="add sensor and resolution to captions")
    s2_product: Literal["L2A", "L1C"] = Field(
        "L2A", description="Sentinel-2 product the simulator renders: L2A (12 bands, as "
                           "BigEarthNet) or L1C (13 bands with B10 cirrus, as SEN12MS/EuroSAT)")
    val_fraction: float = Field(0.05, gt=0.0, le=0.5,
                                description="fraction of scenes held out for validation")
    shard_size: int = Field(512, ge=1, le=1_000_000, description="samples per shard")
    data_workers: int = Field(
        0, ge=0, le=4096, description="processes writing shards in parallel; 0 = one per CPU "
                                      "core (the shards are the same for any number)")
    data_engine: Literal["processes", "dask"] = Field(
        "processes", description="how shard units run in parallel: processes (this machine) | "
                                 "dask (Dask distributed: a local cluster, or dask_scheduler)")
    dask_scheduler: str | None = Field(
        None, description="address of a running Dask scheduler (tcp://host:8786) whose workers "
                          "see work_dir on a shared file system; None = a local cluster of "
                          "data_workers processes")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="global random seed")
    # training (notebooks 03-06)
    model: str = Field("RN50-tiny", description="model config name (OpenCLIP registry style)")
    pretrained: str | None = Field(
        None, description="OpenCLIP pretrained tag (e.g. 'openai') or a local .pt file; "
                          "None = train from scratch")
    band_adapter: Literal["rgb", "conv1x1", "first_layer", "wavelength", "spectral"] = Field(
        "rgb", description="how products enter the image tower: rgb (3 channels per product), "
                           "conv1x1 (learned N->3), first_layer (N-channel conv1 from RGB "
                           "weights), wavelength (DOFA-style kernels from band wavelengths), "
                           "spectral (seed 001's 1-D convolutions over each pixel's spectrum "
                           "on a wavelength grid, then conv1)")
    batch_size: int = Field(64, ge=2, le=65536, description="samples per optimisation step")
    epochs: int = Field(2, ge=1, le=10_000, description="passes over the training shards")
    lr: float = Field(5.0e-4, gt=0.0, le=1.0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0.0, le=10.0, description="AdamW weight decay")
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0,
                                   description="share of all steps spent warming up the lr")
    grad_clip_norm: float = Field(1.0, ge=0.0, le=1e6,
                                  description="clip gradients to this L2 norm; 0 = off")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="compute device; auto = CUDA, then MPS, then CPU")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast precision; auto = bf16 on CUDA and on CPUs with AMX, "
        "fp32 elsewhere")
    num_workers: int = Field(0, ge=0, le=256, description="data-loader worker processes")
    stream: Literal["auto", "exact", "sharded"] = Field(
        "auto", description="training stream: exact (every reader reads the whole stream; the "
                            "same batches for any number of processes), sharded (each process "
                            "and loader worker reads its own share: throughput grows with "
                            "them), auto = sharded when processes x workers > 1")
    grad_accum_steps: int = Field(
        1, ge=1, le=4096, description="split each batch into this many micro-batches (less "
                                      "memory; the contrastive loss still sees the whole batch)")
    compile: bool = Field(False, description="torch.compile the model (GPU speed; slow start)")
    grad_checkpointing: bool = Field(
        False, description="recompute activations in backward (less memory, large models)")
    checkpoint_every_steps: int = Field(
        0, ge=0, le=10_000_000, description="also checkpoint every this many steps; 0 = at the "
                                            "end of each epoch only")
    keep_checkpoints: int = Field(2, ge=1, le=1000,
                                  description="step checkpoints kept besides last.pt")
    # self-supervised pretraining (notebook 07, seed 003)
    ssl_mode: Literal[tuple(SSL_MODES)] = Field(
        "sensor", description="MoCo-v2 positive pairs: " + ", ".join(
            f"{k} ({v[1]})" for k, v in SSL_MODES.items()))
    ssl_method: Literal[tuple(SSL_METHODS)] = Field(
        "moco", description="self-supervised method: " + ", ".join(
            f"{k} ({v})" for k, v in SSL_METHODS.items()))
    ssl_backbone: Literal[tuple(SSL_BACKBONES)] = Field(
        "resnet18", description="timm encoder of the SSL run: ResNets, or ViTs (mae needs one)")
    ssl_adapter: Literal["conv1x1", "first_layer", "spectral"] = Field(
        "first_layer", description="input layer for N bands: conv1x1 (N->3, seed 003), an "
                                   "N-channel first convolution, or spectral (seed 001's "
                                   "1-D convolutions over each pixel's spectrum, optical bands "
                                   "with wavelengths)")
    ssl_augment: Literal["none", "set1", "set2"] = Field(
        "set2", description="seed 003's augmentations: set1 resized crop, set2 + blur")
    ssl_patches: Literal["all", "non_overlapping"] = Field(
        "all", description="places MoCo pretrains on: all, or a subset whose footprints do not "
                           "overlap (seed 003 compared both)")
    ssl_epochs: int = Field(20, ge=1, le=100_000, description="MoCo pretraining epochs")
    ssl_batch_size: int = Field(64, ge=2, le=65536, description="MoCo batch size")
    ssl_lr: float | None = Field(
        None, gt=0.0, le=10.0, description="learning rate; None = the method's (MoCo SGD 0.03; "
                                          "DINO AdamW 5e-4 and MAE AdamW 1.5e-4 per 256 samples)")
    moco_queue: int = Field(4096, ge=0, le=10_000_000, description="negatives in the queue")
    moco_momentum: float = Field(0.99, ge=0.0, lt=1.0,
                                 description="key encoder momentum m (k = m k + (1-m) q)")
    moco_temperature: float = Field(0.2, gt=0.0, le=10.0, description="InfoNCE temperature")
    dino_out_dim: int = Field(65536, ge=16, le=1_000_000,
                              description="DINO head output dimension K (the paper's 65,536)")
    dino_local_crops: int = Field(6, ge=0, le=64,
                                  description="DINO small crops per sample (multi-crop)")
    dino_teacher_temp: float = Field(0.04, gt=0.0, le=1.0, description="DINO teacher temperature")
    dino_momentum: float = Field(0.996, ge=0.0, lt=1.0,
                                 description="DINO teacher EMA momentum at the start (cosine to 1)")
    mae_mask_ratio: float = Field(0.75, gt=0.0, lt=1.0, description="MAE share of patches masked")
    mae_decoder_dim: int = Field(256, ge=16, le=4096, description="MAE decoder width")
    mae_decoder_depth: int = Field(4, ge=1, le=32, description="MAE decoder transformer blocks")
    labelled_samples: int = Field(1024, ge=8, le=10_000_000,
                                  description="labelled places for the SSL evaluation")
    protocol_sizes: list[int] = Field(
        [32, 128, 512], min_length=1,
        description="labelled places of seed 001's three protocols in 07 (frozen, adapter and "
                    "full fine-tuning; encoders with the spectral stem): the label-efficiency "
                    "curve's points")
    protocol_steps: int = Field(40, ge=1, le=1_000_000,
                                description="optimiser steps of each fine-tuning fit of seed "
                                            "001's protocols, whatever the labelled-set size")
    protocol_recipe: Literal["lp-ft", "new-head"] = Field(
        "lp-ft", description="fine-tuning fits of seed 001's protocols: lp-ft (the head starts "
                             "as the frozen features' linear probe; full fine-tuning's encoder "
                             "at a tenth of the head's rate) | new-head (a random head, one "
                             "rate)")
    eval_split: Literal["val", "train"] = Field(
        "val", description="split the evaluation notebooks score (train = fitted data)")
    # bookkeeping
    work_dir: str = Field("work", description="artifacts folder (relative to the project root)")
    run_name: str | None = Field(None, description="report name; None = <experiment>-<preset>")
    cell_timeout_s: int = Field(
        21600, ge=60, le=7 * 86400,
        description="a report's notebook cell that runs longer stops the chain, naming the cell "
                    "(seconds; generous: 6 h, for GPU pretraining cells)")
    preset: str = Field("demo", description="name of the size preset that was applied")
    experiment: str | None = Field(None, description="name of the experiment set applied")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v):
        if v.startswith(("hf-hub:", "local-dir:")):
            return v
        names = known_model_names()
        if v not in names:
            close = difflib.get_close_matches(v, names, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown model {v!r}{hint} (geofm_lib/models/configs/*.json and "
                             f"OpenCLIP's model configs are known, e.g. RN50-tiny, ViT-tiny, "
                             f"RN50, ViT-B-32, ViT-B-16)")
        return v

    @field_validator("run_name")
    @classmethod
    def _plain_run_name(cls, v):
        if v is not None:  # it names reports/<run_name>/, which a report replaces
            check_name(v, "run_name")
        return v

    @model_validator(mode="after")
    def _plain_dataset_keys(self):
        """Dataset keys name shard files and appear on every page: plain identifiers only,
        and each dataset once."""
        for where, keys in (("datasets", self.datasets or ()),
                            ("sources", tuple(self.sources or ())),
                            ("dataset_cards", tuple(self.dataset_cards or ()))):
            for key in keys:
                if not isinstance(key, str) or not DATASET_KEY.match(key):
                    raise ValueError(
                        f"{where}: dataset key {key!r} is not a plain name; a key starts with "
                        f"a letter and holds letters, digits and '_' only, at most 64 "
                        f"characters (e.g. my_landsat_scene)")
        repeated = sorted({k for k in self.datasets or () if list(self.datasets).count(k) > 1})
        if repeated:
            raise ValueError(f"datasets names {', '.join(repeated)} more than once; name each "
                             f"dataset once (samples_per_dataset sets how many it gives)")
        return self

    @model_validator(mode="after")
    def _known_source_keys(self):
        cards = set(self.dataset_cards or {})
        bad = [k for k, spec in (self.sources or {}).items()
               if k not in DATASETS and k not in cards and spec.reader not in ("geotiff", "table")]
        if bad:
            raise ValueError(f"sources for unknown dataset(s) {bad}: keys must be catalog "
                             f"datasets ({', '.join(DATASETS)}) or declared in dataset_cards "
                             f"(sensor, gsd_m, labels), unless the reader is geotiff or table")
        both = sorted(cards & set(DATASETS))
        if both:
            raise ValueError(f"dataset_cards {both} are catalog datasets; give your dataset a "
                             f"key of its own")
        return self

    @model_validator(mode="after")
    def _known_datasets(self):
        v = self.datasets
        if v is not None:
            scenes = {k for k, spec in (self.sources or {}).items()
                      if spec.reader in ("geotiff", "table")} | set(self.dataset_cards or {})
            bad = [k for k in v if k not in DATASETS and k not in scenes]
            if bad:
                raise ValueError(f"unknown dataset(s) {bad} in datasets; choose from "
                                 f"{', '.join(DATASETS)} (or name a geotiff source)")
            if not v:
                raise ValueError("datasets is empty; give at least one key or None for all")
        return self

    @model_validator(mode="after")
    def _accumulation_divides_batch(self):
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"grad_accum_steps={self.grad_accum_steps} does not divide "
                             f"batch_size={self.batch_size} into equal micro-batches; choose a "
                             f"divisor of {self.batch_size} (or change batch_size)")
        return self

    @model_validator(mode="after")
    def _ssl_method_fits_backbone(self):
        vit = self.ssl_backbone.startswith("vit_")
        if self.ssl_method == "mae" and not vit:
            raise ValueError(f"ssl_method=mae masks image patches and needs a ViT backbone, "
                             f"not {self.ssl_backbone}; set ssl_backbone to one of "
                             f"{', '.join(b for b in SSL_BACKBONES if b.startswith('vit_'))}")
        if self.ssl_method == "moco" and vit:
            raise ValueError(f"ssl_method=moco is torchgeo's MoCo-v2 task on ResNets, not "
                             f"{self.ssl_backbone}; use ssl_backbone=resnet18/34/50, or "
                             f"ssl_method=dino or mae for a ViT")
        if vit:
            patch = vit_patch_px(self.ssl_backbone)
            if self.image_px % patch:
                raise ValueError(f"image_px={self.image_px} is not a multiple of the "
                                 f"{self.ssl_backbone} patch ({patch} px); use image_px a "
                                 f"multiple of {patch} or another backbone")
        return self

    @model_validator(mode="after")
    def _stride_within_patch(self):
        if self.patch_stride_px > self.image_px:
            raise ValueError(f"patch_stride_px={self.patch_stride_px} is larger than image_px="
                             f"{self.image_px}: the pixels between patches would be lost; use "
                             f"at most image_px (0 means image_px)")
        return self

    @model_validator(mode="after")
    def _paper_mix_of_table_1_datasets(self):
        if self.dataset_mix == "paper":
            other = [k for k in self.dataset_keys
                     if k not in DATASETS or DATASETS[k].paper_n_images is None]
            if other:
                raise ValueError(f"dataset_mix: paper shares the datasets of seed 000's Table "
                                 f"1, and {', '.join(other)} is not one of them: use "
                                 f"dataset_mix: balanced, or leave it out of datasets")
        return self

    # -- derived values ---------------------------------------------------------------------
    @property
    def dataset_keys(self) -> tuple[str, ...]:
        """The datasets this run uses: the group's, narrowed by ``datasets`` if given."""
        in_group = GROUP_DATASETS[self.group]
        if self.group == "custom" and self.datasets is None:
            if self.sources:
                return tuple(self.sources)
            raise ConfigError("group='custom' needs `datasets` (catalog keys) or `sources`")
        if self.datasets is None:
            return in_group
        scenes = {k for k, spec in (self.sources or {}).items()
                  if spec.reader in ("geotiff", "table")} | set(self.dataset_cards or {})
        outside = [d for d in self.datasets if d not in in_group and not
                   (self.group == "custom" and d in scenes)]
        if outside:
            raise ConfigError(
                f"datasets {outside} are not in group {self.group!r} ({', '.join(in_group)}); "
                f"set group='all' or drop them")
        return tuple(self.datasets)

    @property
    def effective_scene_px(self) -> int:
        return self.scene_px or self.image_px

    def samples_for(self, dataset: str) -> int:
        """Scenes (images) a dataset contributes: ``samples_per_dataset``, or with
        ``dataset_mix: paper`` its share of the run's total (``samples_per_dataset`` times the
        number of datasets) in the proportions of seed 000's compiled set, counted in patches
        of ``image_px`` (each scene gives ``(scene_px // image_px) ** 2``), at least 2 so that
        every dataset has a training and a validation scene."""
        if self.dataset_mix == "balanced":
            return self.samples_per_dataset
        keys = self.dataset_keys
        weights = {k: paper_patches(k) for k in keys}  # all in Table 1 (checked on load)
        total = self.samples_per_dataset * len(keys)
        per_scene = max(self.effective_scene_px // self.image_px, 1) ** 2
        patches = total * weights[dataset] / sum(weights.values())
        return max(int(round(patches / per_scene)), 2)

    def with_params(self, **changes) -> Config:
        """This configuration with ``changes``, validated again (e.g. another ``ssl_method``
        on the same data)."""
        unknown = [k for k in changes if k not in type(self).model_fields]
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown}")
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump()
        if d["datasets"] is not None:
            d["datasets"] = list(d["datasets"])
        if d["dataset_cards"] is not None:  # plain lists and dicts (YAML, hashing)
            d["dataset_cards"] = {k: json.loads(v.model_dump_json(exclude_defaults=True))
                                  for k, v in self.dataset_cards.items()}
        if d["sources"] is not None:  # only what was set, so YAML round trips stay short
            d["sources"] = {k: v.model_dump(exclude_defaults=True)
                            for k, v in self.sources.items()}
        return d

    def dataset_info(self, key: str):
        """The catalog entry of a dataset: the catalog's, or one made from its dataset card.

        Raises:
            ConfigError: a key that is neither, with the keys that are.
        """
        if self.dataset_cards and key in self.dataset_cards:
            return dataset_from_card(key, self.dataset_cards[key].model_dump())
        if key in DATASETS:
            return DATASETS[key]
        raise ConfigError(f"unknown dataset {key!r}: not in the catalog ({', '.join(DATASETS)}) "
                          f"and no dataset card declares it (dataset_cards in the parameter "
                          f"file, or dataset.yaml beside the data)")

    def source_for(self, dataset: str) -> SourceSpec:
        """The source spec of a dataset: from ``sources``, else the simulator."""
        if self.sources and dataset in self.sources:
            return self.sources[dataset]
        return SourceSpec(reader="simulator")

    @property
    def hash(self) -> str:
        """Stable 12-hex hash of everything that changes results (not paths or names)."""
        return _digest({k: v for k, v in self.to_dict().items() if k not in NOT_HASHED})

    @property
    def data_hash(self) -> str:
        """Hash of the keys that determine the data stage's shards."""
        d = self.to_dict()
        d["datasets"] = list(self.dataset_keys)
        d["scene_px"] = self.effective_scene_px
        return _digest({"rules": DATA_RULES, **{k: d[k] for k in DATA_KEYS}})

    @property
    def train_hash(self) -> str:
        """Hash of what determines a training run (data + model + optimisation): its checkpoints
        live under ``<work>/checkpoints/<train_hash>/``."""
        d = self.to_dict()
        return _digest({"data": self.data_hash, **{k: d[k] for k in TRAIN_KEYS}})

    @property
    def ssl_learning_rate(self) -> float:
        """``ssl_lr``, or the method's own (DINO and MAE scale theirs with the batch)."""
        if self.ssl_lr is not None:
            return self.ssl_lr
        per_256 = {"moco": None, "dino": 5e-4, "mae": 1.5e-4}[self.ssl_method]
        return 0.03 if per_256 is None else per_256 * self.ssl_batch_size / 256

    @property
    def ssl_hash(self) -> str:
        """Hash of what determines a self-supervised run (data + the method's parameters).
        A MoCo run hashes as before DINO and MAE existed, so its checkpoints stay valid."""
        d = {**self.to_dict(), "ssl_lr": self.ssl_learning_rate}
        if self.ssl_method == "moco":
            return _digest({"data": self.data_hash, "kind": "moco-v2",
                            **{k: d[k] for k in SSL_KEYS}})
        keys = [k for k in SSL_KEYS if not k.startswith("moco_")] + list(
            SSL_METHOD_KEYS[self.ssl_method])
        return _digest({"data": self.data_hash, "kind": self.ssl_method,
                        **{k: d[k] for k in keys}})

    @property
    def name(self) -> str:
        experiment = self.experiment
        if experiment and is_parameter_file(experiment):
            experiment = Path(experiment).stem  # my_forest.yaml -> my_forest-demo
        return self.run_name or f"{experiment or 'group_' + self.group}-{self.preset}"

    def path(self, *parts: str) -> Path:
        """A path inside the work folder (created on demand by the writers)."""
        root = Path(self.work_dir)
        if not root.is_absolute():
            root = project_root() / root
        return root.joinpath(*parts)


# bumped when the data stage's code changes what the same parameters produce (2: S1 and S2 of a
# place share their split; 3: samples carry their dominant land-cover class, and the S1/S2
# pairs of BigEarthNet v2 and SSL4EO-S12 through torchgeo share their split and their capped
# subset too; 4: GeoTIFF samples carry the file's declared nodata value, which stays out of
# the band statistics), so shards built by older code are not reused under the same hash
DATASET_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
"""What a dataset key may be (``Config._plain_dataset_keys``)."""

DATA_RULES = 8  # 5: band records (names, wavelengths, nodata per band) in the shards; 6:
# images compressed losslessly (PNG, Blosc) and tars without pax headers; 7: dense labels
# (class masks, tree cover) in the samples of sources that have them; 8: random splits keep
# the readers' split units whole (scene, tile, place, block), SSL4EO-S12 seasons paired by
# date, GeoTIFF patches drawn over the whole scene


DATA_KEYS = ("datasets", "dataset_cards", "source", "source_path", "sources",
             "samples_per_dataset", "dataset_mix", "image_px",
             "scene_px", "patch_stride_px", "caption_metadata", "s2_product", "val_fraction",
             "shard_size", "seed")


TRAIN_KEYS = ("model", "pretrained", "band_adapter", "batch_size", "epochs", "lr", "weight_decay",
              "warmup_fraction", "grad_clip_norm", "precision", "grad_accum_steps", "seed")


SSL_KEYS = ("ssl_mode", "ssl_backbone", "ssl_adapter", "ssl_augment", "ssl_patches", "ssl_epochs",
            "ssl_batch_size", "ssl_lr", "moco_queue", "moco_momentum", "moco_temperature",
            "precision", "seed")


# the parameters of each method besides SSL_KEYS (MoCo's are in SSL_KEYS already)
SSL_METHOD_KEYS = {"moco": (),
                   "dino": ("dino_out_dim", "dino_local_crops", "dino_teacher_temp",
                            "dino_momentum"),
                   "mae": ("mae_mask_ratio", "mae_decoder_dim", "mae_decoder_depth")}


NOT_HASHED = {"work_dir", "run_name", "num_workers", "device", "preset", "experiment",
               "data_workers", "data_engine", "dask_scheduler", "stream",
               "compile", "grad_checkpointing", "checkpoint_every_steps", "keep_checkpoints",
               "cell_timeout_s"}


FIELDS = tuple(Config.model_fields)


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def project_root() -> Path:
    """The workspace root: $GEOFM_ROOT, else the nearest folder up with parameters/defaults.yaml.

    Raises:
        ConfigError: when neither is found, with the fix.
    """
    env = os.environ.get("GEOFM_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "parameters" / "defaults.yaml").is_file():
            return folder
    raise ConfigError(
        f"cannot find the geofm workspace from {here.name!r}: no parameters/defaults.yaml in it "
        "or above it; run from inside the project or set GEOFM_ROOT to the project folder")


def parameter_sets(kind: str | None = None) -> list[str]:
    """Names of the YAML sets in parameters/ (without .yaml); kind: 'preset' or 'experiment'."""
    names = sorted(p.stem for p in (project_root() / "parameters").glob("*.yaml"))
    names = [n for n in names if n != "defaults"]
    if kind == "preset":
        return [n for n in names if n in PRESETS]
    if kind == "experiment":
        return [n for n in names if n not in PRESETS]
    return names


PRESETS = ("ci", "demo", "full")


def is_parameter_file(experiment: str) -> bool:
    """Whether an experiment is a path to a YAML file (anywhere) rather than a set's name."""
    return experiment.endswith((".yaml", ".yml"))


def _read_file(path: Path) -> dict[str, Any]:
    """A user's parameter file outside parameters/ (same rules as the named sets)."""
    check_name(path.stem, "parameter file name")
    if not path.is_file():
        raise ConfigError(f"parameter file {str(path)!r} does not exist; give the path of a "
                          f"YAML file of key: value lines (or the name of a set in "
                          f"parameters/: {', '.join(parameter_sets('experiment'))})")
    return _mapping(path, str(path))


def _mapping(path: Path, shown: str) -> dict[str, Any]:
    """A parameter file's key: value mapping, or an error naming it (an empty file too: it
    would run the defaults while the user believes their file was read)."""
    data = read_yaml(path, shown)
    if data is None:
        raise ConfigError(f"{shown} is empty (or only comments): it sets no parameter, and a "
                          f"run from it would use the defaults; write key: value lines, or "
                          f"leave out the file")
    if not isinstance(data, dict):
        raise ConfigError(f"{shown} must hold a mapping of key: value, not a "
                          f"{type(data).__name__}")
    return data


def _read_set(name: str) -> dict[str, Any]:
    """One named set of parameters/ (YAML 1.2 numbers, duplicate keys refused)."""
    check_name(name, "parameter set")
    path = project_root() / "parameters" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown parameter set {name!r}; choose one of {', '.join(parameter_sets())} "
            f"(files in parameters/)")
    return _mapping(path, f"parameters/{name}.yaml")


def _unknown_key_message(key: str, origin: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unknown parameter {key!r} (from {origin}){hint} "
            f"Valid parameters: {', '.join(FIELDS)}")


def load_config(preset: str = "demo", experiment: str | None = None,
                **overrides: Any) -> Config:
    """Merge defaults <- preset <- experiment <- overrides, validate, and freeze.

    Args:
        preset: size preset name (a file in parameters/), e.g. ``"ci"``, ``"demo"``, ``"full"``.
        experiment: optional experiment set, e.g. ``"group_C_metadata"``.
        **overrides: single keys; ``None`` keeps the value of the sets.

    Raises:
        ConfigError: naming every bad key, its value, where it came from, and what is allowed.
    """
    if not isinstance(preset, str):
        raise ConfigError(f"preset must be a name such as 'demo', got {preset!r}")
    for key in ("preset", "experiment"):
        if key in overrides:
            raise ConfigError(f"{key} is chosen with --{key} (or the notebook's {key} "
                              f"parameter), not as an override: drop '{key}=...' from -p")
    layers = [("parameters/defaults.yaml", _read_set("defaults")),
              (f"parameters/{preset}.yaml", _read_set(preset))]
    if experiment is not None:
        if not isinstance(experiment, str):
            raise ConfigError(f"experiment must be a name such as 'group_C', got {experiment!r}")
        if is_parameter_file(experiment):  # a user's own file, anywhere
            experiment = str(Path(experiment).expanduser().resolve())
            layers.append((experiment, _read_file(Path(experiment))))
        else:
            layers.append((f"parameters/{experiment}.yaml", _read_set(experiment)))
    layers.append(("overrides", {k: v for k, v in overrides.items() if v is not None}))
    cfg = _validated(layers, preset, experiment)
    if cfg.run_name is None and layers[-1][1]:
        # a run whose overrides change what is computed gets its own folders (reports/<name>,
        # runs/<name>): <experiment>-<preset>-<hash>, so it never replaces the plain run's pages
        try:
            base = _validated(layers[:-1], preset, experiment).hash
        except ConfigError:
            base = None
        if base != cfg.hash:
            cfg = cfg.model_copy(update={"run_name": f"{cfg.name}-{cfg.hash[:6]}"})
    return cfg


def _validated(layers: list[tuple[str, dict]], preset: str, experiment: str | None
               ) -> Config:
    """The Config of merged parameter layers (later wins), validated and checked."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems = []
    for where, values in layers:
        for key, value in values.items():
            if key in ("preset", "experiment") and where != "overrides":
                if key == "preset" and value not in (None, preset):
                    problems.append(f"{where} was made with preset {value!r}; run it with "
                                    f"--preset {value} (this run's preset is {preset!r})")
                continue  # a report's params.yaml records both: kept as a record, not a value
            if key not in FIELDS or key in ("preset", "experiment"):
                problems.append(_unknown_key_message(key, where))
                continue
            merged[key] = value
            origin[key] = where
    if problems:
        raise ConfigError("\n".join(problems))
    merged["preset"] = preset
    merged["experiment"] = experiment
    if isinstance(merged.get("datasets"), list):
        merged["datasets"] = tuple(merged["datasets"])
    _cards_beside_data(merged, origin)
    if isinstance(merged.get("dataset_cards"), dict):
        cards = {}
        for k, v in merged["dataset_cards"].items():
            try:
                cards[k] = v if isinstance(v, DatasetCard) else DatasetCard(
                    **{**v, **({"bands": tuple(v["bands"])} if isinstance(v, dict) and
                               isinstance(v.get("bands"), list) else {}),
                       **({"labels": tuple(v["labels"])} if isinstance(v, dict) and
                          isinstance(v.get("labels"), list) else {})})
            except (TypeError, ValidationError) as exc:
                raise ConfigError(
                    f"dataset card {k!r} (from {origin.get('dataset_cards')}) is invalid: "
                    f"{_source_problems(exc, v)}. A card is {{sensor: <catalog sensor> or "
                    f"bands: [{{name, center_nm}}, ...], gsd_m: ..., labels: [...], group: "
                    f"custom}}") from None
        merged["dataset_cards"] = cards
    if isinstance(merged.get("sources"), dict):
        specs = {}
        for k, v in merged["sources"].items():
            try:
                specs[k] = v if isinstance(v, SourceSpec) else SourceSpec(**v)
            except (TypeError, ValidationError) as exc:
                raise ConfigError(
                    f"parameter 'sources' (from {origin.get('sources')}), entry {k!r} is "
                    f"invalid: {_source_problems(exc, v)}. Each entry maps a dataset key to "
                    f"{{reader: {' | '.join(READERS)}, root: ..., ...}}") from None
        merged["sources"] = specs
    try:
        cfg = Config(**merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, merged, origin)) from None
    cfg.dataset_keys  # noqa: B018  (validates datasets against the group now, not later)
    _check_sources(cfg, origin)
    _check_pretrained_choice(cfg, origin)
    return cfg


CARD_FILE = "dataset.yaml"


def _cards_beside_data(merged: dict, origin: dict) -> None:
    """Dataset cards found beside the data: ``<root>/dataset.yaml`` for a folder root,
    ``<stem>.dataset.yaml`` beside a file root, for ``sources`` keys that are neither catalog
    datasets nor declared in ``dataset_cards`` (a card in the parameter file wins)."""
    cards = dict(merged.get("dataset_cards") or {})
    for key, spec in (merged.get("sources") or {}).items():
        root = spec.root if isinstance(spec, SourceSpec) else (spec or {}).get("root") \
            if isinstance(spec, dict) else None
        if key in DATASETS or key in cards or not isinstance(root, str):
            continue
        path = Path(root).expanduser()
        path = path if path.is_absolute() else project_root() / path
        card = path / CARD_FILE if path.is_dir() else path.with_suffix(".dataset.yaml")
        if card.is_file():
            data = read_yaml(card, str(card))
            if not isinstance(data, dict):
                raise ConfigError(f"{card} must hold a dataset card (a mapping: sensor or "
                                  f"bands, gsd_m, labels, ...)")
            cards[key] = data
            origin["dataset_cards"] = str(card)
    if cards:
        merged["dataset_cards"] = cards
        origin.setdefault("dataset_cards", "dataset cards")


def _check_sources(cfg: Config, origin: dict) -> None:
    """Every ``sources`` entry is used by the run, and every dataset read from the simulator
    has a simulator recipe (the catalog also lists datasets that only real files provide)."""
    used = set(cfg.dataset_keys)
    unused = [k for k in (cfg.sources or {}) if k not in used]
    if unused:
        raise ConfigError(
            f"parameter 'sources' (from {origin.get('sources')}) has entries for {unused}, which "
            f"this run does not use (group {cfg.group!r}: {', '.join(cfg.dataset_keys)}); their "
            f"files would be ignored. Remove them, or choose a group / datasets that include "
            f"them (e.g. group='custom' with datasets={sorted(used | set(unused))})")
    if cfg.source != "simulator":
        return
    unsimulated = [k for k in cfg.dataset_keys
                   if cfg.source_for(k).reader == "simulator" and k not in SIMULATED]
    if unsimulated:
        raise ConfigError(
            f"dataset(s) {unsimulated} have no simulator: they come only from real files. "
            f"Give each a source, e.g. sources={{{unsimulated[0]}: {{reader: torchgeo, "
            f"dataset_class: ..., root: ...}}}}, or choose simulated datasets "
            f"({', '.join(SIMULATED)})")


def _check_pretrained_choice(cfg: Config, origin: dict) -> None:
    """``pretrained`` names an existing file or a tag OpenCLIP has for ``model`` (no
    download happens here)."""
    if cfg.pretrained is None:
        return

    try:
        check_pretrained(cfg.model, cfg.pretrained)
    except PretrainedUnavailable as exc:
        raise ConfigError(f"parameter 'pretrained' = {cfg.pretrained!r} (from "
                          f"{origin.get('pretrained', 'defaults')}) is invalid: {exc}") from None


def check_runtime(cfg: Config) -> None:
    """What can only be checked on the machine that runs the work: the device exists.

    Called by the notebooks' first cell (:func:`from_notebook`) and the training commands, not
    by :func:`load_config`, so a GPU parameter set can be inspected on a machine without one.
    """
    try:
        device = resolve_device(cfg.device)
    except RuntimeError as exc:
        raise ConfigError(f"parameter 'device' = {cfg.device!r}: {exc}") from None
    try:
        resolve_precision(cfg.precision, device.split(":")[0])
    except RuntimeError as exc:
        raise ConfigError(f"parameter 'precision' = {cfg.precision!r}: {exc}") from None




def _source_problems(exc: Exception, value) -> str:
    """One line per problem of a ``sources`` entry (pydantic's report without its links)."""
    if not isinstance(exc, ValidationError):
        return f"it must be a mapping such as {{reader: torchgeo, root: /data/x}}, got {value!r}"
    parts = []
    for err in exc.errors():
        key = ".".join(map(str, err["loc"])) or "entry"
        parts.append(f"{key}: {err['msg']}")
    if isinstance(value, dict) and any(":" in str(k) for k in value):
        parts.append("(in YAML flow style put a space after each ':', e.g. {reader: torchgeo})")
    return "; ".join(parts)


def _format_errors(exc: ValidationError, merged: dict, origin: dict) -> str:
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a check across several keys: its message names them
            lines.append(f"parameters are inconsistent: {err['msg'].removeprefix('Value error, ')}")
            continue
        key = str(err["loc"][0])
        value = merged.get(key)
        field = Config.model_fields.get(key)
        expected = _allowed(key)
        where = origin.get(key, "defaults")
        lines.append(
            f"parameter {key!r} = {value!r} ({type(value).__name__}, from {where}) is invalid: "
            f"{err['msg']}. Expected {expected}"
            + (f" - {field.description}" if field is not None and field.description else ""))
    return "\n".join(lines)


def _allowed(key: str) -> str:
    """Human text for what a key accepts, read off the model's schema."""
    schema = Config.model_json_schema()["properties"].get(key, {})
    options = schema.get("anyOf", [schema])
    parts = []
    for opt in options:
        if "enum" in opt:
            parts.append("one of " + ", ".join(map(str, opt["enum"])))
        elif "const" in opt:
            parts.append(repr(opt["const"]))
        elif opt.get("type") == "null":
            parts.append("None")
        else:
            bounds = [f"{sym} {opt[k]}" for k, sym in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                     ("maximum", "<="), ("exclusiveMaximum", "<"))
                      if k in opt]
            t = {"integer": "an integer", "number": "a number", "string": "a string",
                 "boolean": "True or False", "array": "a list"}.get(opt.get("type"), "a value")
            parts.append(t + (f" ({', '.join(bounds)})" if bounds else ""))
    return " or ".join(parts)


_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


LOCAL_RANGES: dict[str, tuple[type, float, float | None]] = {
    "n_per_dataset": (int, 1, None), "n_boot": (int, 10, 100000), "n_examples": (int, 0, 50),
    "map_samples_per_dataset": (int, 1, 100000), "umap_points": (int, 10, 10 ** 7),
    "finetune_epochs": (int, 0, 10000), "also_epochs": (int, 1, 10000),
    "protocol_steps": (int, 1, 10 ** 7), "seg_epochs": (int, 1, 10000),
    "seg_lr": (float, 1e-7, 1.0), "boundary_weight": (float, 0.0, 1000.0),
}
"""(type, lowest, highest or None) of the notebooks' numeric local parameters: checked by
``from_notebook`` before any work, as the workspace parameters' fields are (issue 36: a
``seg_lr`` of 1e30 ran and published NaN)."""


def check_local_ranges(namespace: dict[str, Any], local: tuple[str, ...]) -> None:
    """Refuse a notebook-local number of the wrong type or outside its range (``None`` is
    each one's "use the default").

    Raises:
        ConfigError: naming the parameter, the value and what is allowed.
    """
    for name in local:
        if name not in LOCAL_RANGES or namespace.get(name) is None:
            continue
        kind, lo, hi = LOCAL_RANGES[name]
        value = namespace[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            kind is float or isinstance(value, int))
        if not number or not math.isfinite(value) or value < lo or (hi is not None and
                                                                    value > hi):
            allowed = f"{'a whole number' if kind is int else 'a number'} from {lo:g}" + (
                f" to {hi:g}" if hi is not None else " up")
            raise ConfigError(f"parameter {name}={value!r} is out of range: {allowed}")


def from_notebook(namespace: dict[str, Any], local: tuple[str, ...] = ()) -> Config:
    """Build the config from a notebook's parameters (and papermill's injected ones).

    Every public, non-callable, non-module name in ``namespace`` counts as a parameter, so a
    misspelt ``-p batchsize 10`` is caught instead of silently ignored. Names in ``local`` are
    the notebook's own parameters (not workspace parameters) and are skipped.

    papermill's ``-p`` passes a list or mapping as its text (``-p decoder '["unet",
    "deeplabv3plus"]'`` arrives as a string); such values, local ones included, are read as
    YAML and written back into ``namespace``, so the notebook sees the list.
    """
    for k, v in list(namespace.items()):
        if isinstance(v, str) and v.lstrip()[:1] in ("[", "{") and not k.startswith("_"):
            try:
                namespace[k] = parse_yaml(v, f"parameter {k!r}")
            except ConfigError as exc:
                raise ConfigError(f"{exc}; {v[:80]!r} is not a YAML list or mapping; write "
                                  f"e.g. -p {k} '[a, b]', or -y '{k}: [a, b]'") from None
    check_local_ranges(namespace, local)
    params = {
        k: v for k, v in namespace.items()
        if not k.startswith("_") and not k.startswith("PAPERMILL_") and k not in _IPYTHON_NAMES
        and k not in local
        and not callable(v) and not isinstance(v, types.ModuleType)
    }
    preset = params.pop("preset", "demo")
    experiment = params.pop("experiment", None)
    cfg = load_config(preset, experiment, **params)
    check_runtime(cfg)
    return cfg
