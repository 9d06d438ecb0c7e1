"""Frozen encoders by name, their cached embeddings, and fine-tuning on a dataset.
"""

from .embeddings import cache_path, embed
from .finetuning import FinetuneResult, finetune
from .registry import (
    KINDS,
    EncoderKind,
    check_encoder_name,
    encoder_hash,
    has_text_tower,
    kind_of,
    load_encoder,
    tokenizer_for,
)
from .torchgeo_weights import (
    PREFIX,
    SUPPORTED,
    TorchGeoEncoder,
    canonical_band,
    load,
    parse,
    place_bands,
)

__all__ = [
    "EncoderKind", "KINDS", "kind_of", "check_encoder_name", "encoder_hash", "load_encoder",
    "tokenizer_for", "has_text_tower",
    "embed", "cache_path", "FinetuneResult", "finetune", "PREFIX", "SUPPORTED", "parse",
    "canonical_band", "place_bands", "load", "TorchGeoEncoder",
]
