"""Hostile and malformed input (issue 36): dataset keys that are not names, datasets named
twice, markup in labels and keys reaching the pages, a notebook cell that never returns."""

import json
import time
from pathlib import Path

import nbformat
import pytest
import record_fixtures

from geofm_lib.config import load_config, project_root
from geofm_lib.errors import ConfigError, NotebookFailed
from geofm_lib.report import maps, reports

HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'


@pytest.mark.parametrize("key", [HOSTILE, ".", "a/b", "../x", "with space", "9lives", "é"])
def test_a_dataset_key_that_is_not_a_plain_name_is_refused(key):
    spec = {"reader": "geotiff", "root": "scene.tif"}
    with pytest.raises(ConfigError, match="is not a plain name.*letters, digits and '_'"):
        load_config("ci", group="custom", sources={key: spec})
    with pytest.raises(ConfigError, match="is not a plain name"):
        load_config("ci", group="custom", datasets=[key], sources={"ok_key": spec})


def test_a_dataset_named_twice_is_refused():
    """`datasets=[xview, xview, mafat]` gave 36 samples instead of 24 with exit status 0."""
    with pytest.raises(ConfigError, match="datasets names xview more than once"):
        load_config("ci", group="C", datasets=["xview", "xview", "mafat"])


def test_placeholders_are_text_in_html_and_plain_elsewhere(tmp_path):
    cfg = load_config("ci", group="custom", work_dir=str(tmp_path / "w"),
                      sources={"scene": {"reader": "geotiff", "root": str(tmp_path / "s.tif")}})
    root = project_root()
    text = f"read {tmp_path / 's.tif'} into {tmp_path / 'w'}/shards"
    assert reports.scrub(text, root, cfg) == "read <scene root> into <work_dir>/shards"
    assert reports.scrub(text, root, cfg, markup=True) == \
        "read &lt;scene root&gt; into &lt;work_dir&gt;/shards"
    nb = {"cells": [{"outputs": [{"data": {"text/html": [text], "text/plain": [text]}}]}]}
    out = json.loads(reports.scrub_notebook(json.dumps(nb), root, cfg))
    data = out["cells"][0]["outputs"][0]["data"]
    assert data["text/html"] == ["read &lt;scene root&gt; into &lt;work_dir&gt;/shards"]
    assert data["text/plain"] == ["read <scene root> into <work_dir>/shards"]


def _hostile_records():
    return [{"dataset": "xview", "key": f"xview-{HOSTILE}", "caption": HOSTILE,
             "labels": [HOSTILE, "Building"], "predicted": [HOSTILE], "top": [
                 {"label": HOSTILE, "score": 0.9}], "hit@1": True, "date": "2020-01-01",
             "footprint": {"bounds": [10.0, 45.0, 10.1, 45.1]}}]


def test_map_tooltips_and_layer_names_carry_text_not_markup():
    """folium's GeoJsonTooltip and the layer control write their strings with innerHTML."""
    layers = maps.prediction_layers(_hostile_records())
    props = layers["xview"]["features"][0]["properties"]
    for field in ("labels", "predicted", "key"):
        assert "<img" not in props[field] and "&lt;img" in props[field]
    assert "<img" not in props["popup"]
    m = maps.predictions_map(_hostile_records())
    page = m.get_root().render()
    assert HOSTILE not in page and "<img src=x" not in page


def test_a_map_in_a_notebook_is_a_sandboxed_iframe():
    m = maps.predictions_map(_hostile_records())
    shown = m._repr_html_()
    assert shown.count("<iframe ") == 1 and '<iframe sandbox="allow-scripts" ' in shown
    assert "allow-same-origin" not in shown


def test_a_stuck_cell_ends_the_run_naming_the_cell(tmp_path):
    """`geofm report` could wait forever on a cell that never returned (issue 36, item 4)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("import time\n\ntime.sleep(60)  # stuck")]
    book = tmp_path / "stuck.ipynb"
    nbformat.write(nb, book)
    cfg = load_config("ci").model_copy(update={"cell_timeout_s": 2})
    t0 = time.monotonic()
    with pytest.raises(NotebookFailed, match=r"stuck.ipynb: a cell ran longer than "
                                             r"cell_timeout_s=2 s.*code cell 2: 'import time'"):
        reports._execute(book, tmp_path / "out.ipynb", {}, project_root(), cfg)
    assert time.monotonic() - t0 < 45
    assert (tmp_path / "out.html").is_file()  # the page shows how far it got
    with pytest.raises(ConfigError, match="cell_timeout_s"):
        load_config("ci", cell_timeout_s=0)


def test_the_sample_browser_makes_no_widget_in_a_batch_run(monkeypatch):
    import numpy as np

    from geofm_lib.report import plots

    monkeypatch.setenv("GEOFM_PROGRESS", "text")
    sample = {"img": np.zeros((3, 8, 8), np.uint8), "txt": "t", "__key__": "k",
              "json": {"bands": ["R", "G", "B"], "labels": [], "sensor": "s", "gsd_m": 1.0,
                       "split": "train"}}
    shown = plots.sample_browser({"a": [sample, sample]})
    assert "interactive when this notebook runs in JupyterLab" in shown.data
    assert "2 samples of 1 datasets" in shown.data


def test_hostile_names_stay_text_in_chromium(tmp_path):
    """A map page with markup in its labels: opened and hovered in Chromium, nothing runs."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium here (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = tmp_path / "map.html"
    maps.save_map(maps.predictions_map(_hostile_records()), page_file)
    wrapper = tmp_path / "report.html"  # the report page embeds the notebook's iframe
    wrapper.write_text(f"<html><head><title>ok</title></head><body>"
                       f"{maps.predictions_map(_hostile_records())._repr_html_()}</body></html>")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox",
                                                                    "--disable-gpu"])
        for path in (page_file, wrapper):
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(Path(path).as_uri())
            page.wait_for_timeout(800)
            frame = page.frames[-1]
            shapes = frame.locator("path.leaflet-interactive")
            assert shapes.count() == 2  # the footprint and its dot (visible at world zoom)
            box = shapes.first.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_timeout(400)
            tip = frame.locator(".leaflet-tooltip")
            assert tip.count() == 1 and HOSTILE.split()[0] in tip.inner_text()  # shown as text
            assert page.title() != "pwned" and all(f.title() != "pwned" for f in page.frames)
            assert frame.locator("img[src='x']").count() == 0
        browser.close()


@pytest.mark.parametrize("name, value", [("seg_lr", 1e30), ("seg_lr", float("nan")),
                                         ("seg_epochs", 0), ("n_boot", 2.5),
                                         ("boundary_weight", -1.0), ("seg_lr", "fast")])
def test_notebook_local_numbers_have_ranges(name, value):
    from geofm_lib.config import from_notebook

    with pytest.raises(ConfigError, match=rf"parameter {name}=.* is out of range"):
        from_notebook({"preset": "ci", name: value}, local=(name,))
    from_notebook({"preset": "ci", "seg_lr": 1e-3, "n_boot": 300},
                  local=("seg_lr", "n_boot"))  # in range: fine


def test_a_stage_never_records_a_non_finite_result(tmp_path):
    """08 published density RMSE and R² of NaN with exit status 0 (issue 36, item 9)."""
    import numpy as np

    from geofm_lib.errors import DataError
    from geofm_lib.report.runinfo import save_stage

    cfg = load_config("ci", work_dir=str(tmp_path), run_name="nan-check")
    rows = [{"encoder": "random init", "miou": 34.7}, {"encoder": "moco", "r2": float("nan")}]
    # a notebook of one's own (plain mapping) and a workspace stage (typed record) alike
    with pytest.raises(DataError, match=r"09_mine: 1 result value\(s\) are not finite, "
                                        r"e.g. metrics.rows\[1\].r2 = nan"):
        save_stage(cfg, "09_mine", {"rows": rows})
    with pytest.raises(DataError, match=r"metrics.curve\[2\] = inf"):
        save_stage(cfg, "09_mine", {"curve": np.array([1.0, 2.0, np.inf])})
    density = {"encoder": "moco", "labelled": 8, "rmse": 3.0, "mae": 2.0, "r2": float("nan"),
               "ci": {}}
    with pytest.raises(DataError, match=r"08_segmentation: .*metrics.density\[0\].r2 = nan"):
        save_stage(cfg, record_fixtures.segmentation(density=[density]))
    assert not list(tmp_path.rglob("*.json"))
    assert save_stage(cfg, "09_mine", {"rows": rows[:1], "r2": None}).is_file()
    # a score not defined on the images (no boundary anywhere) is null, only where declared so
    row = record_fixtures.segmentation_row("random init", 40.0, [38.0, 42.0],
                                           boundary_f1=float("nan"),
                                           more_ci={"boundary_f1": [float("nan"), 1.0]})
    path = save_stage(cfg, record_fixtures.segmentation(table=[row]),
                      undefined=("boundary_f1", "ci"))
    written = json.loads(path.read_text())["metrics"]["table"][0]
    assert written["boundary_f1"] is None and written["ci"]["boundary_f1"] == [None, 1.0]
    with pytest.raises(DataError, match=r"metrics.rows\[1\].r2 = nan"):
        save_stage(cfg, "09_mine", {"rows": rows}, undefined=("boundary_f1", "ci"))


def test_a_yaml_alias_bomb_is_refused_at_once_wherever_it_sits(tmp_path):
    """Issue 36, item 12: aliases in sources.*.options hung for over 120 s and 3.9 GB."""
    from geofm_lib.io import read_yaml

    lines = ["group: custom", "sources:", "  scene:", "    reader: geotiff", "    root: a.tif",
             "    options:", "      a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"      a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"bomb.yaml: the document expands to 490,329,076 "
                                          r"values through its aliases"):
        load_config("ci", str(bomb))
    assert time.monotonic() - t0 < 5
    assert read_yaml(_write(tmp_path / "ok.yaml", "a: &x {b: 1}\nc: *x\n")) == {
        "a": {"b": 1}, "c": {"b": 1}}  # a few aliases are fine
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (5 * 2**20) + b"\n")
    with pytest.raises(ConfigError, match=r"big.yaml is 5.0 MiB, more than the 4 MiB"):
        read_yaml(big)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path):
    from geofm_lib.errors import BusyError
    from geofm_lib.io import folder_lock, lock_path

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    folder = tmp_path / "shards" / "abc"
    folder.parent.mkdir()
    lock_path(folder).symlink_to(target)
    with pytest.raises(BusyError, match=r"lock file .*\.abc\.lock is a symbolic link"):
        with folder_lock(folder, "the build abc"):
            pass
    assert target.read_text() == "keep me"


def test_machine_faults_are_one_line_with_the_fix(monkeypatch, capsys):
    """Disk full, read-only folders: a line naming the fault and the fix, not a traceback."""
    import errno

    from geofm_lib import cli
    from geofm_lib.errors import environment_hint

    assert "the disk is full" in environment_hint("[Errno 28] No space left on device")
    assert "the disk is full" in environment_hint("basic_ios::clear: iostream error")
    assert "read-only" in environment_hint("[Errno 30] Read-only file system: 'work'")
    assert environment_hint("KeyError: 'x'") is None

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "work/shards/x/train-0.tar")

    import dataclasses

    monkeypatch.setitem(cli.COMMANDS, "params",
                        dataclasses.replace(cli.COMMANDS["params"], run=full))
    assert cli.main(["params"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the disk is full (work/shards/x/train-0.tar)" in err


def test_a_damaged_report_record_is_named_with_the_fix(tmp_path):
    from geofm_lib.errors import GeofmError

    run = tmp_path / "reports" / "my-run"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"01_data_prep": {"samples": 9')
    with pytest.raises(GeofmError, match=r"reports/my-run/metrics.json is damaged.*remove "
                                         r"reports/my-run/"):
        reports._report_record(run / "metrics.json")
    (run / "run.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(GeofmError, match="run.json is a symbolic link"):
        reports._report_record(run / "run.json")
    # valid JSON with a stage entry that is no record (the fault round's re-run: a traceback
    # in the index, and the entry written back into the new metrics.json)
    (run / "metrics.json").write_text('{"01_data_prep": 5}')
    with pytest.raises(GeofmError, match=r"metrics.json is damaged: its entry '01_data_prep' "
                                         r"is a int, not a notebook's record"):
        reports._report_record(run / "metrics.json")
    from geofm_lib.report.index import build_index

    (run / "run.json").unlink()
    (run / "run.json").write_text('{"run": "my-run", "status": "ok"}')
    assert "my-run" in build_index(tmp_path / "reports").read_text()  # shown, the entry not


def test_an_hf_hub_model_offline_is_one_line_with_the_fix(monkeypatch):
    """The fault round's re-run: following the advice for pretrained=hf-hub:..., model=hf-hub:...
    offline ended in open_clip's raw RuntimeError."""
    from geofm_lib.errors import PretrainedUnavailable
    from geofm_lib.models.factory import create_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailable, match=r"model 'hf-hub:laion/nope' is read from the "
                                                    r"Hugging Face Hub.*HF_HUB_OFFLINE=1 is set"):
        create_model("hf-hub:laion/nope", 64, None)


def test_unfinished_writes_of_dead_processes_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from geofm_lib.io import remove_stale_temporaries, temporary_name

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"step-00000040.pt.{dead}-0badcafe.tmp"
    stale.write_bytes(b"x" * 1000)
    mine = temporary_name(tmp_path / "step-00000080.pt")  # this process is alive
    mine.write_bytes(b"y")
    other = tmp_path / "notes.tmp"
    other.write_text("not ours")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and mine.exists() and other.exists()
    assert str(os.getpid()) in mine.name


def test_build_workers_end_when_the_build_is_killed(tmp_path):
    """A killed parallel build left its workers (and through them the forkserver and the
    resource tracker) alive; each worker now watches the build's pid."""
    import os
    import subprocess
    import sys

    code = ("import os, sys, time\n"
            "from geofm_lib.data import parallel\n"
            "pid = int(sys.argv[1])\n"
            "parallel._die_with(pid, every_s=0.1)\n"
            "time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    worker = subprocess.Popen([sys.executable, "-c", code, str(parent.pid)],
                              env={**os.environ, "PYTHONPATH": str(project_root())})
    time.sleep(3)
    assert worker.poll() is None  # the build runs: the worker stays
    parent.kill()
    parent.wait()
    assert worker.wait(timeout=10) == 1


def _small_build(tmp_path):
    from geofm_lib.data import build

    cfg = load_config("ci", group="A", datasets=["bigearthnet_s2"], samples_per_dataset=8,
                      image_px=32, shard_size=4, work_dir=str(tmp_path / "w"))
    return cfg, build.build_shards(cfg, show_progress=False)


def test_a_sidecar_edited_by_hand_does_not_reach_a_rebuilt_manifest(tmp_path):
    from geofm_lib.data import build, shards

    cfg, folder = _small_build(tmp_path)
    before = shards.load_manifest(folder)["band_stats"]
    side_path = sorted(folder.glob("train-*.tar.json"))[0]
    side = json.loads(side_path.read_text())
    side["stats"]["sum"] = [v * 3 for v in side["stats"]["sum"]]  # sha256 still the tar's
    side_path.write_text(json.dumps(side))
    (folder / "manifest.json").unlink()  # the manifest is made again from the sidecars
    build.build_shards(cfg, show_progress=False)
    assert shards.load_manifest(folder)["band_stats"] == before
    assert json.loads(side_path.read_text())["stats"]["sum"] != side["stats"]["sum"]


def test_a_shard_changed_with_its_sidecar_is_caught_on_read(tmp_path):
    from geofm_lib.data import build, shards
    from geofm_lib.errors import ShardError

    cfg, folder = _small_build(tmp_path)
    tar = sorted(folder.glob("train-*.tar"))[0]
    good = [s["__key__"] for s in shards.iter_shards([tar])]
    side_path = tar.with_name(tar.name + ".json")
    side = json.loads(side_path.read_text())
    side["content"][0] = "0" * 32  # as if the first image had been swapped in tar and sidecar
    side_path.write_text(json.dumps(side))
    with pytest.raises(ShardError, match=r"does not match the content hash its sidecar "
                                         r"recorded.*remove .*\.tar and .*\.tar\.json beside it"):
        list(shards.iter_shards([tar]))
    # the fix it names works (a resumed build keeps a tar and sidecar that agree)
    tar.unlink()
    side_path.unlink()
    build.build_shards(cfg, show_progress=False)
    assert [s["__key__"] for s in shards.iter_shards([tar])] == good


def test_a_payload_with_another_band_count_is_named(tmp_path):
    import io

    import numpy as np

    from geofm_lib.data import shards
    from geofm_lib.errors import ShardError

    meta = {k: None for k in shards.SAMPLE_KEYS}
    meta.update(bands=["B02", "B03", "B04", "B08"], dataset="bigearthnet_s2")
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 8, 8), np.float32))  # a Sentinel-1 image: VV, VH
    raw = {"__key__": "s2-000", "__url__": "train-x.tar", "img.npy": buf.getvalue(),
           "txt": b"t", "json": json.dumps(meta).encode()}
    with pytest.raises(ShardError, match=r"sample 's2-000' holds an image of shape \(2, 8, 8\), "
                                         r"but its record lists 4 bands \(B02, B03, B04, B08\)"):
        shards.decode_sample(raw)


def test_umap_on_too_few_images_says_what_it_needs():
    import numpy as np

    from geofm_lib.errors import DataError
    from geofm_lib.evaluation import umap_2d

    with pytest.raises(DataError, match="needs at least 4 images, these are 3: raise "
                                        "samples_per_dataset"):
        umap_2d(np.random.default_rng(0).normal(size=(3, 8)))
    assert umap_2d(np.random.default_rng(0).normal(size=(6, 8))).shape == (6, 2)


def test_umap_kernels_are_compiled_once_per_machine_not_once_per_process():
    """umap-learn compiles its kernels without numba's on-disk cache; umap_2d turns it on, so
    the kernels it ran were looked up in the cache (a hit, or a miss that wrote them) and
    notebook 06's first UMAP in a later process loads them instead of compiling (measured:
    2.0 s against 16.0 s for a process's first 300-point UMAP, docs/benchmarks.md)."""
    import sys

    import numpy as np
    from numba.core.dispatcher import Dispatcher

    from geofm_lib.evaluation import umap_2d

    umap_2d(np.random.default_rng(1).normal(size=(20, 8)))
    ran = [obj for name, mod in list(sys.modules.items()) if name.startswith("umap.") and mod
           for obj in vars(mod).values() if isinstance(obj, Dispatcher) and obj.overloads]
    assert len(ran) >= 4, ran  # the neighbours, the fuzzy graph (two) and the layout's epochs
    for kernel in ran:
        stats = kernel.stats
        assert stats.cache_path is not None, kernel
        assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) > 0, kernel


def test_a_pair_family_splits_its_units_once_for_every_sensor():
    """The S1 and S2 readers of BigEarthNet hold different patches of partly the same
    products; a unit's side is decided for the family, so no product straddles the split
    through the other sensor (the real-BigEarthNet CI step found two that did)."""
    from geofm_lib.data.build import split_units

    s2 = {f"P{i}" for i in range(11)}
    s1 = {"P1", "P3", "P5", "P8", "Q1"}  # S1 twins of a few products, one S2 does not have
    for seed in range(20):
        val = split_units({"bigearthnet_s2": s2, "bigearthnet_s1": s1}, 0.25, seed,
                          "bigearthnet_s1")
        for units in (s1, s2):  # each sensor keeps both sides
            assert units & val and units - val
    again = split_units({"bigearthnet_s1": s1, "bigearthnet_s2": s2}, 0.25, 3, "bigearthnet_s1")
    assert again == split_units({"bigearthnet_s2": s2, "bigearthnet_s1": s1}, 0.25, 3,
                                "bigearthnet_s1")  # no dependence on reading order
