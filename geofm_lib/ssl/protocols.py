"""Seed 001's three evaluation protocols for pretrained spectral encoders, over several
labelled-set sizes (its label-efficiency curves), on the multi-label task (EnMAP-CORINE's F1).

* **frozen encoder**: no encoder weight changes; a linear classifier on its pooled features
  (the probe of notebook 07: logistic regression per class, ``C`` chosen on a held-out fifth of
  the labelled set);
* **adapter fine-tuning**: only the spectral stem (``models.spectral``, a few thousand
  weights) learns, with a new linear head; the rest of the encoder keeps its weights and
  BatchNorm statistics;
* **full fine-tuning**: every weight learns, with a new linear head.

Each protocol runs from each pretrained encoder and from random init of the same architecture
(its BatchNorm statistics estimated on the training images, without labels, as pretraining
estimates the encoders'), on the same labelled places (nested subsets: the 64 places are among
the 256), with the same recipe; the difference to random init is paired on the same test places
with its bootstrap interval. The fine-tuning fits run a fixed number of optimiser steps whatever
the labelled-set size (``steps``), so that small sets are not also trained less. Scores: F1
micro at threshold 0.5 on the validation places, which no fit sees.

The fine-tuning recipe (``recipe``): ``lp-ft`` (the default) starts the head as the frozen
protocol's own probe of the encoder's features (LP-FT), so that a fine-tuning row starts from
the frozen row's predictions (for the adapter protocol the same classifier on the same features,
up to bf16 rounding; full fine-tuning first estimates BatchNorm statistics on the labelled
images), and BatchNorm keeps its statistics while the fit runs. The head and the adapter
protocol's stem learn at a tenth of ``lr`` and full fine-tuning's encoder at a hundredth: the
head starts converged, and at ``lr`` AdamW's first steps (about ``lr`` per weight, whatever the
gradient) took it away from the probe (on the demo's EnMAP scenes, MoCo at 512 labels: full
fine-tuning 52.2 -> 50.1 F1 in 40 steps at ``lr``, 52.2 -> 51.4 at the tenth; read on the test
places in a diagnostic, so this choice of rates saw them). ``new-head``: a random head,
BatchNorm in training mode and one rate for everything, the recipe of notebook 07's seed 003
rows. With a random head, 40 steps left both fine-tuning protocols far below the frozen probe on
the demo's EnMAP scenes (the fits had not caught up with a head that the probe fits to
convergence).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np

from geofm_lib.config import Config
from geofm_lib.errors import ConfigError, DataError, PairError
from geofm_lib.evaluation import repeats
from geofm_lib.evaluation.finetune import fit_head, precise_batchnorm
from geofm_lib.evaluation.fitting import HEAD_RECIPES
from geofm_lib.evaluation.probes import (
    bootstrap_metrics,
    label_matrix,
    multilabel_metrics,
    paired_f2_difference,
    run_probe,
)
from geofm_lib.evaluation.repeats import spread
from geofm_lib.models.devices import resolve_device, resolve_precision
from geofm_lib.models.spectral import find_stem, parameter_count
from geofm_lib.progress import get_logger, progress
from geofm_lib.ssl.evaluation import features_of, labelled_subset, not_evaluable
from geofm_lib.ssl.model import backbone_label, make_backbone
from geofm_lib.ssl.pairs import load_pairs
from geofm_lib.ssl.pretraining import read_encoder

log = get_logger()

PROTOCOLS = {"frozen": "frozen encoder", "adapter": "fine-tuned spectral adapter",
             "full": "full fine-tuning"}
RANDOM = "random init"
RECIPES = HEAD_RECIPES


def protocol_rows(cfg: Config, encoders: dict[str, Path], sizes, protocols=tuple(PROTOCOLS),
                  steps: int = 40, batch: int = 32, lr: float = 1e-3, n_boot: int = 300,
                  device: str | None = None, show_progress: bool = True,
                  recipe: str = "lp-ft", seeds: list[int] | None = None) -> list[dict]:
    """Rows ``protocol, init, n_labelled, score (F1 micro), ci, minus_random_init (+ ci),
    trainable, n_test`` for every protocol x init (``encoders``: label -> ``encoder.pt``, and
    random init of each architecture) x labelled-set size in ``sizes`` (capped at the training
    places; repeated sizes once).

    ``seeds`` (repeats, :mod:`evaluation.repeats`; None: ``[cfg.seed]``): every fit again with
    each further seed (random init drawn anew and its statistics estimated, the head, batch
    order and augmentation seeded), on the same labelled subsets and test places. A row keeps
    the first seed's fit and interval and adds ``score_per_seed``, ``score_over_seeds`` and
    ``score_seed_sd``; its difference to random init the same per seed (pretrained minus
    random init of the same seed)."""
    if recipe not in RECIPES:
        raise ConfigError(f"protocol recipe {recipe!r}: choose from {', '.join(RECIPES)}")
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ConfigError(f"unknown protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)}")
    if not encoders:
        raise ConfigError("no pretrained encoder to evaluate: run notebook 07's pretraining "
                          "first")
    train, test = load_pairs(cfg, "train"), load_pairs(cfg, "val")
    why = not_evaluable(train, test, cfg.with_params(labelled_samples=max(sizes)))
    if why is not None:
        raise DataError(f"not evaluable: {why}")
    device = resolve_device(device or cfg.device)
    precision = resolve_precision(cfg.precision, device)
    nets, archs = {}, {}
    for label, path in encoders.items():
        net, state = read_encoder(Path(path), "cpu")
        if list(state["bands"]) != train.bands:
            raise PairError(f"{label} takes {len(state['bands'])} bands "
                            f"({state['bands'][:3]}...), this data has {len(train.bands)}; "
                            f"evaluate it on the data it was pretrained on")
        arch = (state["backbone"], tuple(state["bands"]), state["adapter"],
                state.get("image_px"))
        nets[label], archs[label] = net, arch
    if "adapter" in protocols and any(find_stem(n) is None for n in nets.values()):
        raise ConfigError("the adapter protocol fine-tunes the spectral stem, and an encoder "
                          "here has none; pretrain with ssl_adapter=spectral")
    seeds = list(seeds) if seeds else [cfg.seed]
    randoms = {}
    for arch in dict.fromkeys(archs.values()):
        name = (RANDOM if len(set(archs.values())) == 1
                else f"{RANDOM} ({backbone_label(arch[0])})")
        randoms[arch] = name
        nets[name] = make_backbone(arch[0], list(arch[1]), arch[2], seeds[0] + 1, arch[3])
    sizes = sorted({min(int(n), len(train)) for n in sizes})
    vocab = train.vocabulary
    which = "s2" if train.single_sensor else "s1/s2"
    y_te = label_matrix(test.labels, vocab).astype(bool)
    x_te = test.inputs(np.arange(len(test)), which)
    # random init's BatchNorm statistics from the training images (no labels), as the
    # pretrained encoders' come from pretraining on them: never estimated, they are mean 0 and
    # variance 1, and the frozen probe of the demo's random-init ResNet scored 41.9 F1 on such
    # features against 47.9 with estimated statistics (spectral study, 512 labels)
    x_stats = train.inputs(labelled_subset(train, max(sizes), cfg.seed), which)
    for name in randoms.values():
        precise_batchnorm(nets[name], nets[name], x_stats, "cpu", batch, "fp32")
    nets_of = {seeds[0]: nets}  # by seed: the pretrained encoders, random init drawn anew
    for k in seeds[1:]:
        nets_of[k] = dict(nets)
        for arch, name in randoms.items():
            nets_of[k][name] = make_backbone(arch[0], list(arch[1]), arch[2], k + 1, arch[3])
            precise_batchnorm(nets_of[k][name], nets_of[k][name], x_stats, "cpu", batch,
                              "fp32")
    del x_stats
    order = [*randoms.values(), *encoders]
    bar = progress(total=len(protocols) * len(order) * len(sizes) * len(seeds),
                   desc="protocols", unit="fit", disable=not show_progress)
    rows, preds, per_seed = [], {}, {}
    feats_te = {}

    def fit(protocol: str, label: str, seed: int, x_tr, y_tr, n: int):
        """(test predictions, trainable parameters, convergence curve) of one fit."""
        net = nets_of[seed][label]
        if protocol == "frozen":
            key = (label, seed if label in randoms.values() else None)
            if key not in feats_te:
                feats_te[key] = features_of(net, x_te, device, precision=precision)
            f_tr = features_of(net, x_tr, device, precision=precision)
            r = run_probe("linear", f_tr, y_tr.astype(bool), feats_te[key], y_te, seed=seed,
                          n_boot=2)
            return r.pred, 0, None
        tuned = copy.deepcopy(net)
        only = [find_stem(tuned)] if protocol == "adapter" else None
        per_epoch = max(1, math.ceil(n / batch))
        tuned_fit = fit_head(tuned.to(device), x_tr, y_tr.astype(np.float32),
                             max(1, math.ceil(steps / per_epoch)), lr, seed, device,
                             batch=batch, precision=precision, train_only=only, recipe=recipe,
                             on_epoch=lambda predict: {"f1_micro": multilabel_metrics(
                                 y_te, predict(x_te))["f1_micro"]})
        trainable = parameter_count(only[0]) if only else parameter_count(tuned)
        return tuned_fit.predict(x_te), trainable, _curve(tuned_fit.history)

    for protocol in protocols:
        for n in sizes:
            idx = labelled_subset(train, n, cfg.seed)
            x_tr = train.inputs(idx, which)
            y_tr = label_matrix([train.labels[i] for i in idx], vocab)
            for label in order:
                pred, trainable, curve = fit(protocol, label, seeds[0], x_tr, y_tr, len(idx))
                bar.update(1)
                m = multilabel_metrics(y_te, pred)
                ci = bootstrap_metrics(y_te, pred, n_boot=n_boot, seed=cfg.seed)["f1_micro"]
                row = {"protocol": PROTOCOLS[protocol], "init": label, "n_labelled": len(idx),
                       "metric": "F1 micro", "score": m["f1_micro"],
                       "ci": [float(c) for c in ci], "f2_micro": m["f2_micro"],
                       "trainable": int(trainable), "input": which, "n_test": len(test),
                       "steps": 0 if protocol == "frozen" else steps,
                       "recipe": None if protocol == "frozen" else recipe}
                if protocol != "frozen":
                    row["curve"] = curve
                key = (protocol, n, label)
                if len(seeds) > 1:
                    per_seed[key] = [m["f1_micro"]]
                    for k in seeds[1:]:
                        per_seed[key].append(multilabel_metrics(
                            y_te, fit(protocol, label, k, x_tr, y_tr, len(idx))[0])["f1_micro"])
                        bar.update(1)
                    mean, sd = spread(per_seed[key])
                    row.update(seeds=seeds, score_per_seed=per_seed[key],
                               score_over_seeds=mean, score_seed_sd=sd)
                base = randoms.get(archs.get(label))
                if base is not None and (protocol, n, base) in preds:
                    d, dci = paired_f2_difference(y_te, pred, preds[(protocol, n, base)],
                                                  n_boot, cfg.seed, metric="f1_micro")
                    row.update(minus_random_init=float(d),
                               minus_random_init_ci=[float(c) for c in dci])
                    if len(seeds) > 1:  # each seed's fit minus the same seed's random init
                        each = [a - b for a, b in zip(per_seed[key],
                                                      per_seed[(protocol, n, base)],
                                                      strict=True)]
                        mean, sd = spread(each)
                        row.update(minus_random_init_per_seed=each,
                                   minus_random_init_over_seeds=mean,
                                   minus_random_init_seed_sd=sd)
                preds[key] = pred
                rows.append(row)
    bar.close()
    return rows


def _curve(history: list[dict]) -> list[list[float]]:
    """[optimiser steps done, test F1 micro] after the head's start (LP-FT: the frozen probe)
    and after each epoch: the fit's convergence, read on the test places (nothing is chosen
    by it)."""
    out, done = [], 0
    for h in history:
        done += h.get("steps", 0)
        if "f1_micro" in h:
            out.append([done, round(float(h["f1_micro"]), 2)])
    return out


def protocol_table(rows: list[dict], n_labelled: int | None = None):
    """Seed 001's table from :func:`protocol_rows`: protocol x init, one column per encoder
    architecture's init, at ``n_labelled`` places (None: the largest set), cells "score
    [low-high]" and the paired difference to random init."""
    import pandas as pd

    df = pd.DataFrame(rows)
    n = n_labelled or int(df.n_labelled.max())
    df = df[df.n_labelled == n]

    def cell(r):
        s = f"{r.score:.1f} [{r.ci[0]:.1f}-{r.ci[1]:.1f}]"
        if isinstance(r.get("minus_random_init"), float) and not math.isnan(r.minus_random_init):
            lo, hi = r.minus_random_init_ci
            s += f"; {r.minus_random_init:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        return s

    out = df.assign(cell=df.apply(cell, axis=1))
    order = list(dict.fromkeys(df.protocol))
    table = out.pivot_table(index=["protocol", "init"], values="cell", aggfunc="first",
                            sort=False)
    table = table.reindex(sorted(table.index, key=lambda k: (order.index(k[0]),)))
    trainable = out.groupby(["protocol", "init"], sort=False).trainable.first()
    table["trainable weights"] = [f"{int(trainable[k]):,}" for k in table.index]
    if "score_seed_sd" in df:  # repeats: mean ± sd across seeds beside the first seed's fit
        seeds = len(df.seeds.iloc[0])
        by = out.set_index(["protocol", "init"])
        table[f"F1 micro over {seeds} seeds"] = [
            repeats.cell(by.score_over_seeds[k], by.score_seed_sd[k]) for k in table.index]
        if "minus_random_init_seed_sd" in df:
            table[f"minus random init over {seeds} seeds"] = [
                repeats.cell(*_defined(by.minus_random_init_over_seeds[k],
                                       by.minus_random_init_seed_sd[k]), sign=True)
                for k in table.index]
    return table.rename(columns={"cell": f"F1 micro at {n} labels [95 % CI]; minus random "
                                         f"init [paired CI]"})


def _defined(mean, sd) -> tuple:
    """(mean, sd), or (None, None) for a row without the value (random init's own row)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return None, None
    return mean, sd
