"""Segmentation with a given encoder (seed 001's forest use case): a UNet or DeepLabV3+ decoder
from segmentation_models_pytorch on a timm ResNet encoder (``tu-resnet18`` ...), or seed 001's
UpConv decoder on a timm ViT's patch tokens (``vit_small_patch16`` ..., the encoders of MAE and
of DINO with a ViT), the encoder
random or loaded from a pretrained state (notebook 07's ``encoder.pt``), trained on labelled
masks with the frozen-encoder or the full fine-tuning protocol, scored per epoch (convergence)
and at the end with bootstrap intervals over test images (``evaluation.segmentation``).

Seed 001's two detail-preserving changes are parameters:

* ``boundary_weight``: the per-pixel cross-entropy weighted ``boundary_weight`` times within
  ``boundary_px`` of a class boundary of the target (``segmentation.boundary_weights``);
* ``stem="detail"``: the ResNet's first convolution at stride 1 and no max-pooling, the
  stride 2 moved into the first residual block, so the stem keeps full-resolution detail
  (every feature map twice the standard stem's size; the logits resized to the input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from geofm_lib.evaluation import fitting
from geofm_lib.evaluation.finetune import precise_batchnorm
from geofm_lib.evaluation.segmentation import (
    SegmentationScores,
    boundary_weights,
    confusion,
    density_scores,
    density_sums,
    evaluate_density,
    evaluate_masks,
    scores,
)
from geofm_lib.models.adapters import stem_conv1x1
from geofm_lib.models.backbones import make_backbone
from geofm_lib.models.devices import autocast, channels_last
from geofm_lib.models.spectral import spectral_first
from geofm_lib.progress import get_logger

DECODERS = {"unet": "Unet", "deeplabv3plus": "DeepLabV3Plus", "upconv": None}
RESNET_DECODERS = ("unet", "deeplabv3plus")
STEMS = ("standard", "detail")
PROTOCOLS = ("frozen", "finetune")
RECIPE = fitting.RECIPES["segmentation"]  # the fitting recipe of every segmenter
log = get_logger()


class _Resized(torch.nn.Module):
    """A segmentation model whose logits are resized to the input's size (the detail stem
    doubles every feature map, so the decoder's output is twice the input)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.encoder = net.encoder

    def forward(self, x):
        out = self.net(x)
        if out.shape[-2:] != x.shape[-2:]:
            out = torch.nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear",
                                                  align_corners=False)
        return out


def detail_stem(resnet) -> None:
    """Seed 001's stem on a timm ResNet (in place): conv1 at stride 1, max-pooling removed,
    stride 2 in the first residual block (its first convolution and its shortcut)."""
    conv = resnet.conv1.rgb if hasattr(resnet.conv1, "rgb") else resnet.conv1
    if isinstance(conv, torch.nn.Sequential):  # the spectral stem, then the convolution
        conv = conv[-1]
    conv.stride = (1, 1)
    resnet.maxpool = torch.nn.Identity()
    block = resnet.layer1[0]
    # the 3x3 convolution takes the stride: conv2 of a bottleneck, conv1 of a basic block
    (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = (2, 2)
    if block.downsample is None:  # a new shortcut projection (random init, as any new layer)
        c_in = block.conv1.in_channels
        c_out = (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels
        block.downsample = torch.nn.Sequential(
            torch.nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), torch.nn.BatchNorm2d(c_out))
    else:
        block.downsample[0].stride = (2, 2)


def _upconv(c_in: int, stride: int, n_classes: int, width: int):
    """log2(stride) stages of (bilinear x2, 3x3 conv, BatchNorm, ReLU), the channels halved
    each stage from ``width``, then a 1x1 convolution to the classes: (decoder, head)."""
    stages = int(round(math.log2(stride)))
    if stride < 1 or 2 ** stages != stride:
        raise ValueError(f"the UpConv decoder needs a power-of-two stride, not {stride}")
    layers = []
    for i in range(stages):
        c_out = max(16, width >> i)
        layers += [torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                   torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                   torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(inplace=True)]
        c_in = c_out
    return torch.nn.Sequential(*layers), torch.nn.Conv2d(c_in, n_classes, 1)


class UpConvViT(torch.nn.Module):
    """Seed 001's decoder for a ViT encoder: the last block's patch tokens laid out as a
    (D, H/p, W/p) map, then log2(p) stages of (bilinear x2 upsampling, 3x3 convolution,
    BatchNorm, ReLU), the channels halved each stage from ``width``, and a 1x1 convolution to
    the classes at the input's resolution."""

    def __init__(self, vit, n_classes: int, width: int = 256):
        super().__init__()
        self.encoder = vit
        self.decoder, self.head = _upconv(vit.embed_dim, vit.patch_embed.patch_size[0],
                                          n_classes, width)

    def encode(self, x):
        """The encoder's part: the patch tokens as a (D, H/p, W/p) map."""
        tokens = self.encoder.forward_features(x)[:, self.encoder.num_prefix_tokens:]
        p = self.encoder.patch_embed.patch_size[0]
        h, w = x.shape[-2] // p, x.shape[-1] // p
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)

    def forward(self, x):
        return self.head(self.decoder(self.encode(x)))


class UpConvMap(torch.nn.Module):
    """The same UpConv decoder on any encoder that maps an image to one feature map
    (B, C, H/s, W/s), e.g. an OpenCLIP image tower's last block: C and the stride s are read
    from one forward pass of a blank image of ``in_channels`` x ``image_px``^2."""

    def __init__(self, encoder: torch.nn.Module, n_classes: int, in_channels: int,
                 image_px: int, width: int = 256):
        super().__init__()
        self.encoder = encoder
        was = encoder.training
        encoder.eval()
        with torch.no_grad():
            fmap = encoder(torch.zeros(1, in_channels, image_px, image_px))
        encoder.train(was)
        if fmap.ndim != 4 or image_px % fmap.shape[-1]:
            raise ValueError(f"the encoder gives {tuple(fmap.shape)} for a {image_px} px image, "
                             f"not a feature map whose side divides {image_px}")
        self.stride = image_px // fmap.shape[-1]
        self.decoder, self.head = _upconv(fmap.shape[1], self.stride, n_classes, width)

    def forward(self, x):
        return self.head(self.decoder(self.encoder(x)))


def decoder_for(backbone: str, decoder: str) -> str:
    """The decoder an encoder gets: ``decoder`` (UNet or DeepLabV3+) on a ResNet, the UpConv
    decoder on a ViT (seed 001's pairing; smp's decoders want a ResNet's feature pyramid)."""
    return "upconv" if backbone.startswith("vit_") else decoder


def build_segmenter(decoder: str, backbone: str, bands: list[str], n_classes: int,
                    adapter: str = "first_layer", encoder_state: dict | None = None,
                    stem: str = "standard", seed: int = 0,
                    image_px: int | None = None) -> torch.nn.Module:
    """A UNet / DeepLabV3+ on the timm ResNet ``backbone``, or the UpConv decoder on the timm
    ViT ``backbone`` (made for ``image_px``), taking ``bands``; the encoder from
    ``encoder_state`` (the state dict of the SSL backbone: the same timm names) or random.
    ``adapter``: ``conv1x1`` puts seed 003's N -> 3 mixer in front of conv1 (the patch
    embedding of a ViT), ``spectral`` seed 001's spectral stem, as the encoder was pretrained
    with."""
    import segmentation_models_pytorch as smp

    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose {', '.join(DECODERS)}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose {', '.join(STEMS)}")
    if backbone.startswith("vit_"):
        if decoder != "upconv":
            raise ValueError(f"a ViT encoder ({backbone}) takes decoder=upconv, not {decoder} "
                             f"(UNet and DeepLabV3+ need a ResNet's feature pyramid)")
        if stem != "standard":
            raise ValueError(f"stem={stem} changes a ResNet's first layers; {backbone} has "
                             f"a patch embedding instead")
        vit = make_backbone(backbone, bands, adapter, seed, image_px)
        _load_encoder(vit, encoder_state, backbone, adapter)
        torch.manual_seed(seed)
        return UpConvViT(vit, n_classes)
    if not backbone.startswith("resnet") or decoder not in RESNET_DECODERS:
        raise ValueError(f"{decoder} on {backbone}: UNet and DeepLabV3+ take ResNet encoders, "
                         f"the UpConv decoder ViTs")
    torch.manual_seed(seed)
    kwargs = {"decoder_attention_type": None} if decoder == "unet" else {}
    net = getattr(smp, DECODERS[decoder])(f"tu-{backbone}", encoder_weights=None,
                                          in_channels=len(bands), classes=n_classes, **kwargs)
    resnet = net.encoder.model
    if adapter == "conv1x1":
        resnet.conv1 = stem_conv1x1(resnet.conv1, bands)
    elif adapter == "spectral":  # seed 001's spectral stem before conv1, as in pretraining
        resnet.conv1 = spectral_first(resnet.conv1, bands)
    _load_encoder(resnet, encoder_state, backbone, adapter)
    if stem == "detail":
        detail_stem(resnet)
        return _Resized(net)
    return net


def _load_encoder(net, state: dict | None, backbone: str, adapter: str) -> None:
    if state is None:
        return
    # smp's timm wrapper keeps timm's names, so the SSL backbone's state fits key by key
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # the same names at other shapes (ViT-S weights into a ViT-Ti)
        raise ValueError(f"the encoder weights do not fit {backbone} + {adapter}: "
                         f"{str(exc).splitlines()[1].strip()[:300]}") from None
    if missing or unexpected:
        raise ValueError(f"the encoder weights do not fit {backbone} + {adapter}: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")


FEATURE_CACHE_BYTES = 2 * 1024 ** 3
"""The most a fit keeps of its frozen encoder's features (training and test images together);
above it the encoder runs on every batch, as the fine-tuning protocol's does."""


def _parts(model):
    """(encode, decode) of a segmenter of :func:`build_segmenter` (or :class:`UpConvMap`):
    ``encode(x)`` what its encoder gives (a feature map, or smp's list of them) and
    ``decode(features, size)`` the logits at ``size`` from that; ``decode(encode(x),
    x.shape[-2:])`` is ``model(x)``, the same operations in the same order."""
    if isinstance(model, _Resized):
        encode, inner = _parts(model.net)

        def decode(f, size):
            out = inner(f, size)
            if out.shape[-2:] != size:
                out = torch.nn.functional.interpolate(out, size=size, mode="bilinear",
                                                      align_corners=False)
            return out
        return encode, decode
    if isinstance(model, UpConvViT):
        return model.encode, lambda f, size: model.head(model.decoder(f))
    if isinstance(model, UpConvMap):
        return model.encoder, lambda f, size: model.head(model.decoder(f))
    if hasattr(model, "segmentation_head") and getattr(model, "classification_head", None) is None:
        return model.encoder, lambda f, size: model.segmentation_head(model.decoder(f))
    raise TypeError(f"{type(model).__name__} is not a segmenter of build_segmenter")


def _as_list(f) -> list[torch.Tensor]:
    return [f] if torch.is_tensor(f) else list(f)


class _Forward:
    """How a fit gets its logits. Fine-tuning: the whole model on every batch. The frozen
    protocol: the encoder's weights and BatchNorm statistics never change, so its features of
    the training and test images are computed once (eval mode, no gradients, batches of 64, on
    the fit's device) and the decoder trains and predicts from them, instead of the encoder
    running again on every training batch and every evaluation pass (08 on the demo: six
    epochs and six evaluations per fit). Where those features would take more than
    :data:`FEATURE_CACHE_BYTES`, the encoder runs on every batch, saying so."""

    def __init__(self, model, protocol: str, x_train: np.ndarray, x_test: np.ndarray,
                 device: str, precision: str, batch: int = 64):
        self.model, self.device, self.precision, self.batch = model, device, precision, batch
        self.x_train, self.x_test = x_train, x_test
        self.size = tuple(x_train.shape[-2:])
        self.train_f = self.test_f = None
        if protocol != "frozen" or not len(x_train):
            return
        encode, self.decode = _parts(model)
        model.encoder.eval()
        with torch.no_grad(), autocast(device, precision):
            one = _as_list(encode(torch.from_numpy(x_train[:1]).to(device)))
        per_image = sum(t.numel() * t.element_size() for t in one)
        total = per_image * (len(x_train) + len(x_test))
        if total > FEATURE_CACHE_BYTES:
            log.info("frozen encoder: its features of %d images would take %.1f GiB, above "
                     "the %.0f GiB kept (segmenter.FEATURE_CACHE_BYTES); it runs on every "
                     "batch", len(x_train) + len(x_test), total / 1024 ** 3,
                     FEATURE_CACHE_BYTES / 1024 ** 3)
            return
        self.train_f = self._encode_all(encode, x_train)
        self.test_f = self._encode_all(encode, x_test)

    def _encode_all(self, encode, x: np.ndarray) -> list[torch.Tensor]:
        parts = []
        with torch.no_grad(), autocast(self.device, self.precision):
            for i in range(0, len(x), self.batch):
                parts.append(_as_list(encode(torch.from_numpy(x[i:i + self.batch])
                                             .to(self.device))))
        return [torch.cat(level) for level in zip(*parts)]

    def _decode(self, feats: list[torch.Tensor], rows) -> torch.Tensor:
        f = [t[rows] for t in feats]
        f = [t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in f]
        return self.decode(f[0] if len(f) == 1 else f, self.size)

    def train_logits(self, idx: np.ndarray) -> torch.Tensor:
        """The logits of the training images ``idx`` (call under autocast; gradients flow
        into what trains)."""
        if self.train_f is None:
            return self.model(torch.from_numpy(self.x_train[idx]).to(self.device))
        return self._decode(self.train_f, torch.from_numpy(np.asarray(idx)).to(self.device))

    def test(self, head) -> np.ndarray:
        """``head(logits)`` of every test image, in eval mode, without gradients, in batches
        of 64 (:func:`_predict`'s)."""
        if self.test_f is None:
            return _predict(self.model, self.x_test, self.device, self.precision, self.batch,
                            head)
        self.model.eval()
        out = []
        with torch.no_grad(), autocast(self.device, self.precision):
            for i in range(0, len(self.x_test), self.batch):
                out.append(head(self._decode(self.test_f, slice(i, i + self.batch))))
        return np.concatenate(out)


@dataclass
class SegmentationRun:
    """A fitted segmenter's history (train loss and validation scores per epoch) and its
    final scores on the test images."""

    history: list[dict]
    final: SegmentationScores
    seconds: float
    predictions: np.ndarray = field(repr=False)
    settings: dict = field(default_factory=dict)


def _predict(model, x: np.ndarray, device: str, precision: str, batch: int, head):
    """``head(logits)`` of every batch of ``x``, in eval mode, without gradients, concatenated
    (the model moved to ``device`` first)."""
    model = channels_last(model.to(device)).eval()
    out = []
    with torch.no_grad(), autocast(device, precision):
        for i in range(0, len(x), batch):
            out.append(head(model(torch.from_numpy(x[i:i + batch]).to(device))))
    return np.concatenate(out)


def _mask_head(logits) -> np.ndarray:
    return logits.argmax(1).cpu().numpy().astype(np.int16)


def _density_head(logits) -> np.ndarray:
    return (100 * torch.sigmoid(logits.float()[:, 0])).cpu().numpy().astype(np.float32)


def predict_masks(model, x: np.ndarray, device: str = "cpu", precision: str = "fp32",
                  batch: int = 64) -> np.ndarray:
    """Class index of every pixel (N, H, W)."""
    return _predict(model, x, device, precision, batch, _mask_head)


def estimate_statistics(model, x: np.ndarray | None, device: str = "cpu",
                        precision: str = "fp32") -> int:
    """The BatchNorm statistics of ``model``'s encoder estimated over the images ``x`` (no
    labels; None: nothing is done), before any training: the fair random init. Never
    estimated, a random-init encoder's statistics are mean 0 and variance 1, its frozen
    features barely vary, and the demo's frozen random-init UNet learnt the majority class
    (mIoU 34.7 = the always-"not tree" map). Pretrained encoders carry the statistics of
    their pretraining on the same images. Returns the number of layers estimated (0: none,
    e.g. a ViT)."""
    if x is None:
        return 0
    return precise_batchnorm(model.encoder, model.encoder, x, device, 64, precision)


def _train(model, forward: _Forward, n_train: int, loss_of, evaluate, *, protocol: str,
           epochs: int, lr: float, batch_size: int, seed: int, device: str, precision: str,
           eval_every: int) -> tuple[list[dict], float]:
    """Both tasks' fit through the one fitting loop (recipe ``segmentation``):
    ``loss_of(logits, idx)`` the batch loss of the images ``idx`` (their logits from
    ``forward``), ``evaluate()`` the
    validation scores (a dict) after every ``eval_every`` epochs. ``frozen`` trains the decoder
    and head only (the encoder's weights and BatchNorm statistics stay as given), ``finetune``
    everything (the encoder at the recipe's lower rate)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")
    if n_train == 0:
        raise ValueError("no labelled training images")
    r = RECIPE
    encoder = model.encoder
    enc_params = list(encoder.parameters())
    enc_ids = {id(p) for p in enc_params}
    rest = [p for p in model.parameters() if id(p) not in enc_ids]
    if protocol == "frozen":
        for p in enc_params:
            p.requires_grad = False
        groups = [{"params": rest, "lr": r.head_lr(lr)}]
    else:
        groups = [{"params": rest, "lr": r.head_lr(lr)},
                  {"params": enc_params, "lr": r.encoder_lr(lr)}]
    torch.manual_seed(seed)

    def set_modes():
        model.train()
        if protocol == "frozen":
            encoder.eval()  # frozen: BatchNorm statistics as pretrained

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        with autocast(device, precision):
            logits = forward.train_logits(idx)
        return loss_of(logits.float(), idx)

    def after_epoch(row: dict) -> None:
        if row["epoch"] % eval_every == 0 or row["epoch"] == epochs:
            row.update(evaluate())

    return fitting.fit_epochs(groups, r, n_train=n_train, batch_size=batch_size, seed=seed,
                              epochs=epochs, batch_loss=batch_loss, set_modes=set_modes,
                              after_epoch=after_epoch)


def fit_segmenter(model, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, classes: list[str], *, protocol: str = "finetune",
                  epochs: int = 10, lr: float = 1e-3, batch_size: int = 32,
                  boundary_weight: float = 1.0, boundary_px: int = 1, seed: int = 0,
                  device: str = "cpu", precision: str = "fp32", n_boot: int = 300,
                  eval_every: int = 1, statistics_from: np.ndarray | None = None
                  ) -> SegmentationRun:
    """Train ``model`` on (x_train, y_train) (targets: class indices, -1 left out) and score it
    on the test images after every ``eval_every`` epochs and at the end (``_train``: the
    protocols, optimiser and schedule). Cross-entropy per pixel, weighted by
    ``boundary_weights`` when ``boundary_weight`` is not 1. ``statistics_from``: images
    (no labels) the encoder's BatchNorm statistics are estimated on first
    (:func:`estimate_statistics`; give it for a random-init encoder)."""
    model = channels_last(model.to(device))
    estimated = estimate_statistics(model, statistics_from, device, precision)
    weights = (boundary_weights(y_train, boundary_px, boundary_weight)
               if boundary_weight != 1.0 else (y_train >= 0).astype(np.float32))

    def loss_of(logits, idx):
        yb = torch.from_numpy(y_train[idx].astype(np.int64)).to(device)
        wb = torch.from_numpy(weights[idx]).to(device)
        per_pixel = torch.nn.functional.cross_entropy(logits, yb.clamp_min(0), reduction="none")
        return (per_pixel * wb).sum() / wb.sum().clamp_min(1e-6)

    forward = _Forward(model, protocol, x_train, x_test, device, precision)
    last = {}  # the test predictions of the last evaluation (after the last epoch: the final)

    def evaluate():
        last["pred"] = pred = forward.test(_mask_head)
        s = scores(sum(confusion(t, p, len(classes)) for t, p in zip(y_test, pred, strict=True)))
        return {"val_mean_iou": s["mean_iou"], "val_overall_accuracy": s["overall_accuracy"]}

    history, seconds = _train(model, forward, len(x_train), loss_of, evaluate,
                              protocol=protocol, epochs=epochs, lr=lr, batch_size=batch_size,
                              seed=seed, device=device, precision=precision,
                              eval_every=eval_every)
    pred = last["pred"] if epochs > 0 else forward.test(_mask_head)
    final = evaluate_masks(y_test, pred, classes, n_boot=n_boot, seed=seed)
    return SegmentationRun(history, final, round(seconds, 1), pred,
                           {"protocol": protocol, "epochs": epochs, "lr": lr,
                            "boundary_weight": boundary_weight, "boundary_px": boundary_px,
                            "n_train": len(x_train), "n_test": len(x_test),
                            "statistics_estimated": estimated})


def predict_density(model, x: np.ndarray, device: str = "cpu", precision: str = "fp32",
                    batch: int = 64) -> np.ndarray:
    """Tree cover of every pixel in percent (N, H, W): 100 x the sigmoid of the one output."""
    return _predict(model, x, device, precision, batch, _density_head)


@dataclass
class DensityRun:
    """A fitted tree-density regressor: history (train loss, validation RMSE per epoch), the
    final scores with intervals (``segmentation.evaluate_density``) and its predictions."""

    history: list[dict]
    final: dict
    seconds: float
    predictions: np.ndarray = field(repr=False)


def fit_density(model, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, *, protocol: str = "finetune", epochs: int = 10,
                lr: float = 1e-3, batch_size: int = 32, seed: int = 0, device: str = "cpu",
                precision: str = "fp32", n_boot: int = 300, eval_every: int = 1,
                statistics_from: np.ndarray | None = None) -> DensityRun:
    """Seed 001's tree-density task: ``model`` (one output channel) regresses the tree cover of
    every pixel (targets in percent, below 0 left out) through a sigmoid, mean squared error on
    the cover as a fraction; the same protocols and loop as ``fit_segmenter``; scored by RMSE,
    MAE (percent points) and R^2 with intervals over test images. ``statistics_from`` as in
    ``fit_segmenter``."""
    model = channels_last(model.to(device))
    estimate_statistics(model, statistics_from, device, precision)
    target = np.where(y_train >= 0, y_train / 100.0, -1.0).astype(np.float32)

    def loss_of(logits, idx):
        yb = torch.from_numpy(target[idx]).to(device)
        valid = (yb >= 0).float()
        err = (torch.sigmoid(logits[:, 0]) - yb.clamp_min(0)) ** 2
        return (err * valid).sum() / valid.sum().clamp_min(1.0)

    forward = _Forward(model, protocol, x_train, x_test, device, precision)
    last = {}  # the test predictions of the last evaluation (after the last epoch: the final)

    def evaluate():
        last["pred"] = pred = forward.test(_density_head)
        s = density_scores(density_sums(y_test, pred))
        return {"val_rmse": s["rmse"], "val_r2": s["r2"]}

    history, seconds = _train(model, forward, len(x_train), loss_of, evaluate,
                              protocol=protocol, epochs=epochs, lr=lr, batch_size=batch_size,
                              seed=seed, device=device, precision=precision,
                              eval_every=eval_every)
    pred = last["pred"] if epochs > 0 else forward.test(_density_head)
    return DensityRun(history, evaluate_density(y_test, pred, n_boot, seed), round(seconds, 1),
                      pred)
