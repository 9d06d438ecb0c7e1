"""Install the pinned environment (requirements.txt and geofm itself, editable) into a venv.

    python tools/install_env.py .venv          # what `make setup` runs

uv installs the same pins as pip about four times faster (measured from a cold cache on the
2-core machine: 27 s against 123 s, the same 272 package versions), so it is tried first: it is
pip-installed into the venv, then `uv pip install` does the work. uv does not read pip's
configuration, so the package sources pip is configured with (`pip config list`: a mirror's
index URL, extra indexes, a local wheel folder, a constraints file) are passed to it, and it
picks the best version across all indexes as pip does. If uv cannot be installed or fails,
pip installs everything, as before. Only the standard library is used: this runs before the
venv has anything in it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pip configuration keys -> the uv pip install option that means the same
PIP_TO_UV = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
             "find-links": "--find-links", "constraint": "--constraint"}


def pip_sources(python: str) -> list[str]:
    """uv options for the package sources in pip's configuration (files and PIP_* variables)."""
    listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                            text=True, check=False).stdout
    options: list[str] = []
    for line in listed.splitlines():  # e.g. global.extra-index-url='file:///a file:///b'
        key, _, value = line.partition("=")
        flag = PIP_TO_UV.get(key.rsplit(".", 1)[-1])
        for item in " ".join(shlex.split(value)).split():
            if flag and f"{flag}={item}" not in options:
                options.append(f"{flag}={item}")
    return options


def run(cmd: list[str]) -> bool:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode == 0


def main(venv: str) -> int:
    python = str(Path(venv) / "bin" / "python")
    wanted = ["-r", "requirements.txt", "-e", "."]
    if run([python, "-m", "pip", "install", "-q", "--upgrade", "pip", "uv"]):
        # --compile-bytecode: pip writes the .pyc files at install time, uv only when asked;
        # without them every process compiles what it imports (torch + scikit-learn +
        # matplotlib + geopandas: 7.1 s against 3.1 s a process where PYTHONDONTWRITEBYTECODE
        # is set, as on the CI machines)
        uv = [python, "-m", "uv", "pip", "install", "--python", python, "-q",
              "--compile-bytecode", "--index-strategy", "unsafe-best-match",
              *pip_sources(python), *wanted]
        if run(uv):
            return 0
        print("uv could not install the environment; installing with pip instead", flush=True)
    return 0 if run([python, "-m", "pip", "install", "-q", *wanted]) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
