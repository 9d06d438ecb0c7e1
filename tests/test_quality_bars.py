"""The quality bars of issue 4 on the embedded default, checked on the demo report that
tests/run_all.sh produces (`geofm report --preset demo`, CPU): every dataset's validation R@1
at least 10 points above its exact chance level with a 95 % bootstrap interval above chance,
the trained model above the same model at initialisation, and the mean R@1 at least twice the
mean chance level."""

import json
from pathlib import Path

import pytest

from geofm_lib import records

pytestmark = pytest.mark.reports

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "reports" / "group_all-demo"


def _demo() -> dict[str, records.StageRecord]:
    """The demo report's typed records (read as the index reads them)."""
    path = DEMO / "metrics.json"
    if not path.is_file():
        pytest.skip("no demo report (tests/run_all.sh makes one unless GEOFM_SKIP_DEMO=1)")
    return records.read_run(path)


@pytest.fixture(scope="module")
def zero_shot() -> records.ZeroShotRecord:
    zs = _demo()["04_zero_shot_eval"]
    assert zs.split == "val"
    return zs


def test_every_dataset_beats_chance_by_ten_points_with_ci_above_chance(zero_shot):
    assert len(zero_shot.per_dataset) == 8
    for ds, row in zero_shot.per_dataset.items():
        assert row.r1 - row.chance_r1 >= 10, (ds, row.r1, row.chance_r1)
        assert row.r1_ci[0] > row.chance_r1, (ds, row.r1_ci)
        assert zero_shot.quality["per_dataset"][ds]["trained > init"], ds


def test_mean_r1_at_least_twice_mean_chance(zero_shot):
    assert zero_shot.mean_r1 >= 2 * zero_shot.mean_chance_r1
    assert zero_shot.mean_r1 > zero_shot.init_mean_r1


def test_demo_ran_all_five_notebooks():
    run = DEMO / "run.json"
    if not run.is_file():
        pytest.skip("no demo report")
    seconds = json.loads(run.read_text())["seconds"]
    assert list(seconds) == ["01_data_prep", "02_explore_data", "03_pretrain",
                             "04_zero_shot_eval", "05_map_viz", "06_feature_probes",
                             "07_ssl_pretrain", "08_segmentation", "09_scene_maps"]
    print(f"demo pipeline: {sum(seconds.values()):.0f} s {seconds}")


def test_trained_encoder_beats_its_random_init_twin_with_the_linear_probe():
    probes = _demo()["06_feature_probes"]
    means = probes.mean_f2_micro
    assert means["trained/linear"] > means["init/linear"], means
    print({k: v for k, v in probes.per_dataset.items() if k.endswith("/linear")})


def test_sensor_pairs_beat_random_init_in_the_linear_probe_on_s1_s2():
    """Issue 8's bar: MoCo-v2 with S1/S2 pairs of a place, linear probe on the labelled places
    with S1+S2 input, above the same ResNet at random initialisation (since issue 37 with its
    BatchNorm statistics estimated; that random init is at the label-prior floor on the demo,
    so the bar against the strongest fair baseline is the one below)."""
    m = _demo()["07_ssl_pretrain"]
    assert m.ssl_mode == "sensor" and not m.collapsed
    assert m.linear_probe_f2_s1s2 > m.random_init_f2_s1s2, m
    # and reliably so: the paired 95 % interval of the difference on the same places is above 0
    assert m.ssl_method == "moco"
    assert m.ssl_minus_random_init_f2_s1s2_ci[0] > 0, m


@pytest.mark.xfail(strict=False, reason=(
    "issue 37, measured 2026-12-05 (AMD EPYC, fp32): on the demo, random convolutional features "
    "(RCF) under the same linear probe score F2 60.0 [53.7, 65.7] on S1+S2 against MoCo-v2's "
    "54.9 [48.9, 60.4]: MoCo-v2 minus RCF -5.2 [-9.6, -0.4] (paired). Against the strongest "
    "fair baseline the bar does not hold; it is reported here, not loosened (XPASS: it holds "
    "on that machine, then drop the mark)"))
def test_sensor_pairs_beat_the_strongest_fair_baseline_in_the_linear_probe_on_s1_s2():
    """Issue 8's bar restated against the fair baselines (issue 37): MoCo-v2's S1+S2 probe above
    the stronger of random init (BatchNorm statistics estimated) and RCF, the paired 95 %
    interval of the difference above 0."""
    m = _demo()["07_ssl_pretrain"]
    assert m.strongest_baseline in ("random init", "RCF")
    print(f"MoCo-v2 {m.linear_probe_f2_s1s2} minus {m.strongest_baseline}: "
          f"{m.ssl_minus_strongest_f2_s1s2} {m.ssl_minus_strongest_f2_s1s2_ci}; floor "
          f"{m.label_prior_f2_s1s2}, random init at the floor: {m.random_init_at_floor}")
    assert m.ssl_minus_strongest_f2_s1s2_ci[0] > 0, m


def test_every_segmenter_clears_the_majority_class_floor_with_few_labels():
    """Issue 37's floor under 08: with the fewest labelled places every encoder's mean IoU
    interval (random inits with estimated statistics included) lies above the majority-class
    map's (on the demo: 34.7, the always-"not tree" map), so no row is a degenerate one."""
    metrics = _demo()
    m = metrics["08_segmentation"]
    assert m.protocol == "frozen" and m.target == "trees"
    assert m.floor.name == "majority class"
    assert m.at_floor and not any(m.at_floor.values()), m.at_floor
    for name, (lo, _) in m.mean_iou_ci.items():
        assert lo > m.floor.mean_iou, (name, lo, m.floor)
    # and DINO (beside MoCo in 07) did not collapse there
    assert not metrics["07_ssl_pretrain"].also["dino"].collapsed


@pytest.mark.xfail(strict=False, reason=(
    "issue 37, measured 2026-12-05 (AMD EPYC, fp32): once random init's BatchNorm statistics "
    "are estimated (the fair random init), the frozen MoCo-v2 and DINO encoders under a UNet "
    "with 64 labelled places are not reliably above it: MoCo-v2 -0.7 [-2.5, +0.7], DINO +1.5 "
    "[-0.4, +3.4] mIoU (paired; before, against random init without statistics: +5.0 "
    "[0.6, 10.0] and +7.2 [3.0, 12.3]). Reported, not loosened (XPASS: it holds there)"))
def test_pretrained_encoders_beat_random_init_in_segmentation_with_few_labels():
    """Issue 20's bar (seed 001's finding): the MoCo and DINO encoders of 07, frozen, under a
    UNet trained on the fewest labelled places, segment tree cover with a higher mean IoU than
    the same encoder at (fair) random init, the paired 95 % interval of the difference above 0."""
    m = _demo()["08_segmentation"]
    assert {"MoCo-v2", "DINO"} <= set(m.minus_random_init)
    print({k: (m.minus_random_init[k], m.minus_random_init_ci[k]) for k in ("MoCo-v2", "DINO")})
    for name in ("MoCo-v2", "DINO"):
        d = m.minus_random_init[name]
        assert d > 0 and m.minus_random_init_ci[name][0] > 0, (name, m.minus_random_init)
        assert m.mean_iou[name] > m.mean_iou["random init"]


def test_mae_beside_moco_learns_to_reconstruct_and_does_not_collapse():
    """Issue 20's MAE bar on the demo: the ViT MAE pretrained beside MoCo in 07 lowers its
    reconstruction loss under fixed masks by at least a tenth, its encoder does not collapse,
    07 shows its reconstructions, and 08 scores its encoder against a random ViT (paired)."""
    metrics = _demo()
    also = metrics["07_ssl_pretrain"].also
    mae = [a for k, a in also.items() if k.startswith("mae")]
    assert len(mae) == 1, also.keys()
    first, last = mae[0].reconstruction_loss
    assert last < 0.9 * first, mae[0]
    assert not mae[0].collapsed
    page = (DEMO / "07_ssl_pretrain.html").read_text()
    assert "MAE ViT-Ti/16 reconstruction loss" in page
    seg = metrics["08_segmentation"]
    name = mae[0].label
    assert name in seg.minus_random_init and seg.backbones[name].startswith("vit_")
    print(f"MAE reconstruction loss {first} -> {last}; 08 mIoU {seg.mean_iou[name]} vs "
          f"{seg.mean_iou['random init ViT-Ti/16']}, {seg.minus_random_init[name]:+.1f} "
          f"{seg.minus_random_init_ci[name]}")


@pytest.mark.xfail(strict=False, reason=(
    "issue 37, measured 2026-12-05 (AMD EPYC, fp32): the CLIP tower's random init scored mIoU "
    "37.0 (64 labels) and 34.7 (256), the majority-class floor exactly, because its BatchNorm "
    "statistics were never estimated; with them it scores 61.1 and 65.9, and the tower of 03 "
    "(62.0, 63.7) is +0.9 [-0.5, +2.6] and -2.2 [-4.1, -0.2] against it (before: +25.0 and "
    "+29.0). Reported, not loosened (XPASS: it holds there)"))
def test_the_clip_tower_of_03_beats_its_random_init_in_segmentation():
    """08's other encoder on the demo: 03's CLIP image tower, frozen under the UpConv decoder
    and fed 03's own input, segments tree cover with the fewest labels better than the same
    tower at random init on the same input (paired 95 % interval above 0)."""
    seg = _demo()["08_segmentation"]
    clip = [k for k in seg.minus_random_init if k.startswith("CLIP ")]
    assert len(clip) == 1, seg.minus_random_init.keys()
    name = clip[0]
    assert seg.backbones[name].startswith("tower:")
    print(f"{name}: mIoU {seg.mean_iou[name]} vs {seg.mean_iou['random init ' + name]}, "
          f"{seg.minus_random_init[name]:+.1f} {seg.minus_random_init_ci[name]}")
    assert seg.minus_random_init[name] > 0 and seg.minus_random_init_ci[name][0] > 0


def test_scene_class_map_beats_its_random_init_twin():
    """09 on the demo's simulated scene: the trained model's class map above the same
    architecture at random weights (intervals apart). Against the majority-class floor it is
    not (2026-12-06: 57.1 [52.8, 60.8] vs 56.8): the page and the index say so."""
    m = _demo()["09_scene_maps"]
    acc = m.accuracy
    trained, init = acc[m.encoder], acc[m.baseline]
    assert trained.ci95[0] > init.ci95[1], (trained, init)
    floor = next(v for k, v in acc.items() if k.startswith("majority class"))
    print(f"scene class map: trained {trained.accuracy} {trained.ci95}, init {init.accuracy}, "
          f"majority class {floor.accuracy}")
