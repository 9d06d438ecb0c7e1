"""What names a result: the content hashes of the data, training and SSL stages.

Every parameter declares on its field (``json_schema_extra``) the hashes it enters:

- ``hashed_in("data")``: it changes the shards (``data_hash``, and so every later hash);
- ``hashed_in("train")`` / ``hashed_in("ssl")``: it changes a CLIP / SSL run's checkpoints;
  ``ssl:moco``, ``ssl:dino``, ``ssl:mae``: only that method's;
- ``hashed_in()``: only the run's own hash (``Config.hash``: which report a result belongs to);
- ``NOT_HASHED_FIELD``: how or where a run happens, never what it computes (paths, names,
  workers, the device, checkpoint cadence).

A new field must declare one (``tests/test_hashes.py`` checks it, and that every preset's
hashes are the ones pinned there).
"""

from __future__ import annotations

import hashlib
import json

DATA_RULES = 8  # 5: band records (names, wavelengths, nodata per band) in the shards; 6:
# images compressed losslessly (PNG, Blosc) and tars without pax headers; 7: dense labels
# (class masks, tree cover) in the samples of sources that have them; 8: random splits keep
# the readers' split units whole (scene, tile, place, block), SSL4EO-S12 seasons paired by
# date, GeoTIFF patches drawn over the whole scene

SETS = ("data", "train", "ssl", "ssl:moco", "ssl:dino", "ssl:mae")
NOT_HASHED_FIELD = {"hashed_in": None}


# Fields added after hashes were published enter every hash only when set to something other
# than this value, so the runs, checkpoints and records made before keep their names.
OMITTED_AT = {"loss": "clip"}


def omit_defaults(d: dict) -> dict:
    """``d`` without the later fields that still have their first value (``OMITTED_AT``)."""
    return {k: v for k, v in d.items() if not (k in OMITTED_AT and v == OMITTED_AT[k])}


def hashed_in(*sets: str) -> dict:
    """A field's declaration: the hashes it enters (none: the run's own hash only)."""
    bad = [s for s in sets if s not in SETS]
    if bad:
        raise ValueError(f"unknown hash set(s) {bad}; choose from {', '.join(SETS)}")
    return {"hashed_in": list(sets)}


def declared(fields: dict) -> dict[str, list[str] | None]:
    """Each field's declared hashes (None: not hashed); a field without a declaration is a
    bug, named here."""
    out = {}
    for name, f in fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if "hashed_in" not in extra:
            raise TypeError(f"Config.{name} declares no hash membership: add "
                            f"json_schema_extra=hashed_in(...) or NOT_HASHED_FIELD")
        out[name] = extra["hashed_in"]
    return out


def keys_in(fields: dict, hash_set: str) -> tuple[str, ...]:
    """The fields that enter ``hash_set``, in declaration order."""
    return tuple(k for k, sets in declared(fields).items() if sets and hash_set in sets)


def not_hashed(fields: dict) -> frozenset[str]:
    return frozenset(k for k, sets in declared(fields).items() if sets is None)


def digest(obj) -> str:
    """12 hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
