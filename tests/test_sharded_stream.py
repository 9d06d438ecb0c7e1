"""The sharded training stream (issue 18): each (rank, loader worker) reads its own share of
the epoch's shard draws, the dataset mix holds in every batch, and resuming is exact for the
same number of readers."""

import logging
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from geofm_lib import paths, training  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.data import build, shards  # noqa: E402
from geofm_lib.models import factory, inputs  # noqa: E402
from geofm_lib.training.stream import ShardedStream, _share, stream_mode  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Group B (2 datasets) x 160 scenes at 32 px in shards of 16: ten shards per dataset."""
    work = tmp_path_factory.mktemp("work")
    build.build_shards(_cfg(work), show_progress=False)
    return work


def _cfg(work, **kw):
    return load_config("ci", **{**dict(group="B", work_dir=str(work), samples_per_dataset=160,
                                       shard_size=16, val_fraction=0.1, batch_size=12,
                                       run_name="t"), **kw})


def _stream(cfg, **kw):
    folder = paths.build_folder(cfg)
    manifest = shards.load_manifest(folder)
    stats, _ = inputs.input_spec({d: manifest["band_stats"][d] for d in cfg.dataset_keys})
    _, tok = factory.create_model("RN50-tiny", 32)
    args = (folder, manifest, list(cfg.dataset_keys), stats, tok, cfg.batch_size, cfg.image_px,
            cfg.seed, 0)
    return args, manifest


def test_auto_is_sharded_when_more_than_one_reader_reads():
    assert stream_mode("auto", 1, 0) == "exact" and stream_mode("auto", 1, 1) == "exact"
    assert stream_mode("auto", 2, 0) == "sharded" and stream_mode("auto", 1, 2) == "sharded"
    assert stream_mode("exact", 8, 4) == "exact"


def test_readers_take_disjoint_draws_of_one_sequence():
    urls = [f"s{i}" for i in range(7)]
    whole = _share(urls, random.Random(3), 0, 1)
    seq = [next(whole)["url"] for _ in range(40)]
    parts = [_share(urls, random.Random(3), g, 4) for g in range(4)]
    got = [[next(p)["url"] for _ in range(10)] for p in parts]
    assert [got[j % 4][j // 4] for j in range(40)] == seq  # interleaved, they are the sequence


def test_every_local_batch_holds_each_dataset_in_proportion(work):
    cfg = _cfg(work)
    args, manifest = _stream(cfg)
    counts = [manifest["counts"][d]["train"] for d in cfg.dataset_keys]
    s = ShardedStream(*args, rank=0, world_size=2)
    raw = s.reader_samples(0, 2)
    local = cfg.batch_size // 2
    for _ in range(20):
        batch = [next(raw)["__key__"].split("-")[0] for _ in range(local)]
        for ds, n in zip(cfg.dataset_keys, counts, strict=True):
            want = local * n / sum(counts)
            assert abs(batch.count(ds) - want) <= 1, (batch, ds, want)


def test_bytes_per_reader_are_a_share_of_the_epoch(work):
    cfg = _cfg(work)
    args, manifest = _stream(cfg)
    epoch = sum(manifest["counts"][d]["train"] for d in cfg.dataset_keys)
    read = {}
    for readers in (1, 4):  # an epoch's samples from one reader, a quarter from one of four
        s = ShardedStream(*args, rank=0, world_size=readers)
        it = s.reader_samples(0, readers)
        for _ in range(epoch // readers):
            next(it)
        read[readers] = s.bytes_read
    assert abs(read[4] * 4 / read[1] - 1) < 0.1, read


def test_sharded_resume_continues_exactly_for_the_same_readers(work):
    cfg = _cfg(work)
    args, _ = _stream(cfg)
    for workers in (0, 2):
        whole = training.train_stream(*args, num_workers=workers, rank=1, world_size=2,
                                      mode="sharded")
        first = [next(whole) for _ in range(5)]
        later = training.train_stream(*args, num_workers=workers, start_batch=3, rank=1,
                                      world_size=2, mode="sharded")
        for a, b in zip([next(later) for _ in range(2)], first[3:], strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), workers
    rank0 = next(training.train_stream(*args, rank=0, world_size=2, mode="sharded"))[0]
    rank1 = next(training.train_stream(*args, rank=1, world_size=2, mode="sharded"))[0]
    assert not torch.equal(rank0, rank1)  # the ranks read different samples


def _train_until_killed(cfg, at_step: int) -> None:
    """Train ``cfg`` and interrupt it (as Ctrl-C would) at step ``at_step``."""
    def kill(step, epoch, loss, lr):
        if step == at_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, on_step=kill, show_progress=False)


def test_killed_and_resumed_sharded_run_with_loader_workers_is_bit_identical(work, tmp_path):
    kw = dict(epochs=1, checkpoint_every_steps=3, keep_checkpoints=2, num_workers=2,
              stream="auto", samples_per_dataset=48)  # 7 steps

    def fresh(name):  # its own small build and checkpoints
        build.build_shards(_cfg(tmp_path / name, **kw), show_progress=False)
        return tmp_path / name

    straight = training.train(_cfg(fresh("a"), **kw), show_progress=False)
    cfg = _cfg(fresh("b"), **kw)

    _train_until_killed(cfg, at_step=5)
    state = training.load_checkpoint(paths.checkpoint_dir(cfg) / "last.pt")
    assert state["stream"] == {"mode": "sharded", "world_size": 1, "num_workers": 2}
    resumed = training.train(cfg, show_progress=False)
    assert resumed.step_losses == straight.step_losses
    a = torch.load(straight.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert np.isfinite(resumed.step_losses).all()


def test_resuming_with_another_reader_count_continues_and_says_batches_differ(
        work, tmp_path):
    kw = dict(epochs=1, checkpoint_every_steps=3, keep_checkpoints=2, num_workers=2,
              stream="sharded", samples_per_dataset=48)  # 8 steps of 12
    cfg = _cfg(tmp_path / "w", **kw)
    build.build_shards(cfg, show_progress=False)

    _train_until_killed(cfg, at_step=4)
    saved = training.load_checkpoint(paths.checkpoint_dir(cfg) / "last.pt")
    assert saved["stream"]["num_workers"] == 2
    done_before = saved["step"]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("geofm").addHandler(handler)  # geofm's logger does not propagate
    try:
        resumed = training.train(_cfg(tmp_path / "w", **{**kw, "num_workers": 1}),
                                 show_progress=False)
    finally:
        logging.getLogger("geofm").removeHandler(handler)
    said = [r.getMessage() for r in records if "another training stream" in r.getMessage()]
    assert len(said) == 1 and "differ" in said[0] and "'num_workers': 1" in said[0], said
    # the same sample count: the steps already taken are kept, the rest of the epoch follows
    assert resumed.step_losses[:done_before] == saved["step_losses"][:done_before]
    assert len(resumed.step_losses) == 8 and np.isfinite(resumed.step_losses).all()
    last = training.load_checkpoint(paths.checkpoint_dir(cfg) / "last.pt")
    assert last["step"] == 8 and last["stream"]["num_workers"] == 1
