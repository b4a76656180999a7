"""``python -m edge.sidecar adopt``: the sidecar of an engine built with trtexec, on CPU.

What needs no TensorRT is tested directly: the arguments, the precision rule, the metadata read
from the ONNX, the atomic write and the refusals. Reading the engine needs TensorRT and the GPU
that built it; where a test needs its answer, ``read_engine`` (or TensorRT's documented ``None``
for a plan it cannot read) is stood in for and says so. The real bindings' path without a GPU is
in tests/test_trt_bindings.py.
"""
from __future__ import annotations

import json
import os
import stat
import types

import pytest

from edge import adopt as A
from edge import sidecar as S
from edge.device import tensorrt_version
from edge.contract import META_CLASS_NAMES, META_PRECISION

try:
    from test_ort_backend import tiny_onnx
except ImportError:
    from tests.test_ort_backend import tiny_onnx

PROFILE = {"min": [1, 3, 4, 4], "opt": [8, 3, 4, 4], "max": [8, 3, 4, 4]}


def files(tmp_path):
    engine = tmp_path / "crowd.engine"
    engine.write_bytes(b"plan bytes from trtexec")
    return engine, tiny_onnx(tmp_path / "crowd.onnx")


def listing(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("argv,needle", [
    (["missing.engine", "--onnx", "crowd.onnx", "--precision", "fp16"], "engine not found"),
    (["crowd.engine", "--onnx", "missing.onnx", "--precision", "fp16"], "ONNX file not found"),
    (["crowd.engine", "--onnx", "crowd.onnx"], "pass --precision fp32 or fp16"),
    (["crowd.engine", "--onnx", "crowd.onnx", "--precision", "int8"], "Q/DQ ONNX"),
    (["crowd.engine", "--onnx", "crowd.onnx", "--precision", "fp16", "--dla", "-1"], "DLA core"),
    (["crowd.engine", "--onnx", "junk.onnx", "--precision", "fp16"], "not a readable ONNX"),
    (["crowd.engine", "--onnx", "bare.onnx", "--precision", "fp16"], "edge_students"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, needle):
    import onnx

    files(tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 32)
    bare = onnx.load(str(tmp_path / "crowd.onnx"))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert S.main(["adopt", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge.sidecar adopt: error: ") and needle in err[0]
    assert listing(tmp_path) == before


def test_usage_without_the_subcommand(capsys):
    assert S.main([]) == 2 and "adopt ENGINE --onnx" in capsys.readouterr().err


@pytest.mark.parametrize("requested,onnx_prec,qdq,want", [
    ("fp16", "fp32", False, "fp16"), ("fp32", "fp32", False, "fp32"),
    (None, "fp16", False, "fp16"), (None, "int8", True, "int8"), ("int8", "fp32", True, "int8"),
])
def test_precision_rule(requested, onnx_prec, qdq, want):
    assert A.engine_precision(requested, onnx_prec, qdq) == want


def test_precision_that_contradicts_the_onnx():
    with pytest.raises(A.AdoptError, match="the ONNX is int8"):
        A.engine_precision("fp16", "fp32", True)


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is importable here")
def test_without_tensorrt_exits_3(tmp_path, capsys):
    engine, onnx_path = files(tmp_path)
    before = listing(tmp_path)
    assert A.main([str(engine), "--onnx", str(onnx_path), "--precision", "fp16"]) == 3
    err = capsys.readouterr().err
    assert "TensorRT" in err and "device that built the engine" in err
    assert listing(tmp_path) == before


def unreadable_trt():
    """A TensorRT module reduced to what read_engine touches, whose runtime answers a plan it
    cannot read the way TensorRT documents it: ``deserialize_cuda_engine`` returns None."""
    class Runtime:
        def __init__(self, logger):
            self.DLA_core = 0

        def deserialize_cuda_engine(self, data):
            return None

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    return types.SimpleNamespace(__version__="8.5.2", Logger=Logger, Runtime=Runtime)


def test_an_engine_tensorrt_cannot_read_is_refused(tmp_path, monkeypatch, capsys):
    from edge.backends import trt as trt_backend

    engine, onnx_path = files(tmp_path)
    before = listing(tmp_path)
    monkeypatch.setattr(trt_backend, "import_tensorrt", unreadable_trt)
    assert A.main([str(engine), "--onnx", str(onnx_path), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT 8.5.2 cannot read" in err and "build it on this device" in err
    assert listing(tmp_path) == before


def test_sidecar_written_atomically_with_the_onnx_metadata(tmp_path, monkeypatch, capsys):
    """``read_engine`` stands in for a TensorRT 8.5.2 engine with PROFILE."""
    engine, onnx_path = files(tmp_path)
    info = A.EngineInfo("8.5.2", PROFILE, ["input"], ["logits"])
    monkeypatch.setattr(A, "read_engine", lambda path, dla: info)
    old = os.umask(0o027)
    try:
        assert A.main([str(engine), "--onnx", str(onnx_path), "--precision", "fp16"]) == 0
    finally:
        os.umask(old)
    side = S.sidecar_path(engine)
    assert listing(tmp_path) == ["crowd.engine", "crowd.engine.json", "crowd.onnx"]   # no temp file
    assert stat.S_IMODE(side.stat().st_mode) == 0o640                             # umask honoured
    doc = S.read_sidecar(engine)
    fp = doc["fingerprint"]
    assert fp[S.FP_TRT_VERSION] == "8.5.2" and fp[S.FP_PRECISION] == "fp16"
    assert fp[S.FP_PROFILE] == PROFILE and fp[S.FP_ONNX_SHA256] == S.file_sha256(onnx_path)
    assert fp[S.FP_DLA_CORE] is None and doc["source_onnx"] == "crowd.onnx"
    meta = S.sidecar_metadata(doc)
    assert meta[META_CLASS_NAMES] == ["crowd", "no_crowd"] and meta[META_PRECISION] == "fp32"
    assert all(k.startswith("edge_students.") for k in doc["metadata"])    # other keys dropped
    assert doc["rebuild_command"] == (
        "trtexec --onnx=crowd.onnx --saveEngine=crowd.engine --minShapes=input:1x3x4x4 "
        "--optShapes=input:8x3x4x4 --maxShapes=input:8x3x4x4 --fp16 && python -m edge.sidecar "
        "adopt crowd.engine --onnx crowd.onnx --precision fp16 --force")
    assert doc["build"]["adopted_by"] == "python -m edge.sidecar adopt"
    # the runtime's own check accepts it on the device it describes
    here = S.probe_device("8.5.2")
    assert S.check_engine(engine, current=here) == doc
    # a second run does not overwrite without --force
    assert A.main([str(engine), "--onnx", str(onnx_path), "--precision", "fp16"]) == 2
    assert "--force" in capsys.readouterr().err
    assert A.main([str(engine), "--onnx", str(onnx_path), "--precision", "fp32", "--force"]) == 0
    assert json.loads(side.read_text())["fingerprint"][S.FP_PRECISION] == "fp32"


def test_engine_from_another_onnx_is_refused(tmp_path, monkeypatch, capsys):
    engine, onnx_path = files(tmp_path)
    one_channel = {k: [v[0], 1, 4, 4] for k, v in PROFILE.items()}
    monkeypatch.setattr(A, "read_engine", lambda p, d: A.EngineInfo("10.3.0", one_channel,
                                                                   ["input"], ["logits"]))
    assert A.main([str(engine), "--onnx", str(onnx_path), "--precision", "fp16"]) == 2
    assert "not built from this ONNX" in capsys.readouterr().err
    assert not S.sidecar_path(engine).exists()


def test_adopt_is_torch_free():
    import subprocess
    import sys

    code = ("import sys, edge.adopt, edge.sidecar; "
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
