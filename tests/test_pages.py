"""Report pages read well: the resolved parameters once, as a table; progress bars cut to
their last line; no bare path reprs. The executed notebook itself keeps everything."""

import nbformat

from geofm_lib.config import load_config
from geofm_lib.report import pages

PARAMS = '''# Parameters of this notebook
preset = "demo"              # size preset: ci | demo | full
batch_size = None            # samples per step (the contrastive batch)
datasets = None              # subset of the group's datasets
finetune_epochs = 5          # notebook-local
'''
INJECTED = '# Parameters\npreset = "ci"\nexperiment = None\nfinetune_epochs = 2\n'
BAR = "evaluation:  {p:>3}%|{bar:<10}| {i}/4 [00:0{i}<00:00, 1.00fit/s]"


def _notebook():
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell(INJECTED, metadata={"tags": ["injected-parameters"]})
    lines = [BAR.format(p=25 * i, bar="#" * (i * 2), i=i) for i in range(5)]
    progress = nbformat.v4.new_code_cell("run()", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="starting\n"),
        *[nbformat.v4.new_output("stream", name="stdout", text="\r" + ln) for ln in lines],
        nbformat.v4.new_output("stream", name="stdout", text="\ndone: 4 fits\n")])
    path = nbformat.v4.new_code_cell("save()", outputs=[nbformat.v4.new_output(
        "execute_result", data={"text/plain": "PosixPath('./work/runs/x/01.json')"},
        execution_count=3)])
    table = nbformat.v4.new_code_cell("t", outputs=[nbformat.v4.new_output(
        "execute_result", data={"text/plain": "   a\n0  1", "text/html": "<table/>"},
        execution_count=4)])
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), params, injected, progress, path,
                table]
    return nb


def test_parameters_become_one_table_of_resolved_values():
    cfg = load_config("ci")
    nb = pages.tidy(_notebook(), cfg)
    assert [c.cell_type for c in nb.cells[:3]] == ["markdown", "markdown", "code"]
    table = nb.cells[1].source
    assert "None" not in table
    assert f"<code>batch_size</code></td><td>{cfg.batch_size}</td>" in table  # from the preset
    assert "<code>finetune_epochs</code></td><td><b>2</b></td>" in table  # set for the run
    assert ", ".join(cfg.dataset_keys) in table  # datasets: what the run resolved
    assert 'title="samples per step (the contrastive batch)"' in table
    rows = pages.resolved_parameters(PARAMS, INJECTED, None)  # no config: injected / default
    assert {r["name"]: r["value"] for r in rows} == {"preset": "ci", "batch_size": None,
                                                     "datasets": None, "finetune_epochs": 2}


def test_progress_lines_are_cut_to_the_last_and_path_reprs_dropped():
    original = _notebook()
    nb = pages.tidy(original)
    outputs = nb.cells[2].outputs
    assert [o["name"] for o in outputs] == ["stderr", "stdout"]  # the log apart, folded
    log, text = outputs[0]["text"], outputs[1]["text"]
    assert log.count("fit/s]") == 1 and "100%|########  | 4/4" in log
    assert text == "starting\ndone: 4 fits\n"
    assert nb.cells[3].outputs == []  # PosixPath(...) alone
    assert len(nb.cells[4].outputs) == 1  # a real result stays
    assert len(original.cells[3].outputs) == 7  # the notebook itself is untouched


def test_other_lines_between_two_bars_are_kept():
    a = BAR.format(p=50, bar="#####", i=2)
    b = BAR.format(p=100, bar="#" * 10, i=4)
    text = f"{a}\n{b}\nloss 0.3\n{a}\n"
    assert pages.collapse_progress(text) == f"{b}\nloss 0.3\n{a}\n"


def test_a_bar_with_log_lines_between_its_states_is_shown_once_at_its_end():
    a = BAR.format(p=50, bar="#####", i=2)
    b = BAR.format(p=100, bar="#" * 10, i=4)
    text = f"\r{a}12:00:01 geofm: epoch 1/2: loss 6.1\n\r{b}12:00:02 geofm: epoch 2/2\n"
    assert pages.collapse_progress(text) == (
        f"12:00:01 geofm: epoch 1/2: loss 6.1\n{b}\n12:00:02 geofm: epoch 2/2\n")


# --- the page layout (issue 38, item 1) -------------------------------------------------------


def _page(tmp_path, failed=None, summary=("<b>mean R@1 20.8</b> (chance 19.2)",)):
    """An executed notebook with headings, a log, a result and a bookkeeping cell, rendered."""
    from pathlib import Path

    from geofm_lib.report import reports

    nb = _notebook()
    nb.cells[0] = nbformat.v4.new_markdown_cell("# 04 · Zero-shot <eval>\n\n## First part\n\n"
                                                "### Detail\n\n## Second part")
    nb.cells.append(nbformat.v4.new_code_cell("save_stage(cfg, record)", metadata={
        "tags": ["bookkeeping"]}, outputs=[nbformat.v4.new_output(
            "stream", name="stdout", text="BOOKKEEPING-OUTPUT\n")]))
    nb.metadata["papermill"] = {"end_time": "2026-12-06T01:02:03.456789"}
    path = tmp_path / "run<x>" / "04_zero_shot_eval.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    page = reports.to_html(path, Path(tmp_path), None, summary=list(summary), failed=failed)
    path.with_suffix(".html").write_text(page)
    return page


def test_a_page_has_a_title_a_summary_contents_and_folded_code_and_logs(tmp_path):
    import re

    page = _page(tmp_path)
    assert "<title>04 · Zero-shot &lt;eval&gt; · run&lt;x&gt; · geofm</title>" in page
    assert '<div class="geofm-summary"><b>Key numbers</b> <span class="geofm-meta">04 · ' \
        'Zero-shot &lt;eval&gt;</span>' in page
    assert "<li><b>mean R@1 20.8</b> (chance 19.2)</li>" in page
    assert "executed 2026-12-06 01:02:03 UTC" in page
    toc = re.search(r'<details class="geofm-toc" open>(.*?)</details>', page, re.S).group(1)
    assert re.findall(r">([^<>]+)</a>", toc) == ["First part", "Detail", "Second part"]
    assert page.count('<details class="geofm-code">') == 3  # run(), save(), t: folded
    assert "BOOKKEEPING-OUTPUT" not in page and "save_stage" not in page
    log = re.search(r'<details class="geofm-log"><summary>log \((\d+) lines?\)</summary>(.*?)'
                    r"</details>", page, re.S)
    assert log and "fit/s]" in log.group(2) and log.group(1) == "1"
    assert 'href="../index.html"' in page  # the way back, before the run links its pages


def test_a_page_loads_nothing_from_outside_itself(tmp_path):
    import re

    page = _page(tmp_path)
    assert re.findall(r"<script[^>]+src=", page) == []
    assert re.findall(r"<link[^>]+href=", page) == []
    assert "cdn" not in page.lower() and "mathjax" not in page.lower()


def test_a_failed_notebook_says_so_at_the_top_and_shows_its_bookkeeping_error(tmp_path):
    page = _page(tmp_path, failed="ValueError: <bad>", summary=())
    assert '<div class="geofm-summary geofm-failed">' in page
    assert "stopped with an error</b>: ValueError: &lt;bad&gt;" in page
    nb = _notebook()
    nb.cells.append(nbformat.v4.new_code_cell("save_stage(cfg, record)", metadata={
        "tags": ["bookkeeping"]}, outputs=[nbformat.v4.new_output(
            "error", ename="RecordError", evalue="x", traceback=[])]))
    assert pages.tidy(nb).cells[-1].source == "save_stage(cfg, record)"  # kept: it failed


def test_the_run_s_pages_link_to_their_neighbours_and_only_to_pages_that_exist(tmp_path):
    head = pages.header("run", "x", None)
    assert "geofm-summary" not in head  # outside a chain (the benchmarks page): no box
    for stem in ("01_a", "03_c", "04_d"):
        (tmp_path / f"{stem}.html").write_text(f"<html>{head}<p>{stem}</p></html>")
    order = ["01_a", "02_b", "03_c", "04_d"]
    assert pages.link_pages(tmp_path, order, "my<run>") == 3
    middle = (tmp_path / "03_c.html").read_text()
    assert '<a href="01_a.html">&larr; 01 a</a> · <a href="04_d.html">04 d &rarr;</a>' in middle
    assert "02_b" not in middle and "run <b>my&lt;run&gt;</b>" in middle
    assert "&larr;" not in (tmp_path / "01_a.html").read_text()
    assert pages.link_pages(tmp_path, order, "my<run>") == 0  # the same links: nothing written


def test_every_workspace_notebook_tags_its_record_cell_as_bookkeeping():
    import json
    from pathlib import Path

    for book in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb")):
        cells = json.loads(book.read_text())["cells"]
        saving = [c for c in cells if c["cell_type"] == "code" and "save_stage(" in
                  "".join(c["source"])]
        assert saving and all("bookkeeping" in c["metadata"].get("tags", []) for c in saving), \
            book.name


def test_progress_is_text_under_papermill_and_a_widget_in_jupyterlab(monkeypatch):
    """Issue 38, item 5: a kernel papermill started (no JPY_SESSION_NAME) writes text lines; a
    widget's stored fallback would read 0 % forever in every viewer but Jupyter."""
    import sys
    import types

    from geofm_lib import progress

    monkeypatch.delenv("GEOFM_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    for k in [k for k in __import__("os").environ if k.startswith(("VSCODE_", "COLAB_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert progress.batch_mode()  # papermill's kernel
    bar = progress.progress(range(3), desc="x")
    assert type(bar).__module__ == "tqdm.std"
    monkeypatch.setenv("JPY_SESSION_NAME", "/work/notebooks/07_ssl_pretrain.ipynb")
    assert not progress.batch_mode()  # JupyterLab's kernel
    monkeypatch.setenv("GEOFM_PROGRESS", "text")
    assert progress.batch_mode()
