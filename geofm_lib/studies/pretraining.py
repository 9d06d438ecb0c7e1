"""Self-supervised pretraining and its evaluation (notebook 07): seed 003's MoCo-v2 with
Sentinel-1/Sentinel-2 pairs (and DINO / MAE beside it), scored by seed 003's protocol (linear
probe, fine-tuning, a supervised baseline; S1 / S2 / S1+S2) against fair baselines and floors,
and seed 001's classification protocols where the encoder has a spectral stem. One function per
step:

1. :func:`settings` — the notebook's own parameters and the methods beside the run's, checked;
2. :func:`places` — the places with both sensors (or the one image of single-sensor data);
3. :func:`pretrain` — the run's method (or its finished encoder, loaded);
4. :func:`collapse_check` — the encoder's embedding spread, an error when it collapsed;
5. :func:`evaluate` — seed 003's table with the floors, RCF and the paired differences;
6. :func:`beside` — each other method pretrained on the same places, checked and probed;
7. :func:`protocols` — seed 001's frozen / adapter / full fine-tuning protocols;
8. :func:`record` — the typed record (:class:`~geofm_lib.records.SslRecord`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from geofm_lib import paths, records, ssl
from geofm_lib.config import Config, load_config
from geofm_lib.errors import ConfigError, DataError, TrainingDiverged
from geofm_lib.evaluation import fitting
from geofm_lib.evaluation.repeats import seeds_of
from geofm_lib.progress import get_logger
from geofm_lib.ssl import evaluation as ssl_evaluation
from geofm_lib.studies import parameters

LOG_EVERY = 5  # pretraining steps between log lines
CHECK_MIN_PLACES = 16  # fewer validation places: the collapse check runs on the training places

PARAMETERS = {
    "finetune_epochs": (3, "epochs of the supervised baseline and of fine-tuning"),
    "n_boot": (300, "bootstrap draws for the 95 % intervals"),
    "also_methods": (["dino", "mae:vit_tiny_patch16"],
                     "methods pretrained on the same data and probed frozen beside ssl_method, as "
                     "method or method:backbone; [] for none"),
    "protocols": (None, "seed 001's protocols: frozen, adapter, full; None: all three where the "
                        "encoder has a spectral stem, else none; [] for none"),
    "protocol_data": (None, "labelled data the protocols score on, as an experiment set or YAML "
                            "path (seed 001: pretrain on unlabelled SpectralEarth, score on "
                            "EnMAP-CORINE, e.g. group_H); None: this run's places"),
    "also_epochs": (5, "their pretraining epochs (demo: half of MoCo's 10, a CPU budget); None: "
                       "ssl_epochs"),
    "repeats": (1, "fits of seed 001's protocol rows: N (seeds seed, seed+1, ...) or a list of "
                   "seeds; above one, every fit again per seed (random init drawn anew) and mean "
                   "± sd across the seeds beside the first seed's interval"),
}
NAMES = tuple(PARAMETERS)


@dataclass(frozen=True)
class Settings:
    finetune_epochs: int
    n_boot: int
    also: dict[str, Config]  # key (method, or method:backbone) -> its config
    protocols: list[str]
    protocol_data: str | None
    seeds: list[int] = field(default_factory=list)  # repeats of the protocol fits

    @property
    def evaluation_settings(self) -> dict:
        """What an evaluation stored beside an encoder was computed with."""
        return {"finetune_epochs": self.finetune_epochs, "n_boot": self.n_boot}

    def describe(self, cfg: Config) -> str:
        label = ssl.METHOD_LABELS[cfg.ssl_method]
        method = {
            "moco": f"queue {cfg.moco_queue}, momentum {cfg.moco_momentum}, temperature "
                    f"{cfg.moco_temperature}",
            "dino": f"K {cfg.dino_out_dim}, {cfg.dino_local_crops} small crops, teacher momentum "
                    f"{cfg.dino_momentum} -> 1, teacher temperature {cfg.dino_teacher_temp}",
            "mae": f"mask ratio {cfg.mae_mask_ratio}, decoder {cfg.mae_decoder_depth} x "
                   f"{cfg.mae_decoder_dim}"}[cfg.ssl_method]
        lines = [f"run {cfg.name}: {label} {cfg.ssl_mode} pairs, {cfg.ssl_backbone} + "
                 f"{cfg.ssl_adapter}, augmentations {cfg.ssl_augment}, {cfg.ssl_epochs} epochs of "
                 f"{cfg.ssl_batch_size}, lr {cfg.ssl_learning_rate:g}",
                 f"{method}; data {cfg.data_hash} -> ssl run {cfg.ssl_hash}"]
        if self.also:
            lines.append("beside it: " + ", ".join(
                f"{ssl.method_label(c.ssl_method, c.ssl_backbone, cfg.ssl_backbone)} for "
                f"{c.ssl_epochs} epochs (ssl run {c.ssl_hash})" for c in self.also.values()))
        return "\n".join(lines)


def settings(cfg: Config, namespace: dict) -> Settings:
    """07's parameters, and every method beside the run's validated now (MAE needs a ViT
    backbone, MoCo a ResNet), before any work."""
    p = parameters.read(namespace, PARAMETERS)
    parameters.whole("finetune_epochs", p["finetune_epochs"], 0)
    parameters.whole("n_boot", p["n_boot"], 1)
    methods = parameters.as_list(p["also_methods"])
    also = {}
    for spec in methods:
        m, b = ssl.parse_method(spec, cfg.ssl_backbone)
        if (m, b) != (cfg.ssl_method, cfg.ssl_backbone):
            key = m if b == cfg.ssl_backbone else f"{m}:{b}"
            also[key] = ssl.method_config(cfg, spec, p["also_epochs"])
    protocols = p["protocols"]
    if protocols is None:  # seed 001's protocols need the spectral stem (the adapter tunes it)
        protocols = list(ssl.PROTOCOLS) if cfg.ssl_adapter == "spectral" else []
    protocols = parameters.as_list(protocols)
    bad = [x for x in protocols if x not in ssl.PROTOCOLS]
    if bad:
        raise ConfigError(f"protocols: {bad} not one of {', '.join(ssl.PROTOCOLS)}")
    return Settings(p["finetune_epochs"], p["n_boot"], also, protocols, p["protocol_data"],
                    seeds_of(p["repeats"], cfg.seed))


# --- the places -------------------------------------------------------------------------------


@dataclass
class Places:
    """The training and validation places, the evaluation inputs (s1, s2, s1/s2; the optical
    images only for single-sensor data) and why they cannot be scored (None: they can)."""

    train: object  # ssl.Pairs
    val: object
    unscored: str | None

    @property
    def inputs(self) -> list[str]:
        return list(self.train.input_names)

    @property
    def check_on(self):
        """The places of the collapse check: the validation places, or the training places
        when there are fewer than 16 (the spread of a handful of images says nothing)."""
        return self.val if len(self.val) >= CHECK_MIN_PLACES else self.train


def places(cfg: Config) -> Places:
    """The places of this run's shards with both sensors, described in a few lines."""
    train, val = ssl.load_pairs(cfg, "train"), ssl.load_pairs(cfg, "val")
    print(f"{len(train)} training places, {len(val)} validation places "
          f"({train.incomplete + val.incomplete} with one sensor only, left out)")
    if train.single_sensor:
        print(f"single-sensor data ({train.sensor_name}): every image is a place of its own, "
              f"positive pairs are two augmentations of it; {len(train.bands)} bands, "
              f"{train.bands[0]} ... {train.bands[-1]}")
    else:
        print(f"input layout ({len(train.bands)} channels): optical "
              f"{', '.join(train.optical_bands)}; SAR {', '.join(train.sar_bands)}")
    if cfg.ssl_patches == "non_overlapping":
        kept = ssl.non_overlapping(train.bounds, cfg.seed)
        print(f"pretraining on the {len(kept)} of {len(train)} training places whose "
              f"footprints do not overlap")
    known = sum(d is not None for d in train.dominant)
    print(f"dominant land-cover class (single-label task) known for {known} of {len(train)} "
          f"training places")
    example = ssl.PairViews(train, cfg.ssl_mode, cfg.seed)[0]
    print(f"a {cfg.ssl_mode} sample: query {example['sensor_q']} of {example['pair_q']}, key "
          f"{example['sensor_k']} of {example['pair_k']}, {tuple(example['image'].shape)} "
          f"stacked")
    unscored = ssl.not_evaluable(train, val, cfg)
    if unscored:
        print(f"not scored: {unscored}")
    return Places(train, val, unscored)


# --- pretraining and its checks ---------------------------------------------------------------


def pretrain(cfg: Config):
    """The run's method pretrained (resumed where it stopped; a finished encoder loaded)."""
    result = ssl.pretrain(cfg, log_every=LOG_EVERY)
    if result.already_finished:
        print(f"loaded the finished encoder from checkpoints/{result.encoder_path.parent.name}/ "
              f"(no training)")
    return result


def ensure_encoders(cfg: Config, methods) -> dict[str, Path]:
    """The finished encoder of each method of ``methods`` on this data
    (``ssl.finished_encoders``: 07's evaluated runs); a method 07 has not pretrained (08 run
    on its own) is pretrained first through 07's call with 07's default settings (the run's
    own method with ``cfg``, the others for ``also_epochs`` epochs, as 07 pretrains them
    beside it, so a later 07 loads them), saying so in one line."""
    s = settings(cfg, {})
    out = {}
    for spec in methods:
        try:
            out.update(ssl.finished_encoders(cfg, [spec]))
            continue
        except DataError:
            pass
        m, b = ssl.parse_method(spec, cfg.ssl_backbone)
        key = m if b == cfg.ssl_backbone else f"{m}:{b}"
        cfg_m = cfg if (m, b) == (cfg.ssl_method, cfg.ssl_backbone) else s.also.get(key) \
            or ssl.method_config(cfg, spec, PARAMETERS["also_epochs"][0])
        get_logger().info("no finished %s encoder on data %s (07_ssl_pretrain has not run with "
                          "these parameters): pretraining it now, as it would (ssl run %s)",
                          spec, cfg.data_hash, cfg_m.ssl_hash)
        out[spec] = ssl.pretrain(cfg_m, log_every=LOG_EVERY).encoder_path
    return out


def collapse_check(p: Places, encoder_path: Path, name: str = "the encoder") -> dict:
    """The spread of the encoder's embeddings of the check places; a collapsed encoder (every
    image nearly the same embedding) is an error, not a number."""
    encoder, _ = ssl.read_encoder(encoder_path)
    check_on = p.check_on
    if check_on is p.train:
        print(f"{len(p.val)} validation places: the check runs on the {len(p.train)} training "
              f"places")
    feats = ssl.features_of(encoder, check_on.inputs(np.arange(len(check_on)), p.inputs[-1]))
    check = ssl.collapse_check(torch.from_numpy(feats))
    print(f"{name}: embedding std {check['embedding_std']:.4f} (spread over the sphere: "
          f"{check['uniform_std']:.4f}; collapse below {0.1 * check['uniform_std']:.4f})")
    if check["collapsed"]:
        raise TrainingDiverged(f"{name} has collapsed: every image gets nearly the same "
                               f"embedding (std {check['embedding_std']:.4f}); try a lower "
                               f"ssl_lr, stronger augmentations (ssl_augment) or more places")
    return check


def mae_views(cfg_x: Config, p: Places, encoder_path: Path) -> dict:
    """MAE's reconstructions of four validation places under the views it was trained on: one
    sensor's image (sensor, augment pairs) or both stacked (fusion)."""
    sensors = (["s2", "s2", "s1", "s1"] if cfg_x.ssl_mode in ("sensor", "augment")
               else ["s1/s2"] * 4)
    if p.val.single_sensor:
        sensors = ["s2"] * 4
    images = np.concatenate([p.val.inputs([i % len(p.val)], s) for i, s in enumerate(sensors)])
    return ssl.mae_reconstructions(cfg_x, encoder_path, images, sensors)


def reconstructions_note(cfg: Config, s: Settings) -> str:
    label = ssl.METHOD_LABELS[cfg.ssl_method]
    if any(c.ssl_method == "mae" for c in s.also.values()):
        return f"{label} reconstructs nothing (MAE beside it: below)"
    return (f"{label} reconstructs nothing (run with ssl_method=mae and a ViT backbone to see "
            f"reconstructions)")


# --- seed 003's evaluation --------------------------------------------------------------------


@dataclass
class Evaluation:
    """Seed 003's rows of one encoder (empty: the places cannot be scored, ``unscored``)."""

    rows: list[dict]
    inputs: list[str]
    unscored: str | None = None

    def table(self) -> pd.DataFrame | str:
        """Task x method against the inputs, each score with its 95 % interval."""
        if not self.rows:
            return f"not evaluated: {self.unscored}"
        table = pd.DataFrame(self.rows)
        cell = table.apply(lambda r: f"{r.score:.1f} [{r.ci[0]:.1f}-{r.ci[1]:.1f}]", axis=1)
        return (table.assign(score_ci=cell)
                .pivot(index=["task", "method"], columns="input", values="score_ci")
                [self.inputs])


def evaluate(cfg: Config, s: Settings, p: Places, encoder_path: Path) -> Evaluation:
    """Seed 003's protocol on the run's encoder (linear probe, fine-tuning, the supervised
    baseline, random init with estimated statistics, RCF and the floors; S1 / S2 / S1+S2), the
    paired differences printed; the evaluation is stored beside the encoder."""
    if p.unscored:
        return Evaluation([], p.inputs, p.unscored)
    rows = ssl.evaluate(cfg, encoder_path, finetune_epochs=s.finetune_epochs, n_boot=s.n_boot)
    table = pd.DataFrame(rows)
    for task, sub in table.groupby("task", sort=False):
        print(f"{task}: {sub.metric.iloc[0]} [95 % CI]; {sub.n_train.iloc[0]} labelled training "
              f"places, {sub.n_test.iloc[0]} test places")
    for r in rows:  # the paired intervals: each probe and its baseline on the same test places
        if "minus_random_init" in r:
            print(f"{r['method']} ({r['input']}): F2 minus random init "
                  f"{r['minus_random_init']:+.1f} [{r['minus_random_init_ci'][0]:+.1f}, "
                  f"{r['minus_random_init_ci'][1]:+.1f}], minus RCF {r['minus_rcf']:+.1f} "
                  f"[{r['minus_rcf_ci'][0]:+.1f}, {r['minus_rcf_ci'][1]:+.1f}]")
        if r.get("at_floor"):
            print(f"baseline at the floor: {r['method']} ({r['task']}, {r['input']}) "
                  f"{r['score']:.1f}, its interval reaches the floor")
    ssl.save_evaluation(cfg, rows, s.evaluation_settings)
    return Evaluation(rows, p.inputs)


def paper_table() -> pd.DataFrame:
    """Seed 003's own numbers, for reference (different data)."""
    from geofm_lib.papers import SEED003_RESULTS

    return pd.DataFrame([{"dataset": ds, "method": m,
                          **{c: ("-" if v is None else v) for c, v in zip(ssl.INPUTS, vals)}}
                         for ds, t in SEED003_RESULTS.items() for m, vals in t.items()])


# --- the methods beside -----------------------------------------------------------------------


@dataclass
class Beside:
    """Another method pretrained on the same places: its pretraining history, its check, its
    reconstructions (MAE) and its record entry (with its probe scores where scored)."""

    label: str
    cfg: Config
    result: object
    entry: dict
    reconstructions: dict | None = None

    @property
    def history(self) -> list[dict]:
        return self.result.history


def beside(cfg: Config, s: Settings, p: Places) -> dict[str, Beside]:
    """Each method of ``also_methods`` pretrained on the same places (or loaded), checked for
    collapse, and (where the places can be scored) its frozen encoder probed as seed 003 does,
    against the random init of its own architecture."""
    out = {}
    for key, cfg_m in s.also.items():
        name = ssl.method_label(cfg_m.ssl_method, cfg_m.ssl_backbone, cfg.ssl_backbone)
        res = ssl.pretrain(cfg_m, log_every=LOG_EVERY)
        check = collapse_check(p, res.encoder_path, name)
        entry = {"label": name, "ssl_backbone": cfg_m.ssl_backbone,
                 "ssl_epochs": cfg_m.ssl_epochs, "embedding_std": round(check["embedding_std"], 5),
                 "collapsed": bool(check["collapsed"]), "ssl_hash": cfg_m.ssl_hash,
                 "final_loss": round(res.history[-1]["loss"], 4),
                 "encoder": paths.shown(res.encoder_path)}
        shown = None
        if cfg_m.ssl_method == "mae":  # the reconstruction loss under fixed masks, first and last
            rec = [h["reconstruction_loss"] for h in res.history if "reconstruction_loss" in h]
            entry["reconstruction_loss"] = [round(rec[0], 4), round(rec[-1], 4)]
            print(f"{name} reconstruction loss (fixed masks) {rec[0]:.3f} -> {rec[-1]:.3f}")
            shown = mae_views(cfg_m, p, res.encoder_path)
        if not p.unscored:
            rows = ssl.evaluate(cfg_m, res.encoder_path, finetune_epochs=s.finetune_epochs,
                                n_boot=s.n_boot, finetune=False, scratch=False)
            ssl.save_evaluation(cfg_m, rows, s.evaluation_settings)
            entry.update(ssl.headline_scores(rows), table=rows)
            print(f"{name} linear probe F2 {p.inputs[-1]} {entry['linear_probe_f2_s1s2']:.1f} "
                  f"{entry['linear_probe_f2_s1s2_ci']}; random init "
                  f"({ssl.backbone_label(cfg_m.ssl_backbone)}) "
                  f"{entry['random_init_f2_s1s2']:.1f}; minus random init "
                  f"{entry['ssl_minus_random_init_f2_s1s2']:+.1f} "
                  f"{entry['ssl_minus_random_init_f2_s1s2_ci']} (paired)")
        out[key] = Beside(name, cfg_m, res, entry, shown)
    return out


# --- seed 001's protocols ---------------------------------------------------------------------


@dataclass
class Protocols:
    """Seed 001's protocol rows (empty: not run, ``why``) and what they were scored on."""

    rows: list[dict] = field(default_factory=list)
    why: str = ""
    steps: int | None = None
    recipe: str | None = None
    data_hash: str | None = None

    def table(self) -> pd.DataFrame | str:
        return ssl.protocol_table(self.rows) if self.rows else self.why

    def fields(self) -> dict:
        """The record's protocol fields (none when not run)."""
        if not self.rows:
            return {}
        return {"protocols": self.rows, "protocol_steps": self.steps,
                "protocol_recipe": self.recipe, "protocol_data": self.data_hash}


def protocols(cfg: Config, s: Settings, p: Places, encoder_path: Path,
              also: dict[str, Beside]) -> Protocols:
    """Seed 001's frozen, adapter and full fine-tuning protocols over the labelled-set sizes,
    for the run's encoder and those beside it, on this run's places or on ``protocol_data``
    (another data set's labelled places with the same bands, its shards built here when
    missing)."""
    if not s.protocols or not (s.protocol_data or not p.unscored):
        why = ("not run: " + (
            f"the data cannot be scored ({p.unscored}); give protocol_data, labelled places "
            f"with the same bands" if p.unscored else
            "protocols=[] (they need ssl_adapter=spectral: the adapter protocol fine-tunes the "
            "spectral stem)"))
        return Protocols(why=why)
    cfg_eval = cfg
    if s.protocol_data:
        from geofm_lib.data.build import build_shards

        cfg_eval = load_config(cfg.preset, s.protocol_data, **{k: getattr(cfg, k) for k in (
            "work_dir", "seed", "image_px", "device", "precision", "protocol_sizes",
            "protocol_steps", "protocol_recipe")})
        build_shards(cfg_eval)
        print(f"scored on {s.protocol_data} ({', '.join(cfg_eval.dataset_keys)}, data "
              f"{cfg_eval.data_hash}), pretrained on {', '.join(cfg.dataset_keys)}")
    encoders = {ssl.METHOD_LABELS[cfg.ssl_method]: encoder_path}
    encoders.update({b.label: b.result.encoder_path for b in also.values()})
    rows = ssl.protocol_rows(cfg_eval, encoders, cfg.protocol_sizes, s.protocols,
                             steps=cfg.protocol_steps, n_boot=s.n_boot,
                             recipe=cfg.protocol_recipe, seeds=s.seeds)
    return Protocols(rows, steps=cfg.protocol_steps, recipe=cfg.protocol_recipe,
                     data_hash=cfg_eval.data_hash)


# --- the record -------------------------------------------------------------------------------


def record(cfg: Config, p: Places, result, check: dict, ev: Evaluation,
           also: dict[str, Beside], prot: Protocols) -> records.SslRecord:
    """The stage's record: the run, its check, seed 003's headline (or why it is not
    evaluable) and table, the methods beside it and seed 001's protocols."""
    scores = (ssl.headline_scores(ev.rows) if ev.rows
              else {"evaluation": "not evaluable", "reason": ev.unscored})
    return records.SslRecord.of({
        "ssl_method": cfg.ssl_method, "ssl_mode": cfg.ssl_mode, "ssl_patches": cfg.ssl_patches,
        "places_train": len(p.train), "places_val": len(p.val), "places_pretrained": result.pairs,
        "embedding_std": round(check["embedding_std"], 5), "collapsed": bool(check["collapsed"]),
        "final_loss": round(result.history[-1]["loss"], 4) if result.history else None,
        **scores, "table": ev.rows, **prot.fields(),
        "also": {k: b.entry for k, b in also.items()}, "recipes": recipes_used(ev, prot)})


def recipes_used(ev: Evaluation, prot: Protocols) -> dict[str, dict]:
    """The fitting recipes of the stage's fits, with their values: seed 003's fine-tuned and
    from-scratch rows (``new-head``), seed 001's protocols (``protocol_recipe``)."""
    names = [ssl_evaluation.FIT_RECIPE] if ev.rows else []
    if prot.rows and prot.recipe:
        names.append(prot.recipe)
    return {n: fitting.recipe(n).values() for n in dict.fromkeys(names)}


def runs_on_this_data(cfg: Config, s: Settings, p: Places) -> pd.DataFrame | str:
    """Every evaluated SSL run on this data (other methods, modes, epochs), side by side."""
    runs = pd.DataFrame(ssl.compare_runs(cfg, s.evaluation_settings))
    if not len(runs):
        return "no evaluated SSL runs on this data"
    cell = runs.apply(lambda r: f"{r.score:.1f} [{r.ci[0]:.1f}-{r.ci[1]:.1f}]", axis=1)
    print(f"{runs.ssl_hash.nunique()} SSL run(s) on data {cfg.data_hash}")
    return (runs.assign(score_ci=cell)
            .pivot_table(index=["task", "run"], columns="input", values="score_ci",
                         aggfunc="first", sort=False)[p.inputs])
