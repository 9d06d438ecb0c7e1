import json
from pathlib import Path

import nbformat
import pytest

from geofm_lib import reports
from geofm_lib.config import project_root

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(reports_dir: Path, name: str, samples: int, r1: float):
    folder = reports_dir / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "run": name, "preset": "ci", "experiment": name.split("-")[0],
        "git": {"commit": "0123456789abcdef", "dirty": True},
        "seconds": {"01_data_prep": 3.5}, "finished": "2026-11-24 10:00:00"}))
    (folder / "metrics.json").write_text(json.dumps({
        "01_data_prep": {"samples": samples}, "04_zero_shot": {"mean_R@1": r1}}))
    (folder / "01_data_prep.html").write_text("<html></html>")


def test_index_lists_two_runs_side_by_side(tmp_path):
    _fake_run(tmp_path, "group_A-ci", 96, 12.5)
    _fake_run(tmp_path, "group_C-ci", 48, 3.25)
    page = reports.build_index(tmp_path).read_text()
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
    pages = list((ROOT / "reports").glob("*/*.html"))
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
