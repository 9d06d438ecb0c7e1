"""A notebook's own parameters, read and checked the same way in every study: the values from
the notebook's namespace (papermill's ``-p`` applied) with the study's defaults, and the checks
that give a ``ConfigError`` naming the parameter, the value and what it takes."""

from __future__ import annotations

from geofm_lib.errors import ConfigError


def read(namespace: dict, parameters: dict) -> dict:
    """Each parameter's value in ``namespace``, or its default (``parameters``: name ->
    (default, meaning))."""
    return {k: namespace.get(k, default) for k, (default, _) in parameters.items()}


def whole(name: str, value, low: int) -> int:
    """``value`` if it is a whole number of at least ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name}: {value!r}; give a whole number of at least {low}")
    return value


def positive(name: str, value) -> float:
    """``value`` as a float if it is a positive number."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}: {value!r}; give a positive number")
    return float(value)


def as_list(value) -> list:
    """A single value (``-p decoder unet``) or a list, as a list."""
    return [value] if isinstance(value, str | int) else list(value)
