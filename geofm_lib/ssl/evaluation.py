"""Evaluation of a pretrained encoder on a small labelled set (seed 003): frozen linear probe
and fine-tuning beside random init, with bootstrap intervals.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geofm_lib.config import SSL_MODES, Config
from geofm_lib.errors import DataError, PairError
from geofm_lib.evaluation import floors
from geofm_lib.evaluation.bootstrap import bootstrap_stats
from geofm_lib.evaluation.finetune import fit_head, with_estimated_statistics
from geofm_lib.evaluation.probes import (
    blas_threads_for,
    bootstrap_metrics,
    fit_single_label_probe,
    label_matrix,
    multilabel_metrics,
    paired_f2_difference,
    run_probe,
)
from geofm_lib.io import atomic_write_json
from geofm_lib.models.devices import autocast, channels_last, resolve_device, resolve_precision
from geofm_lib.paths import ssl_dir
from geofm_lib.progress import get_logger, progress
from geofm_lib.ssl.model import METHOD_LABELS, make_backbone, parse_method
from geofm_lib.ssl.pairs import Pairs, load_pairs
from geofm_lib.ssl.pretraining import read_encoder

log = get_logger()


# --- evaluation -----------------------------------------------------------------------------

def features_of(net, x: np.ndarray, device: str = "cpu", batch: int = 256,
                precision: str = "fp32") -> np.ndarray:
    """Pooled backbone features of images, without gradients, in eval mode, under the autocast
    of ``precision`` (a resolved one); fp32 out. The net is moved to ``device`` first (random
    init is made on the CPU; on a GPU it would meet CUDA inputs with CPU weights)."""
    net = channels_last(net.to(device)).eval()
    out = []
    with torch.no_grad(), autocast(device, precision):
        for i in range(0, len(x), batch):
            out.append(net(torch.from_numpy(x[i:i + batch]).to(device)).float().cpu().numpy())
    return np.concatenate(out)


def labelled_subset(pairs: Pairs, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of ``n`` labelled places (all of them if fewer)."""
    return np.sort(np.random.default_rng([seed, 1024]).permutation(len(pairs))[:n])


def accuracy_ci(y_true: np.ndarray, y_pred: np.ndarray, n_boot: int, seed: int):
    """Accuracy (%) and its 95 % percentile-bootstrap interval over test places."""
    hit = (np.asarray(y_true) == np.asarray(y_pred)).astype(float)
    ci = bootstrap_stats(lambda idx: {"accuracy": hit[idx].mean()}, len(hit), n_boot, seed,
                         ("accuracy",))["accuracy"]
    return 100 * float(hit.mean()), [100 * v for v in ci]


def single_label_probe(x_tr, y_tr, x_te, seed: int = 0):
    """Multinomial logistic regression on standardised frozen features, ``C`` chosen by
    accuracy on a held-out 20 % of the training rows, then refitted on all of them
    (``evaluation.probes.fit_single_label_probe``); its predictions for ``x_te``."""
    model = fit_single_label_probe(x_tr, y_tr, seed)
    with blas_threads_for(x_tr):
        return model.predict(x_te)


@dataclass
class SingleLabels:
    """The single-label task of an evaluation: the labelled places with a dominant class, the
    classes they cover, and the test places' class indices (-1: a class absent from the
    labelled set, which no classifier trained on it can predict; it counts as an error)."""

    train_idx: np.ndarray   # into the labelled subset
    classes: list[str]
    y_train: np.ndarray
    y_test: np.ndarray


def single_labels(train: Pairs, idx: np.ndarray, test: Pairs) -> SingleLabels | None:
    """None when the data has no dominant classes (BigEarthNet has no land-cover map)."""
    if not train.dominant or not test.dominant:
        return None
    keep = np.array([k for k, i in enumerate(idx) if train.dominant[i]], int)
    classes = sorted({train.dominant[idx[k]] for k in keep},
                     key=lambda c: train.vocabulary.index(c) if c in train.vocabulary else 0)
    if len(classes) < 2 or not any(test.dominant):
        return None
    pos = {c: j for j, c in enumerate(classes)}
    return SingleLabels(keep, classes, np.array([pos[train.dominant[idx[k]]] for k in keep]),
                        np.array([pos.get(d, -1) if d else -2 for d in test.dominant]))


def not_evaluable(train: Pairs, test: Pairs, cfg: Config) -> str | None:
    """Why the places cannot be scored (seed 003's protocol needs labels), or None. An
    unlabelled dataset (SSL4EO-S12) is pretrained on and shown (curves, collapse check,
    embeddings); it is never given an F2 of 0."""
    if not train.vocabulary:
        return ("the data has no labels (an unlabelled dataset such as SSL4EO-S12), so there "
                "is no multi-label task to score; evaluate the encoder on a labelled dataset "
                "(e.g. BigEarthNet) with the same bands")
    idx = labelled_subset(train, cfg.labelled_samples, cfg.seed)
    if not any(train.labels[i] for i in idx):
        return f"none of the {len(idx)} places of the labelled training set carries a label"
    if not any(test.labels):
        return f"none of the {len(test)} validation places carries a label"
    return None


def headline_scores(rows: list[dict]) -> dict:
    """The multi-label linear-probe F2 of the SSL encoder and of its baselines on S1+S2 (on
    the optical images alone for single-sensor data: ``headline_input`` says which), with their
    intervals: random init (statistics estimated), RCF and the label-prior floor, whether a
    baseline is at the floor, and the paired differences to random init and to the strongest
    fair baseline (the number a report leads with). The keys keep their ``_s1s2`` names for
    both inputs, so that reports read one set of keys."""
    multi = [r for r in rows if r["task"] == "multi-label"]
    probe = {r["input"]: r for r in multi
             if "linear probe" in r["method"] and r["method"] not in BASELINE_METHODS}
    base = {r["input"]: r for r in multi if r["method"] == "random init, linear probe"}
    which = "s1/s2" if "s1/s2" in probe else "s2"
    rnd = lambda v: [round(x, 2) for x in v]  # noqa: E731
    out = {"headline_input": which,
           "linear_probe_f2_s1s2": round(probe[which]["score"], 2),
           "linear_probe_f2_s1s2_ci": rnd(probe[which]["ci"]),
           "random_init_f2_s1s2": round(base[which]["score"], 2),
           "random_init_f2_s1s2_ci": rnd(base[which]["ci"])}
    if "minus_random_init" in probe[which]:  # the paired difference on the same places
        out["ssl_minus_random_init_f2_s1s2"] = round(probe[which]["minus_random_init"], 2)
        out["ssl_minus_random_init_f2_s1s2_ci"] = rnd(probe[which]["minus_random_init_ci"])
    rcf = [r for r in multi if r["method"] == "RCF, linear probe" and r["input"] == which]
    prior = [r for r in multi if r["method"] == "label prior (floor)" and r["input"] == which]
    if not (rcf and prior and "minus_rcf" in probe[which]):
        return out  # an evaluation of before the floors (BASELINES_VERSION 2)
    out.update({"rcf_f2_s1s2": round(rcf[0]["score"], 2), "rcf_f2_s1s2_ci": rnd(rcf[0]["ci"]),
                "label_prior_f2_s1s2": round(prior[0]["score"], 2),
                "label_prior_f2_s1s2_ci": rnd(prior[0]["ci"]),
                "random_init_at_floor": bool(base[which].get("at_floor")),
                "rcf_at_floor": bool(rcf[0].get("at_floor"))})
    name = floors.strongest({"random init": base[which]["score"], "RCF": rcf[0]["score"]})
    key = "minus_random_init" if name == "random init" else "minus_rcf"
    out["strongest_baseline"] = name
    out["ssl_minus_strongest_f2_s1s2"] = round(probe[which][key], 2)
    out["ssl_minus_strongest_f2_s1s2_ci"] = rnd(probe[which][f"{key}_ci"])
    return out


FIT_RECIPE = "new-head"  # seed 003's fine-tuned and from-scratch fits (evaluation.fitting)
BASELINES_VERSION = 4  # bump when the baseline recipe changes: older results are not reused
# (2: BatchNorm statistics re-estimated after fine-tuning, evaluation.finetune; 3: random
# init's statistics estimated on the input's training images, the RCF baseline and the floors;
# 4: RCF's whitening by a symmetric eigendecomposition, floors._symmetric_rcf)

# the rows that do not depend on the pretraining (shown once when runs are compared)
BASELINE_METHODS = ("label prior (floor)", "majority class (floor)", "random init, linear probe",
                    "RCF, linear probe", "supervised from scratch")


def _pack(pred: np.ndarray) -> dict:
    return {"shape": list(pred.shape),
            "bits": base64.b64encode(np.packbits(pred.astype(bool))).decode()}


def _unpack(packed: dict, shape) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(packed["bits"]), np.uint8))
    return bits[:int(np.prod(shape))].reshape(shape).astype(bool)


class _Baselines:
    """The rows of :func:`evaluate` that do not depend on the pretrained encoder (random init
    with a linear probe, the supervised baseline from scratch), kept under
    ``<checkpoints>/ssl-baselines/<key>.json`` so that evaluating another pair mode or another
    pretraining of the same architecture on the same labelled set reuses them. The key holds
    everything they depend on: data, labelled places, bands, backbone, adapter, seed,
    fine-tuning epochs, bootstrap draws, device, precision and this recipe's version."""

    def __init__(self, cfg: Config, state: dict, idx: np.ndarray, finetune_epochs: int,
                 n_boot: int, device: str, precision: str):
        spec = {"version": BASELINES_VERSION, "data": cfg.data_hash,
                "labelled": hashlib.sha256(np.asarray(idx, np.int64).tobytes()).hexdigest(),
                "bands": state["bands"], "backbone": state["backbone"],
                "adapter": state["adapter"], "seed": cfg.seed,
                "finetune_epochs": finetune_epochs, "n_boot": n_boot,
                "device": torch.device(device).type, "precision": precision}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        self.path = cfg.path("checkpoints") / "ssl-baselines" / f"{key}.json"
        self.spec = spec
        self.done = json.loads(self.path.read_text())["rows"] if self.path.is_file() else {}
        self.reused = 0

    def has(self, which: str, method: str) -> bool:
        return all(k in self.done for k in (f"{which}|{method}|multi-label",
                                             f"{which}|{method}|single-label"))

    def get(self, which: str, method: str, task: str, compute) -> dict:
        key = f"{which}|{method}|{task}"
        if key in self.done:
            self.reused += 1
            return self.done[key]
        self.done[key] = json.loads(json.dumps(compute(), default=float))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"spec": self.spec, "rows": self.done})
        return self.done[key]


def evaluate(cfg: Config, encoder_path: Path, finetune_epochs: int = 5, n_boot: int = 300,
             device: str | None = None, show_progress: bool = True,
             tasks: tuple[str, ...] = ("multi-label", "single-label"),
             finetune: bool = True, scratch: bool = True) -> list[dict]:
    """Seed 003's table: rows (random init + linear probe, supervised from scratch, the SSL
    encoder with a linear probe and fine-tuned) x inputs (s1, s2, s1/s2) x tasks, on the
    validation places (never seen in pretraining or fitting) with ``labelled_samples``
    training places as the labelled data. Multi-label: F2 micro (threshold 0.5).
    Single-label (the dominant land-cover class, where the data has one): accuracy. Every
    score has a bootstrap 95 % interval over test places. Rows: ``task, metric, method,
    input, score, ci, n_train, n_test``. Fits and features run on ``device`` (None:
    ``cfg.device``) at ``cfg.precision``. ``finetune=False`` leaves out the fine-tuned SSL
    encoder's rows (the frozen encoder's probe and the baselines stay); ``scratch=False`` the
    supervised-from-scratch baseline's (the frozen-encoder protocol alone: the SSL encoder's
    probe and random init's)."""
    train, test = load_pairs(cfg, "train"), load_pairs(cfg, "val")
    why = not_evaluable(train, test, cfg)
    if why is not None:
        raise DataError(f"not evaluable: {why}")
    device = resolve_device(device or cfg.device)
    precision = resolve_precision(cfg.precision, device)
    ssl_net, state = read_encoder(encoder_path, device)
    if train.bands != state["bands"]:
        raise PairError(f"the encoder takes {state['bands']}, this data has {train.bands}")
    idx = labelled_subset(train, cfg.labelled_samples, cfg.seed)
    vocab = train.vocabulary
    y_tr = label_matrix([train.labels[i] for i in idx], vocab).astype(np.float32)
    y_te = label_matrix(test.labels, vocab).astype(bool)
    single = single_labels(train, idx, test) if "single-label" in tasks else None
    if single is not None:
        has = single.y_test > -2  # test places with a dominant class
    elif "single-label" in tasks:
        log.info("no dominant land-cover classes in this data: single-label rows left out")
    arch = (state["backbone"], state["bands"], state["adapter"])
    init = make_backbone(*arch, cfg.seed + 1, state.get("image_px"))
    ssl_name = f"{METHOD_LABELS[state.get('method', 'moco')]} {state['mode']}"
    rows = []
    n_tasks = ("multi-label" in tasks) + (single is not None)
    bar = progress(total=len(train.input_names) * (4 + scratch + finetune) * n_tasks,
                   desc="evaluation", unit="fit", disable=not show_progress)

    def row(task, method, which, score, ci, n_train, n_test, **extra):
        rows.append({"task": task, "metric": "F2 micro" if task == "multi-label" else
                     "accuracy", "method": method, "input": which, "score": score,
                     "ci": [float(c) for c in ci], "n_train": n_train, "n_test": n_test,
                     **extra})
        bar.update(1)

    memo = _Baselines(cfg, state, idx, finetune_epochs, n_boot, device, precision)

    def scratch_net():
        return make_backbone(*arch, cfg.seed + 2, state.get("image_px"))

    def one_input(which):  # the eight rows of one input (s1, s2 or s1/s2)
        x_tr, x_te = train.inputs(idx, which), test.inputs(np.arange(len(test)), which)
        nets = {ssl_name: ssl_net}
        if not memo.has(which, "random init"):  # its features only feed its probes
            # the fair random init: BatchNorm statistics estimated on this input's training
            # images (no labels), as the pretrained encoder's come from pretraining on them
            nets = {"random init": with_estimated_statistics(init, x_tr, device, precision),
                    **nets}
        if not memo.has(which, "RCF"):  # random convolutional features, the same probe
            rcf = floors.rcf_model(x_tr, cfg.seed)
            nets = {"RCF": rcf, **nets}
        feats = {name: ((floors.rcf_features(net, x_tr), floors.rcf_features(net, x_te))
                        if name == "RCF" else
                        (features_of(net, x_tr, device, precision=precision),
                         features_of(net, x_te, device, precision=precision)))
                 for name, net in nets.items()}
        if "multi-label" in tasks:
            def probe_of(name):
                def compute():
                    i_tr, i_te = feats[name]
                    r = run_probe("linear", i_tr, y_tr.astype(bool), i_te, y_te,
                                  seed=cfg.seed, n_boot=n_boot)
                    return {"score": r.test["f2_micro"], "ci": r.ci["f2_micro"],
                            "precision_micro": r.test["precision_micro"],
                            "hamming_loss": r.test["hamming_loss"], "pred": _pack(r.pred)}
                return compute

            prior = floors.label_prior(y_tr, y_te, n_boot, cfg.seed)
            row("multi-label", "label prior (floor)", which, prior.scores["f2_micro"],
                prior.ci["f2_micro"], len(idx), len(test), floor=True, what=prior.what)
            preds = {}
            for name, label in (("random init", "random init, linear probe"),
                                ("RCF", "RCF, linear probe")):
                base = memo.get(which, name, "multi-label", probe_of(name))
                preds[name] = _unpack(base["pred"], y_te.shape)
                row("multi-label", label, which, base["score"], base["ci"], len(idx),
                    len(test), precision_micro=base["precision_micro"],
                    hamming_loss=base["hamming_loss"],
                    at_floor=floors.at_floor(base["ci"], prior.scores["f2_micro"]))
            f_tr, f_te = feats[ssl_name]
            r = run_probe("linear", f_tr, y_tr.astype(bool), f_te, y_te, seed=cfg.seed,
                          n_boot=n_boot)
            # paired with each baseline on the same places
            d, dci = paired_f2_difference(y_te, r.pred, preds["random init"], n_boot, cfg.seed)
            dr, drci = paired_f2_difference(y_te, r.pred, preds["RCF"], n_boot, cfg.seed)
            row("multi-label", f"{ssl_name}, linear probe", which, r.test["f2_micro"],
                r.ci["f2_micro"], len(idx), len(test),
                precision_micro=r.test["precision_micro"], hamming_loss=r.test["hamming_loss"],
                minus_random_init=d, minus_random_init_ci=dci, minus_rcf=dr, minus_rcf_ci=drci)

            def tuned(start):  # the same recipe for both: only the starting weights differ
                net = scratch_net() if start is None else copy.deepcopy(start)
                pred = fit_head(net.to(device), x_tr, y_tr, finetune_epochs, 1e-3,
                                cfg.seed, device, precision=precision,
                                recipe=FIT_RECIPE).predict(x_te)
                m = multilabel_metrics(y_te, pred)
                ci = bootstrap_metrics(y_te, pred, n_boot=n_boot, seed=cfg.seed)
                return {"score": m["f2_micro"], "ci": ci["f2_micro"],
                        "precision_micro": m["precision_micro"],
                        "hamming_loss": m["hamming_loss"]}

            fits = [("supervised from scratch", lambda: memo.get(
                which, "supervised from scratch", "multi-label", lambda: tuned(None)))
                    ] if scratch else []
            if finetune:
                fits.append((f"{ssl_name}, fine-tuned", lambda: tuned(ssl_net)))
            for name, fit in fits:
                res = fit()
                row("multi-label", name, which, res["score"], res["ci"], len(idx), len(test),
                    precision_micro=res["precision_micro"], hamming_loss=res["hamming_loss"])
        if single is not None:
            k, yt = single.train_idx, single.y_test[has]

            def probe_single(name):
                f_tr, f_te = feats[name]
                pred = single_label_probe(f_tr[k], single.y_train, f_te[has], cfg.seed)
                score, ci = accuracy_ci(yt, pred, n_boot, cfg.seed)
                return {"score": score, "ci": ci}

            def tuned_single(start):
                net = scratch_net() if start is None else copy.deepcopy(start)
                pred = fit_head(net.to(device), x_tr[k], single.y_train, finetune_epochs,
                                1e-3, cfg.seed, device, single=True,
                                precision=precision, recipe=FIT_RECIPE).predict(x_te[has])
                score, ci = accuracy_ci(yt, pred, n_boot, cfg.seed)
                return {"score": score, "ci": ci}

            floor = floors.majority_class_labels(single.y_train, yt, n_boot, cfg.seed)
            row("single-label", "majority class (floor)", which, floor.scores["accuracy"],
                floor.ci["accuracy"], len(k), int(has.sum()), floor=True, what=floor.what)
            fits = [("random init, linear probe", lambda: memo.get(
                        which, "random init", "single-label",
                        lambda: probe_single("random init"))),
                    ("RCF, linear probe", lambda: memo.get(
                        which, "RCF", "single-label", lambda: probe_single("RCF"))),
                    (f"{ssl_name}, linear probe", lambda: probe_single(ssl_name)),
                    ("supervised from scratch", lambda: memo.get(
                        which, "supervised from scratch", "single-label",
                        lambda: tuned_single(None))),
                    (f"{ssl_name}, fine-tuned", lambda: tuned_single(ssl_net))]
            for name, fit in fits:
                if ((name == f"{ssl_name}, fine-tuned" and not finetune)
                        or (name == "supervised from scratch" and not scratch)):
                    continue
                res = fit()
                extra = ({"at_floor": floors.at_floor(res["ci"], floor.scores["accuracy"])}
                         if name in BASELINE_METHODS else {})
                row("single-label", name, which, res["score"], res["ci"], len(k),
                    int(has.sum()), **extra)

    for which in train.input_names:  # s1, s2, s1/s2; the optical images alone without SAR
        one_input(which)
    if memo.reused:
        log.info("baselines (random init, supervised from scratch) of %d fit(s) taken from "
                 "%s: they do not depend on the pretrained encoder", memo.reused,
                 memo.path.name)
    bar.close()
    return rows


# --- comparing pair modes -------------------------------------------------------------------

# seed 003's names of the pair modes, in the order its tables print them
MODE_NAMES = {m: SSL_MODES[m][0] for m in ("sensor", "fusion_all", "fusion_partial", "augment")}


def save_evaluation(cfg: Config, rows: list[dict], settings: dict) -> Path:
    """``evaluation.json`` beside the encoder: the rows of :func:`evaluate` and what they were
    run with, so runs of other pair modes on the same data can be put side by side."""
    path = ssl_dir(cfg) / "evaluation.json"
    atomic_write_json(path, {"ssl_hash": cfg.ssl_hash, "data_hash": cfg.data_hash,
                             "ssl_method": cfg.ssl_method, "ssl_mode": cfg.ssl_mode,
                             "ssl_patches": cfg.ssl_patches,
                             "ssl": {k: getattr(cfg, k) for k in
                                     ("ssl_backbone", "ssl_adapter", "ssl_augment",
                                      "ssl_epochs", "ssl_batch_size", "moco_queue")},
                             "labelled_samples": cfg.labelled_samples, "settings": settings,
                             "baselines_version": BASELINES_VERSION, "rows": rows})
    return path


def compare_runs(cfg: Config, settings: dict) -> list[dict]:
    """The evaluations of every finished SSL run on this data with the same labelled set,
    evaluation settings, backbone and input adapter (methods, pair modes, patch subsets,
    epochs, ...), as rows shaped like seed 003's table: the supervised baseline once, then each
    run's linear-probe and fine-tuned rows (MoCo, DINO, MAE; each by pair mode)."""
    found = []
    settings = json.loads(json.dumps(settings))  # as stored
    for path in sorted(cfg.path("checkpoints").glob("*/evaluation.json")):
        rec = json.loads(path.read_text())
        # the baselines (random init, from scratch) are the architecture's: same backbone and
        # input adapter, or the rows would sit beside another network's baselines
        # evaluations of an older baseline recipe sit beside another random init: left out
        # (07 re-evaluates the runs it uses)
        if (rec.get("data_hash") == cfg.data_hash and rec.get("settings") == settings
                and rec.get("baselines_version", 2) == BASELINES_VERSION
                and rec.get("labelled_samples") == cfg.labelled_samples
                and rec["ssl"]["ssl_backbone"] == cfg.ssl_backbone
                and rec["ssl"]["ssl_adapter"] == cfg.ssl_adapter):
            found.append(rec)
    order = {m: i for i, m in enumerate(MODE_NAMES)}
    methods = {m: i for i, m in enumerate(METHOD_LABELS)}
    method = lambda r: r.get("ssl_method", "moco")  # noqa: E731 (older records: MoCo)
    found.sort(key=lambda r: (methods.get(method(r), 9), order.get(r["ssl_mode"], 9),
                              r["ssl_patches"], r["ssl_hash"]))
    base_rows, out = [], []
    for rec in found:
        label = (f"{METHOD_LABELS.get(method(rec), method(rec))} "
                 f"{MODE_NAMES.get(rec['ssl_mode'], rec['ssl_mode'])}")
        if rec["ssl_patches"] != "all":
            label += ", non-overlapping"
        others = [r for r in found if r["ssl_mode"] == rec["ssl_mode"] and method(r) ==
                  method(rec) and r["ssl_patches"] == rec["ssl_patches"]]
        if len(others) > 1:  # the same mode with other SSL settings: say which
            label += f" [{rec['ssl_hash']}]"
        for r in rec["rows"]:
            # the baselines do not depend on the pretraining: shown once, from the first run
            base = ({"supervised from scratch": "supervised from scratch (labelled set only)"
                     }.get(r["method"], r["method"]) if r["method"] in BASELINE_METHODS
                    else None)
            if base:
                if rec is found[0]:
                    base_rows.append({**r, "run": base, "ssl_hash": None})
                continue
            how = "linear probe" if r["method"].endswith("linear probe") else "fine-tuned"
            out.append({**r, "run": f"{label}, {how}", "ssl_hash": rec["ssl_hash"]})
    return base_rows + out


def finished_encoders(cfg: Config, methods) -> dict[str, Path]:
    """The ``encoder.pt`` of a finished, evaluated run of each method in ``methods`` (``moco``,
    or ``mae:vit_tiny_patch16`` for a backbone other than ``cfg.ssl_backbone``) on this data
    with this input adapter and pair mode (the longest-trained where there are several), as
    notebook 07 leaves them, keyed as given; a method without one is an error naming the
    notebook run that makes it."""
    wanted = {spec: parse_method(spec, cfg.ssl_backbone) for spec in methods}
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(cfg.path("checkpoints").glob("*/evaluation.json")):
        rec = json.loads(path.read_text())
        enc = path.parent / "encoder.pt"
        have = (rec.get("ssl_method", "moco"), rec["ssl"]["ssl_backbone"])
        if not (enc.is_file() and rec.get("data_hash") == cfg.data_hash
                and rec["ssl"]["ssl_adapter"] == cfg.ssl_adapter
                and rec.get("ssl_mode") == cfg.ssl_mode):
            continue
        epochs = int(rec["ssl"].get("ssl_epochs", 0))
        for spec, want in wanted.items():
            if want == have and (spec not in found or epochs > found[spec][0]):
                found[spec] = (epochs, enc)
    missing = [m for m in methods if m not in found]
    if missing:
        m, b = wanted[missing[0]]
        raise DataError(
            f"no finished {', '.join(missing)} run on data {cfg.data_hash} with "
            f"{cfg.ssl_adapter}, {cfg.ssl_mode} pairs: run notebook 07 first with the same "
            f"parameters and ssl_method={m} ssl_backbone={b} (or also_methods=[{missing[0]}])")
    return {m: found[m][1] for m in methods}
