"""Maps that work with the network off: the scripts and stylesheets folium and leafmap load
from CDNs are put into the page itself.

folium renders a map as a page whose ``<head>`` points at Leaflet, jQuery, jQuery UI, Bootstrap
and Leaflet.awesome-markers on CDNs. Offline (an air-gapped cluster, an archived report, a
train) such a page is an empty box. :class:`OfflineFigure` is a branca ``Figure`` whose rendered
page carries those files inline, at the versions folium asks for (vendored under
``assets/map/`` with their licences, see its README), with the images their stylesheets use as
data URLs. The notebook view (folium's iframe) renders through the same figure, so a map in
JupyterLab works offline too. Only the base-map tiles still come from the web.

A CDN link this module does not know is left as it is and reported by :func:`remote_assets`,
so a folium or leafmap upgrade that adds one fails the offline test instead of silently
needing the network.
"""

from __future__ import annotations

import base64
import functools
import re
from pathlib import Path

from branca.element import Figure

ASSETS = Path(__file__).with_name("assets") / "map"

# CDN address folium/leafmap write -> the vendored file of the same version
SCRIPTS = {
    "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js": "leaflet-1.9.3.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1.min.js",
    "https://code.jquery.com/jquery-1.12.4.js": "jquery-1.12.4.min.js",
    "https://code.jquery.com/ui/1.12.1/jquery-ui.js": "jquery-ui-1.12.1.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/js/bootstrap.bundle.min.js":
        "bootstrap-5.2.2.bundle.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/"
    "leaflet.awesome-markers.js": "leaflet.awesome-markers-2.0.2.min.js",
}
STYLES = {
    "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css": "leaflet-1.9.3.css",
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/css/bootstrap.min.css":
        "bootstrap-5.2.2.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/"
    "leaflet.awesome-markers.css": "leaflet.awesome-markers-2.0.2.css",
}
# icon fonts and icon rotation: they draw icon markers only, which geofm's maps do not use
DROPPED = (
    "https://netdna.bootstrapcdn.com/bootstrap/3.0.0/css/bootstrap-glyphicons.css",
    "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@6.2.0/css/all.min.css",
    "https://cdn.jsdelivr.net/gh/python-visualization/folium/folium/templates/"
    "leaflet.awesome.rotate.min.css",
    # leafmap's legend is dragged with jQuery UI's draggable, which needs none of the theme's
    # widget styles (written protocol-relative, so that a page opened from disk asked
    # file://code.jquery.com/... for it)
    "https://code.jquery.com/ui/1.12.1/themes/base/jquery-ui.css",
)

_SCRIPT = re.compile(r'<script src="((?:https?:)?//[^"]+)"></script>')
_STYLE = re.compile(r'<link rel="stylesheet" href="((?:https?:)?//[^"]+)"\s*/?>')
_CSS_URL = re.compile(r"""url\(['"]?(images/[\w@.-]+\.png)['"]?\)""")


@functools.cache
def _script(name: str) -> str:
    text = (ASSETS / name).read_text(encoding="utf-8")
    return "<script>" + text.replace("</script", "<\\/script") + "</script>"


@functools.cache
def _style(name: str) -> str:
    def data_url(m: re.Match) -> str:
        png = (ASSETS / m.group(1)).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(png).decode()})"

    text = _CSS_URL.sub(data_url, (ASSETS / name).read_text(encoding="utf-8"))
    return "<style>" + text.replace("</style", "<\\/style") + "</style>"


def _absolute(url: str) -> str:
    """A protocol-relative address (``//host/...``) as the https one it stands for."""
    return "https:" + url if url.startswith("//") else url


def inline_assets(page: str) -> str:
    """A rendered folium page with every known CDN script and stylesheet put inline and the
    icon-only stylesheets left out."""
    def script(m: re.Match) -> str:
        name = SCRIPTS.get(_absolute(m.group(1)))
        return _script(name) if name else m.group(0)

    def style(m: re.Match) -> str:
        url = _absolute(m.group(1))
        if url in DROPPED:
            return ""
        name = STYLES.get(url)
        return _style(name) if name else m.group(0)

    return _STYLE.sub(style, _SCRIPT.sub(script, page))


SANDBOX = 'sandbox="allow-scripts"'
"""The map iframe's sandbox: scripts (Leaflet) only; no same origin, forms, popups or top
navigation."""
SANDBOX_IFRAME = re.compile(r"<iframe ")


def remote_assets(page: str) -> list[str]:
    """The scripts and stylesheets a page still loads from the network (tiles aside)."""
    return _SCRIPT.findall(page) + _STYLE.findall(page)


class OfflineFigure(Figure):
    """A branca Figure whose page (``render``, the notebook iframe, ``save``) carries Leaflet and
    the other map scripts inline."""

    def render(self, **kwargs) -> str:
        return inline_assets(super().render(**kwargs))

    def _repr_html_(self, **kwargs) -> str:
        """The notebook view: branca's iframe, sandboxed. Leaflet's scripts run inside it, but
        as a page of its own origin it cannot reach the report page around it (a label that
        slipped through as markup stays inside the map), and it opens no windows."""
        return SANDBOX_IFRAME.sub(f"<iframe {SANDBOX} ", super()._repr_html_(**kwargs), count=1)


def offline(m):
    """Put a folium/leafmap map into an :class:`OfflineFigure` (returns the map)."""
    OfflineFigure().add_child(m)
    return m
