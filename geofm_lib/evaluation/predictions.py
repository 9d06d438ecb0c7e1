"""Per-image predictions: the records notebook 04 writes and notebook 05 maps.

``<work>/runs/<run>/predictions.jsonl`` (``paths.predictions_file``) holds one JSON object per
evaluated image, sorted keys, one per line:

* ``key``, ``dataset``, ``caption`` and the sample's metadata (``footprint``, ``date``, ...);
* ``labels`` (true), ``predicted`` (its top |labels| labels), ``correct``, ``missed``, ``false``;
* ``top``: the best five labels with their scores; ``first_true_rank``, ``average_precision``;
* ``hit@1``, ``hit@5``, ``hit@10``: ``None`` where the image cannot score (no true label, or K at
  least the dataset's number of labels).

Caption datasets use the same schema: no labels, ``hit@K`` = the image's own caption in the top K.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

import numpy as np

from geofm_lib.errors import DataError
from geofm_lib.evaluation.metrics import KS, average_precision, predicted_sets
from geofm_lib.evaluation.retrieval import CaptionResult, DatasetResult, Encoded
from geofm_lib.io import atomic_write_bytes

REQUIRED = ("key", "dataset", "labels", "predicted", "top", "hit@1")


class Prediction(TypedDict, total=False):
    key: str
    dataset: str
    caption: str
    labels: list[str]
    top: list[dict]
    predicted: list[str]
    correct: list[str]
    missed: list[str]
    false: list[str]
    first_true_rank: int | None
    average_precision: float | None
    footprint: list[float] | None


def write_predictions(path: Path, records: list[Prediction]) -> Path:
    """Write the records atomically (one JSON object a line, keys sorted)."""
    for i, r in enumerate(records):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise DataError(f"prediction {i} ({r.get('key')!r}) lacks {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                     for r in records).encode())
    return path


def read_predictions(path: Path, run: str = "") -> list[Prediction]:
    """The records of a predictions file; a clear error when the file is missing or is not
    one (it names the notebook that writes it)."""
    rerun = ("run notebooks/04_zero_shot_eval.ipynb with the same parameters first"
             + (f" (run {run})" if run else ""))
    if not path.is_file():
        raise DataError(f"no predictions at {path.parent.name}/{path.name}: {rerun}")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path.name} line {n} is not JSON ({exc.msg}): {rerun}") from None
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise DataError(f"{path.name} line {n} lacks {missing} (written by another geofm "
                            f"version?): {rerun}")
        records.append(rec)
    return records


def label_predictions(results: dict[str, DatasetResult], enc: Encoded, top: int = 5) -> list[dict]:
    """Per-image records (the file the map notebook reads)."""
    records = []
    for ds, r in results.items():
        ranking = r.ranking
        pred = predicted_sets(ranking, r.truth)
        ap = average_precision(r.scores, r.truth)
        n_labels = len(r.vocabulary)
        for row, i in enumerate(r.index):
            true = [r.vocabulary[j] for j in np.flatnonzero(r.truth[row])]
            predicted = [r.vocabulary[j] for j in np.flatnonzero(pred[row])]
            first = (int(np.flatnonzero(r.truth[row][ranking[row]])[0]) + 1
                     if true else None)
            rec = {
                "key": enc.keys[i], "dataset": ds, "caption": enc.captions[i],
                "labels": true,
                "top": [{"label": r.vocabulary[j], "score": round(float(r.scores[row, j]), 4)}
                        for j in ranking[row, :top]],
                "predicted": predicted,
                "correct": [x for x in predicted if x in true],
                "missed": [x for x in true if x not in predicted],
                "false": [x for x in predicted if x not in true],
                "first_true_rank": first,
                "average_precision": None if not true else round(float(ap[row]), 4),
                **{f"hit@{k}": (None if not true or k >= n_labels
                                else bool(first is not None and first <= k)) for k in KS},
                **enc.meta[i],
            }
            records.append(rec)
    return records


def best_and_worst(records: list[dict], dataset: str, n: int = 2) -> tuple[list, list]:
    """The n best and n worst images of a dataset by the average precision of their ranking."""
    scored = [r for r in records if r["dataset"] == dataset and r["average_precision"] is not None]
    scored.sort(key=lambda r: (r["average_precision"], r["key"]))
    best = scored[::-1][:n]
    worst = [r for r in scored if r not in best][:n]  # disjoint when there are few images
    return best, worst


def caption_predictions(results: dict[str, CaptionResult], enc: Encoded) -> list[dict]:
    """Per-image records of caption datasets, in the schema of ``predictions`` (labels empty,
    ``hit@K`` = the image's own caption in the top K)."""
    records = []
    for ds, r in results.items():
        for row, i in enumerate(r.index):
            records.append({
                "key": enc.keys[i], "dataset": ds, "caption": enc.captions[i], "labels": [],
                "top": [{"label": t, "score": 0.0} for t in r.top_captions[row]],
                "predicted": r.top_captions[row][:1], "correct": [], "missed": [], "false": [],
                "first_true_rank": None, "average_precision": None,
                **{f"hit@{k}": bool(r.i2t_hits[row, j]) for j, k in enumerate(KS)},
                **enc.meta[i]})
    return records
