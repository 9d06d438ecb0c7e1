"""Figures for the notebooks: sample grids, label frequencies, label co-occurrence.

Display conventions (stated once, used everywhere):
  * Sentinel-2: false colour NIR/red/green (B08, B04, B03) with a fixed stretch (reflectance
    0-0.5 NIR, 0-0.3 red and green, gamma 1.4), so vegetation is red, water dark, and images
    compare with each other.
  * Sentinel-1: VV backscatter in dB shown in grey between -25 dB and 0 dB.
  * 8-bit RGB and panchromatic products: shown as stored.
"""

from __future__ import annotations

import io
import textwrap
import time

import numpy as np

from geofm_lib.data.display import display_ranges, display_rgb
from geofm_lib.data.shards import Manifest
from geofm_lib.evaluation.metrics import label_matrix
from geofm_lib.progress import batch_mode


def sample_grid(samples_by_dataset: dict[str, list[dict]], n: int = 6, title_chars: int = 60):
    """A grid: one row per dataset, ``n`` samples each, titled with their labels."""
    import matplotlib.pyplot as plt

    rows = len(samples_by_dataset)
    fig, axes = plt.subplots(rows, n, figsize=(2.2 * n, 2.5 * rows), squeeze=False)
    for r, (ds, samples) in enumerate(samples_by_dataset.items()):
        # one colour scale per dataset (16-bit products: the row's pooled stretch)
        ranges = display_ranges([s["img"] for s in samples], samples[0]["json"]["bands"]) \
            if samples and len({tuple(s["json"]["bands"]) for s in samples}) == 1 else None
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(samples):
                continue
            s = samples[c]
            ax.imshow(display_rgb(s["img"], s["json"]["bands"], ranges),
                      interpolation="nearest")
            labels = ", ".join(s["json"]["labels"]) or "(no labels)"
            ax.set_title(textwrap.fill(textwrap.shorten(labels, title_chars), 34), fontsize=7)
            if c == 0:
                ax.text(-0.08, 0.5, ds, transform=ax.transAxes, rotation=90, va="center",
                        ha="right", fontsize=9, fontweight="bold")
    fig.tight_layout()
    return fig


def label_frequency(manifest: Manifest, dataset: str, split: str = "train", top: int = 25):
    """Horizontal bars of how many training images carry each label."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    freq = manifest.label_frequency(dataset, split)
    items = sorted(freq.items(), key=lambda kv: -kv[1])[:top]
    fig, ax = plt.subplots(figsize=(7, 0.28 * max(len(items), 3) + 0.8))
    if items:
        names = [textwrap.shorten(k, 45) for k, _ in items]
        sns.barplot(x=[v for _, v in items], y=names, ax=ax, color="#4C72B0")
    total = manifest["counts"][dataset][split]
    ax.set_title(f"{dataset}: images per label ({split}, {total} images)", fontsize=10)
    ax.set_xlabel("images")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def cooccurrence_heatmap(samples: list[dict], vocabulary: tuple[str, ...], title: str = ""):
    """Pearson (phi) correlation between label indicators, as in seed 002's Fig. 2.

    Labels that never occur in ``samples`` are left out (their correlation is undefined).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    y = label_matrix([s["json"]["labels"] for s in samples], vocabulary).astype(float)
    keep = y.std(axis=0) > 0
    names = [textwrap.shorten(v, 28) for v, k in zip(vocabulary, keep) if k]
    corr = np.corrcoef(y[:, keep], rowvar=False) if keep.sum() > 1 else np.ones((1, 1))
    size = 0.32 * len(names) + 2.5
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    sns.heatmap(corr, xticklabels=names, yticklabels=names, cmap="RdBu_r", vmin=-1, vmax=1,
                center=0, square=True, ax=ax, cbar_kws={"shrink": 0.6, "label": "phi"})
    ax.tick_params(labelsize=7)
    ax.set_title(title or "label correlation", fontsize=10)
    fig.tight_layout()
    return fig


def sample_browser(samples_by_dataset: dict[str, list[dict]]):
    """An ipywidgets browser (for JupyterLab): pick a dataset and a sample, see image + caption.

    In a static HTML report widgets do not run; the notebooks show figures for that. In a
    batch run (papermill, ``GEOFM_PROGRESS=text``) no widget is made: nothing can move its
    slider, and the Output widget's redraws could leave the kernel's reply unanswered (02
    hung in about 1 of 7 report runs, issue 36). A note says where the browser works.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import HTML

    if batch_mode():
        n = sum(len(v) for v in samples_by_dataset.values())
        return HTML(f"<p><i>Sample browser ({n} samples of {len(samples_by_dataset)} "
                    f"datasets): interactive when this notebook runs in JupyterLab; a stored "
                    f"report shows the figures above instead.</i></p>")

    names = list(samples_by_dataset)
    pick = widgets.Dropdown(options=names, description="dataset")
    index = widgets.IntSlider(0, 0, max(len(samples_by_dataset[names[0]]) - 1, 0),
                              description="sample")
    out = widgets.Output()

    def show(*_):
        samples = samples_by_dataset[pick.value]
        index.max = max(len(samples) - 1, 0)
        s = samples[min(index.value, index.max)]
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(4, 4))
            ax.imshow(display_rgb(s["img"], s["json"]["bands"]), interpolation="nearest")
            ax.axis("off")
            plt.show()
            meta = s["json"]
            print(s["txt"])
            print(f"labels: {', '.join(meta['labels']) or '-'}")
            print(f"{meta['sensor']}, {meta['gsd_m']:g} m, {meta.get('date')}, "
                  f"split {meta['split']}, key {s['__key__']}")

    pick.observe(show, "value")
    index.observe(show, "value")
    show()
    return widgets.VBox([widgets.HBox([pick, index]), out])


# --- training and evaluation figures -------------------------------------------------------------

class LiveLoss:
    """A loss curve that redraws in place while training runs (one display, updated).

    In JupyterLab it refreshes every ``every_s`` seconds; in batch runs (papermill, CI) only
    at epoch ends, so the stored notebook carries one final figure.
    """

    def __init__(self, total_steps: int, every_s: float = 3.0):
        from IPython.display import display

        self.total_steps = total_steps
        self.every_s = 1e9 if batch_mode() else every_s
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.epochs: list[dict] = []
        self._last = 0.0
        self._handle = display(self._figure(), display_id=True)

    def step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        if time.monotonic() - self._last > self.every_s:
            self._refresh()

    def epoch(self, record: dict) -> None:
        self.epochs.append(record)
        self._refresh()

    def replay(self, step_losses: list[float], history: list[dict]) -> None:
        """Draw a finished run's curves (a re-run that loaded its checkpoint)."""
        self.steps = list(range(1, len(step_losses) + 1))
        self.losses = list(step_losses)
        self.epochs = list(history)
        self._refresh()

    def _refresh(self) -> None:
        if self._handle is not None:
            self._handle.update(self._figure())
        self._last = time.monotonic()

    def _figure(self):
        import matplotlib.pyplot as plt

        fig = training_curves(self.steps, self.losses, self.epochs, self.total_steps)
        plt.close(fig)
        return fig


def training_curves(steps, losses, epochs: list[dict], total_steps: int | None = None):
    """Train loss per step (and its running mean), val loss and val mean R@1 per epoch."""
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    if losses:
        ax.plot(steps, losses, color="#9db4d8", lw=0.8, label="train (step)")
        w = max(1, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, color="#2457c5", lw=1.8, label=f"train (mean of {w})")
    if epochs:
        ax.plot([e["step"] for e in epochs], [e["val_loss"] for e in epochs], "o-",
                color="#d62728", label="val (epoch end)")
        ax2.plot([e["epoch"] for e in epochs], [e["val_mean_R@1"] for e in epochs], "o-",
                 color="#2ca02c", label="val mean R@1")
        ax2.set_xticks([e["epoch"] for e in epochs])
        ax2.margins(x=0.08)
        chance = [e.get("val_mean_chance_R@1") for e in epochs]
        if any(c is not None for c in chance):  # the exact chance level of the same images
            ax2.plot([e["epoch"] for e in epochs], [np.nan if c is None else c for c in chance],
                     "--", color="black", lw=1, label="chance")
        ax2.legend(fontsize=8)
    if total_steps:  # the last point (at total_steps) stays inside the frame
        ax.set_xlim(0, total_steps * 1.03)
    ax.set_xlabel("step")
    ax.set_ylabel("CLIP loss")
    ax.set_title("contrastive loss", fontsize=10)
    if losses or epochs:
        ax.legend(fontsize=8)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("percent")
    ax2.set_title("validation: mean R@1 over datasets", fontsize=10)
    fig.tight_layout()
    return fig


def recall_bars(table, chance_table=None, title: str = ""):
    """Grouped bars of R@1/5/10 per dataset from a results table, each with its 95 % interval
    (the table's "R@K 95% CI" column) as an error bar and chance as a black tick; the legend
    sits above the axes, where it hides no bar."""
    import matplotlib.pyplot as plt

    ks = [c for c in ("R@1", "R@5", "R@10") if c in table.columns]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(table)), 4.2))
    width = 0.8 / len(ks)
    colors = ("#2457c5", "#6a9be0", "#b5cdf0")
    x = np.arange(len(table))
    for i, k in enumerate(ks):
        vals = np.array([np.nan if v == "-" else float(v) for v in table[k]])
        at = x + (i - (len(ks) - 1) / 2) * width
        low, high = _interval_column(table.get(f"{k} 95% CI"), len(vals))
        err = np.vstack([np.clip(vals - low, 0, None), np.clip(high - vals, 0, None)])
        ax.bar(at, vals, width, label=k, color=colors[i], yerr=err, capsize=2,
               error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
        chance = [np.nan if v == "-" else float(v) for v in table[f"chance {k}"]]
        ax.scatter(at, chance, marker="_", s=120, color="black", zorder=3,
                   label="chance" if i == 0 else None)
    ax.set_xticks(x, table.index, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("percent of images")
    ax.set_ylim(0, 105)
    ax.set_title(title or "image-to-text R@K per dataset ('-' cells left blank)", fontsize=10,
                 pad=24)
    ax.legend(fontsize=8, ncol=len(ks) + 1, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False, borderaxespad=0.2)
    fig.text(0.99, 0.01, "error bars: 95 % bootstrap interval over images", ha="right",
             fontsize=7, color="#555555")
    fig.tight_layout()
    return fig


def _interval_column(column, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) arrays from a column of "low-high" strings ("-" or missing: NaN)."""
    low, high = np.full(n, np.nan), np.full(n, np.nan)
    if column is None:
        return low, high
    for j, cell in enumerate(column):
        parts = str(cell).rsplit("-", 1) if cell not in ("-", None) else []
        if len(parts) == 2:
            try:
                low[j], high[j] = float(parts[0]), float(parts[1])
            except ValueError:
                pass
    return low, high


def prediction_examples(examples: list[tuple[str, dict, dict]], ncols: int = 4):
    """Seed 000 Fig. 2 style: each image with its correct (green), missed (orange) and false
    (red) labels. ``examples``: (title, prediction record, decoded sample) triples."""
    import matplotlib.pyplot as plt

    n = len(examples)
    rows = max(1, int(np.ceil(n / ncols)))
    fig = plt.figure(figsize=(3.3 * ncols, 4.6 * rows))
    grid = fig.add_gridspec(2 * rows, ncols, height_ratios=[3.0, 1.5] * rows, hspace=0.08,
                            wspace=0.08)
    for i, (title, rec, sample) in enumerate(examples):
        r, c = divmod(i, ncols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(display_rgb(sample["img"], sample["json"]["bands"]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8, fontweight="bold")
        tx = fig.add_subplot(grid[2 * r + 1, c])
        tx.axis("off")
        y = 1.0
        for head, labels, color in (("correct: ", rec["correct"], "#1a7f37"),
                                    ("missed: ", rec["missed"], "#b45309"),
                                    ("false: ", rec["false"], "#c62828")):
            lines = textwrap.wrap(head + (", ".join(labels) or "-"), 42)[:3]
            tx.text(0, y, "\n".join(lines), transform=tx.transAxes, va="top", fontsize=7,
                    color=color)
            y -= 0.14 * len(lines) + 0.06
    return fig


def per_class_recall_plot(recall: np.ndarray, support: np.ndarray, vocabulary, title: str = "",
                          top: int = 30, chance: np.ndarray | None = None):
    """Horizontal bars of per-class recall (top-|y| predicted sets), with class support and,
    given ``chance`` (:func:`evaluation.metrics.per_class_chance`), each class's chance recall
    as a black tick."""
    import matplotlib.pyplot as plt

    order = [i for i in np.argsort(-support) if support[i] > 0][:top]
    fig, ax = plt.subplots(figsize=(7, 0.26 * max(len(order), 3) + 0.9))
    names = [f"{textwrap.shorten(vocabulary[i], 40)} (n={int(support[i])})" for i in order]
    ax.barh(names[::-1], [recall[i] for i in order][::-1], color="#4C72B0")
    if chance is not None:
        ax.scatter([chance[i] for i in order][::-1], names[::-1], marker="|", s=120,
                   color="black", zorder=3, label="chance (random ranking)")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(0, 100)
    ax.set_xlabel("recall, percent (label in the image's top-|y| prediction)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def thumbnails_png(samples: dict[str, dict], px: int = 96) -> dict[str, bytes]:
    """Small PNGs of samples (by key) for map popups, one colour scale per dataset (16-bit
    products: the dataset's pooled stretch, so neighbouring patches of one scene match)."""
    by_ds: dict[tuple, list[str]] = {}
    for key, s in samples.items():
        by_ds.setdefault((s["json"]["dataset"], tuple(s["json"]["bands"])), []).append(key)
    out = {}
    for (_, bands), keys in by_ds.items():
        ranges = display_ranges([samples[k]["img"] for k in keys], list(bands))
        for k in keys:
            out[k] = thumbnail_png(samples[k]["img"], list(bands), px, ranges)
    return out


def thumbnail_png(image: np.ndarray, bands: list[str], px: int = 96,
                  ranges: list[tuple[float, float]] | None = None) -> bytes:
    """A small PNG of a product (display conventions above), for map popups."""
    from PIL import Image

    rgb = (display_rgb(image, bands, ranges) * 255).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(rgb).resize((px, px), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# --- frozen-feature figures (notebook 06) -----------------------------------------------------

def umap_scatter(xy: np.ndarray, categories, title: str = "", ax=None):
    """2-D embedding coloured by a categorical variable (dataset, group), with a legend."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    cats = np.asarray(categories)
    for i, c in enumerate(dict.fromkeys(cats.tolist())):
        m = cats == c
        ax.scatter(xy[m, 0], xy[m, 1], s=3, alpha=0.6, color=f"C{i % 10}", label=str(c),
                   rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, markerscale=3, loc="best", frameon=False)
    return ax


def _class_panels(y: np.ndarray, max_classes: int, cols: int, size: tuple[float, float]):
    """A figure with one blank panel per class present in ``y`` (most frequent first, at most
    ``max_classes``): (figure, [(axes, class index), ...])."""
    import matplotlib.pyplot as plt

    order = [i for i in np.argsort(-y.sum(axis=0)) if y[:, i].any()][:max_classes]
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, list(zip(axes.flat, order, strict=False))


def umap_one_vs_rest(xy: np.ndarray, y: np.ndarray, vocabulary, max_classes: int = 12,
                     title: str = ""):
    """Seed 002 Fig. 3 style: one panel per class, its images highlighted against the rest."""

    fig, panels = _class_panels(y, max_classes, cols=4, size=(3.2, 3.0))
    for ax, j in panels:
        pos = y[:, j]
        ax.scatter(xy[~pos, 0], xy[~pos, 1], s=2, color="#c9ced8", rasterized=True)
        ax.scatter(xy[pos, 0], xy[pos, 1], s=3, color="#d62728", rasterized=True)
        ax.set_title(f"{textwrap.shorten(vocabulary[j], 30)} (n={int(pos.sum())})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def per_class_bars(values: dict[str, list[float]], vocabulary, support=None, title: str = "",
                   floor: list[float] | None = None):
    """Grouped horizontal bars of a per-class metric for several encoders/probes; ``floor``:
    each class's score under the floor (the label prior), a black tick across its group."""
    import matplotlib.pyplot as plt

    names = list(values)
    order = list(range(len(vocabulary)))
    if support is not None:
        order = [i for i in np.argsort(-np.asarray(support)) if support[i] > 0]
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * max(len(order), 3) * len(names) / 1.5 + 1))
    h = 0.8 / len(names)
    for k, name in enumerate(names):
        ax.barh(np.arange(len(order)) + k * h, [values[name][i] for i in order], h,
                label=name, color=f"C{k}")
    labels = [textwrap.shorten(vocabulary[i], 38) + (f" (n={int(support[i])})"
                                                     if support is not None else "")
              for i in order]
    ax.set_yticks(np.arange(len(order)) + h * (len(names) - 1) / 2, labels, fontsize=7)
    if floor is not None:
        ax.scatter([floor[i] for i in order], np.arange(len(order)) + h * (len(names) - 1) / 2,
                   marker="|", s=300, color="black", zorder=3, label="label prior (floor)")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("F2, percent")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def per_class_confusion(y_true: np.ndarray, y_pred: np.ndarray, vocabulary, max_classes: int = 12,
                        title: str = ""):
    """Seed 002 Fig. 5 style: a 2x2 confusion matrix per class (rows true, columns predicted)."""

    fig, panels = _class_panels(y_true, max_classes, cols=6, size=(2.1, 2.3))
    for ax, j in panels:
        t, p = y_true[:, j].astype(bool), y_pred[:, j].astype(bool)
        cm = np.array([[(~t & ~p).sum(), (~t & p).sum()], [(t & ~p).sum(), (t & p).sum()]])
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_title(textwrap.shorten(vocabulary[j], 22), fontsize=7)
        ax.axis("on")
        ax.set_xticks([0, 1], ["no", "yes"], fontsize=6)
        ax.set_yticks([0, 1], ["no", "yes"], fontsize=6)
    fig.suptitle(title + " (rows: true, columns: predicted)", fontsize=9)
    fig.tight_layout()
    return fig


def benchmark_bars(results: dict):
    """Training benchmarks side by side (``bench_train.run``): ours against open_clip_train,
    the loader against the step, 1 against 2 processes; samples/s, higher is better."""
    import matplotlib.pyplot as plt

    panels = []
    row = results.get("ours_vs_open_clip_train", {})
    if "open_clip_train_samples_per_s" in row:
        panels.append(("step: ours vs open_clip_train",
                       {"geofm\n(before)": row.get("ours_before_channels_last_samples_per_s",
                                                   float("nan")),
                        "geofm": row["ours_samples_per_s"],
                        "open_clip_train": row["open_clip_train_samples_per_s"],
                        "open_clip_train\nexcl. data": row[
                            "open_clip_train_excl_data_samples_per_s"]}))
    lvs = results.get("loader_vs_step")
    if lvs:
        panels.append((f"loader vs step (target loader >= {lvs['target_ratio']:g}x)",
                       {"loader alone": lvs["loader_samples_per_s"],
                        "step alone": lvs["step_samples_per_s"]}))
    ddp = results.get("ddp_gloo_cpu")
    if ddp:
        panels.append(("torchrun, gloo on the CPU",
                       {k.replace("_", " "): v["samples_per_s"] for k, v in ddp.items()
                        if isinstance(v, dict)}))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.4),
                             squeeze=False)
    for ax, (title, values) in zip(axes[0], panels, strict=False):
        bars = ax.bar(list(values), list(values.values()),
                      color=["#aec7e8", "#1f77b4", "#ff7f0e", "#ffbb78"][-len(values):])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("samples / s")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def ssl_curves(history: list[dict]):
    """SSL training over steps, panels by what the method logs: the loss; MoCo's similarity of
    positive pairs and queue negatives and the queue fill; DINO's teacher entropy against its
    two collapses (log K: uniform outputs; 0: one output for all) and the student-teacher KL;
    MAE's reconstruction loss under fixed masks; for all, the embedding std against the
    1/sqrt(d) of embeddings spread over the sphere (a collapsed encoder falls towards 0)."""
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    last = history[-1]
    col = lambda k: [r.get(k, np.nan) for r in history]  # noqa: E731
    if "queue_filled" in last:
        kind, loss_name = "moco", "InfoNCE loss"
    elif "teacher_entropy" in last:
        kind, loss_name = "dino", "DINO loss (cross-entropy)"
    else:
        kind, loss_name = "mae", "MAE loss (masked patches)"
    n = {"moco": 4, "dino": 4, "mae": 3}[kind]
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.2))
    axes[0].plot(steps, col("loss"), color="#1f77b4")
    axes[0].set_title(loss_name)
    if kind == "moco":
        axes[1].plot(steps, col("positive_similarity"), label="positive pair")
        axes[1].plot(steps, col("negative_similarity"), label="queue negatives")
        axes[1].set_title("cosine similarity of the query to")
        axes[1].legend(fontsize=8)
        axes[2].plot(steps, col("queue_filled"), color="#2ca02c")
        axes[2].set_title("keys enqueued (queue size)")
    elif kind == "dino":
        axes[1].plot(steps, col("teacher_entropy"), label="per sample")
        axes[1].plot(steps, col("teacher_batch_entropy"), label="of the batch mean")
        axes[1].axhline(last["max_entropy"], color="red", ls=":", lw=1, label="log K (uniform)")
        axes[1].set_title("teacher output entropy")
        axes[1].legend(fontsize=7)
        axes[2].plot(steps, col("kl_teacher_student"), color="#9467bd")
        axes[2].set_title("KL(teacher || student)")
    else:
        axes[1].plot(steps, col("reconstruction_loss"), color="#ff7f0e", label="MAE")
        # the target is normalised per patch: predicting each hidden patch's mean (0) scores 1
        axes[1].axhline(1.0, color="grey", ls=":", lw=1, label="each patch's mean")
        axes[1].set_title("reconstruction loss, fixed masks")
        axes[1].legend(fontsize=7)
    ax = axes[-1]
    ax.plot(steps, col("embedding_std"), label="encoder features")
    if kind == "moco":
        ax.plot(steps, col("queue_std"), label="queue keys")
    d = last.get("feature_dim")
    if d:
        ax.axhline(1 / np.sqrt(d), color="grey", ls="--", lw=1, label="1/sqrt(d)")
        ax.axhline(0.1 / np.sqrt(d), color="red", ls=":", lw=1, label="collapse line")
    ax.set_title("embedding std (collapse check)")
    ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig


def mae_reconstructions(shown: dict, bands: list[str], n: int = 4):
    """MAE's reconstructions: per sample the image, what the encoder saw (masked patches
    blank) and the reconstruction. Standardised bands shown as colour composites chosen by
    name and wavelength (red, green, blue for optical views; VV for SAR-only ones, grey), each
    channel stretched between the 2nd and 98th percentile of the image, the same stretch for
    the three panels of a row."""
    import matplotlib.pyplot as plt

    from geofm_lib.bands import POLARISATIONS, colour_bands

    n = min(n, len(shown["image"]))
    optical = [j for j, b in enumerate(bands) if b not in POLARISATIONS]
    rgb = colour_bands([bands[j] for j in optical]) if optical else None
    rgb = [optical[j] for j in rgb] if rgb is not None else None
    sar = [j for j, b in enumerate(bands) if b in POLARISATIONS]
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    titles = ("image", f"visible ({1 - shown['masked_share']:.0%} of patches)",
              "reconstruction")
    for i in range(n):
        img = shown["image"][i]
        use = (rgb if rgb and np.abs(img[rgb]).sum() > 0
               else [sar[0]] * 3 if sar else [optical[0]] * 3)
        lo = np.percentile(img[use], 2, axis=(1, 2))[:, None, None]
        hi = np.percentile(img[use], 98, axis=(1, 2))[:, None, None]
        for k, key in enumerate(("image", "visible", "reconstruction")):
            x = np.clip((shown[key][i][use] - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
            if key == "visible":  # blank patches white, not a stretched colour
                x = np.where((shown[key][i][use] == 0).all(axis=0), 1.0, x)
            axes[i, k].imshow(np.moveaxis(x, 0, -1))
            axes[i, k].set_xticks([])
            axes[i, k].set_yticks([])
            if i == 0:
                axes[i, k].set_title(titles[k], fontsize=9)
    fig.tight_layout()
    return fig


def ssl_score_bars(rows: list[dict], inputs=("s1", "s2", "s1/s2")):
    """Seed 003's evaluation as bars: one panel per task, a bar per method and input, with the
    95 % bootstrap interval as error bars."""
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.DataFrame(rows)
    tasks = list(dict.fromkeys(table.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub_t = table[table.task == task]
        methods = list(dict.fromkeys(sub_t.method))
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            sub = sub_t[sub_t.method == m].set_index("input").loc[list(inputs)]
            lo = sub.score - sub.ci.map(lambda c: c[0])
            hi = sub.ci.map(lambda c: c[1]) - sub.score
            ax.bar(np.arange(len(inputs)) + i * width, sub.score, width, yerr=[lo, hi],
                   capsize=2, label=m)
        ax.set_xticks(np.arange(len(inputs)) + width * (len(methods) - 1) / 2, list(inputs))
        ax.set_ylabel(f"{sub_t.metric.iloc[0]} (%)")
        ax.set_title(task)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def protocol_curves(rows: list[dict]):
    """Seed 001's label-efficiency curves: one panel per protocol, F1 against labelled places
    (log scale) for each initialisation, the bootstrap 95 % interval as a band."""
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.DataFrame(rows)
    protocols = list(dict.fromkeys(table.protocol))
    inits = list(dict.fromkeys(table["init"]))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(inits)}
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.2 * len(protocols), 3.4),
                             squeeze=False, sharey=True)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        sub_p = table[table.protocol == protocol]
        for m in inits:
            sub = sub_p[sub_p["init"] == m].sort_values("n_labelled")
            if sub.empty:
                continue
            style = "--" if m.startswith("random init") else "-"
            ax.plot(sub.n_labelled, sub.score, style, marker="o", color=colours[m], label=m)
            ax.fill_between(sub.n_labelled, sub.ci.map(lambda c: c[0]),
                            sub.ci.map(lambda c: c[1]), color=colours[m], alpha=0.12)
        ax.set_xscale("log")
        ticks = sorted(set(sub_p.n_labelled))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled places")
        ax.set_title(protocol, fontsize=10)
    axes[0][0].set_ylabel(f"{table.metric.iloc[0]} (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    return fig


def convergence_curves(rows: list[dict]):
    """Seed 001's convergence plot for the fine-tuning protocols: one row of panels per
    protocol, one column per labelled-set size, test F1 against optimiser steps for each
    initialisation (step 0: the head's start). Rows without a ``curve`` (the frozen protocol,
    runs before curves were recorded) are left out; None when no row has one."""
    import matplotlib.pyplot as plt

    tuned = [r for r in rows if r.get("curve")]
    if not tuned:
        return None
    protocols = list(dict.fromkeys(r["protocol"] for r in tuned))
    sizes = sorted({r["n_labelled"] for r in tuned})
    inits = list(dict.fromkeys(r["init"] for r in rows))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(inits)}
    fig, axes = plt.subplots(len(protocols), len(sizes), squeeze=False, sharey=True,
                             figsize=(3.4 * len(sizes), 2.7 * len(protocols)))
    for r in tuned:
        ax = axes[protocols.index(r["protocol"])][sizes.index(r["n_labelled"])]
        steps, f1 = zip(*r["curve"])
        ax.plot(steps, f1, "--" if r["init"].startswith("random init") else "-",
                marker="o" if len(steps) < 12 else None, markersize=3,
                color=colours[r["init"]], label=r["init"])
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # optimiser steps are whole
    for i, protocol in enumerate(protocols):
        axes[i][0].set_ylabel(f"{protocol}\nF1 micro (%)", fontsize=9)
        for j, n in enumerate(sizes):
            axes[i][j].set_title(f"{n} labelled places", fontsize=9)
            axes[-1][j].set_xlabel("optimiser steps")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    return fig


def probe_efficiency(curve):
    """Each encoder's mean linear-probe F2 over the datasets against the share of the training
    split it was fitted on (``curve``: rows of encoder, fraction, F2 micro)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, part in curve.groupby("encoder", sort=False):
        ax.plot(100 * part["fraction"], part["F2 micro"], "o-", label=name)
    floor = curve.attrs.get("floor")
    if floor is not None:  # the label prior (each label's training frequency), same average
        ax.axhline(floor, ls="--", color="black", lw=1, label="label prior (floor)")
    ax.set_xscale("log")
    ax.set_xlabel("share of the training split, percent")
    ax.set_ylabel("F2 micro, percent (mean over datasets)")
    ax.set_title("one fit per share and dataset: intervals at the full share in the table",
                 fontsize=8)
    ax.legend(fontsize=8)
    return fig


def segmentation_panel(images: np.ndarray, bands: list[str], targets: np.ndarray,
                       predictions: dict[str, np.ndarray], classes: list[str], n: int = 4):
    """Seed 001's qualitative panel: per test image the image (red/green/blue by band name,
    each band stretched between its 2nd and 98th percentile), the target mask and each
    encoder's prediction side by side; left-out pixels white."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from geofm_lib.bands import POLARISATIONS, colour_bands

    n = min(n, len(images))
    optical = [j for j, b in enumerate(bands) if b not in POLARISATIONS]
    rgb = colour_bands([bands[j] for j in optical]) if optical else None
    use = [optical[j] for j in rgb] if rgb is not None else [0, 0, 0]
    palette = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    cmap = ListedColormap([palette(i % palette.N) for i in range(len(classes))] + ["white"])
    cols = 2 + len(predictions)
    fig, axes = plt.subplots(n, cols, figsize=(2.1 * cols, 2.1 * n), squeeze=False)
    for i in range(n):
        img = images[i][use]
        lo = np.percentile(img, 2, axis=(1, 2))[:, None, None]
        hi = np.percentile(img, 98, axis=(1, 2))[:, None, None]
        axes[i, 0].imshow(np.moveaxis(np.clip((img - lo) / np.maximum(hi - lo, 1e-6), 0, 1),
                                      0, -1))
        shown = [("image", None), ("mask", targets[i]),
                 *((name, p[i]) for name, p in predictions.items())]
        for k, (title, m) in enumerate(shown):
            ax = axes[i, k]
            if m is not None:
                m = np.where(targets[i] < 0, len(classes), m)
                ax.imshow(m, cmap=cmap, vmin=0, vmax=len(classes), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    present = sorted({int(v) for v in np.unique(targets[:n]) if v >= 0})
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(c)) for c in present]
    fig.legend(handles, [classes[c] for c in present], loc="lower center",
               ncol=min(len(present), 4), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def segmentation_curves(histories: dict[str, list[dict]], fractions: dict[str, list[dict]]):
    """Left: validation mean IoU per epoch of each encoder (convergence); right: mean IoU
    with its 95 % interval against the number of labelled training images (label
    efficiency), one line per encoder."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for name, hist in histories.items():
        pts = [(h["epoch"], h["val_mean_iou"]) for h in hist if "val_mean_iou" in h]
        axes[0].plot(*zip(*pts, strict=True), marker="o", ms=3, label=name)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("validation mean IoU (%)")
    axes[0].set_title("convergence (all labelled images)")
    for name, rows in fractions.items():
        rows = sorted(rows, key=lambda r: r["n_train"])
        x = [r["n_train"] for r in rows]
        y = [r["mean_iou"] for r in rows]
        lo = [r["mean_iou"] - r["ci"]["mean_iou"][0] for r in rows]
        hi = [r["ci"]["mean_iou"][1] - r["mean_iou"] for r in rows]
        axes[1].errorbar(x, y, yerr=[lo, hi], marker="o", ms=4, capsize=3, label=name)
    counts = sorted({r["n_train"] for rows in fractions.values() for r in rows})
    axes[1].set_xscale("log")
    axes[1].set_xticks(counts, [str(c) for c in counts])
    axes[1].minorticks_off()
    axes[1].set_xlabel("labelled training images")
    axes[1].set_ylabel("test mean IoU (%)")
    axes[1].set_title("label efficiency (95 % intervals over test images)")
    fig.tight_layout()
    # one legend for both, beside them: inside, it covered the curves of 7+ encoders
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    return fig


def mean_spectra(samples: list[dict], title: str = "", max_classes: int = 6,
                 scale: float = 10000.0):
    """Mean reflectance spectrum of each dominant land-cover class over the samples' valid
    pixels (each band's nodata left out; a band with none left is a gap in the line), against
    the bands' centre wavelengths, for products with many bands (hyperspectral)."""
    import matplotlib.pyplot as plt

    info = samples[0]["json"]["band_info"]
    centres = np.array([b["center_nm"] if b.get("center_nm") else np.nan for b in info])
    nodata = [b.get("nodata") for b in info]
    sums: dict[str, list] = {}
    for s in samples:
        cls = s["json"].get("dominant_label") or (s["json"]["labels"] or ["(no label)"])[0]
        img = s["img"].astype(np.float64)
        valid = np.ones(img.shape, bool)
        for j, v in enumerate(nodata):
            if v is not None:
                valid[j] = img[j] != v
        acc = sums.setdefault(cls, [np.zeros(len(info)), np.zeros(len(info))])
        acc[0] += np.where(valid, img, 0).sum(axis=(1, 2))
        acc[1] += valid.sum(axis=(1, 2))
    order = sorted(sums, key=lambda c: -sums[c][1].sum())[:max_classes]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for cls in order:
        total, count = sums[cls]
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan) / scale
        n = sum(1 for s in samples if (s["json"].get("dominant_label")
                                       or (s["json"]["labels"] or ["(no label)"])[0]) == cls)
        ax.plot(centres, mean, lw=1.2, label=f"{textwrap.shorten(cls, 40)} ({n})")
    ax.set_xlabel("band centre (nm)")
    ax.set_ylabel("reflectance")
    ax.set_title(title or "mean spectrum per dominant class (gaps: bands without a measurement)")
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
