"""Typed stage records: one definition per notebook's record, one writer, one reader.

Every notebook ends by writing what it measured as a record (``work/runs/<run>/<stage>.json``,
collected into ``reports/<run>/metrics.json``). Each record is a dataclass below, with the JSON
key of each field, its type and a schema version (``"schema": "08_segmentation/1"`` in the
file). The index, the study pages, the summary and the quality-bar tests read records only
through :func:`read` / :func:`read_run`, which check the version and the types: a record of
another version, or one with a missing or wrongly typed value, is a :class:`RecordError` naming
the file and what to re-run, never a ``KeyError`` on a page.

Bump a record's ``VERSION`` when its meaning changes (a field renamed, a number computed another
way); a new optional field needs no bump.

Records hold plain values only (numbers, strings, lists, mappings and the row types below): no
arrays, no paths of this machine.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from geofm_lib.errors import GeofmError

SCHEMA_KEY = "schema"


class RecordError(GeofmError, ValueError):
    """A stage record of another schema version, or one missing or mistyping a value."""


def optional(key: str | None = None, omit_none: bool = True):
    """A field that may be absent from the record (None); ``key``: its JSON key where that is
    not a Python name (``val_mean_R@1``)."""
    return field(default=None, metadata={"key": key, "omit_none": omit_none})


def named(key: str):
    """A required field whose JSON key is not a Python name."""
    return field(metadata={"key": key})


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


class _Fault(Exception):
    """A type fault inside a record: where and what (turned into a RecordError at the top)."""


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _build(tp, value, where: str):
    """``value`` checked against the annotation ``tp`` (row types built from mappings)."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        faults = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _build(arg, value, where)
            except _Fault as exc:
                faults.append(exc)
        raise faults[0]
    if isinstance(tp, type) and issubclass(tp, Part):
        if not isinstance(value, dict):
            raise _Fault(f"{where} is {_kind(value)}, not a mapping of {tp.__name__}")
        return tp._from_mapping(value, where)
    if origin is list:
        if not isinstance(value, list):
            raise _Fault(f"{where} is {_kind(value)}, not a list")
        return [_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Fault(f"{where} is {_kind(value)}, not a mapping")
        return {k: _build(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if not _is_number(value):
            raise _Fault(f"{where} is {_kind(value)}, not a number")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Fault(f"{where} is {_kind(value)}, not a whole number")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise _Fault(f"{where} is {_kind(value)}, not a {tp.__name__}")
        return value
    if tp in (list, dict):
        if not isinstance(value, tp):
            raise _Fault(f"{where} is {_kind(value)}, not a {tp.__name__}")
        return value
    raise TypeError(f"records: no rule for the annotation {tp!r} ({where})")  # a bug here


def _kind(value) -> str:
    return "missing" if value is None else f"a {type(value).__name__} ({str(value)[:40]!r})"


def _plain(value):
    """JSON-ready: row types as mappings, numpy scalars as Python numbers."""
    if isinstance(value, Part):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar
        return value.item()
    return value


@dataclass(kw_only=True)
class Part:
    """A typed mapping inside a record (a table row, a floor)."""

    @classmethod
    def _hints(cls) -> dict:
        return typing.get_type_hints(cls)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[_key(f)] = _plain(value)
        return out

    @classmethod
    def _from_mapping(cls, data: dict, where: str):
        hints = cls._hints()
        known = {_key(f): f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known) - {SCHEMA_KEY})
        if unknown:
            raise _Fault(f"{where} has field(s) this version does not define: "
                         f"{', '.join(unknown[:5])}")
        values = {}
        for key, f in known.items():
            required = f.default is dataclasses.MISSING and \
                f.default_factory is dataclasses.MISSING
            if key not in data:
                if required:
                    raise _Fault(f"{where}.{key} is missing")
                continue
            values[f.name] = _build(hints[f.name], data[key], f"{where}.{key}")
        return cls(**values)


@dataclass(kw_only=True)
class StageRecord(Part):
    """The record of one notebook: ``STAGE`` names it, ``VERSION`` is its schema version."""

    STAGE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    @classmethod
    def schema(cls) -> str:
        return f"{cls.STAGE}/{cls.VERSION}"

    def to_dict(self) -> dict:
        return {SCHEMA_KEY: self.schema(), **super().to_dict()}

    @classmethod
    def of(cls, values: dict):
        """The record from a mapping of its JSON keys (``{"val_mean_R@1": ...}``), checked."""
        try:
            return cls._from_mapping(dict(values), cls.STAGE)
        except _Fault as exc:
            raise RecordError(f"{exc} (the {cls.STAGE} record being made)") from None

    @classmethod
    def from_dict(cls, data: dict, source: str = "the record", folder: Path | None = None):
        """The record, or a RecordError naming ``source`` and what to re-run (the command of
        the run in the report ``folder``, where given)."""
        found = data.get(SCHEMA_KEY) if isinstance(data, dict) else None
        if found != cls.schema():
            was = (f"schema {found!r}" if found else
                   "no schema (written before typed records, 2026-12-05)")
            raise RecordError(f"{source}: the {cls.STAGE} record has {was}; this workspace "
                              f"reads {cls.schema()}. "
                              f"{rerun_advice(cls.STAGE, folder, whole=not found)}")
        try:
            return cls._from_mapping(data, cls.STAGE)
        except _Fault as exc:
            raise RecordError(f"{source}: {exc}. {rerun_advice(cls.STAGE, folder)}") from None


def rerun_advice(stage: str, folder: Path | None, whole: bool = False) -> str:
    """What to run to write the record anew: the command of the run that made it (from the
    ``run.json`` in its report ``folder``: preset, experiment, overrides, run name), for this
    notebook only or, for a run made before typed records (``whole``), the whole chain."""
    run = folder.name if folder is not None else "<run>"
    info = {}
    if folder is not None and (folder / "run.json").is_file():
        try:
            info = json.loads((folder / "run.json").read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            info = {}
    info = info if isinstance(info, dict) else {}
    only = "" if whole else f" --notebooks {stage[:2]}"
    if run.startswith("study-"):  # a study's run: the study makes it again
        study = run.split("-")[1]
        cmd = f"geofm study --study {study} --preset {info.get('preset') or run.split('-')[-1]}"
    else:
        cmd = f"geofm report --preset {info.get('preset') or '<preset>'}"
        if info.get("experiment"):
            cmd += f" --experiment {info['experiment']}"
        values = dict(info.get("overrides") or {})
        for params in (info.get("notebook_params") or {}).values():  # e.g. 08's seg_lr
            values.update(params if isinstance(params, dict) else {})
        cmd += "".join(f" -p {k}={json.dumps(v) if not isinstance(v, str) else v}"
                       for k, v in values.items())
        cmd += f" -p run_name={run}{only}"
    what = "the run again" if whole else f"notebooks/{stage}.ipynb for this run"
    return f"Run {what}: {cmd} (or remove reports/{run}/)"


# --- 01 .. 05 ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DataPrepRecord(StageRecord):
    STAGE: ClassVar[str] = "01_data_prep"
    samples: int
    shards: int
    megabytes: float
    seconds: float
    samples_per_s: float | None = optional(omit_none=False)
    reused_build: bool


@dataclass(kw_only=True)
class ExploreRecord(StageRecord):
    STAGE: ClassVar[str] = "02_explore_data"
    mean_labels_per_image: float
    per_dataset: dict[str, dict]


@dataclass(kw_only=True)
class PretrainRecord(StageRecord):
    STAGE: ClassVar[str] = "03_pretrain"
    final_train_loss: float
    final_val_loss: float
    val_mean_r1: float | None = optional("val_mean_R@1", omit_none=False)
    epochs: int
    steps: int
    train_seconds: float
    samples_per_s: float | None = optional(omit_none=False)
    parameters_M: float
    device: str
    precision: str
    history: list[dict]


@dataclass(kw_only=True)
class RetrievalRow(Part):
    """Zero-shot retrieval on one dataset (04): image-to-text R@K with its interval and the
    exact chance level, text-to-image R@K and its chance; None where K is at least the number
    of labels (or nothing could be scored)."""

    r1: float | None = optional("R@1", omit_none=False)
    r5: float | None = optional("R@5", omit_none=False)
    r10: float | None = optional("R@10", omit_none=False)
    r1_ci: list[float] | None = optional("R@1_ci95")
    r5_ci: list[float] | None = optional("R@5_ci95")
    r10_ci: list[float] | None = optional("R@10_ci95")
    chance_r1: float | None = optional("chance_R@1", omit_none=False)
    chance_r5: float | None = optional("chance_R@5", omit_none=False)
    chance_r10: float | None = optional("chance_R@10", omit_none=False)
    images: int
    labels: int
    no_labels: int
    t2i_r1: float | None = optional("t2i_R@1", omit_none=False)
    t2i_r5: float | None = optional("t2i_R@5", omit_none=False)
    t2i_r10: float | None = optional("t2i_R@10", omit_none=False)
    t2i_chance_r1: float | None = optional("t2i_chance_R@1", omit_none=False)
    t2i_chance_r5: float | None = optional("t2i_chance_R@5", omit_none=False)
    t2i_chance_r10: float | None = optional("t2i_chance_R@10", omit_none=False)

    def recall(self, k: int) -> float | None:
        return getattr(self, f"r{k}")

    def recall_ci(self, k: int) -> list[float] | None:
        return getattr(self, f"r{k}_ci")

    def chance(self, k: int) -> float | None:
        return getattr(self, f"chance_r{k}")


@dataclass(kw_only=True)
class ZeroShotRecord(StageRecord):
    STAGE: ClassVar[str] = "04_zero_shot_eval"
    mean_r1: float | None = optional("mean_R@1", omit_none=False)
    mean_r5: float | None = optional("mean_R@5", omit_none=False)
    mean_r10: float | None = optional("mean_R@10", omit_none=False)
    mean_chance_r1: float | None = optional("mean_chance_R@1", omit_none=False)
    mean_chance_r5: float | None = optional("mean_chance_R@5", omit_none=False)
    mean_chance_r10: float | None = optional("mean_chance_R@10", omit_none=False)
    init_mean_r1: float | None = optional("init_mean_R@1", omit_none=False)
    per_dataset: dict[str, RetrievalRow]
    split: str
    not_evaluable: dict[str, str]
    quality: dict
    paper_table: str | None = optional(omit_none=False)
    caption_retrieval: dict[str, dict]
    mean_recall: float | None = optional()
    public_models: dict[str, dict] | None = optional()  # public RS-CLIP models beside ours


@dataclass(kw_only=True)
class MapRecord(StageRecord):
    STAGE: ClassVar[str] = "05_map_viz"
    footprints: int
    layers: int
    image_overlays: int
    map_megabytes: float


# --- 06 ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class FinetunedRow(Part):
    """An encoder fine-tuned end to end on one dataset (06), scored on its test split."""

    dataset: str
    epochs: int
    recipe: str | None = optional(omit_none=False)
    f2_micro: float
    f2_micro_ci95: list[float]
    seconds: float
    seeds: list[int] | None = optional()  # with repeats: the fit again per seed
    f2_micro_per_seed: list[float] | None = optional()
    f2_micro_over_seeds: float | None = optional()
    f2_micro_seed_sd: float | None = optional()


@dataclass(kw_only=True)
class ProbesRecord(StageRecord):
    STAGE: ClassVar[str] = "06_feature_probes"
    encoders: list[str]
    probes: list[str]
    datasets: list[str]
    per_dataset: dict[str, dict]
    mean_f2_micro: dict[str, float | None]
    probe_f2_micro: float | None = optional(omit_none=False)
    label_prior_f2_micro: dict[str, dict] = optional()
    mean_label_prior_f2_micro: float | None = optional(omit_none=False)
    at_floor: list[str] = optional()
    finetuned: dict[str, FinetunedRow] = optional()
    label_efficiency: list[dict] | dict = optional()
    recipes: dict[str, dict] = optional()  # the fitting recipes used, by name, with values


# --- 07 ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SslScores(Part):
    """Seed 003's headline of one SSL encoder: its linear probe on the headline input (S1+S2,
    or the optical input where the places have no S1) beside the fair baselines (random init
    with estimated statistics, RCF), the floor (label prior) and the paired differences."""

    headline_input: str | None = optional()
    linear_probe_f2_s1s2: float | None = optional()
    linear_probe_f2_s1s2_ci: list[float] | None = optional()
    random_init_f2_s1s2: float | None = optional()
    random_init_f2_s1s2_ci: list[float] | None = optional()
    random_init_at_floor: bool | None = optional()
    rcf_f2_s1s2: float | None = optional()
    rcf_f2_s1s2_ci: list[float] | None = optional()
    rcf_at_floor: bool | None = optional()
    label_prior_f2_s1s2: float | None = optional()
    label_prior_f2_s1s2_ci: list[float] | None = optional()
    ssl_minus_random_init_f2_s1s2: float | None = optional()
    ssl_minus_random_init_f2_s1s2_ci: list[float] | None = optional()
    ssl_minus_strongest_f2_s1s2: float | None = optional()
    ssl_minus_strongest_f2_s1s2_ci: list[float] | None = optional()
    strongest_baseline: str | None = optional()


@dataclass(kw_only=True)
class SslAlso(SslScores):
    """Another method's encoder trained and scored beside the run's own (07's ``also``)."""

    label: str
    ssl_backbone: str
    ssl_epochs: int
    ssl_hash: str
    embedding_std: float
    collapsed: bool
    final_loss: float | None = optional(omit_none=False)
    encoder: str | None = optional()
    reconstruction_loss: list[float] | None = optional()
    table: list[dict] | None = optional()


@dataclass(kw_only=True)
class ProtocolRow(Part):
    """Seed 001's classification protocols (07): an encoder under a protocol with a labelled
    set size, its score with the interval, and its paired difference to random init."""

    protocol: str
    init: str
    input: str
    metric: str
    n_labelled: int
    n_test: int
    score: float
    ci: list[float]
    f2_micro: float
    recipe: str | None = optional(omit_none=False)
    steps: int
    trainable: int
    minus_random_init: float | None = optional()
    minus_random_init_ci: list[float] | None = optional()
    curve: list[list[float]] | None = optional()
    # with repeats: every fit again per seed (random init of the same seed), mean and sd
    seeds: list[int] | None = optional()
    score_per_seed: list[float] | None = optional()
    score_over_seeds: float | None = optional()
    score_seed_sd: float | None = optional()
    minus_random_init_per_seed: list[float] | None = optional()
    minus_random_init_over_seeds: float | None = optional()
    minus_random_init_seed_sd: float | None = optional()


@dataclass(kw_only=True)
class SslRecord(StageRecord, SslScores):
    """Seed 003's evaluation of 07: the probe table and its headline, with the fair baselines
    and floors; the other methods' encoders (``also``); seed 001's protocols where run."""

    STAGE: ClassVar[str] = "07_ssl_pretrain"
    ssl_method: str
    ssl_mode: str
    ssl_patches: int | str | None = optional(omit_none=False)
    places_train: int
    places_val: int
    places_pretrained: int | None = optional(omit_none=False)
    final_loss: float | None = optional(omit_none=False)
    embedding_std: float | None = optional(omit_none=False)
    collapsed: bool
    table: list[dict]
    also: dict[str, SslAlso] = optional()
    protocols: list[ProtocolRow] | None = optional()
    protocol_data: str | None = optional()
    protocol_recipe: str | None = optional()
    protocol_steps: int | None = optional()
    evaluation: str | None = optional()  # "not evaluable", with the reason
    reason: Any = optional()
    recipes: dict[str, dict] = optional()  # the fitting recipes used, by name, with values


# --- 08 ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SegmentationRow(Part):
    """One fit (or the floor) of 08: an encoder with a decoder under a protocol and a labelled
    set size, scored on the test places; ``ci``: the 95 % interval of each score."""

    protocol: str
    decoder: str
    encoder: str
    labelled: int
    mean_iou: float
    overall_accuracy: float
    boundary_f1: float | None = optional(omit_none=False)
    ci: dict[str, Any]
    seconds: float
    iou: dict[str, float | None]
    at_floor: bool | None = optional()
    floor: bool | None = optional()
    # with repeats (several seeds): each seed's mean IoU (the first is the row's fit), their
    # mean and sample standard deviation
    seeds: list[int] | None = optional()
    mean_iou_per_seed: list[float] | None = optional()
    mean_iou_over_seeds: float | None = optional()
    mean_iou_seed_sd: float | None = optional()


@dataclass(kw_only=True)
class SegmentationDifference(Part):
    """A pretrained encoder's paired mean-IoU difference to the random init of its
    architecture, on the same resampled test images."""

    protocol: str
    decoder: str
    encoder: str
    baseline: str
    labelled: int
    minus_random_init: float
    ci: list[float]
    # with repeats: each seed's difference (pretrained minus random init of the same seed),
    # their mean and sample standard deviation
    per_seed: list[float] | None = optional()
    over_seeds: float | None = optional()
    seed_sd: float | None = optional()


@dataclass(kw_only=True)
class DetailRow(Part):
    variant: str
    mean_iou: float
    boundary_f1: float | None = optional(omit_none=False)
    overall_accuracy: float
    ci: dict[str, Any]


@dataclass(kw_only=True)
class DensityRow(Part):
    encoder: str
    labelled: int
    rmse: float
    mae: float
    r2: float
    ci: dict[str, Any]
    floor: bool | None = optional()
    minus_random_init_rmse: float | None = optional()
    minus_random_init_rmse_ci: list[float] | None = optional()


@dataclass(kw_only=True)
class EpochRow(Part):
    """One epoch of a segmenter's fit: its training loss and, where evaluated, the validation
    scores."""

    epoch: int
    train_loss: float
    val_mean_iou: float | None = optional()
    val_overall_accuracy: float | None = optional()


@dataclass(kw_only=True)
class SegmentationFloor(Part):
    name: str
    what: str
    mean_iou: float
    overall_accuracy: float


@dataclass(kw_only=True)
class SegmentationRecord(StageRecord):
    """Seed 001's segmentation comparison (08). The headline: each encoder with the first
    protocol, its first decoder and the fewest labels, its paired difference to random init of
    its architecture, the floor under it and which rows reach the floor."""

    STAGE: ClassVar[str] = "08_segmentation"
    target: str
    decoder: str
    decoders: list[str]
    input: str
    protocols: list[str]
    classes: list[str]
    backbones: dict[str, str]
    labelled: list[int]
    epochs: int
    n_test: int
    few_labels: int
    protocol: str
    mean_iou: dict[str, float]
    mean_iou_ci: dict[str, list[float]]
    minus_random_init: dict[str, float]
    minus_random_init_ci: dict[str, list[float]]
    floor: SegmentationFloor
    at_floor: dict[str, bool]
    table: list[SegmentationRow]
    differences: list[SegmentationDifference]
    details: list[DetailRow]
    density: list[DensityRow]
    history: dict[str, list[EpochRow]]
    seeds: list[int] | None = optional()  # with repeats: the seeds of every comparison fit
    mean_iou_seed_sd: dict[str, float] | None = optional()
    minus_random_init_seed_sd: dict[str, float] | None = optional()
    recipes: dict[str, dict] = optional()  # the fitting recipe of every fit, with its values


# --- 09 ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SceneAccuracy(Part):
    """A class map's per-cell accuracy against a scene's truth (09), or a floor's."""

    accuracy: float
    ci95: list[float] | None = optional(omit_none=False)  # chance has none
    cells: int
    blocks: int


@dataclass(kw_only=True)
class SceneMapRecord(StageRecord):
    STAGE: ClassVar[str] = "09_scene_maps"
    scene: str  # the file's name
    simulated: bool
    dataset: str | None = optional(omit_none=False)  # the simulated scene's dataset
    encoder: str
    baseline: str | None = optional(omit_none=False)
    head: str | None = optional()  # how tiles became classes: zero-shot or the linear probe's
    classes: list[str]
    queries: list[str]
    tile_px: int
    stride_px: int
    cell_px: int
    tiles: int
    tiles_kept: int
    stats: str
    accuracy: dict[str, SceneAccuracy] | None = optional(omit_none=False)
    truth: str | None = optional()  # what the class map was scored against
    not_scored: str | None = optional(omit_none=False)
    query_seconds: float
    products: list[str]
    map_megabytes: float


RECORDS: dict[str, type[StageRecord]] = {
    r.STAGE: r for r in (DataPrepRecord, ExploreRecord, PretrainRecord, ZeroShotRecord,
                         MapRecord, ProbesRecord, SslRecord, SegmentationRecord,
                         SceneMapRecord)}


def record_type(stage: str) -> type[StageRecord]:
    try:
        return RECORDS[stage]
    except KeyError:
        raise RecordError(f"no record is defined for the stage {stage!r} (known: "
                          f"{', '.join(RECORDS)})") from None


def read(stage: str, data: dict, source: str = "the record",
         folder: Path | None = None) -> StageRecord:
    """The typed record of ``stage`` from its mapping (``metrics`` of a stage file, or one entry
    of a report's metrics.json in ``folder``)."""
    return record_type(stage).from_dict(data, source, folder)


def read_run(path: Path) -> dict[str, StageRecord | dict]:
    """Every record of a report's ``metrics.json``, by stage: the workspace's notebooks' as
    their typed records (a RecordError names the file and what to re-run), a notebook of your
    own's as its mapping."""
    path = Path(path)
    source = f"reports/{path.parent.name}/{path.name}"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{source} cannot be read ({exc}); remove reports/"
                          f"{path.parent.name}/ or run the chain again") from None
    bad = [k for k, v in data.items() if not isinstance(v, dict)] \
        if isinstance(data, dict) else ["(the file)"]
    if bad:
        raise RecordError(f"{source} is damaged: its entry {bad[0]!r} is not a notebook's "
                          f"record; remove reports/{path.parent.name}/ (or run the whole chain "
                          f"again, without --notebooks) so the report is made anew")
    return {stage: read(stage, entry, source, path.parent) if stage in RECORDS else entry
            for stage, entry in data.items()}
