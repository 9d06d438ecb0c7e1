"""Seed 002's protocol (notebook 06): frozen features of several encoders, probed per dataset,
with the label prior as the floor under every probe, a label-efficiency curve and a fine-tuning
comparison on one dataset. One function per step:

1. :func:`settings` — the notebook's own parameters, checked;
2. :func:`features` — every encoder's features of the training and test splits (cached);
3. :func:`probe` — every probe of every (encoder, dataset) beside each dataset's label prior;
4. :func:`label_efficiency` — a linear probe on seeded shares of each training split;
5. :func:`fine_tune` — each trainable encoder fine-tuned on the focus dataset;
6. :func:`record` — the typed record (:class:`~geofm_lib.records.ProbesRecord`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geofm_lib import records, training
from geofm_lib.config import Config
from geofm_lib.data import shards
from geofm_lib.data.build import ensure_shards
from geofm_lib.encoders import check_encoder_name, embed, finetune, kind_of
from geofm_lib.errors import ConfigError
from geofm_lib.evaluation import (
    PROBES,
    fitting,
    floors,
    label_matrix,
    mean_over_datasets,
    multilabel_metrics,
    probe_datasets,
    repeats,
    run_probes,
    umap_2d,
)
from geofm_lib.evaluation.repeats import seeds_of, spread
from geofm_lib.models import devices
from geofm_lib.studies import parameters

FOCUS = "bigearthnet_s2"  # the dataset of the per-class views and of fine-tuning, where present
EFFICIENCY_BOOT = 20  # bootstrap draws of the label-efficiency probes (their intervals unused)

PARAMETERS = {
    "encoders": (["trained", "init", "rcf"],
                 "encoders to compare: trained | init | rcf (random convolutional features) | "
                 "checkpoint:<last.pt> | open_clip:<model>:<tag> | torchgeo:<model>[:<weights>] "
                 "(e.g. torchgeo:resnet50:SENTINEL2_ALL_MOCO) | ssl:<encoder.pt of 07>"),
    "probes": (["linear", "random_forest", "mlp"], "probes"),
    "n_boot": (300, "bootstrap draws for the intervals"),
    "efficiency_fractions": ([0.05, 0.1, 0.25, 0.5, 1.0],
                             "label-efficiency curve: shares of the train split"),
    "umap_points": (3000, "points in the UMAP views"),
    "finetune_epochs": (3, "fine-tuning protocol on the focus dataset; 0 skips it"),
    "repeats": (1, "fine-tuning fits per encoder: N (seeds seed, seed+1, ...) or a list of seeds; "
                   "above one, mean ± sd across the seeds beside the first seed's interval"),
}
NAMES = tuple(PARAMETERS)


@dataclass(frozen=True)
class Settings:
    encoders: list[str]
    probes: list[str]
    n_boot: int
    efficiency_fractions: list[float]
    umap_points: int
    finetune_epochs: int
    seeds: list[int] = field(default_factory=list)  # repeats of the fine-tuning fits

    def describe(self, cfg: Config) -> str:
        return (f"run {cfg.name}: encoders {', '.join(self.encoders)}; probes "
                f"{', '.join(self.probes)}")


def settings(cfg: Config, namespace: dict) -> Settings:
    """06's parameters from the notebook's namespace, checked before any work."""
    p = parameters.read(namespace, PARAMETERS)
    encoders, probes = parameters.as_list(p["encoders"]), parameters.as_list(p["probes"])
    if not encoders:
        raise ConfigError("encoders: give at least one, e.g. -p encoders '[trained, init]'")
    for name in encoders:
        check_encoder_name(name)  # a bad name fails here, with the closest valid names
    unknown = [k for k in probes if k not in PROBES]
    if unknown:
        raise ConfigError(f"probes: {unknown} not one of {', '.join(PROBES)}")
    fractions = list(p["efficiency_fractions"])
    if not fractions or not all(isinstance(f, int | float) and not isinstance(f, bool)
                                and 0 < f <= 1 for f in fractions):
        raise ConfigError(f"efficiency_fractions: {fractions!r}; give shares in (0, 1], e.g. "
                          f"-p efficiency_fractions '[0.1, 0.5, 1.0]'")
    return Settings(encoders, probes, parameters.whole("n_boot", p["n_boot"], 1), fractions,
                    parameters.whole("umap_points", p["umap_points"], 4),
                    parameters.whole("finetune_epochs", p["finetune_epochs"], 0),
                    seeds_of(p["repeats"], cfg.seed))


# --- features ---------------------------------------------------------------------------------


@dataclass
class Features:
    """Every encoder's features of the training and test splits, the datasets with labels and
    the focus dataset (BigEarthNet S2 where present)."""

    embeddings: dict  # (encoder, split) -> evaluation.Embeddings
    manifest: object
    vocabularies: dict[str, list[str]]
    labelled: list[str]
    encoders: list[str]

    @property
    def focus(self) -> str | None:
        if FOCUS in self.labelled:
            return FOCUS
        return self.labelled[0] if self.labelled else None

    @property
    def first(self) -> str:
        """The encoder of the views (the first of ``encoders``)."""
        return self.encoders[0]

    def of(self, encoder: str, split: str, dataset: str):
        """(features, label matrix, keys) of one dataset."""
        return self.embeddings[(encoder, split)].of(dataset, self.vocabularies[dataset])

    def describe(self) -> str:
        return "\n".join(f"{name:10s} {split:5s} {e.features.shape[0]:6d} x "
                         f"{e.features.shape[1]} {'(cache)' if e.cached else '(extracted)'}"
                         for (name, split), e in self.embeddings.items())

    def summary(self) -> pd.DataFrame | str:
        """Per labelled dataset: classes, training images, classes present, labels per image."""
        rows = []
        for ds in self.labelled:
            _, y, _ = self.of(self.first, "train", ds)
            rows.append({"dataset": ds, "classes": len(self.vocabularies[ds]),
                         "train images": len(y), "classes present": int(y.any(0).sum()),
                         "labels / image": round(float(y.sum(1).mean()), 2)})
        return pd.DataFrame(rows).set_index("dataset") if rows else "no labelled datasets"

    def focus_samples(self) -> list[dict]:
        """The focus dataset's training labels as samples (``{"json": {"labels": [...]}}``), the
        input of ``plots.cooccurrence_heatmap``."""
        vocab = self.vocabularies[self.focus]
        _, y, _ = self.of(self.first, "train", self.focus)
        return [{"json": {"labels": [vocab[j] for j in np.flatnonzero(row)]}} for row in y]

    def umap(self, points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(2-D UMAP of a seeded sample of the first encoder's training features, their
        datasets)."""
        view = self.embeddings[(self.first, "train")]
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(view.keys), min(points, len(view.keys)), replace=False))
        return umap_2d(view.features[pick], seed=seed), view.datasets[pick]

    def umap_focus(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(2-D UMAP of the focus dataset's training features, its label matrix), as seed 002
        draws BigEarthNet."""
        view = self.embeddings[(self.first, "train")]
        idx = np.flatnonzero(view.datasets == self.focus)
        y = label_matrix([view.labels[i] for i in idx], self.vocabularies[self.focus])
        return umap_2d(view.features[idx], seed=seed), y


def features(cfg: Config, s: Settings) -> Features:
    """Each encoder's features of both splits (extracted once, then read from the cache)."""
    device = devices.resolve_device(cfg.device)
    if "trained" in s.encoders:  # run alone: 03's training first (its shards too), one line
        training.ensure_trained(cfg)
    manifest = shards.load_manifest(ensure_shards(cfg))
    vocabularies = {ds: manifest.vocabulary(ds) for ds in cfg.dataset_keys}
    labelled = [ds for ds in cfg.dataset_keys if vocabularies[ds]]
    emb = {(name, split): embed(cfg, name, split, device)
           for name in s.encoders for split in ("train", "val")}
    return Features(emb, manifest, vocabularies, labelled, list(s.encoders))


# --- probes -----------------------------------------------------------------------------------

_METRICS = ["F2 micro", "F2 macro", "Hamming", "P micro", "P macro"]


@dataclass
class Probes:
    """Every probe's result by (encoder, dataset) and probe, each dataset's label prior (the
    floor), and the rows as shown."""

    results: dict
    prior: dict[str, floors.Floor]
    rows: list[dict] = field(default_factory=list)

    @property
    def at_floor(self) -> list[dict]:
        return [r for r in self.rows if r["at the floor"]]

    def prior_f2_per_class(self, f: Features, ds: str) -> list[float] | None:
        """Each label's F2 under the label prior of ``ds`` (its floor, on the same test
        images), for the per-class bars."""
        if ds not in self.prior:
            return None
        y_tr = f.of(f.first, "train", ds)[1]
        y_te = f.of(f.first, "val", ds)[1]
        pred = floors.prior_predictions(y_tr, len(y_te), self.prior[ds].scores["threshold"])
        return multilabel_metrics(y_te.astype(bool), pred)["f2_per_class"]

    def table(self) -> pd.DataFrame:
        cols = ["encoder", "dataset", "probe", "param", "F2 micro", "F2 micro 95% CI",
                "at the floor", *_METRICS[1:], "train / test"]
        return pd.DataFrame(self.rows, columns=cols).set_index(
            ["dataset", "probe", "encoder"]).sort_index()

    def means_beside_paper(self) -> pd.DataFrame:
        """Each encoder's and probe's mean over the datasets, beside seed 002's DOFA rows
        (different data: the order, not the numbers)."""
        from geofm_lib.papers import SEED002_RESULTS

        table = pd.DataFrame(self.rows, columns=["encoder", "probe", *_METRICS])
        means = table[table.probe != "-"].groupby(["encoder", "probe"])[_METRICS].mean().round(
            {"F2 micro": 2, "F2 macro": 2, "Hamming": 4, "P micro": 2, "P macro": 2})
        ref = pd.DataFrame([{"encoder": f"seed 002 DOFA, {t}", "probe": k, "F2 micro": v[1],
                             "F2 macro": v[0], "Hamming": v[2], "P micro": v[4],
                             "P macro": v[3]}
                            for t, by in SEED002_RESULTS.items() for k, v in by.items()]
                           ).set_index(["encoder", "probe"])
        return pd.concat([means, ref])


def probe(cfg: Config, s: Settings, f: Features) -> Probes:
    """Every probe of every (encoder, dataset), spread over the CPU cores, and each dataset's
    label prior on the same test images; a probe whose interval reaches the prior is flagged."""
    results = probe_datasets({n: f.embeddings[(n, "train")] for n in s.encoders},
                             {n: f.embeddings[(n, "val")] for n in s.encoders}, f.labelled,
                             f.vocabularies, s.probes, cfg.seed, s.n_boot)
    prior = floors.label_prior_datasets(f.embeddings[(f.first, "train")],
                                        f.embeddings[(f.first, "val")], f.labelled,
                                        f.vocabularies, s.n_boot, cfg.seed)
    rows = [{"encoder": "label prior (floor)", "dataset": ds, "probe": "-",
             "F2 micro": round(fl.scores["f2_micro"], 1),
             "F2 micro 95% CI": f"{fl.ci['f2_micro'][0]:.1f}-{fl.ci['f2_micro'][1]:.1f}",
             "at the floor": ""} for ds, fl in prior.items()]
    for (name, ds), by_probe in results.items():
        for kind, r in by_probe.items():
            low = floors.at_floor(r.ci["f2_micro"], prior[ds].scores["f2_micro"])
            rows.append({"encoder": name, "dataset": ds, "probe": kind, "param": r.param,
                         "F2 micro": round(r.test["f2_micro"], 1),
                         "F2 micro 95% CI": f"{r.ci['f2_micro'][0]:.1f}-{r.ci['f2_micro'][1]:.1f}",
                         "at the floor": "at the floor" if low else "",
                         "F2 macro": round(r.test["f2_macro"], 1),
                         "Hamming": round(r.test["hamming_loss"], 4),
                         "P micro": round(r.test["precision_micro"], 1),
                         "P macro": round(r.test["precision_macro"], 1),
                         "train / test": f"{r.n_train} / {r.n_test}"})
    out = Probes(results, prior, rows)
    if out.at_floor:
        print("at the floor (interval reaches the label prior): " + "; ".join(
            f"{r['encoder']} {r['probe']} on {r['dataset']}" for r in out.at_floor))
    if not f.labelled:
        print("no labelled dataset in this run (e.g. only caption corpora): nothing to probe")
    return out


def label_efficiency(cfg: Config, s: Settings, f: Features, p: Probes) -> pd.DataFrame:
    """A linear probe on a seeded share of each training split (the full share is the probe
    of :func:`probe`), each encoder's mean test F2 over the datasets per share."""
    shares = [(name, frac, ds) for name in s.encoders for frac in s.efficiency_fractions
              for ds in f.labelled if not (frac == 1.0 and "linear" in s.probes)]
    jobs = []
    for name, frac, ds in shares:
        x_tr, y_tr, _ = f.of(name, "train", ds)
        x_te, y_te, _ = f.of(name, "val", ds)
        jobs.append(dict(kind="linear", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                         seed=cfg.seed, n_boot=EFFICIENCY_BOOT, fit_fraction=frac))
    f2 = {key: r.test["f2_micro"] for key, r in zip(shares, run_probes(jobs), strict=True)}

    def score(name, frac, ds):
        if (name, frac, ds) in f2:
            return f2[(name, frac, ds)]
        return p.results[(name, ds)]["linear"].test["f2_micro"]

    rows = [{"encoder": name, "fraction": frac,
             "F2 micro": float(np.mean([score(name, frac, ds) for ds in f.labelled]))
             if f.labelled else None}
            for name in s.encoders for frac in s.efficiency_fractions]
    curve = pd.DataFrame(rows, columns=["encoder", "fraction", "F2 micro"]).dropna()
    labelled = [ds for ds in f.labelled if ds in p.prior]
    if labelled:  # the floor under the curve: the label prior, averaged the same way
        curve.attrs["floor"] = float(np.mean([p.prior[ds].scores["f2_micro"]
                                              for ds in labelled]))
    return curve


@dataclass
class FineTuning:
    """Each trainable encoder fine-tuned on the focus dataset, beside its frozen linear probe
    (empty: skipped, ``why``)."""

    results: dict
    frozen: dict
    why: str = ""
    per_seed: dict = field(default_factory=dict)  # with repeats: name -> F2 micro per seed
    seeds: list[int] = field(default_factory=list)

    def table(self) -> pd.DataFrame | str:
        if not self.results:
            return self.why
        fz = self.frozen
        return pd.DataFrame({name: {
            "frozen linear F2 micro": round(fz[name].test["f2_micro"], 1) if fz else None,
            "frozen 95% CI": "{:.1f}-{:.1f}".format(*fz[name].ci["f2_micro"]) if fz else None,
            "fine-tuned F2 micro": round(r.test["f2_micro"], 1),
            "fine-tuned 95% CI": "{:.1f}-{:.1f}".format(*r.ci["f2_micro"]),
            "fine-tuned F2 macro": round(r.test["f2_macro"], 1),
            "recipe": r.recipe, "epochs": r.epochs, "seconds": r.seconds,
            **({f"fine-tuned F2 micro, {len(self.seeds)} seeds": repeats.cell(
                *spread(self.per_seed[name]))} if len(self.seeds) > 1 else {})}
            for name, r in self.results.items()}).T


def fine_tune(cfg: Config, s: Settings, f: Features, p: Probes) -> FineTuning:
    """Each trainable encoder (RCF has no weights to tune) fine-tuned end to end on the focus
    dataset (``encoders.finetune``'s recipe), beside its frozen linear probe."""
    if not f.focus or s.finetune_epochs <= 0:
        why = "fine-tuning skipped (finetune_epochs = 0 or no labelled dataset)"
        print(why)
        return FineTuning({}, {}, why)
    device = devices.resolve_device(cfg.device)
    seeds = s.seeds or [cfg.seed]
    results, per_seed = {}, {}
    for name in s.encoders:
        if not kind_of(name).trainable:
            continue
        results[name] = finetune(cfg, name, f.focus, epochs=s.finetune_epochs, device=device,
                                 seed=seeds[0], n_boot=s.n_boot)
        per_seed[name] = [results[name].test["f2_micro"]] + [
            finetune(cfg, name, f.focus, epochs=s.finetune_epochs, device=device, seed=k,
                     n_boot=2).test["f2_micro"] for k in seeds[1:]]
        if len(seeds) > 1:
            print(f"{name} fine-tuned over {len(seeds)} seeds: F2 micro "
                  f"{repeats.cell(*spread(per_seed[name]))}")
    frozen = ({name: p.results[(name, f.focus)]["linear"] for name in s.encoders}
              if "linear" in s.probes else {})
    return FineTuning(results, frozen, per_seed=per_seed, seeds=seeds)


def _over_seeds(tuned: FineTuning, name: str) -> dict:
    """A fine-tuned row's repeats: its seeds, F2 micro per seed, their mean and sd."""
    if len(tuned.seeds) < 2:
        return {}
    mean, sd = spread(tuned.per_seed[name])
    return {"seeds": tuned.seeds, "f2_micro_per_seed": [round(v, 2) for v in
                                                         tuned.per_seed[name]],
            "f2_micro_over_seeds": round(mean, 2), "f2_micro_seed_sd": round(sd, 2)}


def record(s: Settings, f: Features, p: Probes, curve: pd.DataFrame,
           tuned: FineTuning) -> records.ProbesRecord:
    """The stage's record: every probe's scores, the means over datasets, the label prior of
    each dataset and the probes at it, the label-efficiency curve and the fine-tuned rows."""
    prior = p.prior
    values = {
        "encoders": s.encoders, "probes": s.probes, "datasets": f.labelled,
        "per_dataset": {f"{name}/{ds}/{kind}": {
            "f2_micro": round(r.test["f2_micro"], 2),
            "f2_micro_ci95": [round(x, 2) for x in r.ci["f2_micro"]],
            "f2_macro": round(r.test["f2_macro"], 2),
            "hamming_loss": round(r.test["hamming_loss"], 4),
            "precision_micro": round(r.test["precision_micro"], 2),
            "precision_macro": round(r.test["precision_macro"], 2), "param": r.param}
            for (name, ds), by in p.results.items() for kind, r in by.items()},
        "mean_f2_micro": {f"{name}/{kind}": mean_over_datasets(p.results, name, kind, f.labelled)
                          for name in s.encoders for kind in s.probes},
        "label_efficiency": curve.to_dict(orient="records"),
        "label_prior_f2_micro": {ds: {"f2_micro": round(fl.scores["f2_micro"], 2),
                                      "f2_micro_ci95": [round(x, 2) for x in fl.ci["f2_micro"]],
                                      "threshold": fl.scores["threshold"]}
                                 for ds, fl in prior.items()},
        "mean_label_prior_f2_micro": round(float(np.mean(
            [fl.scores["f2_micro"] for fl in prior.values()])), 2) if prior else None,
        "at_floor": [f"{r['encoder']}/{r['dataset']}/{r['probe']}" for r in p.at_floor],
        "finetuned": {name: {"dataset": r.dataset, "epochs": r.epochs, "recipe": r.recipe,
                             "f2_micro": round(r.test["f2_micro"], 2),
                             "f2_micro_ci95": [round(x, 2) for x in r.ci["f2_micro"]],
                             "seconds": r.seconds, **_over_seeds(tuned, name)}
                      for name, r in tuned.results.items()},
        "recipes": {r.recipe: fitting.recipe(r.recipe).values() for r in tuned.results.values()}}
    if "linear" in s.probes and s.encoders:
        values["probe_f2_micro"] = mean_over_datasets(p.results, s.encoders[0], "linear",
                                                      f.labelled)
    return records.ProbesRecord.of(values)
