"""Parameters: named YAML sets merged, validated and frozen before any work starts.

Merge order (later wins)::

    parameters/defaults.yaml  <-  parameters/<preset>.yaml  <-  parameters/<experiment>.yaml
                              <-  notebook / papermill / command-line overrides

A preset sets the size of a run (``ci``, ``demo``, ``full``); an experiment sets what is run
(``group_A``, ``group_B``, ``group_C``, ``compiled``, ``group_C_metadata`` of seed 000).
Overrides that are ``None`` mean "keep the value of the sets above".

Every key is typed and range-checked by a pydantic model in strict mode (``"ten"`` is not an
integer, ``"yes"`` is not a boolean); errors name the key, the value, where it came from and
what is allowed, and are raised before any data is touched.

By role: ``choices`` (the values parameters choose from), ``schema`` (the ``Config`` model, each
field with its meaning and the hashes it enters), ``hashing`` (what names a result),
``loading`` (the sets, layering and error messages), ``notebook`` (a notebook's parameters),
``root`` (where the workspace is). Import from ``geofm_lib.config``.
"""

from geofm_lib.config.choices import (
    PRESETS,
    READERS,
    SOURCES,
    SSL_BACKBONES,
    SSL_METHODS,
    SSL_MODES,
    vit_patch_px,
)
from geofm_lib.config.hashing import DATA_RULES, digest
from geofm_lib.config.loading import (
    CARD_FILE,
    check_runtime,
    command_for,
    load_config,
    parameter_sets,
)
from geofm_lib.config.notebook import LOCAL_RANGES, check_local_ranges, from_notebook
from geofm_lib.config.root import is_parameter_file, project_root
from geofm_lib.config.schema import (
    DATA_KEYS,
    DATASET_KEY,
    FIELDS,
    NOT_HASHED,
    SSL_KEYS,
    SSL_METHOD_KEYS,
    TRAIN_KEYS,
    CardBand,
    Config,
    DatasetCard,
    SourceSpec,
)

__all__ = [
    "CARD_FILE", "DATA_KEYS", "DATA_RULES", "DATASET_KEY", "FIELDS", "LOCAL_RANGES",
    "NOT_HASHED", "PRESETS", "READERS", "SOURCES", "SSL_BACKBONES", "SSL_KEYS",
    "SSL_METHOD_KEYS", "SSL_METHODS", "SSL_MODES", "TRAIN_KEYS", "CardBand", "Config",
    "DatasetCard", "SourceSpec", "check_local_ranges", "check_runtime", "command_for", "digest",
    "from_notebook", "is_parameter_file", "load_config", "parameter_sets", "project_root",
    "vit_patch_px",
]
