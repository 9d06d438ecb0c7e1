"""Maps with leafmap: where the samples are, what the model predicted there, and rasters.

Maps use leafmap's folium backend, so an executed notebook and its HTML report carry the map as
plain HTML (an iframe), and ``save_map`` writes the same map as a standalone page. Layers are
GeoJSON with the data inline (features, styles and popups), so a map can be checked by its
content without a browser. Leaflet and the other scripts are inline too (``offline``), so maps
work with the network off; only the base-map tiles load from the web.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
from pathlib import Path

import numpy as np

from geofm_lib.data.display import display_rgb
from geofm_lib.data.sources.base import _resolve_root
from geofm_lib.io import atomic_path, atomic_write_bytes
from geofm_lib.report import basemap
from geofm_lib.report.offline import offline

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")


def footprint_features(samples: list[dict]) -> dict[str, dict]:
    """GeoJSON FeatureCollections of sample footprints (lon/lat boxes), one per dataset."""
    out: dict[str, dict] = {}
    for s in samples:
        meta = s["json"]
        bounds = (meta.get("footprint") or {}).get("bounds")
        if not bounds:
            continue
        x0, y0, x1, y1 = bounds
        feature = {
            "type": "Feature",
            # the click popup writes these with innerHTML: escaped, they stay text
            "properties": {"dataset": html.escape(meta["dataset"]),
                           "key": html.escape(s["__key__"]),
                           "labels": html.escape(", ".join(meta["labels"]) or "-"),
                           "date": html.escape(str(meta.get("date"))),
                           "split": html.escape(str(meta.get("split")))},
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1],
                                                             [x0, y1], [x0, y0]]]},
        }
        out.setdefault(meta["dataset"], {"type": "FeatureCollection", "features": []})
        out[meta["dataset"]]["features"].append(feature)
    return out


def footprints_map(samples: list[dict], min_size_deg: float = 0.02):
    """A leafmap map with one coloured layer of footprints per dataset and a legend.

    Footprints of very-high-resolution images are metres wide; each box is drawn at least
    ``min_size_deg`` wide around its centre so it stays visible at continental zoom.
    """
    import leafmap.foliumap as leafmap

    layers = footprint_features(samples)
    m = offline(leafmap.Map(center=[30, 0], zoom=2, draw_control=False, measure_control=False,
                            fullscreen_control=False))
    basemap.add_to(m)  # coasts and borders that need no network, under the footprints
    legend = {}
    all_bounds = []
    for i, (ds, fc) in enumerate(sorted(layers.items())):
        color = PALETTE[i % len(PALETTE)]
        for f in fc["features"]:
            ring = f["geometry"]["coordinates"][0]
            (x0, y0), (x1, y1) = ring[0], ring[2]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            hx, hy = max((x1 - x0) / 2, min_size_deg / 2), max((y1 - y0) / 2, min_size_deg / 2)
            f["geometry"]["coordinates"] = [[[cx - hx, cy - hy], [cx + hx, cy - hy],
                                             [cx + hx, cy + hy], [cx - hx, cy + hy],
                                             [cx - hx, cy - hy]]]
            all_bounds.append((cx - hx, cy - hy, cx + hx, cy + hy))
        with contextlib.redirect_stdout(io.StringIO()):  # leafmap prints a CRS notice
            m.add_geojson({**fc, "crs": "EPSG:4326"}, layer_name=html.escape(ds),
                          style={"color": color, "weight": 2, "fillOpacity": 0.35,
                                 "fillColor": color}, info_mode="on_click")
        legend[html.escape(ds)] = color
    if all_bounds:
        m.fit_bounds([[min(b[1] for b in all_bounds), min(b[0] for b in all_bounds)],
                      [max(b[3] for b in all_bounds), max(b[2] for b in all_bounds)]])
    if legend:
        m.add_legend(title="dataset", legend_dict=legend)
    return m


HIT_COLOR, MISS_COLOR, NA_COLOR = "#1a9850", "#d73027", "#808080"


def has_footprint(footprint) -> bool:
    """True when a sample's footprint has lon/lat bounds (real images may have none)."""
    return bool(isinstance(footprint, dict) and footprint.get("bounds"))


def _box(bounds, min_size_deg: float):
    x0, y0, x1, y1 = bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = max((x1 - x0) / 2, min_size_deg / 2), max((y1 - y0) / 2, min_size_deg / 2)
    return (cx - hx, cy - hy, cx + hx, cy + hy)


def _popup_html(rec: dict, thumbnail: bytes | None) -> str:
    def labels(xs):
        return html.escape(", ".join(xs) or "-")

    img = ""
    if thumbnail:
        b64 = base64.b64encode(thumbnail).decode()
        img = (f'<img src="data:image/png;base64,{b64}" width="128" height="128" '
               f'style="image-rendering:pixelated;float:left;margin-right:8px">')
    hit = rec.get("hit@1")
    verdict = {True: "R@1 hit", False: "R@1 miss", None: "no labels"}[hit]
    top = ", ".join(f"{html.escape(t['label'])} ({t['score']:.2f})" for t in rec["top"][:3])
    return (f'<div style="font:12px sans-serif;width:330px">{img}'
            f'<b>{html.escape(rec["dataset"])}</b> · {verdict}<br>'
            f'<i>{html.escape(rec["caption"])}</i><br>'
            f'<b>true:</b> {labels(rec["labels"])}<br>'
            f'<b>predicted (top-|y|):</b> {labels(rec["predicted"])}<br>'
            f'<b>top 3:</b> {top}<br>'
            f'<span style="color:#666">{html.escape(str(rec.get("date") or ""))} · '
            f'{html.escape(rec["key"])}</span></div>')


def prediction_layers(records: list[dict], thumbnails: dict[str, bytes] | None = None,
                      min_size_deg: float = 0.02) -> dict[str, dict]:
    """GeoJSON FeatureCollections of evaluated samples, one per dataset, styled by R@1 hit.

    Each feature carries ``dataset``, ``key``, ``result`` (hit / miss / no labels), a ``style``
    and ``popup`` HTML (thumbnail, caption, true and predicted labels).
    """
    thumbnails = thumbnails or {}
    out: dict[str, dict] = {}
    for rec in records:
        bounds = (rec.get("footprint") or {}).get("bounds")
        if not bounds:
            continue
        x0, y0, x1, y1 = _box(bounds, min_size_deg)
        hit = rec.get("hit@1")
        color = {True: HIT_COLOR, False: MISS_COLOR}.get(hit, NA_COLOR)
        text = html.escape  # folium's tooltip writes these with innerHTML: text, not markup
        feature = {
            "type": "Feature",
            "properties": {
                "dataset": text(rec["dataset"]), "key": text(rec["key"]),
                "result": {True: "hit", False: "miss"}.get(hit, "no labels"),
                "labels": text(", ".join(rec["labels"]) or "-"),
                "predicted": text(", ".join(rec["predicted"]) or "-"),
                "popup": _popup_html(rec, thumbnails.get(rec["key"])),
                "style": {"color": color, "fillColor": color, "weight": 1.5,
                          "fillOpacity": 0.55},
            },
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1],
                                                             [x0, y1], [x0, y0]]]},
        }
        out.setdefault(rec["dataset"], {"type": "FeatureCollection", "features": []})
        out[rec["dataset"]]["features"].append(feature)
    return out


def _with_dots(fc: dict) -> dict:
    """The footprints plus a point at each one's centre (drawn as a dot of fixed size in
    pixels, :func:`predictions_map`): a box metres wide is invisible at world zoom."""
    dots = []
    for f in fc["features"]:
        ring = f["geometry"]["coordinates"][0]
        centre = [(ring[0][0] + ring[2][0]) / 2, (ring[0][1] + ring[2][1]) / 2]
        dots.append({"type": "Feature", "properties": f["properties"],
                     "geometry": {"type": "Point", "coordinates": centre}})
    return {**fc, "features": fc["features"] + dots}


def predictions_map(records: list[dict], thumbnails: dict[str, bytes] | None = None,
                    overlays: list[dict] | None = None, min_size_deg: float = 0.02):
    """A leafmap map: one layer per dataset of footprints coloured by R@1 hit (green) or miss
    (red), popups with thumbnail, caption, true and predicted labels; plus raster overlays
    (dicts from ``raster_overlay_layer``) and a layer switcher."""
    import folium
    import leafmap.foliumap as leafmap

    m = offline(leafmap.Map(center=[30, 0], zoom=2, draw_control=False, measure_control=False,
                            fullscreen_control=False))
    basemap.add_to(m)  # coasts and borders that need no network, under the footprints
    all_bounds = []
    for ds, fc in sorted(prediction_layers(records, thumbnails, min_size_deg).items()):
        hits = sum(f["properties"]["result"] == "hit" for f in fc["features"])
        scored = sum(f["properties"]["result"] != "no labels" for f in fc["features"])
        name = f"{html.escape(ds)}: R@1 {hits}/{scored}"  # the layer control shows it as HTML
        folium.GeoJson(
            _with_dots(fc), name=name, style_function=lambda f: f["properties"]["style"],
            popup=folium.GeoJsonPopup(fields=["popup"], labels=False, max_width=360),
            tooltip=folium.GeoJsonTooltip(fields=["dataset", "result", "labels"]),
            marker=folium.CircleMarker(radius=4, fill=True, fill_opacity=0.9, weight=1),
        ).add_to(m)
        for f in fc["features"]:
            ring = f["geometry"]["coordinates"][0]
            all_bounds.append((ring[0][0], ring[0][1], ring[2][0], ring[2][1]))
    for ov in overlays or []:
        folium.raster_layers.ImageOverlay(
            image=ov["image"], bounds=ov["bounds_latlon"], name=html.escape(ov["name"]),
            opacity=0.9,
            interactive=False, cross_origin=False).add_to(m)
        (s, w), (n, e) = ov["bounds_latlon"]
        all_bounds.append((w, s, e, n))
    if all_bounds:
        m.fit_bounds([[min(b[1] for b in all_bounds), min(b[0] for b in all_bounds)],
                      [max(b[3] for b in all_bounds), max(b[2] for b in all_bounds)]])
    m.add_legend(title="zero-shot R@1", legend_dict={"hit": HIT_COLOR, "miss": MISS_COLOR,
                                                     "no labels": NA_COLOR})
    # top left, under the zoom buttons: the legend sits bottom right, and in JupyterLab's shorter
    # frame a layer list at the top right ran into it
    folium.LayerControl(collapsed=False, position="topleft").add_to(m)
    return m


def panel_limits(west: float, south: float, east: float, north: float,
                 pad: float = 0.08, least_deg: float = 0.05) -> tuple:
    """The (west, south), (east, north) corners and the aspect (y per x unit) of a square-
    looking lon/lat panel around data bounds: one degree of longitude drawn ``cos(latitude)``
    as long as one of latitude, the shorter side widened to the longer, ``pad`` of a side
    around the data, latitude kept within -90..90 and longitude within -180..180 where the
    span allows."""
    cx, cy = (west + east) / 2, (south + north) / 2
    shrink = max(np.cos(np.radians(cy)), 0.05)
    half_x = max(east - west, least_deg) / 2 * (1 + 2 * pad)
    half_y = max(north - south, least_deg) / 2 * (1 + 2 * pad)
    if half_x * shrink < half_y:
        half_x = half_y / shrink
    else:
        half_y = half_x * shrink
    half_y, half_x = min(half_y, 90.0), min(half_x, 180.0)
    cy = min(max(cy, -90 + half_y), 90 - half_y)
    cx = min(max(cx, -180 + half_x), 180 - half_x)
    return (cx - half_x, cy - half_y), (cx + half_x, cy + half_y), 1 / shrink


def static_map(records: list[dict], columns: int = 4, dpi: int = 110) -> tuple:
    """The map as a picture, for PDFs and print: one panel per dataset over Natural Earth's
    countries (lon/lat axes at their true aspect, limits from the data, :func:`panel_limits`),
    its footprints as boxes coloured by R@1 hit, miss or no labels. Returns ``(figure, png
    bytes)``; boxes narrower than 1 % of a panel are drawn at that size."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    layers = prediction_layers(records, min_size_deg=0.0)
    n = max(len(layers), 1)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows + 0.5), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (ds, fc) in zip(axes.flat, sorted(layers.items()), strict=False):
        rings = [f["geometry"]["coordinates"][0] for f in fc["features"]]
        west, east, aspect = panel_limits(
            min(r[0][0] for r in rings), min(r[0][1] for r in rings),
            max(r[2][0] for r in rings), max(r[2][1] for r in rings))
        span = max(east[0] - west[0], east[1] - west[1])
        least = span * 0.01
        basemap.draw(ax, (west[0], west[1], east[0], east[1]))
        for f, r in zip(fc["features"], rings, strict=True):
            bx0, by0, bx1, by1 = _box((r[0][0], r[0][1], r[2][0], r[2][1]), least)
            color = f["properties"]["style"]["color"]
            ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, facecolor=color,
                                   edgecolor=color, alpha=0.8, linewidth=0.6, zorder=2))
        ax.set_xlim(west[0], east[0])
        ax.set_ylim(west[1], east[1])
        ax.set_aspect(aspect, adjustable="box")
        hits = sum(f["properties"]["result"] == "hit" for f in fc["features"])
        scored = sum(f["properties"]["result"] != "no labels" for f in fc["features"])
        ax.set_title(f"{ds}: R@1 {hits}/{scored}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_facecolor("#dbe7f0")  # the sea, under Natural Earth's countries
    if not layers:
        axes.flat[0].text(0.5, 0.5, "no evaluated image has a footprint", ha="center",
                          va="center", transform=axes.flat[0].transAxes)
    fig.legend(handles=[Patch(color=HIT_COLOR, label="hit"), Patch(color=MISS_COLOR, label="miss"),
                        Patch(color=NA_COLOR, label="no labels")],
               loc="lower center", ncol=3, frameon=False, fontsize=8)
    fig.supxlabel("longitude (°)", fontsize=8, y=0.06)
    fig.supylabel("latitude (°)", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return fig, buf.getvalue()


def write_geotiff(path, image, bounds_lonlat, crs: str = "EPSG:4326", band_names=None) -> None:
    """Write a (C, H, W) product as a GeoTIFF covering ``bounds_lonlat`` (atomic)."""
    import rasterio
    from rasterio.transform import from_bounds

    c, h, w = image.shape
    with atomic_path(path) as tmp, rasterio.open(
            tmp, "w", driver="GTiff", height=h, width=w, count=c, dtype=image.dtype, crs=crs,
            transform=from_bounds(*bounds_lonlat, w, h)) as dst:
        dst.write(image)
        if band_names:
            dst.descriptions = tuple(band_names)


def raster_overlay_layer(path, name: str | None = None, max_px: int = 1024) -> dict:
    """Read a georeferenced raster (any CRS) into an overlay: an RGB array shown with the
    display conventions of ``plots.display_rgb`` and its bounds reprojected to WGS84."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        scale = max(src.width, src.height) / max_px
        shape = (src.count, max(1, int(src.height / max(scale, 1))),
                 max(1, int(src.width / max(scale, 1))))
        data = src.read(out_shape=shape, resampling=Resampling.nearest)
        bands = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        fill = src.nodata
    rgb = (display_rgb(data, bands) * 255).clip(0, 255).astype(np.uint8)
    empty = (data == fill).all(axis=0) if fill is not None else ~data.any(axis=0)
    if data.dtype.kind == "f":
        empty |= ~np.isfinite(data).all(axis=0)
    alpha = np.where(empty, 0, 255).astype(np.uint8)  # nodata is transparent on the map
    return {"name": name or Path(path).stem, "image": np.dstack([rgb, alpha]),
            "bounds_latlon": [[s, w], [n, e]]}


def sample_overlays(samples: list[dict], folder) -> list[dict]:
    """Write each decoded sample as a GeoTIFF (WGS84, bands named) under ``folder`` and read it
    back as a map overlay, as any georeferenced raster would be."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    overlays = []
    for s in samples:
        meta = s["json"]
        bounds = (meta.get("footprint") or {}).get("bounds")
        if not bounds:
            continue
        tif = folder / f"{s['__key__']}.tif"
        write_geotiff(tif, s["img"], bounds, band_names=meta["bands"])
        overlays.append(raster_overlay_layer(tif, name=f"image: {meta['dataset']}"))
    return overlays


def scene_files(cfg) -> list:
    """The GeoTIFF scenes a run's samples were cut from (``geotiff`` sources)."""
    files = []
    if cfg.source == "geotiff" and cfg.source_path and not cfg.sources:
        files.append(Path(_resolve_root(cfg.source_path)))
    for spec in (cfg.sources or {}).values():
        if spec.reader == "geotiff" and spec.root:
            files.append(Path(_resolve_root(spec.root)))
    return [f for f in files if f.is_file()]


def save_map(m, path, picture: bytes | None = None, title: str | None = None) -> None:
    """Write a map as a standalone HTML page (atomically). ``picture`` (PNG bytes, e.g. from
    :func:`static_map`) is what the page prints: on paper and in PDFs it replaces the map.
    ``title``: the page's title (default "map · <folder> · geofm"; folium's own page is titled
    after a jQuery UI demo)."""
    page = m.get_root().render()
    title = html.escape(title or f"map · {Path(path).parent.name} · geofm")
    page, found = re.subn(r"<title>.*?</title>", f"<title>{title}</title>", page, count=1,
                          flags=re.S)
    if not found:
        page = page.replace("<head>", f"<head><title>{title}</title>", 1)
    if picture is not None:
        b64 = base64.b64encode(picture).decode()
        page = page.replace("</body>", (
            '<style>.geofm-print{display:none}@media print{.folium-map{display:none!important}'
            '.geofm-print{display:block;width:100%}}</style>'
            f'<img class="geofm-print" alt="the map as a picture" '
            f'src="data:image/png;base64,{b64}">\n</body>'), 1)
    atomic_write_bytes(Path(path), page.encode())


def map_content(html_text: str, with_popups: bool = False) -> dict:
    """What a saved map (or a report page holding one) contains: GeoJSON layers with their
    feature counts and popups, image overlays, and the layer names of the layer control.

    Reads the HTML only (no browser), so tests can check maps offline.
    """
    text = html.unescape(html_text) if "&quot;" in html_text else html_text
    layers = []
    for m in re.finditer(r'geo_json_\w+_add\(\s*(\{"features".*?\})\);', text, re.S):
        try:
            fc = json.loads(m.group(1))
        except json.JSONDecodeError:
            continue
        if basemap.is_basemap(fc):  # the countries under the data, not a data layer
            continue
        every = fc.get("features", [])
        feats = [f for f in every if f.get("geometry", {}).get("type") != "Point"]
        layers.append({
            "dots": len(every) - len(feats),
            "datasets": sorted({f["properties"].get("dataset") for f in feats}),
            "features": len(feats),
            "popups": sum("popup" in f["properties"] for f in feats),
            "thumbnails": sum("data:image/png;base64" in f["properties"].get("popup", "")
                              for f in feats),
            "results": sorted({f["properties"].get("result") for f in feats}),
            **({"popup_html": [f["properties"].get("popup", "") for f in feats]}
               if with_popups else {}),
        })
    overlays = len(re.findall(r"L\.imageOverlay\(", text))
    control = [name for name in re.findall(r'"([^"]+)"\s*:\s*(?:geo_json|image_overlay)_\w+',
                                           text) if name != basemap.NAME]
    return {"layers": layers, "image_overlays": overlays, "layer_names": control,
            "basemap": basemap.NAME in text}


def prediction_summary(records: list[dict]):
    """Per dataset: the evaluated images, those with a footprint, and R@1 hits and misses (a
    caption corpus's images have no hit@1)."""
    import pandas as pd

    rows = {}
    for r in records:
        row = rows.setdefault(r["dataset"], {"images": 0, "with footprint": 0, "R@1 hits": 0,
                                             "R@1 misses": 0})
        row["images"] += 1
        row["with footprint"] += int(has_footprint(r.get("footprint")))
        row["R@1 hits"] += int(r.get("hit@1") is True)
        row["R@1 misses"] += int(r.get("hit@1") is False)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("dataset").sort_index()


def check_map(content: dict, shown: list[dict], overlays: list) -> None:
    """The saved map holds what was drawn: one layer per dataset with located images, every
    located image a feature with its popup, every overlay; otherwise a DataError naming the
    difference (nothing may be left off a map silently)."""
    from geofm_lib.errors import DataError

    located = [r for r in shown if has_footprint(r.get("footprint"))]
    layers = content["layers"]
    problems = []
    if len(layers) != len({r["dataset"] for r in located}):
        problems.append(f"{len(layers)} layers for {len({r['dataset'] for r in located})} "
                        f"datasets with footprints")
    if sum(layer["features"] for layer in layers) != len(located):
        problems.append(f"{sum(layer['features'] for layer in layers)} footprints for "
                        f"{len(located)} located images")
    if any(layer["popups"] != layer["features"] for layer in layers):
        problems.append("a footprint without its popup")
    if content["image_overlays"] != len(overlays):
        problems.append(f"{content['image_overlays']} image overlays of {len(overlays)}")
    if problems:
        raise DataError("the saved map is not what was drawn: " + "; ".join(problems))


def first_per_dataset(records: list[dict], n: int) -> list[dict]:
    """The first ``n`` records of each dataset, datasets in their order of appearance: what a
    map draws of each."""
    out, seen = [], {}
    for r in records:
        k = seen.get(r["dataset"], 0)
        if k < n:
            out.append(r)
        seen[r["dataset"]] = k + 1
    return out
