"""Models: names (``names.py``, no torch), OpenCLIP's factory with geofm's small configs
(``factory.py``), model input (``inputs.py``), band adapters (``adapters.py``), device and
precision (``devices.py``).
"""

from .devices import resolve_device, resolve_precision
from .factory import count_parameters, create_model, register_configs
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
    "register_configs", "create_model", "count_parameters", "resolve_device",
    "resolve_precision", "input_bands", "channel_stats", "BandSlots", "input_spec",
    "stats_to_state", "stats_from_state", "to_model_input", "augment",
]
