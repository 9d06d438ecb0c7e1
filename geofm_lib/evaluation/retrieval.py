"""Zero-shot evaluation: label-prompt retrieval R@K with the protocol of seed 000.

For every dataset, each image ranks that dataset's label prompts ("An overhead image showing
pastures.") by cosine similarity. Protocol (seed 000, Tables 2-4):

* **R@K (image to text)**: the share of images for which at least one of the top K labels is a
  true label of the image. Images without any true label cannot score and are left out
  (counted as ``no_labels``).
* **"-"** where K is at least the number of labels of the dataset: every label is then in the
  top K, so R@K is 100 % by construction and says nothing (stored as ``None``). Seed 000 printed
  100.0 at K = 5 for its 5-label datasets; it is trivial in the same way.
* **Chance level**: for an image with m true labels out of n, a random ranking puts at least one
  in the top K with probability ``1 - C(n-m, K) / C(n, K)``; the dataset's chance level is the
  mean over its images (exact, not simulated).
* **95 % interval**: percentile bootstrap over images.
* **Text to image R@K**: each label prompt ranks the dataset's images; a hit when one of the
  top K images carries the label; mean over labels that occur at least once (chance likewise
  ``1 - C(N-P, K) / C(N, K)`` for P positives among N images).
* **Per-class recall** and Fig. 2's correct / missed / false labels use the predicted set of
  an image = its top |y| labels, where |y| is its number of true labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from geofm_lib.catalog import DATASETS
from geofm_lib.data.captions import label_prompts
from geofm_lib.data.shards import iter_shards
from geofm_lib.evaluation.bootstrap import bootstrap_ci
from geofm_lib.evaluation.metrics import (
    KS,
    chance_hit_probability,
    chance_recall_at_k,
    hits_at_k,
    label_matrix,
    rank,
    recall_at_k,
    text_to_image_recall,
)
from geofm_lib.models.devices import autocast
from geofm_lib.models.inputs import to_model_input
from geofm_lib.progress import progress

# --- encoding ---------------------------------------------------------------------------------

@dataclass
class Encoded:
    """Image (and caption) embeddings of one split, with what is needed to score and map them."""

    image_features: np.ndarray  # (N, D) float32, L2-normalised
    keys: list[str]
    datasets: np.ndarray  # (N,) str
    labels: list[list[str]]
    captions: list[str]
    meta: list[dict]  # footprint, date, sensor, gsd_m, shard file
    caption_features: np.ndarray | None = None  # (N, D) when captions were encoded
    logit_scale: float = 1.0
    logit_bias: float | None = None  # SigLIP models' learned bias
    all_captions: list[list[str]] = field(default_factory=list)  # every caption of each image


def encode_texts(model, tokenizer, texts: Sequence[str], device: str = "cpu",
                 batch_size: int = 256) -> np.ndarray:
    """(len(texts), D) L2-normalised text embeddings."""
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[i:i + batch_size])).to(device)
            f = model.encode_text(tokens, normalize=True)
            out.append(f.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def encode_images(model, images, device: str = "cpu", image_px: int | None = None,
                  precision: str = "fp32") -> np.ndarray:
    """(N, D) L2-normalised float32 embeddings of model inputs ((N, C, H, W) or a list of
    (C, H, W)), resized to ``image_px`` (bilinear, antialiased) when they are another size;
    the tower runs under ``precision``'s autocast, the normalisation in fp32 (in bf16 a norm is
    only good to ~1e-2)."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(images) if isinstance(images, list)
                                              else images)).to(device)
    if image_px and x.shape[-1] != image_px:
        x = torch.nn.functional.interpolate(x, size=(image_px, image_px), mode="bilinear",
                                            antialias=True, align_corners=False)
    with torch.no_grad():
        with autocast(device, precision):
            img = model.encode_image(x)
        return torch.nn.functional.normalize(img.float(), dim=-1).cpu().numpy()


def encode_split(model, tokenizer, paths, channel_stats: dict, device: str = "cpu",
                 batch_size: int = 128, image_px: int | None = None,
                 with_captions: bool = False, limit: int | None = None,
                 show_progress: bool = True, precision: str = "fp32") -> Encoded:
    """Embed every image of some shards (and optionally their captions), streaming, under
    the autocast of ``precision`` (a resolved one: fp32, bf16, fp16); features come out fp32."""
    model.eval()
    feats, cap_feats = [], []
    keys, dsets, labels, captions, meta, all_captions = [], [], [], [], [], []
    batch_imgs, batch_txt = [], []

    def flush():
        if not batch_imgs:
            return
        feats.append(encode_images(model, batch_imgs, device, image_px, precision))
        if with_captions:
            with torch.no_grad(), autocast(device, precision):
                txt = model.encode_text(tokenizer(batch_txt).to(device))
            cap_feats.append(torch.nn.functional.normalize(txt.float(), dim=-1).cpu().numpy())
        batch_imgs.clear()
        batch_txt.clear()

    bar = progress(desc="encoding", unit="img", disable=not show_progress)
    for n, s in enumerate(iter_shards(paths)):
        if limit is not None and n >= limit:
            break
        m = s["json"]
        batch_imgs.append(to_model_input(s["img"], m["bands"], channel_stats[m["dataset"]]))
        batch_txt.append(s["txt"])
        keys.append(s["__key__"])
        dsets.append(m["dataset"])
        labels.append(list(m["labels"]))
        captions.append(s["txt"])
        all_captions.append(list(m.get("captions") or [s["txt"]]))
        meta.append({"footprint": m.get("footprint"), "date": m.get("date"),
                     "sensor": m.get("sensor"), "gsd_m": m.get("gsd_m"),
                     "pair_id": m.get("pair_id"), "split": m.get("split"),
                     "own_captions": bool(m.get("captions")),
                     "shard": str(s["__url__"]).rsplit("/", 1)[-1]})
        if len(batch_imgs) == batch_size:
            flush()
        bar.update(1)
    flush()
    bar.close()
    d = feats[0].shape[1] if feats else 0
    return Encoded(
        image_features=np.concatenate(feats) if feats else np.zeros((0, d), np.float32),
        keys=keys, datasets=np.array(dsets), labels=labels, captions=captions, meta=meta,
        caption_features=np.concatenate(cap_feats) if cap_feats else None,
        logit_scale=float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale")
        else 1.0, all_captions=all_captions,  # image-only encoders (torchgeo) have none
        logit_bias=float(model.logit_bias.item())
        if getattr(model, "logit_bias", None) is not None else None)


# --- the zero-shot evaluation -------------------------------------------------------------------

@dataclass
class DatasetResult:
    dataset: str
    vocabulary: tuple[str, ...]
    n_images: int
    no_labels: int
    scores: np.ndarray  # (N, L) cosine similarities
    truth: np.ndarray  # (N, L)
    index: np.ndarray  # positions in the Encoded arrays
    recall: dict = field(default_factory=dict)  # k -> percent or None
    chance: dict = field(default_factory=dict)
    ci: dict = field(default_factory=dict)  # k -> (lo, hi)
    t2i: dict = field(default_factory=dict)  # k -> (R@K, chance)

    @property
    def ranking(self) -> np.ndarray:
        return rank(self.scores)


def vocabulary_of(dataset: str, vocabularies: dict | None = None) -> tuple[str, ...]:
    """A dataset's labels: from the shard manifest when given there, else from the catalog."""
    if vocabularies and dataset in vocabularies:
        return tuple(vocabularies[dataset])
    return DATASETS[dataset].labels if dataset in DATASETS else ()


def not_evaluable(enc: Encoded, vocabularies: dict | None = None) -> dict[str, str]:
    """The datasets of an encoded split that cannot be scored, each with the reason: no labels
    and no captions of their own (an unlabelled dataset such as SSL4EO-S12), captions that are
    all the same text, or labels that no image of the split carries. They are shown (maps,
    embeddings), never scored: :func:`zero_shot` and :func:`caption_retrieval` leave them out
    and the metrics file records the reason instead of a number."""
    out = {}
    for ds in dict.fromkeys(enc.datasets.tolist()):
        idx = np.flatnonzero(enc.datasets == ds)
        if vocabulary_of(ds, vocabularies):
            if not any(enc.labels[i] for i in idx):
                out[ds] = f"none of its {len(idx)} images in this split carries a label"
            continue
        own = [enc.all_captions[i] for i in idx if enc.meta[i].get("own_captions")]
        if not own:
            out[ds] = ("no labels and no captions of its own (an unlabelled dataset): "
                       "nothing to score against")
        elif len({c for caps in own for c in caps}) < 2:
            out[ds] = (f"all {sum(map(len, own))} captions are the same text: every ranking "
                       f"would count as a hit")
    return out


def zero_shot(model, tokenizer, enc: Encoded, metadata: bool = False, ks=KS,
              n_boot: int = 2000, seed: int = 0, device: str = "cpu",
              vocabularies: dict | None = None) -> dict[str, DatasetResult]:
    """Per-dataset label-prompt retrieval for an encoded split (see the module docstring).

    Args:
        metadata: use prompts with sensor and resolution (for models trained on such captions).
        vocabularies: labels per dataset from the shard manifest (datasets outside the
            catalog, e.g. GeoTIFF scenes labelled by their vector files, need them).
    """
    results, unscored = {}, not_evaluable(enc, vocabularies)
    for ds in dict.fromkeys(enc.datasets.tolist()):
        vocab = vocabulary_of(ds, vocabularies)
        if not vocab:  # an image-text corpus without labels: see caption_retrieval
            continue
        if ds in unscored:
            continue
        prompts = label_prompts(ds, metadata=metadata, vocabulary=vocab)
        text = encode_texts(model, tokenizer, prompts, device=device)
        idx = np.flatnonzero(enc.datasets == ds)
        scores = enc.image_features[idx] @ text.T
        truth = label_matrix([enc.labels[i] for i in idx], vocab)
        results[ds] = score_dataset(ds, vocab, scores, truth, idx, ks, n_boot, seed)
    return results


def score_dataset(dataset: str, vocabulary, scores: np.ndarray, truth: np.ndarray,
                  index: np.ndarray, ks=KS, n_boot: int = 2000, seed: int = 0) -> DatasetResult:
    """All metrics of one dataset from its (N, L) scores and truth."""
    res = DatasetResult(dataset, tuple(vocabulary), len(truth), int((~truth.any(1)).sum()),
                        scores, truth, index)
    ranking = rank(scores)
    has = truth.any(axis=1)
    for k in ks:
        res.recall[k] = recall_at_k(ranking, truth, k)
        res.chance[k] = chance_recall_at_k(truth, k)
        if res.recall[k] is not None:
            hits = hits_at_k(ranking[has], truth[has], k).astype(float) * 100.0
            res.ci[k] = bootstrap_ci(hits, n_boot=n_boot, seed=seed + k)
        res.t2i[k] = text_to_image_recall(scores, truth, k)
    return res


def results_table(results: dict[str, DatasetResult], ks=KS):
    """One row per dataset: labels, images, R@K with 95 % interval and chance."""
    import pandas as pd

    rows = []
    for ds, r in results.items():
        row = {"dataset": ds, "labels": len(r.vocabulary), "images": r.n_images - r.no_labels,
               "no labels": r.no_labels}
        for k in ks:
            v = r.recall[k]
            row[f"R@{k}"] = "-" if v is None else round(v, 1)
            row[f"R@{k} 95% CI"] = ("-" if v is None else
                                   f"{r.ci[k][0]:.1f}-{r.ci[k][1]:.1f}")
            row[f"chance R@{k}"] = "-" if r.chance[k] is None else round(r.chance[k], 1)
        rows.append(row)
    return pd.DataFrame(rows).set_index("dataset") if rows else pd.DataFrame()


def summary_metrics(results: dict[str, DatasetResult], ks=KS) -> dict:
    """Flat metrics for metrics.json: per dataset and means (over datasets where defined)."""
    out: dict = {"per_dataset": {}}
    for ds, r in results.items():
        out["per_dataset"][ds] = {
            "labels": len(r.vocabulary), "images": r.n_images, "no_labels": r.no_labels,
            **{f"R@{k}": _r(r.recall[k]) for k in ks},
            **{f"chance_R@{k}": _r(r.chance[k]) for k in ks},
            **{f"R@{k}_ci95": [round(x, 2) for x in r.ci[k]] for k in ks if k in r.ci},
            **{f"t2i_R@{k}": _r(r.t2i[k][0]) for k in ks},
            **{f"t2i_chance_R@{k}": _r(r.t2i[k][1]) for k in ks},
        }
    for k in ks:
        vals = [r.recall[k] for r in results.values() if r.recall[k] is not None]
        chance = [r.chance[k] for r in results.values() if r.recall[k] is not None]
        out[f"mean_R@{k}"] = _r(float(np.mean(vals))) if vals else None
        out[f"mean_chance_R@{k}"] = _r(float(np.mean(chance))) if chance else None
    return out


def _r(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 2)






# --- multi-caption retrieval (image-text corpora: RSICD, UCM-captions, RSITMD, Sydney) ----------

@dataclass
class CaptionResult:
    """Image-text retrieval of one dataset with several captions per image.

    Protocol of RemoteCLIP and clip_benchmark: image to text, a hit when any of the image's own
    captions is among the top K of all captions of the dataset; text to image, per caption, a
    hit when its image is among the top K images; mean recall = mean of the six R@K.
    """

    dataset: str
    n_images: int
    n_captions: int
    i2t: dict  # k -> percent
    t2i: dict
    i2t_hits: np.ndarray  # (N, len(ks)) bool, per image
    index: np.ndarray
    top_captions: list[list[str]]
    i2t_chance: dict = field(default_factory=dict)  # k -> percent, exact for random rankings
    t2i_chance: dict = field(default_factory=dict)

    @property
    def mean_recall(self) -> float:
        return float(np.mean([*self.i2t.values(), *self.t2i.values()]))


def caption_recall(sim: np.ndarray, owner: np.ndarray, ks=KS) -> tuple[dict, dict, np.ndarray]:
    """(i2t R@K, t2i R@K, per-image i2t hits) from an (N images, M captions) similarity matrix
    and the image index of each caption."""
    n, m = sim.shape
    order_t = np.argsort(-sim, axis=1, kind="stable")  # captions per image
    own = owner[order_t] == np.arange(n)[:, None]
    first = np.where(own.any(axis=1), own.argmax(axis=1), m)
    order_i = np.argsort(-sim.T, axis=1, kind="stable")  # images per caption
    rank_img = (order_i == owner[:, None]).argmax(axis=1)
    i2t = {k: 100.0 * float((first < k).mean()) for k in ks}
    t2i = {k: 100.0 * float((rank_img < k).mean()) for k in ks}
    hits = np.stack([first < k for k in ks], axis=1)
    return i2t, t2i, hits


def caption_retrieval(model, tokenizer, enc: Encoded, ks=KS, device: str = "cpu",
                      vocabularies: dict | None = None) -> dict[str, CaptionResult]:
    """Multi-caption retrieval for every dataset of ``enc`` whose images carry captions of
    their own and no labels (corpora read with the karpathy or table reader); datasets that
    cannot be scored (:func:`not_evaluable`) are left out."""
    out, unscored = {}, not_evaluable(enc, vocabularies)
    for ds in dict.fromkeys(enc.datasets.tolist()):
        if vocabulary_of(ds, vocabularies) or ds in unscored:
            continue
        idx = np.flatnonzero(enc.datasets == ds)
        texts, owner = [], []
        for row, i in enumerate(idx):
            texts += enc.all_captions[i]
            owner += [row] * len(enc.all_captions[i])
        feats = encode_texts(model, tokenizer, texts, device=device)
        sim = enc.image_features[idx] @ feats.T
        owner = np.array(owner)
        i2t, t2i, hits = caption_recall(sim, owner, ks)
        top = [[texts[j] for j in np.argsort(-sim[r])[:3]] for r in range(len(idx))]
        own = np.bincount(owner, minlength=len(idx))
        out[ds] = CaptionResult(
            ds, len(idx), len(texts), i2t, t2i, hits, idx, top,
            i2t_chance={k: 100.0 * float(chance_hit_probability(len(texts), own, k).mean())
                        if k < len(texts) else None for k in ks},
            t2i_chance={k: 100.0 * min(k, len(idx)) / len(idx) for k in ks})
    return out


def caption_table(results: dict[str, CaptionResult]):
    import pandas as pd

    rows = [{"dataset": ds, "images": r.n_images, "captions": r.n_captions,
             **{f"image->text R@{k}": round(r.i2t[k], 1) for k in r.i2t},
             **{f"text->image R@{k}": round(r.t2i[k], 1) for k in r.t2i},
             "mean recall": round(r.mean_recall, 1),
             "chance image->text R@1": _r(r.i2t_chance.get(1)),
             "chance text->image R@1": _r(r.t2i_chance.get(1))} for ds, r in results.items()]
    return pd.DataFrame(rows).set_index("dataset") if rows else pd.DataFrame()


