"""open_clip_train throughput benchmark: a few real steps of a tiny model in a child process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("open_clip_train")

from geofm_lib.bench.openclip import openclip_train_throughput

ROOT = Path(__file__).resolve().parents[1]


def test_rn50_tiny_throughput():
    # one thread: with all cores, anything else running on the machine makes torch's threads
    # spin and a step here can take seconds instead of a fraction of one
    r = openclip_train_throughput("RN50-tiny", batch_size=8, image_px=32, steps=4,
                                  warmup_steps=1, threads=1, timeout_s=300)
    assert r["steps_timed"] == 3
    assert len(r["step_seconds"]) == 3 and len(r["data_seconds"]) == 3
    for key in ("samples_per_s", "samples_per_s_mean", "samples_per_s_excl_data"):
        assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert r["device_used"] == "cpu"
    assert r["open_clip_version"]
    args = r["args"]
    assert args[args.index("--dataset-type") + 1] == "synthetic"
    assert args[args.index("--train-num-samples") + 1] == "32"
    # the trainer's logs and checkpoint went to a temp dir outside the repo
    assert not Path(args[args.index("--logs") + 1]).is_relative_to(ROOT)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        openclip_train_throughput("no-such-model", batch_size=8, image_px=32, steps=2,
                                  warmup_steps=0)
