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

from geofm_lib import records
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


def _protocol_lines(rows: list[records.ProtocolRow]) -> list[str]:
    """Seed 001's frozen protocol at the largest labelled set: each pretrained encoder's F1
    and its paired difference to random init."""
    if not rows:
        return []
    n = max(r.n_labelled for r in rows)
    return [f"frozen, {n} labels: {html.escape(r.init)} F1 {_num(r.score)}, "
            f"{r.minus_random_init:+.1f}{_ci(r.minus_random_init_ci)} vs random init"
            for r in rows if r.n_labelled == n and r.protocol == "frozen encoder"
            and r.minus_random_init is not None]


def key_metrics(stage: str, m: records.StageRecord | dict | None) -> list[str]:
    """HTML snippets of a notebook's key metrics from its typed record (empty: nothing
    recorded; a notebook of your own: its first plain values)."""
    if not m:
        return []
    if isinstance(m, records.DataPrepRecord):
        return [f"{_num(m.samples)} samples in {_num(m.shards)} shards",
                f"{_num(m.megabytes)} MB", f"{_num(m.samples_per_s, 0)} samples/s"]
    if isinstance(m, records.ExploreRecord):
        return [f"{_num(m.mean_labels_per_image, 2)} labels / image"]
    if isinstance(m, records.PretrainRecord):
        return [f"train loss {_num(m.final_train_loss, 3)}, val loss "
                f"{_num(m.final_val_loss, 3)}",
                f"{_num(m.steps)} steps, {_num(m.samples_per_s, 0)} samples/s "
                f"({html.escape(m.device)})"]
    if isinstance(m, records.ZeroShotRecord):
        above = sum(1 for r in m.per_dataset.values()
                    if r.r1_ci and r.chance_r1 is not None and r.r1_ci[0] > r.chance_r1)
        out = [f"<b>mean R@1 {_num(m.mean_r1)}</b> (chance "
               f"{_num(m.mean_chance_r1)}, at init {_num(m.init_mean_r1)})",
               f"R@1 interval above chance in {above} of {len(m.per_dataset)} datasets"]
        if m.not_evaluable:
            out.append(f"not evaluable: {html.escape(', '.join(m.not_evaluable))}")
        return out
    if isinstance(m, records.MapRecord):
        return [f"{_num(m.footprints)} footprints in {_num(m.layers)} layers, "
                f"{_num(m.image_overlays)} overlays"]
    if isinstance(m, records.ProbesRecord):
        means = m.mean_f2_micro
        out = [f"<b>linear probe F2 {_num(means.get('trained/linear'))}</b> trained vs "
               f"{_num(means.get('init/linear'))} at init"
               + (f", {_num(means['rcf/linear'])} RCF" if "rcf/linear" in means else "")
               + " (mean of datasets)"]
        if m.mean_label_prior_f2_micro is not None:
            out.append(f"floor (label prior) {_num(m.mean_label_prior_f2_micro)} (mean of "
                       f"datasets)" + _probes_at_floor(m.at_floor or [], len(m.per_dataset)))
        if m.finetuned:
            ds = next(iter(m.finetuned.values())).dataset
            out.append(f"fine-tuned on {html.escape(ds)}: F2 " + ", ".join(
                f"{_num(r.f2_micro)}{_ci(r.f2_micro_ci95)} from {html.escape(name)}"
                for name, r in m.finetuned.items()))
        return out
    if isinstance(m, records.SslRecord):
        return _ssl_lines(m)
    if isinstance(m, records.SegmentationRecord):
        return _segmentation_lines(m)
    if isinstance(m, records.SceneMapRecord):
        return _scene_lines(m)
    return [f"{html.escape(k)}: {_num(v) if isinstance(v, int | float) else html.escape(str(v))}"
            for k, v in m.items() if isinstance(v, int | float | str)][:4]


def _scene_lines(m: records.SceneMapRecord) -> list[str]:
    """09: the class map's accuracy beside its baseline and floors, or why it is not scored."""
    out = [f"{_num(m.tiles_kept)} of {_num(m.tiles)} tiles of {html.escape(m.scene)}, "
           f"{len(m.queries)} query heatmaps ({_num(m.query_seconds, 2)} s per query)"]
    if not m.accuracy:
        return out + [f"class map not scored: {html.escape(str(m.not_scored))}"]
    acc = m.accuracy
    main, base = acc.get(m.encoder), acc.get(m.baseline) if m.baseline else None
    floor = next((v for k, v in acc.items() if k.startswith("majority class")), None)
    line = f"<b>class map accuracy {_num(main.accuracy)}</b>{_ci(main.ci95)}" if main else ""
    if base is not None:
        line += f", {html.escape(m.baseline)} {_num(base.accuracy)}{_ci(base.ci95)}"
    if floor is not None:
        line += f"; floor (majority class) {_num(floor.accuracy)}"
        if main and main.ci95 and floor.accuracy >= main.ci95[0]:
            line += _BELOW
    return [line, *out]


def _ssl_lines(m: records.SslRecord) -> list[str]:
    if m.evaluation == "not evaluable":
        return [f"not evaluable: {html.escape(str(m.reason))}"]
    method = records_label(m.ssl_method)
    which = {"s2": "optical"}.get(m.headline_input or "s1/s2", "s1/s2")
    return [f"<b>{method} ({html.escape(m.ssl_mode)}) linear probe F2 {which} "
            f"{_num(m.linear_probe_f2_s1s2)}</b>{_ci(m.linear_probe_f2_s1s2_ci)}",
            f"random init {_num(m.random_init_f2_s1s2)}{_ci(m.random_init_f2_s1s2_ci)}"
            + (_AT_FLOOR if m.random_init_at_floor else ""),
            *([f"RCF {_num(m.rcf_f2_s1s2)}{_ci(m.rcf_f2_s1s2_ci)}"
               + (_AT_FLOOR if m.rcf_at_floor else "")
               + f"; floor (label prior) {_num(m.label_prior_f2_s1s2)}"
               f"{_ci(m.label_prior_f2_s1s2_ci)}"] if m.rcf_f2_s1s2 is not None else []),
            *([f"difference {m.ssl_minus_random_init_f2_s1s2:+.1f}"
               f"{_ci(m.ssl_minus_random_init_f2_s1s2_ci)} vs random init (paired)"]
              if m.ssl_minus_random_init_f2_s1s2 is not None else []),
            *([f"<b>difference {m.ssl_minus_strongest_f2_s1s2:+.1f}</b>"
               f"{_ci(m.ssl_minus_strongest_f2_s1s2_ci)} vs the strongest fair baseline "
               f"({html.escape(str(m.strongest_baseline))}, paired)"]
              if m.ssl_minus_strongest_f2_s1s2 is not None else []),
            "collapsed" if m.collapsed else
            f"{_num(m.places_pretrained)} places pretrained, not collapsed",
            *(f"beside it {html.escape(a.label)}: probe F2 {_num(a.linear_probe_f2_s1s2)}"
              + (f", difference {a.ssl_minus_random_init_f2_s1s2:+.1f}"
                 f"{_ci(a.ssl_minus_random_init_f2_s1s2_ci)} vs random init"
                 if a.ssl_minus_random_init_f2_s1s2 is not None else "")
              + (f", {a.ssl_minus_strongest_f2_s1s2:+.1f}"
                 f"{_ci(a.ssl_minus_strongest_f2_s1s2_ci)} vs "
                 f"{html.escape(str(a.strongest_baseline))}"
                 if a.ssl_minus_strongest_f2_s1s2 is not None else "")
              + (" (collapsed)" if a.collapsed else "")
              for a in (m.also or {}).values()),
            *_protocol_lines(m.protocols or [])]


def _seed_sd(sds: dict | None, name: str, seeds: list | None) -> str:
    """" ± sd over N seeds" where the run repeated its fits."""
    if not sds or name not in sds or not seeds:
        return ""
    return f' <span class="ci">± {sds[name]:.1f} over {len(seeds)} seeds</span>'


def records_label(method: str) -> str:
    return {"dino": "DINO", "mae": "MAE", "moco": "MoCo"}.get(method, html.escape(method))


def _segmentation_lines(m: records.SegmentationRecord) -> list[str]:
    what = f"{html.escape(m.decoder)}, {html.escape(m.protocol)}"
    return [f"<b>{html.escape(m.target)} mean IoU</b> ({what} encoder, "
            f"{_num(m.few_labels)} labelled):",
            *(f"{html.escape(name)} {_num(v)}{_ci(m.mean_iou_ci.get(name))}"
              + _seed_sd(m.mean_iou_seed_sd, name, m.seeds)
              + (f", {m.minus_random_init[name]:+.1f}{_ci(m.minus_random_init_ci.get(name))} "
                 f"vs random (paired)" + _seed_sd(m.minus_random_init_seed_sd, name, m.seeds)
                 if name in m.minus_random_init else "")
              + ((_AT_FLOOR if name.startswith("random init") else _BELOW)
                 if m.at_floor.get(name) else "")
              for name, v in m.mean_iou.items()),
            f"floor ({html.escape(m.floor.name)}): mean IoU {_num(m.floor.mean_iou)}, OA "
            f"{_num(m.floor.overall_accuracy)}"]


def _interval(ci) -> str:
    return (f' <span class=ci>[{ci[0]:.1f}, {ci[1]:.1f}]</span>'
            if isinstance(ci, list | tuple) and len(ci) == 2 else "")


def headline(stage: str, rec) -> tuple[str, str | None]:
    """A headline cell (HTML) with its interval and its chance level or floor, and, where the
    number does not clear them, the words that say so (None: it clears them, or nothing is
    there to clear)."""
    if isinstance(rec, records.ZeroShotRecord) and rec.mean_r1 is not None:
        scored = [r for r in rec.per_dataset.values() if r.r1_ci and r.chance_r1 is not None]
        above = sum(r.r1_ci[0] > r.chance_r1 for r in scored)
        cell = (f"{rec.mean_r1:.1f} <span class=chance>(chance {_short(rec.mean_chance_r1)}; "
                f"above chance in {above}/{len(scored)})</span>")
        return cell, ("R@1 not above chance in any dataset" if scored and not above else None)
    if isinstance(rec, records.ProbesRecord) and rec.probe_f2_micro is not None:
        first = rec.encoders[0] if rec.encoders else ""
        low = [k for k in rec.at_floor if k.startswith(f"{first}/") and k.endswith("/linear")]
        cell = (f"{rec.probe_f2_micro:.1f} <span class=chance>(label prior "
                f"{_short(rec.mean_label_prior_f2_micro)})</span>")
        return cell, (f"{html.escape(first)} linear probe at the label prior in {len(low)} "
                      f"dataset(s)" if low else None)
    if isinstance(rec, records.SslRecord) and rec.linear_probe_f2_s1s2 is not None:
        ci = rec.linear_probe_f2_s1s2_ci
        floor = rec.label_prior_f2_s1s2
        cell = (f"{rec.linear_probe_f2_s1s2:.1f}{_interval(ci)} <span class=chance>(label "
                f"prior {_short(floor)})</span>")
        d, dci = rec.ssl_minus_strongest_f2_s1s2, rec.ssl_minus_strongest_f2_s1s2_ci
        if d is not None:
            cell += (f"<br><span class=chance>{d:+.1f}{_interval(dci)} vs "
                     f"{html.escape(rec.strongest_baseline or 'the strongest baseline')}</span>")
        words = []
        if ci and floor is not None and ci[0] <= floor:
            words.append("SSL probe's interval reaches the label prior")
        if dci and dci[0] <= 0:
            words.append("not above the strongest fair baseline")
        return cell, "; ".join(words) or None
    if isinstance(rec, records.SegmentationRecord) and rec.mean_iou:
        first = next(iter(rec.mean_iou))
        cell = (f"{rec.mean_iou[first]:.1f}{_interval(rec.mean_iou_ci.get(first))} "
                f"<span class=chance>({html.escape(first)}, {rec.few_labels} labels; floor "
                f"{rec.floor.mean_iou:.1f})</span>")
        d = rec.minus_random_init.get(first)
        dci = rec.minus_random_init_ci.get(first)
        if d is not None:
            cell += f"<br><span class=chance>{d:+.1f}{_interval(dci)} vs random init</span>"
        words = []
        if rec.at_floor.get(first):
            words.append(f"{html.escape(first)} at the majority-class floor")
        if dci and dci[0] <= 0:
            words.append(f"{html.escape(first)} not above its random init")
        return cell, "; ".join(words) or None
    return "", None


def _short(v) -> str:
    """A number as the headline shows it (3 significant digits), or '-'."""
    return f"{v:.3g}" if isinstance(v, int | float) else "-"
