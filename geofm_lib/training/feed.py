"""The device feed (issue 40): training patches cross to the accelerator in their stored integer
type and are standardised, nodata-masked, flipped/rotated and resized there.

A float32 patch of 14 bands at 512 px is 14.7 MB; the same patch in its stored uint16 is half
that and uint8 a quarter, and the loader workers, the pinned host buffers and the host-to-device
copy all move the smaller one. The host keeps what needs Python: the shard reading, the choice
of bands by name (the same ``RGBInput``/``BandSlots`` layouts as the host path), the augmentation
draw and the tokenizer. The device does the arithmetic, with the same float32 operations in the
same order as ``models.inputs.to_model_input`` and ``augment``, so on the CPU the two feeds give
the same batches bit for bit (a test), and on a GPU the same up to the resize kernel.

``Prefetcher`` overlaps the copy and the transform of batch ``i + 1`` with step ``i`` on a
second CUDA stream; on the CPU it transforms in line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from geofm_lib.errors import ConfigError, DataError
from geofm_lib.models.inputs import BandSlots, RGBInput, input_bands

FEEDS = ("auto", "host", "device")


def feed_mode(feed: str, device: str) -> str:
    """``host`` or ``device``: ``auto`` is ``device`` on CUDA (where the copy is the cost) and
    ``host`` on the CPU (where the arithmetic would only move from the loader workers to the
    process that trains)."""
    if feed not in FEEDS:
        raise ConfigError(f"feed={feed!r}; choose one of {', '.join(FEEDS)}")
    if feed == "auto":
        return "device" if device.startswith("cuda") else "host"
    return feed


@dataclass
class RawBatch:
    """A batch as the host hands it over: the pixels in their stored types (one part per type,
    so a uint16 product is not widened to float32 because a float SAR product shares its
    batch), and what to do with each sample on the device."""

    parts: tuple[torch.Tensor, ...]  # (n_i, C, H, W) each: the model's channels, one dtype
    where: tuple[torch.Tensor, ...]  # (n_i,) each: the batch positions of that part
    unsigned16: tuple[bool, ...]     # the part holds uint16 values as int16 bits
    dataset: torch.Tensor  # (B,) index into the feed's table of datasets
    rot: torch.Tensor      # (B,) quarter turns (0-3)
    flip: torch.Tensor     # (B,) bool: mirrored left-right after the turn
    tokens: torch.Tensor

    def pin_memory(self) -> RawBatch:
        """Page-locked copies (the DataLoader calls this with ``pin_memory=True``)."""
        return RawBatch(tuple(t.pin_memory() for t in self.parts),
                        tuple(t.pin_memory() for t in self.where), self.unsigned16,
                        *(t.pin_memory() for t in (self.dataset, self.rot, self.flip,
                                                   self.tokens)))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.parts)


def _storable(a: np.ndarray) -> np.ndarray:
    """Integer types torch moves and converts everywhere, floats as float32."""
    if a.dtype.kind == "f":
        return a.astype(np.float32, copy=False)
    if a.dtype in (np.uint32, np.uint64, np.int64):
        return a.astype(np.int64, copy=False) if a.dtype != np.uint64 else a.astype(np.float64)
    return a


class FeedTable:
    """Per dataset, how its stored bands become the model's channels (host side: which bands
    go where) and the statistics the device applies (mean, std, nodata per channel)."""

    def __init__(self, channel_stats: dict, datasets: list[str]):
        self.datasets = list(datasets)
        self.index = {ds: i for i, ds in enumerate(self.datasets)}
        kinds = {type(channel_stats[ds]) for ds in self.datasets}
        if len(kinds) != 1 or not kinds <= {RGBInput, BandSlots}:
            raise ConfigError("the device feed needs one input layout for all datasets of a "
                              "run (RGB picks or band slots); use feed: host")
        self.slots = kinds == {BandSlots}
        self.stats = [channel_stats[ds] for ds in self.datasets]
        c = self.stats[0].channels if self.slots else 3
        n = len(self.datasets)
        a = np.zeros((n, c), np.float32)  # RGB: mean; slots: scale (1/std)
        b = np.ones((n, c), np.float32)   # RGB: std; slots: shift (-mean/std)
        nodata = np.zeros((n, c), np.float32)
        has = np.zeros((n, c), bool)
        present = np.zeros((n, c), bool)
        sar = np.zeros(n, bool)
        for i, st in enumerate(self.stats):
            if self.slots:
                scale = (1.0 / st.std).astype(np.float32)
                a[i, list(st.slots)] = scale
                b[i, list(st.slots)] = (-st.mean * scale).astype(np.float32)
                b[i, [j for j in range(c) if j not in st.slots]] = 0.0
                present[i, list(st.slots)] = True
                for slot, value in zip(st.slots, st.nodata or [None] * len(st.slots),
                                       strict=True):
                    if value is not None:
                        nodata[i, slot], has[i, slot] = value, True
            else:
                if st.idx is None:
                    raise ConfigError("the device feed needs the band picks of each dataset "
                                      "(statistics of checkpoints from before 2026-12 lack "
                                      "them); use feed: host")
                a[i], b[i] = st.mean, st.std
                present[i] = True
                sar[i] = st.rule == "sar_vv_vh_ratio"
                for j, value in enumerate(st.nodata):
                    if value is not None:
                        nodata[i, j], has[i, j] = value, True
        self.channels = c
        self.has_sar = bool(sar.any())
        self._host = {"a": a, "b": b, "nodata": nodata, "has": has, "present": present,
                      "sar": sar}
        self._on: dict[str, dict] = {}

    def on(self, device: str) -> dict:
        if device not in self._on:
            self._on[device] = {k: torch.from_numpy(v).to(device)
                                for k, v in self._host.items()}
        return self._on[device]

    def select(self, img: np.ndarray, bands: list[str], dataset: str) -> np.ndarray:
        """The model's channels of one stored patch, still in its stored type."""
        st = self.stats[self.index[dataset]]
        img = _storable(img)
        if self.slots:
            expected = st.product_bands or len(st.source)
            if len(bands) != expected:
                raise DataError(f"product has {len(bands)} bands, the model's layout for "
                                f"{dataset} expects {expected}")
            out = np.zeros((self.channels, *img.shape[1:]), img.dtype)
            out[list(st.slots)] = img[list(st.source)]
            return out
        idx = st.idx if st.idx is not None else input_bands(bands)[0]
        if max(idx) >= len(bands):
            raise DataError(f"product has {len(bands)} bands; the model's RGB mapping for "
                            f"{dataset} reads band {max(idx) + 1}")
        pick = list(idx[:2]) * 2 if st.rule == "sar_vv_vh_ratio" else list(idx)
        return img[pick[:3]]


def prepare_raw(sample: dict, table: FeedTable, rng: random.Random):
    """One decoded training sample for the device feed: (channels in stored type, dataset index,
    quarter turns, flip, caption). The generator is drawn in the order of the host path
    (``augment``'s turn and flip, then the caption), so both feeds augment alike."""
    m = sample["json"]
    x = table.select(sample["img"], m["bands"], m["dataset"])
    rot = rng.randrange(4)
    flip = rng.random() < 0.5
    text = sample["txt"]
    if len(m.get("captions") or ()) > 1:
        text = m["captions"][rng.randrange(len(m["captions"]))]
    return x, table.index[m["dataset"]], rot, flip, text


def collate_raw(tokenizer):
    def fn(batch):
        xs, ds, rot, flip, texts = zip(*batch, strict=True)
        parts, where, unsigned16 = [], [], []
        for dtype in sorted({x.dtype.str for x in xs}):
            pos = [i for i, x in enumerate(xs) if x.dtype.str == dtype]
            pixels = np.stack([xs[i] for i in pos])
            u16 = pixels.dtype == np.uint16  # torch's uint16 lacks kernels on some devices
            parts.append(torch.from_numpy(pixels.view(np.int16) if u16 else pixels))
            where.append(torch.tensor(pos))
            unsigned16.append(bool(u16))
        return RawBatch(tuple(parts), tuple(where), tuple(unsigned16), torch.tensor(ds),
                        torch.tensor(rot), torch.tensor(flip), tokenizer(list(texts)))

    return fn


def to_model(batch: RawBatch, table: FeedTable, device: str, image_px: int,
             channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw batch as model input on ``device``: ``augment``'s turns and flips (on the stored
    values: they move pixels, so doing them first changes no value and moves fewer bytes), the
    arithmetic of ``to_model_input`` (float32, nodata to the band mean, SAR's VV-VH,
    standardised, NaN/inf to 0), then the resize of the host path's collate. Nothing here
    waits for the device."""
    t = table.on(device)
    ds = batch.dataset.to(device, non_blocking=True)
    rot = batch.rot.to(device, non_blocking=True)
    flip = batch.flip.to(device, non_blocking=True)
    first = batch.parts[0]
    x = torch.empty((len(batch.dataset), *first.shape[1:]), dtype=torch.float32, device=device)
    for pixels, where, u16 in zip(batch.parts, batch.where, batch.unsigned16, strict=True):
        pos = where.to(device, non_blocking=True)
        raw = _augment(pixels.to(device, non_blocking=True), rot[pos], flip[pos])
        x.index_copy_(0, pos, (raw.to(torch.int32) & 0xFFFF).float() if u16 else raw.float())
    a, b = t["a"][ds][:, :, None, None], t["b"][ds][:, :, None, None]
    masked = (x == t["nodata"][ds][:, :, None, None]) & t["has"][ds][:, :, None, None]
    zero = torch.zeros((), device=x.device)
    if table.slots:
        x = x * a
        x = x + b
        x = torch.where(masked | ~t["present"][ds][:, :, None, None], zero, x)
    else:
        x = torch.where(masked, a.expand_as(x), x)
        if table.has_sar:
            third = (torch.arange(3, device=x.device) == 2)[None, :, None, None]
            x = torch.where(t["sar"][ds][:, None, None, None] & third,
                            (x[:, 0] - x[:, 1])[:, None], x)
        x = (x - a) / b
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if x.shape[-1] != image_px or x.shape[-2] != image_px:
        x = torch.nn.functional.interpolate(x, size=(image_px, image_px), mode="bilinear",
                                            antialias=True, align_corners=False)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch.tokens.to(device, non_blocking=True)


_PERMS: dict[tuple, torch.Tensor] = {}


def _perms(side: int, device) -> torch.Tensor:
    """(8, side * side): for code ``2 * turns + flip``, where each output pixel comes from,
    made by turning and mirroring an index grid with the same calls as the data would be."""
    key = (side, str(device))
    if key not in _PERMS:
        grid = torch.arange(side * side).view(side, side)
        rows = []
        for r in range(4):
            turned = torch.rot90(grid, r, dims=(0, 1)) if r else grid
            rows += [turned.reshape(-1), turned.flip(-1).reshape(-1)]
        _PERMS[key] = torch.stack(rows).to(device)
    return _PERMS[key]


def _augment(x: torch.Tensor, rot: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each sample turned ``rot`` quarter turns (as ``np.rot90`` over (H, W)), then mirrored
    left-right where ``flip``: one gather over the batch with each sample's pixel permutation
    (any dtype, no per-sample launches, no host sync; square patches)."""
    b, c, h, w = x.shape
    if h != w:
        raise DataError(f"patches of {h}x{w} px: the 90-degree turns need square patches")
    idx = _perms(h, x.device)[rot * 2 + flip.long()]  # (B, H*W)
    flat = x.reshape(b, c, h * w)
    return torch.gather(flat, 2, idx[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


class Prefetcher:
    """Batches of a raw-batch iterator as model input, one ahead: on CUDA the next batch's copy
    and transform run on a side stream while the current step runs (the pinned source stays
    alive until the copy is done); elsewhere in line."""

    def __init__(self, it, table: FeedTable, device: str, image_px: int,
                 channels_last: bool = True):
        self.it, self.table, self.device = it, table, device
        self.image_px, self.channels_last = image_px, channels_last
        self.cuda = device.startswith("cuda")
        self.stream = torch.cuda.Stream(device=device) if self.cuda else None
        self.bytes = 0  # pixel bytes moved to the device
        self.samples_by_itemsize: dict[int, int] = {}  # samples moved, by bytes per value
        self._next = None

    def _load(self):
        batch = next(self.it)
        self.bytes += batch.nbytes
        for part in batch.parts:
            size = part.element_size()
            self.samples_by_itemsize[size] = self.samples_by_itemsize.get(size, 0) + len(part)
        if not self.cuda:
            return to_model(batch, self.table, self.device, self.image_px, self.channels_last)
        with torch.cuda.stream(self.stream):
            out = to_model(batch, self.table, self.device, self.image_px, self.channels_last)
        return out

    def __iter__(self):
        return self

    def __next__(self):
        if not self.cuda:
            return self._load()
        if self._next is None:
            self._next = self._load()
        current = self._next
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        for t in current:
            t.record_stream(torch.cuda.current_stream(self.device))
        self._next = self._load()
        return current
