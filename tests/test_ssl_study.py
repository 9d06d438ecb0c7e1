"""Seed 001's study (`geofm study --study seed001`): the plan is checked before any work, the
per-notebook parameters are the notebooks' own, the findings follow the paired intervals, and
the page CI builds shows the run's numbers."""

import json
from pathlib import Path

import pytest
import record_fixtures

from geofm_lib import records
from geofm_lib.errors import ConfigError
from geofm_lib.report import reports, ssl_study

ROOT = Path(__file__).resolve().parents[1]


def test_the_study_plan_checks_every_method_before_any_work():
    plan = ssl_study.study_plan("ci")
    assert plan["overrides"]["ssl_method"] == "moco"
    assert plan["overrides"]["run_name"] == "study-seed001-ci"
    assert plan["notebook_params"]["07"] == {"also_methods": ["dino", "mae:vit_small_patch16"],
                                             "also_epochs": None}  # equal epochs for all
    seg = plan["notebook_params"]["08"]
    assert seg["decoder"] == ["unet", "deeplabv3plus"] and seg["protocols"] == ["frozen",
                                                                                 "finetune"]
    assert seg["labelled"][-1] == "all" and seg["ssl_methods"][-1] == "mae:vit_small_patch16"
    first_mae = ssl_study.study_plan("ci", ["mae:vit_tiny_patch16", "dino"])
    assert first_mae["overrides"]["ssl_backbone"] == "vit_tiny_patch16"
    with pytest.raises(ConfigError, match="ViT"):
        ssl_study.study_plan("ci", ["moco", "mae"])  # MAE on the ResNet: refused at once
    with pytest.raises(ConfigError, match="unknown SSL method 'simclr'"):
        ssl_study.study_plan("ci", ["moco", "simclr"])
    with pytest.raises(ConfigError, match="drop run_name"):
        ssl_study.study_plan("ci", run_name="mine")
    # and the notebooks have the parameters the plan passes them
    books = reports.notebooks(ROOT)
    checked = reports.check_notebook_params(books, plan["notebook_params"])
    assert set(checked) == {"07_ssl_pretrain", "08_segmentation"}


def test_notebook_parameters_must_be_the_notebook_s_own():
    books = reports.notebooks(ROOT)
    with pytest.raises(ConfigError, match="08_segmentation has no parameter"):
        reports.check_notebook_params(books, {"08": {"decoders": ["unet"]}})
    with pytest.raises(ConfigError, match="not one notebook"):
        reports.check_notebook_params(books, {"10": {"x": 1}})
    with pytest.raises(ConfigError, match="not one notebook"):
        reports.check_notebook_params(books, {"0": {"x": 1}})  # every notebook matches


def _diff(enc, prot, n, d, ci, dec="unet", base="random init"):
    return record_fixtures.difference(enc, prot, n, d, ci, dec, base)


def test_findings_follow_the_paired_intervals():
    seg = record_fixtures.segmentation(labelled=[64, 900], differences=[
        _diff("MoCo-v2 (10 steps)", "frozen", 64, 5.0, [1.0, 9.0]),
        _diff("MoCo-v2 (10 steps)", "frozen", 900, -2.0, [-3.0, -1.0]),
        _diff("MoCo-v2 (10 steps)", "finetune", 64, 1.0, [-1.0, 3.0]),
        _diff("DINO (10 steps)", "frozen", 64, 0.5, [-1.0, 2.0]),
        _diff("DINO (10 steps)", "frozen", 64, 9.0, [8.0, 10.0], dec="deeplabv3plus"),
        _diff("MAE ViT-S/16 (5 steps)", "frozen", 900, -1.0, [-2.0, 0.5], dec="upconv",
              base="random init ViT-S/16"),
        _diff("MAE ViT-S/16 (5 steps)", "finetune", 900, 3.0, [1.0, 5.0], dec="upconv",
              base="random init ViT-S/16")],
        history={"frozen|unet|MoCo-v2 (10 steps)|900": [
            {"epoch": 1, "train_loss": 1.0, "val_mean_iou": 50.0},
            {"epoch": 2, "train_loss": 0.5, "val_mean_iou": 60.0}],
            "frozen|unet|random init|900": [
            {"epoch": 1, "train_loss": 1.0, "val_mean_iou": 40.0},
            {"epoch": 2, "train_loss": 0.5, "val_mean_iou": 62.0}]})
    items = ssl_study.findings(seg)[1:]  # after the floor's line
    text = "\n".join(items)
    moco, dino = items[0], items[1]
    assert "MoCo-v2" in moco and "+5.0" in moco and "holds here" in moco
    # DINO's row is its first decoder's (UNet), not DeepLabV3+'s
    assert "DINO" in dino and "+0.5" in dino and "not established here" in dino
    assert "larger with fewer labels" in text  # +5.0 with 64 against -2.0 with 900
    mae = next(i for i in items if "gains most from fine-tuning" in i)
    assert "-1.0" in mae and "+3.0" in mae
    conv = next(i for i in items if "Faster convergence" in i)
    assert "50.0 against 40.0" in conv and "60.0 against 62.0" in conv


def test_the_floor_and_a_baseline_at_it_are_said_on_the_study_page():
    """Issue 37: the majority-class floor leads the findings, a random init whose interval
    reaches it is named there and flagged in the table, and the probe table shows RCF, the
    label prior and the margin over the strongest fair baseline."""
    row = record_fixtures.segmentation_row
    seg = record_fixtures.segmentation(
        at_floor={"random init": True, "MoCo-v2": False},
        table=[row("majority class (floor)", 34.7, [33.0, 36.0], floor=True, decoder="-"),
               row("random init", 35.0, [33.5, 36.6], at_floor=True),
               row("MoCo-v2 (10 steps)", 60.0, [57.0, 63.0], at_floor=False)],
        differences=[_diff("MoCo-v2 (10 steps)", "frozen", 64, 25.0, [22.0, 28.0])])
    first = ssl_study.findings(seg)[0]
    assert "The floor" in first and "34.7" in first and "at the floor" in first
    assert "random init" in first and "MoCo-v2" not in first
    table = ssl_study._segmentation_table(seg)
    assert table.count("at the floor") == 1 and "majority class (floor)" in table
    probes = ssl_study._probe_table(record_fixtures.ssl(**{
        "ssl_method": "moco", "linear_probe_f2_s1s2": 60.0, "linear_probe_f2_s1s2_ci": [57, 63],
        "random_init_f2_s1s2": 45.0, "random_init_f2_s1s2_ci": [42, 48], "rcf_f2_s1s2": 50.0,
        "rcf_f2_s1s2_ci": [47, 53], "label_prior_f2_s1s2": 44.0,
        "label_prior_f2_s1s2_ci": [41, 47], "random_init_at_floor": True,
        "strongest_baseline": "RCF", "ssl_minus_strongest_f2_s1s2": 10.0,
        "ssl_minus_strongest_f2_s1s2_ci": [7.0, 13.0]}))
    assert "50.0" in probes and "44.0" in probes and "vs RCF" in probes
    assert probes.count("at the floor") == 1


@pytest.mark.reports
def test_the_seed001_study_page_shows_the_run_s_numbers():
    """After run_all.sh ran `geofm study --study seed001 --preset ci`: the page, its links, and
    every segmentation row of the run's metrics on it."""
    page = ROOT / "reports" / "study-seed001-ci.html"
    if not page.is_file():
        pytest.skip("no seed 001 study yet (tests/run_all.sh runs it before pytest)")
    text = page.read_text()
    run = ROOT / "reports" / "study-seed001-ci"
    for link in ("07_ssl_pretrain.html", "08_segmentation.html"):
        assert f'href="study-seed001-ci/{link}"' in text and (run / link).is_file()
    seg = records.read_run(run / "metrics.json")["08_segmentation"]
    assert {r.decoder for r in seg.table if not r.floor} == {"unet", "deeplabv3plus", "upconv"}
    assert any(r.floor for r in seg.table) and "The floor" in text  # issue 37
    assert {r.protocol for r in seg.table} == {"frozen", "finetune"}
    for r in seg.table:
        assert f"<b>{r.mean_iou:.1f}</b>" in text
    for title in ("findings, checked here", "Frozen features", "Segmentation mean IoU",
                  "Detail preservation", "Seed 001's table", "On a GPU"):
        assert title in text
    assert "study-seed001-ci.html" in (ROOT / "reports" / "index.html").read_text()


def test_the_full_preset_s_gpu_time_comes_only_from_a_gpu_measurement(tmp_path):
    from geofm_lib.config import load_config
    from geofm_lib.report import ssl_study

    cfg = load_config("full")
    bench = tmp_path / "ssl.json"
    assert "not measured on this machine" in ssl_study._gpu_time(cfg, bench)  # none
    numbers = {"preset": "full", "image_px": cfg.image_px, "precision": "bf16",
               "places_per_epoch": 20000, "machine": {"gpu": "NVIDIA H200"},
               "ssl": {"DINO": {"samples_per_s": 160.0, "epoch_seconds": 125.0}}}
    bench.write_text(json.dumps({**numbers, "machine": {"gpu": None}}))
    assert "not measured on this machine" in ssl_study._gpu_time(cfg, bench)  # a CPU's
    bench.write_text(json.dumps(numbers))
    text = ssl_study._gpu_time(cfg, bench)
    hours = cfg.ssl_epochs * 125.0 / 3600
    assert "NVIDIA H200" in text and f"{hours:.1f}&nbsp;h for {cfg.ssl_epochs} epochs" in text
