import json
from pathlib import Path

import nbformat
import pytest

from geofm_lib import records
from geofm_lib.config import project_root
from geofm_lib.report import index as report_index
from geofm_lib.report import reports

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(reports_dir: Path, name: str, samples: int, r1: float):
    folder = reports_dir / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "run": name, "preset": "ci", "experiment": name.split("-")[0],
        "git": {"commit": "0123456789abcdef", "dirty": True},
        "seconds": {"01_data_prep": 3.5}, "finished": "2026-11-24 10:00:00"}))
    (folder / "metrics.json").write_text(json.dumps({
        "01_data_prep": records.DataPrepRecord(samples=samples, shards=1, megabytes=0.5,
                                               seconds=1.0, reused_build=False).to_dict(),
        "04_zero_shot_eval": _zero_shot({}, **{"mean_R@1": r1})}))
    (folder / "01_data_prep.html").write_text("<html></html>")


def _zero_shot(per_dataset: dict, **values) -> dict:
    """A 04 record as the notebook writes it (typed), with the values a test is about."""
    return records.ZeroShotRecord.of({
        "per_dataset": {ds: {"images": 10, "labels": 5, "no_labels": 0, **row}
                        for ds, row in per_dataset.items()},
        "split": "val", "not_evaluable": {}, "quality": {}, "caption_retrieval": {},
        **values}).to_dict()


def test_index_lists_two_runs_side_by_side(tmp_path):
    _fake_run(tmp_path, "group_A-ci", 96, 12.5)
    _fake_run(tmp_path, "group_C-ci", 48, 3.25)
    page = report_index.build_index(tmp_path).read_text()
    assert page.count("<tr><td><b>") == 2
    assert "group_A-ci/01_data_prep.html" in page and "group_C-ci/01_data_prep.html" in page
    assert "mean R@1" in page and ">12.5 <" in page and ">3.2 <" in page  # one decimal
    assert "01234567 (dirty)" in page
    assert "probe F2" not in page  # columns only for metrics some run has


def test_html_has_no_absolute_paths(tmp_path):
    root = project_root()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [nbformat.v4.new_output(
        "stream", name="stdout",
        text=f"read {root}/work/shards/abc/train-x-000000.tar\nhome {Path.home()}/.cache\n")]
    nb.cells = [cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    html = reports.to_html(path, root)
    assert str(root) not in html and str(Path.home()) + "/" not in html
    assert "./work/shards/abc" in html
    assert "<img" not in html or "data:image" in html


@pytest.mark.reports
def test_generated_ci_reports_are_clean():
    """After `make test` ran the notebooks: every HTML report is free of machine paths."""
    pages = [p for p in (ROOT / "reports").glob("*/*.html")
             if not p.parent.name.startswith(".")]  # not a run being assembled right now
    if not pages:
        pytest.skip("no generated reports yet (tests/run_all.sh makes them before pytest)")
    for page in pages:
        text = page.read_text()
        assert str(ROOT) not in text, page.name
        assert not reports.find_absolute_paths(text), (page.name,
                                                      reports.find_absolute_paths(text)[:2])
    index = (ROOT / "reports" / "index.html").read_text()
    for page in pages:
        assert f"{page.parent.name}/{page.name}" in index


def _fake_study_run(reports_dir: Path, exp: str, group: str, metadata: bool, r1: dict):
    folder = reports_dir / f"{exp}-demo"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "run": folder.name, "preset": "demo", "experiment": exp, "finished": "2026-11-24"}))
    (folder / "params.yaml").write_text(
        f"group: {group}\ncaption_metadata: {str(metadata).lower()}\nsource: simulator\n"
        f"samples_per_dataset: 1000\nimage_px: 64\n")
    per = {ds: {"R@1": v, "R@5": None if ds == "seadronessee" else 90.0, "R@10": None,
                "R@1_ci95": [v - 5, v + 5], "chance_R@1": 5.0} for ds, v in r1.items()}
    (folder / "metrics.json").write_text(json.dumps({"04_zero_shot_eval": _zero_shot(
        per, **{"mean_R@1": sum(r1.values()) / len(r1), "mean_chance_R@1": 5.0})}))


def test_study_page_sets_runs_beside_the_paper_tables(tmp_path):
    _fake_study_run(tmp_path, "compiled", "all", False, {"xview": 11.0, "seadronessee": 22.0})
    _fake_study_run(tmp_path, "group_C", "C", False, {"xview": 33.0})
    _fake_study_run(tmp_path, "group_C_metadata", "C", True, {"xview": 44.0})
    page = report_index.build_study(tmp_path, "demo").read_text()
    assert page.count("<h2>R@") == 3
    r1 = page.split("<h2>R@1</h2>")[1].split("<h2>R@5</h2>")[0]
    xview = r1.split("<th class=ds>xview")[1].split("</tr>")[0]
    # compiled -> Table 2 (1.4), group C -> Table 3 (57.2), C + metadata -> Table 4 (1.8)
    assert xview.index("11.0") < xview.index("paper 1.4") < xview.index("33.0") \
        < xview.index("paper 57.2") < xview.index("44.0") < xview.index("paper 1.8")
    sea = r1.split("<th class=ds>seadronessee")[1].split("</tr>")[0]
    assert "not in this group" in sea  # seadronessee is in group B, not C
    r5 = page.split("<h2>R@5</h2>")[1]
    assert "<td>-<br>" in r5.split("<th class=ds>seadronessee")[1]  # 5 labels: k=5 is '-'
    assert "Different data" in page
    index = report_index.build_index(tmp_path).read_text()
    assert 'href="study-demo.html"' in index


def _chain(root: Path, fail_second: bool) -> None:
    """A workspace with a two-notebook chain: 01 records a metric, 02 fails or succeeds."""
    import shutil

    (root / "parameters").mkdir(parents=True)
    for name in ("defaults", "ci"):
        shutil.copyfile(ROOT / "parameters" / f"{name}.yaml", root / "parameters" / f"{name}.yaml")
    (root / "notebooks").mkdir()
    params = nbformat.v4.new_code_cell('preset = "ci"\nexperiment = None')
    params.metadata["tags"] = ["parameters"]
    setup = ("from geofm_lib.config import from_notebook\n"
             "from geofm_lib.report.runinfo import save_stage\n"
             "cfg = from_notebook(globals())\n")
    first = nbformat.v4.new_notebook()
    first.cells = [params, nbformat.v4.new_code_cell(
        setup + 'save_stage(cfg, "01_first", {"lr": cfg.lr})')]
    second = nbformat.v4.new_notebook()
    second.cells = [params, nbformat.v4.new_code_cell(
        setup + ('raise RuntimeError("the second notebook broke")' if fail_second else
                 'save_stage(cfg, "02_second", {"ok": True})'))]
    for nb in (first, second):
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(first, root / "notebooks" / "01_first.ipynb")
    nbformat.write(second, root / "notebooks" / "02_second.ipynb")


def test_a_failed_chain_publishes_the_pages_that_ran_and_keeps_a_good_report(tmp_path,
                                                                            monkeypatch):
    from geofm_lib.errors import NotebookFailed

    root = tmp_path / "ws"
    _chain(root, fail_second=True)
    monkeypatch.setenv("GEOFM_ROOT", str(root))
    out = root / "reports"
    with pytest.raises(NotebookFailed, match=r"02_second.ipynb stopped in cell \d: RuntimeError: "
                                             r"the second notebook broke \(the executed page "
                                             r"with the cell: reports/r/02_second.html\)"):
        reports.run_report("ci", reports_dir=out, run_name="r", work_dir=str(root / "work"))
    info = json.loads((out / "r" / "run.json").read_text())
    assert info["status"] == "failed" and info["failed"]["notebook"] == "02_second"
    assert "the second notebook broke" in info["failed"]["error"]
    assert {p.name for p in (out / "r").glob("*.html")} == {"01_first.html", "02_second.html"}
    assert "the second notebook broke" in (out / "r" / "02_second.html").read_text()
    assert json.loads((out / "r" / "metrics.json").read_text()) == {"01_first": {"lr": 5e-4}}
    assert not list(out.glob(".r.*.tmp"))  # nothing left hidden
    index = (out / "index.html").read_text()
    assert "FAILED in 02_second" in index and "the second notebook broke" in index
    # a good report of the run is not replaced by a later failure: that goes to r-failed/
    _chain(tmp_path / "ws2", fail_second=False)
    monkeypatch.setenv("GEOFM_ROOT", str(tmp_path / "ws2"))
    reports.run_report("ci", reports_dir=out, run_name="r", work_dir=str(root / "work"))
    assert json.loads((out / "r" / "run.json").read_text())["status"] == "ok"
    monkeypatch.setenv("GEOFM_ROOT", str(root))
    with pytest.raises(NotebookFailed, match="reports/r-failed/"):
        reports.run_report("ci", reports_dir=out, run_name="r", work_dir=str(root / "work"))
    assert json.loads((out / "r" / "run.json").read_text())["status"] == "ok"
    assert json.loads((out / "r-failed" / "run.json").read_text())["status"] == "failed"


def test_runs_with_other_overrides_get_their_own_folders(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    _chain(root, fail_second=False)
    monkeypatch.setenv("GEOFM_ROOT", str(root))
    out = root / "reports"
    work = str(root / "work")  # work_dir changes no result: the plain run's name
    plain = reports.run_report("ci", reports_dir=out, work_dir=work)
    fast = reports.run_report("ci", reports_dir=out, work_dir=work, lr=0.01)
    slow = reports.run_report("ci", reports_dir=out, work_dir=work, lr=0.0001)
    assert plain.name == "group_all-ci"
    assert fast.name.startswith("group_all-ci-") and slow.name.startswith("group_all-ci-")
    assert len({plain, fast, slow}) == 3
    for folder, lr in ((plain, 5e-4), (fast, 0.01), (slow, 0.0001)):
        assert json.loads((folder / "metrics.json").read_text())["01_first"]["lr"] == lr
        assert (folder / "01_first.html").is_file()
    index = (out / "index.html").read_text()
    assert "lr=0.01" in index and "lr=0.0001" in index  # the readable difference


def test_two_reports_started_at_once_both_finish(tmp_path):
    """Kernels listen on Unix sockets of their own (``reports._kernel_manager``): with TCP, two
    runs starting together could take the same ports and one waited forever; with a shared
    socket prefix both fail. Two chains at the same moment must both publish."""
    import subprocess
    import sys

    if sys.platform.startswith("linux"):
        assert reports._kernel_manager()().transport == "ipc"
    code = ("import sys; from geofm_lib.report import reports; "
            "reports.run_report('ci', chain=['01'], reports_dir=sys.argv[1], "
            "work_dir=sys.argv[2], run_name=sys.argv[3])")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "reports"),
                              str(tmp_path / f"work-{n}"), n], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for n in ("a", "b")]
    for p in runs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-2000:]
    for n in ("a", "b"):
        assert json.loads((tmp_path / "reports" / n / "run.json").read_text())["status"] == "ok"


def test_a_notebook_parameter_given_with_p_goes_to_the_notebooks_that_have_it():
    """Issue 37, item 6 (and issue 36's note): `geofm report -p seg_lr=0.003` reached no
    notebook; a name that is not a workspace parameter now goes to every notebook of the chain
    that has it, and a name neither knows is an error with the closest name."""
    from geofm_lib.errors import ConfigError

    books = reports.notebooks(ROOT)
    workspace, routed = reports.route_overrides(books, {"seed": 3, "seg_lr": 0.003,
                                                        "n_boot": 50, "run_name": None})
    assert workspace == {"seed": 3, "run_name": None}
    assert routed == {"04": {"n_boot": 50}, "06": {"n_boot": 50}, "07": {"n_boot": 50},
                      "08": {"seg_lr": 0.003, "n_boot": 50}, "09": {"n_boot": 50}}
    only_08 = [b for b in books if b.name.startswith("08")]
    assert reports.route_overrides(only_08, {"n_boot": 9})[1] == {"08": {"n_boot": 9}}
    with pytest.raises(ConfigError, match=r"-p seg_rl: neither a workspace parameter nor a "
                                          r"parameter of .*did you mean 'seg_lr'\?"):
        reports.route_overrides(books, {"seg_rl": 0.1})


def test_geofm_params_describes_every_parameter_and_stays_a_parameter_file(tmp_path):
    import subprocess
    import sys

    import yaml

    out = subprocess.run([sys.executable, "-m", "geofm_lib.cli", "params", "--preset", "ci",
                          "--experiment", "group_C", "-p", "lr", "0.002"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True).stdout
    # each value with what it means and where it came from (issue 38, item 6)
    assert "image_px: 32  # side of stored patches, pixels [parameters/ci.yaml]" in out
    assert "group: C  # " in out and "[parameters/group_C.yaml]" in out.split("group: C")[1]
    assert "lr: 0.002  # " in out and out.split("lr: 0.002")[1].split("\n")[0].endswith("[-p]")
    assert "[schema default]" in out and "[parameters/defaults.yaml]" in out
    assert "#   08 seg_lr = 0.001  (AdamW learning rate of decoder and head)" in out
    values = yaml.safe_load(out)
    assert values["image_px"] == 32 and "seg_lr" not in values  # comments stay comments
