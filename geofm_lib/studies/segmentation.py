"""Seed 001's segmentation comparison (notebook 08), one function per step.

Seed 001 segments tree cover on Sentinel-2 with UNet / DeepLabV3+ decoders on ResNets pretrained
by MoCo and DINO, against the same encoders at random initialisation, over labelled-set sizes and
protocols, with two detail variants and a tree-density regression. The steps:

1. :func:`settings` — the notebook's own parameters, checked (a clear error, not an assert);
2. :func:`places` — the labelled places of 07 (targets, nested labelled subsets, test places);
3. :func:`lineup` — the encoders: random init (BatchNorm statistics estimated on the training
   images), 07's finished encoders, and ``other_encoders`` beside their own random init;
4. :func:`compare` — every encoder x decoder x protocol x labelled size, the majority-class
   floor under each size, and each pretrained encoder's paired difference to its random init;
5. :func:`detail_variants` — the boundary-weighted loss and the detail stem;
6. :func:`tree_density` — per-pixel tree cover, with the training mean as its floor;
7. :func:`record` — the typed record of the stage (:class:`~geofm_lib.records.SegmentationRecord`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geofm_lib import records, ssl, training
from geofm_lib.config import Config
from geofm_lib.data import masks as dense
from geofm_lib.encoders import dense as dense_encoders
from geofm_lib.errors import ConfigError, DataError
from geofm_lib.evaluation import floors, repeats, segmenter
from geofm_lib.evaluation import segmentation as seg_scores
from geofm_lib.evaluation.repeats import seeds_of, spread
from geofm_lib.models.devices import resolve_device, resolve_precision
from geofm_lib.studies import parameters, pretraining

TARGETS = ("trees", "land_cover")
VARIANTS = ("boundary", "detail", "both")
BATCH_SIZE = 32
SUBSET_SEED = 88  # the nested labelled subsets: the first n of one permutation seeded [seed, 88]

# the notebook's own parameters (beside the workspace's), their defaults and what they mean
PARAMETERS = {
    "target": ("trees", "trees (tree pixels vs the rest, seed 001) | land_cover (the "
                        "vocabulary's classes + background)"),
    "seg_input": ("s2", "the encoders' input: s2 | s1 | s1/s2"),
    "decoder": ("unet", "decoder of the ResNet encoders: unet | deeplabv3plus, or a list of "
                        "both; ViTs get upconv"),
    "ssl_methods": (["moco", "dino", "mae:vit_tiny_patch16"],
                    "07's runs whose encoders are compared with random init: method or "
                    "method:backbone"),
    "other_encoders": (["clip"], "more encoders, each beside its own random init: clip (03's "
                                 "image tower), checkpoint:<last.pt>, "
                                 "torchgeo:resnet18:SENTINEL2_ALL_MOCO ..."),
    "protocols": (["frozen"], "frozen | finetune, one or both"),
    "labelled": ([64, 256], "labelled training places of the label-efficiency curve (\"all\": "
                            "every training place); the largest also gives the convergence "
                            "curves"),
    "seg_epochs": (6, "training epochs of every fit"),
    "seg_lr": (0.001, "AdamW learning rate of decoder and head"),
    "variants": (["boundary", "detail", "both"],
                 "seed 001's detail variants, on the first SSL encoder: boundary (loss), detail "
                 "(stem), both; [] for none"),
    "density": (True, "also regress tree density per pixel (seed 001's second forest task), "
                      "fewest labels"),
    "boundary_weight": (3.0, "loss weight of pixels next to a mask boundary in the boundary "
                             "variants"),
    "n_boot": (300, "bootstrap draws for the 95 % intervals"),
    "repeats": (1, "fits of every comparison row: N (seeds seed, seed+1, ...) or a list of "
                   "seeds; above one, each row's mean IoU and paired difference also as mean "
                   "and standard deviation across the seeds, beside the bootstrap interval of "
                   "the first seed's fit"),
}
NAMES = tuple(PARAMETERS)


@dataclass(frozen=True)
class Settings:
    """08's own parameters, checked."""

    target: str
    seg_input: str
    decoders: list[str]
    ssl_methods: list[str]
    methods: dict[str, tuple[str, str]]  # spec -> (method, backbone)
    other_encoders: list[str]
    protocols: list[str]
    labelled: list
    epochs: int
    lr: float
    variants: list[str]
    density: bool
    boundary_weight: float
    n_boot: int
    seeds: list[int]

    def describe(self, cfg: Config) -> str:
        labels = [ssl.method_label(m, b, cfg.ssl_backbone) for m, b in self.methods.values()]
        return (f"run {cfg.name}: {' and '.join(self.decoders)} on {cfg.ssl_backbone} "
                f"({cfg.ssl_adapter}), upconv on ViTs, target {self.target}, input "
                f"{self.seg_input}; encoders: random init, "
                f"{', '.join(labels + list(self.other_encoders))}; protocols "
                f"{', '.join(self.protocols)}; {self.epochs} epochs; device {cfg.device}, "
                f"precision {cfg.precision}"
                + (f"; every fit with seeds {', '.join(map(str, self.seeds))}"
                   if len(self.seeds) > 1 else ""))


def _one_of(name: str, values: list, allowed) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"{name}: {', '.join(map(repr, bad))} is not one of "
                          f"{', '.join(allowed)}; fix -p {name} ...")



def settings(cfg: Config, namespace: dict) -> Settings:
    """08's parameters from the notebook's namespace (papermill's ``-p`` already applied),
    checked before any work: names, ranges and that the methods and encoders exist."""
    p = parameters.read(namespace, PARAMETERS)
    decoders = parameters.as_list(p["decoder"])
    protocols, variants = parameters.as_list(p["protocols"]), parameters.as_list(p["variants"])
    _one_of("target", [p["target"]], TARGETS)
    _one_of("seg_input", [p["seg_input"]], ssl.INPUTS)
    _one_of("decoder", decoders, segmenter.RESNET_DECODERS)
    _one_of("protocols", protocols, segmenter.PROTOCOLS)
    _one_of("variants", variants, VARIANTS)
    if not decoders or not protocols:
        raise ConfigError("decoder and protocols: give at least one each (-p decoder unet "
                          "-p protocols '[frozen]')")
    labelled = parameters.as_list(p["labelled"])
    if not labelled or not all(n == "all" or (isinstance(n, int) and not isinstance(n, bool)
                                              and n > 0) for n in labelled):
        raise ConfigError(f"labelled: {labelled!r}; give positive place counts or \"all\", "
                          f"e.g. -p labelled '[64, 256]'")
    ssl_methods = parameters.as_list(p["ssl_methods"])
    methods = {spec: ssl.parse_method(spec, cfg.ssl_backbone) for spec in ssl_methods}
    other = parameters.as_list(p["other_encoders"])
    for name in other:
        dense_encoders.check_name(name)
    for name in ("seg_epochs", "n_boot"):
        parameters.whole(name, p[name], 1)
    for name in ("seg_lr", "boundary_weight"):
        parameters.positive(name, p[name])
    return Settings(target=p["target"], seg_input=p["seg_input"], decoders=decoders,
                    ssl_methods=ssl_methods, methods=methods, other_encoders=other,
                    protocols=protocols, labelled=labelled, epochs=int(p["seg_epochs"]),
                    lr=float(p["seg_lr"]), variants=variants, density=bool(p["density"]),
                    boundary_weight=float(p["boundary_weight"]), n_boot=int(p["n_boot"]),
                    seeds=seeds_of(p["repeats"], cfg.seed))


# --- the places -------------------------------------------------------------------------------


@dataclass
class Places:
    """The labelled places: the training pool (and its nested subsets) and the test places,
    with their targets (class index per pixel, -1 left out)."""

    train: object  # ssl.Pairs
    test: object
    classes: list[str]
    y_pool: np.ndarray
    y_test: np.ndarray
    subsets: dict[int, np.ndarray]  # labelled size -> sorted indices into train

    @property
    def stats_idx(self) -> np.ndarray:
        """The training images random init's BatchNorm statistics are estimated on (no
        labels): those of the largest labelled set."""
        return self.subsets[max(self.subsets)]

    @property
    def few(self) -> int:
        return min(self.subsets)

    @property
    def largest(self) -> int:
        return max(self.subsets)

    def share(self) -> pd.DataFrame:
        """Each class's share of the labelled test pixels (percent), classes present."""
        y = self.y_test[self.y_test >= 0]
        share = pd.Series(np.bincount(y.ravel(), minlength=len(self.classes)) / y.size,
                          index=self.classes)
        return (100 * share[share > 0]).round(1).rename("test pixels (%)").to_frame().T

    def describe(self) -> str:
        return (f"{len(self.train)} training places (labelled subsets: "
                f"{', '.join(str(len(s)) for s in self.subsets.values())}), {len(self.test)} "
                f"test places of {self.y_test.shape[1]} x {self.y_test.shape[2]} px")


def _targets(pairs, target: str) -> np.ndarray:
    if target == "trees":
        y = (pairs.trees >= dense.TREE_PIXEL_PERCENT).astype(np.int64)
        y[pairs.masks == dense.MASK_NODATA] = -1
        return y
    return dense.to_class_index(pairs.masks, len(pairs.vocabulary))


def places(cfg: Config, s: Settings) -> Places:
    """The places of 07 with their masks; the labelled subsets are nested (the first n of one
    seeded order), so the 64 are among the 256."""
    train, test = ssl.load_pairs(cfg, "train"), ssl.load_pairs(cfg, "val")
    if train.masks is None or test.masks is None:
        raise DataError("these shards carry no masks (built before dense labels, or a source "
                        "without them): rebuild them with 01_data_prep, or use a source with "
                        "masks (simulator, class_masks, agriculture_vision)")
    classes = (["not tree", "tree"] if s.target == "trees"
               else dense.mask_classes(train.vocabulary))
    order = np.random.default_rng([cfg.seed, SUBSET_SEED]).permutation(len(train))
    counts = sorted({len(order) if n == "all" else min(n, len(order)) for n in s.labelled})
    return Places(train, test, classes, _targets(train, s.target), _targets(test, s.target),
                  {n: np.sort(order[:n]) for n in counts})


# --- the encoders -----------------------------------------------------------------------------


@dataclass
class Encoder:
    """One encoder of the comparison: its backbone, its starting weights (None: random init)
    and the random init it is compared with (None: it is one)."""

    backbone: str
    state: dict | None = None
    baseline: str | None = None
    dense: dense_encoders.DenseEncoder | None = None
    pretrained: bool = False
    decoders: list[str] = field(default_factory=list)

    @property
    def is_resnet(self) -> bool:
        return self.dense is None and not self.backbone.startswith("vit_")


def _decoders(e: Encoder, decoders: list[str]) -> list[str]:
    """The ResNet decoders asked for, or the UpConv decoder on a ViT or a CLIP tower."""
    made = {e.dense.decoder_for(d) if e.dense else segmenter.decoder_for(e.backbone, d)
            for d in decoders}
    return sorted(made, key=(decoders + ["upconv"]).index)


def lineup(cfg: Config, s: Settings, p: Places) -> dict[str, Encoder]:
    """Random init, 07's finished encoders of ``ssl_methods`` (a method on a backbone of its own
    beside random init of that backbone) and each of ``other_encoders`` beside its own
    architecture at random init, fed the same input."""
    encoders = {"random init": Encoder(cfg.ssl_backbone)}
    for spec, path in pretraining.ensure_encoders(cfg, s.ssl_methods).items():
        m, b = s.methods[spec]
        base = "random init" if b == cfg.ssl_backbone else f"random init {ssl.backbone_label(b)}"
        encoders.setdefault(base, Encoder(b))
        net, state = ssl.read_encoder(path)
        label = ssl.method_label(m, b, cfg.ssl_backbone)
        encoders[f"{label} ({state['run']['steps']} steps)"] = Encoder(
            b, {k: v.clone() for k, v in net.state_dict().items()}, base)
        print(f"{label}: {path.parent.name}/encoder.pt, {state['run']['steps']} steps on "
              f"{state['pairs']} places")
    if s.other_encoders and s.seg_input != "s2":
        print(f"other_encoders take the optical bands they were trained on, not "
              f"seg_input={s.seg_input}")
    for name in s.other_encoders:
        if name == "clip":  # run alone: 03's training first (one log line)
            training.ensure_trained(cfg)
        enc = dense_encoders.dense_encoder(cfg, name, p.train, cfg.image_px)
        base = f"random init {enc.label.split(' (')[0]}"
        backbone = f"{enc.kind}:{enc.backbone}"
        encoders[base] = Encoder(backbone, dense=enc, pretrained=False)
        encoders[enc.label] = Encoder(backbone, baseline=base, dense=enc, pretrained=True)
        print(f"{enc.label}: {enc.channels} input channels from the raw optical bands, "
              f"{enc.decoder_for(s.decoders[0])} decoder")
    for e in encoders.values():
        e.decoders = _decoders(e, s.decoders)
    return encoders


# --- the comparison ---------------------------------------------------------------------------


class _Fitter:
    """Builds and fits one segmenter of the comparison; each encoder's inputs made once per
    split."""

    def __init__(self, cfg: Config, s: Settings, p: Places, encoders: dict[str, Encoder]):
        self.cfg, self.s, self.p, self.encoders = cfg, s, p, encoders
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self._inputs: dict[tuple[str, str], np.ndarray] = {}

    def inputs(self, name: str, split: str, idx: np.ndarray) -> np.ndarray:
        """An encoder's images: the standardised bands of 07's encoders, or what a dense
        encoder was trained on."""
        e, pairs = self.encoders[name], (self.p.train if split == "train" else self.p.test)
        if e.dense is None:
            return pairs.inputs(idx, self.s.seg_input)
        key = (e.dense.name, split)
        if key not in self._inputs:  # every place once, per encoder and split
            self._inputs[key] = e.dense.inputs(pairs, np.arange(len(pairs)))
        return self._inputs[key][idx]

    def fit(self, name: str, decoder: str, protocol: str, idx: np.ndarray,
            stem: str = "standard", weight: float = 1.0,
            seed: int | None = None) -> segmenter.SegmentationRun:
        """One segmenter fitted and scored; ``seed`` (default the run's) seeds the decoder's
        initialisation and the batches."""
        cfg, s, p, e = self.cfg, self.s, self.p, self.encoders[name]
        seed = cfg.seed if seed is None else seed
        stats = self.inputs(name, "train", p.stats_idx) if e.baseline is None else None
        if e.dense is not None:
            net = e.dense.segmenter(decoder, len(p.classes), cfg.image_px, seed,
                                    pretrained=e.pretrained)
        else:
            net = segmenter.build_segmenter(decoder, e.backbone, p.train.bands, len(p.classes),
                                            cfg.ssl_adapter, e.state, stem=stem, seed=seed,
                                            image_px=cfg.image_px)
        return segmenter.fit_segmenter(
            net, self.inputs(name, "train", idx), p.y_pool[idx],
            self.inputs(name, "test", np.arange(len(p.test))), p.y_test, p.classes,
            protocol=protocol, epochs=s.epochs, lr=s.lr, batch_size=BATCH_SIZE, seed=seed,
            device=self.device, precision=self.precision, n_boot=s.n_boot,
            boundary_weight=weight, statistics_from=stats)


@dataclass
class Comparison:
    """Every fit (``runs`` by (protocol, decoder, encoder, labelled)), the table rows with the
    floor rows, the floors by labelled size and the paired differences to random init."""

    runs: dict[tuple[str, str, str, int], segmenter.SegmentationRun]
    rows: list[records.SegmentationRow]
    floors: dict[int, floors.Floor]
    differences: list[records.SegmentationDifference]
    fitter: _Fitter = field(repr=False)

    @property
    def protocol(self) -> str:
        """The headline protocol (the first asked for)."""
        return self.fitter.s.protocols[0]

    def run_of(self, name: str, n: int) -> segmenter.SegmentationRun:
        """An encoder's fit with its first decoder and the headline protocol."""
        e = self.fitter.encoders[name]
        return self.runs[(self.protocol, e.decoders[0], name, n)]

    def table(self) -> pd.DataFrame:
        """The rows as shown: each score with its 95 % interval (of the first seed's fit), and
        with repeats the mean IoU's mean ± standard deviation across the seeds."""
        seeds = self.fitter.s.seeds
        out = [{"protocol": r.protocol, "labelled": r.labelled, "decoder": r.decoder,
                "encoder": r.encoder, **{label: _cell(getattr(r, m), r.ci.get(m))
                                         for m, label in _SHOWN.items()},
                **({f"mean IoU, {len(seeds)} seeds": repeats.cell(r.mean_iou_over_seeds,
                                                                r.mean_iou_seed_sd)}
                   if len(seeds) > 1 else {})} for r in self.rows]
        return pd.DataFrame(out).set_index(["protocol", "labelled", "decoder", "encoder"])

    def differences_table(self) -> pd.DataFrame | str:
        """Each pretrained encoder minus the random init of its architecture (mean IoU,
        paired over the same resampled test images)."""
        if not self.differences:
            return "no pretrained encoder (07 has no finished run of ssl_methods, and " \
                   "other_encoders is empty)"
        seeds = self.fitter.s.seeds
        return pd.DataFrame([{
            "protocol": d.protocol, "labelled": d.labelled, "decoder": d.decoder,
            "encoder": d.encoder, "minus": d.baseline,
            "mean IoU difference": f"{d.minus_random_init:+.1f} [{d.ci[0]:+.1f}, {d.ci[1]:+.1f}]",
            **({f"over {len(seeds)} seeds": repeats.cell(d.over_seeds, d.seed_sd, sign=True)}
               if len(seeds) > 1 else {})}
            for d in self.differences]).set_index(["protocol", "labelled", "decoder", "encoder"])

    def curves(self) -> tuple[dict, dict]:
        """(validation history at the largest labelled set, test mean IoU per labelled size)
        of each encoder with its first decoder and the headline protocol: the arguments of
        ``plots.segmentation_curves``."""
        p = self.fitter.p
        names = list(self.fitter.encoders)
        histories = {n: self.run_of(n, p.largest).history for n in names}
        sizes = {n: [{"n_train": k, "mean_iou": self.run_of(n, k).final.mean_iou,
                      "ci": self.run_of(n, k).final.ci} for k in p.subsets] for n in names}
        return histories, sizes

    def panel(self, count: int = 4) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The ``count`` test images with the most mask boundary (the most to draw) and each
        encoder's prediction of them (largest labelled set, headline protocol)."""
        p = self.fitter.p
        edges = [-seg_scores.boundaries(y).sum() for y in p.y_test]
        show = np.sort(np.argsort(edges, kind="stable")[:count])
        return show, {n: self.run_of(n, p.largest).predictions[show]
                      for n in self.fitter.encoders}


_SHOWN = {"mean_iou": "mean IoU", "overall_accuracy": "overall accuracy",
          "boundary_f1": "boundary F1"}


def _defined(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def _cell(value, ci) -> str:
    """A score with its interval; "–" where it is not defined on these images (no boundary in
    any mask: no boundary F1)."""
    if not _defined(value):
        return "–"
    if ci and all(_defined(v) for v in ci):
        return f"{value:.1f} [{ci[0]:.1f}-{ci[1]:.1f}]"
    return f"{value:.1f}"


def compare(cfg: Config, s: Settings, p: Places, encoders: dict[str, Encoder]) -> Comparison:
    """Every encoder with each of its decoders under each protocol at each labelled size, the
    same data, epochs and seed; the majority class of each labelled set as the floor under it
    (a random init whose interval reaches it is flagged); then each pretrained encoder's paired
    mean-IoU difference to its random init on the same resampled test images."""
    fitter = _Fitter(cfg, s, p, encoders)
    floor_of = {n: floors.majority_class_masks(p.y_pool[idx], p.y_test, p.classes, s.n_boot,
                                               cfg.seed) for n, idx in p.subsets.items()}
    repeated = len(s.seeds) > 1
    runs, rows, per_seed = {}, [], {}
    for protocol in s.protocols:
        for n, fl in floor_of.items():
            rows.append(records.SegmentationRow(
                protocol=protocol, decoder="-", encoder="majority class (floor)", labelled=n,
                **fl.scores, ci=fl.ci, seconds=0.0, floor=True))
            print(f"{protocol:>8} {'-':<13} {'majority class (floor)':<30} {n:>4} labelled: "
                  f"mIoU {fl.scores['mean_iou']:5.1f}, OA "
                  f"{fl.scores['overall_accuracy']:5.1f}: {fl.what}")
        for name, e in encoders.items():
            for dec in e.decoders:
                for n, idx in p.subsets.items():
                    key = (protocol, dec, name, n)
                    run = runs[key] = fitter.fit(name, dec, protocol, idx, seed=s.seeds[0])
                    per_seed[key] = [run.final.mean_iou] + [
                        fitter.fit(name, dec, protocol, idx, seed=k).final.mean_iou
                        for k in s.seeds[1:]]
                    f = run.final
                    low = floors.at_floor(f.ci["mean_iou"], floor_of[n].scores["mean_iou"])
                    row = records.SegmentationRow(
                        protocol=protocol, decoder=dec, encoder=name, labelled=n,
                        mean_iou=f.mean_iou, overall_accuracy=f.overall_accuracy,
                        boundary_f1=f.boundary_f1, ci=f.ci, seconds=run.seconds,
                        iou=dict(zip(p.classes, f.iou, strict=True)), at_floor=low)
                    seeds_note = ""
                    if repeated:
                        mean, sd = spread(per_seed[key])
                        row.seeds, row.mean_iou_per_seed = list(s.seeds), per_seed[key]
                        row.mean_iou_over_seeds, row.mean_iou_seed_sd = mean, sd
                        seeds_note = f"; {len(s.seeds)} seeds {mean:5.1f} ± {sd:.1f}"
                    rows.append(row)
                    print(f"{protocol:>8} {dec:<13} {name:<30} {n:>4} labelled: mIoU "
                          f"{f.mean_iou:5.1f} [{f.ci['mean_iou'][0]:.1f}, "
                          f"{f.ci['mean_iou'][1]:.1f}], OA {f.overall_accuracy:5.1f}, boundary "
                          f"F1 {f.boundary_f1:5.1f} ({run.seconds:.0f} s){seeds_note}"
                          + ("  << at the floor" if low else ""))
    diffs = []
    for (protocol, dec, name, n), run in runs.items():
        base = encoders[name].baseline
        if base is None:
            continue
        d, ci = seg_scores.paired_miou_difference(
            p.y_test, run.predictions, runs[(protocol, dec, base, n)].predictions,
            len(p.classes), s.n_boot, cfg.seed)
        diff = records.SegmentationDifference(
            protocol=protocol, decoder=dec, encoder=name, baseline=base, labelled=n,
            minus_random_init=d, ci=list(ci))
        if repeated:  # each seed's pretrained fit minus the same seed's random init
            each = [a - b for a, b in zip(per_seed[(protocol, dec, name, n)],
                                          per_seed[(protocol, dec, base, n)], strict=True)]
            diff.per_seed = each
            diff.over_seeds, diff.seed_sd = spread(each)
        diffs.append(diff)
    return Comparison(runs, rows, floor_of, diffs, fitter)


# --- seed 001's two further experiments -------------------------------------------------------


def _scores_table(rows: list, index: str, metrics: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame([{index: getattr(r, index),
                          **{m: _cell(getattr(r, m), r.ci.get(m)) for m in metrics}}
                         for r in rows]).set_index(index)


@dataclass
class Details:
    """The detail variants of one encoder (``encoder``; empty rows: none run, ``why``)."""

    rows: list[records.DetailRow]
    encoder: str = ""
    why: str = ""

    def table(self) -> pd.DataFrame | str:
        if not self.rows:
            return self.why
        return _scores_table(self.rows, "variant", ("mean_iou", "boundary_f1",
                                                    "overall_accuracy"))


def detail_variants(s: Settings, comparison: Comparison) -> Details:
    """Seed 001's detail preservation on the first pretrained ResNet encoder with its first
    decoder, the largest labelled set and the headline protocol: the boundary-weighted loss
    (``boundary_weight`` on pixels next to a mask boundary), the detail stem (no max-pooling,
    stride 1) and both, beside the standard fit."""
    fitter, p = comparison.fitter, comparison.fitter.p
    resnets = [n for n, e in fitter.encoders.items() if e.baseline and e.is_resnet]
    if not s.variants or not resnets:
        return Details([], why="no variants run (variants is empty, or no pretrained ResNet "
                               "encoder)")
    name = resnets[0]
    e = fitter.encoders[name]

    def row(variant: str, run) -> records.DetailRow:
        f = run.final
        return records.DetailRow(variant=variant, mean_iou=f.mean_iou,
                                 boundary_f1=f.boundary_f1,
                                 overall_accuracy=f.overall_accuracy, ci=f.ci)

    rows = [row("standard", comparison.run_of(name, p.largest))]
    for v in s.variants:
        run = fitter.fit(name, e.decoders[0], comparison.protocol, p.subsets[p.largest],
                         stem="detail" if v in ("detail", "both") else "standard",
                         weight=s.boundary_weight if v in ("boundary", "both") else 1.0)
        rows.append(row(v, run))
    print(f"{name}, {e.decoders[0]}, {comparison.protocol} encoder, {p.largest} labelled places")
    return Details(rows, name)


@dataclass
class Density:
    """Tree density per pixel (percent cover): the floor row (training mean) and each
    encoder's scores (empty rows: not run, ``why``)."""

    rows: list[records.DensityRow]
    why: str = ""

    def table(self) -> pd.DataFrame | str:
        if not self.rows:
            return self.why
        return _scores_table(self.rows, "encoder", ("rmse", "mae", "r2"))


def tree_density(cfg: Config, s: Settings, p: Places, encoders: dict[str, Encoder],
                 comparison: Comparison) -> Density:
    """Seed 001's second forest task: the tree cover of every pixel regressed by the same
    decoder with one output, for random init and every pretrained encoder on the default
    ResNet, with the fewest labelled places and the headline protocol; RMSE / MAE / R^2 over
    the valid test pixels, the training mean as the floor, and each encoder's paired RMSE
    difference to random init."""
    if not s.density or s.target != "trees":
        return Density([], "not run (density is off, or the target is not trees)")
    fitter, few = comparison.fitter, p.few
    nodata_pool, nodata_test = p.train.masks == dense.MASK_NODATA, p.test.masks == dense.MASK_NODATA
    t_pool = np.where(nodata_pool, -1, p.train.trees.astype(np.float32))
    t_test = np.where(nodata_test, -1, p.test.trees.astype(np.float32))
    x_test = p.test.inputs(np.arange(len(p.test)), s.seg_input)
    idx = p.subsets[few]
    runs = {}
    for name, e in encoders.items():
        if not e.is_resnet or e.baseline not in (None, "random init"):
            continue
        net = segmenter.build_segmenter(e.decoders[0], e.backbone, p.train.bands, 1,
                                        cfg.ssl_adapter, e.state, seed=cfg.seed,
                                        image_px=cfg.image_px)
        stats = p.train.inputs(p.stats_idx, s.seg_input) if e.baseline is None else None
        runs[name] = segmenter.fit_density(
            net, p.train.inputs(idx, s.seg_input), t_pool[idx], x_test, t_test,
            protocol=comparison.protocol, epochs=s.epochs, lr=s.lr, batch_size=BATCH_SIZE,
            seed=cfg.seed, device=fitter.device, precision=fitter.precision, n_boot=s.n_boot,
            statistics_from=stats)
    mean_floor = floors.mean_density(t_pool[idx], t_test, s.n_boot, cfg.seed)
    rows = [records.DensityRow(encoder="training mean (floor)", labelled=few,
                               **mean_floor.scores, ci=mean_floor.ci, floor=True)]
    for name, run in runs.items():
        f = run.final
        row = records.DensityRow(encoder=name, labelled=few, rmse=f["rmse"], mae=f["mae"],
                                 r2=f["r2"], ci=f["ci"])
        if name != "random init":
            d, ci = seg_scores.paired_rmse_difference(
                t_test, run.predictions, runs["random init"].predictions, s.n_boot, cfg.seed)
            row.minus_random_init_rmse, row.minus_random_init_rmse_ci = d, list(ci)
            print(f"{name} minus random init: RMSE {d:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] "
                  f"(paired)")
        rows.append(row)
    valid = t_test[t_test >= 0]
    print(f"{encoders['random init'].decoders[0]}, {comparison.protocol} encoder, {few} "
          f"labelled places; test cover: mean {valid.mean():.1f} %, std {valid.std():.1f} %")
    return Density(rows)


# --- the record -------------------------------------------------------------------------------


def _short(name: str) -> str:
    """An encoder's name without its step count."""
    return name.split(" (")[0]


def record(s: Settings, p: Places, encoders: dict[str, Encoder], comparison: Comparison,
           details: Details, density: Density) -> records.SegmentationRecord:
    """The stage's record. Its headline: each encoder with the headline protocol, its first
    decoder and the fewest labels, its paired difference to random init of its architecture,
    the floor under it and which rows reach the floor."""
    main, few = comparison.protocol, p.few

    def headline(r) -> bool:
        return (r.protocol == main and r.labelled == few and not getattr(r, "floor", None)
                and r.decoder == encoders[r.encoder].decoders[0])

    rows = [r for r in comparison.rows if headline(r)]
    head = {_short(d.encoder): d for d in comparison.differences if headline(d)}
    floor = comparison.floors[few]
    return records.SegmentationRecord(
        target=s.target, decoder=s.decoders[0], decoders=s.decoders, input=s.seg_input,
        protocols=s.protocols, classes=p.classes,
        backbones={_short(n): e.backbone for n, e in encoders.items()},
        labelled=sorted(p.subsets), epochs=s.epochs, n_test=len(p.test), few_labels=few,
        protocol=main,
        mean_iou={_short(r.encoder): round(r.mean_iou, 2) for r in rows},
        mean_iou_ci={_short(r.encoder): [round(v, 2) for v in r.ci["mean_iou"]] for r in rows},
        minus_random_init={k: round(d.minus_random_init, 2) for k, d in head.items()},
        minus_random_init_ci={k: [round(v, 2) for v in d.ci] for k, d in head.items()},
        floor=records.SegmentationFloor(
            name=floor.name, what=floor.what, mean_iou=round(floor.scores["mean_iou"], 2),
            overall_accuracy=round(floor.scores["overall_accuracy"], 2)),
        at_floor={_short(r.encoder): bool(r.at_floor) for r in rows},
        table=comparison.rows, differences=comparison.differences, details=details.rows,
        density=density.rows,
        history={f"{pr}|{dec}|{e}|{n}": r.history
                 for (pr, dec, e, n), r in comparison.runs.items()},
        recipes={segmenter.RECIPE.name: segmenter.RECIPE.values()},
        **({"seeds": s.seeds,
            "mean_iou_seed_sd": {_short(r.encoder): round(r.mean_iou_seed_sd, 2) for r in rows},
            "minus_random_init_seed_sd": {k: round(d.seed_sd, 2) for k, d in head.items()}}
           if len(s.seeds) > 1 else {}))
