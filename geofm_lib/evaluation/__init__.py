"""Evaluation: retrieval metrics, zero-shot and caption retrieval, multi-label probes.
"""

from .bootstrap import bootstrap_ci, bootstrap_stats, interval, resamples
from .finetune import FineTuned, fit_head, output_width
from .metrics import (
    KS,
    average_precision,
    chance_hit_probability,
    chance_recall_at_k,
    hits_at_k,
    label_matrix,
    per_class_recall,
    predicted_sets,
    rank,
    recall_at_k,
    text_to_image_recall,
)
from .predictions import (
    REQUIRED,
    Prediction,
    best_and_worst,
    caption_predictions,
    label_predictions,
    read_predictions,
    write_predictions,
)
from .probes import (
    GRIDS,
    PROBES,
    Embeddings,
    ProbeResult,
    bootstrap_metrics,
    fbeta_counts,
    fit_predict,
    mean_over_datasets,
    multilabel_metrics,
    probe_dataset,
    probe_datasets,
    run_probe,
    run_probes,
)
from .projection import set_threads, umap_2d
from .retrieval import (
    CaptionResult,
    DatasetResult,
    Encoded,
    caption_recall,
    caption_retrieval,
    caption_table,
    encode_split,
    encode_texts,
    not_evaluable,
    results_table,
    score_dataset,
    summary_metrics,
    vocabulary_of,
    zero_shot,
)

__all__ = [
    "KS", "label_matrix", "rank", "hits_at_k", "recall_at_k", "chance_hit_probability",
    "chance_recall_at_k", "text_to_image_recall", "predicted_sets", "per_class_recall",
    "average_precision", "resamples", "interval", "bootstrap_ci", "bootstrap_stats", "Encoded",
    "encode_texts", "encode_split", "DatasetResult", "vocabulary_of", "zero_shot",
    "score_dataset", "results_table", "summary_metrics", "CaptionResult", "caption_recall",
    "caption_retrieval", "caption_table", "not_evaluable", "PROBES", "fbeta_counts",
    "multilabel_metrics",
    "bootstrap_metrics", "GRIDS", "fit_predict", "ProbeResult", "run_probe", "probe_dataset",
    "probe_datasets", "run_probes",
    "Embeddings", "mean_over_datasets", "FineTuned", "output_width", "fit_head", "REQUIRED",
    "Prediction", "write_predictions", "read_predictions", "label_predictions",
    "best_and_worst", "caption_predictions", "set_threads", "umap_2d",
]
