"""The values the workspace's parameters choose from, where the config owns them: the readers
of ``sources``, the run-wide sources, the SSL pair modes, methods and backbones, the presets.
(The enumerations other layers own stay there: ``evaluation.PROBES``, ``segmenter.PROTOCOLS``.)
"""

from __future__ import annotations

# The readers of the ``sources`` parameter (``data.sources.registry.READERS`` opens each).
READERS = ("simulator", "torchgeo", "karpathy", "geotiff", "table", "xview", "coco", "dota",
           "agriculture_vision", "class_masks", "qfabric", "spectral_earth")
# The whole-run ``source`` values (one reader for every dataset of the run).
SOURCES = ("simulator", "bigearthnet", "geotiff")

# The positive-pair modes of self-supervised pretraining (seed 003): name -> (the name seed
# 003's tables print, what a pair is). ``ssl.pairs.VIEWS`` draws the views of each.
SSL_MODES: dict[str, tuple[str, str]] = {
    "augment": ("augmentation pairs", "two views of one image"),
    "sensor": ("sensor pairs", "S1 and S2 of a place"),
    "fusion_all": ("all fusion", "S1+S2 stacked"),
    "fusion_partial": ("partial fusion", "S1, S2 or S1+S2 per sample"),
}

# Self-supervised methods (seed 001 compares the three; ``ssl.methods.METHODS`` builds each).
SSL_METHODS: dict[str, str] = {
    "moco": "MoCo-v2, torchgeo's MoCoTask: query/key encoders, a queue of negatives",
    "dino": "DINO, lightly's head and loss: a momentum teacher, multi-crop self-distillation",
    "mae": "MAE, lightly's masked ViT: reconstruct the masked patches (ViT backbones only)",
}
# Encoders of SSL runs: timm ResNets, and ViTs named by width and patch (timm's <name>_224,
# made at the data's image_px). ViT-S/16 is seed 001's; the tiny one is for CPU tests.
SSL_BACKBONES = ("resnet18", "resnet34", "resnet50", "vit_small_patch16", "vit_small_patch8",
                 "vit_tiny_patch16")


def vit_patch_px(backbone: str) -> int:
    """The patch side of a ViT backbone name (``vit_small_patch16`` -> 16)."""
    return int(backbone.rsplit("patch", 1)[1])

# The size presets (parameters/<preset>.yaml); every other set there is an experiment.
PRESETS = ("ci", "demo", "full")
