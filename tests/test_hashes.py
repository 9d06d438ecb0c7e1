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
