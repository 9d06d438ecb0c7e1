"""Evaluation: retrieval metrics, zero-shot and caption retrieval, multi-label probes.
"""

from .metrics import (
    KS,
    average_precision,
    bootstrap_ci,
    chance_hit_probability,
    chance_recall_at_k,
    hits_at_k,
    per_class_recall,
    predicted_sets,
    rank,
    recall_at_k,
    text_to_image_recall,
    truth_matrix,
)
from .probes import (
    GRIDS,
    PROBES,
    Embeddings,
    ProbeResult,
    bootstrap_metrics,
    fbeta_counts,
    fit_predict,
    label_matrix,
    multilabel_metrics,
    probe_dataset,
    run_probe,
)
from .projection import set_threads, umap_2d
from .retrieval import (
    CaptionResult,
    DatasetResult,
    Encoded,
    best_and_worst,
    caption_predictions,
    caption_recall,
    caption_retrieval,
    caption_table,
    encode_split,
    encode_texts,
    predictions,
    results_table,
    score_dataset,
    summary_metrics,
    vocabulary_of,
    zero_shot,
)

__all__ = [
    "KS", "truth_matrix", "rank", "hits_at_k", "recall_at_k", "chance_hit_probability",
    "chance_recall_at_k", "bootstrap_ci", "text_to_image_recall", "predicted_sets",
    "per_class_recall", "average_precision", "Encoded", "encode_texts", "encode_split",
    "DatasetResult", "vocabulary_of", "zero_shot", "score_dataset", "results_table",
    "summary_metrics", "predictions", "best_and_worst", "CaptionResult", "caption_recall",
    "caption_retrieval", "caption_table", "caption_predictions", "PROBES", "fbeta_counts",
    "multilabel_metrics", "bootstrap_metrics", "GRIDS", "fit_predict", "ProbeResult",
    "run_probe", "label_matrix", "probe_dataset", "Embeddings", "set_threads", "umap_2d",
]
