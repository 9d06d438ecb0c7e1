"""Loading a run's parameters: the named sets of parameters/ and a user's own files, layered
(defaults <- preset <- experiment <- overrides), validated into a ``Config`` with errors that
name the key, the value, where it came from and what is allowed."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geofm_lib.catalog import DATASETS, SIMULATED
from geofm_lib.config.choices import PRESETS, READERS
from geofm_lib.config.root import is_parameter_file, project_root
from geofm_lib.config.schema import FIELDS, Config, DatasetCard, SourceSpec
from geofm_lib.errors import ConfigError, PretrainedUnavailable
from geofm_lib.io import check_name, parse_yaml_value, read_yaml
from geofm_lib.models.devices import resolve_device, resolve_precision
from geofm_lib.models.names import check_pretrained


def parameter_sets(kind: str | None = None) -> list[str]:
    """Names of the YAML sets in parameters/ (without .yaml); kind: 'preset' or 'experiment'."""
    names = sorted(p.stem for p in (project_root() / "parameters").glob("*.yaml"))
    names = [n for n in names if n != "defaults"]
    if kind == "preset":
        return [n for n in names if n in PRESETS]
    if kind == "experiment":
        return [n for n in names if n not in PRESETS]
    return names






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


def command_for(cfg: Config, sub: str = "data") -> str:
    """The ``geofm <sub>`` command with exactly ``cfg``'s parameters: its preset, its
    experiment set or file, and a ``-p`` for each value that differs from what those give
    (``work_dir`` and ``run_name`` included), so that advice to run another stage first is
    advice that works."""
    import json
    import shlex

    base = load_config(cfg.preset, cfg.experiment).to_dict()
    mine = cfg.to_dict()
    differ = {k: v for k, v in mine.items()
              if k not in ("preset", "experiment", "run_name") and v != base.get(k)}
    if mine.get("run_name") != load_config(cfg.preset, cfg.experiment, **differ).run_name:
        differ["run_name"] = mine["run_name"]  # given, not the name the overrides make
    parts = ["geofm", sub, "--preset", cfg.preset]
    if cfg.experiment:
        parts += ["--experiment", cfg.experiment]
    for key, value in differ.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if isinstance(value, str) and parse_yaml_value(value, key) != value:
            text = json.dumps(value)  # a name such as "2024" or "true" stays a string
        parts += ["-p", f"{key}={text}"]
    return " ".join(shlex.quote(str(x)) for x in parts)


def value_origins(preset: str = "demo", experiment: str | None = None,
                  **overrides: Any) -> dict[str, str]:
    """Where each parameter's value comes from, as ``load_config`` layers them: the last of
    parameters/defaults.yaml, the preset's file, the experiment set (or your own file) and
    ``-p`` that sets it; a key none of them sets has the schema's default."""
    layers = [("parameters/defaults.yaml", _read_set("defaults")),
              (f"parameters/{preset}.yaml", _read_set(preset))]
    if experiment is not None:
        layers.append((experiment, _read_file(Path(experiment))) if is_parameter_file(experiment)
                      else (f"parameters/{experiment}.yaml", _read_set(experiment)))
    layers.append(("-p", {k: v for k, v in overrides.items() if v is not None}))
    origin = {key: "schema default" for key in FIELDS}
    for where, values in layers:
        for key in values:
            if key in FIELDS:
                origin[key] = where
    return origin


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


