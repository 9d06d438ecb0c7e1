"""Seed 000's zero-shot retrieval (notebook 04): the trained CLIP model ranks each image's label
prompts (and, for image-text corpora, captions), scored as R@K with bootstrap intervals beside
the exact chance level and the same model at initialisation. One function per step:

1. :func:`settings` — the notebook's own parameters, checked;
2. :func:`score` — the evaluation split encoded and scored (labels and captions);
3. :func:`leakage_check` — no evaluated image among the training images;
4. :func:`beside_paper` — R@K beside the seed paper's table for the same setting;
5. :func:`at_init` — the same model at random initialisation, scored the same way;
6. :func:`quality` — issue 4's bars per dataset and on the mean;
7. :func:`write_predictions` and :func:`record` — the predictions file (for 05's map) and the
   typed record (:class:`~geofm_lib.records.ZeroShotRecord`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from geofm_lib import encoders, evaluation, paths, records, training
from geofm_lib.config import Config
from geofm_lib.data import shards
from geofm_lib.encoders.public_clip import PUBLIC
from geofm_lib.errors import ConfigError, DataError
from geofm_lib.evaluation.metrics import per_class_chance
from geofm_lib.models import devices
from geofm_lib.papers import paper_table_for
from geofm_lib.progress import get_logger
from geofm_lib.studies import parameters

INIT_BOOT = 200  # bootstrap draws of the random-init comparison (its intervals are not shown)

PARAMETERS = {
    "n_boot": (2000, "bootstrap draws for the 95 % intervals"),
    "n_examples": (2, "best and worst images shown per dataset"),
    "public_models": ([], "public remote-sensing CLIP models scored beside ours, e.g. "
                          "remoteclip:ViT-B-32, georsclip:ViT-B-32, skyclip:ViT-B-32"),
}
NAMES = tuple(PARAMETERS)


@dataclass(frozen=True)
class Settings:
    n_boot: int
    n_examples: int
    public_models: tuple[str, ...] = ()

    def describe(self, cfg: Config) -> str:
        out = f"run {cfg.name}: evaluating the {cfg.eval_split} split of " \
              f"{', '.join(cfg.dataset_keys)}"
        if cfg.eval_split == "train":
            out += ("\nNOTE: eval_split='train' scores the images the model was trained on; "
                    "these numbers measure fit, not generalisation")
        return out


def settings(cfg: Config, namespace: dict) -> Settings:
    p = parameters.read(namespace, PARAMETERS)
    public = tuple(parameters.as_list(p["public_models"] or []))
    for name in public:  # names and files checked now; missing weights say so when loaded
        if encoders.kind_of(name).name not in PUBLIC:
            raise ConfigError(f"public_models: {name!r} is not a public remote-sensing CLIP "
                            f"model; write one of {', '.join(f'{k}:<arch>' for k in PUBLIC)}")
        encoders.check_encoder_name(name)
    return Settings(parameters.whole("n_boot", p["n_boot"], 1),
                    parameters.whole("n_examples", p["n_examples"], 0), public)


@dataclass
class Scored:
    """The evaluation split encoded by one model and scored: label retrieval per dataset,
    caption retrieval per image-text corpus, and the datasets that cannot be scored (why)."""

    model: object
    tokenizer: object
    checkpoint: dict
    stats: dict
    encoded: evaluation.Encoded
    results: dict
    captions: dict
    unscored: dict[str, str]
    eval_shards: list[Path]
    vocabularies: dict
    device: str
    precision: str

    def table(self) -> pd.DataFrame:
        return evaluation.results_table(self.results)

    def text_to_image(self) -> pd.DataFrame:
        """Text-to-image R@K per dataset (each present label's prompt ranks the images) beside
        its chance level."""
        t2i = pd.DataFrame({ds: {**{f"R@{k}": round(r.t2i[k][0], 1) for k in evaluation.KS},
                                 **{f"chance R@{k}": round(r.t2i[k][1], 1)
                                    for k in evaluation.KS},
                                 "labels present": int(r.truth.any(0).sum())}
                            for ds, r in self.results.items()}).T
        if len(t2i):
            t2i["labels present"] = t2i["labels present"].astype(int)
        return t2i

    def per_class_recall(self) -> dict[str, tuple]:
        """Per dataset: (recall of each label, its support, the vocabulary, its chance recall
        under a random ranking)."""
        return {ds: (*evaluation.per_class_recall(r.ranking, r.truth), r.vocabulary,
                     per_class_chance(r.truth))
                for ds, r in self.results.items()}

    def label_predictions(self) -> list[dict]:
        return evaluation.label_predictions(self.results, self.encoded)

    def examples(self, n: int) -> list[tuple[str, dict, dict]]:
        """The ``n`` best and worst scored images of each dataset: (title, prediction, sample),
        the input of ``plots.prediction_examples``."""
        preds = self.label_predictions()
        picked = []
        for ds in self.results:
            best, worst = evaluation.best_and_worst(preds, ds, n)
            picked += [(f"{ds} · best", r) for r in best] + [(f"{ds} · worst", r) for r in worst]
        if not picked:
            return []
        samples = shards.read_samples(self.eval_shards, [r["key"] for _, r in picked])
        return [(title, r, samples[r["key"]]) for title, r in picked]


def score(cfg: Config, s: Settings) -> Scored:
    """03's trained model (an error saying to run 03 when it is missing) over the evaluation
    split: every image encoded once, label prompts and captions ranked, R@K with intervals."""
    device = devices.resolve_device(cfg.device)
    precision = devices.resolve_precision(cfg.precision, device)  # as 03 validated
    training.ensure_trained(cfg)  # run alone: 03's training first (one log line)
    model, tokenizer, state = training.load_trained_model(cfg, device)
    stats = training.stats_from_checkpoint(state)
    folder = paths.build_folder(cfg)
    vocabularies = shards.load_manifest(folder).get("vocabularies")
    eval_shards = shards.shard_paths(folder, cfg.eval_split)
    enc = evaluation.encode_split(model, tokenizer, eval_shards, stats, device,
                                  image_px=cfg.image_px, precision=precision)
    results = evaluation.zero_shot(model, tokenizer, enc, cfg.caption_metadata, n_boot=s.n_boot,
                                   seed=cfg.seed, device=device, vocabularies=vocabularies)
    captions = evaluation.caption_retrieval(model, tokenizer, enc, device=device,
                                            vocabularies=vocabularies)
    print(f"{len(enc.keys)} images encoded from {len(eval_shards)} shards with the model of "
          f"epoch {state['epoch']}")
    print(f"label datasets: {', '.join(results) or '-'}; caption datasets: "
          f"{', '.join(captions) or '-'}")
    unscored = evaluation.not_evaluable(enc, vocabularies)  # shown (maps), never scored
    for ds, why in unscored.items():
        print(f"not scored: {ds}: {why}")
    return Scored(model, tokenizer, state, stats, enc, results, captions, unscored, eval_shards,
                  vocabularies, device, precision)


def leakage_check(cfg: Config, sc: Scored) -> int:
    """How many evaluated images occur among the training images (by content hash); on the
    validation split any is an error, on the training split all of them do."""
    train_hashes = shards.content_hashes(shards.shard_paths(paths.build_folder(cfg), "train"))
    eval_hashes = shards.content_hashes(sc.eval_shards)
    overlap = len(train_hashes & eval_hashes)
    print(f"{len(eval_hashes)} evaluated images, {len(train_hashes)} training images, "
          f"{overlap} shared")
    if cfg.eval_split == "val" and overlap:
        raise DataError(f"{overlap} validation images occur in the training shards of "
                        f"{paths.shown(paths.build_folder(cfg))}: the split leaks; rebuild the "
                        f"shards with 01_data_prep (geofm data with the same parameters)")
    return overlap


def beside_paper(cfg: Config, sc: Scored) -> tuple[str, pd.DataFrame | str]:
    """(the paper table of this setting, R@K here beside the paper's per dataset)."""
    paper_name, paper = paper_table_for(cfg.group, cfg.caption_metadata)
    source = ("sources " + ", ".join(f"{k}: {v.reader}" for k, v in cfg.sources.items())
              if cfg.sources else f"source={cfg.source}")
    print(f"this run: {source}, {cfg.samples_per_dataset} scenes/dataset at {cfg.image_px} px; "
          f"paper: {paper_name}")
    rows = []
    for ds, r in sc.results.items():
        row = {"dataset": ds}
        for i, k in enumerate(evaluation.KS):
            row[f"R@{k} here"] = "-" if r.recall[k] is None else round(r.recall[k], 1)
            p = paper.get(ds)
            row[f"R@{k} paper"] = "not reported" if p is None else ("-" if p[i] is None else p[i])
        rows.append(row)
    return paper_name, (pd.DataFrame(rows).set_index("dataset") if rows
                        else "no label datasets in this run")


@dataclass
class AtInit:
    """The same architecture and band adapter with random weights, scored the same way."""

    results: dict
    captions: dict

    def versus(self, sc: Scored) -> pd.DataFrame:
        return pd.DataFrame({ds: {"R@1 trained": round(r.recall[1], 1),
                                  "R@1 at init": round(self.results[ds].recall[1], 1),
                                  "chance R@1": round(r.chance[1], 1)}
                             for ds, r in sc.results.items() if r.recall[1] is not None}).T

    def captions_table(self, sc: Scored) -> pd.DataFrame | str:
        table = evaluation.caption_table(sc.captions)
        if not len(table):
            return "no image-text corpora in this run"
        table["mean recall at init"] = [round(self.captions[ds].mean_recall, 1)
                                        for ds in table.index]
        return table


def at_init(cfg: Config, sc: Scored) -> AtInit:
    init_model, _ = encoders.load_encoder(cfg, "init", sc.device)
    init_enc = evaluation.encode_split(init_model, sc.tokenizer, sc.eval_shards, sc.stats,
                                       sc.device, image_px=cfg.image_px, show_progress=False,
                                       precision=sc.precision)
    results = evaluation.zero_shot(init_model, sc.tokenizer, init_enc, cfg.caption_metadata,
                                   n_boot=INIT_BOOT, seed=cfg.seed, device=sc.device,
                                   vocabularies=sc.vocabularies)
    captions = evaluation.caption_retrieval(init_model, sc.tokenizer, init_enc, device=sc.device,
                                            vocabularies=sc.vocabularies)
    return AtInit(results, captions)


@dataclass
class Public:
    """Public remote-sensing CLIP models on the same images, prompts and chance level."""

    results: dict[str, dict]  # model name -> dataset -> DatasetResult

    def table(self, sc: Scored) -> pd.DataFrame | str:
        if not self.results:
            return ("public_models is empty: no public model scored (e.g. -p public_models "
                    "'[\"remoteclip:ViT-B-32\"]'; docs/notebooks.md says where their weights go)")
        rows = {}
        for ds, r in sc.results.items():
            if r.recall[1] is None:
                continue
            row = {"R@1 ours": round(r.recall[1], 1), "95 % CI ours": [round(v, 1) for v in
                                                                        r.ci[1]]}
            for name, res in self.results.items():
                row[f"R@1 {name}"] = round(res[ds].recall[1], 1)
                row[f"95 % CI {name}"] = [round(v, 1) for v in res[ds].ci[1]]
            row["chance R@1"] = round(r.chance[1], 1)
            rows[ds] = row
        return pd.DataFrame(rows).T

    def means(self) -> dict[str, dict]:
        return {name: {k: v for k, v in evaluation.summary_metrics(res).items()
                       if k.startswith("mean_R@")} for name, res in self.results.items()}


def beside_public(cfg: Config, s: Settings, sc: Scored) -> Public:
    """Each of ``public_models`` over the same evaluation images with the same prompts and
    bootstrap, through its own preprocessing (``encoders.public_clip``)."""
    out = {}
    for name in s.public_models:
        model, stats = encoders.load_encoder(cfg, name, sc.device)
        tokenizer = encoders.tokenizer_for(cfg, name)
        enc = evaluation.encode_split(model, tokenizer, sc.eval_shards, stats, sc.device,
                                      image_px=None, show_progress=False,
                                      precision=sc.precision)
        out[name] = evaluation.zero_shot(model, tokenizer, enc, cfg.caption_metadata,
                                         n_boot=s.n_boot, seed=cfg.seed, device=sc.device,
                                         vocabularies=sc.vocabularies)
        means = evaluation.summary_metrics(out[name])
        print(f"{name}: mean R@1 {means['mean_R@1']} over {len(out[name])} datasets "
              f"({len(enc.keys)} images)")
    return Public(out)


@dataclass
class Quality:
    """Issue 4's bars: per dataset R@1 at least 10 above chance, its interval above chance and
    above the model at init; the mean R@1 at least twice the mean chance."""

    checks: pd.DataFrame
    summary: dict
    mean_ok: bool


def quality(sc: Scored, init: AtInit) -> Quality:
    checks = pd.DataFrame({ds: {
        "R@1 - chance >= 10": r.recall[1] is not None and r.recall[1] - r.chance[1] >= 10,
        "CI above chance": r.recall[1] is not None and r.ci[1][0] > r.chance[1],
        "trained > init": r.recall[1] is not None and r.recall[1] > init.results[ds].recall[1],
    } for ds, r in sc.results.items()}).T
    summary = evaluation.summary_metrics(sc.results)
    mean_ok = summary["mean_R@1"] is not None and \
        summary["mean_R@1"] >= 2 * summary["mean_chance_R@1"]
    if sc.results:
        print(f"mean R@1 {summary['mean_R@1']} vs mean chance {summary['mean_chance_R@1']}: "
              f"{'at least' if mean_ok else 'less than'} twice chance")
    else:
        print("no label datasets in this run: the label-prompt bars do not apply")
    return Quality(checks, summary, bool(mean_ok))


def write_predictions(cfg: Config, sc: Scored) -> tuple[Path, int]:
    """Every scored image's prediction (labels and captions) written for 05's map: (path,
    count); each scored image exactly once."""
    preds = sc.label_predictions() + evaluation.caption_predictions(sc.captions, sc.encoded)
    expected = sum(1 for d in sc.encoded.datasets if d not in sc.unscored)
    if len(preds) != expected:  # a bug, not the data: say so before 05 maps it
        raise DataError(f"{len(preds)} predictions for {expected} scored images; nothing was "
                        f"written")
    out = evaluation.write_predictions(paths.predictions_file(cfg), preds)
    print(f"{len(preds)} predictions -> {paths.shown(out)}")
    return out, len(preds)


def ensure_predictions(cfg: Config) -> Path:
    """04's per-image predictions of this run (``paths.predictions_file``); a notebook run on
    its own (05 before 04) scores the evaluation split first through 04's calls (CLIP trained
    first when 03 has not run, its shards before it), saying so in one line."""
    path = paths.predictions_file(cfg)
    if path.is_file():
        return path
    get_logger().info("no predictions of run %s yet (04_zero_shot_eval has not run with these "
                      "parameters): scoring the evaluation split now, as it would", cfg.name)
    return write_predictions(cfg, score(cfg, settings(cfg, {})))[0]


def record(cfg: Config, sc: Scored, init: AtInit, q: Quality,
           paper_name: str, public: Public | None = None) -> records.ZeroShotRecord:
    values = dict(q.summary)
    if public is not None and public.results:
        values["public_models"] = {
            name: {**public.means()[name],
                   "per_dataset_R@1": {ds: round(r.recall[1], 2) for ds, r in res.items()
                                       if r.recall[1] is not None}}
            for name, res in public.results.items()}
    values["split"] = cfg.eval_split
    values["not_evaluable"] = sc.unscored  # the reason instead of a number
    values["init_mean_R@1"] = evaluation.summary_metrics(init.results)["mean_R@1"]
    values["quality"] = {"per_dataset": q.checks.to_dict(orient="index"),
                         "mean_at_least_twice_chance": q.mean_ok,
                         "all_pass": bool(q.checks.values.all() and q.mean_ok)}
    values["paper_table"] = paper_name
    values["caption_retrieval"] = {
        ds: {"images": r.n_images, "captions": r.n_captions,
             **{f"i2t_R@{k}": round(v, 2) for k, v in r.i2t.items()},
             **{f"t2i_R@{k}": round(v, 2) for k, v in r.t2i.items()},
             "mean_recall": round(r.mean_recall, 2),
             "init_mean_recall": round(init.captions[ds].mean_recall, 2)}
        for ds, r in sc.captions.items()}
    if sc.captions:
        values["mean_recall"] = round(sum(r.mean_recall for r in sc.captions.values())
                                      / len(sc.captions), 2)
    return records.ZeroShotRecord.of(values)
