"""Tiled inference over whole scenes (issue 41 item 1): the maps do not depend on how much of the
scene fits in memory, keep the scene's CRS and grid, keep nodata out, and agree with the model
run directly on tiles cut from the whole array; the products are Cloud-Optimized GeoTIFFs."""

import numpy as np
import pytest

from geofm_lib import errors
from geofm_lib.encoders import scene as sc

H, W = 150, 200  # scene pixels; tiles of 32 (ci image_px) with stride 16, cells of 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A ci configuration (group B, ViT-tiny) with its shards: the ``init`` encoder (random
    weights, a text tower) needs nothing trained."""
    from geofm_lib.config import load_config
    from geofm_lib.data import build

    work = tmp_path_factory.mktemp("scene-run")
    cfg = load_config("ci", group="B", work_dir=str(work), model="ViT-tiny", precision="fp32")
    build.build_shards(cfg, show_progress=False)
    return cfg


def write_scene(path, *, crs="EPSG:32621", nodata=0, bands=("red", "green", "blue")):
    """A uint16 RGB scene in UTM with smooth fields and two kinds of nodata: a corner of the
    scene nodata in every band (as a Landsat scene's edge) and a strip nodata in blue alone."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([3000 + 1500 * np.sin(xx / 17.0 + k) * np.cos(yy / 23.0 - k)
                     for k in range(3)]) + rng.normal(0, 60, (3, H, W))
    img = np.clip(base, 1, 60000).astype(np.uint16)
    img[:, :40, :50] = nodata  # a corner with no data at all
    img[2, 100:110, :] = nodata  # one band's nodata strip
    transform = from_origin(500000.0, 7000000.0, 30.0, 30.0)
    with rasterio.open(path, "w", driver="GTiff", height=H, width=W, count=3, dtype="uint16",
                       crs=crs, transform=transform, nodata=nodata, photometric="RGB") as dst:
        dst.write(img)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return img, transform


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "LC08_scene.tif"
    img, transform = write_scene(path)
    return path, img, transform


def _embed(cfg, path, **kw):
    return sc.embed_scene(cfg, path, "init", stride_px=16, cell_px=4, use_cache=False,
                          show_progress=False, **kw)


def test_the_same_maps_whatever_fits_in_memory(run, scene_file, tmp_path):
    path, _, _ = scene_file
    whole = _embed(run, path, memory_mb=512)
    rows = _embed(run, path, memory_mb=0.05)  # a band of tile rows: 3 * 32 * 208 * 2 bytes
    tiles = _embed(run, path, memory_mb=0.001)
    assert (whole.meta["read_mode"], rows.meta["read_mode"], tiles.meta["read_mode"]) == \
        ("whole", "rows", "tiles")
    assert whole.meta["reads"] == 1 and tiles.meta["reads"] == int(tiles.kept.sum())
    assert rows.meta["reads"] == len({i // whole.tiling.cols for i in np.flatnonzero(rows.kept)})
    for other in (rows, tiles):
        assert np.array_equal(other.kept, whole.kept)
        assert np.array_equal(other.invalid_cells, whole.invalid_cells)
        assert np.array_equal(other.features, whole.features, equal_nan=True)
    classes, queries = ["water", "crop", "tree"], ["flooded road"]
    import rasterio

    a = sc.write_products(run, whole, tmp_path / "a", classes=classes, queries=queries)
    b = sc.write_products(run, tiles, tmp_path / "b", classes=classes, queries=queries,
                          memory_mb=0.001)  # the products blended and written a few rows a time
    assert set(a) == {"class_map", "class_score", "query-flooded-road", "embeddings"}
    for name in a:
        with rasterio.open(a[name]) as x, rasterio.open(b[name]) as y:
            assert np.array_equal(x.read(), y.read(), equal_nan=True), name


def test_tiles_match_the_model_on_the_whole_array(run, scene_file):
    """The reader, padding and mapping against the plainest route: cut tiles out of the
    whole scene in memory and hand them to the encoder."""
    from geofm_lib.encoders import load_encoder
    from geofm_lib.evaluation.retrieval import encode_images
    from geofm_lib.models.inputs import to_model_input

    path, img, _ = scene_file
    se = _embed(run, path)
    t = se.tiling
    assert (t.rows, t.cols) == (1 + -(-(H - 32) // 16), 1 + -(-(W - 32) // 16))
    assert se.bands == ["R", "G", "B"]
    model, stats = load_encoder(run, "init", band_stats={sc.SCENE: se.band_stats})
    padded = np.zeros((3, (t.rows - 1) * 16 + 32, (t.cols - 1) * 16 + 32), np.uint16)
    padded[:, :H, :W] = img
    inside = np.zeros(padded.shape[1:], bool)
    inside[:H, :W] = True
    last = t.count - 1  # the bottom-right tile: part padding
    for i in (int(np.flatnonzero(se.kept)[0]), last):
        y, x = t.origin(i)
        xin = to_model_input(padded[:, y:y + 32, x:x + 32], ["R", "G", "B"], stats[sc.SCENE])
        xin[:, ~inside[y:y + 32, x:x + 32]] = 0
        assert se.kept[i]
        np.testing.assert_allclose(se.features[i], encode_images(model, [xin])[0], atol=1e-6)


def test_crs_grid_and_cog_layout_preserved(run, scene_file, tmp_path):
    import rasterio
    from affine import Affine

    path, _, transform = scene_file
    se = _embed(run, path)
    out = sc.write_products(run, se, tmp_path, classes=["water", "crop"], queries=["field"])
    with rasterio.open(path) as src:
        crs = src.crs
    for name, file in out.items():
        with rasterio.open(file) as dst:
            assert dst.crs == crs, name
            assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", name
            if name == "embeddings":
                assert (dst.height, dst.width) == (se.tiling.rows, se.tiling.cols)
                assert dst.count == se.features.shape[1]
                # pixel (r, c) is tile (r, c)'s central stride square
                assert dst.transform == transform @ Affine.translation(8, 8) @ Affine.scale(16)
                assert np.array_equal(dst.read()[:, 2, 3], se.features[2 * se.tiling.cols + 3])
            else:
                assert dst.transform == transform @ Affine.scale(4)
                assert (dst.height, dst.width) == (-(-H // 4), -(-W // 4))
                # the products cover the scene's extent (rounded up to whole cells)
                assert dst.bounds.left == src.bounds.left and dst.bounds.top == src.bounds.top
    with rasterio.open(out["class_map"]) as cm:
        assert cm.nodata == sc.CLASS_NODATA and cm.colormap(1)[0][:3] == sc.PALETTE[0]
        assert cm.tags()["classes"] == '["water", "crop"]'
        values = cm.read(1)
        assert set(np.unique(values)) <= {0, 1, sc.CLASS_NODATA}
        assert cm.overviews(1) or max(cm.shape) <= 256


def test_nodata_is_kept_out_of_every_product(run, scene_file, tmp_path):
    import rasterio

    path, _, _ = scene_file
    se = _embed(run, path)
    out = sc.write_products(run, se, tmp_path, classes=["water", "crop"], queries=["field"])
    # the all-nodata corner (rows < 40, cols < 50) and the blue strip (rows 100..110): whole
    # cells of 4 px inside them are nodata in every product
    with rasterio.open(out["class_map"]) as f:
        cm = f.read(1)
    with rasterio.open(out["query-field"]) as f:
        heat = f.read(1)
    with rasterio.open(out["class_score"]) as f:
        score = f.read(1)
    for sl in (np.s_[:10, :12], np.s_[25:27, :]):
        assert (cm[sl] == sc.CLASS_NODATA).all() and np.isnan(heat[sl]).all() \
            and np.isnan(score[sl]).all()
    valid = ~se.invalid_cells
    assert valid.sum() > 0.8 * valid.size - 10 * 12 - 2 * valid.shape[1]
    assert (cm[valid] != sc.CLASS_NODATA).all() and np.isfinite(heat[valid]).all()
    assert np.array_equal(np.isnan(heat), np.isnan(score))
    # the first tile lies inside the corner: no embedding
    assert not se.kept[0] and np.isnan(se.features[0]).all() and se.nodata_fraction[0] == 1
    # half-padding tiles at the bottom edge are kept only within max_nodata
    assert (se.kept == (se.nodata_fraction <= 0.5)).all()
    strict = _embed(run, path, max_nodata=0.0)
    assert strict.kept.sum() < se.kept.sum()


def test_blend_is_a_weighted_mean_of_the_tiles_over_each_cell(run, scene_file):
    path, _, _ = scene_file
    se = _embed(run, path)
    n = se.tiling.count
    same = se.blend(np.full((n, 1), 0.25, np.float32))[..., 0]
    assert np.allclose(same[~np.isnan(same)], 0.25)
    # one tile alone: its value over its own cells, nothing elsewhere
    alone = sc.SceneEmbeddings(**{**se.__dict__, "kept": np.eye(1, n, 30, dtype=bool)[0],
                                  "invalid_cells": np.zeros_like(se.invalid_cells)})
    one = alone.blend(np.arange(n, dtype=np.float32)[:, None])[..., 0]
    y, x = se.tiling.origin(30)
    assert np.all(one[y // 4:y // 4 + 8, x // 4:x // 4 + 8] == 30)
    assert np.isnan(one).sum() == one.size - 64
    # heatmaps from the cached tile embeddings: the query product, and the argmax class map
    text = np.random.default_rng(1).normal(size=(2, se.features.shape[1])).astype(np.float32)
    idx, score = se.class_map(text)
    heat0, heat1 = se.heatmap(text[0]), se.heatmap(text[1])
    ok = ~np.isnan(heat0)
    assert np.array_equal(idx[ok], (heat1 > heat0)[ok].astype(int))
    assert np.allclose(score[ok], np.maximum(heat0, heat1)[ok], atol=1e-6)
    assert (idx[~ok] == -1).all()


def test_cache_and_bad_input(run, scene_file, tmp_path):
    import rasterio

    path, _, _ = scene_file
    first = sc.embed_scene(run, path, "init", stride_px=16, cell_px=4, show_progress=False)
    again = sc.embed_scene(run, path, "init", stride_px=16, cell_px=4, show_progress=False)
    assert not first.meta["cached"] and again.meta["cached"]
    assert np.array_equal(first.features, again.features, equal_nan=True)
    other = sc.embed_scene(run, path, "init", stride_px=32, cell_px=4, show_progress=False)
    assert not other.meta["cached"]
    with pytest.raises(errors.ConfigError, match="no such file"):
        sc.open_scene(tmp_path / "nope.tif")
    flat = tmp_path / "no_crs.tif"
    with rasterio.open(flat, "w", driver="GTiff", height=8, width=8, count=1,
                       dtype="uint8") as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(errors.ConfigError, match="no CRS"):
        sc.open_scene(flat)
    with pytest.raises(errors.ConfigError, match="cell_px 5 must divide"):
        sc.embed_scene(run, path, "init", stride_px=16, cell_px=5, show_progress=False)
    with pytest.raises(errors.ConfigError, match="one of this run's datasets"):
        sc.embed_scene(run, path, "init", stats="sentinel2", show_progress=False)
    # a dataset's statistics need its bands in the scene, by name
    with pytest.raises(errors.DataError, match="missing"):
        sc.embed_scene(run, path, "init", stats="seadronessee", show_progress=False,
                       options={"band_names": ["band1", "band2", "band3"]})


def test_geoparquet_round_trip_for_scene_tiles_and_shards(run, scene_file, tmp_path):
    """Issue 41 item 3: embeddings out as GeoParquet, read back by geopandas unchanged."""
    import geopandas as gpd
    import rasterio

    from geofm_lib.encoders import embed, export

    path, _, _ = scene_file
    se = _embed(run, path)
    file = export.write_geoparquet(export.scene_table(se), tmp_path / "scene.parquet")
    back = gpd.read_parquet(file)
    gdf, vectors = export.read_geoparquet(file)
    assert len(back) == se.kept.sum() and back.crs.to_epsg() == 32621
    assert np.array_equal(vectors, se.features[se.kept])
    with rasterio.open(path) as src:  # tile (row, col) covers its pixels in the scene's CRS
        left, top = src.transform @ (16 * back["col"].iloc[0], 16 * back["row"].iloc[0])
    minx, miny, maxx, maxy = back.geometry.iloc[0].bounds
    assert (minx, maxy) == (left, top) and maxx - minx == 32 * 30 == maxy - miny
    assert set(back.columns) >= {"key", "dataset", "labels", "vector", "geometry",
                                 "nodata_fraction"}
    # a shard split: one row per image, footprints in WGS84, labels as lists
    emb = embed(run, "init", "val", show_progress=False)
    shards = export.write_geoparquet(export.shard_table(run, "init", "val"),
                                     tmp_path / "val.parquet")
    gdf, vectors = export.read_geoparquet(shards)
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == len(emb.keys)
    order = {k: i for i, k in enumerate(emb.keys.tolist())}
    assert np.array_equal(vectors, emb.features[[order[k] for k in gdf["key"]]])
    assert [list(x) for x in gdf["labels"]] == [emb.labels[order[k]] for k in gdf["key"]]
    assert gdf.geometry.notna().all() and set(gdf["dataset"]) == set(run.dataset_keys)


def test_simulated_scene_files_and_the_accuracy_against_their_truth(tmp_path):
    """09's default scene: a GeoTIFF in its UTM zone with bands named and its truth raster on
    the same grid; the class map's accuracy counts cells by the truth's majority in each, and
    its interval resamples blocks of cells."""
    import rasterio

    from geofm_lib.data.simulated_scene import utm_epsg, write_simulated_scene
    from geofm_lib.studies import scene_maps as study

    files = write_simulated_scene(tmp_path, "qfabric", 64, seed=0)
    with rasterio.open(files.image) as img, rasterio.open(files.truth) as truth:
        assert img.crs == truth.crs and img.transform == truth.transform
        assert img.crs.to_epsg() == utm_epsg(*_centre(img)) and img.descriptions == ("R", "G", "B")
        assert img.tags()["dataset"] == "qfabric" and abs(img.res[0] - 0.5) < 1e-9
        t = truth.read(1)
    assert set(np.unique(t)) <= set(range(len(files.classes))) | {-1}
    assert utm_epsg(9.2, 45.5) == 32632 and utm_epsg(-58.0, -34.6) == 32721
    # truth on cells of 4 px: each cell's most frequent class, -1 where none covers half
    tiling = sc.Tiling(64, 64, 16, 8, 4, tuple(rasterio.open(files.image).transform)[:6], "")
    cells = study.truth_cells(files.truth, tiling)
    assert cells.shape == (16, 16)
    block = t[8:12, 20:24]
    values, counts = np.unique(block, return_counts=True)
    expect = values[counts.argmax()] if counts.max() * 2 >= 16 else -1
    assert cells[2, 5] == expect
    # accuracy: all right, all wrong, half right by blocks
    right = np.ones((16, 16), bool)
    acc, ci, n, blocks = study._block_accuracy(right, right, 200, 0)
    assert (acc, ci, n, blocks) == (100.0, (100.0, 100.0), 256, 4)
    half = np.zeros((16, 16), bool)
    half[:8] = True  # two blocks right, two wrong: the interval spans the block draws
    acc, ci, _, _ = study._block_accuracy(half, right, 400, 0)
    assert acc == 50.0 and ci[0] < 50 < ci[1] and ci[0] >= 0 and ci[1] <= 100


def _centre(src):
    from rasterio.warp import transform

    x, y = (src.bounds.left + src.bounds.right) / 2, (src.bounds.top + src.bounds.bottom) / 2
    (lon,), (lat,) = transform(src.crs, "EPSG:4326", [x], [y])
    return lon, lat


def test_09_picks_its_scene_dataset_or_says_why_it_cannot_run():
    """09's default scene: qfabric where the run has it, else the run's first dataset with
    land-cover labels; a run without one (an image-text corpus) is skipped by `geofm report`
    with the reason, unless a scene_path is given."""
    from geofm_lib.config import load_config
    from geofm_lib.studies import scene_maps as study

    assert study.default_dataset(load_config("ci")) == "qfabric"
    assert study.default_dataset(load_config("ci", group="A")) == "bigearthnet_s2"
    corpus = load_config("ci", experiment="captions_example")
    assert study.default_dataset(corpus) is None
    assert "scene_path" in study.not_applicable(corpus, {})
    assert study.not_applicable(corpus, {"scene_path": "scene.tif"}) is None
    with pytest.raises(errors.ConfigError, match="scene_path"):
        study.settings(corpus, {})


def test_an_image_only_encoder_maps_the_scene_through_a_linear_probe(run, tmp_path):
    """An encoder without a text tower (here torchgeo's ResNet-18 at random weights, as an
    ``ssl:`` encoder of 07 would be) gets its class map from a linear probe fitted on the run's
    labelled patches of the scene's dataset; its baseline goes through the same probe; its
    queries are the probe's classes, and free text is refused with the classes named."""
    import rasterio

    from geofm_lib.encoders import embed
    from geofm_lib.evaluation.probes import fit_predict
    from geofm_lib.studies import scene_maps as study

    enc = "torchgeo:resnet18"
    s = study.settings(run, {"scene_encoder": enc, "scene_size_px": 96, "scene_min_classes": 2,
                             "n_boot": 50})
    assert s.head == sc.PROBE and s.dataset == "agriculture_vision"
    assert "linear probe on agriculture_vision's labelled train patches" in s.describe(run)
    assert study.settings(run, {}).head == sc.ZERO_SHOT  # two CLIPs: zero-shot
    with pytest.raises(errors.ConfigError, match="no text tower"):
        study.settings(run, {"scene_encoder": enc, "scene_head": "zero-shot"})
    with pytest.raises(errors.ConfigError, match="scene_dataset"):
        study.settings(run, {"scene_encoder": enc, "scene_path": __file__})
    scene = study.scene(run, s)
    classes = study.classes_of(scene, s)
    embedded = study.embed(run, s, scene)
    assert set(embedded) == {enc, "init"}
    heads = study.heads(run, s, embedded, classes)
    head = heads[enc]
    assert head.kind == heads["init"].kind == sc.PROBE and head.classes == tuple(classes)
    # the head's probabilities are the probe's: thresholded at 0.5 on the patches it was fitted
    # on they predict what 06's linear probe (same C, same rows) predicts
    emb = embed(run, enc, "train", show_progress=False)
    rows = np.flatnonzero(emb.datasets == "agriculture_vision")
    x = emb.features[rows]
    y = np.array([[c in emb.labels[i] for c in classes] for i in rows])
    fake = sc.SceneEmbeddings(embedded[enc].tiling, x, np.ones(len(x), bool),
                              np.zeros(len(x), np.float32), embedded[enc].invalid_cells, enc,
                              "patches", [], "", "fp32")
    probs = head.tile_scores(fake)
    assert probs.shape == (len(x), len(classes)) and head.patches == len(x)
    want = fit_predict("linear", head.probe.param, x, y, x, run.seed)
    assert ((probs > 0.5) == want).mean() > 0.99  # float32 logits vs scikit-learn's float64
    # the class map is the arg-max of the blended probabilities
    se = embedded[enc]
    idx, score = se.class_map(head)
    blended = se.blend(head.tile_scores(se))
    ok = idx >= 0
    np.testing.assert_array_equal(idx[ok], np.nanargmax(blended[ok], -1))
    assert np.nanmin(score) >= 0 and np.nanmax(score) <= 1
    # queries: a class of the probe, not free text
    queries = study.queries_of(s, heads)
    assert queries == list(classes[:2])
    heat, _ = study.time_query(run, se, classes[0], head)
    np.testing.assert_allclose(heat[ok], blended[ok][:, 0], atol=1e-6)
    with pytest.raises(errors.EncoderError, match=f"one of its probe's classes .*{classes[0]}"):
        sc.query_scores(run, se, "flooded road", head)
    out = study.products(run, s, embedded, heads)
    with rasterio.open(out[enc]["class_score"]) as f:
        assert f.descriptions == ("probability (linear probe) of the class",)
        assert "linear probe" in f.tags()["head"] and "agriculture_vision" in f.tags()["head"]
    with rasterio.open(out[enc][f"query-{sc.slug(classes[0])}"]) as f:
        assert f.descriptions[0].startswith("probability of")
    table = study.score(run, s, scene, embedded, heads)
    assert {enc, "init"} <= set(table.index) and (table["cells"] > 0).all()


def test_a_scene_of_yours_is_scored_against_your_labelled_polygons_and_points(run, scene_file,
                                                                              tmp_path):
    """``scene_labels``: polygons and points in any CRS (here WGS84 over a UTM scene) label the
    product cells: a polygon the cells it covers at least half of, a point its cell; features
    of other classes are left out and said; a file without the class column or CRS is refused
    with the fix."""
    import geopandas as gpd
    from shapely.geometry import Point, box

    from geofm_lib.studies import scene_maps as study

    path, _, _ = scene_file
    x0, y0, c = 500000.0, 7000000.0, 120.0  # scene origin; cells of 4 px at 30 m

    def cells(r0, r1, c0, c1, inset=1.0):  # a box over cells [r0:r1, c0:c1]
        return box(x0 + c0 * c + inset, y0 - r1 * c + inset, x0 + c1 * c - inset,
                   y0 - r0 * c - inset)

    gdf = gpd.GeoDataFrame(
        {"name": ["water", "crop", "crop", "glacier", "water"],
         "geometry": [cells(2, 4, 3, 6), cells(10, 12, 20, 22),
                      box(x0, y0 - c / 2, x0 + c / 2, y0),  # a quarter of cell (0, 0)
                      cells(20, 22, 10, 12), Point(x0 + 15.5 * c, y0 - 15.5 * c)]},
        crs="EPSG:32621").to_crs("EPSG:4326")
    labels = tmp_path / "labels.gpkg"
    gdf.to_file(labels, layer="land_cover")
    s = study.settings(run, {"scene_path": str(path), "scene_labels": str(labels),
                             "scene_stride_px": 16, "scene_cell_px": 4, "n_boot": 50})
    assert study.classes_of(path, s) == ["crop", "glacier", "water"]  # the file's, sorted
    s = study.settings(run, {"scene_path": str(path), "scene_labels": str(labels),
                             "scene_classes": ["water", "crop"], "scene_stride_px": 16,
                             "scene_cell_px": 4, "n_boot": 50, "scene_encoder": "init",
                             "scene_baseline": ""})
    embedded = study.embed(run, s, path)
    tiling = embedded["init"].tiling
    truth, note = study.truth_of(s, path, ["water", "crop"], tiling)
    assert (truth[2:4, 3:6] == 0).all() and (truth[10:12, 20:22] == 1).all()
    assert truth[15, 15] == 0 and truth[0, 0] == -1 and (truth[20:22, 10:12] == -1).all()
    assert int((truth >= 0).sum()) == 6 + 4 + 1
    assert "1 features of other classes left out" in note and "labels.gpkg" in note
    heads = study.heads(run, s, embedded, ["water", "crop"])
    table = study.score(run, s, path, embedded, heads)
    # every row on the same cells: the water polygon lies in the scene's nodata corner
    assert (table["cells"] == 5).all() and len(table) == len(embedded) + 2
    # refused before any work, with the fix
    gdf.rename(columns={"name": "klass"}).to_file(tmp_path / "other.geojson")
    bad = study.settings(run, {"scene_path": str(path), "scene_labels":
                               str(tmp_path / "other.geojson"), "scene_classes": ["water"]})
    with pytest.raises(errors.ConfigError, match="no column 'name' .*klass.*scene_label_column"):
        study.truth_of(bad, path, ["water"], tiling)
    with pytest.raises(errors.ConfigError, match="scene_path"):
        study.settings(run, {"scene_labels": str(labels)})


def test_zero_fill_without_a_declared_nodata_is_said(tmp_path):
    """A scene padded with 0 but declaring no nodata (as the Landsat scene of ../shared) gets a
    warning naming the option; with the option, or without such fill, none."""
    import rasterio
    from rasterio.transform import from_origin

    img = np.full((3, 64, 64), 900, np.uint16)
    img[:, :, :16] = 0  # a quarter of the scene is fill
    path = tmp_path / "edge.tif"
    with rasterio.open(path, "w", driver="GTiff", height=64, width=64, count=3, dtype="uint16",
                       crs="EPSG:32621", transform=from_origin(0, 0, 30, 30)) as dst:
        dst.write(img)
    names = {"band_names": ["blue", "green", "red"]}
    text = sc.undeclared_fill(sc.open_scene(path, names))
    assert "25 % of its pixels" in text and "scene_options: {nodata: 0}" in text
    assert sc.undeclared_fill(sc.open_scene(path, {**names, "nodata": 0})) is None
    img[:] = 900
    with rasterio.open(path, "r+") as dst:
        dst.write(img)
    assert sc.undeclared_fill(sc.open_scene(path, names)) is None
