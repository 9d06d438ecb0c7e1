"""An offline basemap: Natural Earth's 1:110m countries (public domain, vendored under
``assets/basemap/``, see its README), drawn under the footprints of every map.

The web maps load their tiles from OpenStreetMap; offline (an air-gapped cluster, an archived
report) those tiles never arrive and footprints sit on plain grey. :func:`add_to` puts the
countries into the map itself as a non-interactive GeoJSON layer, and :func:`draw` puts them
under the static panels.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

ASSET = Path(__file__).with_name("assets") / "basemap" / "ne_110m_admin_0_countries.geojson"
NAME = "countries (Natural Earth 1:110m)"
STYLE = {"color": "#9a9a9a", "weight": 0.6, "fillColor": "#ecebe4", "fillOpacity": 1.0}


@functools.cache
def countries() -> dict:
    """The countries as a GeoJSON FeatureCollection (lon/lat, WGS84)."""
    return json.loads(ASSET.read_text(encoding="utf-8"))


def is_basemap(feature_collection: dict) -> bool:
    """True for the basemap's FeatureCollection (its features are marked ``basemap``)."""
    feats = feature_collection.get("features") or []
    return bool(feats) and bool(feats[0].get("properties", {}).get("basemap"))


def add_to(m):
    """Add the countries to a folium / leafmap map, under what is added after it; not
    clickable, listed in the layer control so it can be switched off."""
    import folium

    folium.GeoJson(countries(), name=NAME, style_function=lambda _: STYLE, interactive=False,
                   control=True, smooth_factor=1.0).add_to(m)
    return m


def draw(ax, bounds: tuple[float, float, float, float] | None = None) -> None:
    """Draw the countries on a matplotlib axis in lon/lat (under the data: zorder 0); with
    ``bounds`` (west, south, east, north) only those that reach into them."""
    from matplotlib.collections import PolyCollection

    rings = []
    for f in countries()["features"]:
        g = f["geometry"]
        polygons = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        for poly in polygons:
            outer = poly[0]
            if bounds is not None:
                xs, ys = [p[0] for p in outer], [p[1] for p in outer]
                w, s, e, n = bounds
                if max(xs) < w or min(xs) > e or max(ys) < s or min(ys) > n:
                    continue
            rings.append(outer)
    ax.add_collection(PolyCollection(rings, facecolor=STYLE["fillColor"],
                                     edgecolor=STYLE["color"], linewidth=0.5, zorder=0))
