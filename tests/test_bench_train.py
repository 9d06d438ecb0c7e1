"""Training benchmarks: the step timer, FLOP counting for MFU and the GPU peak table."""

import math

import pytest

pytest.importorskip("torch")

from geofm_lib.bench import train as bench_train


def test_step_throughput_and_flops_on_the_cpu():
    r = bench_train.our_step_throughput("ViT-tiny", batch_size=8, image_px=32, steps=3,
                                        warmup_steps=1, threads=1, count_flops=True)
    assert len(r["step_seconds"]) == 3 and math.isfinite(r["samples_per_s"])
    assert r["samples_per_s"] > 0 and r["flops_per_step"] > 0
    assert "MFU" not in r  # no GPU peak to divide by on a CPU
    before = bench_train.our_step_throughput("RN50-tiny", batch_size=8, image_px=32, steps=2,
                                             warmup_steps=1, threads=1, channels_last=False)
    assert before["samples_per_s"] > 0


def test_gpu_peaks_are_matched_by_name():
    assert bench_train._peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench_train._peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench_train._peak_flops("NVIDIA H200") == 989e12
    assert bench_train._peak_flops("Some other GPU") is None


def test_step_fed_by_a_loader_takes_a_new_batch_every_step():
    torch = pytest.importorskip("torch")
    taken = []

    def feed():
        while True:
            taken.append(1)
            yield torch.randn(4, 3, 32, 32), torch.randint(1, 100, (4, 77))

    r = bench_train.our_step_throughput("RN50-tiny", batch_size=4, image_px=32, steps=3,
                                        warmup_steps=1, threads=1, feed=feed())
    assert len(taken) == 4 and r["samples_per_s"] > 0
    # as the loop reads back now (the GPU section's "after"): every batch still taken once
    taken.clear()
    r = bench_train.our_step_throughput("RN50-tiny", batch_size=4, image_px=32, steps=3,
                                        warmup_steps=1, threads=1, feed=feed(),
                                        readback="window")
    assert len(taken) == 4 and r["readback"] == "window" and r["samples_per_s"] > 0


def test_seed001_step_benchmark_times_every_method_and_segmenter(tmp_path, monkeypatch):
    """`geofm bench-ssl --quick` on the CPU: the code path the GPU figures come from (tiny
    sizes; the numbers mean nothing here)."""
    pytest.importorskip("lightly")
    from geofm_lib.bench import ssl as bench_ssl

    monkeypatch.chdir(tmp_path)
    r = bench_ssl.run("ci", "cpu", quick=True,
                      methods=["moco", "dino", "mae:vit_tiny_patch16"], work_dir=str(tmp_path))
    assert set(r["ssl"]) == {"MoCo-v2", "DINO", "MAE ViT-Ti/16"}
    assert all(v["samples_per_s"] > 0 and v["timed_steps"] == 2 for v in r["ssl"].values())
    # the FLOPs behind MFU (issue 40): counted per sample for every system (no peak on a CPU)
    assert all(v["flops_per_sample"] > 0 and "MFU" not in v
               for v in (*r["ssl"].values(), *r["segmentation"].values()))
    assert set(r["segmentation"]) == {f"{d} on {b}, {p}" for d, b in
                                      [("unet", "resnet18"), ("deeplabv3plus", "resnet18"),
                                       ("upconv", "vit_tiny_patch16")]
                                      for p in ("frozen", "finetune")}
    assert r["ssl"]["DINO"]["epoch_seconds"] == pytest.approx(  # both rounded to 0.1
        r["places_per_epoch"] / r["ssl"]["DINO"]["samples_per_s"], rel=0.01, abs=0.06)


def test_the_gpu_section_runs_before_and_after_on_the_cpu(monkeypatch):
    """The code path of the GPU table (issue 40), at toy sizes on the CPU, so a GPU session
    does not spend its minutes on a crash: before (every loss read back, float32 batches) and
    after (read back every few steps, the device feed) for a model, in memory and fed."""
    monkeypatch.setattr(bench_train, "_bench_config", lambda work, quick, **kw:
                        bench_train.load_config("ci", group="B", work_dir=str(work),
                                                image_px=kw["image_px"],
                                                batch_size=kw["batch_size"], shard_size=8))
    gpu = bench_train._cuda_section(True, 2, 2, "cpu", with_openclip=False,
                                    models=(("ViT-tiny", 32, 8),))
    row = gpu["ViT-tiny@32px bf16 batch 8"]
    for label in ("before", "after"):
        assert row[label]["samples_per_s"] > 0 and row[label]["fed_samples_per_s"] > 0
        assert row[label]["flops_per_step"] > 0
    assert {k.rsplit(", ", 1)[1] for k in gpu if k.startswith("sharded stream alone")} == \
        {"host feed", "device feed"}
