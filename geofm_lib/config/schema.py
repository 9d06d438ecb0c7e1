"""The schema of a run's parameters: the ``Config`` model (typed, strict, frozen) with every
field's meaning and hash membership, and the models of its nested values (a source, a dataset
card and its bands)."""

from __future__ import annotations

import difflib
import json
import re
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
    dataset_from_card,
    paper_patches,
)
from geofm_lib.config.choices import (
    READERS,
    SOURCES,
    SSL_BACKBONES,
    SSL_METHODS,
    SSL_MODES,
    vit_patch_px,
)
from geofm_lib.config.hashing import (
    DATA_RULES,
    NOT_HASHED_FIELD,
    digest,
    hashed_in,
    keys_in,
    not_hashed,
    omit_defaults,
)
from geofm_lib.config.root import is_parameter_file, project_root
from geofm_lib.errors import ConfigError
from geofm_lib.io import check_name
from geofm_lib.models.names import known_model_names


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
                           "(exactly the `datasets` listed)",
        json_schema_extra=hashed_in())
    datasets: tuple[str, ...] | None = Field(
        None, description="subset of the group's datasets (catalog keys); None = all",
        json_schema_extra=hashed_in("data"))
    sources: dict[str, SourceSpec] | None = Field(
        None, description="per-dataset sources (reader, root, ...); datasets not listed come "
                          "from the simulator",
        json_schema_extra=hashed_in("data"))
    dataset_cards: dict[str, DatasetCard] | None = Field(
        None, description="datasets the catalog does not know: {key: {sensor or bands, gsd_m, "
                          "labels, group, name}}, usable with every reader",
        json_schema_extra=hashed_in("data"))
    source: Literal[SOURCES] = Field(
        "simulator", description="where samples come from",
        json_schema_extra=hashed_in("data"))
    source_path: str | None = Field(
        None, description="folder or file for the real-data sources",
        json_schema_extra=hashed_in("data"))
    # data
    dataset_mix: Literal["balanced", "paper"] = Field(
        "balanced", description="balanced: samples_per_dataset scenes of every dataset; paper: "
                                "the same total, shared as seed 000's compiled set (Table 1 "
                                "after cutting into 512-px patches)",
        json_schema_extra=hashed_in("data"))
    samples_per_dataset: int = Field(64, ge=1, le=10_000_000,
                                     description="scenes rendered per dataset",
        json_schema_extra=hashed_in("data"))
    image_px: int = Field(64, ge=8, le=4096, description="side of stored patches, pixels",
        json_schema_extra=hashed_in("data"))
    scene_px: int = Field(0, ge=0, le=65536,
                          description="side of rendered scenes; cut into image_px patches; "
                                      "0 = same as image_px",
        json_schema_extra=hashed_in("data"))
    patch_stride_px: int = Field(
        0, ge=0, le=65536, description="step between the origins of patches cut from a scene; "
                                       "0 = image_px (no overlap), image_px/2 overlaps by half "
                                       "(as SEN12MS's patches)",
        json_schema_extra=hashed_in("data"))
    caption_metadata: bool | list[Literal["sensor", "gsd", "date", "season", "place"]] = Field(
        False, description="metadata in the captions: true = sensor and resolution (seed 000, "
                           "Table 4); a list of sensor, gsd, date, season, place = RS5M-style "
                           "captions from each sample's own metadata",
        json_schema_extra=hashed_in("data"))
    s2_product: Literal["L2A", "L1C"] = Field(
        "L2A", description="Sentinel-2 product the simulator renders: L2A (12 bands, as "
                           "BigEarthNet) or L1C (13 bands with B10 cirrus, as SEN12MS/EuroSAT)",
        json_schema_extra=hashed_in("data"))
    val_fraction: float = Field(0.05, gt=0.0, le=0.5,
                                description="fraction of scenes held out for validation",
        json_schema_extra=hashed_in("data"))
    shard_size: int = Field(512, ge=1, le=1_000_000, description="samples per shard",
        json_schema_extra=hashed_in("data"))
    data_workers: int = Field(
        0, ge=0, le=4096, description="processes writing shards in parallel; 0 = one per CPU "
                                      "core (the shards are the same for any number)",
        json_schema_extra=NOT_HASHED_FIELD)
    data_engine: Literal["processes", "dask"] = Field(
        "processes", description="how shard units run in parallel: processes (this machine) | "
                                 "dask (Dask distributed: a local cluster, or dask_scheduler)",
        json_schema_extra=NOT_HASHED_FIELD)
    dask_scheduler: str | None = Field(
        None, description="address of a running Dask scheduler (tcp://host:8786) whose workers "
                          "see work_dir on a shared file system; None = a local cluster of "
                          "data_workers processes",
        json_schema_extra=NOT_HASHED_FIELD)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="global random seed",
        json_schema_extra=hashed_in("data", "train", "ssl"))
    # training (notebooks 03-06)
    model: str = Field("RN50-tiny", description="model config name (OpenCLIP registry style)",
        json_schema_extra=hashed_in("train"))
    pretrained: str | None = Field(
        None, description="OpenCLIP pretrained tag (e.g. 'openai') or a local .pt file; "
                          "None = train from scratch",
        json_schema_extra=hashed_in("train"))
    band_adapter: Literal["rgb", "conv1x1", "first_layer", "wavelength", "spectral"] = Field(
        "rgb", description="how products enter the image tower: rgb (3 channels per product), "
                           "conv1x1 (learned N->3), first_layer (N-channel conv1 from RGB "
                           "weights), wavelength (DOFA-style kernels from band wavelengths), "
                           "spectral (seed 001's 1-D convolutions over each pixel's spectrum "
                           "on a wavelength grid, then conv1)",
        json_schema_extra=hashed_in("train"))
    batch_size: int = Field(64, ge=2, le=65536, description="samples per optimisation step",
        json_schema_extra=hashed_in("train"))
    epochs: int = Field(2, ge=1, le=10_000, description="passes over the training shards",
        json_schema_extra=hashed_in("train"))
    loss: Literal["clip", "siglip"] = Field(
        "clip", description="contrastive loss: clip (softmax over the batch, open_clip's "
                            "ClipLoss) or siglip (pairwise sigmoid with a learned bias, "
                            "open_clip's SigLipLoss; logit scale starts at log 10, bias at -10)",
        json_schema_extra=hashed_in("train"))
    lr: float = Field(5.0e-4, gt=0.0, le=1.0, description="peak learning rate",
        json_schema_extra=hashed_in("train"))
    weight_decay: float = Field(0.1, ge=0.0, le=10.0, description="AdamW weight decay",
        json_schema_extra=hashed_in("train"))
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0,
                                   description="share of all steps spent warming up the lr",
        json_schema_extra=hashed_in("train"))
    grad_clip_norm: float = Field(1.0, ge=0.0, le=1e6,
                                  description="clip gradients to this L2 norm; 0 = off",
        json_schema_extra=hashed_in("train"))
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="compute device; auto = CUDA, then MPS, then CPU",
        json_schema_extra=NOT_HASHED_FIELD)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast precision; auto = bf16 on CUDA and on CPUs with AMX, "
        "fp32 elsewhere",
        json_schema_extra=hashed_in("train", "ssl"))
    num_workers: int = Field(0, ge=0, le=256, description="data-loader worker processes",
        json_schema_extra=NOT_HASHED_FIELD)
    stream: Literal["auto", "exact", "sharded"] = Field(
        "auto", description="training stream: exact (every reader reads the whole stream; the "
                            "same batches for any number of processes), sharded (each process "
                            "and loader worker reads its own share: throughput grows with "
                            "them), auto = sharded when processes x workers > 1",
        json_schema_extra=NOT_HASHED_FIELD)
    feed: Literal["auto", "host", "device"] = Field(
        "auto", description="where training patches are standardised and augmented: host "
                            "(loader, float32 batches) or device (they cross in their stored "
                            "integer type and are prepared on the GPU, one batch prefetched); "
                            "auto = device on CUDA, host on the CPU",
        json_schema_extra=NOT_HASHED_FIELD)
    grad_accum_steps: int = Field(
        1, ge=1, le=4096, description="split each batch into this many micro-batches (less "
                                      "memory; the contrastive loss still sees the whole batch)",
        json_schema_extra=hashed_in("train"))
    compile: bool = Field(False, description="torch.compile the model (GPU speed; slow start)",
        json_schema_extra=NOT_HASHED_FIELD)
    grad_checkpointing: bool = Field(
        False, description="recompute activations in backward (less memory, large models)",
        json_schema_extra=NOT_HASHED_FIELD)
    checkpoint_every_steps: int = Field(
        0, ge=0, le=10_000_000, description="also checkpoint every this many steps; 0 = at the "
                                            "end of each epoch only",
        json_schema_extra=NOT_HASHED_FIELD)
    keep_checkpoints: int = Field(2, ge=1, le=1000,
                                  description="step checkpoints kept besides last.pt",
        json_schema_extra=NOT_HASHED_FIELD)
    # self-supervised pretraining (notebook 07, seed 003)
    ssl_mode: Literal[tuple(SSL_MODES)] = Field(
        "sensor", description="MoCo-v2 positive pairs: " + ", ".join(
            f"{k} ({v[1]})" for k, v in SSL_MODES.items()),
        json_schema_extra=hashed_in("ssl"))
    ssl_method: Literal[tuple(SSL_METHODS)] = Field(
        "moco", description="self-supervised method: " + ", ".join(
            f"{k} ({v})" for k, v in SSL_METHODS.items()),
        json_schema_extra=hashed_in())
    ssl_backbone: Literal[tuple(SSL_BACKBONES)] = Field(
        "resnet18", description="timm encoder of the SSL run: ResNets, or ViTs (mae needs one)",
        json_schema_extra=hashed_in("ssl"))
    ssl_adapter: Literal["conv1x1", "first_layer", "spectral"] = Field(
        "first_layer", description="input layer for N bands: conv1x1 (N->3, seed 003), an "
                                   "N-channel first convolution, or spectral (seed 001's "
                                   "1-D convolutions over each pixel's spectrum, optical bands "
                                   "with wavelengths)",
        json_schema_extra=hashed_in("ssl"))
    ssl_augment: Literal["none", "set1", "set2"] = Field(
        "set2", description="seed 003's augmentations: set1 resized crop, set2 + blur",
        json_schema_extra=hashed_in("ssl"))
    ssl_patches: Literal["all", "non_overlapping"] = Field(
        "all", description="places MoCo pretrains on: all, or a subset whose footprints do not "
                           "overlap (seed 003 compared both)",
        json_schema_extra=hashed_in("ssl"))
    ssl_epochs: int = Field(20, ge=1, le=100_000, description="MoCo pretraining epochs",
        json_schema_extra=hashed_in("ssl"))
    ssl_batch_size: int = Field(64, ge=2, le=65536, description="MoCo batch size",
        json_schema_extra=hashed_in("ssl"))
    ssl_lr: float | None = Field(
        None, gt=0.0, le=10.0, description="learning rate; None = the method's (MoCo SGD 0.03; "
                                          "DINO AdamW 5e-4 and MAE AdamW 1.5e-4 per 256 samples)",
        json_schema_extra=hashed_in("ssl"))
    moco_queue: int = Field(4096, ge=0, le=10_000_000, description="negatives in the queue",
        json_schema_extra=hashed_in("ssl:moco"))
    moco_momentum: float = Field(0.99, ge=0.0, lt=1.0,
                                 description="key encoder momentum m (k = m k + (1-m) q)",
        json_schema_extra=hashed_in("ssl:moco"))
    moco_temperature: float = Field(0.2, gt=0.0, le=10.0, description="InfoNCE temperature",
        json_schema_extra=hashed_in("ssl:moco"))
    dino_out_dim: int = Field(65536, ge=16, le=1_000_000,
                              description="DINO head output dimension K (the paper's 65,536)",
        json_schema_extra=hashed_in("ssl:dino"))
    dino_local_crops: int = Field(6, ge=0, le=64,
                                  description="DINO small crops per sample (multi-crop)",
        json_schema_extra=hashed_in("ssl:dino"))
    dino_teacher_temp: float = Field(0.04, gt=0.0, le=1.0, description="DINO teacher temperature",
        json_schema_extra=hashed_in("ssl:dino"))
    dino_momentum: float = Field(0.996, ge=0.0, lt=1.0,
                                 description="DINO teacher EMA momentum at the start (cosine to 1)",
        json_schema_extra=hashed_in("ssl:dino"))
    mae_mask_ratio: float = Field(0.75, gt=0.0, lt=1.0, description="MAE share of patches masked",
        json_schema_extra=hashed_in("ssl:mae"))
    mae_decoder_dim: int = Field(256, ge=16, le=4096, description="MAE decoder width",
        json_schema_extra=hashed_in("ssl:mae"))
    mae_decoder_depth: int = Field(4, ge=1, le=32, description="MAE decoder transformer blocks",
        json_schema_extra=hashed_in("ssl:mae"))
    labelled_samples: int = Field(1024, ge=8, le=10_000_000,
                                  description="labelled places for the SSL evaluation",
        json_schema_extra=hashed_in())
    protocol_sizes: list[int] = Field(
        [32, 128, 512], min_length=1,
        description="labelled places of seed 001's three protocols in 07 (frozen, adapter and "
                    "full fine-tuning; encoders with the spectral stem): the label-efficiency "
                    "curve's points",
        json_schema_extra=hashed_in())
    protocol_steps: int = Field(40, ge=1, le=1_000_000,
                                description="optimiser steps of each fine-tuning fit of seed "
                                            "001's protocols, whatever the labelled-set size",
        json_schema_extra=hashed_in())
    protocol_recipe: Literal["lp-ft", "new-head"] = Field(
        "lp-ft", description="fine-tuning fits of seed 001's protocols: lp-ft (the head starts "
                             "as the frozen features' linear probe; full fine-tuning's encoder "
                             "at a tenth of the head's rate) | new-head (a random head, one "
                             "rate)",
        json_schema_extra=hashed_in())
    eval_split: Literal["val", "train"] = Field(
        "val", description="split the evaluation notebooks score (train = fitted data)",
        json_schema_extra=hashed_in())
    # bookkeeping
    work_dir: str = Field("work", description="artifacts folder (relative to the project root)",
        json_schema_extra=NOT_HASHED_FIELD)
    run_name: str | None = Field(None, description="report name; None = <experiment>-<preset>",
        json_schema_extra=NOT_HASHED_FIELD)
    cell_timeout_s: int = Field(
        21600, ge=60, le=7 * 86400,
        description="a report's notebook cell that runs longer stops the chain, naming the cell "
                    "(seconds; generous: 6 h, for GPU pretraining cells)",
        json_schema_extra=NOT_HASHED_FIELD)
    preset: str = Field("demo", description="name of the size preset that was applied",
        json_schema_extra=NOT_HASHED_FIELD)
    experiment: str | None = Field(None, description="name of the experiment set applied",
        json_schema_extra=NOT_HASHED_FIELD)

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
    def source_summary(self) -> str:
        """Where each dataset's samples come from, in words: the ``sources`` entries with their
        readers, the rest from ``source`` (the simulator unless set)."""
        named = {k: v.reader for k, v in (self.sources or {}).items() if k in self.dataset_keys}
        rest = [k for k in self.dataset_keys if k not in named]
        parts = [", ".join(f"{k} from your files ({r} reader)" for k, r in named.items())] \
            if named else []
        if rest:
            parts.append(f"{', '.join(rest)} from {self.source}" if named
                         else f"source {self.source}")
        return "; ".join(parts)

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
        return digest(omit_defaults({k: v for k, v in self.to_dict().items()
                                     if k not in NOT_HASHED}))

    @property
    def data_hash(self) -> str:
        """Hash of the keys that determine the data stage's shards."""
        d = self.to_dict()
        d["datasets"] = list(self.dataset_keys)
        d["scene_px"] = self.effective_scene_px
        return digest({"rules": DATA_RULES, **{k: d[k] for k in DATA_KEYS}})

    @property
    def train_hash(self) -> str:
        """Hash of what determines a training run (data + model + optimisation): its checkpoints
        live under ``<work>/checkpoints/<train_hash>/``."""
        d = self.to_dict()
        return digest({"data": self.data_hash,
                       **omit_defaults({k: d[k] for k in TRAIN_KEYS})})

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
            return digest({"data": self.data_hash, "kind": "moco-v2",
                            **{k: d[k] for k in SSL_KEYS}})
        keys = [k for k in SSL_KEYS if not k.startswith("moco_")] + list(
            SSL_METHOD_KEYS[self.ssl_method])
        return digest({"data": self.data_hash, "kind": self.ssl_method,
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



FIELDS = tuple(Config.model_fields)

# the hash sets, from the declarations on the fields
DATA_KEYS = keys_in(Config.model_fields, "data")
TRAIN_KEYS = keys_in(Config.model_fields, "train")
SSL_KEYS = keys_in(Config.model_fields, "ssl") + keys_in(Config.model_fields, "ssl:moco")
# the parameters of each method besides the common SSL keys (MoCo's are in SSL_KEYS already)
SSL_METHOD_KEYS = {"moco": (), "dino": keys_in(Config.model_fields, "ssl:dino"),
                   "mae": keys_in(Config.model_fields, "ssl:mae")}
NOT_HASHED = not_hashed(Config.model_fields)
