"""The reader of each dataset of a run: ``open_source`` picks it from the ``source`` /
``sources`` parameters (the rest simulated).
"""

from __future__ import annotations

from geofm_lib.config import READERS as CONFIG_READERS
from geofm_lib.config import SOURCES, Config
from geofm_lib.data import simulate
from geofm_lib.data.sources.agriculture_vision import AgricultureVisionSource
from geofm_lib.data.sources.base import Scene, SourceBase
from geofm_lib.data.sources.bigearthnet import BigEarthNetSource
from geofm_lib.data.sources.class_masks import ClassMaskSource
from geofm_lib.data.sources.coco import CocoSource
from geofm_lib.data.sources.dota import DotaSource
from geofm_lib.data.sources.geotiff import GeoTiffSource
from geofm_lib.data.sources.karpathy import KarpathySource
from geofm_lib.data.sources.qfabric import QFabricSource
from geofm_lib.data.sources.simulator import SimulatorSource
from geofm_lib.data.sources.spectral_earth import SpectralEarthSource
from geofm_lib.data.sources.table import TableSource
from geofm_lib.data.sources.torchgeo_datasets import TorchGeoSource
from geofm_lib.data.sources.xview import XViewSource
from geofm_lib.errors import ConfigError

READERS = {"torchgeo": TorchGeoSource, "karpathy": KarpathySource,
           "geotiff": lambda ds, spec, cfg: GeoTiffSource(cfg, ds, spec), "table": TableSource,
           "xview": XViewSource, "coco": CocoSource, "dota": DotaSource,
           "agriculture_vision": AgricultureVisionSource, "class_masks": ClassMaskSource,
           "qfabric": QFabricSource, "spectral_earth": SpectralEarthSource}
"""The reader of each ``sources`` entry, ``(dataset, spec, cfg) -> Source`` (``simulator``
entries share one simulator); ``config.READERS`` names them."""
SOURCE_READERS = {"simulator": SimulatorSource, "bigearthnet": BigEarthNetSource,
                  "geotiff": GeoTiffSource}
"""The reader of a whole-run ``source`` (``config.SOURCES``), ``(cfg) -> Source``."""
if {*READERS, "simulator"} != set(CONFIG_READERS) or set(SOURCE_READERS) != set(SOURCES):
    raise ImportError("data.sources.registry and config name different readers: "
                      f"{sorted({*READERS, 'simulator'})} vs {sorted(CONFIG_READERS)}, "
                      f"{sorted(SOURCE_READERS)} vs {sorted(SOURCES)}")


def open_source(cfg: Config):
    """The scene source of a configuration: ``sources`` per dataset (the rest simulated), or
    the single ``source`` (simulator, BigEarthNet folders, a GeoTIFF scene)."""
    if cfg.sources:
        return MultiSource(cfg)
    return SOURCE_READERS[cfg.source](cfg)


class MultiSource(SourceBase):
    """Datasets from several sources (the ``sources`` parameter); the rest from the simulator."""

    def __init__(self, cfg: Config):
        self.by_dataset = {}
        simulated = []
        for ds in cfg.dataset_keys:
            spec = cfg.source_for(ds)
            if spec.reader == "simulator":
                if ds not in simulate.RECIPES:
                    raise ConfigError(f"{ds} has no simulator; give it a source in `sources`, "
                                      f"e.g. {{reader: torchgeo, dataset_class: ..., root: ...}}")
                simulated.append(ds)
            else:
                self.by_dataset[ds] = READERS[spec.reader](ds, spec, cfg)
        if simulated:
            sim = SimulatorSource(cfg.model_copy(update={"datasets": tuple(simulated),
                                                         "group": "custom"}),
                                  caps={ds: cfg.samples_for(ds) for ds in simulated})
            for ds in simulated:
                self.by_dataset[ds] = sim
        self.datasets = tuple(cfg.dataset_keys)

    def count(self, dataset: str) -> int:
        return self.by_dataset[dataset].count(dataset)

    def splits(self, dataset: str) -> dict[str, list[int]] | None:
        return self.by_dataset[dataset].splits(dataset)

    def scene(self, dataset: str, index: int) -> Scene:
        return self.by_dataset[dataset].scene(dataset, index)

    def split_key(self, dataset: str, index: int) -> str | None:
        return self.by_dataset[dataset].split_key(dataset, index)

    def report(self, dataset: str) -> dict:
        return (self.by_dataset[dataset].report(dataset)
                or {"reader": type(self.by_dataset[dataset]).__name__})
