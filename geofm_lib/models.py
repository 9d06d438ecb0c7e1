"""Models by name: OpenCLIP's model factory and tokenizer, plus geofm's small CPU configs.

Model shapes are JSON configs in OpenCLIP's format. ``geofm_lib/model_configs/`` adds two
small ones for CPU demos (``RN50-tiny``: a one-block-per-stage ModifiedResNet, ``ViT-tiny``:
a 4-layer ViT with 8 px patches; both with a 3-layer text transformer and the standard 77-token
SimpleTokenizer) to OpenCLIP's own registry (``RN50``, ``ViT-B-32``, ``ViT-B-16``, ...).

Input images (``band_adapter='rgb'``, the default): the stock image towers take 3 channels,
so every product is mapped to 3 channels here (``to_model_input``), then standardised with the
per-dataset band statistics of the training split (from the shard manifest):

* Sentinel-2 (12/13 bands, reflectance x 10000): B04, B03, B02 (true colour), as seed 000 used
  three Sentinel-2 channels;
* Sentinel-1 (VV, VH in dB): VV, VH and VV - VH (the cross-polarisation ratio in dB);
* RGB cameras: R, G, B; panchromatic: the grey band three times.

With a band adapter (``conv1x1``, ``first_layer``, ``wavelength``; ``geofm_lib/adapters.py``)
the tower takes every band: the input is the ordered union of the run's bands, each sample
filling its own bands' channels (``BandSlots``), standardised per band the same way.

Pretrained weights are opt-in (``pretrained``: an OpenCLIP tag or a local file) and never
fall back silently to random weights: when they cannot be loaded, ``PretrainedUnavailable``
says why and what to do.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import PretrainedUnavailable  # noqa: F401  (re-exported)

CONFIG_DIR = Path(__file__).with_name("model_configs")
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


def register_configs() -> None:
    """Add geofm's model configs to OpenCLIP's registry (idempotent)."""
    import open_clip

    if not all(n in open_clip.list_models() for n in SMALL_MODELS):
        open_clip.add_model_config(CONFIG_DIR)


def resolve_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' if available, then 'mps', then 'cpu'; an unavailable device is an error."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but PyTorch sees no CUDA GPU here; use device='auto' "
                           "or 'cpu', or install a CUDA build of torch")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' but Apple's Metal backend is not available here; "
                           "use device='auto' or 'cpu'")
    return name


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> 'bf16' on CUDA, 'fp32' elsewhere; half precision on CPU is refused."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    if precision == "fp16" and device == "cpu":
        raise RuntimeError("precision='fp16' needs a GPU (CPU autocast supports bf16); "
                           "use precision='auto', 'fp32' or 'bf16'")
    return precision


def _check_pretrained(model_name: str, pretrained: str) -> str:
    """Validate ``pretrained`` before any download: a local file, or a tag OpenCLIP knows."""
    import open_clip

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


def create_model(model_name: str, image_px: int, pretrained: str | None = None,
                 device: str = "cpu", seed: int = 0, band_adapter: str = "rgb",
                 bands: list[str] | None = None):
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

    Returns:
        (model, tokenizer)

    Raises:
        PretrainedUnavailable: pretrained weights asked for but not loadable (offline, unknown
            tag, missing file); never a silent fallback to random weights.
    """
    import open_clip
    import torch

    register_configs()
    torch.manual_seed(seed)
    kwargs = dict(force_image_size=image_px, output_dict=True, device=device)
    if pretrained is None:
        # OpenCLIP logs a warning for random init; from scratch is what was asked for here
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            model = open_clip.create_model(model_name, pretrained=None, **kwargs)
        finally:
            quiet.setLevel(level)
    else:
        source = _check_pretrained(model_name, pretrained)
        try:
            model = open_clip.create_model(model_name, pretrained=source,
                                           require_pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001  (network, hub, file format errors)
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise PretrainedUnavailable(
                f"could not load pretrained weights {pretrained!r} for {model_name!r}: "
                f"{type(exc).__name__}: {str(exc)[:300]}. "
                + ("HF_HUB_OFFLINE=1 is set, so nothing can be downloaded; " if offline else "")
                + "download them once on a machine with internet (they are cached under "
                  "~/.cache/huggingface), pass a local .pt file, or set pretrained=None to "
                  "train from scratch") from exc
    if band_adapter != "rgb":
        from .adapters import AdapterError, adapt_visual

        if not bands:
            raise AdapterError(f"band_adapter={band_adapter!r} needs the model's input bands "
                               f"(models.input_spec of the shard manifest)")
        adapt_visual(model.visual, band_adapter, list(bands))
    tokenizer = open_clip.get_tokenizer(model_name)
    return model, tokenizer


def count_parameters(model) -> dict:
    """Trainable parameters of the image tower, the text side and the whole model."""
    total = sum(p.numel() for p in model.parameters())
    visual = sum(p.numel() for p in model.visual.parameters())
    return {"total": total, "image": visual, "text_and_other": total - visual}


# --- input mapping ------------------------------------------------------------------------------

def input_bands(bands: list[str]) -> tuple[list[int], str]:
    """Indices of the 3 model channels in a product's band list, and the rule used."""
    if "B04" in bands and "B03" in bands and "B02" in bands:
        return [bands.index(b) for b in ("B04", "B03", "B02")], "sentinel2_true_colour"
    if bands[:2] == ["VV", "VH"] or ("VV" in bands and "VH" in bands):
        return [bands.index("VV"), bands.index("VH")], "sar_vv_vh_ratio"
    lower = [b.lower() for b in bands]
    if {"red", "green", "blue"} <= set(lower):  # named colour bands in any order
        return [lower.index(c) for c in ("red", "green", "blue")], "rgb"
    if len(bands) >= 3:
        return [0, 1, 2], "rgb"
    if len(bands) == 1:
        return [0, 0, 0], "grey"
    raise ValueError(f"cannot map bands {bands} to 3 model channels: need Sentinel-2 B02-B04, "
                     f"Sentinel-1 VV+VH, 3 colour bands or 1 grey band")


def channel_stats(band_stats: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-dataset mean and std of the 3 model channels, from the manifest's band statistics."""
    out = {}
    for ds, st in band_stats.items():
        bands, mean, std = st["bands"], np.asarray(st["mean"]), np.asarray(st["std"])
        idx, rule = input_bands(bands)
        if rule == "sar_vv_vh_ratio":
            m = np.array([mean[idx[0]], mean[idx[1]], mean[idx[0]] - mean[idx[1]]])
            # the VV-VH spread is not in the manifest; the two bands' spreads bound it
            s = np.array([std[idx[0]], std[idx[1]], np.hypot(std[idx[0]], std[idx[1]])])
        else:
            m, s = mean[idx], std[idx]
        out[ds] = (m.astype(np.float32), np.maximum(s, 1e-6).astype(np.float32))
    return out


@dataclass(frozen=True)
class BandSlots:
    """Where one dataset's bands go in a multi-band model input, with their statistics."""

    source: tuple[int, ...]  # band indices in the product
    slots: tuple[int, ...]   # channel positions in the model input
    channels: int            # model input channels
    mean: np.ndarray         # of the source bands (training split)
    std: np.ndarray

    def to_state(self) -> dict:
        return {"source": list(self.source), "slots": list(self.slots),
                "channels": self.channels, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def place(cls, band_stat: dict, model_bands: list[str], raw: bool = False) -> BandSlots:
        """A dataset's manifest band statistics placed by name into a model's band layout.
        Bands outside the layout are left out; layout bands the data lacks stay 0. ``raw``:
        values pass unscaled (for encoders that normalise their input themselves)."""
        src = band_stat["bands"]
        keep = [i for i, b in enumerate(src) if b in model_bands]
        mean = np.asarray(band_stat["mean"], np.float32)[keep]
        std = np.maximum(np.asarray(band_stat["std"], np.float32)[keep], 1e-6)
        if raw:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        return cls(tuple(keep), tuple(model_bands.index(src[i]) for i in keep),
                   len(model_bands), mean, std)

    @classmethod
    def from_state(cls, d: dict) -> BandSlots:
        return cls(tuple(d["source"]), tuple(d["slots"]), int(d["channels"]),
                   np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def input_spec(band_stats: dict, band_adapter: str = "rgb"
               ) -> tuple[dict, list[str] | None]:
    """How each dataset becomes model input: (per-dataset stats, model bands).

    With ``rgb`` the stats are ``channel_stats`` (3 channels) and there are no model bands;
    with a band adapter they are ``BandSlots`` into the union of the datasets' bands.
    """
    from .adapters import check_adapter, model_bands

    check_adapter(band_adapter)
    if band_adapter == "rgb":
        return channel_stats(band_stats), None
    bands = model_bands([st["bands"] for st in band_stats.values()])
    if band_adapter == "wavelength":
        from .adapters import band_wavelength_nm

        for b in bands:
            band_wavelength_nm(b)  # every band needs a wavelength: fail now, not mid-training
    return {ds: BandSlots.place(st, bands) for ds, st in band_stats.items()}, bands


def stats_to_state(stats: dict) -> dict:
    """Per-dataset input statistics as plain lists/dicts (for checkpoints)."""
    return {ds: (v.to_state() if isinstance(v, BandSlots) else [v[0].tolist(), v[1].tolist()])
            for ds, v in stats.items()}


def stats_from_state(state: dict) -> dict:
    """Inverse of ``stats_to_state``."""
    return {ds: (BandSlots.from_state(v) if isinstance(v, dict) else
                 (np.asarray(v[0], np.float32), np.asarray(v[1], np.float32)))
            for ds, v in state.items()}


def to_model_input(img: np.ndarray, bands: list[str],
                   stats: tuple[np.ndarray, np.ndarray] | BandSlots) -> np.ndarray:
    """Model input from a (C, H, W) product, standardised per band: (3, H, W) float32 for the
    RGB towers, (model bands, H, W) with this product's bands filled for band adapters."""
    if isinstance(stats, BandSlots):
        if len(bands) != len(stats.source):
            raise ValueError(f"product has {len(bands)} bands {bands}, the model's layout for "
                             f"its dataset expects {len(stats.source)}")
        x = np.zeros((stats.channels, *img.shape[1:]), np.float32)
        sel = img[list(stats.source)].astype(np.float32)
        x[list(stats.slots)] = (sel - stats.mean[:, None, None]) / stats.std[:, None, None]
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        return x
    idx, rule = input_bands(bands)
    if rule == "sar_vv_vh_ratio":
        vv, vh = img[idx[0]].astype(np.float32), img[idx[1]].astype(np.float32)
        x = np.stack([vv, vh, vv - vh])
    else:
        x = img[idx].astype(np.float32)
    mean, std = stats
    x = (x - mean[:, None, None]) / std[:, None, None]
    if not np.isfinite(x).all():
        # NaN/inf nodata pixels of real products (counted per dataset in the manifest's
        # band_stats as nonfinite_values) are masked with the band mean, 0 after scaling
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x
