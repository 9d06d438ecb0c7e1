"""Several machines, rehearsed on one (issue 40): the README's multi-node block run as written,
with ``HOST=127.0.0.1``: a real ``dask scheduler`` and two ``dask worker`` processes build the
shards byte for byte as one process does, and two torchrun "nodes" (``--nnodes 2``, one gloo
process each over TCP) train, follow the one-process loss curve, are killed and resume to the
weights of an uninterrupted two-node run, bit for bit."""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("distributed")

from geofm_lib import paths, training  # noqa: E402
from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.data import build, shards  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EPOCHS = 3  # 3 steps an epoch: 9 steps, a step checkpoint every 2
TRAIN = ("-p group=B -p batch_size=8 -p run_name=t -p model=ViT-tiny -p precision=fp32 "
         f"-p stream=exact -p epochs={EPOCHS} -p checkpoint_every_steps=2")


def readme_block() -> list[str]:
    """The command lines of the README's multi-node block (the one with ``--nnodes 2``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "--nnodes 2" in b]
    assert len(blocks) == 1, "the README has no (or several) multi-node blocks"
    return [ln.split("  #")[0].strip() for ln in blocks[0].splitlines() if ln.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def localised(line: str, work: Path, ports: dict) -> list[str]:
    """One README line as this test runs it: HOST is this machine, the ports are free ones,
    one process per node and per Dask worker, the ``ci`` preset on group B in ``work``. Each
    substitution must find its text, so a README that changes its recipe fails here."""
    subs = [("HOST", "127.0.0.1"), ("8786", str(ports["dask"])),
            ("29500", str(ports["rdzv"])), ("--nproc_per_node 8", "--nproc_per_node 1"),
            ("--nworkers 8", "--nworkers 1"),
            ("--preset full --experiment group_C", f"--preset ci -p work_dir={work} {TRAIN}")]
    for old, new in subs:
        line = line.replace(old, new)
    words = shlex.split(line)
    program = {"geofm": [sys.executable, "-m", "geofm_lib.cli"],
               "torchrun": [sys.executable, "-m", "torch.distributed.run"],
               "dask": [str(BIN / "dask")]}[words[0]]
    return program + words[1:]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "GEOFM_PROGRESS": "0"}


def _start(cmd, log: Path):
    """A process in its own session (so a kill takes its children), output to ``log``."""
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc) -> None:
    """SIGKILL a process and everything it started, as a node that dies: torchrun starts its
    workers in sessions of their own, so killing its process group alone would leave them
    training."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    proc.wait(timeout=30)


def _nodes(work: Path, tmp: Path, tag: str, extra: tuple = ()):
    """The README's two torchrun lines started side by side (a fresh rendezvous port), with
    ``extra`` parameters after them."""
    ports = {"dask": 0, "rdzv": _free_port()}
    lines = [ln for ln in readme_block() if ln.startswith("torchrun")]
    assert [("--node_rank 0" in ln, "--node_rank 1" in ln) for ln in lines] == \
        [(True, False), (False, True)]
    return [_start(localised(ln, work, ports) + list(extra), tmp / f"{tag}-node{i}.log")
            for i, ln in enumerate(lines)]


def _wait(procs, tmp: Path, tag: str, timeout: float = 240) -> None:
    for i, p in enumerate(procs):
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                _kill(q)
            rc = "timeout"
        assert rc == 0, f"{tag} node {i}: {rc}\n" + (tmp / f"{tag}-node{i}.log").read_text()[-3000:]


def _cfg(work: Path, **kw):
    return load_config("ci", group="B", work_dir=str(work), batch_size=8, run_name="t",
                       model="ViT-tiny", precision="fp32", stream="exact", epochs=EPOCHS,
                       checkpoint_every_steps=2, **kw)


def _digests(folder: Path) -> dict:
    import hashlib
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != shards.VERIFY_CACHE}


@pytest.fixture(scope="module")
def cluster_work(tmp_path_factory):
    """The README's Dask lines: a scheduler, two one-process workers ("nodes"), and the shard
    build pointed at them; returns (work folder, the build's log)."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("dask")
    work = tmp / "work"
    ports = {"dask": _free_port(), "rdzv": 0}
    block = readme_block()
    scheduler = next(ln for ln in block if ln.startswith("dask scheduler"))
    worker = next(ln for ln in block if ln.startswith("dask worker"))
    data = next(ln for ln in block if ln.startswith("geofm data"))
    procs = [_start(localised(scheduler, work, ports) + ["--no-dashboard"], tmp / "scheduler.log")]
    try:
        procs += [_start(localised(worker, work, ports) + ["--no-dashboard"],
                         tmp / f"worker{i}.log") for i in range(2)]
        with Client(f"tcp://127.0.0.1:{ports['dask']}", timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        done = subprocess.run(localised(data, work, ports), cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    finally:
        for p in reversed(procs):
            _kill(p)
    return work, done.stdout + done.stderr


def test_a_dask_scheduler_and_two_workers_build_the_shards_of_one_process(cluster_work,
                                                                          tmp_path):
    work, log = cluster_work
    assert "on the Dask cluster at tcp://127.0.0.1:" in log and "(2 workers)" in log, log[-2000:]
    one = build.build_shards(_cfg(tmp_path / "one"), show_progress=False)  # same parameters
    dask = paths.build_folder(_cfg(work))
    assert dask.name == one.name and sum(n.endswith(".tar") for n in _digests(one)) > 2
    assert _digests(dask) == _digests(one)


@pytest.fixture(scope="module")
def straight(cluster_work, tmp_path_factory):
    """The README's two torchrun lines on the cluster-built shards, run through (state of
    ``last.pt``)."""
    import shutil

    tmp = tmp_path_factory.mktemp("straight")
    work = tmp / "work"
    shutil.copytree(cluster_work[0] / "shards", work / "shards")
    _wait(_nodes(work, tmp, "straight"), tmp, "straight")
    return training.load_checkpoint(paths.checkpoint_dir(_cfg(work)) / "last.pt")


def _follows_one_process(two: dict, cluster_work, tmp_path, **kw) -> None:
    import shutil

    work = tmp_path / "one"
    shutil.copytree(cluster_work[0] / "shards", work / "shards")
    one = training.train(_cfg(work, **kw), show_progress=False)
    assert two["world_size"] == 2 and two["finished"]
    assert len(two["step_losses"]) == len(one.step_losses) == 3 * EPOCHS
    for a, b in zip(one.step_losses, two["step_losses"], strict=True):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one.step_losses, two["step_losses"])
    ref = torch.load(one.checkpoint, weights_only=True)["model"]
    assert set(ref) == set(two["model"])
    for k, v in ref.items():
        assert torch.allclose(v, two["model"][k], atol=1e-4), k


def test_two_nodes_follow_the_one_process_loss_curve(straight, cluster_work, tmp_path):
    """Two nodes of one gloo process each against one process with the same global batch of 8
    (``stream: exact``): ClipLoss gathers the features with gradients, so both optimise the
    same loss; they may differ by float reduction order only (1e-4)."""
    _follows_one_process(straight, cluster_work, tmp_path)


def test_siglip_on_two_nodes_follows_one_process(cluster_work, tmp_path):
    """``loss: siglip`` (issue 41): SigLipLoss exchanges the text features between the ranks,
    each rank's loss is its images' share and the loop logs their mean: the two-node run
    follows the one-process run's losses and weights (1e-4)."""
    import shutil

    work = tmp_path / "two"
    shutil.copytree(cluster_work[0] / "shards", work / "shards")
    _wait(_nodes(work, tmp_path, "siglip", ("-p", "loss=siglip")), tmp_path, "siglip")
    two = training.load_checkpoint(paths.checkpoint_dir(_cfg(work, loss="siglip")) / "last.pt")
    assert "logit_bias" in two["model"]
    _follows_one_process(two, cluster_work, tmp_path, loss="siglip")


def test_two_nodes_killed_mid_epoch_resume_bit_identically(straight, cluster_work, tmp_path):
    """Both nodes are killed (SIGKILL, the whole process trees) as soon as the step-2
    checkpoint exists; the same two commands run again resume from ``last.pt`` and end with
    the uninterrupted run's weights and step losses, bit for bit."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(cluster_work[0] / "shards", work / "shards")
    ckpts = paths.checkpoint_dir(_cfg(work))
    nodes = _nodes(work, tmp_path, "killed")
    deadline = time.monotonic() + 240
    while not (ckpts / "step-00000002.pt").exists():
        assert all(p.poll() is None for p in nodes), \
            (tmp_path / "killed-node0.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no step-2 checkpoint within 240 s"
        time.sleep(0.01)
    for p in nodes:
        _kill(p)
    killed = training.load_checkpoint(ckpts / "last.pt")
    assert not killed["finished"] and killed["step"] < 3 * EPOCHS, \
        f"the run ended (step {killed['step']}) before it could be killed"

    _wait(_nodes(work, tmp_path, "resumed"), tmp_path, "resumed")
    log = (tmp_path / "resumed-node0.log").read_text()
    assert f"resuming from {ckpts.name}" in log, log[-2000:]
    resumed = training.load_checkpoint(ckpts / "last.pt")
    assert resumed["finished"] and resumed["world_size"] == 2
    assert resumed["step_losses"] == straight["step_losses"]
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
