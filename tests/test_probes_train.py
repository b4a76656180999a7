"""Hostile-user probes of the training side: `python -m train`, `train.crowd_drone`, `train.sweep`
and `profiling.tables`.

Every bad input exits 2 with one line on stderr that names the bad value, no traceback, and
creates or changes no file. Interruptions (kill -9, a double Ctrl-C, a full disk) at seeded
points never leave a state that cannot be loaded or resumed, and a resume stays bit-identical.
Commands run in-process through ``main([...])``; only signals and kill -9 use subprocesses.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import edge.files
from edge.files import atomic_write
from train import crowd_drone
from train.checkpoint import (CheckpointError, build_checkpoint, load_checkpoint, load_model,
                              save_checkpoint, train_state_of)
from train.cli import main as train_main
from train.config import TrainConfig
from train.engine import Trainer
from train.rundir import RunDir
from train.models import build_model
from train.experiments.sweep import main as sweep_main
from train.experiments import runner
from train.experiments.grid import Grid, expand

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--dataset", "digits", "--model", "cifar_cnn"]
#: the run the crash tests interrupt and resume (cosine: a doubled scheduler step would show)
RUN = DIGITS + ["--lr", "0.05", "--seed", "3", "--schedule", "cosine", "--no-progress"]
EPOCHS = "3"


# ---------------------------------------------------------------------------------- helpers
def call(fn, argv, capsys):
    """(exit code, stderr lines) of a command's ``main`` called in-process."""
    capsys.readouterr()
    try:
        code = fn(list(argv))
        code = 0 if code is None or isinstance(code, list) else code
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.strip()]


def assert_one_line(code, err, *words):
    assert code == 2, (code, err)
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for w in words:
        assert w in err[0], (w, err[0])


def tree(path: Path):
    """Every file under ``path`` with its bytes' hash, mode and mtime (a change shows)."""
    if not path.exists():
        return None
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(path))] = (digest, st.st_mode, st.st_mtime_ns)
    return out


def weights(model_or_path):
    if isinstance(model_or_path, (str, Path)):
        return load_checkpoint(model_or_path)["state_dict"]
    return {k: v.detach().cpu() for k, v in model_or_path.state_dict().items()}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs (max |dw| {(wa[k] - wb[k]).abs().max():.3g})"


def subprocess_env():
    # one thread, as in this module (see one_thread), so a run continued here is bit-identical
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Training here runs on one thread: on a shared, busy machine two OpenMP threads per
    process can make an epoch 10x slower, and every run must use the same count to match."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def readonly(tmp_path):
    """A folder nobody may create files in: mode 0555, or for root (who ignores modes) sysfs."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    probe = Path("/sys/edge_students_probe")
    try:
        probe.mkdir()
    except OSError:
        yield Path("/sys")
        return
    probe.rmdir()
    pytest.skip("no read-only folder available to root here")


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("files") / "plain.txt"
    p.write_text("not a folder\n")
    return p


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A valid digits-shaped checkpoint (cifar_cnn, 1 channel, 32 px, 10 classes)."""
    model = build_model("cifar_cnn", num_classes=10, in_channels=1, input_size=32)
    ckpt = build_checkpoint(model, arch="cifar_cnn", arch_kwargs={"in_channels": 1, "input_size": 32},
                            class_names=[str(i) for i in range(10)], input_size=(32, 32), in_channels=1,
                            preprocess={"size": [32, 32], "mean": [0.3], "std": [0.3],
                                        "channel_order": "GRAY"},
                            method="ce", config={})
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("teacher") / "teacher.pt")


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished 1-epoch run folder (its state.pt can be resumed to more epochs)."""
    out = tmp_path_factory.mktemp("run1") / "run"
    assert train_main(RUN + ["--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted one must match bit for bit."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert train_main(RUN + ["--epochs", EPOCHS, "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------------------------- train: flags
BAD_TRAIN_FLAGS = [
    (["--lambda", "-1", "--posd"], "--lambda"), (["--lambda", "nan", "--posd"], "nan"),
    (["--lambda", "inf"], "--lambda"),
    (["--gamma", "nan"], "--gamma"), (["--gamma", "0"], "--gamma"), (["--gamma", "1.5"], "--gamma"),
    (["--milestones", "-5"], "--milestones"), (["--milestones", "0"], "--milestones"),
    (["--milestones", "10", "5"], "--milestones"), (["--milestones", "5", "5"], "--milestones"),
    (["--lr", "0"], "--lr"), (["--lr", "-0.1"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--momentum", "-0.1"], "--momentum"), (["--momentum", "1"], "--momentum"),
    (["--momentum", "nan"], "--momentum"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--weight-decay", "inf"], "--weight-decay"),
    (["--kernel-d", "0"], "--kernel-d"), (["--kernel-d", "nan"], "--kernel-d"),
    (["--temperature", "0"], "--temperature"), (["--temperature", "-inf"], "--temperature"),
    (["--kd-alpha", "1.5"], "--kd-alpha"), (["--kd-alpha", "nan"], "--kd-alpha"),
    (["--epochs", "0"], "--epochs"), (["--epochs", "-3"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "1"], "--batch-size"),
    (["--eval-batch-size", "0"], "--eval-batch-size"),
    (["--knn", "0", "--posd"], "--knn"), (["--knn", "-3"], "--knn"),
    (["--knn", "100", "--batch-size", "8", "--posd"], "--knn 100"),
    (["--knn", "8", "--batch-size", "8", "--oskd"], "--batch-size is 8"),
    (["--synth-size", "0"], "--synth-size"), (["--synth-size", "-5"], "--synth-size"),
    (["--synth-seed", "-1"], "--synth-seed"), (["--seed", "-1"], "--seed"),
    (["--input-size", "0"], "--input-size"), (["--input-size", "-1"], "--input-size"),
    (["--input-size", "4"], "input size 4"),
    (["--device", "cuda:x"], "cuda:x"), (["--device", "gpu"], "gpu"),
    (["--epochs", "abc"], "'abc'"), (["--lr", "fast"], "'fast'"), (["--knn", "1.5"], "'1.5'"),
    (["--model", "nope"], "'nope'"), (["--frobnicate"], "--frobnicate"),
    (["--model-kwargs", "{x"], "{x"), (["--model-kwargs", "[1]"], "JSON object"),
    (["--model-kwargs", '{"foo": 1}'], "'foo'"), (["--model-kwargs", '{"num_classes": 3}'], "'num_classes'"),
    (["--model-kwargs", '{"input_size": 64}'], "--input-size"),
    (["--method", "kd"], "teacher"), (["--method", "ce", "--kd", "x.pt"], "conflicts"),
    (["--out", ""], "--out is empty"), (["--out", " "], "--out is empty"),
    (["--feature-layer", "nope", "--posd"], "'nope'"), (["--preset", "nope"], "'nope'"),
    (["--peer-model", "nope", "--dml"], "'nope'"), (["--amp", "--device", "cpu"], "--amp"),
]


@pytest.mark.parametrize("extra,word", BAD_TRAIN_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_train_refuses_bad_flags(tmp_path, capsys, extra, word):
    out = tmp_path / "o"
    code, err = call(train_main, DIGITS + ["--out", str(out)] + extra, capsys)
    assert_one_line(code, err, word)
    assert not out.exists()


@pytest.mark.parametrize("extra,word", [
    (["--knn", "40", "--batch-size", "32", "--posd"], "--knn 40"),   # the preset's batch is 32
    (["--gamma", "nan"], "--gamma"), (["--synth-size", "0"], "--synth-size"),
    (["--lambda", "-1", "--posd"], "--lambda"),
])
def test_crowd_drone_refuses_bad_flags(tmp_path, capsys, extra, word):
    out = tmp_path / "o"
    code, err = call(crowd_drone.main, ["--out", str(out)] + extra, capsys)
    assert_one_line(code, err, word)
    assert not out.exists()


def test_knn_just_below_the_batch_size_is_accepted():
    from train.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(DIGITS + ["--posd", "--knn", "7", "--batch-size", "8"]))
    assert cfg.knn == 7


# ---------------------------------------------------------------------------------- train: paths
def test_out_that_is_a_file_or_under_one(tmp_path, capsys, a_file):
    for out, word in ((a_file, "is a file"), (a_file / "sub", "is a file")):
        before = a_file.read_bytes()
        code, err = call(train_main, DIGITS + ["--out", str(out)], capsys)
        assert_one_line(code, err, str(a_file))
        assert a_file.read_bytes() == before


def test_out_read_only(tmp_path, capsys, readonly):
    """Refused before any work, naming the flag: the check creates a file for real (as root, or
    on /proc, the permission bits said yes and the run failed later on "No such file")."""
    out = readonly / "run"
    code, err = call(train_main, DIGITS + ["--epochs", "1", "--out", str(out)], capsys)
    assert_one_line(code, err, f"--out {out}: cannot create files in {readonly}")
    assert not out.exists()
    code, err = call(_tables, ["--tables", "complexity", "--out", str(out)], capsys)
    assert_one_line(code, err, f"--out {out}: cannot create files in {readonly}")
    assert not out.exists()


def test_data_root_read_only_or_a_file(tmp_path, capsys, readonly, a_file):
    out = tmp_path / "o"
    code, err = call(crowd_drone.main, ["--synth-size", "2", "--epochs", "1", "--data-root",
                                        str(readonly / "data"), "--out", str(out)], capsys)
    assert_one_line(code, err, str(readonly / "data"))
    code, err = call(train_main, ["--dataset", "crowd_synth", "--data-root", str(a_file), "--out", str(out)], capsys)
    assert_one_line(code, err, "--data-root", str(a_file))
    assert not out.exists() and not (readonly / "data").exists()


def test_data_folder_problems(tmp_path, capsys, a_file):
    import cv2
    import numpy as np

    one = tmp_path / "one"
    for split in ("train", "test"):
        (one / split / "only").mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(one / split / "only" / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    out = tmp_path / "o"
    for data, word in ((one, "at least 2"), (a_file, "is a file"), (tmp_path / "missing", "not found")):
        code, err = call(train_main, ["--data", str(data), "--model", "cifar_cnn", "--out", str(out)], capsys)
        assert_one_line(code, err, word)
    assert not out.exists()


# ---------------------------------------------------------------------------------- checkpoints
def _tampered(teacher: Path, tmp_path: Path, change) -> Path:
    ckpt = torch.load(teacher, weights_only=True)
    change(ckpt)
    path = tmp_path / "tampered.pt"
    torch.save(ckpt, path)
    return path


def _set(key, value):
    return lambda c: c.__setitem__(key, value)


def _pre(**kw):
    return lambda c: c["preprocess"].update(kw)


def _weight(key, shape):
    return lambda c: c["state_dict"].__setitem__(key, torch.zeros(shape))


TAMPERS = [
    ("preprocess-missing-size", lambda c: c["preprocess"].pop("size"), "preprocess"),
    ("preprocess-negative-std", _pre(std=[-1.0]), "preprocess"),
    ("preprocess-rgb-on-gray", _pre(channel_order="RGB"), "preprocess"),
    ("preprocess-size-mismatch", _pre(size=[16, 16]), "preprocess size"),
    ("preprocess-size-junk", _pre(size=None), "preprocess"),
    ("preprocess-a-list", _set("preprocess", [1, 2]), "preprocess"),
    ("config-a-list", _set("config", [1, 2]), "config"),
    ("class-names-short", _set("class_names", ["a", "b"]), "class_names"),
    ("class-names-a-string", _set("class_names", "0123456789"), "class_names"),
    ("class-names-ints", _set("class_names", list(range(10))), "class_names"),
    ("input-size-zero", _set("input_size", [0, 0]), "input_size"),
    ("input-size-one-value", _set("input_size", [32]), "input_size"),
    ("input-size-string", _set("input_size", "32x32"), "input_size"),
    ("in-channels-zero", _set("in_channels", 0), "in_channels"),
    ("num-classes-string", _set("num_classes", "10"), "num_classes"),
    ("format-version-string", _set("format_version", "one"), "format_version"),
    ("arch-not-a-string", _set("arch", 5), "arch"),
    ("arch-unknown", _set("arch", "resnet7"), "resnet7"),
    ("arch-kwargs-unknown-key", lambda c: c["arch_kwargs"].update(depth=3), "arch_kwargs"),
    ("weight-shape", _weight("fc3.weight", (10, 7)), "fc3.weight"),
    ("weight-missing", lambda c: c["state_dict"].pop("fc3.bias"), "fc3.bias"),
    ("weight-extra", _weight("extra.weight", (3,)), "extra.weight"),
    ("state-dict-not-tensors", _set("state_dict", {"a": 1}), "state_dict"),
    ("train-state-a-list", _set("train_state", [1]), "train_state"),
]


#: also given to `python -m train --kd` (each loads the data first: a sample keeps the suite fast)
KD_VIA_CLI = {"preprocess-size-mismatch", "class-names-short", "input-size-zero", "arch-unknown",
              "weight-shape", "config-a-list"}


@pytest.mark.parametrize("name,change,word", TAMPERS, ids=[t[0] for t in TAMPERS])
def test_tampered_checkpoint_is_refused_in_one_line(tmp_path, capsys, teacher, name, change, word):
    path = _tampered(teacher, tmp_path, change)
    with pytest.raises(CheckpointError, match=word.replace("[", r"\[")) as e:
        load_model(path)
    assert "\n" not in str(e.value)
    if name not in KD_VIA_CLI:
        return
    out = tmp_path / "o"                                        # --kd with it: exit 2, one line
    code, err = call(train_main, DIGITS + ["--kd", str(path), "--out", str(out)], capsys)
    assert_one_line(code, err, str(path))
    assert not out.exists()


class _Code:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_teacher_that_carries_code_is_refused_without_unsafe_advice(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "edge-students/checkpoint", "payload": _Code()}, path)
    code, err = call(train_main, DIGITS + ["--kd", str(path), "--out", str(tmp_path / "o")], capsys)
    assert_one_line(code, err, "carries code", "refuses")
    assert "weights_only" not in err[0] and "safe_globals" not in err[0]


@pytest.mark.parametrize("extra,word", [
    (["--input-size", "24"], "input size"), (["--kd", "MISSING"], "not found"),
])
def test_kd_teacher_that_does_not_fit(tmp_path, capsys, teacher, extra, word):
    argv = DIGITS + ["--kd", str(teacher)] + extra
    argv = [str(tmp_path / "no.pt") if a == "MISSING" else a for a in argv]
    out = tmp_path / "o"
    code, err = call(train_main, argv + ["--out", str(out)], capsys)
    assert_one_line(code, err, word)
    assert not out.exists()


# ---------------------------------------------------------------------------------- resume
STATE_TAMPERS = [
    ("no-train-state", lambda c: c.pop("train_state"), "train_state"),
    ("run-missing", lambda c: c["train_state"].pop("run"), "run"),
    ("negative-epoch", lambda c: c["train_state"]["run"].__setitem__("epoch", -1), "position"),
    ("rng-not-a-tensor", lambda c: c["train_state"].__setitem__("torch_rng", [1, 2]), "torch_rng"),
    ("optimizer-junk", lambda c: c["train_state"].__setitem__("optimizer", {"state": {}, "param_groups": [1]}),
     "training state"),
    ("weight-shape", lambda c: c["state_dict"].__setitem__("classifier.weight", torch.zeros(10, 7)), "classifier.weight"),
    ("config-a-list", lambda c: c.__setitem__("config", [1]), "config"),
    ("config-unknown-key", lambda c: c["config"].update(frobnicate=1), "configuration"),
    ("class-names-short", lambda c: c.__setitem__("class_names", ["a"]), "class_names"),
]


@pytest.mark.parametrize("name,change,word", STATE_TAMPERS, ids=[t[0] for t in STATE_TAMPERS])
def test_resume_from_a_tampered_state_is_refused_and_changes_nothing(tmp_path, capsys, one_epoch_run,
                                                                      name, change, word):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    ckpt = torch.load(run / "state.pt", weights_only=True)
    change(ckpt)
    save_checkpoint(ckpt, run / "state.pt")
    before = tree(run)
    code, err = call(train_main, RUN + ["--epochs", "2", "--out", str(run), "--resume"], capsys)
    assert_one_line(code, err, word)
    assert tree(run) == before


@pytest.mark.parametrize("extra,word", [
    (["--lr", "0.1"], "lr"), (["--seed", "4"], "seed"), (["--schedule", "step"], "schedule"),
])
def test_a_refused_resume_leaves_config_json_alone(tmp_path, capsys, one_epoch_run, extra, word):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    before = tree(run)
    argv = [a for a in RUN if a not in ("--schedule", "cosine")] if "--schedule" in extra else list(RUN)
    code, err = call(train_main, argv + extra + ["--epochs", "2", "--out", str(run), "--resume"], capsys)
    assert_one_line(code, err, "differs", word)
    assert tree(run) == before


def test_resume_of_nothing_is_refused(tmp_path, capsys):
    out = tmp_path / "empty"
    code, err = call(train_main, RUN + ["--epochs", "2", "--out", str(out), "--resume"], capsys)
    assert_one_line(code, err, "no state.pt")
    assert not out.exists()


@pytest.mark.parametrize("how", ["dot-slash", "trailing-slash", "absolute", "moved", "copied"])
def test_resume_finds_the_run_however_the_folder_is_named_or_moved(tmp_path, monkeypatch, one_epoch_run,
                                                                   reference, how):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(one_epoch_run, tmp_path / "x")
    names = {"dot-slash": "./x", "trailing-slash": "x/", "absolute": str(tmp_path / "x")}
    if how == "moved":
        shutil.move(str(tmp_path / "x"), str(tmp_path / "elsewhere"))
        names[how] = "elsewhere"
    elif how == "copied":
        shutil.copytree(tmp_path / "x", tmp_path / "copy")
        names[how] = "copy"
    assert train_main(RUN + ["--epochs", "2", "--out", names[how], "--resume"]) == 0
    folder = tmp_path / names[how]
    saved = json.loads((folder / "config.json").read_text())["config"]
    assert saved["out"] == names[how]                           # the record says where it is now
    assert [json.loads(ln)["epoch"] for ln in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ---------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert edge.files.current_umask() == umask
        atomic_write(tmp_path / "a.json", lambda f: f.write(b"{}"))
        save_checkpoint({"x": torch.zeros(2)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_runs_files_are_readable_by_others(one_epoch_run):
    if edge.files.current_umask() & 0o004:
        pytest.skip("the umask hides files from others")
    for name in ("config.json", "metrics.json", "model.pt", "best.pt", "state.pt", "metrics.jsonl"):
        assert (one_epoch_run / name).stat().st_mode & 0o004, name


class _FullDisk:
    """A file on a disk with ``room`` bytes left: further writes fail with ENOSPC."""

    room = 0

    def __init__(self, f):
        self._f = f

    def write(self, data):
        if len(data) > _FullDisk.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _FullDisk.room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("room", [0, 20_000])   # nothing fits / config.json fits, a checkpoint not
def test_a_full_disk_is_said_plainly(tmp_path, capsys, monkeypatch, room):
    real = os.fdopen
    monkeypatch.setattr(edge.files.os, "fdopen", lambda fd, mode: _FullDisk(real(fd, mode)))
    _FullDisk.room = room
    out = tmp_path / "o"
    code, err = call(train_main, RUN + ["--epochs", "1", "--out", str(out)], capsys)
    assert_one_line(code, err, "No space left on device")
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [n for n in left if n.endswith(".tmp")] and "best.pt" not in left


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"x": torch.ones(3)}, tmp_path / "state.pt")
    real = os.fdopen
    monkeypatch.setattr(edge.files.os, "fdopen", lambda fd, mode: _FullDisk(real(fd, mode)))
    _FullDisk.room = 100
    with pytest.raises(OSError, match="No space left on device") as e:
        save_checkpoint({"x": torch.zeros(1000)}, path)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint_raw(path)["x"], torch.ones(3))
    assert os.listdir(tmp_path) == ["state.pt"]


def load_checkpoint_raw(path):
    return torch.load(path, weights_only=True)


# ---------------------------------------------------------------------------------- crashes
class _Killed(BaseException):
    """Stands for kill -9 in-process: nothing after it runs (no handler saves anything)."""


@pytest.mark.parametrize("kill_epoch", [1, 2])
def test_killed_while_writing_state_pt_resumes(tmp_path, capsys, monkeypatch, reference, kill_epoch):
    """kill -9 in the middle of writing epoch N's state.pt: a partial temporary file, the epoch
    already in metrics.jsonl (and best.pt). The run resumes, bit-identical; the temporary goes;
    metrics.jsonl keeps one line per epoch."""
    out = tmp_path / "run"

    def dying_save(self, parts, state, summary, ema=None):
        if state.epoch == kill_epoch:
            blob = _checkpoint_bytes(self.checkpoint(parts, summary, state, ema=ema))
            (self.path / ".state.pt.k9x2.tmp").write_bytes(blob[: len(blob) // 2])
            raise _Killed
        return real_save(self, parts, state, summary, ema=ema)

    real_save = RunDir.save_state
    monkeypatch.setattr(RunDir, "save_state", dying_save)
    with pytest.raises(_Killed):
        train_main(RUN + ["--epochs", EPOCHS, "--out", str(out)])
    monkeypatch.undo()
    assert (out / "best.pt").is_file() and (out / "state.pt").exists() == (kill_epoch > 1)
    best_before = (out / "best.pt").read_bytes()
    code, err = call(train_main, RUN + ["--epochs", EPOCHS, "--out", str(out)], capsys)
    assert_one_line(code, err, "--resume")                      # not silently restarted
    assert (out / "best.pt").read_bytes() == best_before
    if kill_epoch == 1:                                         # the sweep resumes it too
        job = expand(Grid(pairs=(("digits", "cifar_cnn"),), seeds=(3,), epochs=int(EPOCHS),
                          train_args=tuple(RUN[4:])))[0]
        assert runner.folder_status(out, runner.resolve_config(job, out))[0] == "resume"
    assert train_main(RUN + ["--epochs", EPOCHS, "--out", str(out), "--resume"]) == 0
    assert_same_weights(out / "model.pt", reference / "model.pt")
    assert not list(out.glob(".*.tmp"))
    epochs = [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, int(EPOCHS) + 1))


def _checkpoint_bytes(ckpt) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


@pytest.mark.parametrize("where", ["after-update", "evaluate", "scheduler"])
def test_double_ctrl_c_never_saves_an_inconsistent_state(tmp_path, capsys, monkeypatch, reference, where):
    """Two real SIGINTs in the most fragile places: just after an optimiser update (before the
    position counts it), during the end-of-epoch evaluation, right after the cosine scheduler's
    step. Whatever is on disk afterwards resumes to the uninterrupted run's exact weights."""
    out = tmp_path / "run"
    calls = {"n": 0}

    def twice():
        calls["n"] += 1
        if calls["n"] == {"after-update": 30, "evaluate": 2, "scheduler": 2}[where]:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    if where == "after-update":
        real_step = torch.optim.SGD.step
        monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: (real_step(self, *a, **k), twice())[0])
    elif where == "evaluate":
        real_eval = Trainer.evaluate
        monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: (twice(), real_eval(self, *a, **k))[1])
    else:
        real_sched = torch.optim.lr_scheduler.CosineAnnealingLR.step
        monkeypatch.setattr(torch.optim.lr_scheduler.CosineAnnealingLR, "step",
                            lambda self, *a, **k: (real_sched(self, *a, **k), twice())[0])
    code, err = call(train_main, RUN + ["--epochs", EPOCHS, "--out", str(out)], capsys)
    monkeypatch.undo()
    assert code == 130 and "without saving" in "\n".join(err)
    if (out / "state.pt").exists():
        run = train_state_of(load_checkpoint(out / "state.pt"))["run"]
        assert run["step"] == 0 and run["epoch"] == len(run["history"])   # an epoch's end
    assert train_main(RUN + ["--epochs", EPOCHS, "--out", str(out), "--resume"]) == 0
    assert_same_weights(out / "model.pt", reference / "model.pt")


def _start_run(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "train", *RUN, "--epochs", EPOCHS, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 180
    while not (out / "config.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("kind,seed", [("kill", 11), ("sigint", 12)])
def test_kill_9_and_double_sigint_at_random_points(tmp_path, reference, kind, seed):
    """Real signals to `python -m train` at a seeded random moment of training: kill -9, or two
    SIGINTs a random few milliseconds apart. Either leaves a loadable, consistent folder that
    --resume finishes with the uninterrupted run's exact weights."""
    rng = random.Random(seed)
    out = tmp_path / kind
    proc = _start_run(out)
    time.sleep(rng.uniform(0.0, 0.8))
    if kind == "kill":
        proc.kill()
    else:
        proc.send_signal(signal.SIGINT)
        time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert "Traceback" not in err, err
    if (out / "state.pt").exists():
        train_state_of(load_checkpoint(out / "state.pt"))
    assert train_main(RUN + ["--epochs", EPOCHS, "--out", str(out), "--resume"]) == 0
    assert_same_weights(out / "model.pt", reference / "model.pt")
    assert not list(out.glob(".*.tmp"))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == list(range(1, int(EPOCHS) + 1))


# ---------------------------------------------------------------------------------- sweep
SWEEP = ["--dataset", "digits", "--model", "cifar_cnn", "--methods", "ce", "--seeds", "1"]


@pytest.mark.parametrize("extra,word", [
    (["--jobs", "0"], "--jobs"), (["--seeds", "0"], "--seeds"), (["--epochs", "0"], "--epochs"),
    (["--shard", "0/2"], "--shard"), (["--shard", "3/2"], "--shard"), (["--shard", "x"], "'x'"),
    (["--methods", "nope"], "nope"), (["--methods", "posd", "--knn", "100", "--batch-size", "8"], "--knn 100"),
    (["--methods", "posd", "--lam", "-1"], "--lambda"), (["--methods", "posd", "--lam", "nan"], "--lambda"),
    (["--train-args", "--gamma nan"], "--gamma"), (["--train-args=--frobnicate"], "--frobnicate"),
    (["--seed-list", "-1"], "--seed"), (["--jobs", "x"], "'x'"), (["--pairs", "digits"], "DATASET:MODEL"),
    (["--methods", "kd", "--teacher", "runs/{foo}/model.pt"], "{foo}"), (["--out", ""], "--out is empty"),
])
def test_sweep_refuses_bad_flags(tmp_path, capsys, extra, word):
    out = tmp_path / "sweep"
    code, err = call(sweep_main, SWEEP + ["--out", str(out)] + extra, capsys)
    assert_one_line(code, err, word)
    assert not out.exists()


def test_sweep_output_folders(tmp_path, capsys, a_file, readonly):
    for out in (a_file, readonly / "sweep"):
        code, err = call(sweep_main, SWEEP + ["--epochs", "1", "--out", str(out)], capsys)
        assert_one_line(code, err, str(out))
    assert not (readonly / "sweep").exists()
    code, err = call(sweep_main, ["--out", str(tmp_path / "none"), "--report"], capsys)
    assert_one_line(code, err, "no sweep folder")
    (tmp_path / "s").mkdir()
    code, err = call(sweep_main, ["--out", str(tmp_path / "s"), "--report", "--report-dir", str(a_file)], capsys)
    assert_one_line(code, err, "--report-dir", "is a file")


def test_sweep_report_of_nothing(tmp_path, capsys):
    """--report on a folder without runs, and --from-csv on an empty file: one line, no report
    written (the first wrote an empty report and exited 0; the second said "I/O operation on
    closed file")."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = call(sweep_main, ["--out", str(empty), "--report"], capsys)
    assert_one_line(code, err, f"no run folders under {empty}")
    assert not any(empty.iterdir())
    csv = tmp_path / "results.csv"
    csv.write_bytes(b"")
    code, err = call(sweep_main, ["--report", "--from-csv", str(csv), "--report-dir",
                                  str(tmp_path / "r")], capsys)
    assert_one_line(code, err, f"{csv} is empty")
    assert not (tmp_path / "r").exists()


def test_sweep_locks_foreign_stale_and_reused_pids(tmp_path, capsys):
    jobs = expand(Grid(pairs=(("digits", "cifar_cnn"),), seeds=(0,), epochs=1, train_args=("--device", "cpu")))
    run = jobs[0].out(tmp_path)
    run.mkdir(parents=True)
    lock = run / runner.LOCK
    lock.write_text(json.dumps({"host": "another-machine", "pid": 1}))
    p = runner.plan(jobs, tmp_path)[0]
    assert p.status == "running" and "--break-locks" in p.detail
    assert runner.plan(jobs, tmp_path, break_locks=True)[0].status == "new"
    code, _ = call(sweep_main, SWEEP + ["--epochs", "1", "--train-args", "--device cpu", "--out", str(tmp_path),
                                        "--dry-run", "--break-locks"], capsys)
    assert code == 0
    with runner.locked(run, break_foreign=True):                # taken over, now ours
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    me = json.loads(runner._lock_record(os.getpid()).decode())
    lock.write_text(json.dumps(me))
    assert runner.plan(jobs, tmp_path)[0].status == "running"   # a live process of this host
    if me["started"] is not None:                               # the same PID, a later process
        lock.write_text(json.dumps(dict(me, started=me["started"] - 1)))
        assert runner.plan(jobs, tmp_path)[0].status == "new"
    lock.write_text("{not json")
    assert runner.plan(jobs, tmp_path)[0].status == "running"   # unreadable: do not guess
    assert runner.plan(jobs, tmp_path, break_locks=True)[0].status == "new"


def test_a_killed_sweeps_trainer_keeps_its_folder_locked(tmp_path, capsys):
    """kill -9 of a sweep whose trainer runs as a subprocess: the lock names the trainer, so a
    rerun reports the folder running and starts no second trainer there."""
    out = tmp_path / "sweep"
    args = SWEEP + ["--epochs", "200", "--gpus", "none", "--train-args", "--device cpu --no-progress",
                    "--out", str(out)]
    sweep = subprocess.Popen([sys.executable, "-m", "train.sweep", *args], env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = expand(Grid(pairs=(("digits", "cifar_cnn"),), seeds=(0,), epochs=200,
                      train_args=("--device", "cpu", "--no-progress")))[0]
    lock = job.out(out) / runner.LOCK
    trainer = None
    deadline = time.time() + 180
    while time.time() < deadline and sweep.poll() is None:
        try:
            info = json.loads(lock.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("pid") not in (None, sweep.pid):
            trainer = int(info["pid"])
            break
        time.sleep(0.05)
    sweep.kill()
    sweep.wait()
    try:
        assert trainer is not None, "the lock never named the trainer"
        assert info["sweep_pid"] == sweep.pid and runner._alive(trainer, info["started"])
        code, _ = call(sweep_main, args, capsys)
        assert code == 0
        assert json.loads(lock.read_text())["pid"] == trainer    # nobody else took the folder
        log = (job.out(out) / runner.LOG).read_text()
        assert log.count("python -m train: ce cifar_cnn") <= 1
    finally:
        if trainer is not None:
            os.kill(trainer, signal.SIGKILL)
            deadline = time.time() + 60
            while runner._alive(trainer) and time.time() < deadline:
                time.sleep(0.05)
    assert runner.plan([job], out)[0].status in ("new", "resume")   # its lock is stale now


# ---------------------------------------------------------------------------------- profiling
def _tables(argv):
    from profiling.tables import main

    return main(argv)


@pytest.mark.parametrize("extra,word", [
    (["--repeats", "0"], "--repeats"), (["--threads", "-1"], "--threads"),
    (["--num-classes", "1"], "--num-classes"), (["--input-size", "0"], "--input-size"),
    (["--in-channels", "0"], "--in-channels"), (["--batch-size", "1"], "--batch-size"),
    (["--tables", "nope"], "'nope'"), (["--teacher", "nope"], "'nope'"), (["--format", "xml"], "'xml'"),
    (["--input-size", "4", "--tables", "complexity"], "too small"),
])
def test_profiling_tables_refuses_bad_flags(tmp_path, capsys, extra, word):
    out = tmp_path / "t"
    code, err = call(_tables, ["--student", "cifar_cnn", "--out", str(out)] + extra, capsys)
    assert_one_line(code, err, word)
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--input-size", "64"], ["--teacher", "resnet56"],
                                   ["--num-classes", "2", "--in-channels", "1"]])
def test_profiling_tables_refuses_pair_flags_without_a_student(tmp_path, capsys, extra):
    """--input-size, --teacher, --num-classes and --in-channels describe the --student pair;
    without one they were silently ignored and the default pairs' tables came out."""
    out = tmp_path / "t"
    code, err = call(_tables, ["--tables", "complexity", "--out", str(out)] + extra, capsys)
    assert_one_line(code, err, extra[0], "add --student NAME")
    assert not out.exists()


def test_profiling_tables_student_defaults(tmp_path, capsys):
    from profiling.tables import parse_args, pairs_from

    (pair,) = pairs_from(parse_args(["--student", "crowd_fcn", "--num-classes", "2"]))
    assert (pair.teacher, pair.input_size, pair.num_classes, pair.in_channels) == ("resnet32", 32, 2, 3)


def test_profiling_tables_out_of_memory(tmp_path, capsys, monkeypatch):
    """An input or batch too large for this machine's memory (e.g. --input-size 100000) is one
    line, not PyTorch's allocator traceback (exit 1)."""
    import profiling.tables

    def too_big(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 5118771273728 bytes.")
    monkeypatch.setattr(profiling.tables, "build_tables", too_big)
    out = tmp_path / "t"
    code, err = call(_tables, ["--student", "cifar_cnn", "--input-size", "100000", "--out", str(out)],
                     capsys)
    assert_one_line(code, err, "out of memory on cpu", "can't allocate memory", "--input-size")
    assert not out.exists()


def test_profiling_tables_unwritable_out(tmp_path, capsys, a_file, readonly):
    for out in (a_file, a_file / "sub", readonly / "tables"):
        code, err = call(_tables, ["--student", "cifar_cnn", "--tables", "complexity", "--out", str(out)], capsys)
        assert_one_line(code, err, str(out) if out != a_file / "sub" else str(a_file))
    assert not (readonly / "tables").exists()
