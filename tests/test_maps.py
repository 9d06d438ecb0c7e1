"""Maps are checked by their content (layers, features, popups, overlays), offline."""

import html
import re
from pathlib import Path

import numpy as np
import pytest

from geofm_lib.report import maps, offline

ROOT = Path(__file__).resolve().parents[1]


def _records():
    out = []
    for i in range(7):
        ds = "xview" if i < 4 else "bigearthnet_s2"
        out.append({"key": f"{ds}-{i}", "dataset": ds, "caption": "An image <b>with</b> buses.",
                    "labels": ["Bus"] if i != 3 else [], "predicted": ["Bus"],
                    "top": [{"label": "Bus", "score": 0.31}],
                    "hit@1": None if i == 3 else bool(i % 2),
                    "footprint": {"bounds": [10 + i, 45, 10.001 + i, 45.001]} if i != 6 else None,
                    "date": "2021-06-01"})
    return out


def test_prediction_map_layers_popups_and_overlay(tmp_path):
    tif = tmp_path / "img.tif"
    img = (np.random.default_rng(0).random((3, 16, 16)) * 255).astype("uint8")
    maps.write_geotiff(tif, img, [10, 45, 10.01, 45.01], band_names=["R", "G", "B"])
    overlay = maps.raster_overlay_layer(tif, name="an image")
    m = maps.predictions_map(_records(), {"xview-1": b"\x89PNG fake"}, [overlay])
    out = tmp_path / "map.html"
    maps.save_map(m, out)
    content = maps.map_content(out.read_text())
    by_ds = {tuple(layer["datasets"]): layer for layer in content["layers"]}
    assert set(by_ds) == {("xview",), ("bigearthnet_s2",)}
    assert by_ds[("xview",)]["features"] == 4 and by_ds[("bigearthnet_s2",)]["features"] == 2
    assert by_ds[("xview",)]["results"] == ["hit", "miss", "no labels"]
    assert all(layer["popups"] == layer["features"] for layer in content["layers"])
    assert by_ds[("xview",)]["thumbnails"] == 1
    assert content["image_overlays"] == 1
    assert "an image" in content["layer_names"]
    popups = [h for lay in maps.map_content(out.read_text(), with_popups=True)["layers"]
              for h in lay["popup_html"]]
    assert any("&lt;b&gt;with&lt;/b&gt;" in h for h in popups)  # captions escaped in popups
    assert not any("<b>with</b>" in h for h in popups)
    # the notebook output (iframe srcdoc) carries the same map
    assert maps.map_content(m._repr_html_())["layers"] == content["layers"]
    # and both need no network but for the tiles: Leaflet and the rest are in the page
    for page in (out.read_text(), html.unescape(m._repr_html_())):
        assert offline.remote_assets(page) == []
        assert "Leaflet 1.9.3, a JS library for interactive maps" in page  # its code inline
        assert "<style>" in page and "data:image/png;base64," in page  # css images inline


def test_offline_pages_say_which_cdn_link_they_do_not_know():
    page = ('<script src="https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js"></script>'
            '<script src="https://example.org/new-plugin.js"></script>'
            '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@fortawesome/'
            'fontawesome-free@6.2.0/css/all.min.css"/>')
    out = offline.inline_assets(page)
    assert offline.remote_assets(out) == ["https://example.org/new-plugin.js"]
    assert "fontawesome" not in out and len(out) > 100_000
    # protocol-relative addresses (leafmap's legend): from disk they were file://code.jquery...
    page = ('<link rel="stylesheet" href="//code.jquery.com/ui/1.12.1/themes/base/jquery-ui.css">'
            '<script src="//code.jquery.com/ui/1.12.1/jquery-ui.js"></script>'
            '<script src="//example.org/other.js"></script>')
    out = offline.inline_assets(page)
    assert offline.remote_assets(out) == ["//example.org/other.js"]
    assert "jquery-ui.css" not in out and "jQuery UI" in out


def test_overlay_bounds_are_reprojected_to_wgs84(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    tif = tmp_path / "utm.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=20, height=10, count=1, dtype="uint8",
                       crs="EPSG:32632", transform=from_origin(500000, 5000000, 10, 10)) as dst:
        dst.write(np.full((1, 10, 20), 128, np.uint8))
    ov = maps.raster_overlay_layer(tif)
    (s, w), (n, e) = ov["bounds_latlon"]
    # UTM 32N, easting 500 km is the 9 degree E central meridian; northing 5000 km ~ 45.1 N
    assert 8.99 < w <= 9.0 < e < 9.01 and 45.0 < s < n < 45.2
    assert ov["image"].shape == (10, 20, 4) and (ov["image"][..., 3] == 255).all()


@pytest.mark.reports
def test_ci_report_holds_the_map():
    """After tests/run_all.sh ran the notebooks: the 05 report page and map.html have layers."""
    page = ROOT / "reports" / "ci-notebooks" / "05_map_viz.html"
    if not page.is_file():
        pytest.skip("no generated ci report yet (tests/run_all.sh makes it before pytest)")
    content = maps.map_content(page.read_text())
    assert content["layers"] and all(lay["popups"] == lay["features"] for lay in content["layers"])
    assert content["image_overlays"] >= 1
    standalone = maps.map_content((page.parent / "map.html").read_text())
    assert standalone["layers"] == content["layers"]
    frames = re.findall(r'srcdoc="([^"]*)"', page.read_text())  # the map in the page
    assert frames
    for text in [html.unescape(f) for f in frames] + [(page.parent / "map.html").read_text()]:
        assert offline.remote_assets(text) == []


def test_static_picture_has_a_panel_per_dataset_and_is_what_the_page_prints(tmp_path):
    fig, png = maps.static_map(_records())
    assert png.startswith(b"\x89PNG")
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_title())
    assert titles == ["bigearthnet_s2: R@1 1/2", "xview: R@1 1/3"]  # hits / scored, per layer
    boxes = {ax.get_title().split(":")[0]: len(ax.patches) for ax in fig.axes if ax.get_title()}
    assert boxes == {"xview": 4, "bigearthnet_s2": 2}  # the record without footprint is absent
    out = tmp_path / "map.html"
    maps.save_map(maps.predictions_map(_records()), out, picture=png)
    page = out.read_text()
    assert "@media print{.folium-map{display:none" in page and 'class="geofm-print"' in page


def test_a_saved_map_is_titled_after_its_run(tmp_path):
    import folium

    from geofm_lib.report import maps

    path = tmp_path / "group<C>-demo" / "map.html"
    path.parent.mkdir()
    maps.save_map(folium.Map(location=[0, 0], zoom_start=2), path)
    text = path.read_text()
    assert "<title>map · group&lt;C&gt;-demo · geofm</title>" in text
    assert text.count("<title>") == 1 and "jQuery UI" not in text.split("</head>")[0]


def test_every_map_carries_the_offline_basemap_under_its_data(tmp_path):
    """Issue 38, item 4: Natural Earth's countries inside the page (not clickable), so a map
    opened offline shows coasts and borders; the map checks still count only the data."""
    from geofm_lib.report import basemap

    m = maps.predictions_map(_records())
    path = tmp_path / "run" / "map.html"
    path.parent.mkdir()
    maps.save_map(m, path)
    text = path.read_text()
    content = maps.map_content(text)
    assert content["basemap"] and basemap.NAME not in content["layer_names"]
    assert sum(layer["features"] for layer in content["layers"]) == 6  # the footprints only
    starts = [m.start() for m in re.finditer(r"geo_json_\w+_add\(", text)] + [len(text)]
    calls = [text[a:b] for a, b in zip(starts, starts[1:])]
    assert '"basemap": 1' in calls[0]  # added first: drawn underneath the data
    assert not any('"basemap": 1' in c for c in calls[1:])
    assert "Germany" in text
    world = basemap.countries()
    assert len(world["features"]) == 177 and all(basemap.is_basemap({"features": [f]})
                                                 for f in world["features"])


def test_static_panels_keep_latitude_on_earth_and_their_true_aspect():
    """xView's footprints spread over 270 degrees of longitude: the panel's latitude stays
    within -90..90 (it went to 175); a panel at 60 degrees north draws a degree of longitude
    half as long as one of latitude."""
    (w, s), (e, n), aspect = maps.panel_limits(-120, -30, 150, 60)
    assert -90 <= s < -30 and 60 < n <= 90 and -180 <= w and e <= 180
    (w, s), (e, n), aspect = maps.panel_limits(10.0, 59.9, 10.2, 60.1)
    assert aspect == pytest.approx(2.0, rel=1e-3)
    assert (e - w) / aspect == pytest.approx(n - s, rel=1e-6)  # square on the page
    assert w < 10.0 and e > 10.2 and s < 59.9 and n > 60.1
    fig, png = maps.static_map(_records())
    from matplotlib.collections import PolyCollection

    ax = fig.axes[0]
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the countries
    assert ax.get_ylim()[1] <= 90 and png[:4] == b"\x89PNG"
