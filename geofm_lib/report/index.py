"""The pages above the runs: ``reports/index.html`` (every published run: headline numbers, each
notebook's figure and key metrics, one click to its page) and the seed 000
study page ``reports/study-<preset>.html`` (its five experiment sets side by side, beside the
paper's tables).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from geofm_lib import records
from geofm_lib.catalog import DATASETS
from geofm_lib.io import atomic_write_bytes, folder_lock, read_yaml
from geofm_lib.papers import paper_table_for
from geofm_lib.progress import get_logger
from geofm_lib.report.summary import headline, key_metrics, thumbnail

log = get_logger()

# The runs-at-a-glance columns when some run has them: (stage, record field, column title).
INDEX_COLUMNS = (
    ("01_data_prep", "samples", "samples"),
    ("03_pretrain", "final_train_loss", "train loss"),
    ("04_zero_shot_eval", "mean_r1", "mean R@1 (chance)"),
    ("06_feature_probes", "probe_f2_micro", "linear probe F2 micro (label prior)"),
    ("07_ssl_pretrain", "linear_probe_f2_s1s2", "SSL probe F2 [95 % CI] (floor)"),
    ("08_segmentation", "mean_iou", "segmentation mIoU [95 % CI] (floor)"),
)


def _value(metrics: dict, stage: str, name: str):
    """A record's field (None: the stage did not run or recorded no such value)."""
    rec = metrics.get(stage)
    return getattr(rec, name, None) if isinstance(rec, records.StageRecord) else None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v)) if v is not None else ""


def _page_tile(run: str, page: Path, seconds: dict, metrics: dict, skipped: dict,
               reused: dict | None = None) -> str:
    """One notebook of a run: its headline figure (a link to the page), time, key metrics."""
    href = f"{html.escape(run)}/{html.escape(page.name)}"
    executed = page.with_suffix(".ipynb")
    thumb = thumbnail(executed) if executed.is_file() else None
    figure = (f'<img src="{html.escape(run)}/thumbs/{html.escape(thumb.name)}" alt="headline '
              f'figure of {html.escape(page.stem)}">' if thumb else
              '<div class="nofig">no figure</div>')
    secs = seconds.get(page.stem)
    facts = "".join(f"<li>{m}</li>" for m in key_metrics(page.stem, metrics.get(page.stem)))
    note = f'<li class="skip">{html.escape(skipped[page.stem])}</li>' \
        if page.stem in skipped else ""
    return (f'<div class="tile"><a href="{href}">{figure}</a>'
            f'<div class="name"><a href="{href}">{html.escape(page.stem)}</a>'
            f'{f" <span class=secs>{secs:.0f} s</span>" if secs is not None else ""}'
            f'{" <span class=secs>(republished)</span>" if page.stem in (reused or {}) else ""}'
            f'</div>'
            f"<ul>{facts}{note}</ul></div>")


def _run_card(name: str, info: dict, metrics: dict, pages: list[Path]) -> str:
    git = info.get("git") or {}
    commit = (git.get("commit") or "")[:8] + (" (dirty)" if git.get("dirty") else "")
    secs = sum((info.get("seconds") or {}).values())
    facts = [f"preset <b>{html.escape(str(info.get('preset')))}</b>",
             f"experiment <b>{html.escape(str(info.get('experiment') or '-'))}</b>"]
    if info.get("overrides"):  # what makes this run differ from the plain parameter set
        facts.append(html.escape(", ".join(f"{k}={v}" for k, v in info["overrides"].items()
                                           if k != "run_name")))
    reused = info.get("reused") or {}
    facts += [f"{secs:.0f} s" + (f" ({len(reused)} of {len(info.get('seconds') or {})} pages "
                                 f"republished unchanged)" if reused else ""),
              f"<code>{html.escape(commit)}</code>",
              html.escape(info.get("finished", ""))]
    banner = ""
    if info.get("record_error"):
        banner = (f'<p class="failed">Its records cannot be read: '
                  f'{html.escape(info["record_error"])}</p>')
    if info.get("status") == "failed":
        failed = info.get("failed") or {}
        banner += (f'<p class="failed">FAILED in {html.escape(failed.get("notebook", "?"))}: '
                  f'{html.escape(failed.get("error", ""))}</p>')
    notebooks = [p for p in pages if p.with_suffix(".ipynb").is_file() or
                 p.stem[:2].isdigit()]
    others = [p for p in pages if p not in notebooks]
    tiles = "".join(_page_tile(name, p, info.get("seconds") or {}, metrics,
                               info.get("skipped") or {}, reused) for p in notebooks)
    extra = " ".join(f'<a href="{html.escape(name)}/{html.escape(p.name)}">{html.escape(p.name)}'
                     f"</a>" for p in others)
    skipped = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                      for k, v in (info.get("skipped") or {}).items()
                      if k not in {p.stem for p in notebooks})
    return (f'<section class="run{" is-failed" if banner else ""}" id="{html.escape(name)}">'
            f"<h2>{html.escape(name)}</h2><p class=facts>{' · '.join(facts)}</p>{banner}"
            f'<div class="tiles">{tiles}</div>'
            + (f"<p class=more>also: {extra}</p>" if extra else "")
            + (f"<ul class=skipped>{skipped}</ul>" if skipped else "") + "</section>")


def _other_pages(reports_dir: Path) -> str:
    """The seed-000 study pages and the benchmark pages, with their headline figures."""
    tiles = []
    for p in sorted(Path(reports_dir).glob("study-*.html")):
        what = ("seed 001: MoCo, DINO and MAE encoders under every decoder and protocol, "
                "its findings checked" if p.stem.startswith("study-seed001-") else
                "seed 001: hyperspectral encoders with the spectral stem under its three "
                "protocols, label-efficiency curves" if p.stem.startswith("study-spectral-")
                else "seed 000's experiment sets side by side with the paper's tables")
        tiles.append(f'<div class="tile"><div class="name"><a href="{html.escape(p.name)}">'
                     f"{html.escape(p.stem)}</a></div><ul><li>{what}</li></ul></div>")
    for p in sorted(Path(reports_dir).glob("bench-*/*.html")):
        href = f"{html.escape(p.parent.name)}/{html.escape(p.name)}"
        executed = p.with_suffix(".ipynb")
        thumb = thumbnail(executed) if executed.is_file() else None
        figure = (f'<a href="{href}"><img src="{html.escape(p.parent.name)}/thumbs/'
                  f'{html.escape(thumb.name)}" alt="benchmark figure"></a>'
                  if thumb else "")
        tiles.append(f'<div class="tile">{figure}<div class="name"><a href="{href}">'
                     f"{html.escape(p.parent.name)}</a></div></div>")
    if not tiles:
        return ""
    return f'<section class="run"><h2>Studies and benchmarks</h2><div class="tiles">' \
           f'{"".join(tiles)}</div></section>'


def build_index(reports_dir: Path) -> Path:
    """Rebuild reports/index.html from every reports/<run>/run.json: a table of the runs'
    headline numbers, then per run each notebook's headline figure (one click to its page),
    time and key metrics with their intervals; failed runs marked; studies and benchmarks."""
    out = Path(reports_dir) / "index.html"
    # two reports finishing at once (CI's two lanes) each rebuild the index: under the lock,
    # the later one reads the folder after the earlier one wrote, so no finished run is lost
    with folder_lock(out, "the report index", wait=True):
        atomic_write_bytes(out, _index_page(reports_dir).encode())
    return out


def _index_page(reports_dir: Path) -> str:
    """The HTML of reports/index.html for the runs in ``reports_dir`` now."""
    runs = []
    for run_json in sorted(Path(reports_dir).glob("*/run.json")):
        folder = run_json.parent
        if folder.name.startswith("."):  # a run being assembled or swapped
            continue
        info = json.loads(run_json.read_text())
        if not isinstance(info, dict):
            log.warning("index: %s left out: its run.json holds no record", folder.name)
            continue
        metrics_path = folder / "metrics.json"
        try:
            metrics = records.read_run(metrics_path) if metrics_path.is_file() else {}
        except records.RecordError as exc:  # another version, or damaged: said on its card
            log.warning("index: %s", exc)
            info = {**info, "record_error": str(exc)}
            metrics = {}
        runs.append((folder.name, info, metrics, sorted(folder.glob("*.html"))))
    cols = [c for c in INDEX_COLUMNS
            if any(_value(m, c[0], c[1]) is not None for _, _, m, _ in runs)]
    head = "".join(f"<th>{html.escape(t)}</th>" for _, _, t in cols)
    rows, cards = [], []
    for name, info, metrics, pages in runs:
        cells, warnings = [], []
        for s, k, _ in cols:
            cell, words = headline(s, metrics.get(s))
            cells.append(f"<td class=num>{cell or _fmt(_value(metrics, s, k))}</td>")
            warnings += [words] if words else []
        cells = "".join(cells)
        status = ("<span class=failed>failed</span>" if info.get("status") == "failed"
                  else "ran" if warnings else "ok")
        if warnings:  # a run whose numbers do not clear chance or the floor says so
            status += "".join(f"<div class=warn>{w}</div>" for w in warnings)
        rows.append(f'<tr><td><b><a href="#{html.escape(name)}">{html.escape(name)}</a></b>'
                    f"</td><td>{status}</td>{cells}</tr>")
        cards.append(_run_card(name, info, metrics, pages))
    page = _INDEX_TEMPLATE.format(
        head=head, rows="\n".join(rows) or
        '<tr><td colspan=20>No runs yet: <code>make report</code> makes one.</td></tr>',
        n=len(runs), cards="\n".join(cards), others=_other_pages(reports_dir))
    return page



_INDEX_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>geofm reports</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #1d2433; max-width: 1500px; }}
h1 {{ font-weight: 600; margin-bottom: .2rem; }}
h2 {{ font-weight: 600; font-size: 1.2rem; margin: 0 0 .2rem; }}
p.sub {{ color: #5b6477; margin-top: 0; }}
table {{ border-collapse: collapse; font-size: 14px; margin-bottom: 1.5rem; }}
th, td {{ padding: .4rem .8rem; border-bottom: 1px solid #e3e6ec; text-align: left; }}
th {{ background: #f4f6fa; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.warn {{ color: #b42318; font-size: 12px; }}
.chance {{ color: #7a8396; font-size: 12px; }}
a {{ color: #2457c5; text-decoration: none; }}
a:hover {{ text-decoration: underline; }}
code {{ font-size: 12px; }}
.failed {{ color: #b3261e; font-weight: 600; }}
section.run {{ border: 1px solid #e3e6ec; border-radius: 8px; padding: 1rem 1.2rem;
               margin-bottom: 1.5rem; }}
section.is-failed {{ border-color: #e8b4b0; background: #fffafa; }}
p.facts {{ color: #5b6477; font-size: 13px; margin: 0 0 .8rem; }}
.tiles {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr));
          gap: 1rem; }}
.tile {{ font-size: 13px; }}
.tile img {{ width: 100%; height: 170px; object-fit: contain; background: #fff;
             border: 1px solid #eef0f4; border-radius: 4px; }}
.nofig {{ height: 170px; display: flex; align-items: center; justify-content: center;
          color: #9aa1b0; background: #f7f8fa; border-radius: 4px; }}
.tile .name {{ font-weight: 600; margin: .3rem 0 .1rem; }}
.secs {{ color: #7a8396; font-weight: normal; }}
.tile ul {{ margin: 0; padding-left: 1.1rem; color: #3b4457; }}
.ci {{ color: #7a8396; font-size: 12px; }}
.flag {{ color: #a4262c; }}
li.skip, .skipped {{ color: #8a4b08; }}
.more {{ font-size: 13px; margin: .6rem 0 0; }}
</style></head><body>
<h1>geofm reports</h1>
<p class="sub">{n} run(s). Each run is one parameter set executed end to end with papermill;
a figure or name opens that notebook's page. Metrics are those the notebooks recorded; intervals
are 95&nbsp;% bootstrap intervals over test images.</p>
<table><thead><tr><th>run</th><th>status</th>{head}</tr></thead>
<tbody>
{rows}
</tbody></table>
{others}
{cards}
</body></html>
"""


# --- seed 000's grouped study ------------------------------------------------------------------

STUDY_EXPERIMENTS = ("compiled", "group_A", "group_B", "group_C", "group_C_metadata")


def _study_runs(reports_dir: Path, preset: str) -> dict[str, dict]:
    """{experiment: {"name", "metrics", "params"}} of the newest report of each study set."""
    runs = {}
    for run_json in sorted(Path(reports_dir).glob("*/run.json")):
        if run_json.parent.name.startswith("."):  # a run being assembled or swapped
            continue
        info = json.loads(run_json.read_text())
        if info.get("status") == "failed":  # the study compares finished runs only
            continue
        exp = info.get("experiment")
        metrics_path = run_json.parent / "metrics.json"
        if info.get("preset") != preset or exp not in STUDY_EXPERIMENTS or \
                not metrics_path.is_file():
            continue
        try:
            zs = records.read_run(metrics_path).get("04_zero_shot_eval")
        except records.RecordError as exc:
            log.warning("study: %s left out: %s", run_json.parent.name, exc)
            continue
        if not zs:
            continue
        params = read_yaml(run_json.parent / "params.yaml")
        if exp not in runs or info.get("finished", "") > runs[exp]["finished"]:
            runs[exp] = {"name": run_json.parent.name, "metrics": zs, "params": params,
                         "finished": info.get("finished", "")}
    return runs


def build_study(reports_dir: Path, preset: str) -> Path:
    """reports/study-<preset>.html: per dataset and K, R@K of every study run beside the
    paper's Table 2/3/4 value for the same dataset and setting."""
    runs = _study_runs(reports_dir, preset)
    exps = [e for e in STUDY_EXPERIMENTS if e in runs]
    datasets = [d for d in DATASETS if any(d in runs[e]["metrics"].per_dataset for e in exps)]
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
                row = runs[e]["metrics"].per_dataset.get(ds)
                if row is None:
                    cells.append("<td class=na>not in this group</td>")
                    continue
                here, ci, chance = row.recall(k), row.recall_ci(k), row.chance(k)
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
        f"<tr><th>{html.escape(e)}</th><td>{_fmt(runs[e]['metrics'].mean_r1)}</td>"
        f"<td>{_fmt(runs[e]['metrics'].mean_chance_r1)}</td>"
        f"<td>{_fmt(runs[e]['metrics'].init_mean_r1)}</td>"
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
nav.top {{ font-size: 14px; padding-bottom: .5rem; border-bottom: 1px solid #e3e6ec; }}
</style></head><body>
<nav class="top"><a href="index.html">&#8962; all runs</a></nav>
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
