"""What an executed notebook shows as an HTML page, beyond what it holds as a notebook.

The executed ``.ipynb`` keeps every cell as it ran (nbval re-executes it; a user opens it in
JupyterLab). Its HTML page is for reading, so :func:`tidy` makes three changes to a copy:

* the notebook's parameters cell (``None`` for "the parameter set's value") and papermill's
  injected cell become one compact table of the values the run resolved them to, marked where
  the run set them;
* progress bars written as text lines every 10 s (batch runs) are cut to the last line of each
  bar; the log and the ``.ipynb`` keep them all;
* a cell whose only result is a bare path repr (``PosixPath(...)``) shows nothing;
* a bookkeeping cell (tagged ``bookkeeping``: the one that writes the stage record) is left
  out, unless it failed.

The page itself (``templates/geofm``, issue 38) is JupyterLab's with nothing loaded from
outside it, a real title, a header (:func:`header`: the way to the index and to the run's other
notebooks, filled in by :func:`link_pages` once the run's pages exist; a summary box with the
stage's key numbers; the contents from its headings, :func:`add_contents`), and code and logs
folded under ``<details>`` (no script needed).
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


def _failed(cell) -> bool:
    return any(o.get("output_type") == "error" for o in cell.get("outputs", []))


def tidy(nb, cfg=None):
    """A copy of an executed notebook (nbformat node) arranged for its HTML page."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "bookkeeping" not in c.get("metadata", {}).get(
        "tags", []) or _failed(c)]
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
        cell["outputs"] = _logs_apart(outputs)
    return nb


_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d geofm: ")


def _logs_apart(outputs: list) -> list:
    """Log lines (``HH:MM:SS geofm: ...``) and progress bars of a cell's stdout moved into a
    stream of their own, ahead of the rest, which the page folds as the cell's log; what the
    cell prints as its results stays as it is."""
    out = []
    for o in outputs:
        if o.get("output_type") != "stream" or o.get("name") != "stdout":
            out.append(o)
            continue
        lines = o["text"].split("\n")
        logs = [line for line in lines if _LOG_LINE.match(line) or PROGRESS.match(line)]
        if not logs:
            out.append(o)
            continue
        rest = "\n".join(line for line in lines
                         if not (_LOG_LINE.match(line) or PROGRESS.match(line))).strip("\n")
        out.append(nbformat.v4.new_output("stream", name="stderr", text="\n".join(logs)))
        if rest:
            out.append(nbformat.v4.new_output("stream", name="stdout", text=rest + "\n"))
    return out


# --- the page around the notebook ------------------------------------------------------------

NAV = re.compile(r"<!--geofm:nav-->.*?<!--/geofm:nav-->", re.S)
TOC = "<!--geofm:toc-->"
_HEADING = re.compile(r'<h([1-3]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
_TAG = re.compile(r"<[^>]+>")

CSS = """
.geofm-top { margin: 0 20px 0 calc(var(--jp-cell-prompt-width, 64px) + 20px); }
.geofm-nav { font: 14px/1.4 system-ui, sans-serif; padding: 6px 0 10px;
  border-bottom: 1px solid #ddd; margin-bottom: 12px; }
.geofm-nav a { text-decoration: none; }
.geofm-nav .geofm-run { color: #555; margin: 0 12px; }
.geofm-summary { font: 14px/1.5 system-ui, sans-serif; background: #f4f8fc;
  border: 1px solid #c9dbec; border-radius: 6px; padding: 8px 14px; margin: 8px 0 12px; }
.geofm-summary.geofm-failed { background: #fdf1f0; border-color: #e8b4ae; }
.geofm-summary ul { margin: 4px 0; padding-left: 20px; }
.geofm-summary .geofm-meta { color: #555; font-size: 12px; }
.geofm-summary .geofm-warn { color: #b42318; }
.geofm-toc { font: 13px/1.5 system-ui, sans-serif; margin: 0 0 12px; }
.geofm-toc ul { margin: 2px 0; padding-left: 20px; }
details.geofm-code > summary, details.geofm-log > summary { cursor: pointer; color: #666;
  font: 12px system-ui, sans-serif; margin: 2px 0 2px 70px; }
details.geofm-log > summary { margin-left: 0; }
"""


def page_heading(nb) -> str:
    """The notebook's first level-1 heading (plain text), or its name."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return str(nb.metadata.get("title") or "notebook")


def page_title(nb, run: str) -> str:
    """"<the notebook's first heading> · <run> · geofm" (plain text)."""
    return f"{page_heading(nb)} · {run} · geofm"


def header(run: str, heading: str, summary: list[str] | None, failed: str | None = None,
           executed: str | None = None) -> str:
    """The top of a page: the navigation (the index; the run's other notebooks once
    :func:`link_pages` has run), the summary box (``summary``: HTML lines, already escaped;
    ``failed``: why the notebook stopped) and the place of the contents. ``run`` and
    ``heading`` are user text (escaped here)."""
    nav = _nav(run)
    if summary is None and not failed:  # a page outside a run's chain (the benchmarks)
        return f'<div class="geofm-top">{nav}{TOC}</div>'
    lines = []
    if failed:
        lines.append(f"<b>This notebook stopped with an error</b>: {html.escape(failed)}; the "
                     f"failing cell is shown below.")
    lines += list(summary or [])
    if not lines:
        lines.append("No numbers recorded by this notebook.")
    meta = (f'<div class="geofm-meta">{html.escape(executed)}{REUSED_EMPTY}</div>'
            if executed else "")
    box = (f'<div class="geofm-summary{" geofm-failed" if failed else ""}">'
           f'<b>Key numbers</b> <span class="geofm-meta">{html.escape(heading)}</span><ul>'
           + "".join(f"<li>{x}</li>" for x in lines)
           + f"</ul>{meta}</div>")
    return f'<div class="geofm-top">{nav}{box}{TOC}</div>'


REUSED_EMPTY = '<span class="geofm-reused"></span>'
_REUSED = re.compile(r'<span class="geofm-reused">.*?</span>', re.S)


def mark_reused(page: str, when: str) -> str:
    """A page republished from the execution cache says so, under its key numbers (the
    execution it shows is an earlier one: its own stamp stays)."""
    note = (f'<span class="geofm-reused"><br><b>Republished {html.escape(when)} UTC without '
            f'executing</b>: its source, parameters, library and inputs are those of the '
            f'execution above (<code>geofm report --force</code> executes it again)</span>')
    return _REUSED.sub(lambda _: note, page, count=1)


def add_contents(page: str) -> str:
    """The contents (the page's h2 and h3 headings, linked) in place of the placeholder."""
    entries = [(int(level), anchor, _TAG.sub("", text).replace("¶", "").strip())
               for level, anchor, text in _HEADING.findall(page) if level != "1"]
    if not entries:
        return page.replace(TOC, "")
    items = "".join(
        f'<li style="margin-left:{(level - 2) * 16}px"><a href="#{anchor}">{text}</a></li>'
        for level, anchor, text in entries)
    return page.replace(TOC, f'<details class="geofm-toc" open><summary>Contents</summary>'
                             f'<ul>{items}</ul></details>', 1)


def link_pages(folder, order: list[str], run: str | None = None) -> int:
    """Give every notebook page in ``folder`` its way to the index and to the previous and
    next notebook page that exists there (``order``: the notebooks' stems in chain order;
    ``run``: the run's name, default the folder's). Returns how many pages were rewritten."""
    from pathlib import Path

    from geofm_lib.io import atomic_write_bytes

    folder = Path(folder)
    present = [stem for stem in order if (folder / f"{stem}.html").is_file()]
    run = run or folder.name
    done = 0
    for i, stem in enumerate(present):
        page = folder / f"{stem}.html"
        text = page.read_text(encoding="utf-8")
        if not NAV.search(text):
            continue
        nav = _nav(run, present[i - 1] if i > 0 else None,
                   present[i + 1] if i + 1 < len(present) else None)
        m = NAV.search(text)
        new = text[:m.start()] + nav + text[m.end():]
        if new != text:
            atomic_write_bytes(page, new.encode("utf-8"))
            done += 1
    return done


def _nav(run: str, prev: str | None = None, nxt: str | None = None) -> str:
    """The navigation of a notebook page: the index, the run, and the previous and next pages
    (their stems; None: none), between the markers :func:`link_pages` replaces."""
    before = (f'<a href="{html.escape(prev)}.html">&larr; {html.escape(_label(prev))}</a>'
              if prev else "")
    after = (f'<a href="{html.escape(nxt)}.html">{html.escape(_label(nxt))} &rarr;</a>'
             if nxt else "")
    return (f'<!--geofm:nav--><nav class="geofm-nav"><a href="../index.html">&#8962; all runs'
            f'</a><span class="geofm-run">run <b>{html.escape(run)}</b></span>{before}'
            f'{" · " if before and after else ""}{after}</nav><!--/geofm:nav-->')


def _label(stem: str) -> str:
    """``07_ssl_pretrain`` -> ``07 ssl pretrain``."""
    return stem.replace("_", " ")
