"""Self-supervised pretraining (seeds 003 and 001): positive pairs, MoCo-v2, DINO and MAE
(``ssl.methods``, loaded with Lightning when a run starts), the training run and its evaluation.
"""

from .evaluation import (
    MODE_NAMES,
    SingleLabels,
    accuracy_ci,
    compare_runs,
    evaluate,
    features_of,
    finished_encoders,
    headline_scores,
    labelled_subset,
    not_evaluable,
    save_evaluation,
    single_label_probe,
    single_labels,
)
from .model import (
    METHOD_LABELS,
    SSL_FORMAT,
    augmentations,
    backbone_label,
    build_task,
    collapse_check,
    embedding_std,
    make_backbone,
    method_config,
    method_label,
    parse_method,
    stem_conv1x1,
)
from .pairs import (
    INPUTS,
    PAIR_MODES,
    SAMPLES_PER_PLACE,
    VIEWS,
    EpochSampler,
    Pairs,
    PairViews,
    load_pairs,
    may_have_pairs,
    non_overlapping,
)
from .pretraining import SSLResult, mae_reconstructions, pretrain, read_encoder
from .protocols import PROTOCOLS, protocol_rows, protocol_table

__all__ = [
    "INPUTS", "Pairs", "may_have_pairs", "load_pairs", "non_overlapping", "VIEWS",
    "SAMPLES_PER_PLACE", "PAIR_MODES", "PairViews", "EpochSampler", "SSL_FORMAT",
    "augmentations", "build_task", "stem_conv1x1", "make_backbone", "embedding_std",
    "collapse_check", "SSLResult", "pretrain", "read_encoder", "mae_reconstructions",
    "METHOD_LABELS", "features_of",
    "labelled_subset", "accuracy_ci", "single_label_probe", "SingleLabels", "single_labels",
    "evaluate", "finished_encoders", "headline_scores", "not_evaluable", "MODE_NAMES",
    "save_evaluation", "compare_runs", "parse_method", "method_config", "method_label",
    "backbone_label", "PROTOCOLS", "protocol_rows", "protocol_table",
]
