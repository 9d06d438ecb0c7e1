"""Public remote-sensing CLIP models as baselines: RemoteCLIP, GeoRSCLIP and SkyCLIP, loaded
through open_clip from their published checkpoint files, each with its own preprocessing.

Names: ``remoteclip:<arch>[:<file>]``, ``georsclip:<arch>[:<file>]``,
``skyclip:<arch>[:<file>]``, e.g. ``remoteclip:ViT-B-32``. The file is found, in order: the
one named; ``$GEOFM_WEIGHTS/<name>/<file name>`` (default ``~/.cache/geofm/weights``); a
download from the Hugging Face Hub where the model is published there and the network is
allowed. Offline and absent, the error names the file, where to get it and where to put it;
there is never a fallback to other weights.

Their preprocessing, as published: 3 bands (red, green, blue, picked by name or wavelength as
everywhere) scaled to [0, 1], resized to the model's input size (224 px, bicubic) and
normalised with the model's mean and std (OpenAI CLIP's). Scaling to [0, 1] per product:
8-bit cameras / 255; Sentinel-2-style reflectance x 10000 / 3000 (0.3 reflectance is white, a
true-colour stretch); other optical products mean + 3 sd of the training split is white;
SAR (VV, VH, VV - VH in dB) from -25 dB to 0 dB. The checkpoints are open_clip state dicts (a
plain one, or a training checkpoint's ``state_dict`` with ``module.`` prefixes: SkyCLIP's), read
by open_clip's own loader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geofm_lib.errors import EncoderError, PretrainedUnavailable
from geofm_lib.models.inputs import RGBInput, channel_stats


@dataclass(frozen=True)
class PublicModel:
    title: str
    archs: dict[str, str]  # open_clip architecture -> checkpoint file name
    hub_repo: str | None  # Hugging Face repository holding the files (None: not on the hub)
    hub_folder: str  # folder of the files inside the repository
    where: str  # where a person downloads them
    paper: str


PUBLIC: dict[str, PublicModel] = {
    "remoteclip": PublicModel(
        "RemoteCLIP", {"RN50": "RemoteCLIP-RN50.pt", "ViT-B-32": "RemoteCLIP-ViT-B-32.pt",
                       "ViT-L-14": "RemoteCLIP-ViT-L-14.pt"},
        "chendelong/RemoteCLIP", "", "https://huggingface.co/chendelong/RemoteCLIP",
        "Liu et al., RemoteCLIP, IEEE TGRS 2024"),
    "georsclip": PublicModel(
        "GeoRSCLIP", {"ViT-B-32": "RS5M_ViT-B-32.pt", "ViT-L-14": "RS5M_ViT-L-14.pt",
                      "ViT-L-14-336": "RS5M_ViT-L-14-336.pt", "ViT-H-14": "RS5M_ViT-H-14.pt"},
        "Zilun/GeoRSCLIP", "ckpt", "https://huggingface.co/Zilun/GeoRSCLIP (folder ckpt/)",
        "Zhang et al., RS5M and GeoRSCLIP, IEEE TGRS 2024"),
    "skyclip": PublicModel(
        "SkyCLIP", {"ViT-B-32": "SkyCLIP_ViT_B32_top50pct/epoch_20.pt",
                    "ViT-L-14": "SkyCLIP_ViT_L14_top30pct/epoch_20.pt"},
        None, "", "the checkpoint links of https://github.com/wangzhecheng/SkyScript "
                  "(SkyCLIP-50 ViT-B/32, SkyCLIP-30 ViT-L/14)",
        "Wang et al., SkyScript, AAAI 2024"),
}
"""The public remote-sensing CLIP models; another is one entry (open_clip architecture and
file names)."""


def weights_folder() -> Path:
    return Path(os.environ.get("GEOFM_WEIGHTS", "~/.cache/geofm/weights")).expanduser()


def parse(encoder: str) -> tuple[str, str, Path | None]:
    """(model key, architecture, file or None) of ``<model>:<arch>[:<file>]``, checked."""
    name, _, rest = encoder.partition(":")
    arch, _, file = rest.partition(":")
    spec = PUBLIC.get(name)
    if spec is None or not arch:
        raise EncoderError(f"encoder {encoder!r}: write <model>:<arch>[:<file>] with model one "
                           f"of {', '.join(PUBLIC)}, e.g. remoteclip:ViT-B-32")
    if arch not in spec.archs:
        raise EncoderError(f"{spec.title} is published for {', '.join(spec.archs)}, not "
                           f"{arch!r} (encoder {encoder!r})")
    return name, arch, Path(file).expanduser() if file else None


def check(encoder: str) -> None:
    _, _, file = parse(encoder)
    if file is not None and not file.is_file():
        raise EncoderError(f"encoder {encoder!r}: no such checkpoint file {str(file)!r}")


def weights_file(encoder: str) -> Path:
    """The checkpoint file of a public model (see the module docstring for the order).

    Raises:
        PretrainedUnavailable: not here and not downloadable now, naming what to download and
            where to put it.
    """
    name, arch, file = parse(encoder)
    spec = PUBLIC[name]
    if file is not None:
        if not file.is_file():
            raise EncoderError(f"encoder {encoder!r}: no such checkpoint file {str(file)!r}")
        return file
    local = weights_folder() / name / spec.archs[arch]
    if local.is_file():
        return local
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if spec.hub_repo is not None and not offline:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(spec.hub_repo, "/".join(
                p for p in (spec.hub_folder, spec.archs[arch]) if p)))
        except Exception as exc:  # noqa: BLE001 - no network, no such file: said below
            reason = f" (the download failed: {type(exc).__name__}: {str(exc)[:120]})"
    else:
        reason = " (HF_HUB_OFFLINE=1: no download)" if spec.hub_repo else ""
    raise PretrainedUnavailable(
        f"{spec.title} {arch} weights are not on this machine{reason}: download "
        f"{spec.archs[arch]} from {spec.where} and put it at {local} (or set GEOFM_WEIGHTS to "
        f"the folder holding {name}/), or name the file: {name}:{arch}:/path/to/"
        f"{Path(spec.archs[arch]).name}")


def scaling(band_stat: dict, rgb: RGBInput) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) per model channel taking a product's picked bands to [0, 1] (see the
    module docstring)."""
    if rgb.rule == "sar_vv_vh_ratio":
        return np.array([-25.0, -25.0, -25.0], np.float32), np.array([25.0] * 3, np.float32)
    bands = band_stat["bands"]
    mean = np.asarray(band_stat["mean"], np.float64)[list(rgb.idx)]
    std = np.asarray(band_stat["std"], np.float64)[list(rgb.idx)]
    if rgb.rule == "sentinel2_true_colour" or {"B04", "B03", "B02"} <= set(bands):
        return np.zeros(3, np.float32), np.full(3, 3000.0, np.float32)
    if float((mean + 3 * std).max()) <= 255 * 1.05:
        return np.zeros(3, np.float32), np.full(3, 255.0, np.float32)
    white = float((mean + 3 * std).max())
    return np.zeros(3, np.float32), np.full(3, max(white, 1e-6), np.float32)


class _PreprocessedTower(torch.nn.Module):
    """The model's image tower behind its own preprocessing: inputs in [0, 1]-scaled units
    (the statistics of :func:`load` make them) are clipped, resized to the model's size and
    normalised with its mean and std. Fine-tuning (06) trains this tower, so it sees the same
    input as the frozen embeddings."""

    def __init__(self, visual, size: int, mean, std):
        super().__init__()
        self.net = visual
        self.size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        x = x.float().clamp(0, 1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic",
                                                align_corners=False, antialias=True).clamp(0, 1)
        return self.net((x - self.mean) / self.std)


class PublicCLIP(torch.nn.Module):
    """An open_clip model whose image tower (``visual``) carries its own preprocessing."""

    def __init__(self, model, size: int, mean, std):
        super().__init__()
        self.model = model
        self.visual = _PreprocessedTower(model.visual, size, mean, std)
        self.logit_scale = model.logit_scale

    def encode_image(self, x, normalize: bool = False):
        f = self.visual(x)
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f

    def encode_text(self, tokens, normalize: bool = False):
        return self.model.encode_text(tokens, normalize=normalize)


def load(encoder: str, band_stats: dict, device: str = "cpu"):
    """(model with its preprocessing, per-dataset input statistics) of a public model.

    Raises:
        PretrainedUnavailable: the weights are not here (what to download, where to put it);
        EncoderError: a file that is not this architecture's checkpoint.
    """
    import open_clip

    name, arch, _ = parse(encoder)
    path = weights_file(encoder)
    try:
        model = open_clip.create_model(arch, pretrained=str(path), device=device,
                                       require_pretrained=True)
    except Exception as exc:  # noqa: BLE001 - a wrong or damaged file: say which
        raise EncoderError(f"{path.name} is not a {PUBLIC[name].title} {arch} checkpoint "
                           f"open_clip can read ({type(exc).__name__}: {str(exc)[:200]})"
                           ) from None
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else int(size)
    mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
    stats = {}
    for ds, rgb in channel_stats(band_stats).items():
        offset, scale = scaling(band_stats[ds], rgb)
        stats[ds] = RGBInput(rgb.idx, rgb.rule, offset, scale, rgb.nodata)
    return PublicCLIP(model, size, mean, std).to(device).eval(), stats
