"""Bands as data: canonical names, wavelengths and nodata per band, from files in the layouts
real data comes in (torchgeo's SSL4EO-S12 names, a 224-band hyperspectral GeoTIFF with
entirely-nodata bands, a Sentinel-2 product stored one band per file)."""

import logging

import numpy as np
import pytest

from geofm_lib import bands as B
from geofm_lib.data import build, shards
from geofm_lib.data.display import display_rgb
from geofm_lib.errors import ConfigError, DataError
from geofm_lib.models import inputs

rasterio = pytest.importorskip("rasterio")


def _cfg(tmp_path, sources, **kw):
    from test_sources_real import _cfg as sources_cfg

    return sources_cfg(tmp_path, sources, **{"image_px": 32, **kw})


def _samples(folder):
    return [s for split in ("train", "val")
            for s in shards.iter_shards(shards.shard_paths(folder, split))]


# --- names -------------------------------------------------------------------------------------

def test_source_names_resolve_to_canonical_bands():
    s2 = B.resolve_bands(["B1", "b2", "B8", "B8a", "B10", "B12"], sensor="sentinel2_l1c")
    assert [r.name for r in s2] == ["B01", "B02", "B08", "B8A", "B10", "B12"]
    assert s2[3].center_nm == 865 and s2[3].fwhm_nm == 21 and s2[0].source_name == "B1"
    assert s2[0].units == "top-of-atmosphere reflectance x 10000"
    sar = B.resolve_bands(["vv", "Vh"])
    assert [(r.name, r.polarisation) for r in sar] == [("VV", "VV"), ("VH", "VH")]
    assert [r.name for r in B.resolve_bands(["Red", "green", "BLUE", "nir"])] == \
        ["R", "G", "B", "nir"]
    # without a sensor, "B4" could be Landsat's red or Sentinel-2's: it is not guessed
    assert B.resolve_bands(["B4"])[0].center_nm is None
    hyper = B.resolve_bands(["band1", "band48", "band224"], sensor="enmap")
    assert [r.name for r in hyper] == ["418nm", "667nm", "2445nm"]
    assert B.wavelength_nm("667nm") == 667.0 and B.wavelength_nm("B04") == 665.0
    close = B.resolve_bands(["x", "y"], wavelengths_nm=[500.2, 500.4])
    assert [r.name for r in close] == ["500.2nm", "500.4nm"]
    with pytest.raises(DataError, match="both resolve to 'B01'"):
        B.resolve_bands(["B1", "B01"], sensor="sentinel2_l2a")
    with pytest.raises(DataError, match="unknown sensor 'landsat9'"):
        B.resolve_bands(["B1"], sensor="landsat9")
    with pytest.raises(DataError, match="wavelengths_nm has 1 values for 2 bands"):
        B.resolve_bands(["x", "y"], wavelengths_nm=[500])


def test_rgb_comes_from_names_or_wavelengths_never_from_band_order():
    assert inputs.input_bands(["B02", "B03", "B04", "B08"]) == ([2, 1, 0],
                                                                "sentinel2_true_colour")
    assert inputs.input_bands(["B", "G", "R"]) == ([2, 1, 0], "rgb")
    hyper = [f"{w}nm" for w in range(420, 1000, 10)]  # 420, 430, ... nm
    idx, rule = inputs.input_bands(hyper)
    assert [hyper[i] for i in idx] == ["660nm", "560nm", "490nm"] and \
        rule == "rgb_by_wavelength"
    # a band that is entirely nodata is passed over for its neighbour
    idx, _ = inputs.input_bands(hyper, unusable=["660nm"])
    assert hyper[idx[0]] in ("650nm", "670nm")
    with pytest.raises(DataError, match=r"band1, band2, band3 \(3 bands\).*first_layer"):
        inputs.input_bands(["band1", "band2", "band3"])
    with pytest.raises(DataError, match="band_adapter: wavelength"):
        inputs.input_bands(["800nm", "900nm", "1000nm"])


# --- SSL4EO-S12 through torchgeo (its band names are B1 ... B12) ---------------------------------

def test_ssl4eo_band_names_are_canonical_in_the_shards(tmp_path):
    pytest.importorskip("torchgeo")
    from test_sources_real import _write_ssl4eo

    _write_ssl4eo(tmp_path / "ssl4eo", n_locations=2)
    spec = {"reader": "torchgeo", "dataset_class": "SSL4EOS12", "root": str(tmp_path / "ssl4eo")}
    cfg = _cfg(tmp_path, {"ssl4eo_s12_s2c": spec}, image_px=64)
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    names = m.bands("ssl4eo_s12_s2c")
    assert names == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                     "B10", "B11", "B12"]
    records = m.band_records("ssl4eo_s12_s2c")
    assert [r.source_name for r in records][:2] == ["B1", "B2"]
    assert all(r.center_nm for r in records)
    spec_in, _ = inputs.input_spec(m.band_stats_for(["ssl4eo_s12_s2c"]))
    assert spec_in["ssl4eo_s12_s2c"].rule == "sentinel2_true_colour"
    assert list(spec_in["ssl4eo_s12_s2c"].idx) == [3, 2, 1]  # B04, B03, B02
    _, model_bands = inputs.input_spec(m.band_stats_for(["ssl4eo_s12_s2c"]), "wavelength")
    assert model_bands == names
    # the display draws Sentinel-2 false colour (B08, B04, B03), as for every S2 product
    s = _samples(folder)[0]
    img = s["img"]
    want = np.clip(img[7].astype(np.float32) / 5000.0, 0, 1) ** (1 / 1.4)
    assert np.allclose(display_rgb(img, s["json"]["bands"])[..., 0], want)


# --- a 224-band hyperspectral tile with entirely-nodata bands -------------------------------------

# EnMAP's water-vapour absorption bands: no measurement in the L2A product
ABSORPTION = list(range(127, 142)) + list(range(161, 168))  # 22 bands, 1-based


def _write_hyperspectral(path, descriptions=True, nodata=-32768):
    from rasterio.transform import from_origin
    from torchgeo.datasets import EnMAP

    rng = np.random.default_rng(3)
    n, px = 224, 64
    data = rng.integers(100, 6000, (n, px, px)).astype(np.int16)
    for b in ABSORPTION:
        data[b - 1] = nodata
    data[0, :8, :] = nodata  # nodata in one band only: 512 pixels of band 1
    wavelengths = [EnMAP.wavelengths[f"B{i}"] * 1000 for i in range(1, n + 1)]
    with rasterio.open(path, "w", driver="GTiff", width=px, height=px, count=n, dtype="int16",
                       crs="EPSG:32633", transform=from_origin(400000, 5800000, 30, 30),
                       nodata=nodata) as f:
        f.write(data)
        if descriptions:
            for i, w in enumerate(wavelengths, start=1):
                f.set_band_description(i, f"band {i} ({w:.2f} Nanometers)")
    return data, wavelengths


def test_hyperspectral_tile_bands_wavelengths_and_nodata_per_band(tmp_path, caplog):
    pytest.importorskip("torchgeo")
    data, wavelengths = _write_hyperspectral(tmp_path / "enmap_tile.tif")
    spec = {"reader": "geotiff", "root": str(tmp_path / "enmap_tile.tif")}
    cfg = _cfg(tmp_path, {"enmap_tile": spec}, val_fraction=0.25)
    folder = build.build_shards(cfg, show_progress=False)
    m = shards.load_manifest(folder)
    names = m.bands("enmap_tile")
    assert len(names) == 224 and names[0] == "418nm" and names[-1] == "2445nm"
    records = m.band_records("enmap_tile")
    assert records[16].source_name == "band 17 (496.50 Nanometers)"
    assert records[16].center_nm == pytest.approx(wavelengths[16], abs=0.01)
    assert {r.nodata for r in records} == {-32768.0}
    st = m["band_stats"]["enmap_tile"]
    # the 22 absorption bands: flagged, all their pixels counted as nodata, no statistics
    assert st["all_nodata"] == [names[b - 1] for b in ABSORPTION]
    train = m["counts"]["enmap_tile"]["train"]
    assert st["nodata_pixels"][126] == st["pixels"] == train * 32 * 32
    assert st["mean"][126] == 0 and st["std"][126] == 0
    # band 1's nodata rows are left out of its mean (not -32768 averaged in)
    train_imgs = [s["img"] for s in shards.iter_shards(shards.shard_paths(folder, "train"))]
    band1 = np.concatenate([im[0][im[0] != -32768] for im in train_imgs]).astype(np.float64)
    assert st["nodata_pixels"][0] == sum(int((im[0] == -32768).sum()) for im in train_imgs) > 0
    assert st["mean"][0] == pytest.approx(band1.mean(), abs=1e-3)
    assert min(st["mean"][i] for i in range(224) if names[i] not in st["all_nodata"]) > 100
    # RGB tower: the bands nearest 665, 560 and 490 nm
    rgb = inputs.input_spec(m.band_stats_for(["enmap_tile"]))[0]["enmap_tile"]
    assert rgb.rule == "rgb_by_wavelength"
    assert [round(wavelengths[i]) for i in rgb.idx] == [667, 561, 492]
    # band adapters: the 22 empty bands are left out, with a printed line
    with caplog.at_level(logging.WARNING, logger="geofm"):
        slots, model_bands = inputs.input_spec(m.band_stats_for(["enmap_tile"]), "wavelength")
    assert len(model_bands) == 202 and not set(st["all_nodata"]) & set(model_bands)
    assert "22 band(s) entirely nodata" in caplog.text
    s = next(shards.iter_shards(shards.shard_paths(folder, "train")))
    x = inputs.to_model_input(s["img"], s["json"]["bands"], slots["enmap_tile"])
    assert x.shape == (202, 32, 32) and np.isfinite(x).all() and np.abs(x).max() < 20


def test_hyperspectral_tile_without_wavelengths(tmp_path):
    pytest.importorskip("torchgeo")
    _write_hyperspectral(tmp_path / "tile.tif", descriptions=False)
    bare = {"reader": "geotiff", "root": str(tmp_path / "tile.tif")}
    folder = build.build_shards(_cfg(tmp_path, {"tile": bare}), show_progress=False)
    m = shards.load_manifest(folder)
    assert m.bands("tile")[:2] == ["band1", "band2"]
    with pytest.raises(DataError, match=r"tile: no red, green and blue.*first_layer"):
        inputs.input_spec(m.band_stats_for(["tile"]))
    with pytest.raises(ValueError, match="band 'band1' has no known centre wavelength"):
        inputs.input_spec(m.band_stats_for(["tile"]), "wavelength")
    # the sensor named: wavelengths from torchgeo's EnMAP table
    named = {**bare, "options": {"sensor": "enmap"}}
    folder = build.build_shards(_cfg(tmp_path, {"tile": named}, work_dir=str(tmp_path / "w2")),
                                show_progress=False)
    assert shards.load_manifest(folder).bands("tile")[47] == "667nm"
    with pytest.raises(ConfigError, match="unknown option.*band_wavelength_nm"):
        build.build_shards(_cfg(tmp_path, {"tile": {**bare, "options": {
            "band_wavelength_nm": [1]}}}, work_dir=str(tmp_path / "w3")), show_progress=False)


# --- a Sentinel-2 product stored one band per file ------------------------------------------------

def _write_band_folder(folder):
    from rasterio.transform import from_origin

    folder.mkdir()
    rng = np.random.default_rng(5)
    files = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B11": 20, "B8A": 20,
             "SCL": 20, "TCI": 10}
    for band, res in files.items():
        px = 640 // res
        count = 3 if band == "TCI" else 1
        with rasterio.open(folder / f"T33UUP_20200515T101031_{band}_{res}m.tif", "w",
                           driver="GTiff", width=px, height=px, count=count, dtype="uint16",
                           crs="EPSG:32633", transform=from_origin(300000, 5600000, res, res),
                           nodata=0) as f:
            f.write(rng.integers(1, 5000, (count, px, px)).astype("uint16"))


def test_band_per_file_product(tmp_path):
    _write_band_folder(tmp_path / "S2_product")
    spec = {"reader": "geotiff", "root": str(tmp_path / "S2_product")}
    folder = build.build_shards(_cfg(tmp_path, {"my_s2": spec}), show_progress=False)
    m = shards.load_manifest(folder)
    # bands by wavelength, whatever the file order; 20 m bands on the 10 m grid
    assert m.bands("my_s2") == ["B02", "B03", "B04", "B05", "B08", "B8A", "B11"]
    report = m["source_reports"]["my_s2"]["band_files"]
    assert report["found"] == 9 and report["used"] == 7
    assert set(report["not_used"]) == {"T33UUP_20200515T101031_SCL_20m.tif",
                                       "T33UUP_20200515T101031_TCI_10m.tif"}
    s = next(shards.iter_shards(shards.shard_paths(folder, "train")))
    with rasterio.open(tmp_path / "S2_product" / "T33UUP_20200515T101031_B05_20m.tif") as f:
        b05 = f.read(1)
    y, x = s["json"]["origin_px"]
    np.testing.assert_array_equal(s["img"][3], np.repeat(np.repeat(b05, 2, 0), 2, 1)
                                  [y:y + 32, x:x + 32])
    assert inputs.input_bands(m.bands("my_s2"))[1] == "sentinel2_true_colour"


def test_patches_of_one_16_bit_scene_share_one_colour_scale():
    """Issue 36, item 7: each Landsat patch was stretched on its own, so a dark patch of water
    and a bright one of fields looked alike; shown together they now share the stretch."""
    from geofm_lib.data.display import display_ranges, display_rgb

    rng = np.random.default_rng(0)
    dark = rng.integers(7000, 8000, (3, 16, 16)).astype(np.uint16)
    bright = rng.integers(15000, 20000, (3, 16, 16)).astype(np.uint16)
    bands = ["B", "G", "R"]
    alone = [display_rgb(x, bands).mean() for x in (dark, bright)]
    assert abs(alone[0] - alone[1]) < 0.1  # per-patch stretch: alike
    ranges = display_ranges([dark, bright], bands)
    shared = [display_rgb(x, bands, ranges).mean() for x in (dark, bright)]
    assert shared[1] - shared[0] > 0.5  # one scale: the dark patch stays dark
    assert display_ranges([np.zeros((3, 4, 4), np.uint8)], bands) is None  # 8 bit: as stored
