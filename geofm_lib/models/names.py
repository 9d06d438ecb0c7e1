"""Model names without loading a model: geofm's configs and OpenCLIP's, and the check of a
``pretrained`` choice. Cheap to import (no torch), so parameters are checked at once.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from geofm_lib.errors import PretrainedUnavailable

CONFIG_DIR = Path(__file__).with_name("configs")


SMALL_MODELS = ("RN50-tiny", "ViT-tiny")


@lru_cache(maxsize=1)
def known_model_names() -> tuple[str, ...]:
    """Model config names from geofm and OpenCLIP, read from their JSON files (no torch import)."""
    names = {p.stem for p in CONFIG_DIR.glob("*.json")}
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            names.update(p.stem for p in (Path(loc) / "model_configs").glob("*.json"))
    return tuple(sorted(names))


def check_pretrained(model_name: str, pretrained: str) -> str:
    """Validate ``pretrained`` before any download: a local file, or a tag OpenCLIP knows."""
    import open_clip  # deferred: several seconds to import, needed only for a pretrained tag

    if pretrained.startswith(("hf-hub:", "local-dir:")):  # OpenCLIP takes these as the model
        offline = (" (HF_HUB_OFFLINE=1 is set here, so the hub cannot be reached: download "
                   "the repository once where it can)") if pretrained.startswith("hf-hub:") \
            and os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise PretrainedUnavailable(
            f"pretrained={pretrained!r}: OpenCLIP loads a Hugging Face hub or local-dir model "
            f"by its model name, with config and weights together: set model={pretrained!r} "
            f"and pretrained=None{offline}")
    if os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedUnavailable(
                f"pretrained={pretrained!r}: no such file; give an existing checkpoint file, an "
                f"OpenCLIP tag, or None to train from scratch")
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise PretrainedUnavailable(
            f"OpenCLIP has no pretrained weights {pretrained!r} for model {model_name!r}; "
            f"tags for this model: {', '.join(tags) or 'none (train from scratch: None)'}")
    return pretrained
