"""Scene sources: the simulator and the readers of real files, one module each.

Every source yields :class:`~geofm_lib.data.sources.base.Scene` objects with the same shape: an
image (C, H, W) in the product's own dtype, metadata, and a function that labels any pixel
window of the scene. The shard build cuts scenes into patches and asks each patch for its own
labels, so patching works the same way on simulated scenes, real BigEarthNet patches and a
large labelled GeoTIFF.
"""

from .base import (
    SCENE_KEYS,
    Footprint,
    SampleMeta,
    Scene,
    SceneMeta,
    Source,
    SourceBase,
    label_mapping,
    missing_scene_keys,
    scene_meta,
)
from .bigearthnet import (
    BIGEARTHNET_S2_BANDS,
    BigEarthNetSource,
    read_bigearthnet_s1,
    read_bigearthnet_s2,
)
from .geotiff import GeoTiffSource
from .karpathy import KarpathySource
from .registry import READERS, SOURCE_READERS, MultiSource, open_source
from .simulator import SimulatorSource
from .table import TableSource
from .torchgeo_datasets import TORCHGEO_CLASSES, TORCHGEO_LAYOUTS, TorchGeoClass, TorchGeoSource

__all__ = [
    "Footprint", "SceneMeta", "SampleMeta", "SCENE_KEYS", "missing_scene_keys", "scene_meta",
    "Scene", "Source", "SourceBase", "label_mapping", "SimulatorSource",
    "BIGEARTHNET_S2_BANDS", "read_bigearthnet_s2", "read_bigearthnet_s1", "BigEarthNetSource",
    "GeoTiffSource", "TorchGeoClass", "TORCHGEO_CLASSES", "TORCHGEO_LAYOUTS", "TorchGeoSource",
    "KarpathySource", "TableSource", "READERS", "SOURCE_READERS", "open_source", "MultiSource",
]
