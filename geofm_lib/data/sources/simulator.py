"""Scenes rendered by the embedded simulator (:mod:`geofm_lib.data.simulate`).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from geofm_lib.catalog import DATASETS, SENSORS, get_dataset
from geofm_lib.config import Config
from geofm_lib.data import simulate
from geofm_lib.data.sources.base import Scene, SourceBase
from geofm_lib.errors import ConfigError


class SimulatorSource(SourceBase):
    """Scenes rendered by :mod:`geofm_lib.data.simulate` at ``scene_px`` pixels."""

    def __init__(self, cfg: Config, caps: dict[str, int] | None = None):
        self.cfg = cfg
        self.caps = caps  # scenes per dataset, where a run's other datasets decide them
        self.datasets = cfg.dataset_keys
        scene_px = cfg.effective_scene_px
        for key in self.datasets:
            if scene_px < simulate.MIN_IMAGE_PX:
                raise ConfigError(f"image_px/scene_px={scene_px} is too small for {key}: "
                                  f"use at least {simulate.MIN_IMAGE_PX}")
            sensor = SENSORS[DATASETS[key].sensor]
            coarsest_m = max(b.gsd_m for b in sensor.bands)
            need = int(np.ceil(2 * coarsest_m / DATASETS[key].gsd_m))  # two coarsest pixels
            if scene_px < need:
                raise ConfigError(
                    f"image_px={scene_px} is too small for {key}: its coarsest band "
                    f"({coarsest_m:g} m) needs two pixels across, {need} px at "
                    f"{DATASETS[key].gsd_m:g} m; use image_px >= {need}")

    def count(self, dataset: str) -> int:
        return self.caps[dataset] if self.caps else self.cfg.samples_for(dataset)

    def scene(self, dataset: str, index: int) -> Scene:
        sensor = None
        if self.cfg.s2_product == "L1C" and DATASETS[dataset].sensor == "sentinel2_l2a":
            sensor = "sentinel2_l1c"  # 13 bands, as SEN12MS and EuroSAT
        s = simulate.render(dataset, index, seed=self.cfg.seed,
                            image_px=self.cfg.effective_scene_px, sensor=sensor)
        ds = get_dataset(dataset)
        labeller = partial(_window, s.layers, ds.labels,
                           simulate.RECIPES[dataset].min_area_fraction)
        return Scene(dataset, index, s.image, s.meta, ds.labels, labeller,
                     partial(simulate.window_dominant, s.layers),
                     mask_window=partial(_mask, s.layers, ds.labels),
                     trees_window=partial(simulate.window_trees, s.layers))


def _window(layers, vocabulary, min_frac, y0, x0, h, w):
    return simulate.window_labels(layers, y0, x0, h, w, vocabulary, min_frac)


def _mask(layers, vocabulary, y0, x0, h, w):
    return simulate.window_mask(layers, y0, x0, h, w, vocabulary)
