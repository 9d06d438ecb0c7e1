"""Progress bars and logging that read well in JupyterLab and in papermill/CI logs.

In JupyterLab a widget bar (tqdm.auto). In batch runs (papermill, plain or driven by
``geofm report``, CI, or ``GEOFM_PROGRESS=text``) plain text lines at most every 10 s, because
widget bars are stored in executed notebooks as widget JSON whose text fallback never moves
past 0 % in any other viewer.
"""

from __future__ import annotations

import logging
import os
import sys


def live_frontend() -> bool:
    """True in a kernel a frontend that draws widgets started: JupyterLab or Notebook 7
    (Jupyter Server names the session in ``JPY_SESSION_NAME``), VS Code or Colab. A kernel that
    papermill (nbclient) started has none of these: its output is stored, and a widget bar
    would be stored as its text fallback, stuck at 0 %."""
    if os.environ.get("GEOFM_PROGRESS") == "widget":
        return True
    return bool(os.environ.get("JPY_SESSION_NAME") or os.environ.get("COLAB_RELEASE_TAG")
                or any(k.startswith("VSCODE_") for k in os.environ))


def batch_mode() -> bool:
    """True when output goes to a log or a stored notebook rather than a live frontend
    (``GEOFM_PROGRESS=text`` or ``widget`` decides it outright)."""
    if os.environ.get("GEOFM_PROGRESS") == "text" or os.environ.get("CI"):
        return True
    if "ipykernel" in sys.modules:
        return not live_frontend()
    return not sys.stderr.isatty()


def progress(iterable=None, desc: str = "", total: int | None = None, unit: str = "it",
             disable: bool = False, initial: int = 0):
    """A tqdm bar suited to where the code runs (``initial``: work already done, on resume)."""
    if batch_mode():
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable,
                    file=sys.stdout, mininterval=10.0, ascii=True, dynamic_ncols=False,
                    ncols=90, initial=initial)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, initial=initial)


def get_logger(name: str = "geofm") -> logging.Logger:
    """A logger that prints 'HH:MM:SS geofm: message' once to stdout (shown by papermill)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
