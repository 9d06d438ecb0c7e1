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
    assert len(outputs) == 1
    text = outputs[0]["text"]
    assert text.count("fit/s]") == 1 and "100%|########  | 4/4" in text
    assert text.startswith("starting\n") and text.rstrip().endswith("done: 4 fits")
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
