"""Run the shard units of a build in parallel: processes on this machine, or Dask distributed.

The units of a build (one shard each, see :mod:`geofm_lib.data.build`) are independent and
deterministic, so any number of workers writes byte-identical shards. Each worker writes its
shard and sidecar itself (atomically, into the build folder) and returns the sidecar; the
calling process collects them in unit order and writes the manifest last. On a cluster the
build folder must be on a file system every Dask worker sees (the same ``work_dir`` path).

Workers get the data source once: pickled from the calling process when it pickles, else each
worker opens it again from the configuration (``open_source``), which is what a Dask worker on
another machine does in any case.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from geofm_lib.config import Config
from geofm_lib.errors import ConfigError, ShardError
from geofm_lib.progress import get_logger, progress

log = get_logger()


def resolve_workers(cfg: Config, pending: int) -> int:
    """How many processes write shards: ``data_workers`` (0 = the CPU cores this process may
    use), never more than there are shards left to write."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    wanted = cfg.data_workers or cores
    return max(1, min(wanted, pending))


# --- the worker side ------------------------------------------------------------------------

_SOURCE = None  # the data source of this worker process (set once per process)


def _init_worker(cfg: Config, source_blob: bytes | None, build_pid: int | None = None) -> None:
    global _SOURCE
    if build_pid is not None:
        _die_with(build_pid)
    _one_thread()
    if source_blob is not None:
        _SOURCE = pickle.loads(source_blob)
    else:
        from geofm_lib.data.sources.registry import open_source

        _SOURCE = open_source(cfg)


def _die_with(pid: int, every_s: float = 1.0) -> None:
    """End this worker when the build process ``pid`` is gone (killed: no clean shutdown). A
    worker's parent is the forkserver, not the build, so the parent-death signal would not
    fire; a watcher thread checks the build's pid instead. Without it, a killed build left its
    workers waiting for work forever, and they kept the forkserver and the resource tracker
    alive with them (issue 36)."""
    import threading

    def watch():
        while True:
            time.sleep(every_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)  # noqa: SLF001 - no clean-up to run: the build is gone
            except PermissionError:  # the pid was reused by another user's process
                os._exit(1)

    threading.Thread(target=watch, name="geofm-build-watch", daemon=True).start()


def _one_thread() -> None:
    """A worker process computes on one thread: N processes with a thread pool of N cores each
    spin against each other (on a 16-core GPU machine a 16-process build did not finish a
    224 px benchmark build in 170 s)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _run_in_worker(task: Callable, cfg: Config, folder: Path, unit) -> dict:
    return task(cfg, folder, unit, _SOURCE)


def _dask_task(task: Callable, cfg: Config, folder: str, unit, source_blob: bytes | None) -> dict:
    """One unit on a Dask worker: the source is opened once per worker process and kept."""
    key = (cfg.data_hash, source_blob is not None)
    cache = _dask_task.__dict__.setdefault("sources", {})
    if key not in cache:
        _init_worker(cfg, source_blob)
        cache[key] = _SOURCE
    return task(cfg, Path(folder), unit, cache[key])


# --- the calling side -----------------------------------------------------------------------

def _source_blob(source, opened_here: bool) -> bytes | None:
    """The pickled source, or None when workers should open it from the configuration."""
    if type(source).__module__ == "__main__":
        raise ConfigError(f"data_workers > 1: the source class {type(source).__name__} is "
                          f"defined in the script that runs the build (__main__), which worker "
                          f"processes do not import; define it in a module, or set "
                          f"data_workers: 1")
    try:
        return pickle.dumps(source)
    except Exception as exc:  # noqa: BLE001 - any pickling failure
        if opened_here:
            log.info("the data source does not pickle (%s); each worker opens it again",
                     type(exc).__name__)
            return None
        raise ConfigError(f"data_workers > 1 needs a data source that pickles, and "
                          f"{type(source).__name__} does not ({type(exc).__name__}: {exc}); "
                          f"set data_workers: 1, or let build_shards open the source from the "
                          f"parameters") from exc


def run_units(cfg: Config, folder: Path, units: list, source, task: Callable,
              opened_here: bool, show_progress: bool = True) -> dict[str, dict]:
    """Write ``units`` with ``task(cfg, folder, unit, source) -> sidecar``; returns
    {unit.file: sidecar}. Serial for one worker; otherwise ``data_engine`` decides."""
    if not units:
        return {}
    bar = progress(total=len(units), desc="writing shards", unit="shard",
                   disable=not show_progress)
    try:
        if cfg.data_engine == "dask":
            return _run_dask(cfg, folder, units, source, task, opened_here, bar)
        workers = resolve_workers(cfg, len(units))
        if workers == 1:
            out = {}
            for unit in units:
                out[unit.file] = task(cfg, folder, unit, source)
                bar.update(1)
            return out
        return _run_processes(cfg, folder, units, source, task, opened_here, workers, bar)
    finally:
        bar.close()


@contextmanager
def _main_not_reimported():
    """Start worker processes without them importing the caller's script (``__main__``): a
    script without an ``if __name__ == "__main__":`` guard would otherwise build the shards
    again inside each worker. The workers run library code only, so they never need it."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main and k in main.__dict__}
    for k in saved:
        setattr(main, k, None) if k == "__spec__" else delattr(main, k)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _pool_context():
    """Worker processes start from a fork server (no fork of a process that runs threads, as
    torch's do); each imports the build itself while this process already writes shards."""
    return mp.get_context("forkserver")


def _run_processes(cfg, folder, units, source, task, opened_here, workers, bar) -> dict:
    """``workers`` processes write the units: this one and ``workers - 1`` started ones. The
    started ones take units from the front of the list, this one from the back, so it works
    while they start (each imports the build, seconds) and nobody waits at the end."""
    log.info("writing %d shards with %d processes", len(units), workers)
    blob = _source_blob(source, opened_here)
    queue, out, running = deque(units), {}, {}
    with _main_not_reimported(), ProcessPoolExecutor(
            workers - 1, mp_context=_pool_context(), initializer=_init_worker,
            initargs=(cfg, blob, os.getpid())) as pool:
        try:
            while queue or running:
                while queue and len(running) < 3 * (workers - 1):
                    u = queue.popleft()
                    running[pool.submit(_run_in_worker, task, cfg, folder, u)] = u
                mine = queue.pop() if queue else _steal(running)
                if mine is not None:
                    out[mine.file] = task(cfg, folder, mine, source)
                    bar.update(1)
                done, _ = wait(running, timeout=0 if mine is not None else None,
                               return_when=FIRST_COMPLETED)
                for f in done:
                    out[running.pop(f).file] = _result(f)
                    bar.update(1)
        except BaseException:  # an error or Ctrl-C: stop what has not started; written
            pool.shutdown(wait=True, cancel_futures=True)  # shards stay (they resume)
            raise
    return out


def _steal(running: dict):
    """A unit handed to the pool that no worker has started (the last one handed), taken
    back for this process; None when all have started."""
    for f in reversed(list(running)):
        if f.cancel():
            return running.pop(f)
    return None


def _result(future):
    """A worker's sidecar; its error raised here as it was (a ShardError stays one)."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise ShardError("a shard-writing process died (killed for memory, or the build was "
                         "started from a script Python cannot re-import, e.g. stdin); lower "
                         "data_workers, or set data_workers: 1; written shards are kept and "
                         "the next run resumes") from exc


def _run_dask(cfg, folder, units, source, task, opened_here, bar) -> dict:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ConfigError("data_engine: dask needs the dask[distributed] package (pinned in "
                          "requirements.txt); install it, or use data_engine: processes") \
            from exc
    blob = _source_blob(source, opened_here)
    if cfg.dask_scheduler:
        cluster, client = None, Client(cfg.dask_scheduler, timeout="30s")
        log.info("writing %d shards on the Dask cluster at %s (%d workers); the build folder "
                 "%s must be on a file system they all see", len(units), cfg.dask_scheduler,
                 len(client.scheduler_info()["workers"]), folder)
    else:
        n = resolve_workers(cfg, len(units))
        with _main_not_reimported():
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        log.info("writing %d shards on a local Dask cluster of %d workers", len(units), n)
    try:
        blob_f = client.scatter(blob, broadcast=True) if blob is not None else None
        futures = client.map(_dask_task, [task] * len(units), [cfg] * len(units),
                             [str(folder)] * len(units), units, [blob_f] * len(units),
                             pure=False)
        by_key = {f.key: u for f, u in zip(futures, units)}
        out = {}
        try:
            for f in as_completed(futures):
                out[by_key[f.key].file] = f.result()
                bar.update(1)
        except BaseException:
            client.cancel(futures)
            raise
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
