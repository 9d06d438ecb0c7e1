"""The training stream: one WebDataset pipeline per dataset (shards resampled with a fixed
seed, a shuffle buffer), mixed by ``webdataset.RandomMix`` in proportion to each dataset's
training samples, so every contrastive batch holds all datasets of the group. Training images
get random flips and 90-degree rotations (overhead imagery has no "up").
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from geofm_lib.data.shards import decode_sample, shard_paths
from geofm_lib.errors import ConfigError
from geofm_lib.models.inputs import augment, to_model_input
from geofm_lib.training.feed import FeedTable, Prefetcher, collate_raw, prepare_raw


def _prepare(raw: dict, channel_stats: dict, rng: random.Random) -> tuple[np.ndarray, str]:
    """Decode one raw training sample into (model input, caption), augmented with ``rng``."""
    s = decode_sample(raw)
    m = s["json"]
    x = augment(to_model_input(s["img"], m["bands"], channel_stats[m["dataset"]]), rng)
    text = s["txt"]
    if len(m.get("captions") or ()) > 1:  # corpora with several captions per image
        text = m["captions"][rng.randrange(len(m["captions"]))]
    return x, text


def _collate(tokenizer, image_px: int):
    def fn(batch):
        imgs, texts = zip(*batch, strict=True)
        x = torch.from_numpy(np.stack(imgs))
        if x.shape[-1] != image_px or x.shape[-2] != image_px:
            x = torch.nn.functional.interpolate(x, size=(image_px, image_px), mode="bilinear",
                                                antialias=True, align_corners=False)
        return x, tokenizer(list(texts))

    return fn


def _resampled(urls: list[str], rng: random.Random):
    """Shard URLs drawn with replacement from a private generator (WebDataset's
    ``ResampledShards`` seeds itself per worker and rank, which would split the stream)."""
    while True:
        yield {"url": rng.choice(urls)}


class TrainStream(torch.utils.data.IterableDataset):
    """The training batches of one epoch, identical whatever the number of processes.

    One global stream of samples is defined by (seed, epoch) alone: per dataset, shards drawn
    with replacement and a shuffle buffer; the datasets mixed in proportion to their training
    counts; sample ``j`` of the epoch is augmented with a generator seeded by ``j``. Global
    batch ``b`` is samples ``b*B .. (b+1)*B - 1``. A process of rank ``r`` out of ``W`` keeps
    the ``r``-th slice of ``B/W`` samples of every batch, and DataLoader worker ``w`` of ``n``
    decodes the batches with ``b % n == w`` (the loader interleaves workers in order), so:

    * 1 process with batch B and W processes with B/W each see the same global batches;
    * resuming at batch ``k`` skips the raw samples of the first k batches without decoding
      them and continues with exactly the batches an uninterrupted run would have seen.

    Every process reads the raw bytes of the whole stream and decodes only its share: exact,
    at the price of reading ``W`` times the bytes (fine for one node; see docs/training.md).
    """

    def __init__(self, folder: Path, manifest: dict, datasets: list[str], channel_stats: dict,
                 tokenizer, batch_size: int, image_px: int, seed: int, epoch: int,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 2000, table: FeedTable | None = None):
        super().__init__()
        if batch_size % world_size:
            raise ConfigError(f"batch_size={batch_size} is not divisible by the {world_size} "
                             f"processes; choose a multiple of {world_size}")
        self.urls = [[str(p) for p in shard_paths(folder, "train", ds)] for ds in datasets]
        self.counts = [manifest["counts"][ds]["train"] for ds in datasets]
        self.stats, self.tokenizer, self.image_px = channel_stats, tokenizer, image_px
        self.batch_size, self.local = batch_size, batch_size // world_size
        self.epoch_seed = seed * 100_003 + epoch
        self.start_batch, self.rank = start_batch, rank
        self.shuffle_buffer = shuffle_buffer
        self.table = table  # the device feed's: batches are ``RawBatch``es
        self.bytes_read = 0  # raw member bytes pulled from the shards (in this process)

    def _sample(self, raw: dict, rng: random.Random):
        if self.table is None:
            return _prepare(raw, self.stats, rng)
        return prepare_raw(decode_sample(raw), self.table, rng)

    def _collate(self):
        if self.table is None:
            return _collate(self.tokenizer, self.image_px)
        return collate_raw(self.tokenizer)

    def _counted(self, src):
        for raw in src:
            self.bytes_read += sum(len(v) for v in raw.values() if isinstance(v, bytes))
            yield raw

    def _raw_samples(self):
        streams = []
        for i, (urls, n) in enumerate(zip(self.urls, self.counts, strict=True)):
            streams.append(iter(wds.DataPipeline(
                lambda urls=urls, i=i: _resampled(urls, random.Random(self.epoch_seed + 7919 * i)),
                wds.tarfile_to_samples(), self._counted,
                wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, max(n // 2, 1)),
                            rng=random.Random(self.epoch_seed + 31 * i)))))
        mix = random.Random(self.epoch_seed)
        which = range(len(streams))
        while True:
            yield next(streams[mix.choices(which, weights=self.counts)[0]])

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        collate = self._collate()
        batch = []
        for j, raw in enumerate(self._raw_samples()):
            b, pos = divmod(j, self.batch_size)
            if b < self.start_batch or (b - self.start_batch) % n_workers != worker \
                    or not lo <= pos < hi:
                continue
            batch.append(self._sample(raw, random.Random(self.epoch_seed * 1_000_003 + j)))
            if len(batch) == self.local:
                yield collate(batch)
                batch = []


class ShardedStream(TrainStream):
    """The training batches of one epoch, each reader reading only its own share.

    A reader is one (rank ``r``, DataLoader worker ``w``) of ``G = W x workers``; reader
    ``g = r * workers + w``. Per dataset, the epoch has one sequence of shard draws (with
    replacement, seeded by seed, epoch and dataset); reader ``g`` reads draws ``g, g + G,
    g + 2G, ...`` through its own shuffle buffer, so the readers' draws are disjoint and each
    reads about ``1/G`` of the epoch's bytes: the job's data rate grows with ranks x workers.

    The mix: each reader interleaves its datasets by smooth weighted round robin on their
    training counts, so any ``L`` consecutive samples of a reader (one local batch of
    ``L = B / W``) hold ``L * n_i / n`` of dataset ``i``, give or take one; a global batch of
    ``W`` local batches is proportional to within ``W`` samples per dataset.

    The batches depend on ``W`` and ``workers`` (unlike ``TrainStream``'s); for the same pair
    they are deterministic, so resuming at batch ``k`` (each worker skipping the raw samples of
    its batches before ``k`` without decoding them) continues exactly as an uninterrupted run.
    The shuffle buffer per reader and dataset is ``shuffle_buffer``, at most a twentieth of the
    reader's share of the dataset's epoch (what it holds at the end is read but not used).
    """

    def __init__(self, *args, world_size: int = 1, **kw):
        super().__init__(*args, world_size=world_size, **kw)
        self.world_size = world_size

    def _buffer(self, n: int, readers: int) -> int:
        return max(1, min(self.shuffle_buffer, n // (20 * readers)))

    def reader_samples(self, reader: int, readers: int):
        """The endless raw samples of reader ``reader`` of ``readers``, mixed."""
        streams = []
        for i, (urls, n) in enumerate(zip(self.urls, self.counts, strict=True)):
            buf = self._buffer(n, readers)
            streams.append(iter(wds.DataPipeline(
                lambda urls=urls, i=i: _share(urls, random.Random(self.epoch_seed + 7919 * i),
                                              reader, readers),
                wds.tarfile_to_samples(), self._counted,
                wds.shuffle(buf, initial=buf, rng=random.Random(
                    (self.epoch_seed + 31 * i) * 1_000_033 + reader)))))
        credit = np.zeros(len(streams))
        share = np.asarray(self.counts, float) / sum(self.counts)
        while True:  # smooth weighted round robin: the dataset furthest behind its share
            credit += share
            i = int(np.argmax(credit))
            credit[i] -= 1.0
            yield next(streams[i])

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # the rank's batch b is read by its reader b % n; the loader takes its workers in turn
        # from worker 0, so after a resume at batch k worker w plays reader (w + k) % n and
        # skips, undecoded, that reader's batches before k
        role = (worker + self.start_batch) % n_workers
        readers, reader = self.world_size * n_workers, self.rank * n_workers + role
        skip = max(0, -(-(self.start_batch - role) // n_workers)) * self.local
        collate = self._collate()
        batch = []
        for j, raw in enumerate(self.reader_samples(reader, readers)):
            if j < skip:
                continue
            seed = (self.epoch_seed * 1_000_003 + reader) * 1_000_033 + j
            batch.append(self._sample(raw, random.Random(seed)))
            if len(batch) == self.local:
                yield collate(batch)
                batch = []


def _share(urls: list[str], rng: random.Random, reader: int, readers: int):
    """Reader ``reader``'s draws of the epoch's one sequence of shard draws of a dataset."""
    j = 0
    while True:
        url = rng.choice(urls)
        if j % readers == reader:
            yield {"url": url}
        j += 1


STREAM_MODES = ("auto", "exact", "sharded")


def stream_mode(mode: str, world_size: int, num_workers: int) -> str:
    """``exact`` or ``sharded``: ``auto`` is sharded when more than one reader would read."""
    if mode not in STREAM_MODES:
        raise ConfigError(f"stream={mode!r}; choose one of {', '.join(STREAM_MODES)}")
    if mode == "auto":
        return "sharded" if world_size * max(num_workers, 1) > 1 else "exact"
    return mode


def train_stream(folder: Path, manifest: dict, datasets: list[str], channel_stats: dict,
                 tokenizer, batch_size: int, image_px: int, seed: int, epoch: int,
                 num_workers: int = 0, start_batch: int = 0, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False, mode: str = "exact",
                 device: str | None = None, channels_last: bool = True):
    """An endless iterator of this process's (images, tokens) batches: ``TrainStream`` (exact:
    the same global batches for any number of processes and workers) or ``ShardedStream``
    (each reader reads its own share; see ``stream_mode`` for ``auto``).

    With ``device`` (the device feed, ``training.feed``) the batches cross to it in their
    stored integer type and arrive there standardised and augmented, one batch prefetched;
    without, they are float32 host tensors (the host feed)."""
    cls = ShardedStream if stream_mode(mode, world_size, num_workers) == "sharded" \
        else TrainStream
    table = FeedTable(channel_stats, datasets) if device is not None else None
    stream = cls(folder, manifest, datasets, channel_stats, tokenizer, batch_size,
                 image_px, seed, epoch, start_batch, rank, world_size=world_size, table=table)
    if num_workers:
        it = iter(torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
            prefetch_factor=4, persistent_workers=False))
    else:
        it = iter(stream)
        if pin_memory and table is not None:
            it = (b.pin_memory() for b in it)
    if table is None:
        return it
    return Prefetcher(it, table, device, image_px, channels_last)
