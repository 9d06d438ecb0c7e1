"""The published pages in a real browser with the network off (issue 19): Debian's chromium
driven by Playwright, every request that leaves the machine aborted. The index's figures load,
and a map page (standalone and inside the 05 report page) draws its footprints, overlays,
layer control and legend from what the page carries.

Runs after tests/run_all.sh made the reports. CI installs chromium (apt) and must run these;
elsewhere they are skipped when chromium or the reports are missing."""

import os
import shutil
from pathlib import Path

import pytest

from geofm_lib.report import maps

pytestmark = pytest.mark.reports

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser checks: apt-get install chromium")
        pytest.skip("no chromium here (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking"])
        yield b
        b.close()


def _offline_page(browser):
    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    remote = []

    def route(r):
        if r.request.url.startswith(("http://", "https://")):
            remote.append(r.request.url)
            return r.abort()
        return r.continue_()

    page.route("**/*", route)
    return page, remote


def _report(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"no {path.relative_to(ROOT)} yet (tests/run_all.sh makes it)")
    return path


def test_index_figures_all_load_offline(browser):
    index = _report(REPORTS / "index.html")
    page, _ = _offline_page(browser)
    page.goto(index.as_uri(), wait_until="load")
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])")
    assert images, "the index shows no figure"
    assert [src for src, ok in images if not ok] == []
    links = page.eval_on_selector_all("a[href$='.html']", "els => els.map(e => e.href)")
    for href in links:  # one click to every page: each link leads to a file that exists
        assert Path(href.removeprefix("file://")).is_file(), href


def _check_map(frame, content):
    frame.wait_for_selector(".leaflet-container", timeout=20_000)
    footprints = sum(layer["features"] for layer in content["layers"])
    dots = sum(layer.get("dots", 0) for layer in content["layers"])  # 05: a dot per footprint
    drawn = frame.eval_on_selector_all("path.leaflet-interactive", "els => els.length")
    assert drawn == footprints + dots, (drawn, footprints, dots)
    overlays = frame.eval_on_selector_all(
        "img.leaflet-image-layer", "els => els.map(e => e.complete && e.naturalWidth > 0)")
    assert len(overlays) == content["image_overlays"] and all(overlays)
    names = frame.inner_text(".leaflet-control-layers")
    assert all(layer in names for layer in content["layer_names"][:3]), names
    assert "hit" in frame.inner_text("#maplegend")  # leafmap's legend, drawn by its script


def test_map_page_draws_everything_offline(browser):
    standalone = _report(REPORTS / "ci-notebooks" / "map.html")
    content = maps.map_content(standalone.read_text())
    page, remote = _offline_page(browser)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(standalone.as_uri(), wait_until="load")
    _check_map(page, content)
    assert errors == []
    assert all("tile.openstreetmap.org" in u for u in remote), remote  # only base tiles


def test_report_page_map_and_picture_work_offline(browser):
    report = _report(REPORTS / "ci-notebooks" / "05_map_viz.html")
    content = maps.map_content(report.read_text())
    page, _ = _offline_page(browser)
    page.goto(report.as_uri(), wait_until="load")
    frame = next(f for f in page.frames if f != page.main_frame)  # folium's srcdoc iframe
    _check_map(frame, content)
    pictures = page.eval_on_selector_all(
        "img[src^='data:image/png']", "els => els.map(e => e.complete && e.naturalWidth > 0)")
    assert pictures and all(pictures)  # the static map and the other figures


def test_every_report_page_requests_nothing_outside_itself(browser):
    """Issue 38, item 2: no script, style or font from outside the page. Each notebook page,
    the map and the index are loaded with the network off; every request that is not the page
    itself or a data: URL is counted (the index may also show the thumbnails published beside
    it under reports/). Base-map tiles of the web map are the one exception left (until the
    vendored basemap of item 4)."""
    folder = _report(REPORTS / "ci-notebooks" / "run.json").parent
    counts = {}
    for path in sorted(folder.glob("*.html")) + [REPORTS / "index.html"]:
        page, remote = _offline_page(browser)
        requests = []
        page.on("request", lambda r, out=requests: out.append(r.url))
        page.goto(path.as_uri(), wait_until="load")
        page.wait_for_timeout(300)
        own = (REPORTS.as_uri() + "/") if path.name == "index.html" else path.as_uri()
        outside = [u for u in requests if not u.startswith((own, "data:", "about:"))
                   and "tile.openstreetmap.org" not in u]
        counts[path.name] = len(outside)
        assert outside == [], (path.name, outside[:5])
        page.close()
    print("requests outside the page, per page:", counts)


def test_query_box_redraws_the_heatmap_in_jupyterlab(browser, tmp_path):
    """Issue 41 item 2: notebook 09 opened in JupyterLab (a real server, this browser), run
    with the ci run's parameters; a query typed into the box and entered redraws its heatmap
    from the cached tile embeddings, and the box says how long it took."""
    import socket
    import subprocess
    import sys
    import time

    import papermill

    _report(REPORTS / "ci-notebooks" / "09_scene_maps.html")  # its run's checkpoint and cache
    papermill.execute_notebook(str(ROOT / "notebooks" / "09_scene_maps.ipynb"),
                               str(tmp_path / "scene.ipynb"), prepare_only=True,
                               parameters={"preset": "ci", "run_name": "ci-notebooks"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={tmp_path}",
         "--ServerApp.disable_check_xsrf=True", "--allow-root"],
        env=dict(os.environ, GEOFM_ROOT=str(ROOT), HF_HUB_OFFLINE="1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.3)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(f"http://127.0.0.1:{port}/lab/tree/scene.ipynb")
        page.wait_for_selector(".jp-Notebook", timeout=120000)
        page.get_by_text("| Idle").first.wait_for(timeout=120000)  # the kernel is up
        page.locator(".jp-Notebook").first.click()  # the notebook is the current widget
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        box = page.locator("input[placeholder='a text query, e.g. flooded road']")
        try:
            box.wait_for(timeout=300000)
        except Exception:
            page.screenshot(path=str(tmp_path / "no-box.png"))
            raise
        status = page.locator(".widget-html-content")
        status.filter(has_text="heatmap in").first.wait_for(timeout=60000)
        box.fill("flooded road")
        box.press("Enter")
        start = time.perf_counter()
        done = status.filter(has_text="flooded road")
        done.first.wait_for(timeout=60000)
        seconds = time.perf_counter() - start
        text = done.first.inner_text()
        print(f"query box: {text!r}; {seconds:.2f} s from Enter to the new status in the browser")
        assert "heatmap in" in text and seconds < 30
        frame = page.frame_locator(".widget-output iframe").last
        frame.locator("text=query: flooded road").first.wait_for(timeout=30000)
        assert frame.locator("img.leaflet-image-layer").count() >= 3  # scene, class map, heat
        page.screenshot(path=str(tmp_path / "query-box.png"))
    finally:
        server.terminate()
        server.wait(timeout=30)
