import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # in-process plots only; notebook kernels keep their inline backend

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GEOFM_PROGRESS", "text")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    monkeypatch.setenv("GEOFM_ROOT", str(ROOT))


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real sample files exist only beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def paired_shards(tmp_path_factory):
    """Group A (BigEarthNet S2 + S1, paired by place), 24 scenes at 32 px (the ci preset),
    built once for the session: the work folder of the self-supervised tests."""
    from geofm_lib.config import load_config
    from geofm_lib.data import build

    work = tmp_path_factory.mktemp("paired")
    build.build_shards(load_config("ci", group="A", work_dir=str(work), samples_per_dataset=24),
                       show_progress=False)
    return work


def torchrun_ssl(args: dict, port: str) -> dict:
    """`geofm ssl --preset ci -p k=v ...` under torchrun with two gloo processes of one thread
    each; the JSON report rank 0 prints (the run must succeed)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", port, "-m", "geofm_lib.cli", "ssl", "--preset", "ci"]
    for k, v in args.items():
        cmd += ["-p", f"{k}={v}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{"):])


def pytest_collection_modifyitems(config, items):
    """nbval's cells re-execute the notebooks run_all.sh executed: they read its reports too."""
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.reports)
