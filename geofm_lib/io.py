"""Safe file primitives: atomic writes, folder locks, strict YAML and names that become paths.

* :func:`atomic_write_bytes` writes to a temporary name of this process alone, fsyncs and
  renames, so a file that exists is whole and two writers never share a temporary file.
* :func:`folder_lock` is an advisory lock (``filelock``, i.e. ``fcntl.flock`` on POSIX) held
  while a shard build, a training run or a report writes its folder. The kernel drops it when
  the process dies, so a killed run leaves no stale lock behind.
* :func:`read_yaml` / :func:`parse_yaml_value` read parameters with YAML 1.2 core-schema
  scalars (``1e-4`` is a float, ``010`` is ten, ``yes`` is a string) and refuse duplicate keys,
  naming the file and line.
* :func:`check_name` refuses names that would escape their folder (``../x``, ``/tmp/x``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from geofm_lib.errors import BusyError, ConfigError

# --- atomic writes ---------------------------------------------------------------------------


def temporary_name(path: Path) -> Path:
    """A temporary path beside ``path`` that no other process (or call) uses:
    ``<name>.<pid>-<random>.tmp``."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


_TEMPORARY = re.compile(r"\.(\d+)-[0-9a-f]{8}\.tmp$")


def remove_stale_temporaries(folder: Path) -> int:
    """Remove the temporary files (:func:`temporary_name`) in ``folder`` whose writing process
    is gone (killed mid-write: a step checkpoint's 24-96 MB stayed for good). Call it while
    holding the folder's lock. Returns how many were removed."""
    removed = 0
    for tmp in Path(folder).glob("*.tmp") if Path(folder).is_dir() else ():
        found = _TEMPORARY.search(tmp.name)
        if found is None or tmp.is_symlink():
            continue
        pid = int(found[1])
        try:
            os.kill(pid, 0)
            continue  # its writer still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # a process of another user has that pid
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (by any writer: rasterio, torch,
    tarfile ...); renamed to ``path`` when the block ends without an error, removed when it
    fails. The file is fsynced before the rename, so ``path`` is always whole."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file of this process and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# --- locks -------------------------------------------------------------------------------------


def lock_path(folder: Path) -> Path:
    """The lock file of a folder: ``<parent>/.<name>.lock``, beside it (not inside, so the
    folder's own contents stay what its writer made)."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.lock")


@contextlib.contextmanager
def folder_lock(folder: Path, what: str, wait: bool = True, log=None) -> Iterator[None]:
    """Hold the lock of ``folder`` while writing it.

    Args:
        folder: the folder to be written (its lock file goes beside it).
        what: words for messages, e.g. ``"the shard build 3f2a..."``.
        wait: True waits for the other process (a second data build then finds the first's
            finished shards); False refuses at once with :class:`BusyError`.
        log: a logger to say that this process is waiting.

    Raises:
        BusyError: with ``wait=False`` when another process holds the lock.
    """
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():  # opening it would truncate whatever it points at
        raise BusyError(f"the lock file {path} is a symbolic link; geofm makes plain lock "
                        f"files: remove the link (rm {path.name}) and run again")
    # thread_local=False and a fresh object each time: the lock belongs to this call
    lock = FileLock(str(path), thread_local=False, is_singleton=False, fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise BusyError(
                f"{what} is being written by another process right now (lock "
                f"{path.parent.name}/{path.name} is held); wait for it to finish or stop it. "
                f"The lock goes with the process, so nothing needs deleting afterwards") from None
        if log is not None:
            log.info("waiting: another process is writing %s (lock %s)", what, path.name)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


# --- names that become paths ------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a plain file or folder name (letters, digits, ``_ . + -``, not
    starting with a dot, no separators, not ``..``); else raise :class:`ConfigError`."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or value in (".", "..") \
            or len(value) > 200:
        raise ConfigError(
            f"{what} {value!r} cannot be used as a folder name: use letters, digits, '_', '-', "
            f"'.' and '+' only, no '/' or '\\', not starting with '.' (e.g. 'group_C-demo')")
    return value


# --- strict YAML (1.2 core schema scalars, no duplicate keys) ---------------------------------

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")


_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


_TAG = "tag:yaml.org,2002:"


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int):
        super().__init__(f"key {key!r} appears twice (second time on line {line})")
        self.key, self.line = key, line


MAX_YAML_VALUES = 100_000
"""The most values a YAML document may hold once its aliases are expanded: a parameter file
has hundreds; an alias bomb (``a: &a [x, x]``, ``b: &b [*a, *a]``, ...) has billions, and
hashing or validating it hangs the run."""

MAX_YAML_BYTES = 4 * 1024 * 1024
"""The largest YAML file read (parameter sets, dataset cards): 4 MiB."""


class YamlTooLarge(yaml.YAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 core-schema numbers and booleans and no duplicate
    keys (PyYAML follows YAML 1.1: ``1e-4`` is a string there, ``010`` is eight, ``no`` is
    False, and a repeated key silently wins), and at most :data:`MAX_YAML_VALUES` values
    with aliases expanded, counted on the composed nodes before anything is built."""

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def size(n) -> int:  # an alias is the same node object: memoised, so this is linear
            if id(n) in sizes:
                return sizes[id(n)]
            sizes[id(n)] = 1  # a cycle counts once
            if isinstance(n, yaml.SequenceNode):
                total = 1 + sum(size(v) for v in n.value)
            elif isinstance(n, yaml.MappingNode):
                total = 1 + sum(size(k) + size(v) for k, v in n.value)
            else:
                total = 1
            sizes[id(n)] = total
            return total

        if node is not None and size(node) > MAX_YAML_VALUES:
            raise YamlTooLarge(f"the document expands to {size(node):,} values through its "
                               f"aliases (*name), more than the {MAX_YAML_VALUES:,} a "
                               f"parameter file may hold; write the values out, or use fewer "
                               f"nested aliases")
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == _TAG + "merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it
                break
            if dup:
                raise DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in (_TAG + "int", _TAG + "float", _TAG + "bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


StrictLoader.add_implicit_resolver(_TAG + "bool", _BOOL, list("tTfF"))


StrictLoader.add_implicit_resolver(_TAG + "int", _INT, list("-+0123456789"))


StrictLoader.add_implicit_resolver(_TAG + "float", _FLOAT, list("-+0123456789."))


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    return int(text, 10) if text.lstrip("+-").isdigit() else int(text, 0)


def _construct_float(loader, node):
    text = loader.construct_scalar(node).lower()
    if text.endswith("inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


def _construct_bool(loader, node):
    return loader.construct_scalar(node).lower() == "true"


StrictLoader.add_constructor(_TAG + "int", _construct_int)


StrictLoader.add_constructor(_TAG + "float", _construct_float)


StrictLoader.add_constructor(_TAG + "bool", _construct_bool)


def _yaml_problem(exc: Exception) -> str:
    if isinstance(exc, DuplicateKey):
        return f"{exc}; keep one of them"
    if isinstance(exc, YamlTooLarge):
        return str(exc)
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"YAML syntax error{where}: {problem}"


def parse_yaml(text: str, origin: str) -> Any:
    """Parse YAML text with :class:`StrictLoader`; errors name ``origin``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: {_yaml_problem(exc)}") from None


def read_yaml(path: Path, shown: str | None = None) -> Any:
    """Read a YAML file strictly; syntax, encoding and duplicate-key errors name the file."""
    path = Path(path)
    shown = shown or path.name
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{shown} is {path.stat().st_size / 2**20:.1f} MiB, more than the "
                              f"{MAX_YAML_BYTES // 2**20} MiB a parameter or card file may be; "
                              f"is it the right file?")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown} is not UTF-8 text (byte {exc.start}: {exc.reason}); save "
                          f"it as UTF-8") from None
    return parse_yaml(text, shown)


def parse_yaml_value(text: str, origin: str) -> Any:
    """One value given on a command line (``-p lr=1e-4``), parsed as YAML 1.2."""
    return parse_yaml(text, origin)
