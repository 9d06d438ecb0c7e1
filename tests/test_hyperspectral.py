"""Hyperspectral input (issue 21, part 1): the EnMAP sensor in the catalog (224 bands by
wavelength, the water-vapour bands, nodata), its simulation (each band's Gaussian spectral
response over the materials' spectra, the detector noise, the water-vapour bands as nodata) and
seed 001's EnMAP-CORINE through the shards."""

import numpy as np
import pytest

from geofm_lib import bands as B
from geofm_lib.catalog import (
    ENMAP_BANDS,
    ENMAP_NODATA,
    ENMAP_VNIR_BANDS,
    ENMAP_WATER_VAPOUR,
    GROUP_DATASETS,
    PAPER_DATASETS,
    SENSORS,
    water_vapour_bands,
)
from geofm_lib.data import recipes, simulate


def test_enmap_bands_are_torchgeo_s_with_its_water_vapour_bands():
    tg = pytest.importorskip("torchgeo.datasets")
    assert len(ENMAP_BANDS) == 224 and ENMAP_VNIR_BANDS == 91
    want = [tg.EnMAP.wavelengths[b] * 1000 for b in tg.EnMAP.all_bands]
    np.testing.assert_allclose([b.center_nm for b in ENMAP_BANDS], want, atol=1e-3)
    kept = tg.EnMAP.default_bands  # what torchgeo (HySpecNet-11k, SpectralEarth) keeps
    assert len(kept) == 202
    dropped = [b for b in tg.EnMAP.all_bands if b not in kept]
    assert [int(b[1:]) for b in dropped] == list(ENMAP_WATER_VAPOUR)
    # the names readers give EnMAP's bands (band17 of a tile) are the catalog's
    read = B.resolve_bands([f"band{i}" for i in range(1, 225)], sensor="enmap")
    assert [r.name for r in read] == [b.name for b in ENMAP_BANDS]
    assert [read[i - 1].name for i in ENMAP_WATER_VAPOUR] == list(water_vapour_bands())
    assert {b.fwhm_nm for b in ENMAP_BANDS[:91]} == {8.1} and ENMAP_BANDS[91].fwhm_nm == 12.5


def test_enmap_corine_is_seed_001_s_and_not_one_of_seed_000_s_groups():
    assert "enmap_corine" not in PAPER_DATASETS
    assert "enmap_corine" not in GROUP_DATASETS["all"]
    assert GROUP_DATASETS["H"] == ("enmap_corine",)
    assert SENSORS["enmap_l2a"].kind == "hyperspectral" and SENSORS["enmap_l2a"].dtype == "int16"


def test_each_band_integrates_the_spectrum_over_its_gaussian_response():
    table = recipes._signature_table("enmap_l2a")
    assert table.shape == (len(recipes.MATERIALS), 224)
    wl = np.arange(380.0, 2500.0, 1.0)
    fine = recipes._fine_spectra(wl)
    i, band = recipes._MAT_INDEX["conifer"], ENMAP_BANDS[150]
    w = np.exp(-0.5 * ((wl - band.center_nm) / (band.fwhm_nm / 2.3548)) ** 2)
    assert table[i, 150] == pytest.approx((fine[i] * w).sum() / w.sum(), rel=1e-9)
    # a flat spectrum comes back flat: the responses are normalised
    flat = np.full_like(fine[:1], 0.25)
    srf = np.exp(-0.5 * ((wl[None] - np.array([b.center_nm for b in ENMAP_BANDS])[:, None])
                         / (np.array([b.fwhm_nm for b in ENMAP_BANDS])[:, None] / 2.3548)) ** 2)
    np.testing.assert_allclose(flat @ (srf / srf.sum(1, keepdims=True)).T, 0.25)


def _spectrum(material: str):
    return recipes._signature_table("enmap_l2a")[recipes._MAT_INDEX[material]]


def _at(nm: float) -> int:
    return int(np.argmin([abs(b.center_nm - nm) for b in ENMAP_BANDS]))


def test_the_simulated_spectra_show_what_only_a_hyperspectral_sensor_resolves():
    leaf = _spectrum("broadleaf")
    assert leaf[_at(800)] > 4 * leaf[_at(670)]  # the red edge
    # leaf water at 1200 nm: a dip below both shoulders (no Sentinel-2 band samples it)
    assert leaf[_at(1200)] < 0.95 * min(leaf[_at(1100)], leaf[_at(1280)])
    soil = _spectrum("bare_soil")
    assert soil[_at(2200)] < 0.95 * min(soil[_at(2120)], soil[_at(2290)])  # clay's Al-OH
    water = _spectrum("water")
    assert water[_at(1600)] < 0.01  # water absorbs the SWIR


def test_a_simulated_enmap_scene_is_an_l2a_product():
    s = simulate.render("enmap_corine", 3, seed=0, image_px=32)
    assert s.image.shape == (224, 32, 32) and s.image.dtype == np.int16
    gone = np.array(ENMAP_WATER_VAPOUR) - 1
    assert np.all(s.image[gone] == ENMAP_NODATA)
    rest = np.delete(s.image, gone, axis=0)
    assert rest.min() > ENMAP_NODATA and rest.max() < 10000
    assert s.meta["bands"] == [b.name for b in ENMAP_BANDS] and s.meta["gsd_m"] == 30.0
    assert all(r["nodata"] == ENMAP_NODATA for r in s.meta["band_info"])
    assert s.labels and set(s.labels) <= set(simulate.get_dataset("enmap_corine").labels)
    # shown in Sentinel-2's false colour, from the bands nearest 842/665/560 nm
    from geofm_lib.data.display import display_rgb

    nir = s.meta["bands"].index("840nm")
    want = np.clip(s.image[nir].astype(np.float32) / 5000.0, 0, 1) ** (1 / 1.4)
    assert np.allclose(display_rgb(s.image, s.meta["bands"])[..., 0], want)
    # detector noise: neighbouring bands of one pixel differ by more than the smooth spectrum
    step = np.diff(rest[:ENMAP_VNIR_BANDS, 5, 5].astype(float))
    assert 3 < np.std(step) < 60


def test_enmap_corine_shards_record_the_water_vapour_bands_as_nodata(tmp_path):
    pytest.importorskip("webdataset")
    from geofm_lib.config import load_config
    from geofm_lib.data.build import build_shards
    from geofm_lib.data.shards import iter_shards, load_manifest, shard_paths
    from geofm_lib.models.inputs import input_spec, to_model_input
    from geofm_lib.paths import build_folder

    cfg = load_config("ci", group="H", work_dir=str(tmp_path), samples_per_dataset=12,
                      image_px=16)
    build_shards(cfg, show_progress=False)
    folder = build_folder(cfg)
    m = load_manifest(folder)
    st = m["band_stats"]["enmap_corine"]
    assert st["bands"] == [b.name for b in ENMAP_BANDS]
    assert sorted(st["all_nodata"]) == sorted(water_vapour_bands())
    stats, model_bands = input_spec(m.band_stats_for(["enmap_corine"]), "wavelength")
    assert len(model_bands) == 202  # SpectralEarth's band count
    s = next(iter(iter_shards(shard_paths(folder, "train", "enmap_corine"))))
    assert s["img"].dtype == np.int16 and s["img"].shape == (224, 16, 16)
    x = to_model_input(s["img"], s["json"]["bands"], stats["enmap_corine"])
    assert x.shape == (202, 16, 16) and np.isfinite(x).all() and abs(float(x.mean())) < 1.5
    rgb, _ = input_spec(m.band_stats_for(["enmap_corine"]))
    assert rgb["enmap_corine"].rule == "rgb_by_wavelength"
    picked = [st["bands"][i] for i in rgb["enmap_corine"].idx]
    assert [float(b[:-2]) for b in picked] == pytest.approx([665, 560, 490], abs=6)


# --- HySpecNet-11k through torchgeo, on files in its real layout ------------------------------

TILE = "ENMAP01-____L2A-DT0000004950_20221103T162438Z_001_V010110_20221118T145147Z"
TILES = (TILE, TILE.replace("_001_", "_002_"), TILE.replace("_001_", "_003_"))


def _write_hyspecnet(root, n_patches: int = 6, px: int = 16, missing_from_lists=(),
                     structured: bool = False):
    """HySpecNet-11k's layout: patches/<tile>/<tile>-Y.._X../<...>-SPECTRAL_IMAGE.TIF (224
    int16 bands, the water-vapour ones nodata, band 1 nodata in one corner as at tile edges)
    and splits/easy/{train,val,test}.csv naming '<tile>/<patch>/<patch>-DATA.npy'.
    ``structured``: each patch two smooth spectra of its own (left and right half) plus
    noise, instead of noise alone (images an encoder can tell apart)."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    rng = np.random.default_rng(21)
    rows = []
    for k in range(n_patches):
        tile = TILES[k % len(TILES)]  # patches of three tiles (a random split keeps a tile whole)
        patch = f"{tile}-Y{1460273 + 128 * k:08d}_X{5670694:08d}"
        folder = root / "hyspecnet-11k" / "patches" / tile / patch
        folder.mkdir(parents=True)
        data = rng.integers(200, 5000, (224, px, px)).astype(np.int16)
        if structured:
            band = np.arange(224)[:, None, None]
            left = 1500 + 1000 * np.sin(band / (15 + 3 * k) + k)
            right = 2500 + 800 * np.cos(band / (25 - k) + 2 * k)
            half = np.arange(px)[None, None, :] < px // 2
            data = (np.where(half, left, right) + rng.normal(0, 60, (224, px, px))).astype(
                np.int16)
        data[np.array(ENMAP_WATER_VAPOUR) - 1] = ENMAP_NODATA
        data[0, :3, :3] = ENMAP_NODATA
        with rasterio.open(folder / f"{patch}-SPECTRAL_IMAGE.TIF", "w", driver="GTiff",
                           width=px, height=px, count=224, dtype="int16", crs="EPSG:32633",
                           transform=from_origin(600000 + 3840 * k, 5800000, 30, 30),
                           nodata=ENMAP_NODATA) as f:
            f.write(data)
        if k not in missing_from_lists:
            rows.append(f"{tile}/{patch}/{patch}-DATA.npy")
    splits = root / "hyspecnet-11k" / "splits" / "easy"
    splits.mkdir(parents=True)
    (splits / "train.csv").write_text("\n".join(rows[:-2]) + "\n")
    (splits / "val.csv").write_text(rows[-2] + "\n")
    (splits / "test.csv").write_text(rows[-1] + "\n")
    return rows


def test_hyspecnet_11k_patches_keep_their_bands_wavelengths_and_nodata(tmp_path):
    pytest.importorskip("torchgeo")
    from geofm_lib.config import load_config
    from geofm_lib.data import build
    from geofm_lib.data.shards import iter_shards, load_manifest, shard_paths

    _write_hyspecnet(tmp_path / "hsn", missing_from_lists=(2,))
    spec = {"reader": "torchgeo", "dataset_class": "HySpecNet11k", "root": str(tmp_path / "hsn")}
    cfg = load_config("ci", group="custom", datasets=["hyspecnet11k"],
                      sources={"hyspecnet11k": spec}, image_px=16, samples_per_dataset=50,
                      val_fraction=0.25, work_dir=str(tmp_path / "work"))
    folder = build.build_shards(cfg, show_progress=False)
    m = load_manifest(folder)
    assert m["band_stats"]["hyspecnet11k"]["bands"] == [b.name for b in ENMAP_BANDS]
    assert sorted(m["band_stats"]["hyspecnet11k"]["all_nodata"]) == sorted(water_vapour_bands())
    report = m["source_reports"]["hyspecnet11k"]
    assert report["found"] == 6 and report["listed"] == 5
    samples = [s for split in ("train", "val")
               for s in iter_shards(shard_paths(folder, split, "hyspecnet11k"))]
    assert len(samples) == 5  # the patch no split list names is not read
    for s in samples:
        assert s["img"].dtype == np.int16 and s["img"].shape == (224, 16, 16)
        assert s["json"]["date"] == "2022-11-03" and s["json"]["labels"] == []
        assert s["json"]["band_info"][0]["center_nm"] == pytest.approx(418.416)
        lon0, lat0, lon1, lat1 = s["json"]["footprint"]["bounds"]
        assert 16 < lon0 < lon1 < 17 and 52 < lat0 < lat1 < 53
    # band 1's corner is nodata in the files: the statistics leave it out
    assert m["band_stats"]["hyspecnet11k"]["mean"][0] > 1000
    assert report["not_used"] == {"not in the train/val/test list(s)": 1}
    bad = {**spec, "options": {"strategy": "medium"}}
    with pytest.raises(Exception, match="easy \\(patchwise\\) or hard"):
        build.build_shards(load_config("ci", group="custom", datasets=["hyspecnet11k"],
                                       sources={"hyspecnet11k": bad}, image_px=16,
                                       work_dir=str(tmp_path / "w2")), show_progress=False)


def test_the_hyperspectral_benchmark_reports_bytes_per_sample_and_the_loader_against_the_step():
    """`geofm bench-hyperspectral` at a tiny size: the code path of its numbers."""
    pytest.importorskip("open_clip")
    from geofm_lib.bench import hyperspectral

    r = hyperspectral.run(quick=True, image_px=32, samples=24, batch_size=8)
    b = r["bytes_per_sample"]
    assert b["raw_int16"] == 32 * 32 * 224 * 2 and b["float32"] == 2 * b["raw_int16"]
    assert 0 < b["shards_vs_int16"] < 1.2 and r["model_bands"] == 202
    assert r["loader_samples_per_s"] > 0 and r["step_samples_per_s"] > 0
    assert r["loader_vs_step"] == pytest.approx(
        r["loader_samples_per_s"] / r["step_samples_per_s"], rel=0.02)
    assert r["spectral_step_samples_per_s"] > 0  # the same tower behind the spectral stem


# --- an EnMAP L2A product in DLR's delivery layout, through the geotiff reader ---------------

PRODUCT = "ENMAP01-____L2A-DT0000001867_20220724T104526Z_008_V010302_20230628T165614Z"
SHIFT_NM = 0.6  # this product's centres against the nominal ones (they vary by product)


def _write_enmap_product(root, px: int = 48, declare_nodata: bool = False, centres=None,
                         n_bands: int = 224):
    """A product folder as DLR delivers it: <product>-SPECTRAL_IMAGE.TIF (int16, the
    water-vapour bands nodata, band 5 nodata along the left edge, no nodata value declared
    unless ``declare_nodata``), quality layers beside it, and <product>-METADATA.XML with
    level_X/specific/bandCharacterisation/bandID (centre, FWHM, gain 1e-4, offset 0), plus a
    quality list whose bandID elements carry no wavelength. Polygons of two CORINE classes in
    a GeoPackage next to the folder."""
    rasterio = pytest.importorskip("rasterio")
    gpd = pytest.importorskip("geopandas")
    from rasterio.transform import from_origin
    from shapely.geometry import box

    folder = root / PRODUCT
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    data = rng.integers(300, 4000, (n_bands, px, px)).astype(np.int16)
    data[np.array(ENMAP_WATER_VAPOUR)[np.array(ENMAP_WATER_VAPOUR) <= n_bands] - 1] = ENMAP_NODATA
    data[4, :, :3] = ENMAP_NODATA
    transform = from_origin(380000, 5820000, 30, 30)
    kw = dict(driver="GTiff", width=px, height=px, dtype="int16", crs="EPSG:32633",
              transform=transform)
    with rasterio.open(folder / f"{PRODUCT}-SPECTRAL_IMAGE.TIF", "w", count=n_bands,
                       **kw, **({"nodata": ENMAP_NODATA} if declare_nodata else {})) as f:
        f.write(data)
    for layer in ("QL_PIXELMASK", "QL_QUALITY_CLASSES"):
        with rasterio.open(folder / f"{PRODUCT}-{layer}.TIF", "w", count=1, **kw) as f:
            f.write(np.zeros((1, px, px), np.int16))
    centres = centres or [b.center_nm + SHIFT_NM for b in ENMAP_BANDS[:n_bands]]
    bands = "".join(
        f'<bandID number="{i + 1}"><wavelengthCenterOfBand>{c:.3f}</wavelengthCenterOfBand>'
        f"<FWHMOfBand>{7.5 + i / 100:.2f}</FWHMOfBand><GainOfBand>0.0001</GainOfBand>"
        f"<OffsetOfBand>0</OffsetOfBand></bandID>" for i, c in enumerate(centres))
    (folder / f"{PRODUCT}-METADATA.XML").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><level_X><metadata><schema>L2A</schema>'
        '</metadata><specific><bandCharacterisation>' + bands + "</bandCharacterisation>"
        '<qualityFlags><bandID number="3"><deadPixels>0</deadPixels></bandID></qualityFlags>'
        "</specific></level_X>")
    x0, y1 = 380000, 5820000
    polygons = gpd.GeoDataFrame(
        {"name": ["Coniferous forest", "Water bodies"]},
        geometry=[box(x0, y1 - 24 * 30, x0 + px * 30, y1), box(x0, y1 - px * 30, x0 + px * 30,
                                                                y1 - 24 * 30)],
        crs="EPSG:32633")
    labels = root / "corine.gpkg"
    polygons.to_file(labels)
    return folder, labels


def _product_cfg(tmp_path, root, labels=None, **kw):
    from geofm_lib.config import load_config

    spec = {"reader": "geotiff", "root": str(root),
            **({"options": {"labels": str(labels)}} if labels else {})}
    return load_config("ci", group="H", sources={"enmap_corine": spec}, image_px=16,
                       samples_per_dataset=50, val_fraction=0.25,
                       work_dir=str(tmp_path / "work"), **kw)


def test_an_enmap_product_keeps_its_own_band_centres_widths_date_and_nodata(tmp_path):
    """The product folder is the root: its SPECTRAL_IMAGE is read (not the quality layers),
    its METADATA.XML gives each band's measured centre and width, bands keep EnMAP's names by
    band number, the water-vapour bands are all nodata, and the acquisition date comes from
    the product name (torchgeo's EnMAP pattern)."""
    pytest.importorskip("torchgeo")
    from geofm_lib.data import build
    from geofm_lib.data.shards import iter_shards, load_manifest, shard_paths

    folder, labels = _write_enmap_product(tmp_path / "data")
    out = build.build_shards(_product_cfg(tmp_path, folder, labels), show_progress=False)
    m = load_manifest(out)
    st = m["band_stats"]["enmap_corine"]
    assert st["bands"] == [b.name for b in ENMAP_BANDS]
    assert sorted(st["all_nodata"]) == sorted(water_vapour_bands())
    assert m["source_reports"]["enmap_corine"]["file"] == f"{PRODUCT}-SPECTRAL_IMAGE.TIF"
    samples = [s for split in ("train", "val")
               for s in iter_shards(shard_paths(out, split, "enmap_corine"))]
    assert len(samples) == 9  # 48 px in 16 px patches
    info = samples[0]["json"]["band_info"]
    assert info[0]["center_nm"] == pytest.approx(ENMAP_BANDS[0].center_nm + SHIFT_NM, abs=1e-3)
    assert info[0]["fwhm_nm"] == pytest.approx(7.5) and info[223]["fwhm_nm"] == pytest.approx(9.73)
    assert info[0]["units"] == "reflectance x 10000" and info[0]["nodata"] == ENMAP_NODATA
    assert all(s["json"]["date"] == "2022-07-24" for s in samples)
    by_origin = {tuple(s["json"]["origin_px"]): s["json"] for s in samples}
    assert by_origin[(0, 0)]["labels"] == ["Coniferous forest"]
    assert by_origin[(32, 0)]["labels"] == ["Water bodies"]
    assert set(by_origin[(16, 16)]["labels"]) == {"Coniferous forest", "Water bodies"}
    # band 5's nodata column is left out of its statistics, not averaged in as -32768
    assert st["mean"][4] > 300


def test_an_enmap_product_that_is_not_whole_is_refused_before_any_patch(tmp_path):
    pytest.importorskip("torchgeo")
    from geofm_lib.data import build
    from geofm_lib.errors import ConfigError

    folder, _ = _write_enmap_product(tmp_path / "a", declare_nodata=True)
    (folder / f"{PRODUCT}-METADATA.XML").unlink()
    with pytest.raises(ConfigError, match="METADATA.XML is missing.*copy the whole product"):
        build.build_shards(_product_cfg(tmp_path / "a", folder), show_progress=False)
    folder, _ = _write_enmap_product(tmp_path / "b", centres=[500 + 2 * i for i in range(224)])
    with pytest.raises(ConfigError, match="band 1 is centred at 500.0 nm.*not EnMAP's 224-band"):
        build.build_shards(_product_cfg(tmp_path / "b", folder), show_progress=False)
    folder, _ = _write_enmap_product(tmp_path / "c", n_bands=218,
                                     centres=[b.center_nm for b in ENMAP_BANDS])
    with pytest.raises(ConfigError, match="has 218 bands, .*METADATA.XML describes 224"):
        build.build_shards(_product_cfg(tmp_path / "c", folder), show_progress=False)


# --- SpectralEarth's release layout (pretraining patches and EnMAP-CORINE) ----------------------

def _write_tif(path, data, **kw):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs="EPSG:32632",
                       transform=from_origin(500000, 5300000, 30, 30), **kw) as f:
        f.write(data)


def _write_spectral_earth(root, px: int = 16, n_bands: int = 202):
    """enmap/<location>/<acquisition>.tif (locations with 2, 1, 1 and 1 acquisitions), and
    EnMAP-CORINE: enmap/<sample>.tif + corine/<sample>.tif (CORINE codes) +
    splits/enmap_corine/{train,val,test}.txt, one sample in no list."""
    rng = np.random.default_rng(3)

    def image():
        return rng.integers(100, 5000, (n_bands, px, px)).astype(np.int16)

    for k, n in enumerate((2, 1, 1, 1)):
        for a in range(n):
            _write_tif(root / "pre" / "enmap" / f"{k:04d}" / f"{k:04d}_{a}.tif", image())
    codes = {"s0": {311: ..., 512: (slice(0, 4), slice(0, 4))}, "s1": {312: ...},
             "s2": {231: ..., 335: (slice(0, 8), slice(None)), 242: (0, 0)},
             "s3": {0: ..., 511: (slice(8, None), slice(None))}, "s4": {324: ...},
             "s5": {111: ...}}
    for name, fill in codes.items():
        mask = np.zeros((1, px, px), np.int16)
        for code, where in fill.items():
            if where is ...:
                mask[0] = code
            else:
                mask[0][where] = code
        _write_tif(root / "ben" / "enmap" / f"{name}.tif", image())
        _write_tif(root / "ben" / "corine" / f"{name}.tif", mask)
    splits = root / "ben" / "splits" / "enmap_corine"
    splits.mkdir(parents=True)
    (splits / "train.txt").write_text("s0.tif\ns1.tif\ns2.tif\n")
    (splits / "val.txt").write_text("s3.tif\n")
    (splits / "test.txt").write_text("s4.tif\n")  # s5 is in no list
    return root / "pre", root / "ben"


def test_spectral_earth_patches_and_enmap_corine_in_the_release_layout(tmp_path):
    pytest.importorskip("webdataset")
    from geofm_lib.config import load_config
    from geofm_lib.data import build
    from geofm_lib.data.shards import iter_shards, load_manifest, shard_paths

    pre, ben = _write_spectral_earth(tmp_path)
    kept = [b.name for i, b in enumerate(ENMAP_BANDS, 1) if i not in ENMAP_WATER_VAPOUR]
    cfg = load_config("ci", group="custom", datasets=["spectral_earth"], image_px=16,
                      sources={"spectral_earth": {"reader": "spectral_earth", "root": str(pre)}},
                      samples_per_dataset=50, val_fraction=0.25, work_dir=str(tmp_path / "w1"))
    m = load_manifest(build.build_shards(cfg, show_progress=False))
    assert m["band_stats"]["spectral_earth"]["bands"] == kept and len(kept) == 202
    report = m["source_reports"]["spectral_earth"]
    assert report["locations"] == 4 and report["acquisitions_beyond_the_first"] == 1
    assert (report["found"], report["used"]) == (5, 4)

    spec = {"reader": "spectral_earth", "root": str(ben), "splits": "official"}
    cfg = load_config("ci", group="H", sources={"enmap_corine": spec}, image_px=16,
                      samples_per_dataset=50, work_dir=str(tmp_path / "w2"))
    out = build.build_shards(cfg, show_progress=False)
    m = load_manifest(out)
    got = {s["json"]["image_id"]: (split, s["json"]["labels"]) for split in ("train", "val")
           for s in iter_shards(shard_paths(out, split, "enmap_corine"))}
    assert got == {
        "s0": ("train", ["Broad-leaved forest", "Water bodies"]),  # 311 + 16 px of 512
        "s1": ("train", ["Coniferous forest"]),
        # 242 on one pixel counts (SpectralEarth: any pixel); 335 (glaciers) is no label
        "s2": ("train", ["Pastures", "Complex cultivation patterns"]),
        "s3": ("val", ["Water courses"]),  # 0 is no data
        "s4": ("val", ["Transitional woodland/shrub"])}  # test.txt read as validation
    assert m["source_reports"]["enmap_corine"]["not_used"] == {
        "not in the train/val/test list(s)": 1}


def test_spectral_earth_files_of_another_kind_are_refused(tmp_path):
    from geofm_lib.config import load_config
    from geofm_lib.data import build
    from geofm_lib.errors import ConfigError, DataError

    pre, ben = _write_spectral_earth(tmp_path / "a", n_bands=224)
    cfg = load_config("ci", group="custom", datasets=["spectral_earth"], image_px=16,
                      sources={"spectral_earth": {"reader": "spectral_earth", "root": str(pre)}},
                      work_dir=str(tmp_path / "w"))
    with pytest.raises(ConfigError, match="has 224 bands; SpectralEarth's patches have 202"):
        build.build_shards(cfg, show_progress=False)
    _, ben = _write_spectral_earth(tmp_path / "b")
    _write_tif(ben / "corine" / "s1.tif", np.full((1, 16, 16), 999, np.int16))
    cfg = load_config("ci", group="H", image_px=16, work_dir=str(tmp_path / "w2"),
                      sources={"enmap_corine": {"reader": "spectral_earth", "root": str(ben)}})
    with pytest.raises(DataError, match="corine/s1.tif holds values \\[999\\]"):
        build.build_shards(cfg, show_progress=False)


def test_a_hyspecnet_patch_read_as_a_geotiff_is_recognised_as_enmap(tmp_path):
    """Issue 36, item 5: a HySpecNet-11k patch through the geotiff reader had bands band1 ...
    band224 without wavelengths and no date; its name says EnMAP L2A and the day."""
    from geofm_lib.config import load_config
    from geofm_lib.data import build, shards

    _write_hyspecnet(tmp_path / "hsn", n_patches=3, px=32)
    tif = sorted((tmp_path / "hsn").rglob("*-SPECTRAL_IMAGE.TIF"))[0]
    cfg = load_config("ci", group="custom", image_px=16, samples_per_dataset=4,
                      val_fraction=0.25, work_dir=str(tmp_path / "w"),
                      sources={"patch": {"reader": "geotiff", "root": str(tif),
                                         "options": {"split_block_px": 16}}})
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    report = m["source_reports"]["patch"]
    assert report["recognised"].startswith("EnMAP L2A by its file name")
    assert report["acquired"] == "2022-11-03"
    sample = next(shards.iter_shards(shards.shard_paths(folder, "train")))
    assert sample["json"]["bands"] == [b.name for b in ENMAP_BANDS]
    assert sample["json"]["date"] == "2022-11-03"
    info = sample["json"]["band_info"]
    assert abs(info[0]["center_nm"] - ENMAP_BANDS[0].center_nm) < 1e-6
    assert all(b["nodata"] == ENMAP_NODATA for b in info)
