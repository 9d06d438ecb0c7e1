"""What the index shows of a run: each notebook's headline figure as a thumbnail and its key
metrics, with their intervals where the notebook measured one.

The headline figure is the image output of the cell tagged ``headline`` (else the notebook's
first image). Thumbnails are written beside the run's pages, ``<run>/thumbs/<notebook>.png``,
and remade when the executed notebook is newer.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from geofm_lib.io import atomic_write_bytes


def headline_png(executed: Path) -> bytes | None:
    """The PNG of the headline figure of an executed notebook, or None (no figure)."""
    nb = json.loads(Path(executed).read_text())
    first = None
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if not png:
                continue
            if "headline" in cell.get("metadata", {}).get("tags", []):
                return base64.b64decode("".join(png))
            first = first or "".join(png)
    return base64.b64decode(first) if first else None


def thumbnail(executed: Path, width: int = 520) -> Path | None:
    """``thumbs/<notebook>.png`` beside the executed notebook (made or remade), or None."""
    executed = Path(executed)
    out = executed.parent / "thumbs" / f"{executed.stem}.png"
    if out.is_file() and out.stat().st_mtime >= executed.stat().st_mtime:
        return out
    png = headline_png(executed)
    if png is None:
        return None
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, max(1, round(img.height * width / img.width))),
                         Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    out.parent.mkdir(exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return out


def _num(v, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"


_AT_FLOOR = ' <b class="flag">baseline at the floor</b>'
_BELOW = ' <b class="flag">at the floor</b>'


def _ci(ci) -> str:
    return f' <span class="ci">[{ci[0]:.1f}, {ci[1]:.1f}]</span>' if ci else ""


def _probes_at_floor(keys: list[str], total: int) -> str:
    """The probes of 06 whose interval reaches their dataset's label prior, in words: how many
    of all, and the datasets of each encoder's linear probe (``keys``: encoder/dataset/probe)."""
    if not keys:
        return "; every probe's interval is above it"
    linear: dict[str, list[str]] = {}
    for key in keys:
        enc, _, rest = key.partition("/")
        ds, _, probe = rest.rpartition("/")
        if probe == "linear":
            linear.setdefault(enc, []).append(ds)
    where = "; ".join(f"{html.escape(enc)} on {html.escape(', '.join(ds))}"
                      for enc, ds in linear.items())
    return (f";{_BELOW}: {len(keys)} of {total} probes"
            + (f" (linear probe: {where})" if where else ""))


def _protocol_lines(rows: list[dict]) -> list[str]:
    """Seed 001's frozen protocol at the largest labelled set: each pretrained encoder's F1
    and its paired difference to random init."""
    if not rows:
        return []
    n = max(r["n_labelled"] for r in rows)
    return [f"frozen, {n} labels: {html.escape(r['init'])} F1 {_num(r['score'])}, "
            f"{r['minus_random_init']:+.1f}{_ci(r.get('minus_random_init_ci'))} vs random init"
            for r in rows if r["n_labelled"] == n and r["protocol"] == "frozen encoder"
            and "minus_random_init" in r]


def key_metrics(stage: str, m: dict) -> list[str]:
    """HTML snippets of a notebook's key metrics (empty: nothing recorded)."""
    if not m:
        return []
    if stage.startswith("01_"):
        return [f"{_num(m.get('samples'))} samples in {_num(m.get('shards'))} shards",
                f"{_num(m.get('megabytes'))} MB", f"{_num(m.get('samples_per_s'), 0)} samples/s"]
    if stage.startswith("02_"):
        return [f"{_num(m.get('mean_labels_per_image'), 2)} labels / image"]
    if stage.startswith("03_"):
        return [f"train loss {_num(m.get('final_train_loss'), 3)}, val loss "
                f"{_num(m.get('final_val_loss'), 3)}",
                f"{_num(m.get('steps'))} steps, {_num(m.get('samples_per_s'), 0)} samples/s "
                f"({html.escape(str(m.get('device', '')))})"]
    if stage.startswith("04_"):
        per = m.get("per_dataset") or {}
        above = sum(1 for r in per.values()
                    if r.get("R@1_ci95") and r["R@1_ci95"][0] > r.get("chance_R@1", 100))
        out = [f"<b>mean R@1 {_num(m.get('mean_R@1'))}</b> (chance "
               f"{_num(m.get('mean_chance_R@1'))}, at init {_num(m.get('init_mean_R@1'))})",
               f"R@1 interval above chance in {above} of {len(per)} datasets"]
        if m.get("not_evaluable"):
            out.append(f"not evaluable: {html.escape(', '.join(m['not_evaluable']))}")
        return out
    if stage.startswith("05_"):
        return [f"{_num(m.get('footprints'))} footprints in {_num(m.get('layers'))} layers, "
                f"{_num(m.get('image_overlays'))} overlays"]
    if stage.startswith("06_"):
        means = m.get("mean_f2_micro") or {}
        out = [f"<b>linear probe F2 {_num(means.get('trained/linear'))}</b> trained vs "
               f"{_num(means.get('init/linear'))} at init"
               + (f", {_num(means['rcf/linear'])} RCF" if "rcf/linear" in means else "")
               + " (mean of datasets)"]
        if m.get("mean_label_prior_f2_micro") is not None:
            out.append(f"floor (label prior) {_num(m['mean_label_prior_f2_micro'])} (mean of "
                       f"datasets)" + _probes_at_floor(m.get("at_floor") or [],
                                                       len(m.get("per_dataset") or {})))
        ft = m.get("finetuned") or {}
        if ft:
            ds = next(iter(ft.values()))["dataset"]
            out.append(f"fine-tuned on {html.escape(ds)}: F2 " + ", ".join(
                f"{_num(r['f2_micro'])}{_ci(r.get('f2_micro_ci95'))} from {html.escape(name)}"
                for name, r in ft.items()))
        return out
    if stage.startswith("07_"):
        if m.get("evaluation") == "not evaluable":
            return [f"not evaluable: {html.escape(str(m.get('reason')))}"]
        # records before DINO and MAE: MoCo, and the difference under its old key
        method = {"dino": "DINO", "mae": "MAE"}.get(m.get("ssl_method"), "MoCo")
        diff = "ssl_minus_random_init_f2_s1s2"
        if diff not in m and "moco_minus_random_init_f2_s1s2" in m:
            diff = "moco_minus_random_init_f2_s1s2"
        which = {"s2": "optical"}.get(m.get("headline_input", "s1/s2"), "s1/s2")
        return [f"<b>{method} ({html.escape(str(m.get('ssl_mode')))}) linear probe F2 {which} "
                f"{_num(m.get('linear_probe_f2_s1s2'))}</b>{_ci(m.get('linear_probe_f2_s1s2_ci'))}",
                f"random init {_num(m.get('random_init_f2_s1s2'))}"
                f"{_ci(m.get('random_init_f2_s1s2_ci'))}"
                + (_AT_FLOOR if m.get("random_init_at_floor") else ""),
                *([f"RCF {_num(m['rcf_f2_s1s2'])}{_ci(m.get('rcf_f2_s1s2_ci'))}"
                   + (_AT_FLOOR if m.get("rcf_at_floor") else "")
                   + f"; floor (label prior) {_num(m.get('label_prior_f2_s1s2'))}"
                   f"{_ci(m.get('label_prior_f2_s1s2_ci'))}"] if "rcf_f2_s1s2" in m else []),
                *([f"difference {m[diff]:+.1f}{_ci(m.get(diff + '_ci'))} vs random init (paired)"]
                  if diff in m else []),
                *([f"<b>difference {m['ssl_minus_strongest_f2_s1s2']:+.1f}</b>"
                   f"{_ci(m.get('ssl_minus_strongest_f2_s1s2_ci'))} vs the strongest fair baseline "
                   f"({html.escape(str(m.get('strongest_baseline')))}, paired)"]
                  if "ssl_minus_strongest_f2_s1s2" in m else []),
                "collapsed" if m.get("collapsed") else
                f"{_num(m.get('places_pretrained'))} places pretrained, not collapsed",
                *(f"beside it {html.escape(a.get('label') or name.upper())}: probe F2 "
                  f"{_num(a.get('linear_probe_f2_s1s2'))}, difference "
                  f"{a.get('ssl_minus_random_init_f2_s1s2', float('nan')):+.1f}"
                  f"{_ci(a.get('ssl_minus_random_init_f2_s1s2_ci'))} vs random init"
                  + (f", {a['ssl_minus_strongest_f2_s1s2']:+.1f}"
                     f"{_ci(a.get('ssl_minus_strongest_f2_s1s2_ci'))} vs "
                     f"{html.escape(str(a.get('strongest_baseline')))}"
                     if "ssl_minus_strongest_f2_s1s2" in a else "")
                  + (" (collapsed)" if a.get("collapsed") else "")
                  for name, a in (m.get("also") or {}).items()),
                *_protocol_lines(m.get("protocols") or [])]
    if stage.startswith("08_"):
        miou, ci = m.get("mean_iou") or {}, m.get("mean_iou_ci") or {}
        diff, dci = m.get("minus_random_init") or {}, m.get("minus_random_init_ci") or {}
        what = ", ".join(html.escape(str(m.get(k))) for k in ("decoder", "protocol"))
        low, floor = m.get("at_floor") or {}, m.get("floor") or {}
        return [f"<b>{html.escape(str(m.get('target')))} mean IoU</b> ({what} encoder, "
                f"{_num(m.get('few_labels'))} labelled):",
                *(f"{html.escape(name)} {_num(v)}{_ci(ci.get(name))}"
                  + (f", {diff[name]:+.1f}{_ci(dci.get(name))} vs random (paired)"
                     if name in diff else "")
                  + ((_AT_FLOOR if name.startswith("random init") else _BELOW)
                     if low.get(name) else "")
                  for name, v in miou.items()),
                *([f"floor ({html.escape(str(floor.get('name')))}): mean IoU "
                   f"{_num(floor.get('mean_iou'))}, OA {_num(floor.get('overall_accuracy'))}"]
                  if floor else [])]
    return [f"{html.escape(k)}: {_num(v) if isinstance(v, int | float) else html.escape(str(v))}"
            for k, v in m.items() if isinstance(v, int | float | str)][:4]
