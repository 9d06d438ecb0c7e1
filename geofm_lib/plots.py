"""Figures for the notebooks: sample grids, label frequencies, label co-occurrence.

Display conventions (stated once, used everywhere):
  * Sentinel-2: false colour NIR/red/green (B08, B04, B03), each band stretched between its
    2nd and 98th percentile, so vegetation is red and water is dark.
  * Sentinel-1: VV backscatter in dB shown in grey between -25 dB and 0 dB.
  * 8-bit RGB and panchromatic products: shown as stored.
"""

from __future__ import annotations

import textwrap

import numpy as np


def display_rgb(image: np.ndarray, bands: list[str]) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] for showing a (C, H, W) product."""
    if "B08" in bands:  # Sentinel-2 false colour
        idx = [bands.index(b) for b in ("B08", "B04", "B03")]
        rgb = image[idx].astype(np.float32)
        lo = np.percentile(rgb, 2, axis=(1, 2), keepdims=True)
        hi = np.percentile(rgb, 98, axis=(1, 2), keepdims=True)
        rgb = np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
        return np.moveaxis(rgb, 0, -1)
    if "VV" in bands:
        vv = np.clip((image[bands.index("VV")] + 25) / 25, 0, 1)
        return np.repeat(vv[..., None], 3, axis=-1)
    img = image.astype(np.float32)
    if img.max() > 1.5:
        img = img / 255.0
    if img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    return np.moveaxis(img[:3], 0, -1)


def sample_grid(samples_by_dataset: dict[str, list[dict]], n: int = 6, title_chars: int = 60):
    """A grid: one row per dataset, ``n`` samples each, titled with their labels."""
    import matplotlib.pyplot as plt

    rows = len(samples_by_dataset)
    fig, axes = plt.subplots(rows, n, figsize=(2.2 * n, 2.5 * rows), squeeze=False)
    for r, (ds, samples) in enumerate(samples_by_dataset.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(samples):
                continue
            s = samples[c]
            ax.imshow(display_rgb(s["img"], s["json"]["bands"]), interpolation="nearest")
            labels = ", ".join(s["json"]["labels"]) or "(no labels)"
            ax.set_title(textwrap.shorten(labels, title_chars), fontsize=7, wrap=True)
            if c == 0:
                ax.text(-0.08, 0.5, ds, transform=ax.transAxes, rotation=90, va="center",
                        ha="right", fontsize=9, fontweight="bold")
    fig.tight_layout()
    return fig


def label_frequency(manifest: dict, dataset: str, split: str = "train", top: int = 25):
    """Horizontal bars of how many training images carry each label."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    freq = manifest["label_frequencies"].get(dataset, {}).get(split, {})
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


def label_matrix(samples: list[dict], vocabulary: tuple[str, ...]) -> np.ndarray:
    """(N, L) 0/1 multi-hot matrix of the samples' labels."""
    y = np.zeros((len(samples), len(vocabulary)), np.int8)
    for i, s in enumerate(samples):
        for lab in s["json"]["labels"]:
            y[i, vocabulary.index(lab)] = 1
    return y


def cooccurrence_heatmap(samples: list[dict], vocabulary: tuple[str, ...], title: str = ""):
    """Pearson (phi) correlation between label indicators, as in seed 002's Fig. 2.

    Labels that never occur in ``samples`` are left out (their correlation is undefined).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    y = label_matrix(samples, vocabulary).astype(float)
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

    In a static HTML report widgets do not run; the notebooks show figures for that.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

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
