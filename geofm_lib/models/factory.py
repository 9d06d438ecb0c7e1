"""Models by name: OpenCLIP's model factory and tokenizer, plus geofm's small CPU configs.

Model shapes are JSON configs in OpenCLIP's format. ``geofm_lib/models/configs/`` adds two
small ones for CPU demos (``RN50-tiny``: a one-block-per-stage ModifiedResNet, ``ViT-tiny``:
a 4-layer ViT with 8 px patches; both with a 3-layer text transformer and the standard 77-token
SimpleTokenizer) to OpenCLIP's own registry (``RN50``, ``ViT-B-32``, ``ViT-B-16``, ...).

Pretrained weights are opt-in (``pretrained``: an OpenCLIP tag or a local file) and never
fall back silently to random weights: when they cannot be loaded, ``PretrainedUnavailable``
says why and what to do.
"""

from __future__ import annotations

import logging
import math

import torch

from geofm_lib.errors import AdapterError, PretrainedUnavailable, unavailable
from geofm_lib.models.adapters import adapt_visual
from geofm_lib.models.names import CONFIG_DIR, SMALL_MODELS, check_pretrained


def register_configs() -> None:
    """Add geofm's model configs to OpenCLIP's registry (idempotent)."""
    import open_clip

    if not all(n in open_clip.list_models() for n in SMALL_MODELS):
        open_clip.add_model_config(CONFIG_DIR)


def create_model(model_name: str, image_px: int, pretrained: str | None = None,
                 device: str = "cpu", seed: int = 0, band_adapter: str = "rgb",
                 bands: list[str] | None = None, loss: str = "clip"):
    """An OpenCLIP model and its tokenizer.

    Args:
        model_name: a config name (``RN50-tiny``, ``ViT-B-32``, ...).
        image_px: input side in pixels; the config's image size is overridden to match the
            shards (position embeddings of pretrained ViTs are interpolated by OpenCLIP).
        pretrained: None (random init with ``seed``), an OpenCLIP tag, or a local file.
        device: torch device name.
        seed: seed of the random initialisation.
        band_adapter: ``rgb`` (3-channel tower) or a band adapter (``conv1x1``,
            ``first_layer``, ``wavelength``) that makes the tower take ``bands``.
        bands: the model's input bands (``input_spec``); needed with a band adapter.
        loss: ``clip``, or ``siglip``: the model gets SigLIP's learned logit bias (initial
            -10) and its logit scale starts at log 10, as open_clip_train does for SigLIP.

    Returns:
        (model, tokenizer)

    Raises:
        PretrainedUnavailable: pretrained weights asked for but not loadable (offline, unknown
            tag, missing file); never a silent fallback to random weights.
    """
    import open_clip

    register_configs()
    torch.manual_seed(seed)
    kwargs = dict(force_image_size=image_px, output_dict=True, device=device)
    if loss == "siglip":
        kwargs.update(init_logit_scale=math.log(10), init_logit_bias=-10.0)
    elif loss != "clip":
        raise ValueError(f"loss={loss!r}; choose clip or siglip")
    if pretrained is None:
        # OpenCLIP logs a warning for random init; from scratch is what was asked for here
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            model = open_clip.create_model(model_name, pretrained=None, **kwargs)
        except Exception as exc:  # noqa: BLE001  (hf-hub: models read their config online)
            if not model_name.startswith("hf-hub:"):
                raise
            raise _hub_unavailable(model_name, exc) from exc
        finally:
            quiet.setLevel(level)
    else:
        source = check_pretrained(model_name, pretrained)
        try:
            model = open_clip.create_model(model_name, pretrained=source,
                                           require_pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001  (network, hub, file format errors)
            raise PretrainedUnavailable(unavailable(
                f"could not load pretrained weights {pretrained!r} for {model_name!r}", exc,
                "download them once on a machine with internet (they are cached under "
                "~/.cache/huggingface), pass a local .pt file, or set pretrained=None to "
                "train from scratch")) from exc
    if band_adapter != "rgb":
        if not bands:
            raise AdapterError(f"band_adapter={band_adapter!r} needs the model's input bands "
                               f"(models.inputs.input_spec of the shard manifest)")
        adapt_visual(model.visual, band_adapter, list(bands))
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # noqa: BLE001  (an hf-hub: tokenizer is read from the hub)
        if not model_name.startswith("hf-hub:"):
            raise
        raise _hub_unavailable(model_name, exc) from exc
    return model, tokenizer


def _hub_unavailable(model_name: str, exc: Exception) -> PretrainedUnavailable:
    return PretrainedUnavailable(unavailable(
        f"model {model_name!r} is read from the Hugging Face Hub (its config, tokenizer and "
        f"weights), which failed", exc,
        "download it once on a machine with internet (cached under ~/.cache/huggingface), "
        "or use an architecture by name with pretrained=None (`geofm params` lists them)", 200))


def count_parameters(model) -> dict:
    """Trainable parameters of the image tower, the text side and the whole model."""
    total = sum(p.numel() for p in model.parameters())
    visual = sum(p.numel() for p in model.visual.parameters())
    return {"total": total, "image": visual, "text_and_other": total - visual}
