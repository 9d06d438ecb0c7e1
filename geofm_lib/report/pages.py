"""What an executed notebook shows as an HTML page, beyond what it holds as a notebook.

The executed ``.ipynb`` keeps every cell as it ran (nbval re-executes it; a user opens it in
JupyterLab). Its HTML page is for reading, so :func:`tidy` makes three changes to a copy:

* the notebook's parameters cell (``None`` for "the parameter set's value") and papermill's
  injected cell become one compact table of the values the run resolved them to, marked where
  the run set them;
* progress bars written as text lines every 10 s (batch runs) are cut to the last line of each
  bar; the log and the ``.ipynb`` keep them all;
* a cell whose only result is a bare path repr (``PosixPath(...)``) shows nothing.
"""

from __future__ import annotations

import ast
import copy
import html
import re

import nbformat

PROGRESS = re.compile(r"^(?P<desc>[^\r\n|]*?):\s+\d+%\|[^|\n]*\|\s*(?P<n>\d+)/(?P<total>\d+)"
                      r"\s*\[[^\]\n]*\]")
_PATH_REPR = re.compile(r"^(Posix|Windows)?Path\('.*'\)$")


def _assignments(source: str) -> list[tuple[str, object, str]]:
    """``(name, literal value, comment)`` of each top-level ``name = literal`` in a cell."""
    lines = source.splitlines()
    out = []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return out
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            line = lines[node.lineno - 1]
            comment = line.split("#", 1)[1].strip() if "#" in line[node.value.end_col_offset:] \
                else ""
            out.append((node.targets[0].id, value, comment))
    return out


def _shown(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value) or "[]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) or "{}"
    return str(value)


def resolved_parameters(params_source: str, injected_source: str, cfg=None) -> list[dict]:
    """The notebook's parameters with the values the run used: the run's configuration for
    workspace parameters, else the injected value, else the notebook's default."""
    injected = {name: value for name, value, _ in _assignments(injected_source)}
    rows = []
    for name, default, comment in _assignments(params_source):
        value = injected.get(name, default)
        if cfg is not None and hasattr(cfg, name) and name not in ("preset", "experiment"):
            value = getattr(cfg, name)
            if name == "datasets" and value is None:
                value = list(cfg.dataset_keys)
        rows.append({"name": name, "value": value, "what": comment,
                     "set": name in injected and injected[name] is not None})
    return rows


def parameter_table(rows: list[dict], per_row: int = 2) -> str:
    """A compact HTML table, ``per_row`` parameters side by side; what each means on hover."""
    cells = []
    for r in rows:
        name = html.escape(r["name"])
        value = html.escape(_shown(r["value"]))
        if r["set"]:
            value = f"<b>{value}</b>"
        cells.append(f'<td title="{html.escape(r["what"])}"><code>{name}</code></td>'
                     f'<td>{value}</td>')
    body = "".join("<tr>" + "".join(cells[i:i + per_row]) + "</tr>"
                   for i in range(0, len(cells), per_row))
    return ("<p><b>Parameters of this run</b> (bold: set for the run; hover a name for what it "
            "means; <code>papermill -p NAME VALUE</code> sets one)</p>"
            f'<table class="geofm-params">{body}</table>')


def collapse_progress(text: str) -> str:
    """Text output with each progress bar shown once, at its last state: a bar's earlier
    states go even when log lines came between them (a bar that counts on is the same bar;
    one that starts again from a lower count is a new one). A log line written onto the end
    of a bar line (no newline between) gets its own line."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        # a carriage return starts the line again, as in a terminal
        line = next((part for part in reversed(raw.split("\r")) if part), "")
        m = PROGRESS.match(line)
        if m and line[m.end():].strip():
            lines += [line[:m.end()], line[m.end():]]
        else:
            lines.append(line)
    kept: list[str | None] = []
    open_bars: dict[str, tuple[int, int, int]] = {}  # desc -> (index in kept, n, total)
    for line in lines:
        m = PROGRESS.match(line)
        if m:
            desc, n, total = m.group("desc"), int(m.group("n")), int(m.group("total"))
            prev = open_bars.get(desc)
            if prev is not None and prev[2] == total and n >= prev[1]:
                kept[prev[0]] = None  # the same bar, further on: its earlier state goes
            open_bars[desc] = (len(kept), n, total)
        kept.append(line)
    return "\n".join(k for k in kept if k is not None)


def tidy(nb, cfg=None):
    """A copy of an executed notebook (nbformat node) arranged for its HTML page."""
    nb = copy.deepcopy(nb)
    cells = nb.cells
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in cells]
    p = next((i for i, t in enumerate(tags) if "parameters" in t), None)
    j = next((i for i, t in enumerate(tags) if "injected-parameters" in t), None)
    if p is not None:
        rows = resolved_parameters(cells[p].source, cells[j].source if j is not None else "",
                                   cfg)
        table = nbformat.v4.new_markdown_cell(parameter_table(rows))
        cells[p] = table
        if j is not None:
            cells.pop(j)
    for cell in cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if outputs and outputs[-1].get("output_type") == "stream" \
                        and outputs[-1].get("name") == out.get("name"):
                    outputs[-1]["text"] = collapse_progress(outputs[-1]["text"] + out["text"])
                    continue  # one output per stream, as a reader sees it
                out["text"] = collapse_progress(out["text"])
            elif out.get("output_type") == "execute_result":
                plain = out.get("data", {}).get("text/plain", "")
                if set(out.get("data", {})) == {"text/plain"} and _PATH_REPR.match(plain):
                    continue
            outputs.append(out)
        cell["outputs"] = outputs
    return nb
