"""The pages above the runs: ``reports/index.html`` (one row per published run) and the seed 000
study page ``reports/study-<preset>.html`` (its five experiment sets side by side, beside the
paper's tables).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import yaml

from geofm_lib.catalog import DATASETS
from geofm_lib.io import atomic_write_bytes
from geofm_lib.papers import paper_table_for

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
        label = f"<b>{html.escape(name)}</b>"
        if info.get("overrides"):  # what makes this run differ from the plain parameter set
            label += "<br><small>" + html.escape(", ".join(
                f"{k}={v}" for k, v in info["overrides"].items() if k != "run_name")) + \
                "</small>"
        if info.get("status") == "failed":
            failed = info.get("failed") or {}
            label += (f"<br><span class=failed>FAILED in {html.escape(failed.get('notebook', '?'))}"
                      f": {html.escape(failed.get('error', ''))}</span>")
        rows.append(
            f"<tr><td>{label}</td><td>{html.escape(str(info.get('preset')))}"
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
.failed {{ color: #b3261e; font-size: 12px; }}
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
