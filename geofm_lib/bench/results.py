"""Where the benchmarks' numbers go: ``<work>/bench/<name>`` of the workspace (the demo
preset's work folder), written atomically; outside a workspace, ``bench/<name>`` beside the
current directory."""

from __future__ import annotations

import json
from pathlib import Path

from geofm_lib.config import load_config
from geofm_lib.io import atomic_write_bytes


def write_results(name: str, results: dict) -> Path:
    """Write ``results`` as JSON to the benchmarks' folder, say where, return the path."""
    try:
        out = load_config("demo").path("bench")
    except Exception:  # noqa: BLE001 - outside a workspace: write beside the cwd
        out = Path("bench")
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    atomic_write_bytes(path, json.dumps(results, indent=1, default=str).encode())
    print(f"written to {path}")
    return path
