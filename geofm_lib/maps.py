"""Maps with leafmap: where the samples are, and (later) what the model predicted there.

Maps use leafmap's folium backend, so an executed notebook and its HTML report carry the map as
plain HTML (an iframe); base-map tiles load from the web when the page is viewed.
"""

from __future__ import annotations

import contextlib
import html
import io

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
            "properties": {"dataset": meta["dataset"], "key": s["__key__"],
                           "labels": ", ".join(meta["labels"]) or "-",
                           "date": meta.get("date"), "split": meta.get("split")},
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
    m = leafmap.Map(center=[30, 0], zoom=2, draw_control=False, measure_control=False,
                    fullscreen_control=False)
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
            m.add_geojson({**fc, "crs": "EPSG:4326"}, layer_name=ds,
                          style={"color": color, "weight": 2, "fillOpacity": 0.35,
                                 "fillColor": color}, info_mode="on_click")
        legend[html.escape(ds)] = color
    if all_bounds:
        m.fit_bounds([[min(b[1] for b in all_bounds), min(b[0] for b in all_bounds)],
                      [max(b[3] for b in all_bounds), max(b[2] for b in all_bounds)]])
    if legend:
        m.add_legend(title="dataset", legend_dict=legend)
    return m
