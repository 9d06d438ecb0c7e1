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
import logging
import os
import re
import shutil
import time
from pathlib import Path

import yaml

from geofm_lib.catalog import DATASETS
from geofm_lib.config import FIELDS, Config, load_config, project_root
from geofm_lib.data.shards import load_manifest
from geofm_lib.errors import ConfigError, GeofmError, NotebookFailed
from geofm_lib.io import atomic_write_bytes, atomic_write_json, check_name, folder_lock
from geofm_lib.papers import paper_table_for
from geofm_lib.paths import build_folder, stage_dir
from geofm_lib.progress import get_logger
from geofm_lib.report.runinfo import git_state, load_stages, package_versions
from geofm_lib.ssl.pairs import may_have_pairs

log = get_logger()


# Metrics shown as index columns when present: (stage, metric key, column title).
INDEX_COLUMNS = (
    ("01_data_prep", "samples", "samples"),
    ("01_data_prep", "samples_per_s", "data prep samples/s"),
    ("02_explore_data", "mean_labels_per_image", "labels / image"),
    ("03_pretrain", "final_train_loss", "train loss"),
    ("03_pretrain", "final_val_loss", "val loss"),
    ("04_zero_shot_eval", "mean_R@1", "mean R@1"),
    ("04_zero_shot_eval", "mean_R@5", "mean R@5"),
    ("06_feature_probes", "probe_f2_micro", "linear probe F2 micro"),
)


def notebooks(root: Path | None = None) -> list[Path]:
    """The notebook chain, in order of the number in their names."""
    root = root or project_root()
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def private_paths(cfg: Config | None) -> list[tuple[str, str]]:
    """(absolute path, placeholder) pairs of a run's own folders that a report must not show:
    an absolute ``work_dir`` and absolute source roots (``source_path``, ``sources.*.root``)."""
    if cfg is None:
        return []
    pairs = []

    def add(value: str | None, label: str) -> None:
        if value and Path(value).expanduser().is_absolute():
            for form in {value.rstrip("/"), str(Path(value).expanduser().resolve())}:
                if form not in ("", "/"):
                    pairs.append((form, label))

    add(cfg.work_dir, "<work_dir>")
    add(cfg.source_path, "<source_path>")
    for ds, spec in (cfg.sources or {}).items():
        add(spec.root, f"<{ds} root>")
    return sorted(pairs, key=lambda p: -len(p[0]))  # longest first: nested paths stay whole


def scrub(text: str, root: Path, cfg: Config | None = None) -> str:
    """Remove the machine's absolute paths from report text: the run's absolute work folder and
    source roots (as placeholders), the project root (as ``.``) and the home folder (``~``)."""
    pairs = [*private_paths(cfg), (str(root), "."), (str(Path.home()), "~")]
    for path, repl in pairs:
        if path and path not in ("/", "."):
            text = text.replace(path, repl)
    return text


def to_html(executed: Path, root: Path, cfg: Config | None = None) -> str:
    """A self-contained HTML page of an executed notebook (images inline)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    return scrub(body, root, cfg)


class _WorkspaceParameters(logging.Filter):
    """papermill warns about a parameter that a notebook's parameters cell does not list; a
    workspace parameter is still read (``config.from_notebook`` takes every injected value),
    so that warning would mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Passed unknown parameter: ")
                    and msg.split(": ", 1)[1] in FIELDS)


def _execute(book: Path, out: Path, parameters: dict, root: Path,
             cfg: Config | None = None) -> None:
    """papermill one notebook into ``out``; its HTML page is written beside it, also when a
    cell fails (the page then shows the error). Both are scrubbed of absolute paths, also
    when the notebook failed."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    quiet = _WorkspaceParameters()
    logging.getLogger("papermill").addFilter(quiet)
    try:
        pm.execute_notebook(str(book), str(out), parameters=parameters,
                            cwd=str(root / "notebooks"), progress_bar=False,
                            kernel_name="python3", log_output=False)
    except PapermillExecutionError as exc:  # the page says where; the command says what
        shown = out.with_suffix(".html")
        try:
            shown = shown.relative_to(root)
        except ValueError:
            shown = Path(shown.parent.name) / shown.name
        raise NotebookFailed(
            f"{book.name} stopped in cell {exc.exec_count}: {exc.ename}: "
            f"{scrub(str(exc.evalue), root, cfg)} (the executed page with the cell: {shown})"
        ) from None
    finally:
        logging.getLogger("papermill").removeFilter(quiet)
        if out.exists():
            atomic_write_bytes(out.with_suffix(".html"), to_html(out, root, cfg).encode())
            atomic_write_bytes(out, scrub(out.read_text(), root, cfg).encode())


def run_page(book: Path, name: str, parameters: dict, reports_dir: Path | None = None) -> Path:
    """Execute one notebook outside the chain (e.g. the benchmarks) into ``reports/<name>/``:
    the executed notebook and its HTML page, paths scrubbed. Returns the HTML page."""
    root = project_root()
    folder = Path(reports_dir or root / "reports") / check_name(name, "report name")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GEOFM_PROGRESS", "text")
    os.environ["GEOFM_ROOT"] = str(root)
    out = folder / book.name
    with folder_lock(folder, f"the report folder reports/{name}", wait=False):
        try:
            _execute(book, out, parameters, root)
        finally:
            if out.exists():
                build_index(folder.parent)
    return out.with_suffix(".html")


def _not_applicable(book: Path, cfg) -> str | None:
    """Why a chain notebook cannot run on this data (None: it can)."""
    if book.stem.startswith("07_"):
        try:
            manifest = load_manifest(build_folder(cfg))
        except Exception:  # noqa: BLE001 - no shards yet: let the notebook say so
            return None
        if not may_have_pairs(manifest, cfg.dataset_keys):
            return ("no Sentinel-1/optical pairs in this data (self-supervised pairs need "
                    "group A, all, or paired sources)")
    return None


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

    cfg = load_config(preset, experiment, **overrides)  # fails here on bad parameters
    root = project_root()
    reports_dir = Path(reports_dir or root / "reports")
    books = notebooks(root)
    if chain:
        books = [b for b in books if any(b.name.startswith(c) for c in chain)]
        if not books:
            raise ConfigError(f"no notebook matches {chain}; have "
                              f"{', '.join(b.name for b in notebooks(root))}")
    final = reports_dir / check_name(cfg.name, "run_name")
    reports_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(final, f"the report folder reports/{cfg.name}", wait=False):
        return _run_report_locked(cfg, preset, experiment, chain, books, reports_dir, final,
                                  root, overrides)


def remove_stale(reports_dir: Path, name: str) -> list[str]:
    """Remove what failed runs of report ``name`` left: ``.<name>.<pid>.tmp`` and
    ``.<name>.<pid>.old`` folders (the caller holds the lock of ``name``; other names, even
    ``name.v2``, are never touched). Returns the names removed."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.\d+\.(tmp|old)$")
    removed = []
    for stale in Path(reports_dir).iterdir():
        if pattern.match(stale.name) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
            removed.append(stale.name)
    return removed


def _is_report(folder: Path) -> bool:
    """A folder a report run made: it holds run.json (or nothing at all)."""
    return (folder / "run.json").is_file() or not any(folder.iterdir())


def _run_report_locked(cfg, preset, experiment, chain, books, reports_dir: Path, final: Path,
                       root: Path, overrides: dict) -> Path:
    """The body of :func:`run_report`, run while holding the report folder's lock: the
    notebooks run into ``.<run>.<pid>.tmp/``, which replaces ``<run>/`` only when all
    succeeded. Only folders inside ``reports_dir`` that a report run made are ever removed."""
    if final.is_symlink() or (final.exists() and not (final.is_dir() and _is_report(final))):
        raise GeofmError(
            f"reports/{final.name} exists and is not a geofm report folder (no run.json); it "
            f"would be replaced: move it away or choose another run_name")
    remove_stale(reports_dir, final.name)
    tmp = reports_dir / f".{final.name}.{os.getpid()}.tmp"
    tmp.mkdir()
    params = {"preset": preset, "experiment": experiment,
              **{k: v for k, v in overrides.items() if v is not None}}
    os.environ.setdefault("GEOFM_PROGRESS", "text")
    os.environ["GEOFM_ROOT"] = str(root)
    timings = {}
    skipped = {}
    for book in books:
        why = _not_applicable(book, cfg)
        if why:  # e.g. the SSL notebook on data without S1/S2 pairs
            log.info("skipping %s: %s", book.name, why)
            skipped[book.stem] = why
            continue
        t0 = time.perf_counter()
        log.info("running %s (%s)", book.name, cfg.name)
        out = tmp / book.name
        _execute(book, out, params, root, cfg)
        timings[book.stem] = round(time.perf_counter() - t0, 1)
        log.info("%s done in %.1f s", book.name, timings[book.stem])
    stages = load_stages(cfg)
    metrics = {name: rec.get("metrics", {}) for name, rec in stages.items()
               if name in timings}
    previous = {}
    if chain and (final / "run.json").is_file():
        # part of the chain re-run: keep the other notebooks' pages, metrics and timings
        prev_info = json.loads((final / "run.json").read_text())
        if prev_info.get("params_hash") == cfg.hash:
            for f in final.iterdir():
                if f.is_file() and not (tmp / f.name).exists() and f.suffix in (".html",
                                                                                ".ipynb"):
                    shutil.copyfile(f, tmp / f.name)
            old_metrics = json.loads((final / "metrics.json").read_text()) \
                if (final / "metrics.json").is_file() else {}
            metrics = {**{k: v for k, v in old_metrics.items() if k not in timings}, **metrics}
            previous = {k: v for k, v in (prev_info.get("seconds") or {}).items()
                        if k not in timings}
    timings = {**previous, **timings}
    timings = {b.stem: timings[b.stem] for b in notebooks(root) if b.stem in timings}
    atomic_write_json(tmp / "metrics.json", metrics)
    atomic_write_bytes(tmp / "params.yaml", scrub(yaml.safe_dump(
        {k: v for k, v in cfg.to_dict().items()}, sort_keys=False), root, cfg).encode())
    atomic_write_json(tmp / "run.json", {
        "run": cfg.name, "preset": preset, "experiment": experiment,
        "params_hash": cfg.hash, "data_hash": cfg.data_hash, "git": git_state(root),
        "packages": package_versions(), "notebooks": list(timings),
        "seconds": timings, "skipped": skipped,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    for page in sorted(stage_dir(cfg).glob("*.html")):  # standalone pages (maps) of the run
        atomic_write_bytes(tmp / page.name, scrub(page.read_text(), root, cfg).encode())
    old = reports_dir / f".{final.name}.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)  # both inside reports_dir: the swap is two renames
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
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
        if folder.name.startswith("."):  # a run being assembled or swapped
            continue
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
    studies = sorted(Path(reports_dir).glob("study-*.html"))
    if studies:
        links = " ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.stem)}</a>'
                         for p in studies)
        page = page.replace("<table>", f"<p>Studies: {links}</p>\n<table>", 1)
    benches = sorted(Path(reports_dir).glob("bench-*/*.html"))
    if benches:
        links = " ".join(f'<a href="{html.escape(p.parent.name)}/{html.escape(p.name)}">'
                         f'{html.escape(p.stem)}</a>' for p in benches)
        page = page.replace("<table>", f"<p>Benchmarks: {links}</p>\n<table>", 1)
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


# --- seed 000's grouped study ------------------------------------------------------------------

STUDY_EXPERIMENTS = ("compiled", "group_A", "group_B", "group_C", "group_C_metadata")


def run_study(preset: str = "demo", experiments=None, reports_dir: Path | None = None,
              **overrides) -> Path:
    """Run the report chain for each experiment of seed 000 and build the comparison page.

    All parameter sets are validated before the first notebook runs.
    """
    experiments = list(experiments or STUDY_EXPERIMENTS)
    for exp in experiments:
        load_config(preset, exp, **overrides)  # every set fails here, before any work
    reports_dir = Path(reports_dir or project_root() / "reports")
    for exp in experiments:
        run_report(preset, exp, reports_dir=reports_dir, **overrides)
    return build_study(reports_dir, preset)


def _study_runs(reports_dir: Path, preset: str) -> dict[str, dict]:
    """{experiment: {"name", "metrics", "params"}} of the newest report of each study set."""
    runs = {}
    for run_json in sorted(Path(reports_dir).glob("*/run.json")):
        if run_json.parent.name.startswith("."):  # a run being assembled or swapped
            continue
        info = json.loads(run_json.read_text())
        exp = info.get("experiment")
        metrics_path = run_json.parent / "metrics.json"
        if info.get("preset") != preset or exp not in STUDY_EXPERIMENTS or \
                not metrics_path.is_file():
            continue
        zs = json.loads(metrics_path.read_text()).get("04_zero_shot_eval")
        if not zs:
            continue
        params = yaml.safe_load((run_json.parent / "params.yaml").read_text())
        if exp not in runs or info.get("finished", "") > runs[exp]["finished"]:
            runs[exp] = {"name": run_json.parent.name, "metrics": zs, "params": params,
                         "finished": info.get("finished", "")}
    return runs


def build_study(reports_dir: Path, preset: str) -> Path:
    """reports/study-<preset>.html: per dataset and K, R@K of every study run beside the
    paper's Table 2/3/4 value for the same dataset and setting."""
    runs = _study_runs(reports_dir, preset)
    exps = [e for e in STUDY_EXPERIMENTS if e in runs]
    datasets = [d for d in DATASETS if any(d in runs[e]["metrics"]["per_dataset"] for e in exps)]
    sections = []
    for k in (1, 5, 10):
        head = "".join(f"<th>{html.escape(e)}<br><span class=sub>{html.escape(runs[e]['name'])}"
                       f"</span></th>" for e in exps)
        body = []
        for ds in datasets:
            cells = []
            for e in exps:
                p = runs[e]["params"]
                title, paper = paper_table_for(p["group"], p["caption_metadata"])
                row = runs[e]["metrics"]["per_dataset"].get(ds)
                if row is None:
                    cells.append("<td class=na>not in this group</td>")
                    continue
                here, ci, chance = row.get(f"R@{k}"), row.get(f"R@{k}_ci95"), \
                    row.get(f"chance_R@{k}")
                ref = paper.get(ds)
                ref_k = "not reported" if ref is None else ("-" if ref[(1, 5, 10).index(k)]
                                                            is None else ref[(1, 5, 10).index(k)])
                txt = "-" if here is None else f"<b>{here:.1f}</b>"
                if ci:
                    txt += f" <span class=ci>[{ci[0]:.0f}, {ci[1]:.0f}]</span>"
                if chance is not None:
                    txt += f"<br><span class=chance>chance {chance:.1f}</span>"
                txt += (f"<br><span class=paper title='{html.escape(title)}'>paper "
                        f"{html.escape(str(ref_k))}</span>")
                cells.append(f"<td>{txt}</td>")
            body.append(f"<tr><th class=ds>{html.escape(ds)}<br><span class=sub>"
                        f"{len(DATASETS[ds].labels)} labels</span></th>{''.join(cells)}</tr>")
        sections.append(f"<h2>R@{k}</h2><table><thead><tr><th>dataset</th>{head}</tr></thead>"
                        f"<tbody>{''.join(body)}</tbody></table>")
    means = "".join(
        f"<tr><th>{html.escape(e)}</th><td>{_fmt(runs[e]['metrics'].get('mean_R@1'))}</td>"
        f"<td>{_fmt(runs[e]['metrics'].get('mean_chance_R@1'))}</td>"
        f"<td>{_fmt(runs[e]['metrics'].get('init_mean_R@1'))}</td>"
        f"<td>{html.escape(paper_table_for(runs[e]['params']['group'], runs[e]['params']['caption_metadata'])[0])}</td>"  # noqa: E501
        f"<td><a href='{html.escape(runs[e]['name'])}/04_zero_shot_eval.html'>04</a> "
        f"<a href='{html.escape(runs[e]['name'])}/map.html'>map</a></td></tr>" for e in exps)
    sources = sorted({f"{runs[e]['params']['source']}, {runs[e]['params']['samples_per_dataset']} "
                      f"scenes/dataset at {runs[e]['params']['image_px']} px" for e in exps})
    page = _STUDY_TEMPLATE.format(preset=html.escape(preset), n=len(exps),
                                  sources=html.escape("; ".join(sources) or "-"),
                                  means=means or "<tr><td colspan=6>no study runs yet</td></tr>",
                                  sections="\n".join(sections))
    out = Path(reports_dir) / f"study-{preset}.html"
    atomic_write_bytes(out, page.encode())
    return out


_STUDY_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>geofm study ({preset}): seed 000 side by side</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #1d2433; max-width: 1400px; }}
h1 {{ font-weight: 600; margin-bottom: .2rem; }} h2 {{ margin-top: 2rem; font-weight: 600; }}
p {{ color: #3b4457; max-width: 70rem; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ padding: .4rem .7rem; border-bottom: 1px solid #e3e6ec; text-align: left;
          vertical-align: top; }}
thead th {{ background: #f4f6fa; font-weight: 600; }}
th.ds {{ font-weight: 600; }}
.sub {{ color: #7a8396; font-weight: normal; font-size: 11px; }}
.ci {{ color: #5b6477; font-size: 11px; }} .chance {{ color: #7a8396; font-size: 11px; }}
.paper {{ color: #8a4b08; font-size: 11px; }} td.na {{ color: #b0b6c3; }}
a {{ color: #2457c5; text-decoration: none; margin-right: .5rem; }}
</style></head><body>
<h1>Seed 000 at {preset} scale: resolution groups side by side</h1>
<p>{n} study run(s) of preset <b>{preset}</b>. Each cell: zero-shot image-to-text R@K on the
validation split (percent of images with a true label among the top K label prompts) with its
95&nbsp;% bootstrap interval, the exact chance level for the same label counts, and, in brown,
the paper's value for the same dataset and setting (Table 2 compiled, Table 3 groups, Table 4
group C with metadata). "-" where K is at least the number of labels.
<b>Different data:</b> the paper trained on the real datasets (about 4.5 million 512&nbsp;px pairs);
these runs used: {sources}. Compare the pattern across settings, not the numbers.</p>
<table><thead><tr><th>experiment</th><th>mean R@1</th><th>mean chance R@1</th>
<th>mean R@1 at init</th><th>paper table</th><th>reports</th></tr></thead>
<tbody>{means}</tbody></table>
{sections}
<p><a href="index.html">all runs</a></p>
</body></html>
"""


def config_for(preset: str, experiment: str | None = None, **overrides) -> Config:
    """The config a report of these parameters uses (validation without running)."""
    return load_config(preset, experiment, **overrides)


_ABS_PATH = re.compile(r"(/home/|/root/|/Users/|[A-Z]:\\\\Users)")


def find_absolute_paths(text: str) -> list[str]:
    """Snippets of ``text`` that look like absolute home paths (for tests and checks)."""
    return [text[max(m.start() - 30, 0):m.end() + 30] for m in _ABS_PATH.finditer(text)]
