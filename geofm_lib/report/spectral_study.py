"""Seed 001's hyperspectral comparison as a study: ``geofm study --study spectral``.

The experiment ``group_H`` (simulated EnMAP-CORINE, 202 bands) through 01 and 07 with the
spectral stem: MoCo-v2, DINO and MAE pretrained on the same scenes for the same number of
epochs, then each encoder and random init of its architecture under seed 001's three protocols
(frozen encoder, fine-tuned spectral adapter, full fine-tuning) on nested labelled sets. The
page (``reports/study-spectral-<preset>.html``) puts the protocols side by side as seed 001's
table does, with the label-efficiency curves and the paper's own table for reference.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from geofm_lib import records
from geofm_lib.config import load_config
from geofm_lib.errors import ConfigError
from geofm_lib.io import atomic_write_bytes
from geofm_lib.papers import SEED001_SPECTRAL
from geofm_lib.paths import project_root
from geofm_lib.report.ssl_study import _ci, _diff, read_study_run
from geofm_lib.ssl.model import method_config, parse_method

EXPERIMENT = "group_H"
# MAE on a ViT-S with 8 px patches: the demo's 32 px patches give it 16 tokens (seed 001's
# ViT-S/16 at 128 px has 64); with 16 px patches it would see 4
SPECTRAL_METHODS = ("moco", "dino", "mae:vit_small_patch8")


def study_name(preset: str) -> str:
    return f"study-spectral-{preset}"


def study_plan(preset: str, methods=None, **overrides) -> dict:
    """The 07 parameters and overrides of the study, every method validated first."""
    methods = list(methods or SPECTRAL_METHODS)
    if not methods:
        raise ConfigError("the spectral study needs at least one SSL method")
    if overrides.get("run_name") is not None:
        raise ConfigError(f"the study's report is reports/{study_name(preset)}/: drop run_name")
    base = load_config(preset, EXPERIMENT, **overrides)
    if base.ssl_adapter != "spectral":
        raise ConfigError(f"the spectral study compares encoders with the spectral stem; "
                          f"ssl_adapter={base.ssl_adapter} was given")
    first, backbone = parse_method(methods[0], base.ssl_backbone)
    main = {**overrides, "ssl_method": first, "ssl_backbone": backbone,
            "run_name": study_name(preset)}
    cfg = load_config(preset, EXPERIMENT, **main)
    for spec in methods[1:]:
        method_config(cfg, spec)  # unknown method, or a backbone it cannot take: fails now
    return {"overrides": main, "methods": methods,
            "notebook_params": {"07": {"also_methods": methods[1:], "also_epochs": None}}}


def run_spectral_study(preset: str = "demo", methods=None, reports_dir: Path | None = None,
                       **overrides) -> Path:
    """Run 01 -> 07 on ``group_H`` with every method and build the page; returns the page."""
    from geofm_lib.report.index import build_index
    from geofm_lib.report.reports import run_report

    plan = study_plan(preset, methods, **overrides)
    reports_dir = Path(reports_dir or project_root() / "reports")
    run_report(preset, EXPERIMENT, chain=["01", "07"], reports_dir=reports_dir,
               notebook_params=plan["notebook_params"], **plan["overrides"])
    page = build_spectral_study(reports_dir, preset)
    build_index(reports_dir)
    return page


# --- the page ---------------------------------------------------------------------------------

def _protocol_table(rows: list[records.ProtocolRow]) -> str:
    """Seed 001's layout: protocol x initialisation, F1 with its interval, the paired
    difference to random init of the same architecture, trainable weights; the largest
    labelled set."""
    n = max(r.n_labelled for r in rows)
    body = []
    for r in (r for r in rows if r.n_labelled == n):
        d = (_diff(r.minus_random_init, r.minus_random_init_ci)
             if r.minus_random_init is not None else "<span class=flat>-</span>")
        body.append(f"<tr><th>{html.escape(r.protocol)}</th><td>{html.escape(r.init)}"
                    f"</td><td><b>{r.score:.1f}</b>{_ci(r.ci)}</td><td>{d}</td>"
                    f"<td>{r.trainable:,}</td></tr>")
    return (f"<p>{n} labelled places, {rows[0].n_test} test places.</p><table><thead><tr>"
            "<th>protocol</th><th>weights</th><th>F1 micro [95 % CI]</th><th>minus random "
            "init [paired CI]</th><th>trainable encoder weights</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _paper_gain(protocol: str) -> str:
    """The range of seed 001's gains of ``protocol`` over the frozen encoder, over its
    pretrained encoders and both backbones ("1.8 to 4.1")."""
    gains = [v - SEED001_SPECTRAL[("frozen encoder", init)][k]
             for (p, init), vals in SEED001_SPECTRAL.items()
             if p == protocol and init != "random init"
             for k, v in enumerate(vals) if v is not None]
    return f"{min(gains):.1f} to {max(gains):.1f}"


def findings(rows: list[records.ProtocolRow]) -> list[str]:
    """Seed 001's claims about the protocols, checked on this run's numbers."""
    out = []
    n = max(r.n_labelled for r in rows)
    at = {(r.protocol, r.init): r for r in rows if r.n_labelled == n}
    pretrained = [r for r in at.values() if r.minus_random_init is not None]
    for r in (r for r in pretrained if r.protocol == "frozen encoder"):
        lo, hi = r.minus_random_init_ci
        verdict = ("<b class=up>holds here</b>" if lo > 0 else "<b class=down>reversed "
                   "here</b>" if hi < 0 else "<b class=flat>not established here</b>")
        out.append(f"<li>Pretrained {html.escape(r.init)} beats random init with a frozen "
                   f"encoder: {r.minus_random_init:+.1f} F1 [{lo:+.1f}, {hi:+.1f}], "
                   f"{verdict}.</li>")
    smallest = min(r.n_labelled for r in rows)
    for r in rows:
        if r.n_labelled != smallest or r.minus_random_init is None \
                or r.protocol != "full fine-tuning":
            continue
        lo, hi = r.minus_random_init_ci
        out.append(f"<li>With {smallest} labels, full fine-tuning from {html.escape(r.init)}"
                   f" against from random init (seed 001: pretraining helps most when labels "
                   f"are scarce): {r.minus_random_init:+.1f} [{lo:+.1f}, {hi:+.1f}].</li>")
    tuned = ("fine-tuned spectral adapter", "full fine-tuning")
    below = [i for i in dict.fromkeys(r.init for r in at.values())
             if ("frozen encoder", i) in at and any((p, i) in at for p in tuned) and all(
                 at[(p, i)].score < at[("frozen encoder", i)].ci[0]
                 for p in tuned if (p, i) in at)]
    if below:
        out.append(f"<li class=down><b>The fine-tuning fits are too short to compare the "
                   f"protocols</b>: for {html.escape(', '.join(below))} both fine-tuning rows "
                   f"are below the frozen encoder's interval, although they start from the same "
                   f"weights and may learn more. Each fit ran "
                   f"{max(r.steps for r in rows) or 'its'} "
                   f"optimiser steps ({_recipe(rows)}); raise "
                   f"<code>protocol_steps</code> before reading the protocols' order.</li>")
    gains = {"fine-tuned spectral adapter": "tuning the spectral adapter",
             "full fine-tuning": "full fine-tuning"}
    for init in dict.fromkeys(r.init for r in pretrained):
        f = at.get(("frozen encoder", init))
        for protocol, what in gains.items():
            paper = _paper_gain(protocol)
            a = at.get((protocol, init))
            if a and f:
                out.append(f"<li>{html.escape(init)}: {what} ({a.trainable:,} weights) "
                           f"moves F1 from {f.score:.1f} (frozen) to {a.score:.1f}; in "
                           f"seed 001 it gained {paper} points. Unpaired intervals "
                           f"{_ci(f.ci)} and {_ci(a.ci)}.</li>")
    return out


def _recipe(rows: list[records.ProtocolRow]) -> str:
    """How the fine-tuning fits started, in words."""
    recipe = next((r.recipe for r in rows if r.steps), None) or "new-head"
    return ("LP-FT: the head started as the frozen protocol's probe, BatchNorm statistics "
            "kept, head and stem at a tenth of the rate, full fine-tuning's encoder at a "
            "hundredth" if recipe == "lp-ft" else
            "a new head from random weights, one learning rate")


def _paper_table() -> str:
    cell = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    body = "".join(f"<tr><th>{html.escape(p)}</th><td>{html.escape(w)}</td><td>{cell(rn)}</td>"
                   f"<td>{cell(vit)}</td></tr>"
                   for (p, w), (rn, vit) in SEED001_SPECTRAL.items())
    return ("<table><thead><tr><th>protocol</th><th>weights</th><th>spectral ResNet-50</th>"
            "<th>spectral ViT-S</th></tr></thead><tbody>" + body + "</tbody></table>")


_CONVERGENCE = ("<p>Test F1 of each fine-tuning fit after its head's start (step 0; with "
                "LP-FT the frozen protocol's probe) and after each epoch over the labelled "
                "places. These points are read on the test places to show how the fits move; "
                "nothing (steps, rates) is chosen by them.</p>")


def build_spectral_study(reports_dir: Path, preset: str) -> Path:
    """``reports/study-spectral-<preset>.html`` from the study's report run."""
    run = Path(reports_dir) / study_name(preset)
    metrics, info, status = read_study_run(run, "spectral", preset)
    ssl07 = metrics.get("07_ssl_pretrain")
    rows = (ssl07.protocols or []) if ssl07 else []
    facts = [f"preset <b>{html.escape(preset)}</b>",
             f"data {html.escape(str(info.get('data_hash')))}",
             *([f"{ssl07.places_train} training places, {ssl07.places_val} test places",
                f"{ssl07.protocol_steps if ssl07.protocol_steps is not None else '-'} optimiser "
                f"steps per fine-tuning fit (rounded up to whole epochs; {_recipe(rows)})"]
               if ssl07 else ["07 did not run"]),
             "seconds: " + ", ".join(f"{k[:2]} {v:.0f}" for k, v in
                                      (info.get("seconds") or {}).items())]
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        from geofm_lib.report.plots import convergence_curves, protocol_curves

        table, found = _protocol_table(rows), "".join(findings(rows))
        plain = [r.to_dict() for r in rows]  # the plots take the rows as the notebook has them
        curves = (f"<img alt='label-efficiency curves' "
                  f"src='data:image/png;base64,{_png(protocol_curves(plain))}'>")
        fig = convergence_curves(plain)
        converge = (_CONVERGENCE + f"<img alt='convergence of the fine-tuning fits' "
                    f"src='data:image/png;base64,{_png(fig)}'>" if fig is not None else
                    "<p>This run recorded no convergence curves (07 before they were "
                    "recorded).</p>")
    else:
        table = found = curves = converge = "<p>07 ran no protocols (see its page)</p>"
    page = _PAGE.format(preset=html.escape(preset), run=html.escape(run.name), status=status,
                        facts=" · ".join(facts), findings=found, table=table, curves=curves,
                        converge=converge, paper=_paper_table())
    out = Path(reports_dir) / f"{study_name(preset)}.html"
    atomic_write_bytes(out, page.encode())
    return out


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>geofm study ({preset}): seed 001, hyperspectral encoders and their protocols</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #1d2433; max-width: 1400px; }}
h1 {{ font-weight: 600; margin-bottom: .2rem; }} h2 {{ margin-top: 2rem; font-weight: 600; }}
p, li {{ color: #3b4457; max-width: 75rem; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ padding: .4rem .7rem; border-bottom: 1px solid #e3e6ec; text-align: left;
          vertical-align: top; }}
thead th {{ background: #f4f6fa; font-weight: 600; }}
.ci {{ color: #5b6477; font-size: 11px; }}
.up {{ color: #1a7f37; }} .down {{ color: #b42318; }} .flat {{ color: #7a8396; }}
.facts {{ color: #5b6477; font-size: 13px; }} img {{ max-width: 100%; }}
a {{ color: #2457c5; text-decoration: none; margin-right: .5rem; }}
nav.top {{ font-size: 14px; padding-bottom: .5rem; border-bottom: 1px solid #e3e6ec; }}
</style></head><body>
<nav class="top"><a href="index.html">&#8962; all runs</a> ·
<a href="{run}/07_ssl_pretrain.html">07 page</a> ·
<a href="{run}/01_data_prep.html">01 page</a></nav>
<h1>Seed 001 at {preset} scale: hyperspectral encoders under three protocols</h1>
<p class=facts>{facts}</p>
{status}
<p>Simulated EnMAP-CORINE scenes (202 EnMAP bands, CORINE labels). Every encoder has the
spectral stem (1-D convolutions over each pixel's spectrum on a 400-2500 nm grid) in front of
its backbone and was pretrained on the same scenes for the same number of epochs
(<a href="{run}/07_ssl_pretrain.html">07</a>). Each is then scored on the validation scenes
under seed 001's three protocols, from its weights and from random init of the same
architecture, on nested labelled sets. F1 micro with 95&nbsp;% bootstrap intervals over test
scenes; the difference to random init is paired on the same scenes (green: interval above 0,
red: below, grey: holds 0). One seed per cell.</p>
<h2>Seed 001's findings, checked here</h2>
<ul>{findings}</ul>
<h2>The three protocols side by side</h2>
{table}
<h2>Label efficiency</h2>
{curves}
<h2>Convergence of the fine-tuning fits</h2>
{converge}
<h2>Seed 001's table, for reference (different data and scale)</h2>
<p>SpectralEarth pretraining (538,974 EnMAP patches of 128 px), EnMAP-CORINE F1. Compare the
order of rows, not the numbers.</p>
{paper}
<p><a href="index.html">all runs</a> <a href="{run}/07_ssl_pretrain.html">07 page</a>
<a href="{run}/01_data_prep.html">01 page</a></p>
</body></html>
"""
