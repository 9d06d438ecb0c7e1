"""The content hashes that name every artifact under work/ (data, training, SSL runs) and the
parameter-set hash, pinned for the shipped presets and experiment sets (issue 37, item 6: the
config may be split and moved, but a user's shards, checkpoints and reports must keep their
names). A change here must be deliberate: it rebuilds everyone's work (say so in CHANGELOG.md,
as DATA_RULES bumps do)."""

import pytest

from geofm_lib.config import load_config

# (preset, experiment): (data_hash, train_hash, ssl_hash, hash), measured 2026-12-05
PINNED = {
    ("ci", None): ("b5797b01ff46", "5901ef5fb5db", "44b972b3cf7f", "dc78ad50c40d"),
    ("ci", "group_A"): ("fe8f8dbdec1c", "2fabe582a7c2", "26e08e516037", "0fc1efdd602e"),
    ("ci", "group_C"): ("da6345ef3e9b", "0560ffaff015", "5ffb8d082f5d", "e05adcd33412"),
    ("ci", "group_H"): ("7f0e0a73105e", "f56055010db6", "61963a8ebb3a", "57a35d4431d0"),
    ("demo", None): ("af26361f56d7", "518c115648d3", "0c7b7caa5acf", "512a5569ac20"),
    ("demo", "group_A"): ("3a5e4584d42a", "1beade3bddd4", "76ce8369d104", "fee08fd5b7cb"),
    ("demo", "group_C"): ("cd35012c3c86", "ef1b440514ca", "8fb5d26b45a6", "75265bde558a"),
    ("demo", "group_H"): ("7bcae311674c", "615e916e9383", "f1dc3fd2f2d2", "e39a17d87e7a"),
    ("full", None): ("8de259e992c6", "a45adf0bf39f", "11c41a7e2c9f", "eb15974bb32c"),
    ("full", "group_A"): ("cac25dbea1ac", "85b2c4f1f480", "7b78aebc62aa", "d9854cc9bbc8"),
    ("full", "group_C"): ("55707d96f30e", "8b6af2d17ad3", "78a99afeab8b", "b5d2183b98e8"),
    ("full", "group_H"): ("603b39b247a7", "3f6914042f72", "a64406283cbb", "4dcef68ac44c"),
}


@pytest.mark.parametrize(("preset", "experiment"), list(PINNED))
def test_artifact_hashes_are_unchanged(preset, experiment):
    cfg = load_config(preset, experiment=experiment)
    got = (cfg.data_hash, cfg.train_hash, cfg.ssl_hash, cfg.hash)
    assert got == PINNED[(preset, experiment)], (preset, experiment, got)


def test_a_hashed_parameter_still_changes_its_hash():
    """The pins are not a hash that ignores its inputs: one hashed field of each kind moves
    its own hash and leaves the others."""
    base = load_config("ci")
    for field, value, moves in (("image_px", 48, "data_hash"), ("lr", 0.123, "train_hash"),
                                ("ssl_epochs", 7, "ssl_hash")):
        other = load_config("ci", **{field: value})
        assert getattr(other, moves) != getattr(base, moves), field
    assert load_config("ci", lr=0.123).data_hash == base.data_hash


def test_every_field_declares_the_hashes_it_enters():
    """Hash membership lives on the fields (``json_schema_extra``), not in lists 250 lines
    below them: every field declares it, and the sets derived from the declarations are the
    ones the hashes above were made with (2026-12-05, before the split of config.py)."""
    from geofm_lib.config import (
        DATA_KEYS,
        NOT_HASHED,
        SSL_KEYS,
        SSL_METHOD_KEYS,
        TRAIN_KEYS,
        Config,
    )
    from geofm_lib.config.hashing import declared

    found = declared(Config.model_fields)  # raises for a field without a declaration
    assert set(found) == set(Config.model_fields)
    assert set(DATA_KEYS) == {"datasets", "dataset_cards", "source", "source_path", "sources",
                              "samples_per_dataset", "dataset_mix", "image_px", "scene_px",
                              "patch_stride_px", "caption_metadata", "s2_product",
                              "val_fraction", "shard_size", "seed"}
    assert set(TRAIN_KEYS) == {"model", "pretrained", "band_adapter", "batch_size", "epochs",
                               "loss", "lr", "weight_decay", "warmup_fraction",
                               "grad_clip_norm", "precision", "grad_accum_steps", "seed"}
    assert set(SSL_KEYS) == {"ssl_mode", "ssl_backbone", "ssl_adapter", "ssl_augment",
                             "ssl_patches", "ssl_epochs", "ssl_batch_size", "ssl_lr",
                             "moco_queue", "moco_momentum", "moco_temperature", "precision",
                             "seed"}
    assert {k: set(v) for k, v in SSL_METHOD_KEYS.items()} == {
        "moco": set(), "dino": {"dino_out_dim", "dino_local_crops", "dino_teacher_temp",
                                "dino_momentum"},
        "mae": {"mae_mask_ratio", "mae_decoder_dim", "mae_decoder_depth"}}
    assert NOT_HASHED == {"work_dir", "run_name", "num_workers", "device", "preset",
                          "experiment", "data_workers", "data_engine", "dask_scheduler",
                          "stream", "feed", "compile", "grad_checkpointing",
                          "checkpoint_every_steps", "keep_checkpoints", "cell_timeout_s"}
    # the run's own hash only: what changes a report, not an artifact
    assert {k for k, v in found.items() if v == []} == {
        "group", "ssl_method", "labelled_samples", "protocol_sizes", "protocol_steps",
        "protocol_recipe", "eval_split"}


def test_a_field_without_a_declaration_is_named():
    from pydantic import BaseModel, Field

    from geofm_lib.config.hashing import declared, hashed_in

    class Partial(BaseModel):
        a: int = Field(1, json_schema_extra=hashed_in("data"))
        b: int = Field(2)

    with pytest.raises(TypeError, match="Config.b declares no hash membership"):
        declared(Partial.model_fields)
    with pytest.raises(ValueError, match="unknown hash set"):
        hashed_in("dta")


def test_a_later_field_at_its_first_value_keeps_the_published_hashes():
    """``loss`` came after the pinned hashes: at ``clip`` no hash changes; ``siglip`` names
    another training run (and another report)."""
    from geofm_lib.config import load_config

    cfg = load_config("demo")
    assert cfg.loss == "clip"
    assert cfg.model_copy(update={"loss": "clip"}).train_hash == cfg.train_hash
    siglip = load_config("demo", loss="siglip")
    assert siglip.train_hash != cfg.train_hash and siglip.hash != cfg.hash
    assert siglip.data_hash == cfg.data_hash
