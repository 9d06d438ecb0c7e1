"""Models: OpenCLIP's factory with geofm's small configs, band adapters, model input,
device and precision choice.
"""

from .devices import resolve_device, resolve_precision
from .factory import (
    CONFIG_DIR,
    SMALL_MODELS,
    count_parameters,
    create_model,
    known_model_names,
    register_configs,
)
from .inputs import (
    BandSlots,
    augment,
    channel_stats,
    input_bands,
    input_spec,
    stats_from_state,
    stats_to_state,
    to_model_input,
)

__all__ = [
    "CONFIG_DIR", "SMALL_MODELS", "known_model_names", "register_configs", "create_model",
    "count_parameters", "resolve_device", "resolve_precision", "input_bands", "channel_stats",
    "BandSlots", "input_spec", "stats_to_state", "stats_from_state", "to_model_input",
    "augment",
]
