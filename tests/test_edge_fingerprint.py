"""Engine sidecar fingerprint: compared before TensorRT deserialises anything (contract 3)."""
from __future__ import annotations

import json

import pytest

from edge import fingerprint as fpmod
from edge.contract import encode_metadata
from edge.fingerprint import SidecarError, check_engine, compare

try:
    from edge_helpers import CROWD_CLASSES, recipe
except ImportError:
    from tests.edge_helpers import CROWD_CLASSES, recipe

BUILT = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
         "l4t": "36.4.0", "jetpack": "6.1/6.2", "precision": "fp16",
         "profile": {"min": 1, "opt": 8, "max": 32}, "onnx_sha256": None}


def _engine(tmp_path, fingerprint=BUILT, **extra):
    engine = tmp_path / "crowd.engine"
    engine.write_bytes(b"not a real plan")
    meta = encode_metadata({"edge_students.class_names": CROWD_CLASSES, "edge_students.input_size": [64, 64],
                            "edge_students.in_channels": 3, "edge_students.preprocess": recipe(64).to_dict(),
                            "edge_students.arch": "crowd_fcn"})
    (tmp_path / "crowd.engine.json").write_text(json.dumps(
        {"format_version": 1, "metadata": meta, "fingerprint": fingerprint, **extra}))
    return engine


def test_compare_names_each_difference():
    here = dict(BUILT, tensorrt_version="8.6.2", compute_capability="7.2", gpu_name="Xavier")
    diffs = compare(BUILT, here)
    assert len(diffs) == 3
    assert any("TensorRT version: engine built for 10.3.0, this device has 8.6.2" in d for d in diffs)
    assert compare(BUILT, dict(BUILT, gpu_name="  orin ")) == []       # case/space-insensitive name
    unknown = compare(BUILT, dict(BUILT, tensorrt_version=None))
    assert unknown and "unknown" in unknown[0]


def test_mismatching_sidecar_refused_with_rebuild_command(tmp_path):
    engine = _engine(tmp_path, source_onnx="crowd.onnx")
    here = dict(BUILT, tensorrt_version="11.4.0", gpu_name="NVIDIA H100", compute_capability="9.0", l4t=None)
    with pytest.raises(SidecarError) as e:
        check_engine(engine, actual=here)
    msg = str(e.value)
    assert "TensorRT version: engine built for 10.3.0, this device has 11.4.0" in msg
    assert "GPU compute capability: engine built for 8.7, this device has 9.0" in msg
    assert "L4T" in msg and "python -m export.trt crowd.onnx --output" in msg
    assert check_engine(engine, actual=BUILT)["fingerprint"] == BUILT


def test_onnx_hash_checked_when_given(tmp_path):
    onnx = tmp_path / "crowd.onnx"
    onnx.write_bytes(b"model v2")
    engine = _engine(tmp_path, dict(BUILT, onnx_sha256="0" * 64), rebuild_command="make engine")
    with pytest.raises(SidecarError, match="(?s)source ONNX sha256.*make engine"):
        check_engine(engine, actual=BUILT, onnx_path=onnx)


def test_missing_or_broken_sidecar(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"")
    with pytest.raises(SidecarError, match="not found"):
        check_engine(engine)
    (tmp_path / "x.engine.json").write_text("{not json")
    with pytest.raises(SidecarError, match="cannot read"):
        check_engine(engine)


def test_l4t_parsing(tmp_path):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    assert fpmod.l4t_release(str(rel)) == "36.4.3"
    assert fpmod.jetpack_for_l4t("36.4.3") == "6.1/6.2" and fpmod.jetpack_for_l4t("35.2.1") == "5.1"
    assert fpmod.l4t_release(str(tmp_path / "absent")) is None
    fp = fpmod.current_fingerprint()      # on this machine: no TensorRT, no Jetson -> None, not guesses
    assert set(fp) >= {"tensorrt_version", "gpu_name", "compute_capability", "l4t", "jetpack"}


def test_trt_backend_checks_fingerprint_before_touching_tensorrt(tmp_path, monkeypatch):
    """Our ordering logic only: a mismatch raises before TensorRT is imported or the plan read."""
    from edge.backends import open_backend
    from edge.backends import trt as trt_backend

    def no_trt():
        raise AssertionError("TensorRT must not be touched before the fingerprint check")

    monkeypatch.setattr(trt_backend, "_import_trt", no_trt)
    monkeypatch.setattr(trt_backend, "check_engine",
                        lambda p: check_engine(p, actual=dict(BUILT, tensorrt_version="8.5.2")))
    with pytest.raises(SidecarError, match="8.5.2"):
        open_backend(_engine(tmp_path), "auto")
    with pytest.raises(ValueError, match="TensorRT engine"):
        open_backend(_engine(tmp_path), "ort-cpu")


def test_run_cli_reports_mismatch_exit_2(tmp_path, capsys):
    from edge import run as edge_run

    engine = _engine(tmp_path)   # this machine has no TensorRT: 'unknown' is a difference
    assert edge_run.main(["--model", str(engine), "--source", "synthetic://64x64?frames=1"]) == 2
    err = capsys.readouterr().err
    assert "does not match this device" in err and "rebuild" in err


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
