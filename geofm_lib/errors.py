"""The workspace's expected faults: one base class, one subclass per kind of fault.

Every error a user can cause or meet (a bad parameter, a corrupt shard, a checkpoint of another
run, a folder another process is writing) is a :class:`GeofmError` whose message names the file
or parameter and the fix. The ``geofm`` command prints such an error as one line and exits with
status 2; anything else is a bug and keeps its traceback.

Each class also derives from the built-in exception it used to be (``ValueError`` for input
problems, ``RuntimeError`` for state problems), so ``except ValueError`` code keeps working.
"""

from __future__ import annotations


class GeofmError(Exception):
    """An expected fault, with the file (or parameter) and the fix in the message."""


class ConfigError(GeofmError, ValueError):
    """A parameter problem: the key, the value, where it came from and what is allowed."""


class ShardError(GeofmError, RuntimeError):
    """A shard, sidecar, manifest or build folder that cannot be used, with the file named."""


class DataError(GeofmError, ValueError):
    """Input data that cannot be used as it is (non-physical values, an unreadable file)."""


class CheckpointError(GeofmError, RuntimeError):
    """A checkpoint that is missing, unreadable, unfinished or of another configuration."""


class TrainingDiverged(GeofmError, RuntimeError):
    """The loss, the gradients or the weights became NaN or infinite; the last good checkpoint
    is kept."""


class BusyError(GeofmError, RuntimeError):
    """Another process holds the lock of a folder this run would write."""


class PairError(GeofmError, ValueError):
    """Data without Sentinel-1/Sentinel-2 pairs (or another pairing problem) for MoCo."""


class EncoderError(GeofmError, ValueError):
    """An encoder name that cannot be resolved (unknown kind, file, model or weights)."""


class AdapterError(GeofmError, ValueError):
    """Bands that a band adapter cannot take."""


class PretrainedUnavailable(GeofmError, RuntimeError):
    """Pretrained weights asked for cannot be had (offline, unknown tag, missing file)."""


class NotebookFailed(GeofmError, RuntimeError):
    """A notebook of a report chain stopped with an error (its page shows the cell)."""


def environment_hint(message: str, path: str | None = None) -> str | None:
    """The fix for a fault of the machine rather than the input, from an error's text: a full
    disk (``OSError`` 28, or torch's ``basic_ios::clear`` / ``PytorchStreamWriter failed``
    when a checkpoint write runs out of space), a read-only or unwritable folder, a full
    quota. None for anything else."""
    import errno
    import os
    import shutil

    where = f" ({path})" if path else ""
    text = message.lower()
    if f"[errno {errno.ENOSPC}]" in text or "no space left" in text or "basic_ios::clear" in \
            text or "pytorchstreamwriter failed" in text or f"[errno {errno.EDQUOT}]" in text:
        free = ""
        if path:
            probe = os.path.dirname(os.path.abspath(path)) or "."
            while probe and not os.path.exists(probe):
                probe = os.path.dirname(probe)
            try:
                free = f"; {shutil.disk_usage(probe).free / 2**30:.1f} GiB free there now"
            except OSError:
                free = ""
        return (f"the disk is full{where}{free}: free space (old builds: geofm's work/shards/, "
                f"work/checkpoints/), or set work_dir to a folder on a larger disk")
    if f"[errno {errno.EROFS}]" in text or "read-only file system" in text:
        return (f"the folder is on a read-only file system{where}: set work_dir (and run reports "
                f"from a checkout) on a disk you can write")
    if f"[errno {errno.EACCES}]" in text or f"[errno {errno.EPERM}]" in text:
        return (f"permission denied{where}: make the folder writable for this user, or set "
                f"work_dir to a folder you own")
    return None


def unavailable(what: str, exc: BaseException, fix: str, limit: int = 300) -> str:
    """The one-line message of something that had to be downloaded or read from a hub and could
    not be: what failed, the cause, whether HF_HUB_OFFLINE=1 forbids downloads here, and the
    fix (weights of OpenCLIP and torchgeo, hf-hub: models)."""
    import os

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return (f"{what}: {type(exc).__name__}: {str(exc)[:limit]}. "
            + ("HF_HUB_OFFLINE=1 is set: this machine is offline, nothing can be downloaded; "
               if offline else "")
            + fix)

