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
