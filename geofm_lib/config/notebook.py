"""A notebook's parameters (papermill's ``-p``, JupyterLab's cell) into a ``Config``."""

from __future__ import annotations

import math
import types
from typing import Any

from geofm_lib.config.loading import check_runtime, load_config
from geofm_lib.config.schema import Config
from geofm_lib.errors import ConfigError
from geofm_lib.io import parse_yaml

_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


LOCAL_RANGES: dict[str, tuple[type, float, float | None]] = {
    "n_per_dataset": (int, 1, None), "n_boot": (int, 10, 100000), "n_examples": (int, 0, 50),
    "map_samples_per_dataset": (int, 1, 100000), "umap_points": (int, 10, 10 ** 7),
    "finetune_epochs": (int, 0, 10000), "also_epochs": (int, 1, 10000),
    "protocol_steps": (int, 1, 10 ** 7), "seg_epochs": (int, 1, 10000),
    "seg_lr": (float, 1e-7, 1.0), "boundary_weight": (float, 0.0, 1000.0),
}
"""(type, lowest, highest or None) of the notebooks' numeric local parameters: checked by
``from_notebook`` before any work, as the workspace parameters' fields are (issue 36: a
``seg_lr`` of 1e30 ran and published NaN)."""


def check_local_ranges(namespace: dict[str, Any], local: tuple[str, ...]) -> None:
    """Refuse a notebook-local number of the wrong type or outside its range (``None`` is
    each one's "use the default").

    Raises:
        ConfigError: naming the parameter, the value and what is allowed.
    """
    for name in local:
        if name not in LOCAL_RANGES or namespace.get(name) is None:
            continue
        kind, lo, hi = LOCAL_RANGES[name]
        value = namespace[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            kind is float or isinstance(value, int))
        if not number or not math.isfinite(value) or value < lo or (hi is not None and
                                                                    value > hi):
            allowed = f"{'a whole number' if kind is int else 'a number'} from {lo:g}" + (
                f" to {hi:g}" if hi is not None else " up")
            raise ConfigError(f"parameter {name}={value!r} is out of range: {allowed}")


def from_notebook(namespace: dict[str, Any], local: tuple[str, ...] = ()) -> Config:
    """Build the config from a notebook's parameters (and papermill's injected ones).

    Every public, non-callable, non-module name in ``namespace`` counts as a parameter, so a
    misspelt ``-p batchsize 10`` is caught instead of silently ignored. Names in ``local`` are
    the notebook's own parameters (not workspace parameters) and are skipped.

    papermill's ``-p`` passes a list or mapping as its text (``-p decoder '["unet",
    "deeplabv3plus"]'`` arrives as a string); such values, local ones included, are read as
    YAML and written back into ``namespace``, so the notebook sees the list.
    """
    for k, v in list(namespace.items()):
        if isinstance(v, str) and v.lstrip()[:1] in ("[", "{") and not k.startswith("_"):
            try:
                namespace[k] = parse_yaml(v, f"parameter {k!r}")
            except ConfigError as exc:
                raise ConfigError(f"{exc}; {v[:80]!r} is not a YAML list or mapping; write "
                                  f"e.g. -p {k} '[a, b]', or -y '{k}: [a, b]'") from None
    check_local_ranges(namespace, local)
    params = {
        k: v for k, v in namespace.items()
        if not k.startswith("_") and not k.startswith("PAPERMILL_") and k not in _IPYTHON_NAMES
        and k not in local
        and not callable(v) and not isinstance(v, types.ModuleType)
    }
    preset = params.pop("preset", "demo")
    experiment = params.pop("experiment", None)
    cfg = load_config(preset, experiment, **params)
    check_runtime(cfg)
    return cfg
