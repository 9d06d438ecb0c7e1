"""The fault suite of issue 14: each fault found by the bad-input and fault trials, reproduced
and now handled (a clear error naming the file and the fix, a repaired build, or a refused
write). Concurrent writers are real second processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from geofm_lib import cli, io, paths, ssl, training  # noqa: E402
from geofm_lib.config import check_runtime, from_notebook, load_config  # noqa: E402
from geofm_lib.data import build, shards  # noqa: E402
from geofm_lib.errors import (  # noqa: E402
    BusyError,
    CheckpointError,
    ConfigError,
    DataError,
    GeofmError,
    NotebookFailed,
    ShardError,
    TrainingDiverged,
)
from geofm_lib.models import factory  # noqa: E402
from geofm_lib.report import reports  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Shards of group C (4 datasets x 12 scenes at 32 px), built once; tests copy them."""
    work = tmp_path_factory.mktemp("faults")
    build.build_shards(load_config("ci", group="C", work_dir=str(work)), show_progress=False)
    return work


def _copy(built, tmp_path, name="w"):
    dst = tmp_path / name
    shutil.copytree(built / "shards", dst / "shards")
    return dst


def _cfg(work, **kw):
    return load_config("ci", **{"group": "C", "work_dir": str(work), "batch_size": 8,
                                "run_name": "t", **kw})


def _cli(capsys, *argv) -> tuple[int, str]:
    """Run the geofm command in-process: (exit status, what it printed to stderr)."""
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().err


# --- 1. names that become paths --------------------------------------------------------------

@pytest.mark.parametrize("name", ["../tests", "/tmp/elsewhere", "a/b", "..", ".hidden", "x\\y"])
def test_run_name_that_is_a_path_is_refused(name):
    with pytest.raises(ConfigError, match="run_name.*cannot be used as a folder name"):
        load_config("ci", run_name=name)


def test_report_never_deletes_a_folder_outside_or_not_its_own(tmp_path, capsys):
    victim = ROOT / "tests"
    before = sorted(p.name for p in victim.iterdir())
    rc, err = _cli(capsys, "report", "--preset", "ci", "--notebooks", "01",
                   "-p", "run_name=../tests")
    assert rc == 2 and "cannot be used as a folder name" in err and "Traceback" not in err
    assert sorted(p.name for p in victim.iterdir()) == before
    # a folder under reports/ that no report made is not replaced either
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(GeofmError, match="not a geofm report folder"):
        reports.run_report("ci", chain=["01"], reports_dir=tmp_path, run_name="mine",
                           work_dir=str(tmp_path / "work"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="report name"):
        reports.run_page(ROOT / "notebooks" / "bench_training.ipynb", "../x", {})
    with pytest.raises(ConfigError, match="parameter set"):
        load_config("../parameters/demo")


# --- 2. concurrent writers (real processes) --------------------------------------------------

_BUILD = ("import sys; from geofm_lib.config import load_config; from geofm_lib.data import build; "
          "build.build_shards(load_config('ci', group='B', work_dir=sys.argv[1]), "
          "show_progress=False)")


def test_two_data_builds_on_one_folder_give_one_good_build(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GEOFM_ROOT": str(ROOT)}
    work = tmp_path / "work"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(work)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    cfg = load_config("ci", group="B", work_dir=str(work))
    folder = paths.build_folder(cfg)
    shards.verify_shards(folder)  # every sha256 in manifest and sidecars is the file's
    for entry in shards.load_manifest(folder)["shards"]:
        side = json.loads((folder / (entry["file"] + ".json")).read_text())
        assert side["sha256"] == entry["sha256"] == shards.file_sha256(folder / entry["file"])
    assert not list(folder.glob("*.tmp"))
    # the same bytes as a build made alone
    alone = build.build_shards(load_config("ci", group="B", work_dir=str(tmp_path / "alone")),
                                show_progress=False)
    for tar in folder.glob("*.tar"):
        assert tar.read_bytes() == (alone / tar.name).read_bytes()


_HOLD = ("import sys, time; from pathlib import Path; from geofm_lib.io import folder_lock\n"
         "with folder_lock(Path(sys.argv[1]), 'x'):\n"
         "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n"
         "    Path(sys.argv[3]).write_text('released')\n")


def _hold_lock(folder: Path, seconds: float = 60, marker: Path | None = None):
    """A second process holding the lock of ``folder`` (as a running writer would); it writes
    ``marker`` just before it lets go."""
    marker = marker or folder.with_name(folder.name + ".released")
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), str(seconds), str(marker)],
                         stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "GEOFM_ROOT": str(ROOT)})
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_training_run_is_refused_while_one_writes_the_checkpoints(built, tmp_path,
                                                                          capsys):
    work = _copy(built, tmp_path)
    cfg = _cfg(work)
    holder = _hold_lock(paths.checkpoint_dir(cfg))
    try:
        with pytest.raises(BusyError, match="being written by another process"):
            training.train(cfg, show_progress=False)
        rc, err = _cli(capsys, "train", "--preset", "ci", "-p", "group=C", "-p",
                       f"work_dir={work}", "-p", "batch_size=8", "-p", "run_name=t")
        assert rc == 2 and "being written by another process" in err
    finally:
        holder.kill()
        holder.wait()
    assert not paths.checkpoint_dir(cfg).exists()  # nothing was written by the refused run


def test_second_ssl_run_and_second_report_are_refused(tmp_path):
    cfg = load_config("ci", group="A", work_dir=str(tmp_path / "work"))
    holder = _hold_lock(paths.ssl_dir(cfg))
    try:
        with pytest.raises(BusyError, match="SSL run"):
            ssl.pretrain(cfg, show_progress=False)
    finally:
        holder.kill()
        holder.wait()
    holder = _hold_lock(tmp_path / "reports" / "r")
    try:
        with pytest.raises(BusyError, match="reports/r"):
            reports.run_report("ci", chain=["01"], reports_dir=tmp_path / "reports",
                               run_name="r", work_dir=str(tmp_path / "work"))
    finally:
        holder.kill()
        holder.wait()


def test_a_data_build_waits_for_the_other_writer(built, tmp_path):
    work = _copy(built, tmp_path)
    cfg = _cfg(work)
    folder = paths.build_folder(cfg)
    (folder / "manifest.json").unlink()  # as if the other writer were still building
    marker = tmp_path / "released"
    holder = _hold_lock(folder, seconds=2, marker=marker)
    assert build.build_shards(cfg, show_progress=False) == folder
    assert marker.read_text() == "released"  # it went on only after the other let go
    assert shards.is_complete(folder)
    holder.wait()


def test_stale_report_folders_of_other_names_are_left_alone(tmp_path):
    for name in (".demo.123.tmp", ".demo.124.old", ".demo.v2.125.tmp", ".demo.v2.126.old",
                 "demo", ".demo.x.tmp"):
        (tmp_path / name).mkdir()
    assert sorted(reports.remove_stale(tmp_path, "demo")) == [".demo.123.tmp", ".demo.124.old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.v2.125.tmp", ".demo.v2.126.old",
                                                          ".demo.x.tmp", "demo"]


def test_temporary_names_belong_to_one_process_and_call(tmp_path):
    shard = tmp_path / "train-xview-000000.tar"
    a, b = io.temporary_name(shard), io.temporary_name(shard)
    assert a != b and str(os.getpid()) in a.name and a.name.endswith(".tmp")
    assert shards._OURS.match(a.name)  # the build folder's own files
    assert not shards._OURS.match("train-xview-000000.tar.evil")
    io.atomic_write_bytes(tmp_path / "x.tar", b"abc")
    assert (tmp_path / "x.tar").read_bytes() == b"abc" and len(list(tmp_path.iterdir())) == 1


# --- 3. every reader verifies the shards -----------------------------------------------------

def _train_shard(folder, dataset):
    return next(folder / e["file"] for e in shards.load_manifest(folder, verify=False)["shards"]
                if e["dataset"] == dataset and e["split"] == "train")


def test_a_shard_copied_over_another_is_refused_by_training(built, tmp_path):
    work = _copy(built, tmp_path)
    cfg = _cfg(work)
    folder = paths.build_folder(cfg)
    shutil.copyfile(_train_shard(folder, "mafat"), _train_shard(folder, "xview"))
    shards._VERIFIED.clear()
    with pytest.raises(ShardError, match=r"train-xview-000000\.tar .*01_data_prep"):
        training.train(cfg, show_progress=False)
    with pytest.raises(ShardError, match="xview"):
        shards.shard_paths(folder, "val")  # evaluation, probes, SSL, maps read through here


def test_flipped_bytes_and_edited_counts_are_refused(built, tmp_path):
    work = _copy(built, tmp_path)
    folder = paths.build_folder(_cfg(work))
    path = _train_shard(folder, "qfabric")
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF  # same size: only the hash can tell
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="does not match its checksum"):
        shards.load_manifest(folder)
    data[5000] ^= 0xFF
    path.write_bytes(bytes(data))
    shards.load_manifest(folder)  # restored: fine again
    m = json.loads((folder / "manifest.json").read_text())
    m["counts"]["xview"]["train"] += 5
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match="counts xview/train"):
        shards.load_manifest(folder)


def test_a_changed_shard_with_its_old_mtime_and_size_is_still_caught(built, tmp_path):
    work = _copy(built, tmp_path)
    folder = paths.build_folder(_cfg(work))
    shards.load_manifest(folder)  # verified and cached
    path = _train_shard(folder, "houston_harvey")
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[3000] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` or `touch -r` would
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(ShardError, match="houston_harvey.*does not match its checksum"):
        shards.load_manifest(folder)


def test_a_malformed_cache_is_only_a_cache_miss(built, tmp_path):
    work = _copy(built, tmp_path)
    folder = paths.build_folder(_cfg(work))
    for junk in ("[]", '{"train-xview-000000.tar": 1}', "not json"):
        (folder / shards.VERIFY_CACHE).write_text(junk)
        shards._VERIFIED.clear()
        shards.load_manifest(folder)
        assert build.build_shards(_cfg(work), show_progress=False) == folder


def test_verification_hashes_once_then_uses_the_cache(built, tmp_path, monkeypatch):
    work = _copy(built, tmp_path)
    folder = paths.build_folder(_cfg(work))
    (folder / shards.VERIFY_CACHE).unlink(missing_ok=True)
    shards._VERIFIED.clear()
    calls = []
    real = shards.file_sha256
    monkeypatch.setattr(shards, "file_sha256", lambda p: calls.append(p) or real(p))
    manifest = shards.load_manifest(folder)
    assert len(calls) == len(manifest["shards"])  # first read hashes every shard
    shards._VERIFIED.clear()  # a new process: only the on-disk cache is left
    shards.load_manifest(folder)
    assert len(calls) == len(manifest["shards"])  # cache hit: no hashing
    path = folder / manifest["shards"][0]["file"]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    shards.load_manifest(folder)
    assert len(calls) == len(manifest["shards"]) + 1  # a touched shard is hashed again


# --- 4. no NaN weights in a "good" checkpoint ------------------------------------------------

def test_finite_loss_with_overflowing_gradients_keeps_a_finite_checkpoint(built, tmp_path):
    kw = dict(epochs=2, checkpoint_every_steps=2)  # 5 steps per epoch
    straight = training.train(_cfg(_copy(built, tmp_path, "a"), **kw), show_progress=False)
    cfg = _cfg(_copy(built, tmp_path, "b"), **kw)

    def overflow(loss, step):  # step 7: a finite loss (about 1e38) whose gradients overflow
        assert torch.isfinite(loss * 1e37) or step != 6
        return loss * 1e37 if step == 6 else loss

    with pytest.raises(TrainingDiverged, match="gradient norm became (inf|nan)") as err:
        training.train(cfg, loss_hook=overflow, show_progress=False)
    assert "update was not applied" in str(err.value)
    assert "last good checkpoint (epoch 2, step 1 of it)" in str(err.value)
    state = torch.load(paths.checkpoint_dir(cfg) / "last.pt", weights_only=True)
    assert state["step"] == 6
    assert training.nonfinite_tensors(state["model"]) == []
    assert training.nonfinite_tensors(state["optimizer"]) == []
    # resumed without the fault, it ends with the weights of a run that never met it
    result = training.train(cfg, show_progress=False)
    assert result.step_losses == straight.step_losses
    a = torch.load(straight.checkpoint, weights_only=True)["model"]
    b = torch.load(result.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.parametrize("fp16_scaler", [False, True])
def test_an_overflowing_step_changes_no_weight(fp16_scaler):
    """fp32: the step is skipped and reported; with a grad scaler (fp16) the scaler skips it
    itself and lowers its scale, which is normal and not reported as divergence."""
    import open_clip


    model, tok = factory.create_model("ViT-tiny", 32, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=fp16_scaler, init_scale=2.0 ** 16)
    step = training.Step(model, model, open_clip.ClipLoss(), opt,
                         torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), scaler,
                         lambda: torch.autocast("cpu", enabled=False), 1, 1.0, False)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loss = step(x, tok(["a", "b", "c", "d"]), loss_hook=lambda loss, s: loss * 1e37)
    assert torch.isfinite(loss) and not np.isfinite(step.grad_norm)
    assert step.overflowed is (not fp16_scaler)
    if fp16_scaler:
        assert scaler.get_scale() < 2.0 ** 16
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path):
    good = tmp_path / "last.pt"
    training.save_checkpoint(good, {"format": "x", "model": {"w": torch.ones(2)}})
    with pytest.raises(TrainingDiverged, match=r"model\.w"):
        training.save_checkpoint(good, {"format": "x",
                                        "model": {"w": torch.tensor([1.0, float("nan")])}})
    assert torch.equal(torch.load(good, weights_only=True)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# --- 5. epoch-boundary resume keeps the per-epoch record -------------------------------------

# tests/test_training.py::test_interrupted_run_resumes_where_it_stopped compares the whole
# per-epoch record of a run resumed at an epoch boundary with an uninterrupted run's.


# --- 6. sources the run does not use ---------------------------------------------------------

def test_sources_outside_the_group_and_datasets_without_a_simulator(capsys):
    spec = {"reader": "torchgeo", "dataset_class": "BigEarthNet", "root": "/nonexistent"}
    with pytest.raises(ConfigError, match=r"entries for \['bigearthnet_s2'\].*does not use"):
        load_config("ci", group="C", sources={"bigearthnet_s2": spec})
    rc, err = _cli(capsys, "data", "--preset", "ci", "-p", "group=custom",
                   "-p", "datasets=[eurosat]")
    assert rc == 2 and "no simulator" in err and "sources=" in err and "Traceback" not in err


# --- 7. checkpoints of another configuration -------------------------------------------------

def test_a_checkpoint_of_another_configuration_is_refused(built, tmp_path):
    work = _copy(built, tmp_path)
    one = _cfg(work, epochs=1)
    training.train(one, show_progress=False)
    other = _cfg(work, epochs=1, lr=1e-4)
    dst = paths.checkpoint_dir(other)
    dst.mkdir(parents=True)
    shutil.copyfile(paths.checkpoint_dir(one) / "last.pt", dst / "last.pt")
    with pytest.raises(CheckpointError, match=f"train_hash is '{one.train_hash}', this run's "
                                              f"is '{other.train_hash}'"):
        training.train(other, show_progress=False)
    with pytest.raises(CheckpointError, match="another configuration"):
        training.load_trained_model(other)  # what 04 and 06 use


def test_an_ssl_encoder_of_another_configuration_is_refused(tmp_path):
    cfg = load_config("ci", group="A", work_dir=str(tmp_path / "work"))
    out = paths.ssl_dir(cfg) / "encoder.pt"
    training.save_checkpoint(out, {"format": ssl.SSL_FORMAT, "ssl_hash": "0123456789ab",
                                   "finished": True, "history": [], "pairs": 1})
    with pytest.raises(CheckpointError, match="ssl_hash is '0123456789ab'"):
        ssl.pretrain(cfg, show_progress=False)
    out.unlink()  # an unfinished run's last.ckpt of another configuration: refused as well
    torch.save({"geofm": {"ssl_hash": "ba9876543210"}, "state_dict": {}},
               paths.ssl_dir(cfg) / "last.ckpt")
    with pytest.raises(CheckpointError, match=f"ssl_hash is 'ba9876543210', this run's is "
                                              f"'{cfg.ssl_hash}'"):
        ssl.pretrain(cfg, show_progress=False)


# --- 8. "delete it and rebuild" works --------------------------------------------------------

def test_deleted_or_damaged_shards_are_rebuilt_byte_identical(built, tmp_path, capsys):
    work = _copy(built, tmp_path)
    cfg = _cfg(work)
    folder = paths.build_folder(cfg)
    gone, bad, no_side = (_train_shard(folder, d) for d in ("xview", "mafat", "qfabric"))
    originals = {p.name: p.read_bytes() for p in (gone, bad, no_side)}
    gone.unlink()
    bad.write_bytes(b"x" * bad.stat().st_size)
    Path(str(no_side) + ".json").unlink()
    rc, _ = _cli(capsys, "data", "--preset", "ci", "-p", "group=C", "-p", f"work_dir={work}",
                 "-p", "batch_size=8", "-p", "run_name=t")
    assert rc == 0
    for name, data in originals.items():
        assert (folder / name).read_bytes() == data
    shards.verify_shards(folder)
    # a damaged manifest is rebuilt from the sidecars
    (folder / "manifest.json").write_text("{}")
    with pytest.raises(ShardError, match=r"manifest\.json has no \[.*01_data_prep"):
        training.preflight(cfg)
    build.build_shards(cfg, show_progress=False)
    assert shards.load_manifest(folder)["total_samples"] > 0


# --- 9. no absolute paths in reports ---------------------------------------------------------

def test_absolute_work_dir_and_source_roots_are_scrubbed(tmp_path):
    root = tmp_path / "elsewhere" / "data"
    spec = {"reader": "geotiff", "root": str(root / "scene.tif")}
    cfg = load_config("ci", group="custom", datasets=["scene"], sources={"scene": spec},
                      work_dir=str(tmp_path / "big" / "work"))
    text = (f"read {root}/scene.tif, wrote {tmp_path}/big/work/shards/x, "
            f"from {ROOT}/notebooks and {Path.home()}/.cache")
    out = reports.scrub(text, ROOT, cfg)
    assert str(tmp_path) not in out and str(ROOT) not in out
    assert "read <scene root>, " in out and "<work_dir>/shards/x" in out
    assert reports.find_absolute_paths(out) == []


def test_a_failed_notebook_is_scrubbed_too(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os; print(os.getcwd())"),
                nbformat.v4.new_code_cell("raise ValueError('stop here')")]
    book = tmp_path / "fails.ipynb"
    nbformat.write(nb, book)
    out = tmp_path / "out" / "fails.ipynb"
    out.parent.mkdir()
    with pytest.raises(NotebookFailed, match=r"fails\.ipynb stopped in cell 2: ValueError: "
                                             r"stop here \(the executed page"):
        reports._execute(book, out, {}, ROOT)
    for f in (out, out.with_suffix(".html")):
        text = f.read_text()
        assert "stop here" in text and str(ROOT) not in text


# --- 10. parameters as YAML 1.2, duplicate keys an error -------------------------------------

def _workspace(tmp_path, monkeypatch, name, text):
    (tmp_path / "parameters").mkdir()
    shutil.copyfile(ROOT / "parameters" / "defaults.yaml", tmp_path / "parameters" /
                    "defaults.yaml")
    shutil.copyfile(ROOT / "parameters" / "ci.yaml", tmp_path / "parameters" / "ci.yaml")
    (tmp_path / "parameters" / f"{name}.yaml").write_bytes(
        text if isinstance(text, bytes) else text.encode())
    monkeypatch.setenv("GEOFM_ROOT", str(tmp_path))


def test_numbers_parse_as_yaml_1_2(tmp_path, monkeypatch, capsys):
    assert cli._overrides(["lr=1e-4", "seed=010", "group=C"]) == \
        {"lr": 1e-4, "seed": 10, "group": "C"}
    assert load_config("ci", lr=cli._overrides(["lr=1e-4"])["lr"]).lr == 1e-4
    _workspace(tmp_path, monkeypatch, "mine", "lr: 1e-4\nseed: 010\n")
    cfg = load_config("ci", "mine")
    assert cfg.lr == 1e-4 and cfg.seed == 10
    rc, err = _cli(capsys, "params", "--preset", "ci", "-p", "lr=1e-4", "-p", "lr=2e-4")
    assert rc == 2 and "given twice" in err



def test_p_takes_papermill_s_key_value_too(capsys):
    """Issue 38, item 6: `geofm data -p group C` (papermill's habit) is -p group=C."""
    assert cli._overrides([["group", "C"], ["image_px=48"]]) == {"group": "C", "image_px": 48}
    rc, out = _cli(capsys, "params", "--preset", "ci", "-p", "group", "C", "-p", "image_px=48")
    assert rc == 0
    rc, err = _cli(capsys, "params", "--preset", "ci", "-p", "group", "C", "extra")
    assert rc == 2 and "-p takes key=value or key value, got -p group C extra" in err


@pytest.mark.parametrize("text, words", [
    ("lr: 1e-4\nlr: 2e-4\n", r"parameters/bad\.yaml: key 'lr' appears twice.*line 2"),
    ("group: [A\n", r"parameters/bad\.yaml: YAML syntax error at line"),
    (b"group: \xff\xfe\n", r"parameters/bad\.yaml is not UTF-8"),
    ("- a\n- b\n", r"parameters/bad\.yaml must hold a mapping"),
    ("caption_metadata: yes\n", r"'caption_metadata' = 'yes'.*True or False"),
])
def test_bad_parameter_files_name_the_file(tmp_path, monkeypatch, capsys, text, words):
    _workspace(tmp_path, monkeypatch, "bad", text)
    with pytest.raises(ConfigError, match=words):
        load_config("ci", "bad")
    rc, err = _cli(capsys, "params", "--preset", "ci", "--experiment", "bad")
    assert rc == 2 and "Traceback" not in err


# --- 11. one clear message, no traceback -----------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["params", "--preset", "ci", "-p", "preset=demo"], "--preset"),
    (["params", "--preset", "ci", "-p", "pretrained=missing.pt"], "'pretrained' = 'missing.pt'"),
    (["params", "--preset", "ci", "-p", "pretrained=laion9b"], "no pretrained weights 'laion9b'"),
    (["params", "--preset", "ci", "-p", "grad_accum_steps=3"], "grad_accum_steps=3 does not "
                                                              "divide batch_size=16"),
    (["params", "--preset", "ci", "-p", "image_px=32", "-p", "patch_stride_px=64"],
     "inconsistent: patch_stride_px=64"),
    (["params", "--preset", "ci", "-p", "lr"], "key=value"),
    (["train", "--preset", "ci", "-p", "precision=fp16", "-p", "device=cpu"],
     "'precision' = 'fp16'"),
])
def test_expected_faults_are_one_line_without_traceback(capsys, argv, words):
    rc, err = _cli(capsys, *argv)
    assert rc == 2 and words in err and "Traceback" not in err and "'?'" not in err


def test_device_that_is_not_here_fails_in_the_first_cell():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="'device' = 'cuda'.*no CUDA GPU"):
        check_runtime(load_config("ci", device="cuda"))
    with pytest.raises(ConfigError, match="'device' = 'cuda'"):
        from_notebook({"preset": "ci", "device": "cuda"})


def test_damaged_manifest_and_sample_metadata_name_the_file(built, tmp_path, capsys):
    work = _copy(built, tmp_path)
    folder = paths.build_folder(_cfg(work))
    (folder / "manifest.json").write_text("not json")
    with pytest.raises(ShardError, match=r"manifest\.json is not valid JSON"):
        shards.load_manifest(folder)
    raw = {"__key__": "k", "__url__": "train-x-000000.tar", "img.npy": _npy(),
           "txt": b"a", "json": json.dumps({"dataset": "x", "labels": [], "split": "train"})
           .encode()}
    with pytest.raises(ShardError, match=r"train-x-000000\.tar: sample 'k' has no \['bands'\]"):
        shards.decode_sample(raw)


def test_the_shard_benchmark_writes_samples_the_readers_accept():
    from geofm_lib.bench import data as bench

    assert bench.shard_throughput(3)["samples"] == 3


def _npy():
    return shards.encode_npy(np.zeros((1, 2, 2), np.uint8))


def test_a_file_that_is_not_a_geotiff_is_named(tmp_path, capsys):
    fake = tmp_path / "scene.tif"
    fake.write_text("this is not a raster")
    rc, err = _cli(capsys, "data", "--preset", "ci", "-p", "group=custom", "-p",
                   "datasets=[scene]", "-p",
                   f"sources={{scene: {{reader: geotiff, root: {fake}}}}}",
                   "-p", f"work_dir={tmp_path / 'w'}")
    assert rc == 2 and "'scene.tif' is not a raster" in err and "Traceback" not in err


# --- 12. non-physical pixel values -----------------------------------------------------------

def _geotiff(path, img, nodata=None):
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=img.shape[2], height=img.shape[1],
                       count=img.shape[0], dtype=img.dtype, crs="EPSG:32633",
                       transform=from_origin(500000, 5000000, 10, 10), nodata=nodata) as f:
        f.write(img)
        f.descriptions = ("blue", "green", "red")


def test_an_unflagged_extreme_pixel_stops_the_build_and_a_declared_one_is_left_out(tmp_path):
    img = np.random.default_rng(0).uniform(0.05, 0.3, (3, 64, 64)).astype(np.float32)
    img[1, 10, 10] = 3e38
    _geotiff(tmp_path / "bad.tif", img)

    def cfg(tif, name):
        return load_config("ci", group="custom", datasets=[name], image_px=32,
                           work_dir=str(tmp_path / "w"), sources={name: {
                               "reader": "geotiff", "root": str(tif)}})

    with pytest.raises(DataError, match=r"bad: sample .*band G: 3e\+38.*nodata"):
        build.build_shards(cfg(tmp_path / "bad.tif", "bad"), show_progress=False)
    img[1, 10, 10] = -3.4e38  # the same value declared as the file's nodata
    _geotiff(tmp_path / "ok.tif", img, nodata=-3.4e38)
    folder = build.build_shards(cfg(tmp_path / "ok.tif", "ok"), show_progress=False)
    stats = shards.load_manifest(folder)["band_stats"]["ok"]
    assert all(0.05 < m < 0.3 for m in stats["mean"]) and all(s < 0.2 for s in stats["std"])
