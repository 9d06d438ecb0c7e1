"""The scene maps of notebook 09 on a leafmap map and as pictures: the scene, its truth, the
zero-shot class map and query heatmaps as image layers over the offline basemap, with legends;
in JupyterLab a query box redraws a heatmap from the cached tile embeddings.

Products are drawn at their cells (nearest neighbour), laid over the map at their bounds in
WGS84 (an image overlay is not reprojected: over a scene of a few kilometres the UTM grid and the
map's differ by well under a cell).
"""

from __future__ import annotations

import html
import textwrap
import time
from pathlib import Path

import numpy as np

from geofm_lib.encoders import scene as tiled
from geofm_lib.errors import EncoderError
from geofm_lib.report import basemap
from geofm_lib.report.maps import raster_overlay_layer
from geofm_lib.report.offline import offline

HEAT_CMAP = "magma"
HEAT_STEPS = 5  # swatches of the heatmap legend


def label(encoder: str) -> str:
    """An encoder's name as a short title: a file path becomes its last folder and file name
    (``ssl:…/0c7b7caa5acf/encoder.pt``)."""
    kind, sep, rest = encoder.partition(":")
    if sep and "/" in rest:
        head, _, path = rest.rpartition(":") if ":" in rest else ("", "", rest)
        parts = Path(path).parts
        short = "/".join(parts[-2:])
        return f"{kind}:{head + ':' if head else ''}{'…/' if len(parts) > 2 else ''}{short}"
    return encoder


def hex_colour(rgb) -> str:
    r, g, b = (int(v) for v in rgb[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def class_rgba(idx: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 of a class map (-1 or 255: transparent), in the COG's colour table."""
    pal = np.array([(*c, 255) for c in tiled.PALETTE], np.uint8)
    out = pal[np.where(idx >= 0, idx, 0) % len(pal)]
    out[(idx < 0) | (idx == tiled.CLASS_NODATA)] = 0
    return out


def heat_range(heat: np.ndarray) -> tuple[float, float]:
    """The 2nd and 98th percentiles of a heatmap's cells (its colour range)."""
    ok = heat[np.isfinite(heat)]
    if not ok.size:
        return 0.0, 1.0
    lo, hi = np.percentile(ok, [2, 98])
    return float(lo), float(max(hi, lo + 1e-6))


def heat_rgba(heat: np.ndarray, lo: float, hi: float, alpha: int = 220) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps[HEAT_CMAP]
    x = np.clip((np.nan_to_num(heat, nan=lo) - lo) / (hi - lo), 0, 1)
    out = (cmap(x) * 255).astype(np.uint8)
    out[..., 3] = np.where(np.isfinite(heat), alpha, 0)
    return out


def heat_legend(lo: float, hi: float) -> dict[str, str]:
    import matplotlib

    cmap = matplotlib.colormaps[HEAT_CMAP]
    return {f"{v:.3f}": hex_colour(np.array(cmap(i / (HEAT_STEPS - 1))) * 255)
            for i, v in enumerate(np.linspace(lo, hi, HEAT_STEPS))}


def overlay(image: np.ndarray, tiling: tiled.Tiling, name: str, grid: str = "cells",
            show: bool = True) -> dict:
    """An image layer (``raster_overlay_layer``'s form) on the product grid of ``tiling``;
    ``show``: drawn when the map opens (else switched on in the layer list)."""
    from rasterio.warp import transform_bounds

    h, w = image.shape[:2]
    t = tiling.out_transform() if grid == "cells" else tiling.tile_grid_transform()
    x0, y0 = t @ (0, 0)
    x1, y1 = t @ (w, h)
    west, south, east, north = transform_bounds(tiling.crs, "EPSG:4326", min(x0, x1),
                                                min(y0, y1), max(x0, x1), max(y0, y1))
    return {"name": name, "image": image, "bounds_latlon": [[south, west], [north, east]],
            "show": show}


def scene_overlay(path, name: str = "scene") -> dict:
    return raster_overlay_layer(path, name=name)


def scene_map(overlays: list[dict], legends: list[tuple[str, dict, str]] = ()):
    """A leafmap map of image layers (the last drawn on top) over the offline basemap, with a
    layer switcher and legends (title, {label: colour}, position)."""
    import folium
    import leafmap.foliumap as leafmap

    m = offline(leafmap.Map(center=[0, 0], zoom=2, draw_control=False, measure_control=False,
                            fullscreen_control=False))
    basemap.add_to(m)
    # the maps above the basemap's countries (an SVG in the overlay pane, filled: over the
    # overlay pane's images it hid them)
    folium.map.CustomPane("scene-maps", z_index=450, pointer_events=False).add_to(m)
    bounds = []
    for ov in overlays:
        folium.raster_layers.ImageOverlay(
            image=ov["image"], bounds=ov["bounds_latlon"], name=html.escape(ov["name"]),
            opacity=1.0, interactive=False, cross_origin=False, pane="scene-maps",
            show=ov.get("show", True)).add_to(m)
        bounds.append(ov["bounds_latlon"])
    if bounds:
        m.fit_bounds([[min(b[0][0] for b in bounds), min(b[0][1] for b in bounds)],
                      [max(b[1][0] for b in bounds), max(b[1][1] for b in bounds)]])
    for title, entries, position in legends:
        m.add_legend(title=html.escape(title),
                     legend_dict={html.escape(k): v for k, v in entries.items()},
                     position=position, draggable=False)
    folium.LayerControl(collapsed=False, position="topleft").add_to(m)
    return m


def class_legend(classes) -> dict[str, str]:
    return {c: hex_colour(tiled.PALETTE[i % len(tiled.PALETTE)]) for i, c in enumerate(classes)}


def panels(scene_rgb: np.ndarray, maps: list[tuple[str, np.ndarray, str]], classes,
           dpi: int = 100, heat_label: str = "cosine similarity"):
    """One picture: the scene and each map side by side (title, array, 'class' or 'heat';
    ``heat_label``: what the heatmaps' values are). Returns (figure, PNG bytes)."""
    import io

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = 1 + len(maps)
    fig, axes = plt.subplots(1, n, figsize=(3.1 * n, 3.6), dpi=dpi, squeeze=False)
    axes = axes[0]
    axes[0].imshow(scene_rgb)
    axes[0].set_title("scene", fontsize=9)
    for ax, (title, arr, kind) in zip(axes[1:], maps, strict=True):
        if kind == "class":
            ax.imshow(class_rgba(arr), interpolation="nearest")
        else:
            lo, hi = heat_range(arr)
            im = ax.imshow(np.ma.masked_invalid(arr), cmap=HEAT_CMAP, vmin=lo, vmax=hi,
                           interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=heat_label)
        ax.set_title(textwrap.fill(title, 34), fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=np.array(tiled.PALETTE[i % len(tiled.PALETTE)]) / 255, label=c)
               for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 6), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return fig, buf.getvalue()


def query_box(cfg, se: tiled.SceneEmbeddings, base: list[dict], legends: list, device="cpu",
              value: str = "", head: tiled.ClassHead | None = None):
    """A text box and a map (ipywidgets): a query typed and entered redraws its heatmap from
    the cached tile embeddings over ``base``'s layers; the time it took is printed beside. An
    image-only encoder's queries are its probe ``head``'s classes (the box says so)."""
    import ipywidgets as widgets

    hint = "a text query, e.g. flooded road" if tiled.has_text_tower(se.encoder) else \
        "a class: " + ", ".join(head.classes if head else ())
    text = widgets.Text(value=value, placeholder=hint,
                        description="query", continuous_update=False,
                        layout=widgets.Layout(width="420px"))
    button = widgets.Button(description="draw heatmap", button_style="primary")
    status = widgets.HTML()
    out = widgets.Output(layout=widgets.Layout(height="520px"))

    def draw(_=None):
        query = text.value.strip()
        if not query:
            status.value = "type a query, then press Enter"
            return
        start = time.perf_counter()
        try:
            scores, what = tiled.query_scores(cfg, se, query, head, device)
        except EncoderError as err:  # a query an image-only encoder cannot take
            status.value = html.escape(str(err))
            return
        heat = se.blend(scores)[..., 0]
        computed = time.perf_counter() - start
        lo, hi = heat_range(heat)
        m = scene_map(base + [overlay(heat_rgba(heat, lo, hi), se.tiling, f"query: {query}")],
                      [*legends, (f"'{query}'", heat_legend(lo, hi), "topright")])
        m.get_root().height = "500px"
        out.outputs = ()  # not `with out: display(...)`: executed headless (papermill,
        out.append_display_data(m)  # nbval) that capture waited for a frontend until timeout
        status.value = (f"<b>{html.escape(query)}</b>: heatmap in {computed:.2f} s, drawn in "
                        f"{time.perf_counter() - start:.2f} s "
                        f"({html.escape(what)}: {lo:.3f} to {hi:.3f})")

    text.observe(lambda change: draw(), names="value")
    button.on_click(draw)
    box = widgets.VBox([widgets.HBox([text, button]), status, out])
    if value:
        draw()
    return box
