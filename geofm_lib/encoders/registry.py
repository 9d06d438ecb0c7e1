"""Encoders by name (the ``encoders`` list of notebook 06):

* ``trained``: the CLIP image tower this run trained in ``03_pretrain`` (its checkpoint);
* ``init``: the same architecture at its random initialisation (same seed): the floor;
* ``checkpoint:<path>``: the image tower of another geofm checkpoint;
* ``open_clip:<model>:<tag>``: an OpenCLIP model with pretrained weights (downloaded once,
  offline it fails with the reason);
* ``ssl:<encoder.pt>``: the MoCo-v2 ResNet of notebook 07, on the bands it was trained on;
* ``torchgeo:<model>[:<weights>]``: a torchgeo backbone (``encoders/torchgeo_weights.py``);
* ``remoteclip:<arch>``, ``georsclip:<arch>``, ``skyclip:<arch>`` (``[:<file>]``): the public
  remote-sensing CLIP models with their own preprocessing (``encoders/public_clip.py``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from geofm_lib.config import Config
from geofm_lib.data.shards import file_sha256, load_manifest
from geofm_lib.encoders import public_clip, torchgeo_weights
from geofm_lib.encoders.torchgeo_weights import TorchGeoEncoder, parse, place_bands
from geofm_lib.errors import EncoderError, PretrainedUnavailable
from geofm_lib.models.factory import create_model, register_configs
from geofm_lib.models.inputs import BandSlots, input_spec
from geofm_lib.models.names import known_model_names
from geofm_lib.paths import build_folder
from geofm_lib.progress import get_logger
from geofm_lib.ssl.pretraining import read_encoder
from geofm_lib.training.checkpoint import (
    load_checkpoint,
    load_trained_model,
    loss_of,
    stats_from_checkpoint,
)

log = get_logger()


@dataclass(frozen=True)
class EncoderKind:
    """One kind of encoder name: how a name is checked (cheaply, before any work), what its
    embedding cache is keyed on, and how it loads (model, channel stats)."""

    name: str  # "trained", or "checkpoint" for names "checkpoint:..." (prefixed)
    usage: str  # how to write it, for error messages
    check: Callable[[str], None]
    basis: Callable[[Config, str], dict]
    load: Callable[[Config, str, str, dict], tuple]  # (cfg, name, device, band_stats)
    prefixed: bool = True  # names are "<kind>:..."; False: the kind's name is the whole name
    reads_data: bool = True  # load needs the band statistics of this run's shards
    trainable: bool = True  # it has weights to fine-tune (RCF has none)
    fits_on_data: bool = False  # load estimates something on the run's training images


def _file_of(encoder: str) -> Path:
    return Path(encoder.split(":", 1)[1]).expanduser()


def _checkpoint_basis(cfg: Config, encoder: str) -> dict:
    return {"checkpoint": file_sha256(_file_of(encoder))}


def _named_basis(cfg: Config, encoder: str) -> dict:
    return {"name": encoder, "image_px": cfg.image_px, "seed": cfg.seed}


def _no_check(encoder: str) -> None:
    return None


def _check_file(what: str):
    def check(encoder: str) -> None:
        if not _file_of(encoder).is_file():
            raise EncoderError(f"encoder {encoder!r}: no such {what}")
    return check


def _check_open_clip(encoder: str) -> None:
    parts = encoder.split(":")
    if len(parts) != 3:
        raise EncoderError(f"encoder {encoder!r}: write open_clip:<model>:<pretrained tag>, "
                           f"e.g. open_clip:ViT-B-32:openai")
    name = parts[1]
    if name not in known_model_names():
        close = difflib.get_close_matches(name, known_model_names(), n=3)
        raise EncoderError(f"unknown OpenCLIP model {name!r} in encoder {encoder!r}"
                           + (f"; did you mean {', '.join(close)}?" if close else ""))


def _load_trained(cfg: Config, encoder: str, device: str, band_stats: dict):
    model, _, state = load_trained_model(cfg, device)
    return model, _with_unseen(state, stats_from_checkpoint(state), band_stats, "this run's "
                               "checkpoint")


INIT_STATISTICS_PER_DATASET = 128
"""Training images per dataset (the first of its train shards; no labels) over which the
``init`` encoder's BatchNorm statistics are estimated."""


def _load_init(cfg: Config, encoder: str, device: str, band_stats: dict):
    """The twin of ``trained``: same architecture and band adapter, random weights, and the
    fair random init: BatchNorm statistics (a ResNet tower's) estimated on training images of
    every dataset, as the trained tower's come from training on them. Never estimated, they
    are mean 0 and variance 1, and the demo's 06 probes of ``init`` sat at the label-prior
    floor on 5 of 8 datasets with the linear probe (issue 37)."""
    stats, bands = input_spec(band_stats, cfg.band_adapter)
    model, _ = create_model(cfg.model, cfg.image_px, cfg.pretrained, device, cfg.seed,
                            band_adapter=cfg.band_adapter, bands=bands)
    if cfg.pretrained in (None, "", "none"):
        _estimate_tower_statistics(cfg, model, stats, device)
    return model, stats


def _estimate_tower_statistics(cfg: Config, model, stats: dict, device: str) -> int:
    """BatchNorm statistics of ``model``'s image tower over the first
    :data:`INIT_STATISTICS_PER_DATASET` training images of each dataset (no labels); the number
    of layers estimated (0 for a ViT tower)."""
    import torch

    from geofm_lib.evaluation.finetune import precise_batchnorm
    from geofm_lib.models.devices import resolve_precision

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               for m in model.visual.modules()):
        return 0
    xs = _training_inputs(cfg, stats)
    if not len(xs):
        return 0
    class ImageTower(torch.nn.Module):  # what precise_batchnorm runs: the image tower alone
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.encode_image(x)

    return precise_batchnorm(model.visual, ImageTower(), xs, device, 64,
                             resolve_precision(cfg.precision, device))


def _training_inputs(cfg: Config, stats: dict, per_dataset: int = INIT_STATISTICS_PER_DATASET):
    """The model inputs (N, C, image_px, image_px) of the first ``per_dataset`` training
    images of each dataset (no labels), normalised as the towers see them."""
    import numpy as np
    import torch

    from geofm_lib.data.shards import iter_shards, shard_paths
    from geofm_lib.models.inputs import to_model_input

    xs = []
    for ds in cfg.dataset_keys:
        for n, s in enumerate(iter_shards(shard_paths(build_folder(cfg), "train", ds))):
            if n >= per_dataset:
                break
            x = torch.from_numpy(to_model_input(s["img"], s["json"]["bands"], stats[ds]))
            if x.shape[-1] != cfg.image_px:  # as encode_split resizes
                x = torch.nn.functional.interpolate(x[None], size=(cfg.image_px, cfg.image_px),
                                                    mode="bilinear", antialias=True,
                                                    align_corners=False)[0]
            xs.append(x.numpy())
    return np.stack(xs) if xs else np.zeros((0,), np.float32)


def _load_rcf(cfg: Config, encoder: str, device: str, band_stats: dict):
    """``rcf``: random convolutional features (MOSAIKS; torchgeo's ``RCF``, empirical filters
    from the training images of every dataset, no labels) on the same input as ``trained``,
    mean-pooled: a baseline that learnt nothing but the images' patch statistics, fed to the
    same probes (issue 37)."""
    import torch

    from geofm_lib.evaluation.floors import rcf_model

    stats, _ = input_spec(band_stats, cfg.band_adapter)
    rcf = rcf_model(_training_inputs(cfg, stats), cfg.seed)

    class RCFEncoder(torch.nn.Module):  # what encode_split calls
        def __init__(self):
            super().__init__()
            self.rcf = rcf

        def encode_image(self, x):
            return self.rcf(x.float())

    return RCFEncoder().to(device).eval(), stats


def _load_checkpoint(cfg: Config, encoder: str, device: str, band_stats: dict):
    return _from_checkpoint(cfg, encoder.split(":", 1)[1], device, band_stats)


def _load_open_clip(cfg: Config, encoder: str, device: str, band_stats: dict):
    stats, _ = input_spec(band_stats, "rgb")
    _, name, tag = encoder.split(":")
    model, _ = create_model(name, cfg.image_px, tag, device, cfg.seed)
    return model, stats


def _load_torchgeo(cfg: Config, encoder: str, device: str, band_stats: dict):
    return torchgeo_weights.load(encoder, band_stats, cfg.image_px, device, cfg.seed)


def _load_ssl(cfg: Config, encoder: str, device: str, band_stats: dict):
    """``ssl:<encoder.pt>``: the ResNet pretrained by notebook 07 (MoCo-v2), on its bands."""
    net, state = read_encoder(_file_of(encoder), device)
    stats = place_bands(band_stats, list(state["bands"]), encoder)
    return TorchGeoEncoder(net, None, None).to(device).eval(), stats


def _public_basis(cfg: Config, encoder: str) -> dict:
    """A public model's cache key: its name and its file's name and size (hashing a 0.6-1.7 GB
    checkpoint on every key would cost more than the embeddings it keys)."""
    try:
        path = public_clip.weights_file(encoder)
        file = {"file": path.name, "bytes": path.stat().st_size}
    except PretrainedUnavailable:
        file = {}
    return {"name": encoder.split(":")[0] + ":" + encoder.split(":")[1], **file}


def _load_public(cfg: Config, encoder: str, device: str, band_stats: dict):
    return public_clip.load(encoder, band_stats, device)


KINDS: dict[str, EncoderKind] = {k.name: k for k in (
    EncoderKind("trained", "'trained'", _no_check, lambda cfg, e: {"train_hash": cfg.train_hash},
                _load_trained, prefixed=False, reads_data=False),
    EncoderKind("init", "'init'", _no_check,
                lambda cfg, e: {"model": cfg.model, "image_px": cfg.image_px, "seed": cfg.seed,
                                "pretrained": cfg.pretrained, "band_adapter": cfg.band_adapter,
                                # issue 37: BatchNorm statistics estimated on the training images
                                "batchnorm": "estimated", "data": cfg.data_hash},
                _load_init, prefixed=False, fits_on_data=True),
    EncoderKind("rcf", "'rcf'", _no_check,
                lambda cfg, e: {"rcf": "empirical, eigh", "image_px": cfg.image_px,
                                "seed": cfg.seed, "band_adapter": cfg.band_adapter,
                                "data": cfg.data_hash},
                _load_rcf, prefixed=False, trainable=False, fits_on_data=True),
    EncoderKind("checkpoint", "'checkpoint:<path to last.pt>'",
                _check_file("checkpoint file (give the path of a last.pt under "
                            "work/checkpoints/<train_hash>/)"),
                _checkpoint_basis, _load_checkpoint),
    EncoderKind("open_clip", "'open_clip:<model>:<tag>'", _check_open_clip, _named_basis,
                _load_open_clip),
    EncoderKind("torchgeo", "'torchgeo:<model>[:<weights>]'", parse, _named_basis,
                _load_torchgeo),
    *(EncoderKind(name, f"'{name}:<arch>[:<file>]'", public_clip.check, _public_basis,
                  _load_public) for name in public_clip.PUBLIC),
    EncoderKind("ssl", "'ssl:<path to encoder.pt>'",
                _check_file("file (give the encoder.pt that notebook 07 wrote under "
                            "work/checkpoints/<ssl_hash>/)"),
                _checkpoint_basis, _load_ssl),
)}
"""Every encoder kind; a new kind is one entry here (and its tests)."""


def kind_of(encoder: str) -> EncoderKind:
    """The kind of an encoder name: a whole name (``trained``) or ``<kind>:...``."""
    key, colon, _ = encoder.partition(":")
    kind = KINDS.get(key)
    if kind is None or bool(colon) != kind.prefixed:
        usages = [k.usage for k in KINDS.values()]
        raise EncoderError(f"unknown encoder {encoder!r}; use {', '.join(usages[:-1])} "
                           f"or {usages[-1]}")
    return kind


def check_encoder_name(encoder: str) -> None:
    """Fail on an encoder name that cannot exist, with the closest valid names (cheap)."""
    kind_of(encoder).check(encoder)


def has_text_tower(encoder: str) -> bool:
    """Whether an encoder is a CLIP model with a text tower (``trained``, ``init``,
    ``checkpoint:``, ``open_clip:``, the public RS-CLIP models), not an image-only one
    (torchgeo, ssl, rcf); from its name alone."""
    kind = kind_of(encoder).name
    return kind in ("trained", "init", "checkpoint", "open_clip") or kind in public_clip.PUBLIC


def tokenizer_for(cfg: Config, encoder: str):
    """The tokenizer of an encoder's text tower, or None for image-only encoders."""
    import open_clip

    if not has_text_tower(encoder):
        return None
    register_configs()  # geofm's small configs name their tokenizer too
    kind = kind_of(encoder).name
    if kind in ("trained", "init"):
        name = cfg.model
    elif kind == "checkpoint":
        name = load_checkpoint(_file_of(encoder), map_location="cpu")["model_name"]
    else:
        name = encoder.split(":")[1]
    return open_clip.get_tokenizer(name)


def encoder_hash(cfg: Config, encoder: str) -> str:
    """What an encoder's embedding cache is keyed on (12 hex digits)."""
    basis = kind_of(encoder).basis(cfg, encoder)
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:12]


def load_encoder(cfg: Config, encoder: str, device: str = "cpu", band_stats: dict | None = None,
                 datasets: list[str] | None = None):
    """(model, channel stats) for an encoder name (see the module docstring). ``band_stats``
    (manifest-style band statistics by name, e.g. a scene's) replaces those of the run's
    shards: the returned stats then cover those inputs too. ``datasets``: only these of the
    run's datasets are read (an encoder of one sensor beside datasets of others; ``init`` and
    ``rcf`` still fit on all of them)."""
    kind = kind_of(encoder)
    kind.check(encoder)
    if band_stats is not None and not kind.fits_on_data:
        return kind.load(cfg, encoder, device, band_stats)
    run_stats = {}
    if kind.reads_data:
        manifest = load_manifest(build_folder(cfg))
        # init and rcf estimate from the whole run's data whatever they are asked to read:
        # the same model for every caller
        keep = cfg.dataset_keys if kind.fits_on_data or not datasets else datasets
        run_stats = manifest.band_stats_for(keep)
    return kind.load(cfg, encoder, device, {**run_stats, **(band_stats or {})})


def _from_checkpoint(cfg: Config, path: str, device: str, band_stats: dict):
    """The image tower of a geofm checkpoint from another run (e.g. group A's on this data)."""
    state = load_checkpoint(Path(path).expanduser(), map_location=device)
    if state["image_px"] != cfg.image_px:
        raise EncoderError(f"checkpoint {Path(path).name} was trained at {state['image_px']} px, "
                           f"this data is {cfg.image_px} px; use data of the same image_px")
    adapter, bands = state.get("band_adapter", "rgb"), state.get("model_bands")
    model, _ = create_model(state["model_name"], state["image_px"], None, device, cfg.seed,
                            band_adapter=adapter, bands=bands, loss=loss_of(state))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise EncoderError(f"checkpoint {Path(path).name} does not fit architecture "
                           f"{state['model_name']!r}: {str(exc)[:200]}") from None
    return model, _with_unseen(state, stats_from_checkpoint(state), band_stats,
                               f"checkpoint {Path(path).name}")


def _with_unseen(state: dict, stats: dict, band_stats: dict, what: str) -> dict:
    """A checkpoint's input statistics, plus those of datasets it never saw (``band_stats``
    keys outside the checkpoint: another run's datasets, a scene): standardised with their own
    statistics, placed in the checkpoint's band layout by name."""
    missing = [ds for ds in band_stats if ds not in state["channel_stats"]]
    if not missing:
        return stats
    log.info("%s has no input statistics for %s: standardised with the band statistics given "
             "for them", what, missing)
    bands = state.get("model_bands")
    if bands is None:
        return {**input_spec({ds: band_stats[ds] for ds in missing}, "rgb")[0], **stats}
    unknown = {ds: [b for b in band_stats[ds]["bands"] if b not in bands] for ds in missing}
    unknown = {ds: b for ds, b in unknown.items() if b}
    if unknown:
        raise EncoderError(f"{what} takes bands {bands}; {unknown} are not among them (train "
                           f"with these datasets, or drop them)")
    return {**{ds: BandSlots.place(band_stats[ds], bands) for ds in missing}, **stats}
