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
