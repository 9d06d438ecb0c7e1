import json
from pathlib import Path

import nbformat
import pytest

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
        "01_data_prep": {"samples": samples}, "04_zero_shot_eval": {"mean_R@1": r1}}))
    (folder / "01_data_prep.html").write_text("<html></html>")


def test_index_lists_two_runs_side_by_side(tmp_path):
    _fake_run(tmp_path, "group_A-ci", 96, 12.5)
    _fake_run(tmp_path, "group_C-ci", 48, 3.25)
    page = report_index.build_index(tmp_path).read_text()
    assert page.count("<tr><td><b>") == 2
    assert "group_A-ci/01_data_prep.html" in page and "group_C-ci/01_data_prep.html" in page
    assert "mean R@1" in page and "12.5" in page and "3.25" in page
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
    (folder / "metrics.json").write_text(json.dumps({"04_zero_shot_eval": {
        "per_dataset": per, "mean_R@1": sum(r1.values()) / len(r1), "mean_chance_R@1": 5.0}}))


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
