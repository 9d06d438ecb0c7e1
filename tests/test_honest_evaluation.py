"""Data that cannot be evaluated is shown, not scored: an unlabelled dataset (SSL4EO-S12's
layout) and an image-text corpus whose captions are all the same text."""

import numpy as np
import pytest

from geofm_lib import evaluation, ssl, training
from geofm_lib.config import load_config
from geofm_lib.data import build, shards
from geofm_lib.errors import DataError

rasterio = pytest.importorskip("rasterio")


def _cfg(tmp_path, sources, **kw):
    base = dict(group="custom", datasets=list(sources), sources=sources, image_px=64,
                samples_per_dataset=50, val_fraction=0.25, shard_size=16, batch_size=2,
                work_dir=str(tmp_path / "work"))
    return load_config("ci", **{**base, **kw})


def _encoded(folder, split="val"):
    """An ``Encoded`` of a split with random unit features: what the scoring sees, without a
    model (the reasons depend only on labels and captions)."""
    samples = list(shards.iter_shards(shards.shard_paths(folder, split)))
    feats = np.random.default_rng(0).normal(size=(len(samples), 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return evaluation.Encoded(
        image_features=feats, keys=[s["__key__"] for s in samples],
        datasets=np.array([s["json"]["dataset"] for s in samples]),
        labels=[s["json"]["labels"] for s in samples], captions=[s["txt"] for s in samples],
        meta=[{"own_captions": bool(s["json"].get("captions"))} for s in samples],
        all_captions=[s["json"].get("captions") or [s["txt"]] for s in samples])


def test_an_unlabelled_dataset_is_pretrained_on_but_not_scored(tmp_path):
    pytest.importorskip("torchgeo")
    from test_sources_real import _write_ssl4eo

    _write_ssl4eo(tmp_path / "ssl4eo", n_locations=4)
    spec = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo")}
    cfg = _cfg(tmp_path, {"ssl4eo_s12_s2c": spec, "ssl4eo_s12_s1": spec})
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    assert m["captions"]["ssl4eo_s12_s2c"]["train"]["own"] == 0
    # CLIP: every caption says "... no labelled objects": stopped before the model is built
    with pytest.raises(DataError, match="ssl4eo_s12_s2c: none of its 3 training images has a "
                                        "label or a caption of its own.*07_ssl_pretrain"):
        training.preflight(cfg)
    # MoCo: the places pair up for pretraining, but there is nothing to score
    train, val = ssl.load_pairs(cfg, "train"), ssl.load_pairs(cfg, "val")
    assert len(train) == 3 and len(val) == 1
    why = ssl.not_evaluable(train, val, cfg)
    assert why and "no labels" in why
    with pytest.raises(DataError, match="not evaluable: the data has no labels"):
        ssl.evaluate(cfg, tmp_path / "no-encoder.pt")
    # zero-shot and caption retrieval: left out with the reason, never a recall of 100
    enc = _encoded(folder)
    unscored = evaluation.not_evaluable(enc, m["vocabularies"])
    assert set(unscored) == {"ssl4eo_s12_s2c", "ssl4eo_s12_s1"}
    assert "no labels and no captions of its own" in unscored["ssl4eo_s12_s1"]


def test_a_corpus_with_one_caption_for_every_image_is_not_scored(tmp_path):
    import pandas as pd
    from PIL import Image

    root = tmp_path / "corpus"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)).save(
            root / "img" / f"{i}.png")
    pd.DataFrame({"image": [f"{i}.png" for i in range(8)],
                  "caption": ["an aerial photograph"] * 8}).to_csv(root / "c.csv", index=False)
    spec = {"reader": "table", "root": str(root), "captions_file": "c.csv", "images_dir": "img"}
    cfg = _cfg(tmp_path, {"my_corpus": spec})
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    assert m["captions"]["my_corpus"] == {"train": {"distinct": 1, "own": 6},
                                          "val": {"distinct": 1, "own": 2}}
    with pytest.raises(DataError, match="my_corpus: all 6 training images carry the same caption"):
        training.preflight(cfg)
    enc = _encoded(folder)
    assert "all 2 captions are the same text" in evaluation.not_evaluable(
        enc, m["vocabularies"])["my_corpus"]

    # the same corpus with captions of their own is scored
    pd.DataFrame({"image": [f"{i}.png" for i in range(8)],
                  "caption": [f"field number {i}" for i in range(8)]}).to_csv(
        root / "c.csv", index=False)
    cfg2 = _cfg(tmp_path, {"my_corpus": spec}, work_dir=str(tmp_path / "w2"))
    folder2 = build.build_shards(cfg2, show_progress=False)
    training.preflight(cfg2)
    assert evaluation.not_evaluable(_encoded(folder2), {}) == {}
