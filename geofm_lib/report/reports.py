"""The report pipeline: papermill runs a chain of notebooks, nbconvert turns them into HTML.

``run_report`` executes the notebooks of a parameter set into ``reports/<run>/`` (executed
notebooks, one self-contained HTML each, ``metrics.json``, ``params.yaml``, ``run.json``) and
rebuilds ``reports/index.html``, a static page with every run's key metrics side by side. The
run folder is assembled in a temporary folder and swapped in at the end. A chain whose notebook
fails stops there and still publishes the pages that ran (the failed one shows its error),
marked failed in the index; it never replaces a good report of the same run (it goes to
``<run>-failed/`` then). HTML is scrubbed of the machine's absolute paths.
"""

from __future__ import annotations

import difflib
import hashlib
import html
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from geofm_lib import records
from geofm_lib.config import (
    FIELDS,
    NOT_HASHED,
    Config,
    is_parameter_file,
    load_config,
    project_root,
)
from geofm_lib.data.shards import iter_shards, load_manifest, shard_paths
from geofm_lib.errors import ConfigError, GeofmError, NotebookFailed, environment_hint
from geofm_lib.io import atomic_write_bytes, atomic_write_json, check_name, folder_lock
from geofm_lib.paths import build_folder, stage_dir
from geofm_lib.progress import get_logger
from geofm_lib.report import graph, pages
from geofm_lib.report.index import STUDY_EXPERIMENTS, build_index, build_study
from geofm_lib.report.pages import tidy
from geofm_lib.report.runinfo import git_state, load_stages, package_versions
from geofm_lib.report.summary import headline, key_metrics
from geofm_lib.ssl.pairs import may_have_pairs
from geofm_lib.studies.scene_maps import not_applicable as scene_not_applicable

log = get_logger()




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
    if cfg.experiment and is_parameter_file(cfg.experiment):
        add(str(Path(cfg.experiment).parent), "<parameter file folder>")
    add(cfg.source_path, "<source_path>")
    for ds, spec in (cfg.sources or {}).items():
        add(spec.root, f"<{ds} root>")
    return sorted(pairs, key=lambda p: -len(p[0]))  # longest first: nested paths stay whole


def scrub(text: str, root: Path, cfg: Config | None = None, markup: bool = False) -> str:
    """Remove the machine's absolute paths from report text: the run's absolute work folder and
    source roots (as placeholders), the project root (as ``.``) and the home folder (``~``).
    ``markup``: the text is HTML, so the placeholders go in escaped (``&lt;work_dir&gt;``):
    put in as they are, ``<name root>`` would be a tag."""
    pairs = [*private_paths(cfg), (str(root), "."), (str(Path.home()), "~")]
    for path, repl in pairs:
        if path and path not in ("/", "."):
            text = text.replace(path, html.escape(repl) if markup else repl)
    return text


def scrub_notebook(text: str, root: Path, cfg: Config | None = None) -> str:
    """:func:`scrub` over an executed notebook's JSON: HTML outputs (``text/html``) get the
    escaped placeholders, everything else the plain ones."""
    nb = json.loads(text)

    def walk(node, markup: bool):
        if isinstance(node, str):
            return scrub(node, root, cfg, markup)
        if isinstance(node, list):
            return [walk(v, markup) for v in node]
        if isinstance(node, dict):
            return {k: walk(v, markup or k == "text/html") for k, v in node.items()}
        return node

    return json.dumps(walk(nb, False), indent=1, ensure_ascii=False) + "\n"


TEMPLATES = Path(__file__).with_name("templates")


def to_html(executed: Path, root: Path, cfg: Config | None = None,
            summary: list[str] | None = None, failed: str | None = None,
            provenance: str | None = None) -> str:
    """A self-contained HTML page of an executed notebook (images inline, nothing loaded from
    outside the page), arranged for reading (``pages.tidy``: the resolved parameters as a
    table, progress bars cut to their last line, the bookkeeping cell left out) in the
    workspace's layout (``templates/geofm``: title, navigation, ``summary`` box with the
    stage's key numbers or why it ``failed``, contents, code and logs folded). ``provenance``:
    what the execution was keyed on (:func:`graph.describe`), shown under the key numbers."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = tidy(nbformat.read(executed, as_version=4), cfg)
    run = cfg.name if cfg is not None else executed.parent.name.lstrip(".").split(".")[0]
    heading = pages.page_heading(nb)
    nb.metadata["title"] = pages.page_title(nb, run)
    stamp = nb.metadata.get("papermill", {}).get("end_time")
    executed_at = (f"executed {stamp[:19].replace('T', ' ')} UTC with papermill; the .ipynb "
                   f"beside this page keeps every cell and output") if stamp else None
    if executed_at and provenance:
        executed_at += f". Keyed on {provenance}"
    exporter = HTMLExporter(template_name="geofm", embed_images=True,
                            extra_template_basedirs=[str(TEMPLATES)])
    resources = {"geofm": {"css": pages.CSS, "header": pages.header(
        run, heading, summary, failed, executed_at)}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return scrub(pages.add_contents(body), root, cfg, markup=True)


def _summary(book: Path, cfg: Config | None) -> list[str] | None:
    """The key numbers of the stage record ``book`` just wrote (HTML lines; None: a page
    outside a run's chain, which has no record)."""
    if cfg is None:
        return None
    rec = load_stages(cfg).get(book.stem)
    if not rec:
        return []
    try:
        typed = records.read(book.stem, rec.get("metrics", {}), f"the {book.stem} record") \
            if book.stem in records.RECORDS else rec.get("metrics", {})
    except records.RecordError as exc:
        return [html.escape(str(exc))]
    _, words = headline(book.stem, typed)  # what does not clear its chance level or floor
    return key_metrics(book.stem, typed) + (
        [f'<b class="geofm-warn">{words}</b>'] if words else [])


class _WorkspaceParameters(logging.Filter):
    """papermill warns about a parameter that a notebook's parameters cell does not list; a
    workspace parameter is still read (``config.from_notebook`` takes every injected value),
    so that warning would mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Passed unknown parameter: ")
                    and msg.split(": ", 1)[1] in FIELDS)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _kernel_manager(threads: int | None = None):
    """The kernel manager papermill starts kernels with. On Linux the kernel listens on Unix
    sockets named after its own connection file, not on TCP ports: with TCP, two notebook runs
    started at the same moment (two reports at once) can pick the same free ports, and one
    client then waits forever for a kernel that never receives its requests. ``threads``: the
    kernel's share of the cores when notebooks run side by side (its environment's
    OMP_NUM_THREADS and friends, which torch and BLAS read when they start)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class Manager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw):
            if threads is not None:
                kw["env"] = {**kw.get("env", os.environ),
                             **{v: str(threads) for v in THREAD_VARIABLES}}
            return await super()._async_pre_start_kernel(**kw)

    if not sys.platform.startswith("linux"):  # macOS socket paths can exceed their limit
        return Manager

    class UnixSocketKernelManager(Manager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _unique_socket_prefix(self) -> str:  # one prefix per kernel, never shared
            return os.path.join(tempfile.gettempdir(), f"geofm-kernel-{uuid.uuid4().hex}")

    return UnixSocketKernelManager


def _stuck_cell(out: Path, message: str) -> str:
    """Which cell a timeout stopped: its number among the code cells and its first line."""
    import nbformat

    try:
        nb = nbformat.read(out, as_version=4)
    except Exception:  # noqa: BLE001 - the notebook may not be written yet
        return message.splitlines()[0][:200]
    code = [c for c in nb.cells if c.cell_type == "code"]
    started = [n for n, c in enumerate(code, 1)
               if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:  # papermill stamps each cell as it starts: the last stamped one stopped
        return message.splitlines()[0][:200]
    cell = code[started[-1] - 1]
    first = next((line for line in cell.source.splitlines() if line.strip()), "")
    return f"code cell {started[-1]}: {first[:120]!r}"


def _execute(book: Path, out: Path, parameters: dict, root: Path,
             cfg: Config | None = None, provenance=None, threads: int | None = None) -> None:
    """papermill one notebook into ``out``; its HTML page is written beside it, also when a
    cell fails (the page then shows the error). Both are scrubbed of absolute paths, also
    when the notebook failed. ``provenance``: called after a successful execution, the line
    saying what it was keyed on (shown on the page). ``threads``: the kernel's thread count
    (OMP_NUM_THREADS and friends; None: as this process has it)."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    quiet = _WorkspaceParameters()
    logging.getLogger("papermill").addFilter(quiet)
    failed = "it did not finish"
    timeout = (cfg.cell_timeout_s if cfg is not None
               else Config.model_fields["cell_timeout_s"].default)
    try:
        # the kernel starts in notebooks/ (nbclient's resources path), not through papermill's
        # cwd=, which changes this process's directory: two notebooks side by side would
        # leave it in the wrong place
        pm.execute_notebook(str(book), str(out), parameters=parameters,
                            resources={"metadata": {"path": str(root / "notebooks")}},
                            progress_bar=False,
                            kernel_name="python3", log_output=False,
                            kernel_manager_class=_kernel_manager(threads),
                            execution_timeout=timeout)
        failed = None
    except CellTimeoutError as exc:  # a stuck cell ends the chain instead of waiting forever
        failed = f"a cell ran longer than cell_timeout_s={timeout} s"
        raise NotebookFailed(
            f"{book.name}: a cell ran longer than cell_timeout_s={timeout} s and was stopped "
            f"({_stuck_cell(out, str(exc))}); if it is slow rather than stuck, raise "
            f"cell_timeout_s (-p cell_timeout_s=...)") from None
    except DeadKernelError as exc:
        failed = "the kernel died (out of memory?)"
        raise NotebookFailed(f"{book.name}: the kernel died ({str(exc)[:200]}); the machine "
                             f"may have run out of memory") from None
    except PapermillExecutionError as exc:  # the page says where; the command says what
        failed = f"{exc.ename}: {scrub(str(exc.evalue), root, cfg)}"[:400]
        shown = out.with_suffix(".html")
        try:
            shown = shown.relative_to(root)
        except ValueError:
            shown = Path(shown.parent.name) / shown.name
        hint = environment_hint(f"{exc.ename}: {exc.evalue}")
        raise NotebookFailed(
            f"{book.name} stopped in cell {exc.exec_count}: {exc.ename}: "
            f"{scrub(str(exc.evalue), root, cfg)} (the executed page with the cell: {shown})"
            + (f"; {hint}" if hint else "")) from None
    finally:
        logging.getLogger("papermill").removeFilter(quiet)
        if out.exists():
            page = to_html(out, root, cfg, summary=None if failed else _summary(book, cfg),
                           failed=failed,
                           provenance=provenance() if provenance and not failed else None)
            atomic_write_bytes(out.with_suffix(".html"), page.encode())
            atomic_write_bytes(out, scrub_notebook(out.read_text(), root, cfg).encode())


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


def _not_applicable(book: Path, cfg, params: dict | None = None) -> str | None:
    """Why a chain notebook cannot run on this data (None: it can): 07 and 08 need S1/S2
    pairs, or ``ssl_mode=augment`` on single-sensor data (hyperspectral scenes); 08 also needs
    masks in the shards."""
    if book.stem.startswith(("07_", "08_")):
        try:
            manifest = load_manifest(build_folder(cfg))
        except Exception:  # noqa: BLE001 - no shards yet: let the notebook say so
            return None
        single = cfg.ssl_mode == "augment"  # single-sensor images (07 pretrains on them)
        if not may_have_pairs(manifest, cfg.dataset_keys) and not single:
            return ("no Sentinel-1/optical pairs in this data (self-supervised pairs need "
                    "group A, all, or paired sources; ssl_mode=augment pretrains on "
                    "single-sensor images)")
        if book.stem.startswith("08_") and not _has_masks(cfg):
            return ("the shards carry no masks (the simulator, class_masks and "
                    "agriculture_vision sources write them; rebuild older shards with 01)")
    if book.stem.startswith("09_"):
        return scene_not_applicable(cfg, params or {})
    return None


def _has_masks(cfg) -> bool:
    """Whether the first training sample of some dataset of the run has dense labels."""
    folder = build_folder(cfg)
    for ds in cfg.dataset_keys:
        paths = shard_paths(folder, "train", ds)[:1]
        for s in iter_shards(paths):
            if s["json"].get("dense"):
                return True
            break
    return False


def notebook_parameters(book: Path) -> dict:
    """The parameters papermill reads from ``book``'s parameters cell (name -> default)."""
    import papermill as pm

    return {k: v.get("default") for k, v in pm.inspect_notebook(str(book)).items()}


def local_parameters(books: list[Path]) -> dict[str, dict[str, dict]]:
    """Each notebook's own parameters (those that are not workspace parameters): notebook stem
    -> name -> {"default": its text, "help": the comment beside it}."""
    import papermill as pm

    out = {}
    for book in books:
        found = pm.inspect_notebook(str(book))
        out[book.stem] = {k: {"default": v.get("default"), "help": v.get("help") or ""}
                          for k, v in found.items()
                          if k not in FIELDS and k not in ("preset", "experiment")}
    return out


def route_overrides(books: list[Path], overrides: dict) -> tuple[dict, dict[str, dict]]:
    """``-p`` values split into workspace parameters and notebook parameters: a name that is
    not a workspace parameter goes to every notebook of ``books`` that has it (``n_boot`` to
    04, 06, 07 and 08; ``seg_lr`` to 08). A name neither knows is an error naming both lists.

    Returns (workspace overrides, {notebook prefix: {name: value}})."""
    workspace = {k: v for k, v in overrides.items() if k in FIELDS}
    rest = {k: v for k, v in overrides.items() if k not in FIELDS and v is not None}
    routed: dict[str, dict] = {}
    if not rest:
        return workspace, routed
    local = local_parameters(books)
    for key, value in rest.items():
        owners = [stem for stem, params in local.items() if key in params]
        if not owners:
            if key in ("preset", "experiment"):
                raise ConfigError(f"{key} is chosen with --{key}, not with -p")
            close = difflib.get_close_matches(
                key, list(FIELDS) + [k for params in local.values() for k in params], n=1)
            raise ConfigError(
                f"-p {key}: neither a workspace parameter nor a parameter of "
                f"{', '.join(b.stem for b in books)}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + " (`geofm params` lists both)")
        for stem in owners:
            routed.setdefault(stem[:2], {})[key] = value
    return workspace, routed


def check_notebook_params(books: list[Path], notebook_params: dict) -> dict[str, dict]:
    """``notebook_params`` ({notebook prefix: {name: value}}) checked against the notebooks'
    parameters cells before anything runs: an unknown notebook or parameter is an error."""
    out = {}
    for prefix, extra in (notebook_params or {}).items():
        match = [b for b in books if b.name.startswith(prefix)]
        if len(match) != 1:
            raise ConfigError(f"notebook {prefix!r} of notebook_params: not one notebook of "
                              f"{', '.join(b.stem for b in books)}")
        known = notebook_parameters(match[0])
        bad = [k for k in extra if k not in known]
        if bad:
            raise ConfigError(f"{match[0].stem} has no parameter(s) {bad}; it has "
                              f"{', '.join(known)}")
        out[match[0].stem] = dict(extra)
    return out


def run_report(preset: str = "demo", experiment: str | None = None,
               chain: list[str] | None = None, reports_dir: Path | None = None,
               notebook_params: dict | None = None, force: bool = False,
               jobs: int | None = None, **overrides) -> Path:
    """Execute the notebook chain for a parameter set and publish it under reports/.

    Args:
        preset: size preset (``ci``, ``demo``, ``full``).
        experiment: experiment set (``group_A`` ... ``group_C_metadata``) or None.
        chain: notebook name prefixes to run (e.g. ``["01", "02"]``); None = all notebooks.
        reports_dir: where the static site lives; default ``<project>/reports``.
        notebook_params: parameters of one notebook only (its own, such as 08's
            ``decoder``), ``{"08": {"decoder": ["unet", "deeplabv3plus"]}}``; checked against
            the notebooks' parameters cells before anything runs.
        force: execute every notebook, also those whose last execution had the same source,
            parameters, library and inputs (by default their pages are republished).
        jobs: notebooks executed side by side where the graph allows (None: from the cores
            this process may use, :func:`auto_jobs`; 1: one after another).
        **overrides: single parameters, as papermill ``-p`` would pass them.

    Returns:
        The run's report folder.
    """

    root = project_root()
    books = notebooks(root)
    if chain:
        books = [b for b in books if any(b.name.startswith(c) for c in chain)]
        if not books:
            raise ConfigError(f"no notebook matches {chain}; have "
                              f"{', '.join(b.name for b in notebooks(root))}")
    overrides, routed = route_overrides(books, overrides)  # -p seg_lr=... goes to 08
    cfg = load_config(preset, experiment, **overrides)  # fails here on bad parameters
    experiment = cfg.experiment  # a parameter file's absolute path (notebooks run elsewhere)
    reports_dir = Path(reports_dir or root / "reports")
    if routed:
        notebook_params = {**(notebook_params or {})}
        for prefix, values in routed.items():
            notebook_params[prefix] = {**notebook_params.get(prefix, {}), **values}
        if overrides.get("run_name") is None:  # its own folder: the plain run's pages stay
            digest = hashlib.sha256(json.dumps(routed, sort_keys=True, default=str).encode())
            overrides = {**overrides, "run_name": f"{cfg.name}-nb{digest.hexdigest()[:6]}"}
            cfg = load_config(preset, experiment, **overrides)  # the notebooks get it too
    local = check_notebook_params(books, notebook_params)
    final = reports_dir / check_name(cfg.name, "run_name")
    reports_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(final, f"the report folder reports/{cfg.name}", wait=False):
        return _run_report_locked(cfg, preset, experiment, chain, books, reports_dir, final,
                                  root, overrides, local, force=force, jobs=jobs)


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
                       root: Path, overrides: dict, local: dict | None = None,
                       force: bool = False, jobs: int | None = None) -> Path:
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
    chain_run = Chain(cfg, books, tmp, root, params, local or {}, force=force, jobs=jobs)
    chain_run.run()
    timings, skipped, failure = chain_run.seconds, chain_run.skipped, chain_run.failure
    if failure is not None:
        final = _failed_target(final)
    stages = load_stages(cfg)
    metrics = {name: rec.get("metrics", {}) for name, rec in stages.items()
               if name in timings}
    previous = {}
    if chain and (final / "run.json").is_file():
        # part of the chain re-run: keep the other notebooks' pages, metrics and timings
        prev_info = _report_record(final / "run.json")
        if prev_info.get("params_hash") == cfg.hash:
            for f in final.iterdir():  # never a link: its target is not this report's page
                if f.is_file() and not f.is_symlink() and not (tmp / f.name).exists() and \
                        f.suffix in (".html", ".ipynb"):
                    shutil.copyfile(f, tmp / f.name)
            old_metrics = _report_record(final / "metrics.json") \
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
        "run": cfg.name, "preset": preset,
        "experiment": scrub(experiment, root, cfg) if experiment else None,
        "params_hash": cfg.hash, "data_hash": cfg.data_hash, "git": git_state(root),
        "packages": package_versions(), "notebooks": list(timings),
        "seconds": timings, "skipped": skipped,
        # what makes the run differ from its parameter set (shown in the index)
        "overrides": json.loads(scrub(json.dumps(
            {k: v for k, v in overrides.items() if v is not None and k not in NOT_HASHED}),
            root, cfg)),
        "notebook_params": local or {},
        # notebooks whose page was republished from an earlier execution (nothing changed)
        "reused": chain_run.reused,
        "jobs": chain_run.jobs,
        "status": "failed" if failure else "ok",
        "failed": {k: v for k, v in failure.items() if k != "exception"} if failure else None,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    for page in sorted(stage_dir(cfg).glob("*.html")):  # standalone pages (maps) of the run
        if page.is_symlink():  # a link publishes whatever it points at: never followed
            log.warning("not published: %s is a symbolic link", page.name)
            continue
        atomic_write_bytes(tmp / page.name, scrub(page.read_text(), root, cfg, markup=True)
                           .encode())
    pages.link_pages(tmp, [b.stem for b in notebooks(root)], final.name)
    old = reports_dir / f".{final.name}.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)  # both inside reports_dir: the swap is two renames
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    build_index(reports_dir)
    if failure is not None:
        shown = str(failure["exception"]).replace(f"{tmp.name}/", f"{final.name}/")
        raise NotebookFailed(f"{shown}; the pages that ran are in reports/{final.name}/ "
                             f"(marked failed in reports/index.html)") from None
    return final


def auto_jobs() -> int:
    """How many notebooks run side by side by default: one per two cores this process may use
    (each gets its share of the threads), so one after another on one or two cores, where two
    notebooks of one thread each gain little over one of two threads and change its numbers
    in the last digits (the thread count changes torch's sums)."""
    return max(1, _cores() // 2)


def _cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


class Chain:
    """One report's notebooks executed as a dependency graph (:mod:`geofm_lib.report.graph`):
    a notebook starts when the notebooks it needs have finished, up to ``jobs`` at a time; one
    whose last finished execution had the same key and whose products are still there is not
    executed (its cached page is republished); a failed notebook stops its dependants only."""

    def __init__(self, cfg, books: list[Path], tmp: Path, root: Path, params: dict,
                 local: dict, force: bool = False, jobs: int | None = None):
        self.cfg, self.books, self.tmp, self.root = cfg, books, tmp, root
        self.params, self.local, self.force = params, local, force
        self.jobs = max(1, int(jobs)) if jobs else auto_jobs()
        self.stems = [b.stem for b in books]
        self.state: dict[str, str] = {}  # ok | reused | failed | blocked | not applicable
        self.seconds: dict[str, float] = {}
        self.skipped: dict[str, str] = {}
        self.reused: dict[str, str] = {}
        self.failure: dict | None = None
        self._packages = package_versions()

    def parameters(self, book: Path) -> dict:
        return {**self.params, **self.local.get(book.stem, {})}

    def inputs(self, book: Path) -> dict:
        return graph.execution_inputs(book, self.cfg, self.parameters(book), self.stems,
                                      self._packages)

    # --- the execution cache: work/runs/<run>/executed/<notebook>.{json,ipynb,html} --------

    def cache_files(self, stem: str) -> tuple[Path, Path, Path]:
        folder = stage_dir(self.cfg) / "executed"
        return folder / f"{stem}.json", folder / f"{stem}.ipynb", folder / f"{stem}.html"

    def cached(self, book: Path) -> dict | None:
        """The last finished execution of ``book`` if it may stand for one now: same key, and
        every product (the stage record included) as it left them. None: execute it."""
        meta, nb, page = self.cache_files(book.stem)
        if self.force or not (meta.is_file() and nb.is_file() and page.is_file()):
            return None
        try:
            entry = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if entry.get("key") != graph.execution_key(self.inputs(book)):
            return None
        now = graph.products(self.cfg, book.stem)
        if now != entry.get("products") or (book.stem in graph.STEPS
                                            and now.get("record") is None):
            return None
        return entry

    def last_seconds(self) -> dict[str, float]:
        """Each notebook's time at its last execution in this run folder (where known)."""
        out = {}
        for stem in self.stems:
            try:
                out[stem] = float(json.loads(self.cache_files(stem)[0].read_text())["seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return out

    def remember(self, book: Path, inputs: dict, seconds: float) -> None:
        """Keep the finished execution (notebook, page, key, products) for the next run."""
        meta, nb, page = self.cache_files(book.stem)
        meta.parent.mkdir(parents=True, exist_ok=True)
        out = self.tmp / book.name
        atomic_write_bytes(nb, out.read_bytes())
        atomic_write_bytes(page, out.with_suffix(".html").read_bytes())
        atomic_write_json(meta, {
            "notebook": book.stem, "key": graph.execution_key(inputs), "inputs": inputs,
            "products": graph.products(self.cfg, book.stem), "seconds": seconds,
            "executed": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())})

    def republish(self, book: Path, entry: dict) -> None:
        _, nb, page = self.cache_files(book.stem)
        shutil.copyfile(nb, self.tmp / book.name)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        atomic_write_bytes(self.tmp / f"{book.stem}.html",
                           pages.mark_reused(page.read_text(), when).encode())
        self.seconds[book.stem] = entry.get("seconds", 0.0)
        self.reused[book.stem] = entry.get("executed", "")

    # --- running ----------------------------------------------------------------------------

    def execute(self, book: Path) -> float:
        """Execute one notebook into the run's temporary folder (in a worker thread)."""
        t0 = time.perf_counter()
        log.info("running %s (%s)", book.name, self.cfg.name)
        kept: dict = {}

        def provenance() -> str:  # after the run: the inputs it used, built here or not
            kept["inputs"] = self.inputs(book)
            return graph.describe(kept["inputs"])

        _execute(book, self.tmp / book.name, self.parameters(book), self.root, self.cfg,
                 provenance=provenance, threads=self._threads())
        seconds = round(time.perf_counter() - t0, 1)
        self.remember(book, kept.get("inputs") or self.inputs(book), seconds)
        log.info("%s done in %.1f s", book.name, seconds)
        return seconds

    def _threads(self) -> int | None:
        """Threads per kernel when notebooks run side by side (None: torch's own choice)."""
        if self.jobs == 1:
            return None
        return max(1, _cores() // self.jobs)

    def ready(self, book: Path) -> str | None:
        """"wait", "blocked" (a notebook it needs failed) or None (it may start)."""
        for n in graph.needs(book.stem, self.stems):
            st = self.state.get(n)
            if st is None:
                return "wait"
            if st in ("failed", "blocked"):
                self.skipped[book.stem] = (self.skipped.get(n) if st == "blocked"
                                           else f"not run: {n} failed before it")
                return "blocked"
        return None

    def start(self, book: Path, pool, running: dict) -> None:
        why = _not_applicable(book, self.cfg, self.parameters(book))
        if why:  # e.g. the SSL notebook on data without S1/S2 pairs
            log.info("skipping %s: %s", book.name, why)
            self.skipped[book.stem] = why
            self.state[book.stem] = "not applicable"
            return
        entry = self.cached(book)
        if entry is not None:
            log.info("%s: unchanged since its execution of %s UTC (source, parameters, "
                     "library, inputs): its page is republished", book.name, entry["executed"])
            self.republish(book, entry)
            self.state[book.stem] = "reused"
            return
        running[pool.submit(self.execute, book)] = book

    def run(self) -> None:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        pending, running = list(self.books), {}
        if self.jobs > 1:  # the head of the longest remaining path first, else in order
            rank = graph.priorities(self.last_seconds(), self.stems)
            pending.sort(key=lambda b: -rank[b.stem])
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while pending or running:
                for book in list(pending):
                    if len(running) >= self.jobs:
                        break
                    status = self.ready(book)
                    if status == "wait":
                        continue
                    pending.remove(book)
                    if status == "blocked":
                        self.state[book.stem] = "blocked"
                        continue
                    self.start(book, pool, running)
                if not running:  # reused or skipped notebooks may have freed others
                    if pending and all(self.ready(b) == "wait" for b in pending):
                        raise GeofmError(f"the chain cannot go on: {pending[0].stem} waits for "
                                         f"a notebook that is not in it")
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    book = running.pop(fut)
                    try:
                        self.seconds[book.stem] = fut.result()
                        self.state[book.stem] = "ok"
                    except NotebookFailed as exc:  # the pages that ran are published, marked
                        self.state[book.stem] = "failed"
                        if self.failure is None:
                            self.failure = {
                                "notebook": book.stem,
                                "error": str(exc).split(" (the executed page")[0]
                                .splitlines()[0][:400], "exception": exc}


def _report_record(path: Path) -> dict:
    """A report's ``run.json`` or ``metrics.json``, or an error naming the file and the fix
    (a damaged one, e.g. from a machine that crashed while writing it by hand)."""
    if path.is_symlink():
        raise GeofmError(f"reports/{path.parent.name}/{path.name} is a symbolic link; geofm "
                         f"writes these files itself: remove the link and run again")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeofmError(f"reports/{path.parent.name}/{path.name} is damaged ({exc}); remove "
                         f"reports/{path.parent.name}/ (or run the whole chain again, without "
                         f"--notebooks) so the report is made anew") from None
    if not isinstance(data, dict):
        raise GeofmError(f"reports/{path.parent.name}/{path.name} holds no record; remove "
                         f"reports/{path.parent.name}/ and run again")
    if path.name == "metrics.json":  # one record (a mapping) per notebook
        bad = [k for k, v in data.items() if not isinstance(v, dict)]
        if bad:
            raise GeofmError(f"reports/{path.parent.name}/metrics.json is damaged: its entry "
                             f"{bad[0]!r} is a {type(data[bad[0]]).__name__}, not a notebook's "
                             f"record; remove reports/{path.parent.name}/ (or run the whole "
                             f"chain again, without --notebooks) so the report is made anew")
    return data


def _failed_target(final: Path) -> Path:
    """Where a failed chain publishes its pages: the run's own folder, unless that holds a
    good report of an earlier run, which a failure must not replace; then ``<run>-failed``."""
    info = final / "run.json"
    if info.is_file() and _report_record(info).get("status", "ok") != "failed":
        target = final.with_name(final.name + "-failed")
        if target.is_symlink() or (target.exists() and not (target.is_dir()
                                                            and _is_report(target))):
            raise GeofmError(f"reports/{target.name} exists and is not a geofm report folder; "
                             f"move it away so the failed run's pages can be published")
        return target
    return final










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








def config_for(preset: str, experiment: str | None = None, **overrides) -> Config:
    """The config a report of these parameters uses (validation without running)."""
    return load_config(preset, experiment, **overrides)


_ABS_PATH = re.compile(r"(/home/|/root/|/Users/|[A-Z]:\\\\Users)")


def find_absolute_paths(text: str) -> list[str]:
    """Snippets of ``text`` that look like absolute home paths (for tests and checks)."""
    return [text[max(m.start() - 30, 0):m.end() + 30] for m in _ABS_PATH.finditer(text)]
