"""The report chain as a dependency graph: what each notebook reads and writes, and the key of
an execution that lets ``geofm report`` skip a notebook whose work is already done.

One table, :data:`STEPS`, declares per notebook the notebooks it needs, the artifacts it reads
and the artifacts it writes. Artifacts are named by the content hashes that already name them
on disk (:mod:`geofm_lib.paths`): the shards by the data hash, CLIP's checkpoint by the train
hash, the SSL encoder by the SSL hash, 04's per-image predictions by the run; every notebook
also writes its stage record (``work/runs/<run>/<notebook>.json``).

An execution's key (:func:`execution_key`) is a SHA-256 over

- the notebook's source (the cells' types and text; outputs and run stamps left out),
- the parameters papermill gives it and the hash of the resolved workspace parameters,
- the library's code (every file of ``geofm_lib``) and the versions of the packages that
  change numbers (torch, open_clip, ...),
- the content digest of each artifact it reads (the shards' manifest, the checkpoint, the
  predictions, the encoder: SHA-256 of the files) and of the stage records of the notebooks
  it needs.

A notebook is skipped (its page republished) only when the key of its last finished execution
equals the key now and every artifact it writes, its stage record included, is still there and
unchanged. A stage record carries its own run time, so a notebook that executes again gives
its dependants a new key: they execute again too, as in make.

What the key does not see: the contents of a source folder of your own (the shards of a data
hash are reused as they were built, as ``build_shards`` always did; rebuild with
``geofm report --force`` or ``geofm data`` after changing files in place), and the machine
(thread count, CPU or GPU).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from geofm_lib import paths
from geofm_lib.config import Config

# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One notebook of the chain: the notebooks whose products it reads (``needs``), the
    artifacts it reads and writes (names of :data:`ARTIFACTS`), and in words what it builds
    when an input is missing, run alone."""

    needs: tuple[str, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    alone: str


STEPS: dict[str, Step] = {
    "01_data_prep": Step((), (), ("shards",),
                         "reads the sources (the simulator or your files)"),
    "02_explore_data": Step(("01_data_prep",), ("shards",), (),
                            "builds the shards as 01 does"),
    "03_pretrain": Step(("01_data_prep",), ("shards",), ("clip checkpoint",),
                        "builds the shards as 01 does"),
    "04_zero_shot_eval": Step(("03_pretrain",), ("shards", "clip checkpoint"), ("predictions",),
                              "trains CLIP as 03 does (its shards first)"),
    "05_map_viz": Step(("04_zero_shot_eval",), ("shards", "predictions"), ("map",),
                       "scores the images as 04 does (CLIP trained first)"),
    "06_feature_probes": Step(("03_pretrain",), ("shards", "clip checkpoint"), (),
                              "trains CLIP as 03 does when its encoders include `trained`"),
    "07_ssl_pretrain": Step(("01_data_prep",), ("shards",), ("ssl encoder",),
                            "builds the shards as 01 does"),
    # 08's default other_encoders include `clip`, 03's image tower
    "08_segmentation": Step(("03_pretrain", "07_ssl_pretrain"),
                            ("shards", "clip checkpoint", "ssl encoder"), (),
                            "pretrains the SSL encoders of its ssl_methods as 07 does, and "
                            "trains CLIP as 03 does when its other_encoders include `clip`"),
    "09_scene_maps": Step(("03_pretrain",), ("shards", "clip checkpoint"), ("scene maps",),
                          "trains CLIP as 03 does (its shards first)"),
}


@dataclass(frozen=True)
class Artifact:
    """An artifact of a run: the file that stands for it and the hash that names it."""

    name: str
    path: Path
    named_by: str  # "data 1a2b3c4d5e6f", "train ...", "ssl ...", "run <name>"

    def digest(self) -> str | None:
        """SHA-256 (16 hex) of the file, or None when it is missing."""
        return file_digest(self.path)


def artifact(cfg: Config, name: str) -> Artifact:
    """The artifact ``name`` of ``cfg``'s run."""
    if name == "shards":
        return Artifact(name, paths.build_folder(cfg) / "manifest.json", f"data {cfg.data_hash}")
    if name == "clip checkpoint":
        return Artifact(name, paths.trained_checkpoint(cfg), f"train {cfg.train_hash}")
    if name == "ssl encoder":
        return Artifact(name, paths.ssl_dir(cfg) / "encoder.pt", f"ssl {cfg.ssl_hash}")
    if name == "predictions":
        return Artifact(name, paths.predictions_file(cfg), f"run {cfg.name}")
    if name == "map":
        return Artifact(name, paths.map_file(cfg), f"run {cfg.name}")
    if name == "scene maps":
        return Artifact(name, paths.scene_dir(cfg) / "map.html", f"run {cfg.name}")
    raise KeyError(f"no artifact {name!r}; have {', '.join(ARTIFACTS)}")


ARTIFACTS = ("shards", "clip checkpoint", "ssl encoder", "predictions", "map", "scene maps")


def record_path(cfg: Config, stem: str) -> Path:
    """The stage record a notebook writes (``work/runs/<run>/<stem>.json``)."""
    return paths.stage_dir(cfg) / f"{stem}.json"


def step(stem: str) -> Step:
    """The declared step of a notebook; a notebook of your own (not in the table) declares
    nothing: :func:`needs` makes it wait for every notebook before it."""
    return STEPS.get(stem, Step((), (), (), ""))


def needs(stem: str, chain: list[str]) -> list[str]:
    """The notebooks of ``chain`` that ``stem`` waits for: its declared needs, or, for a
    notebook not in the table (one of your own), every notebook before it."""
    if stem in STEPS:
        return [n for n in STEPS[stem].needs if n in chain]
    return chain[:chain.index(stem)]


def critical_path(seconds: dict[str, float], chain: list[str]) -> tuple[float, list[str]]:
    """The longest chain of dependent notebooks by their times: (seconds, notebooks). With as
    many cores as the graph is wide, a run takes about this long."""
    best: dict[str, tuple[float, list[str]]] = {}
    for stem in chain:  # chain order is a topological order (needs come first)
        before = max((best[n] for n in needs(stem, chain) if n in best),
                     default=(0.0, []), key=lambda t: t[0])
        best[stem] = (before[0] + seconds.get(stem, 0.0), before[1] + [stem])
    return max(best.values(), default=(0.0, []), key=lambda t: t[0])


def priorities(seconds: dict[str, float], chain: list[str]) -> dict[str, float]:
    """Each notebook's longest path to the end of ``chain`` (itself and what waits on it), by
    ``seconds`` where every notebook has a time, else by counting notebooks: with fewer cores
    than ready notebooks the scheduler starts the one heading the longest path first, so that
    07 -> 08 (the demo's longest) does not wait behind 02, 04, 05 or 06."""
    weight = seconds if all(seconds.get(s) for s in chain) else dict.fromkeys(chain, 1.0)
    out: dict[str, float] = {}
    for stem in reversed(chain):  # dependants come later in the chain
        after = [out[d] for d in chain if d in out and stem in needs(d, chain)]
        out[stem] = weight[stem] + max(after, default=0.0)
    return out


# --- digests ----------------------------------------------------------------------------------

_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str | None:
    """SHA-256 (16 hex) of a file, remembered by (path, size, mtime) within a process; None
    when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[memo] = h.hexdigest()[:16]
    return _DIGESTS[memo]


def source_digest(book: Path) -> str:
    """SHA-256 (16 hex) of a notebook's cells (type and text): what it would execute. Outputs,
    execution counts, ids and metadata do not count."""
    nb = json.loads(Path(book).read_text())
    cells = [(c.get("cell_type"), "".join(c.get("source") or [])) for c in nb.get("cells", [])]
    return _sha(cells)


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 (16 hex) of the library's files (code, templates, assets): a change to the code
    a notebook calls re-executes it."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- the key of an execution -------------------------------------------------------------------


def execution_inputs(book: Path, cfg: Config, parameters: dict, chain: list[str],
                     packages: dict) -> dict:
    """Everything an execution of ``book`` depends on, each part as a digest: the parts of
    :func:`execution_key` (shown on the page and kept beside the cached execution)."""
    stem = book.stem
    decl = step(stem)
    reads = {}
    for name in decl.reads:
        a = artifact(cfg, name)
        reads[name] = {"named_by": a.named_by, "digest": a.digest()}
    before = decl.needs if stem in STEPS else needs(stem, chain)
    upstream = {n: file_digest(record_path(cfg, n)) for n in before}
    return {"source": source_digest(book),
            "parameters": _sha({"papermill": parameters, "workspace": cfg.hash}),
            "code": code_digest(), "packages": _sha(packages),
            "reads": reads, "upstream_records": upstream}


def execution_key(inputs: dict) -> str:
    """The key of an execution with these inputs (:func:`execution_inputs`)."""
    return _sha(inputs)


def products(cfg: Config, stem: str) -> dict[str, str | None]:
    """Digest of each artifact ``stem`` writes, its stage record included (None: missing)."""
    out = {name: artifact(cfg, name).digest() for name in step(stem).writes}
    out["record"] = file_digest(record_path(cfg, stem))
    return out


def describe(inputs: dict) -> str:
    """One line for a page: what an execution was keyed on."""
    reads = "; ".join(f"{name} ({r['named_by']}) {r['digest'] or 'missing, built here'}"
                      for name, r in inputs["reads"].items())
    ups = ", ".join(f"{n[:2]} {d or 'not run'}" for n, d in inputs["upstream_records"].items())
    return (f"source {inputs['source']}, parameters {inputs['parameters']}, library "
            f"{inputs['code']}" + (f"; reads {reads}" if reads else "")
            + (f"; records of {ups}" if ups else ""))


# --- the table as a reader sees it ---------------------------------------------------------------


def timings(run_info: dict | None, stems: list[str]) -> dict:
    """The graph with a report's times (``run.json``): each notebook's needs, reads, writes,
    seconds and whether its page was republished; the sum, the critical path and how many
    notebooks ran side by side. ``run_info`` None: the graph alone."""
    info = run_info or {}
    seconds = {k: float(v) for k, v in (info.get("seconds") or {}).items()}
    reused = info.get("reused") or {}
    rows = [{"notebook": stem, "needs": needs(stem, stems), "reads": list(step(stem).reads),
             "writes": list(step(stem).writes), "seconds": seconds.get(stem),
             "reused": stem in reused, "skipped": (info.get("skipped") or {}).get(stem)}
            for stem in stems]
    path_s, path = critical_path(seconds, stems)  # a republished page: its execution's time
    return {"run": info.get("run"), "finished": info.get("finished"), "jobs": info.get("jobs"),
            "notebooks": rows, "sum_seconds": round(sum(seconds.values()), 1),
            "republished": sorted(reused), "critical_path": path,
            "critical_path_seconds": round(path_s, 1)}


def format_timings(t: dict) -> str:
    """:func:`timings` as the text ``geofm graph`` prints."""
    lines = [f"{'notebook':20s} {'needs':14s} {'reads':28s} {'writes':18s} {'seconds':>8s}"]
    for r in t["notebooks"]:
        secs = ("-" if r["seconds"] is None else f"{r['seconds']:.1f}") + \
            (" (republished)" if r["reused"] else "")
        lines.append(f"{r['notebook']:20s} {','.join(n[:2] for n in r['needs']) or '-':14s} "
                     f"{', '.join(r['reads']) or '-':28s} {', '.join(r['writes']) or '-':18s} "
                     f"{secs:>8s}" + (f"  skipped: {r['skipped']}" if r["skipped"] else ""))
    if t["run"]:
        lines.append(f"run {t['run']} (finished {t['finished']}, jobs {t['jobs'] or 1}): the "
                     f"executions take {t['sum_seconds']:.0f} s one after another; critical path "
                     f"{' -> '.join(n[:2] for n in t['critical_path']) or '-'} "
                     f"{t['critical_path_seconds']:.0f} s (the least they take side by side)")
        if t["republished"]:
            lines.append(f"republished without executing in this report: "
                         f"{', '.join(n[:2] for n in t['republished'])} (their times are those "
                         f"of the executions they show)")
    return "\n".join(lines)
