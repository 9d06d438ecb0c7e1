"""A user's own dataset, declared in a dataset card in a parameter file outside the repository
(or in dataset.yaml beside the data), through the readers and the notebook chain 01-05."""

import json

import numpy as np
import pytest
import yaml

from geofm_lib import cli
from geofm_lib.config import load_config
from geofm_lib.data import build, shards
from geofm_lib.errors import ConfigError
from geofm_lib.models import inputs

rasterio = pytest.importorskip("rasterio")

CARD = {"name": "Forest plots (4-band camera)", "gsd_m": 0.5, "group": "custom",
        "labels": ["forest", "water", "meadow"],
        "bands": [{"name": "blue", "center_nm": 475}, {"name": "green", "center_nm": 555},
                  {"name": "red", "center_nm": 660}, {"name": "nir", "center_nm": 833}],
        "units": "reflectance x 10000"}


def _write_plots(root, n=40):
    """A table of 4-band GeoTIFF plots (bands named by description) with labels and captions."""
    import pandas as pd
    from rasterio.transform import from_origin

    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(2)
    rows = []
    looks = {"forest": (300, 600, 400, 3500), "water": (500, 450, 300, 150),
             "meadow": (400, 800, 600, 2800)}
    for i in range(n):
        labels = ["forest", "water"] if i % 3 == 0 else [("forest", "meadow", "water")[i % 3]]
        base = np.mean([looks[lab] for lab in labels], axis=0)
        img = (base[:, None, None] * rng.uniform(0.8, 1.2, (4, 48, 48))).astype(np.uint16)
        with rasterio.open(root / "img" / f"p{i}.tif", "w", driver="GTiff", width=48, height=48,
                           count=4, dtype="uint16", crs="EPSG:32633",
                           transform=from_origin(500000 + 30 * i, 5400000, 0.5, 0.5)) as f:
            f.write(img)
            for b, name in enumerate(("blue", "green", "red", "nir"), start=1):
                f.set_band_description(b, name)
        rows.append({"image": f"p{i}.tif", "labels": "|".join(labels),
                     "caption": f"plot {i}: " + " and ".join(labels)})
    pd.DataFrame(rows).to_csv(root / "plots.csv", index=False)


def _params(path, data_root, **extra):
    params = {"group": "custom", "image_px": 32, "samples_per_dataset": 40, "val_fraction": 0.25,
              "dataset_cards": {"forest_plots": CARD},
              "sources": {"forest_plots": {"reader": "table", "root": str(data_root),
                                           "captions_file": "plots.csv", "images_dir": "img"}},
              **extra}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_a_dataset_card_in_a_parameter_file_anywhere(tmp_path):
    _write_plots(tmp_path / "plots")
    (tmp_path / "elsewhere").mkdir()
    params = _params(tmp_path / "elsewhere" / "my_forest.yaml", tmp_path / "plots")
    cfg = load_config("ci", str(params), work_dir=str(tmp_path / "work"))
    assert cfg.name == "my_forest-ci" and cfg.dataset_keys == ("forest_plots",)
    info = cfg.dataset_info("forest_plots")
    assert info.labels == ("forest", "water", "meadow") and info.gsd_m == 0.5
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    assert m["vocabularies"]["forest_plots"] == ["forest", "water", "meadow"]
    records = m.band_records("forest_plots")
    # the card's wavelengths, the usual canonical names; RGB found by name, not by order
    assert [r.name for r in records] == ["B", "G", "R", "nir"]
    assert [r.center_nm for r in records] == [475, 555, 660, 833]
    assert records[0].units == "reflectance x 10000"
    spec, _ = inputs.input_spec(m.band_stats_for(["forest_plots"]))
    assert spec["forest_plots"].rule == "rgb" and list(spec["forest_plots"].idx) == [2, 1, 0]
    s = next(shards.iter_shards(shards.shard_paths(folder, "train")))
    assert s["json"]["group"] == "custom" and s["json"]["sensor"] == CARD["name"]
    assert s["json"]["gsd_m"] == 0.5


def test_bad_cards_and_cards_beside_the_data(tmp_path, capsys):
    _write_plots(tmp_path / "plots", n=6)
    spec = {"reader": "table", "root": str(tmp_path / "plots"), "captions_file": "plots.csv",
            "images_dir": "img"}
    with pytest.raises(ConfigError, match="sensor 'landsat9' is not a catalog sensor"):
        load_config("ci", group="custom", sources={"p": spec},
                    dataset_cards={"p": {"sensor": "landsat9", "gsd_m": 30.0}})
    with pytest.raises(ConfigError, match="needs a catalog sensor or its bands"):
        load_config("ci", group="custom", sources={"p": spec}, dataset_cards={"p": {"gsd_m": 1.0}})
    with pytest.raises(ConfigError, match="are catalog datasets"):
        load_config("ci", group="custom", sources={"eurosat": spec},
                    dataset_cards={"eurosat": {"sensor": "sentinel2_l1c", "gsd_m": 10.0}})
    with pytest.raises(ConfigError, match="parameter file .*nope.yaml' does not exist"):
        load_config("ci", str(tmp_path / "nope.yaml"))
    # a karpathy corpus can only take a catalog key ... or a card's
    with pytest.raises(ConfigError, match="declared in dataset_cards"):
        load_config("ci", group="custom", sources={"my_corpus": {**spec, "reader": "karpathy"}})
    # dataset.yaml beside the data declares it without any card in the parameters
    (tmp_path / "plots" / "dataset.yaml").write_text(yaml.safe_dump(CARD))
    cfg = load_config("ci", group="custom", sources={"p": spec}, image_px=32,
                      work_dir=str(tmp_path / "work"))
    assert cfg.dataset_info("p").labels == tuple(CARD["labels"])
    # the CLI takes the parameter file anywhere with --params
    params = _params(tmp_path / "mine.yaml", tmp_path / "plots", samples_per_dataset=6)
    assert cli.main(["params", "--preset", "ci", "--params", str(params)]) == 0
    assert "forest_plots" in capsys.readouterr().out


def test_a_user_dataset_through_notebooks_01_to_05(tmp_path, monkeypatch):
    from geofm_lib.report import reports

    _write_plots(tmp_path / "plots")
    (tmp_path / "elsewhere").mkdir()
    params = _params(tmp_path / "elsewhere" / "my_forest.yaml", tmp_path / "plots")
    out = reports.run_report("ci", str(params), chain=["01", "02", "03", "04", "05"],
                             reports_dir=tmp_path / "reports", work_dir=str(tmp_path / "work"))
    assert out.name == "my_forest-ci"
    pages = {p.stem for p in out.glob("*.html")}
    assert {"01_data_prep", "02_explore_data", "03_pretrain", "04_zero_shot_eval",
            "05_map_viz"} <= pages
    metrics = json.loads((out / "metrics.json").read_text())
    zs = metrics["04_zero_shot_eval"]
    assert zs["not_evaluable"] == {} and zs["mean_R@1"] is not None
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and str(tmp_path) not in json.dumps(run)
    assert str(tmp_path) not in (out / "01_data_prep.html").read_text()


def test_a_split_column_is_used_with_splits_official_and_said_to_be_ignored_without(tmp_path):
    """A newcomer's CSV with a split column and no `splits: official`: the split is seeded by
    val_fraction, and the reader says the column is not used (never dropped unsaid)."""
    import pandas as pd

    from geofm_lib.data.sources.table import TableSource

    _write_plots(tmp_path / "plots", n=6)
    table = pd.read_csv(tmp_path / "plots" / "plots.csv")
    table["split"] = ["train"] * 4 + ["val", "test"]
    table.to_csv(tmp_path / "plots" / "plots.csv", index=False)
    cfg = load_config("ci", str(_params(tmp_path / "p.yaml", tmp_path / "plots")))
    plain = TableSource("forest_plots", cfg.sources["forest_plots"], cfg)
    assert plain.splits("forest_plots") is None
    assert plain.report("forest_plots")["split_column"].startswith("ignored")
    sources = {"forest_plots": {**cfg.sources["forest_plots"].model_dump(), "splits": "official"}}
    cfg = load_config("ci", str(_params(tmp_path / "q.yaml", tmp_path / "plots")),
                      sources=sources)
    official = TableSource("forest_plots", cfg.sources["forest_plots"], cfg)
    assert official.splits("forest_plots") == {"train": [0, 1, 2, 3], "val": [4, 5]}
    assert "split_column" not in official.report("forest_plots")


def test_the_02_page_shows_the_dataset_card(tmp_path):
    """A newcomer's card (name, GSD, bands with wavelengths, units) is on the 02 page, not
    only in params.yaml: data.manifest.dataset_cards."""
    from geofm_lib.data.manifest import dataset_cards

    _write_plots(tmp_path / "plots", n=8)
    cfg = load_config("ci", str(_params(tmp_path / "p.yaml", tmp_path / "plots")),
                      work_dir=str(tmp_path / "work"), samples_per_dataset=8)
    m = shards.load_manifest(build.build_shards(cfg, show_progress=False))
    (row,) = dataset_cards(cfg, m)
    assert row["name"] == CARD["name"] and row["GSD (m)"] == 0.5 and row["card"] == "yours"
    assert row["bands"] == "B 475 nm, G 555 nm, R 660 nm, nir 833 nm"
    assert row["from"] == "your files (table reader)" and row["units"] == CARD["units"]
    assert row["labels"] == 3
