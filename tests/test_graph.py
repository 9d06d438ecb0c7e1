"""Issue 39: the report chain as a dependency graph (``report/graph.py``), the execution cache
and notebooks side by side (``reports.Chain``)."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from geofm_lib.config import load_config
from geofm_lib.report import graph, reports

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_declares_every_notebook_and_needs_what_it_reads():
    stems = [b.stem for b in reports.notebooks(ROOT)]
    assert set(graph.STEPS) == set(stems)
    writer = {a: stem for stem, s in graph.STEPS.items() for a in s.writes}
    assert set(writer) <= set(graph.ARTIFACTS)

    def upstream(stem):  # every notebook a notebook waits for, directly or not
        out = set()
        for n in graph.STEPS[stem].needs:
            out |= {n} | upstream(n)
        return out

    for stem, s in graph.STEPS.items():
        assert all(stems.index(n) < stems.index(stem) for n in s.needs), stem  # a DAG in order
        for a in s.reads:  # what it reads is written by a notebook it waits for
            assert writer[a] in upstream(stem), (stem, a)
        assert s.alone, stem  # the page of the chain says what it builds when run alone
    # the graph is wider than a line: 07 needs only 01's shards, 04 and 06 only 03's checkpoint
    assert graph.needs("07_ssl_pretrain", stems) == ["01_data_prep"]
    assert graph.needs("06_feature_probes", stems) == ["03_pretrain"]
    cfg = load_config("ci")
    assert graph.artifact(cfg, "shards").named_by == f"data {cfg.data_hash}"
    assert graph.artifact(cfg, "clip checkpoint").named_by == f"train {cfg.train_hash}"
    assert graph.artifact(cfg, "ssl encoder").named_by == f"ssl {cfg.ssl_hash}"


def test_critical_path_is_the_longest_dependent_chain():
    stems = list(graph.STEPS)
    t = {"01_data_prep": 10, "02_explore_data": 5, "03_pretrain": 100, "04_zero_shot_eval": 10,
         "05_map_viz": 5, "06_feature_probes": 50, "07_ssl_pretrain": 200, "08_segmentation": 80}
    assert graph.critical_path(t, stems) == (290, ["01_data_prep", "07_ssl_pretrain",
                                                   "08_segmentation"])
    t["06_feature_probes"] = 400
    assert graph.critical_path(t, stems) == (510, ["01_data_prep", "03_pretrain",
                                                   "06_feature_probes"])
    # a notebook of your own waits for every notebook before it
    assert graph.needs("09_mine", stems + ["09_mine"]) == stems


def _workspace(root: Path, cells: dict[str, str]) -> Path:
    """A workspace whose notebooks each run ``cells[name]`` after reading their config."""
    (root / "parameters").mkdir(parents=True)
    for name in ("defaults", "ci"):
        shutil.copyfile(ROOT / "parameters" / f"{name}.yaml", root / "parameters" / f"{name}.yaml")
    (root / "notebooks").mkdir()
    for name, code in cells.items():
        params = nbformat.v4.new_code_cell('preset = "ci"\nexperiment = None')
        params.metadata["tags"] = ["parameters"]
        nb = nbformat.v4.new_notebook()
        nb.cells = [params, nbformat.v4.new_code_cell(
            "import os, time\nfrom geofm_lib.config import from_notebook\n"
            "from geofm_lib.report.runinfo import save_stage\n"
            "cfg = from_notebook(globals())\n" + code)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
    return root


def _run(root: Path, **kw) -> dict:
    reports.run_report("ci", reports_dir=root / "reports", run_name="r",
                       work_dir=str(root / "work"), **kw)
    return json.loads((root / "reports" / "r" / "run.json").read_text())


def test_a_notebook_is_skipped_only_when_source_parameters_and_inputs_match(tmp_path,
                                                                           monkeypatch):
    root = _workspace(tmp_path / "ws", {
        "01_first": 'save_stage(cfg, "01_first", {"lr": cfg.lr, "t": time.time()})',
        "02_second": 'save_stage(cfg, "02_second", {"seed": cfg.seed})'})
    monkeypatch.setenv("GEOFM_ROOT", str(root))
    assert _run(root)["reused"] == {}  # nothing executed before: both run
    page = (root / "reports" / "r" / "01_first.html").read_text()
    assert "Keyed on source" in page and "Republished" not in page

    info = _run(root)  # nothing changed: both republished, not executed
    assert set(info["reused"]) == {"01_first", "02_second"}
    assert info["status"] == "ok" and set(info["seconds"]) == {"01_first", "02_second"}
    page = (root / "reports" / "r" / "01_first.html").read_text()
    assert "Republished" in page and "--force" in page
    metrics = json.loads((root / "reports" / "r" / "metrics.json").read_text())
    assert metrics["01_first"]["lr"] == 5e-4 and metrics["02_second"]["seed"] == 0

    # the source of 02 changes: 02 executes, 01 does not
    book = root / "notebooks" / "02_second.ipynb"
    nb = nbformat.read(book, as_version=4)
    nb.cells[1].source += "\nprint('changed')"
    nbformat.write(nb, book)
    assert set(_run(root)["reused"]) == {"01_first"}

    # a parameter changes: 01 executes, and 02 after it (its input, 01's record, is new)
    assert _run(root, lr=0.01)["reused"] == {}
    assert json.loads((root / "reports" / "r" / "metrics.json").read_text())[
        "01_first"]["lr"] == 0.01
    assert set(_run(root, lr=0.01)["reused"]) == {"01_first", "02_second"}

    # an input changes (01's record, which 02 reads, rewritten): 02 executes
    rec = root / "work" / "runs" / "r" / "01_first.json"
    rec.write_text(rec.read_text().replace('"t": ', '"t": 1.0, "u": '))
    assert _run(root, lr=0.01)["reused"] == {}  # 01: its product changed; 02: its input

    # a product gone: the notebook executes again
    (root / "work" / "runs" / "r" / "02_second.json").unlink()
    assert set(_run(root, lr=0.01)["reused"]) == {"01_first"}

    # --force executes everything
    assert _run(root, lr=0.01, force=True)["reused"] == {}


def test_independent_notebooks_run_side_by_side_and_a_failure_stops_only_its_dependants(
        tmp_path, monkeypatch):
    stamp = ('save_stage(cfg, "{n}", {{"start": time.time(), "threads": '
             'os.environ.get("OMP_NUM_THREADS"), "cwd": os.getcwd(), '
             '"end": (time.sleep(4), time.time())[1]}})')
    here = Path.cwd()
    root = _workspace(tmp_path / "ws", {
        "01_a": stamp.format(n="01_a"), "02_b": stamp.format(n="02_b"),
        "03_c": 'raise RuntimeError("c broke")', "04_d": stamp.format(n="04_d"),
        "05_e": stamp.format(n="05_e")})
    monkeypatch.setenv("GEOFM_ROOT", str(root))
    # 01, 02 and 03 independent (each heads a path of two, so they start in order); 04 needs
    # 03; 05 needs 01 and 02
    monkeypatch.setattr(graph, "STEPS", {
        "01_a": graph.Step((), (), (), "-"), "02_b": graph.Step((), (), (), "-"),
        "03_c": graph.Step((), (), (), "-"), "04_d": graph.Step(("03_c",), (), (), "-"),
        "05_e": graph.Step(("01_a", "02_b"), (), (), "-")})
    with pytest.raises(reports.NotebookFailed, match="03_c.ipynb stopped"):
        _run(root, jobs=2)
    info = json.loads((root / "reports" / "r" / "run.json").read_text())
    assert info["jobs"] == 2 and info["failed"]["notebook"] == "03_c"
    assert info["skipped"] == {"04_d": "not run: 03_c failed before it"}  # 05 still ran
    m = json.loads((root / "reports" / "r" / "metrics.json").read_text())
    assert set(m) == {"01_a", "02_b", "05_e"}
    a, b = m["01_a"], m["02_b"]
    assert a["start"] < b["end"] and b["start"] < a["end"]  # 01 and 02 at the same time
    assert m["05_e"]["start"] >= max(a["end"], b["end"])  # 05 after what it needs
    assert a["threads"] == b["threads"] and int(a["threads"]) >= 1  # each kernel its share
    # every kernel starts in notebooks/; this process stays where it was (papermill's cwd=
    # changes the process's directory, which two notebooks at once would leave wrong)
    assert {m[n]["cwd"] for n in m} == {str(root / "notebooks")} and Path.cwd() == here


def test_the_scheduler_starts_the_head_of_the_longest_remaining_path_first():
    """With fewer cores than ready notebooks, the one heading the longest path to the end
    starts first: after 01, 03 (03 -> 08 by count; 03 -> 06 by the demo's times) and 07
    (07 -> 08) before 02, so 07 -> 08 does not wait; by count where a time is missing."""
    chain = list(graph.STEPS)
    by_count = graph.priorities({}, chain)
    assert by_count["01_data_prep"] == 4 and by_count["03_pretrain"] == 3
    assert by_count["07_ssl_pretrain"] == 2 and by_count["02_explore_data"] == 1
    demo = dict(zip(chain, [40, 26, 249, 30, 23, 647, 1223, 835, 20]))
    by_time = graph.priorities(demo, chain)
    assert by_time["07_ssl_pretrain"] == 1223 + 835 and by_time["03_pretrain"] == 249 + 835
    assert max(by_time, key=by_time.get) == "01_data_prep"
    assert graph.priorities({**demo, "02_explore_data": 0}, chain) == by_count


def test_one_job_runs_in_order_and_a_failure_stops_the_rest_of_a_plain_chain(tmp_path,
                                                                             monkeypatch):
    """Notebooks of your own (not in the table) wait for every notebook before them."""
    root = _workspace(tmp_path / "ws", {
        "01_a": 'raise RuntimeError("a broke")', "02_b": 'save_stage(cfg, "02_b", {"x": 1})'})
    monkeypatch.setenv("GEOFM_ROOT", str(root))
    with pytest.raises(reports.NotebookFailed, match="01_a.ipynb stopped"):
        _run(root, jobs=3)
    info = json.loads((root / "reports" / "r" / "run.json").read_text())
    assert info["skipped"] == {"02_b": "not run: 01_a failed before it"}


def test_notebooks_run_alone_building_what_they_read(tmp_path):
    """Item 2: 08 from an empty work folder builds 01's shards, trains 03's CLIP (its
    other_encoders include `clip`) and pretrains the encoder 07 would, through their own calls,
    a line each; 05 then scores 04's predictions the same way. Both publish their records."""
    work = tmp_path / "work"
    params = {"preset": "ci", "work_dir": str(work), "run_name": "alone"}
    cfg = load_config("ci", work_dir=str(work), run_name="alone")
    books = {b.stem: b for b in reports.notebooks(ROOT)}
    out = tmp_path / "08.ipynb"
    reports._execute(books["08_segmentation"], out, {**params, "ssl_methods": ["moco"]}, ROOT,
                     cfg)
    text = out.read_text()
    for line in (f"no shards for data {cfg.data_hash} yet", "no finished CLIP run for train hash",
                 "no finished moco encoder on data"):
        assert line in text, line
    for name in ("shards", "clip checkpoint", "ssl encoder"):  # 03 and 07 would load them
        assert graph.artifact(cfg, name).digest() is not None, name
    assert graph.products(cfg, "08_segmentation")["record"] is not None

    assert graph.artifact(cfg, "predictions").digest() is None  # 04 has not run
    out = tmp_path / "05.ipynb"
    reports._execute(books["05_map_viz"], out, params, ROOT, cfg)
    assert "no predictions of run alone yet" in out.read_text()
    for name in ("predictions", "map"):
        assert graph.artifact(cfg, name).digest() is not None, name
    assert graph.products(cfg, "05_map_viz")["record"] is not None


def test_geofm_graph_prints_times_and_the_critical_path(tmp_path, monkeypatch, capsys):
    from geofm_lib import cli

    monkeypatch.setenv("GEOFM_ROOT", str(tmp_path))
    shutil.copytree(ROOT / "parameters", tmp_path / "parameters")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    assert cli.main(["graph", "--preset", "ci"]) == 0
    assert "the graph alone" in capsys.readouterr().out
    run = tmp_path / "reports" / "group_all-ci"
    run.mkdir(parents=True)
    seconds = {"01_data_prep": 5, "02_explore_data": 4, "03_pretrain": 30,
               "04_zero_shot_eval": 10, "05_map_viz": 6, "06_feature_probes": 50,
               "07_ssl_pretrain": 70, "08_segmentation": 28}
    (run / "run.json").write_text(json.dumps({
        "run": "group_all-ci", "finished": "2026-12-06 05:00:00", "jobs": 1,
        "seconds": seconds, "reused": {"01_data_prep": "2026-12-06 04:00:00"}}))
    assert cli.main(["graph", "--preset", "ci"]) == 0
    out = capsys.readouterr().out
    assert "critical path 01 -> 07 -> 08 103 s" in out and "take 203 s" in out
    assert "republished without executing in this report: 01" in out
    saved = json.loads((tmp_path / "work" / "bench" / "chain-group_all-ci.json").read_text())
    assert saved["critical_path"] == ["01_data_prep", "07_ssl_pretrain", "08_segmentation"]


def test_the_advice_to_build_a_missing_input_is_the_exact_command(tmp_path, capsys):
    """Where a notebook run alone cannot build its shards, the error gives the command with the
    same parameters (plain `geofm data` builds another data hash)."""
    import shlex

    from geofm_lib import cli
    from geofm_lib.config import command_for
    from geofm_lib.data import build
    from geofm_lib.errors import GeofmError

    for cfg in (load_config("demo", group="C"),
                load_config("ci", datasets=["xview", "mafat"], run_name="2024", lr=0.01,
                            work_dir=str(tmp_path / "w"))):
        words = shlex.split(command_for(cfg))
        assert words[:2] == ["geofm", "data"]
        assert cli.main(["params"] + words[2:]) == 0  # the same parameters, read back
        last = capsys.readouterr().out.strip().splitlines()
        line = next(x for x in last if x.startswith("# hash"))
        assert line == f"# hash {cfg.hash}  data_hash {cfg.data_hash}  run {cfg.name}"
    card = tmp_path / "mine.yaml"  # a data folder of yours that is absent
    card.write_text("group: custom\ndataset_cards:\n  plots:\n    name: Plots\n    gsd_m: 0.5\n"
                    "    labels: [trees, road]\n    bands: [{name: R, center_nm: 665}]\n"
                    f"sources:\n  plots: {{reader: geotiff, root: {tmp_path / 'absent'}}}\n")
    cfg = load_config("ci", str(card), work_dir=str(tmp_path / "w"), lr=0.001)
    with pytest.raises(GeofmError, match=r"no GeoTIFF.*build them alone with exactly these "
                                         r"parameters: geofm data --preset ci --experiment "
                                         r"\S+mine.yaml -p lr=0.001 -p work_dir="):
        build.ensure_shards(cfg)
