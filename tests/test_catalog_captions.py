import pytest

from geofm_lib import catalog, papers
from geofm_lib.data import captions


def test_catalog_matches_seed_000_table_1():
    assert len(catalog.PAPER_DATASETS) == 8
    assert catalog.GROUP_DATASETS["A"] == ("bigearthnet_s2", "bigearthnet_s1")
    assert set(catalog.GROUP_DATASETS["B"]) == {"agriculture_vision", "seadronessee"}
    assert set(catalog.GROUP_DATASETS["C"]) == {"xview", "qfabric", "houston_harvey", "mafat"}
    for ds in catalog.PAPER_DATASETS.values():
        assert len(ds.labels) == ds.paper_n_labels, ds.key
        assert len(set(ds.labels)) == len(ds.labels), ds.key
        assert ds.labels_status
    assert len(catalog.SENSORS["sentinel2_l1c"].bands) == 13
    assert catalog.SENSORS["sentinel2_l2a"].band_names[-2:] == ("B11", "B12")


def test_bigearthnet_labels_agree_with_torchgeo():
    bigearthnet = pytest.importorskip("torchgeo.datasets.bigearthnet")
    tg = bigearthnet.BigEarthNet
    assert tuple(tg.class_sets[43]) == catalog.BIGEARTHNET_43
    assert tuple(tg.class_sets[19]) == catalog.BIGEARTHNET_19
    assert dict(tg.label_converter) == catalog.BIGEARTHNET_43_TO_19


def test_paper_tables_keep_missing_values():
    assert papers.PAPER_RESULTS["compiled"]["houston_harvey"] == (96.0, 100.0, None)
    assert papers.PAPER_RESULTS["groups"]["xview"] == (57.2, 60.4, 70.6)
    assert set(papers.PAPER_RESULTS["group_c_metadata"]) == set(catalog.GROUP_DATASETS["C"])


def test_unknown_group_lists_valid_ones():
    with pytest.raises(ValueError, match="A, B, C, all"):
        catalog.datasets_for("D")


def test_captions_are_seeded_and_carry_metadata_on_request():
    labels = ["Small Car", "Bus"]
    a = captions.caption("xview", labels, metadata=False, seed=0, index=1)
    assert a == captions.caption("xview", labels, metadata=False, seed=0, index=1)
    assert "small car" in a and "bus" in a and "WorldView" not in a
    m = captions.caption("xview", labels, metadata=True, seed=0, index=1)
    assert "WorldView-3" in m and "30 cm resolution" in m
    variants = {captions.caption("xview", labels, seed=0, index=i) for i in range(40)}
    assert len(variants) > 5  # templates and label order vary
    assert "no labelled objects" in captions.caption("mafat", [], seed=0, index=0)
    assert captions.format_gsd(10.0) == "10 m" and captions.format_gsd(0.06) == "6 cm"


def test_prompts_come_from_the_training_templates():
    prompts = captions.label_prompts("bigearthnet_s2")
    assert len(prompts) == 43
    assert prompts[23] == "An overhead image showing coniferous forest."
    meta = captions.label_prompts("mafat", metadata=True)
    assert meta[0].startswith("An Aerial panchromatic image at 40 cm resolution")


def test_rs5m_style_metadata_captions_from_each_samples_own_metadata(tmp_path):
    """Issue 41 item 6: caption_metadata lists the fields (sensor, gsd, date, season, place);
    true stays seed 000's sensor-and-resolution caption word for word, and its hash."""
    from geofm_lib import errors
    from geofm_lib.config import load_config
    from geofm_lib.data import build, shards

    meta = {"sensor": "Sentinel-2 MSI L2A", "gsd_m": 10.0, "date": "2017-01-30",
            "footprint": {"region": "Patagonia", "center": [-69.5, -45.25]}}
    fields = captions.metadata_fields(["place", "sensor", "date", "season", "gsd"])
    assert fields == captions.METADATA_FIELDS  # in one order whatever the list's
    phrase = captions.metadata_phrase(fields, "bigearthnet_s2", meta)
    assert phrase == ("a Sentinel-2 MSI L2A image at 10 m resolution taken on 30 January 2017 "
                      "(summer) near Patagonia (45.2\N{DEGREE SIGN} S, 69.5\N{DEGREE SIGN} W)")
    assert captions.season("2017-01-30", 48.0) == "winter"  # the north's January
    assert captions.metadata_phrase(("season",), "x", {"date": "2020-07-01"}) == \
        "an overhead image taken in summer 2020"  # no place: the north's seasons
    assert captions.metadata_phrase(("sensor", "gsd", "place"), "not_in_catalog", {}) == \
        "an overhead image"  # what a sample lacks is left out, never made up
    # true: the same caption as before, and the prompts carry only dataset-level fields
    assert captions.metadata_phrase(captions.metadata_fields(True), "xview") == \
        captions.sensor_phrase("xview")
    assert captions.label_prompts("xview", ["gsd", "date"])[0].startswith(
        "An overhead image at 30 cm resolution showing")
    with pytest.raises(ValueError, match="list any of sensor, gsd, date, season, place"):
        captions.metadata_fields(["weather"])
    # the parameter: hashed (a list is other data than true), checked by name
    plain = load_config("ci", group="B", work_dir=str(tmp_path))
    table4 = load_config("ci", group="B", work_dir=str(tmp_path), caption_metadata=True)
    rs5m = load_config("ci", group="B", work_dir=str(tmp_path),
                       caption_metadata=["sensor", "gsd", "date", "place"])
    assert len({plain.data_hash, table4.data_hash, rs5m.data_hash}) == 3
    with pytest.raises(errors.ConfigError, match="caption_metadata"):
        load_config("ci", group="B", work_dir=str(tmp_path), caption_metadata=["weather"])
    # built: each caption says its own sample's date and place
    build.build_shards(rs5m, show_progress=False)
    samples = list(shards.iter_shards(shards.shard_paths(build.build_folder(rs5m), "train")))
    for s in samples[:5]:
        m = s["json"]
        lon, lat = m["footprint"]["center"]
        assert m["sensor"] in s["txt"] and f"{abs(lat):.1f}\N{DEGREE SIGN}" in s["txt"]
        y, mo, d = m["date"].split("-")
        assert f"{int(d)} {captions._MONTHS[int(mo) - 1]} {y}" in s["txt"]
