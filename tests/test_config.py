import pytest

from geofm_lib.config import from_notebook, load_config
from geofm_lib.errors import ConfigError


def test_merge_order_defaults_preset_experiment_overrides():
    base = load_config("ci")
    assert base.samples_per_dataset == 12  # preset beats defaults
    assert base.group == "all" and base.caption_metadata is False  # defaults
    exp = load_config("ci", "group_C_metadata")
    assert exp.group == "C" and exp.caption_metadata is True  # experiment beats defaults
    assert exp.samples_per_dataset == 12  # preset value survives
    over = load_config("ci", "group_C_metadata", group="B", samples_per_dataset=3)
    assert over.group == "B" and over.samples_per_dataset == 3  # overrides beat everything
    assert load_config("ci", group=None).group == "all"  # None keeps the sets' value


def test_config_is_frozen():
    cfg = load_config("ci")
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        cfg.group = "A"


@pytest.mark.parametrize("override, words", [
    ({"group": "D"}, ["'group'", "'D'", "A, B, C, all"]),
    ({"batch_size": "ten"}, ["'batch_size'", "'ten'", "integer"]),
    ({"caption_metadata": "yes"}, ["caption_metadata", "True or False"]),
    ({"val_fraction": 0.9}, ["val_fraction", "0.9", "<= 0.5"]),
    ({"samples_per_dataset": 0}, ["samples_per_dataset", ">= 1"]),
    ({"image_px": 4}, ["image_px", ">= 8"]),
    ({"precision": "fp8"}, ["precision", "fp32, bf16, fp16"]),
    ({"datasets": ["sentinel3"]}, ["sentinel3", "bigearthnet_s2"]),
    ({"batchsize": 8}, ["unknown parameter 'batchsize'", "did you mean 'batch_size'"]),
])
def test_validation_errors_name_key_value_and_allowed(override, words):
    with pytest.raises(ConfigError) as err:
        load_config("ci", **override)
    for w in words:
        assert w in str(err.value)


def test_unknown_sets_and_group_dataset_mismatch():
    with pytest.raises(ConfigError, match="unknown parameter set 'huge'.*demo"):
        load_config("huge")
    with pytest.raises(ConfigError, match="unknown parameter set"):
        load_config("ci", "group_Z")
    with pytest.raises(ConfigError, match="not in group 'A'"):
        load_config("ci", group="A", datasets=["xview"])


def test_strict_types_do_not_coerce():
    with pytest.raises(ConfigError):
        load_config("ci", seed="3")
    assert load_config("ci", lr=1).lr == 1.0  # an int is a valid float


def test_hash_is_stable_and_tracks_results_not_paths():
    a, b = load_config("ci"), load_config("ci")
    assert a.hash == b.hash and len(a.hash) == 12
    assert a.hash == load_config("ci", work_dir="/elsewhere", run_name="x").hash
    assert a.hash != load_config("ci", seed=1).hash
    assert a.data_hash != load_config("ci", image_px=48).data_hash
    assert a.data_hash == load_config("ci", lr=0.1, epochs=9).data_hash  # training keys
    # group 'all' and the explicit list of all datasets are the same data
    from geofm_lib.catalog import PAPER_DATASETS as DATASETS
    assert a.data_hash == load_config("ci", datasets=list(DATASETS)).data_hash


def test_from_notebook_reads_parameters_and_catches_strays():
    ns = {"preset": "ci", "experiment": None, "group": "B", "seed": None, "In": [],
          "get_ipython": print, "_": 1, "n_per_dataset": 5}
    cfg = from_notebook(ns, local=("n_per_dataset",))
    assert cfg.group == "B" and cfg.preset == "ci"
    with pytest.raises(ConfigError, match="unknown parameter 'n_per_dataset'"):
        from_notebook(ns)


def test_parameters_and_the_cli_load_without_torch():
    """`geofm --help`, `geofm params` and every notebook's first cell check parameters before
    any heavy library loads: importing the CLI (and with it config) leaves torch unloaded."""
    import subprocess
    import sys

    code = ("import sys, geofm_lib.cli; from geofm_lib.config import load_config; "
            "load_config('ci'); print(sorted(m for m in ('torch', 'open_clip', 'lightning') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_papermill_lists_given_as_text_become_lists():
    """papermill's -p hands a list over as its text: the notebook's own parameters and the
    workspace's both get the list, and bad text is a clear error naming the parameter."""
    from geofm_lib.config import from_notebook

    ns = {"preset": "ci", "datasets": '["bigearthnet_s2", bigearthnet_s1]',
          "decoder": '["unet", "deeplabv3plus"]', "target": "trees"}
    cfg = from_notebook(ns, local=("decoder", "target"))
    assert cfg.datasets == ("bigearthnet_s2", "bigearthnet_s1")
    assert ns["decoder"] == ["unet", "deeplabv3plus"] and ns["target"] == "trees"
    with pytest.raises(ConfigError, match="parameter 'decoder'.*-y 'decoder: \\[a, b\\]'"):
        from_notebook({"preset": "ci", "decoder": "[unet,"}, local=("decoder",))
