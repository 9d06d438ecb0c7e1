"""Notebooks are committed clean, open with a description, and take literal parameters."""

import ast
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opens_with_description_and_literal_parameters(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "Reads" in first.source and "Writes" in first.source
    assert "Time" in first.source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    tree = ast.parse(tagged[0].source)
    names = []
    for node in tree.body:
        assert isinstance(node, ast.Assign), ast.dump(node)[:80]
        ast.literal_eval(node.value)  # literal values only: no calls, no names
        names += [t.id for t in node.targets]
    assert {"preset", "experiment", "group"} <= set(names)
    for line in tagged[0].source.splitlines():
        if "=" in line:
            assert "#" in line, f"parameter without a comment: {line}"
    # papermill reads every parameter and its comment (its parser gives up on a line whose
    # comment holds "=", and `papermill --help-notebook` then leaves the parameter out)
    from papermill.translators import PythonTranslator

    assert [p.name for p in PythonTranslator.inspect({"source": tagged[0].source})] == names


BAD_PARAMETERS = [
    ("group", "D", ["'group'", "'D'", "A, B, C, all"]),
    ("batch_size", "ten", ["'batch_size'", "'ten'", "integer"]),
]


@pytest.mark.parametrize("param, value, words", BAD_PARAMETERS)
def test_bad_parameters_fail_in_the_first_code_cell_under_papermill(param, value, words,
                                                                    tmp_path):
    """End to end on one notebook (a kernel started by papermill, parameters injected): the
    error names the parameter, its value and what is allowed, in the first cell after the
    parameters. Every notebook's first cell is checked the same way in-process below (a kernel
    per notebook and parameter cost 160 s of CI for the same check)."""
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(ROOT / "notebooks" / "06_feature_probes.ipynb"),
                                   str(out), parameters={param: value}, progress_bar=False,
                                   cwd=str(ROOT / "notebooks"))
    for w in words:
        assert w in str(err.value)
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    failed = [i for i, c in enumerate(code)
              if any(o.get("output_type") == "error" for o in c.outputs)]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])
              or "injected-parameters" in c.metadata.get("tags", [])]
    assert failed == [max(tagged) + 1]  # the first cell after the parameters


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.parametrize("param, value, words", BAD_PARAMETERS)
def test_bad_parameters_fail_in_the_first_code_cell(path, param, value, words, monkeypatch):
    """Each notebook's cells run as papermill would (the parameters cell, the parameters as
    papermill writes them, then the first code cell) in one namespace: the first code cell
    raises, naming the parameter, its value and what is allowed, before any work."""
    from papermill.translators import PythonTranslator

    monkeypatch.chdir(ROOT / "notebooks")
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    k = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {"__name__": "__main__"}
    exec(code[k].source, namespace)  # noqa: S102 - the notebook's own cells, as a kernel would
    exec(PythonTranslator.codify({param: value}), namespace)  # noqa: S102
    with pytest.raises(Exception) as err:  # noqa: B017, PT011 - the cell's own error type
        exec(code[k + 1].source, namespace)  # noqa: S102
    for w in words:
        assert w in str(err.value)


def test_notebook_parameters_do_not_reuse_a_workspace_parameters_name():
    """A notebook-local parameter named like a workspace one (09's scene side was `scene_px`,
    the simulator's rendered scene size) reads as the other on the page's parameter table and
    in `geofm params`."""
    import importlib

    import yaml

    workspace = set(yaml.safe_load((ROOT / "parameters" / "defaults.yaml").read_text()))
    for module in ("pretraining", "probes", "retrieval", "scene_maps", "segmentation"):
        local = set(importlib.import_module(f"geofm_lib.studies.{module}").PARAMETERS)
        assert not local & workspace, (module, sorted(local & workspace))
