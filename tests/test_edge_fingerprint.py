"""Engine sidecar (edge/sidecar.py, contract 3): export's writer and the runtime's checker agree.

No TensorRT anywhere: the engine files here are plain bytes (we never fake an engine *build*);
the sidecar logic is pure data, so it is tested end to end on CPU.
"""
import json
import shlex
from types import SimpleNamespace

import pytest

from edge import contract as C
from edge import device as D
from edge import sidecar as S
from edge.sidecar import FingerprintMismatch, SidecarError, check_engine, compare

try:
    from edge_helpers import CROWD_CLASSES, recipe
except ImportError:
    from tests.edge_helpers import CROWD_CLASSES, recipe

ORIN = S.probe_device(trt_version="10.3.0", gpu=("Orin", "8.7"), l4t="36.4.0")
PROFILE = {"min": [1, 3, 64, 64], "opt": [8, 3, 64, 64], "max": [8, 3, 64, 64]}


def crowd_onnx(path, precision="fp16"):
    """A tiny ONNX with the contract metadata (what export.onnx writes), no torch needed."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], [C.OUTPUT_NAME])], "g",
                              [helper.make_tensor_value_info(C.INPUT_NAME, 1, ["batch", 3, 64, 64])],
                              [helper.make_tensor_value_info(C.OUTPUT_NAME, 1, ["batch", 3, 64, 64])])
    model = helper.make_model(graph)
    meta = {C.META_CLASS_NAMES: CROWD_CLASSES, C.META_INPUT_SIZE: [64, 64], C.META_IN_CHANNELS: 3,
            C.META_PREPROCESS: recipe(64).to_dict(), C.META_ARCH: "crowd_fcn",
            C.META_PRECISION: precision, C.META_OUTPUTS: [C.OUTPUT_NAME]}
    for k, v in C.encode_metadata(meta).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def build_engine_files(tmp_path, device=ORIN, precision="fp16", dla=None):
    """What `python -m export.trt crowd.onnx ...` leaves behind, with bytes for the plan:
    the sidecar is written by export's own writer and rebuild command."""
    from export.fingerprint import build_fingerprint, write_engine_sidecar
    from export.trt import build_parser, target_command

    onnx_path = crowd_onnx(tmp_path / "crowd.onnx")
    engine = tmp_path / "crowd.engine"
    engine.write_bytes(b"bytes standing in for a TensorRT plan")
    argv = [str(onnx_path), "--precision", precision, "--max-batch", "8"]
    if dla is not None:
        argv += ["--dla", str(dla)]
    args = build_parser().parse_args(argv)
    fp = build_fingerprint(precision=precision, profile=PROFILE, onnx_path=onnx_path,
                           dla_core=dla, device=device)
    write_engine_sidecar(engine, onnx_path, fp, rebuild_command=target_command(args, onnx_path, engine),
                         build={"plan": "test"})
    return engine, onnx_path


# ------------------------------------------------------------------------- round trip
def test_round_trip_identical_device_passes(tmp_path):
    engine, onnx_path = build_engine_files(tmp_path)
    doc = check_engine(engine, current=ORIN)                        # (a) passes
    assert doc["format"] == S.SIDECAR_FORMAT and doc["format_version"] == 1
    assert set(doc["fingerprint"]) == set(S.FINGERPRINT_KEYS)
    assert doc["fingerprint"][S.FP_PROFILE] == PROFILE
    assert doc["fingerprint"][S.FP_ONNX_SHA256] == S.file_sha256(onnx_path)
    assert doc["source_onnx"] == "crowd.onnx"                      # relative to the engine
    assert doc["rebuild_command"] == ("python -m export.trt crowd.onnx --precision fp16 "
                                      "--min-batch 1 --opt-batch 8 --max-batch 8 --out crowd.engine")
    # the metadata keys are the contract's: the runtime builds its ModelInfo from them
    meta = S.sidecar_metadata(doc)
    assert all(k.startswith(C.META_PREFIX) for k in doc["metadata"])
    info = C.ModelInfo.from_metadata(meta)
    assert info.class_names == CROWD_CLASSES and info.preprocess == recipe(64)
    assert meta[C.META_PRECISION] == "fp16"


def test_round_trip_other_device_names_each_difference(tmp_path):
    engine, _ = build_engine_files(tmp_path)
    desktop = S.probe_device(trt_version="11.4.0", gpu=("NVIDIA H100 80GB HBM3", "9.0"), l4t="")
    desktop[S.FP_L4T] = None                                       # (b) not a Jetson
    with pytest.raises(FingerprintMismatch) as e:
        check_engine(engine, current=desktop)
    msg = str(e.value)
    assert "TensorRT version: engine built with 10.3.0, here 11.4.0" in msg
    assert "GPU: engine built with Orin, here NVIDIA H100 80GB HBM3" in msg
    assert "GPU compute capability: engine built with 8.7, here 9.0" in msg
    assert "L4T (Jetson Linux) release: engine built with 36.4.0, here unknown (not a Jetson)" in msg
    assert len(e.value.differences) == 4
    assert e.value.command in msg and "python -m export.trt crowd.onnx --precision fp16" in msg
    assert f"cd {tmp_path}" in msg
    # another Jetson release only: exactly one difference
    with pytest.raises(FingerprintMismatch) as e:
        check_engine(engine, current=dict(ORIN, l4t="36.3.0"))
    assert e.value.differences == ["L4T (Jetson Linux) release: engine built with 36.4.0, "
                                   "here 36.3.0"]
    # this CPU machine: unknown TensorRT / GPU are differences, never a pass
    with pytest.raises(FingerprintMismatch, match="here unknown \\(no CUDA GPU detected\\)"):
        check_engine(engine, current={k: None for k in S.DEVICE_KEYS})


def test_round_trip_rebuild_command_keeps_dla_and_reparses(tmp_path):
    engine, _ = build_engine_files(tmp_path, precision="int8", dla=1)
    doc = S.read_sidecar(engine)
    assert doc["fingerprint"][S.FP_DLA_CORE] == 1
    from export.trt import build_parser

    argv = shlex.split(doc["rebuild_command"])[3:]
    a = build_parser().parse_args(argv)
    assert (a.source, a.precision, a.dla, a.min_batch, a.opt_batch, a.max_batch, a.out) == \
        ("crowd.onnx", "int8", 1, 1, 8, 8, "crowd.engine")


def test_round_trip_onnx_changed_since_build(tmp_path):
    engine, onnx_path = build_engine_files(tmp_path)
    crowd_onnx(onnx_path, precision="fp32")                         # (c) re-exported: new bytes
    with pytest.raises(FingerprintMismatch) as e:
        check_engine(engine, current=ORIN)                          # found via source_onnx
    assert e.value.differences[0].startswith("source ONNX sha256: engine built from ")
    assert "python -m export.trt crowd.onnx" in str(e.value)
    assert check_engine(engine, current=ORIN, onnx_path=None)       # explicitly skipped
    other = tmp_path / "other.onnx"
    other.write_bytes(b"x")
    with pytest.raises(FingerprintMismatch, match="other.onnx is now"):
        check_engine(engine, current=ORIN, onnx_path=other)
    with pytest.raises(FingerprintMismatch, match="absent.onnx not found"):
        check_engine(engine, current=ORIN, onnx_path=tmp_path / "absent.onnx")
    onnx_path.unlink()                                              # engine deployed alone: fine
    assert check_engine(engine, current=ORIN)
    with pytest.raises(FingerprintMismatch, match="not beside the engine"):
        check_engine(engine, current=dict(ORIN, tensorrt_version="8.6.2"))


def test_round_trip_missing_or_corrupt_sidecar(tmp_path):
    engine, _ = build_engine_files(tmp_path)
    side = S.sidecar_path(engine)
    good = side.read_text()
    for text, needle in [("{not json", "not readable JSON"),
                         ("[1, 2]", "not an edge-students engine sidecar"),
                         (json.dumps({"format_version": 1, "fingerprint": {}, "metadata": {}}),
                          "not an edge-students engine sidecar"),
                         (good.replace('"format_version": 1', '"format_version": 7'), "newer"),
                         (json.dumps({**json.loads(good), "fingerprint": None}), "'fingerprint'"),
                         (json.dumps({**json.loads(good), "metadata": {"x": "1"}}), "lacks")]:
        side.write_text(text)
        with pytest.raises(SidecarError, match=needle):               # (d)
            doc = check_engine(engine, current=ORIN)
            S.sidecar_metadata(doc)
    side.unlink()
    with pytest.raises(SidecarError, match="sidecar not found: .*crowd.engine.json"):
        check_engine(engine, current=ORIN)


def test_sidecar_carries_the_decision_and_its_background(tmp_path):
    """An engine built from the built-in ONNX keeps its decision rule, background included."""
    onnx = pytest.importorskip("onnx")
    from pathlib import Path

    src = Path(C.__file__).resolve().parent / "models" / "crowd_fcn.onnx"
    props = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
    want = C.ModelInfo.from_metadata(C.decode_metadata(props)).decision
    assert want.background is not None
    engine = tmp_path / "crowd.engine"
    fp = S.make_fingerprint(device=ORIN, precision="fp16", profile=PROFILE, onnx_path=src)
    S.write_sidecar(engine, props, fp, source_onnx=src, rebuild_command="python -m export.trt crowd_fcn.onnx")
    doc = json.loads(S.sidecar_path(engine).read_text())
    assert C.ModelInfo.from_metadata(S.sidecar_metadata(doc)).decision == want


def test_writer_validates_schema_and_contract(tmp_path):
    engine = tmp_path / "m.engine"
    onnx_path = crowd_onnx(tmp_path / "m.onnx")
    fp = S.make_fingerprint(device=ORIN, precision="fp32", profile=PROFILE, onnx_path=onnx_path)
    meta = C.encode_metadata({C.META_CLASS_NAMES: ["a"], C.META_INPUT_SIZE: [8, 8],
                              C.META_IN_CHANNELS: 3, C.META_ARCH: "x",
                              C.META_PREPROCESS: recipe(8).to_dict()})
    kw = dict(source_onnx=onnx_path, rebuild_command="python -m export.trt m.onnx")
    with pytest.raises(ValueError, match="unknown \\['gpu'\\]"):
        S.write_sidecar(engine, meta, {**fp, "gpu": "x"}, **kw)
    with pytest.raises(ValueError, match="missing \\['dla_core'\\]"):
        S.write_sidecar(engine, meta, {k: v for k, v in fp.items() if k != S.FP_DLA_CORE}, **kw)
    with pytest.raises(ValueError, match=C.META_CLASS_NAMES):     # contract keys required
        S.write_sidecar(engine, {"class_names": "[]"}, fp, **kw)
    with pytest.raises(ValueError, match="rebuild_command"):
        S.write_sidecar(engine, meta, fp, source_onnx=onnx_path, rebuild_command="")
    with pytest.raises(ValueError, match="precision"):
        S.make_fingerprint(device=ORIN, precision="bf16", profile=PROFILE, onnx_path=onnx_path)
    S.write_sidecar(engine, {**meta, "producer": "not ours"}, fp, **kw)
    assert set(S.read_sidecar(engine)["metadata"]) == set(meta)   # only contract keys kept


# ------------------------------------------------------------------------- compare, probes
def test_compare_rules():
    built = dict(ORIN, precision="fp16")
    assert compare(built, ORIN) == []
    assert compare(built, dict(ORIN, gpu_name="  orin ")) == []     # case/space-insensitive name
    assert compare(dict(ORIN, l4t=None), dict(ORIN, l4t=None)) == []   # desktop vs desktop
    diffs = compare(dict(ORIN, l4t=None), ORIN)                        # desktop engine on a Jetson
    assert diffs == ["L4T (Jetson Linux) release: engine built with n/a, here 36.4.0"]
    assert compare(built, dict(ORIN, tensorrt_version=None)) == [
        "TensorRT version: engine built with 10.3.0, here unknown (tensorrt not importable)"]
    assert compare({S.FP_PROFILE: PROFILE}, {S.FP_PROFILE: dict(PROFILE, max=[16, 3, 64, 64])},
                   [S.FP_PROFILE]) == ["optimisation profile: engine built with min 1x3x64x64, "
                                       "opt 8x3x64x64, max 8x3x64x64, here min 1x3x64x64, "
                                       "opt 8x3x64x64, max 16x3x64x64"]


def test_tegra_release_parsing_and_jetpack(tmp_path):
    text = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    assert D.parse_tegra_release(text) == "36.4.3"
    assert D.parse_tegra_release("# R32 (release), REVISION: 7, GCID") == "32.7.0"
    assert D.parse_tegra_release("Ubuntu 22.04") is None
    assert D.jetpack_for_l4t("36.4.3") == "6.2" and D.jetpack_for_l4t("35.2.1") == "5.1"
    assert D.jetpack_for_l4t("38.2.0") == "7.x" and D.jetpack_for_l4t(None) is None
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(text)
    assert D.read_l4t(str(rel)) == "36.4.3"
    assert D.read_l4t(str(tmp_path / "absent")) is None
    here = S.probe_device()      # on this machine: whatever is found, None otherwise, not guesses
    assert set(here) == {S.FP_TRT_VERSION, S.FP_GPU_NAME, S.FP_COMPUTE_CAPABILITY, S.FP_L4T,
                         S.FP_JETPACK}


def test_one_gpu_probe_on_both_sides(monkeypatch):
    """Writer (export.trt) and reader (edge.sidecar.check_engine) take GPU identity from
    edge.device.probe_gpu, so the strict name comparison cannot see two spellings."""
    import export.trt as export_trt

    calls = []
    monkeypatch.setattr(D, "probe_gpu", lambda device=0: calls.append(device) or ("Orin", "8.7"))
    assert S.probe_device(trt_version="10.3.0", l4t="36.4.0") == ORIN
    fake_trt = SimpleNamespace(__version__="10.3.0")
    monkeypatch.setattr("export.trt_build.import_tensorrt", lambda: fake_trt)
    assert export_trt.probe_tensorrt() == (fake_trt, ("Orin", "8.7"))
    assert len(calls) == 2


# ------------------------------------------------------------------------- the runtime
def test_trt_backend_checks_fingerprint_before_touching_tensorrt(tmp_path, monkeypatch):
    """Our ordering logic only: a mismatch raises before TensorRT is imported or the plan read."""
    from edge.backends import open_backend
    from edge.backends import trt as trt_backend

    def no_trt():
        raise AssertionError("TensorRT must not be touched before the fingerprint check")

    engine, _ = build_engine_files(tmp_path)
    monkeypatch.setattr(trt_backend, "import_tensorrt", no_trt)
    monkeypatch.setattr(S, "probe_device", lambda: dict(ORIN, tensorrt_version="8.5.2"))
    with pytest.raises(FingerprintMismatch, match="(?s)8.5.2.*python -m export.trt crowd.onnx"):
        open_backend(engine, "auto")
    with pytest.raises(ValueError, match="TensorRT engine"):
        open_backend(engine, "ort-cpu")
    monkeypatch.setattr(S, "probe_device", lambda: dict(ORIN))     # matches: only now TensorRT
    with pytest.raises(AssertionError, match="before the fingerprint check"):
        open_backend(engine, "trt")


def test_run_cli_reports_mismatch_exit_2(tmp_path, capsys):
    from edge import run as edge_run

    engine, _ = build_engine_files(tmp_path)   # this machine is no Orin with TensorRT 10.3
    assert edge_run.main(["--model", str(engine), "--source", "synthetic://64x64?frames=1"]) == 2
    err = capsys.readouterr().err
    assert "does not match this device" in err and "rebuild it on this device" in err
    assert "python -m export.trt crowd.onnx --precision fp16" in err


@pytest.mark.trt
def test_trt_backend_runs_a_real_engine():
    pytest.importorskip("tensorrt", reason="TensorRT not installed (needs an NVIDIA GPU)")
    import os

    path = os.environ.get("EDGE_TEST_ENGINE")
    if not path:
        pytest.skip("set EDGE_TEST_ENGINE to an engine built by `python -m export.trt` on this GPU")
    import numpy as np

    from edge.backends import open_backend

    b = open_backend(path, "trt")
    c, (h, w) = b.info.preprocess.channels, b.info.preprocess.size
    out = b(np.zeros((b.min_batch, c, h, w), np.float32))
    assert out.shape == (b.min_batch, len(b.info.class_names)) and np.isfinite(out).all()
    assert set(b.last_timing) == {"h2d_ms", "compute_ms", "d2h_ms"}
    b.close()
