"""Where the workspace is: its root folder (the one with parameters/defaults.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

from geofm_lib.errors import ConfigError


def project_root() -> Path:
    """The workspace root: $GEOFM_ROOT, else the nearest folder up with parameters/defaults.yaml.

    Raises:
        ConfigError: when neither is found, with the fix.
    """
    env = os.environ.get("GEOFM_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "parameters" / "defaults.yaml").is_file():
            return folder
    raise ConfigError(
        f"cannot find the geofm workspace from {here.name!r}: no parameters/defaults.yaml in it "
        "or above it; run from inside the project or set GEOFM_ROOT to the project folder")

def is_parameter_file(experiment: str) -> bool:
    """Whether an experiment is a path to a YAML file (anywhere) rather than a set's name."""
    return experiment.endswith((".yaml", ".yml"))
