"""The report pipeline: papermill runs a chain of notebooks, nbconvert turns them into HTML.

``run_report`` executes the notebooks of a parameter set into ``reports/<run>/`` (executed
notebooks, one self-contained HTML each, ``metrics.json``, ``params.yaml``, ``run.json``) and
rebuilds ``reports/index.html``, a static page with every run's key metrics side by side. The
run folder is assembled in a temporary folder and swapped in when all notebooks succeeded, so a
failed run never replaces a good report. HTML is scrubbed of the machine's absolute paths.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import time
from pathlib import Path

import yaml

from .config import Config, load_config, project_root
from .progress import get_logger
from .runinfo import git_state, load_stages, package_versions
from .shards import atomic_write_bytes, atomic_write_json

log = get_logger()

# Metrics shown as index columns when present: (stage, metric key, column title).
INDEX_COLUMNS = (
    ("01_data_prep", "samples", "samples"),
    ("01_data_prep", "samples_per_s", "data prep samples/s"),
    ("02_explore_data", "mean_labels_per_image", "labels / image"),
    ("03_pretrain", "final_train_loss", "train loss"),
    ("04_zero_shot", "mean_R@1", "mean R@1"),
    ("04_zero_shot", "mean_R@5", "mean R@5"),
    ("06_features", "probe_f2_micro", "probe F2 (micro)"),
)


def notebooks(root: Path | None = None) -> list[Path]:
    """The notebook chain, in order of the number in their names."""
    root = root or project_root()
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def scrub(text: str, root: Path) -> str:
    """Remove the machine's absolute paths (project root, home) from report text."""
    for path, repl in ((str(root), "."), (str(Path.home()), "~")):
        if path and path not in ("/", "."):
            text = text.replace(path, repl)
    return text


def to_html(executed: Path, root: Path) -> str:
    """A self-contained HTML page of an executed notebook (images inline)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    return scrub(body, root)


def run_report(preset: str = "demo", experiment: str | None = None,
               chain: list[str] | None = None, reports_dir: Path | None = None,
               **overrides) -> Path:
    """Execute the notebook chain for a parameter set and publish it under reports/.

    Args:
        preset: size preset (``ci``, ``demo``, ``full``).
        experiment: experiment set (``group_A`` ... ``group_C_metadata``) or None.
        chain: notebook name prefixes to run (e.g. ``["01", "02"]``); None = all notebooks.
        reports_dir: where the static site lives; default ``<project>/reports``.
        **overrides: single parameters, as papermill ``-p`` would pass them.

    Returns:
        The run's report folder.
    """
    import papermill as pm

    cfg = load_config(preset, experiment, **overrides)  # fails here on bad parameters
    root = project_root()
    reports_dir = Path(reports_dir or root / "reports")
    books = notebooks(root)
    if chain:
        books = [b for b in books if any(b.name.startswith(c) for c in chain)]
        if not books:
            raise ValueError(f"no notebook matches {chain}; have "
                             f"{', '.join(b.name for b in notebooks(root))}")
    final = reports_dir / cfg.name
    tmp = reports_dir / f".{cfg.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    params = {"preset": preset, "experiment": experiment,
              **{k: v for k, v in overrides.items() if v is not None}}
    os.environ.setdefault("GEOFM_PROGRESS", "text")
    os.environ["GEOFM_ROOT"] = str(root)
    timings = {}
    for book in books:
        t0 = time.perf_counter()
        log.info("running %s (%s)", book.name, cfg.name)
        out = tmp / book.name
        try:
            pm.execute_notebook(str(book), str(out), parameters=params,
                                cwd=str(root / "notebooks"), progress_bar=False,
                                kernel_name="python3", log_output=False)
        finally:
            if out.exists():
                atomic_write_bytes(out.with_suffix(".html"),
                                   to_html(out, root).encode())
        timings[book.stem] = round(time.perf_counter() - t0, 1)
        log.info("%s done in %.1f s", book.name, timings[book.stem])
    stages = load_stages(cfg)
    metrics = {name: rec.get("metrics", {}) for name, rec in stages.items()
               if name in timings}
    atomic_write_json(tmp / "metrics.json", metrics)
    atomic_write_bytes(tmp / "params.yaml", yaml.safe_dump(
        {k: v for k, v in cfg.to_dict().items()}, sort_keys=False).encode())
    atomic_write_json(tmp / "run.json", {
        "run": cfg.name, "preset": preset, "experiment": experiment,
        "params_hash": cfg.hash, "data_hash": cfg.data_hash, "git": git_state(root),
        "packages": package_versions(), "notebooks": [b.stem for b in books],
        "seconds": timings, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    for f in tmp.glob("*.ipynb"):  # executed notebooks: scrub paths there too
        f.write_text(scrub(f.read_text(), root))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    build_index(reports_dir)
    return final


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v)) if v is not None else ""


def build_index(reports_dir: Path) -> Path:
    """Rebuild reports/index.html from every reports/<run>/run.json."""
    runs = []
    for run_json in sorted(Path(reports_dir).glob("*/run.json")):
        folder = run_json.parent
        info = json.loads(run_json.read_text())
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        runs.append((folder.name, info, metrics, sorted(folder.glob("*.html"))))
    cols = [c for c in INDEX_COLUMNS if any(c[1] in m.get(c[0], {}) for _, _, m, _ in runs)]
    head = "".join(f"<th>{html.escape(t)}</th>" for _, _, t in cols)
    rows = []
    for name, info, metrics, pages in runs:
        links = " ".join(f'<a href="{html.escape(name)}/{html.escape(p.name)}">'
                         f'{html.escape(p.stem)}</a>' for p in pages)
        git = info.get("git") or {}
        commit = (git.get("commit") or "")[:8] + (" (dirty)" if git.get("dirty") else "")
        cells = "".join(f"<td class=num>{_fmt(metrics.get(s, {}).get(k))}</td>"
                        for s, k, _ in cols)
        secs = sum((info.get("seconds") or {}).values())
        rows.append(
            f"<tr><td><b>{html.escape(name)}</b></td><td>{html.escape(str(info.get('preset')))}"
            f"</td><td>{html.escape(str(info.get('experiment') or '-'))}</td>{cells}"
            f"<td class=num>{secs:.0f}</td><td><code>{html.escape(commit)}</code></td>"
            f"<td>{html.escape(info.get('finished', ''))}</td><td>{links}</td></tr>")
    page = _INDEX_TEMPLATE.format(
        head=head, rows="\n".join(rows) or
        '<tr><td colspan=20>No runs yet: <code>make report</code> makes one.</td></tr>',
        n=len(runs))
    out = Path(reports_dir) / "index.html"
    atomic_write_bytes(out, page.encode())
    return out


_INDEX_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>geofm reports</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #1d2433; max-width: 1400px; }}
h1 {{ font-weight: 600; margin-bottom: .2rem; }}
p.sub {{ color: #5b6477; margin-top: 0; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ padding: .45rem .7rem; border-bottom: 1px solid #e3e6ec; text-align: left;
          vertical-align: top; }}
th {{ background: #f4f6fa; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr:hover td {{ background: #fafbfd; }}
a {{ color: #2457c5; text-decoration: none; margin-right: .6rem; }}
a:hover {{ text-decoration: underline; }}
code {{ font-size: 12px; }}
</style></head><body>
<h1>geofm reports</h1>
<p class="sub">{n} run(s). Each row is one parameter set executed end to end with papermill;
links open the executed notebooks as HTML. Metrics are those the notebooks recorded.</p>
<table><thead><tr><th>run</th><th>preset</th><th>experiment</th>{head}<th>seconds</th>
<th>commit</th><th>finished</th><th>reports</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def config_for(preset: str, experiment: str | None = None, **overrides) -> Config:
    """The config a report of these parameters uses (validation without running)."""
    return load_config(preset, experiment, **overrides)


_ABS_PATH = re.compile(r"(/home/|/root/|/Users/|[A-Z]:\\\\Users)")


def find_absolute_paths(text: str) -> list[str]:
    """Snippets of ``text`` that look like absolute home paths (for tests and checks)."""
    return [text[max(m.start() - 30, 0):m.end() + 30] for m in _ABS_PATH.finditer(text)]
