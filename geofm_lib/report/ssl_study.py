"""Seed 001's whole comparison as a study of its own: ``geofm study --study seed001``.

One report run (``reports/study-seed001-<preset>/``: notebooks 01, 07 and 08) with every SSL
method pretrained on the same S1/S2 places for the same number of epochs (07: the first method,
the others beside it), then every encoder under every decoder and protocol, on nested labelled
subsets up to all training places, with seed 001's stem and loss variants (08). Its page,
``reports/study-seed001-<preset>.html``, puts the numbers side by side, checks seed 001's findings
against them (each with the paired interval it rests on), prints seed 001's table as different
data, and says what the ``full`` preset would run on a GPU.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from geofm_lib import records
from geofm_lib.config import FIELDS, load_config
from geofm_lib.errors import ConfigError
from geofm_lib.io import atomic_write_bytes
from geofm_lib.papers import SEED001_SEGMENTATION
from geofm_lib.paths import project_root
from geofm_lib.ssl import METHOD_LABELS, backbone_label, method_config, parse_method

# seed 001's methods: MoCo and DINO on the ResNet-18, MAE on the ViT-S its UpConv decoder uses
SEED001_METHODS = ("moco", "dino", "mae:vit_small_patch16")
SEED001_DECODERS = ("unet", "deeplabv3plus")
SEED001_PROTOCOLS = ("frozen", "finetune")
SEED001_LABELLED = (64, 256, "all")
SEED001_VARIANTS = ("boundary", "detail", "both")


def study_name(preset: str) -> str:
    return f"study-seed001-{preset}"


def study_plan(preset: str, methods=None, **overrides) -> dict:
    """What the study runs: the 07 and 08 parameters and the run's overrides, every method
    validated (MAE needs a ViT, MoCo a ResNet) before anything runs."""
    methods = list(methods or SEED001_METHODS)
    if not methods:
        raise ConfigError("the seed 001 study needs at least one SSL method")
    if "run_name" in overrides and overrides["run_name"] is not None:
        raise ConfigError(f"the study's report is reports/{study_name(preset)}/: drop run_name")
    # a notebook's own parameter (08's repeats, seg_lr) goes on to run_report, which routes it
    workspace = {k: v for k, v in overrides.items() if k in FIELDS}
    base = load_config(preset, None, **workspace)
    first, backbone = parse_method(methods[0], base.ssl_backbone)
    main = {**overrides, "ssl_method": first, "ssl_backbone": backbone,
            "run_name": study_name(preset)}
    cfg = load_config(preset, None, **{k: v for k, v in main.items() if k in FIELDS})
    for spec in methods[1:]:
        method_config(cfg, spec)  # fails here: unknown method, or a backbone it cannot take
    return {"overrides": main, "methods": methods, "notebook_params": {
        "07": {"also_methods": methods[1:], "also_epochs": None},
        "08": {"ssl_methods": methods, "decoder": list(SEED001_DECODERS),
               "protocols": list(SEED001_PROTOCOLS), "labelled": list(SEED001_LABELLED),
               "variants": list(SEED001_VARIANTS)}}}


def run_seed001_study(preset: str = "demo", methods=None, reports_dir: Path | None = None,
                      **overrides) -> Path:
    """Run seed 001's comparison (01 -> 03 -> 07 -> 08: 03's CLIP tower is one of 08's
    encoders) and build its page; returns the page."""
    from geofm_lib.report.index import build_index
    from geofm_lib.report.reports import run_report

    plan = study_plan(preset, methods, **overrides)
    reports_dir = Path(reports_dir or project_root() / "reports")
    run_report(preset, None, chain=["01", "03", "07", "08"], reports_dir=reports_dir,
               notebook_params=plan["notebook_params"], **plan["overrides"])
    page = build_seed001_study(reports_dir, preset)
    build_index(reports_dir)
    return page


# --- the page ---------------------------------------------------------------------------------

def _ci(ci) -> str:
    """An interval, or nothing where it is not defined (null bounds: no boundary anywhere)."""
    if not ci or any(v is None or v != v for v in ci):
        return ""
    return f" <span class=ci>[{ci[0]:.1f}, {ci[1]:.1f}]</span>"


def _score(value) -> str:
    """A score, or 'n/a' where it is not defined on the test images (recorded as null)."""
    return "n/a" if value is None or value != value else f"{value:.1f}"


def _diff(d: float, ci, lower_is_better: bool = False) -> str:
    """A paired difference with its interval: green where reliably better (above 0, or below
    0 for an error such as RMSE), red where reliably worse, grey where the interval holds 0."""
    above, below = ("down", "up") if lower_is_better else ("up", "down")
    sign = above if ci[0] > 0 else below if ci[1] < 0 else "flat"
    return f"<span class={sign}>{d:+.1f}</span>{_ci(ci)}"


def _verdict(ci) -> str:
    if ci[0] > 0:
        return "<b class=up>holds here</b>"
    if ci[1] < 0:
        return "<b class=down>reversed here</b>"
    return "<b class=flat>not established here</b> (the interval holds 0)"


def _short(name: str) -> str:
    return name.split(" (")[0]


def findings(seg: records.SegmentationRecord) -> list[str]:
    """Seed 001's findings, each checked on the study's 08 record with the paired interval it
    rests on (HTML list items)."""
    diffs = seg.differences
    if not diffs:
        return ["<li>no pretrained encoder was scored</li>"]
    labelled = sorted({d.labelled for d in diffs})
    few, most = labelled[0], labelled[-1]
    first_dec = seg.decoder  # each encoder's first decoder: UNet on ResNets, UpConv on ViTs
    pick = lambda enc, prot, n: next(  # noqa: E731
        (d for d in diffs if _short(d.encoder) == enc and d.protocol == prot
         and d.labelled == n and d.decoder in (first_dec, "upconv")), None)
    encs = list(dict.fromkeys(_short(d.encoder) for d in diffs))
    out = []
    floor = seg.floor  # the majority-class map under every score; who does not clear it
    low = [k for k, v in seg.at_floor.items() if v]
    out.append(f"<li><b>The floor</b> ({html.escape(floor.name)}: "
               f"{html.escape(floor.what)}): mean IoU {floor.mean_iou:.1f}, OA "
               f"{floor.overall_accuracy:.1f}; "
               + (f"<b class=down>at the floor</b> with {seg.few_labels} labelled "
                  f"places: {html.escape(', '.join(low))}" if low else
                  "every encoder's interval is above it") + "</li>")
    for enc in encs:
        d = pick(enc, "frozen", few)
        if d:
            out.append(f"<li><b>Pretraining beats random init, frozen encoder, {few} labelled "
                       f"places</b> ({html.escape(enc)}, {html.escape(d.decoder)}): mIoU "
                       f"{_diff(d.minus_random_init, d.ci)} - {_verdict(d.ci)}</li>")
    for enc in encs:
        a, b = pick(enc, "frozen", few), pick(enc, "frozen", most)
        if a and b and few != most:
            out.append(f"<li><b>Pretraining helps most when labels are scarce</b> "
                       f"({html.escape(enc)}, frozen): {_diff(a.minus_random_init, a.ci)} "
                       f"with {few} labelled places, {_diff(b.minus_random_init, b.ci)} "
                       f"with {most}; " + ("larger with fewer labels" if a.minus_random_init
                                           > b.minus_random_init else
                                           "not larger with fewer labels") + "</li>")
    for enc in encs:
        if not enc.startswith("MAE"):
            continue
        fz, ft = pick(enc, "frozen", most), pick(enc, "finetune", most)
        if fz and ft:
            out.append(f"<li><b>MAE gains most from fine-tuning</b> ({html.escape(enc)}, "
                       f"{most} labelled places, against random init of its ViT): frozen "
                       f"{_diff(fz.minus_random_init, fz.ci)}, fine-tuned "
                       f"{_diff(ft.minus_random_init, ft.ci)}</li>")
    for enc in encs:  # convergence: validation mIoU after the first epoch, pretrained vs random
        d = pick(enc, "frozen", most)
        if not d:
            continue
        mine = _val_miou(seg.history.get(f"frozen|{d.decoder}|{d.encoder}|{most}"))
        base = _val_miou(seg.history.get(f"frozen|{d.decoder}|{d.baseline}|{most}"))
        if mine and base:
            out.append(f"<li><b>Faster convergence</b> ({html.escape(enc)}, frozen, {most} "
                       f"labelled places): validation mIoU after epoch 1 "
                       f"{mine[0]:.1f} against {base[0]:.1f} for {html.escape(d.baseline)}; "
                       f"after the last {mine[-1]:.1f} against {base[-1]:.1f} "
                       f"(one seed, no interval)</li>")
    return out


def _val_miou(history: list[records.EpochRow] | None) -> list[float]:
    """The validation mean IoU of each evaluated epoch of a fit's history (empty: none)."""
    return [h.val_mean_iou for h in history or [] if h.val_mean_iou is not None]


def _segmentation_table(seg: records.SegmentationRecord) -> str:
    rows = seg.table
    diffs = {(d.protocol, d.decoder, d.encoder, d.labelled): d for d in seg.differences}
    cols = [(p, n) for p in seg.protocols for n in seg.labelled]
    head = "".join(f"<th>{html.escape(p)}<br><span class=sub>{n} labelled</span></th>"
                   for p, n in cols)
    body = []
    for dec, enc in dict.fromkeys((r.decoder, r.encoder) for r in rows):
        cells = []
        for p, n in cols:
            r = next((r for r in rows if (r.decoder, r.encoder, r.protocol, r.labelled)
                      == (dec, enc, p, n)), None)
            if r is None:
                cells.append("<td class=na>not run</td>")
                continue
            txt = f"<b>{r.mean_iou:.1f}</b>{_ci(r.ci['mean_iou'])}"
            if r.mean_iou_over_seeds is not None:
                txt += (f"<br><span class=sub>{len(r.seeds)} seeds: "
                        f"{r.mean_iou_over_seeds:.1f} ± {r.mean_iou_seed_sd:.1f}</span>")
            if r.at_floor:
                txt += " <b class=down>at the floor</b>"
            d = diffs.get((p, dec, enc, n))
            if d:
                txt += f"<br><span class=sub>vs {html.escape(d.baseline)}</span> " \
                       f"{_diff(d.minus_random_init, d.ci)}"
                if d.over_seeds is not None:
                    txt += (f" <span class=sub>({len(d.per_seed)} seeds: "
                            f"{d.over_seeds:+.1f} ± {d.seed_sd:.1f})</span>")
            cells.append(f"<td>{txt}</td>")
        body.append(f"<tr><th>{html.escape(dec)}</th><th>{html.escape(enc)}</th>"
                    f"{''.join(cells)}</tr>")
    return (f"<table><thead><tr><th>decoder</th><th>encoder</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _probe_table(ssl07: records.SslRecord) -> str:
    rows: list[tuple[str, records.SslScores]] = []
    if ssl07.linear_probe_f2_s1s2 is not None:
        rows.append((METHOD_LABELS.get(ssl07.ssl_method, "?"), ssl07))
    rows += [(a.label, a) for a in (ssl07.also or {}).values()]

    def base(score, ci, low):  # a baseline's F2 with its interval, flagged at the floor
        if score is None:
            return "-"
        return f"{score:.1f}{_ci(ci)}" + (" <b class=down>at the floor</b>" if low else "")

    def margin(a: records.SslScores):  # against the strongest fair baseline
        if a.ssl_minus_strongest_f2_s1s2 is not None:
            return (_diff(a.ssl_minus_strongest_f2_s1s2, a.ssl_minus_strongest_f2_s1s2_ci)
                    + f" <span class=sub>vs {html.escape(str(a.strongest_baseline))}</span>")
        if a.ssl_minus_random_init_f2_s1s2 is not None:
            return (_diff(a.ssl_minus_random_init_f2_s1s2, a.ssl_minus_random_init_f2_s1s2_ci)
                    + " <span class=sub>vs random init</span>")
        return "-"

    body = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{'collapsed' if a.collapsed else 'no'}"
        f"</td><td><b>{a.linear_probe_f2_s1s2:.1f}</b>{_ci(a.linear_probe_f2_s1s2_ci)}"
        f"</td><td>{base(a.random_init_f2_s1s2, a.random_init_f2_s1s2_ci, a.random_init_at_floor)}"
        f"</td><td>{base(a.rcf_f2_s1s2, a.rcf_f2_s1s2_ci, a.rcf_at_floor)}</td>"
        f"<td>{base(a.label_prior_f2_s1s2, a.label_prior_f2_s1s2_ci, False)}</td>"
        f"<td>{margin(a)}</td></tr>"
        for name, a in rows if a.linear_probe_f2_s1s2 is not None)
    return ("<table><thead><tr><th>method</th><th>collapsed</th><th>linear probe F2 s1/s2</th>"
            "<th>random init (its architecture, statistics estimated)</th><th>RCF</th>"
            "<th>floor: label prior</th><th>paired difference to the strongest</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _details_table(seg: records.SegmentationRecord) -> str:
    if not seg.details:
        return "<p>no variants run</p>"
    body = "".join(f"<tr><th>{html.escape(r.variant)}</th><td><b>{r.mean_iou:.1f}</b>"
                   f"{_ci(r.ci['mean_iou'])}</td><td>{_score(r.boundary_f1)}"
                   f"{_ci(r.ci.get('boundary_f1'))}</td><td>{r.overall_accuracy:.1f}</td>"
                   f"</tr>" for r in seg.details)
    return ("<table><thead><tr><th>variant</th><th>mean IoU</th><th>boundary F1</th>"
            f"<th>overall accuracy</th></tr></thead><tbody>{body}</tbody></table>")


def _density_table(seg: records.SegmentationRecord) -> str:
    if not seg.density:
        return "<p>not run</p>"
    body = "".join(
        f"<tr><th>{html.escape(r.encoder)}</th><td>{r.labelled}</td>"
        f"<td><b>{r.rmse:.1f}</b>{_ci(r.ci['rmse'])}</td><td>{r.mae:.1f}"
        f"{_ci(r.ci['mae'])}</td><td>{r.r2:.2f}</td><td>"
        + (_diff(r.minus_random_init_rmse, r.minus_random_init_rmse_ci, lower_is_better=True)
           if r.minus_random_init_rmse is not None else "-")
        + "</td></tr>" for r in seg.density)
    return ("<table><thead><tr><th>encoder</th><th>labelled</th><th>RMSE (% cover)</th>"
            "<th>MAE</th><th>R&sup2;</th><th>RMSE minus random init (paired)</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _paper_table() -> str:
    body = "".join(f"<tr><th>{html.escape(d)}</th><th>{html.escape(e)}</th><td>{html.escape(w)}"
                   f"</td><td>{oa:.2f}</td><td>{miou:.2f}</td></tr>"
                   for (d, e), t in SEED001_SEGMENTATION.items() for w, (oa, miou) in t.items())
    return ("<table><thead><tr><th>decoder</th><th>encoder</th><th>weights</th>"
            "<th>overall accuracy</th><th>mean IoU</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def full_preset_plan() -> str:
    """What ``geofm study --study seed001 --preset full`` runs, from the preset itself."""
    cfg = load_config("full")
    places = cfg.samples_per_dataset
    return (f"<p><code>geofm study --study seed001 --preset full</code> runs the same chain at "
            f"the <code>full</code> preset's sizes: up to {places:,} scenes per dataset at "
            f"{cfg.image_px}&nbsp;px (cut from {cfg.scene_px}&nbsp;px scenes), "
            f"{cfg.ssl_epochs} SSL epochs of {cfg.ssl_batch_size} per method "
            f"(<code>ssl_epochs</code>, <code>ssl_batch_size</code>; seed 001 pretrained for "
            f"100 epochs), DINO with K&nbsp;=&nbsp;{cfg.dino_out_dim:,} and "
            f"{cfg.dino_local_crops} small crops, on <code>device={cfg.device}</code> at "
            f"<code>precision={cfg.precision}</code>, several GPUs with "
            f"<code>torchrun geofm ssl</code> (Lightning DDP); then every encoder under "
            f"{', '.join(SEED001_DECODERS)} (ResNets) and UpConv (ViTs), frozen and fine-tuned, "
            f"on {', '.join(str(n) for n in SEED001_LABELLED)} labelled places, with the three "
            f"detail variants. It has not been run by this workspace's CI (2 CPU cores, no "
            f"GPU).</p>" + _gpu_time(cfg))


def _gpu_time(cfg, path: Path | None = None) -> str:
    """The full preset's SSL time from ``geofm bench-ssl``'s numbers (``path``, default
    ``<work>/bench/ssl.json``), where they were measured on this machine at the full preset's
    sizes on a GPU; otherwise how to measure it."""
    path = path or load_config("demo").path("bench", "ssl.json")
    bench = json.loads(path.read_text()) if path.is_file() else {}
    if (bench.get("preset") != "full" or bench.get("image_px") != cfg.image_px
            or not bench.get("machine", {}).get("gpu")):
        return ("<p>Its time on a GPU is not measured on this machine: run "
                "<code>geofm bench-ssl --preset full</code> there (docs/benchmarks.md lists one "
                "H200's numbers).</p>")
    rows = "".join(
        f"<li>{html.escape(k)}: {v['samples_per_s']:,.0f} samples/s, "
        f"{v['epoch_seconds']:,.0f} s per epoch, {cfg.ssl_epochs * v['epoch_seconds'] / 3600:.1f}"
        f"&nbsp;h for {cfg.ssl_epochs} epochs</li>" for k, v in bench["ssl"].items())
    return (f"<p>Measured here by <code>geofm bench-ssl --preset full</code> on one "
            f"{html.escape(bench['machine']['gpu'])} ({bench['precision']}, a batch in memory; "
            f"an epoch is {bench['places_per_epoch']:,} places):</p><ul>{rows}</ul>")


def read_study_run(run: Path, study: str, preset: str) -> tuple[dict, dict, str]:
    """(metrics, run record, status paragraph) of a study's report run in ``run`` (``study``
    and ``preset`` for the command that makes it); the paragraph is empty when the run
    succeeded and says why it failed otherwise."""
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"no study run in reports/{run.name}/: run `geofm study --study "
                          f"{study} --preset {preset}` first")
    metrics = records.read_run(metrics_path)
    info = json.loads((run / "run.json").read_text())
    status = ("" if info.get("status") == "ok" else
              f"<p class=down><b>The study run failed</b>: "
              f"{html.escape(str((info.get('failed') or {}).get('error')))}</p>")
    return metrics, info, status


def build_seed001_study(reports_dir: Path, preset: str) -> Path:
    """``reports/study-seed001-<preset>.html`` from the study's report run."""
    run = Path(reports_dir) / study_name(preset)
    metrics, info, status = read_study_run(run, "seed001", preset)
    ssl07, seg = metrics.get("07_ssl_pretrain"), metrics.get("08_segmentation")
    facts = [f"preset <b>{html.escape(preset)}</b>",
             f"data {html.escape(str(info.get('data_hash')))}"]
    if seg:
        facts += [f"target {html.escape(seg.target)}, input {html.escape(seg.input)}",
                  f"{seg.epochs} segmentation epochs, {seg.n_test} test places",
                  "encoders: " + ", ".join(  # in the table's order (the record sorts its keys)
                      f"{html.escape(k)} ({html.escape(backbone_label(seg.backbones[k]))})"
                      for k in dict.fromkeys(_short(r.encoder) for r in seg.table)
                      if k in seg.backbones)]
    facts.append("seconds: " + ", ".join(f"{k[:2]} {v:.0f}" for k, v in
                                          (info.get("seconds") or {}).items()))
    page = _PAGE.format(
        preset=html.escape(preset), run=html.escape(run.name), status=status,
        facts=" · ".join(facts),
        findings="".join(findings(seg)) if seg else "<li>08 did not run</li>",
        probes=_probe_table(ssl07) if ssl07 else "<p>07 did not run</p>",
        segmentation=_segmentation_table(seg) if seg else "<p>08 did not run</p>",
        details=_details_table(seg) if seg else "", density=_density_table(seg) if seg else "",
        paper=_paper_table(), full=full_preset_plan())
    out = Path(reports_dir) / f"{study_name(preset)}.html"
    atomic_write_bytes(out, page.encode())
    return out


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>geofm study ({preset}): seed 001, SSL methods for segmentation</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #1d2433; max-width: 1400px; }}
h1 {{ font-weight: 600; margin-bottom: .2rem; }} h2 {{ margin-top: 2rem; font-weight: 600; }}
p, li {{ color: #3b4457; max-width: 75rem; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ padding: .4rem .7rem; border-bottom: 1px solid #e3e6ec; text-align: left;
          vertical-align: top; }}
thead th {{ background: #f4f6fa; font-weight: 600; }}
.sub {{ color: #7a8396; font-weight: normal; font-size: 11px; }}
.ci {{ color: #5b6477; font-size: 11px; }} td.na {{ color: #b0b6c3; }}
.up {{ color: #1a7f37; }} .down {{ color: #b42318; }} .flat {{ color: #7a8396; }}
.facts {{ color: #5b6477; font-size: 13px; }}
a {{ color: #2457c5; text-decoration: none; margin-right: .5rem; }}
nav.top {{ font-size: 14px; padding-bottom: .5rem; border-bottom: 1px solid #e3e6ec; }}
</style></head><body>
<nav class="top"><a href="index.html">&#8962; all runs</a> ·
<a href="{run}/07_ssl_pretrain.html">07 page</a> ·
<a href="{run}/08_segmentation.html">08 page</a></nav>
<h1>Seed 001 at {preset} scale: SSL methods, decoders and protocols for tree-cover segmentation</h1>
<p class=facts>{facts}</p>
{status}
<p>Every method pretrained on the same S1/S2 places for the same number of epochs
(<a href="{run}/07_ssl_pretrain.html">07</a>), then each encoder under every decoder and protocol
on nested labelled subsets (<a href="{run}/08_segmentation.html">08</a>). Every mean IoU has its
95&nbsp;% bootstrap interval over test images; each pretrained encoder's paired difference to
random init of its own architecture (same decoder, protocol and labels) is in green where its
interval is above 0, red where below, grey where it holds 0. One seed per cell.</p>
<h2>Seed 001's findings, checked here</h2>
<ul>{findings}</ul>
<h2>Frozen features: linear probe on the multi-label task (07)</h2>
{probes}
<h2>Segmentation mean IoU (08)</h2>
{segmentation}
<h2>Detail preservation</h2>
<p>The first pretrained ResNet encoder with its first decoder and protocol, the most labels.</p>
{details}
<h2>Tree density (regression per pixel; first decoder and protocol, fewest labels)</h2>
{density}
<h2>Seed 001's table, for reference (different data)</h2>
<p>SSL4EO-EU-Forests, about 16,000 Sentinel-2 places with HRL tree-cover masks, fine-tuned for 100
epochs. Compare the order of rows, not the numbers.</p>
{paper}
<h2>On a GPU</h2>
{full}
<p><a href="index.html">all runs</a> <a href="{run}/07_ssl_pretrain.html">07 page</a>
<a href="{run}/08_segmentation.html">08 page</a></p>
</body></html>
"""
