"""TensorRT glue without a GPU (version dispatch, flags, profiles, DLA, fingerprints, sidecars,
the exit-3 path), plus `trt`-marked tests that build and run a real engine where TensorRT is."""
import json
import subprocess
import sys

import numpy as np
import pytest

from edge import device as D
from edge import sidecar as S
from export import EXIT_NO_TRT
from export.fingerprint import build_fingerprint, rebuild_reasons, write_engine_sidecar
from export.trt_build import dla_allowed, plan_build, profile_shapes, version_tuple

# enum names as each TensorRT line exposes them (docs/tensorrt.md)
FLAGS_8 = {"FP16", "INT8", "TF32", "GPU_FALLBACK", "STRICT_TYPES"}
NET_8_5 = {"EXPLICIT_BATCH", "EXPLICIT_PRECISION"}
NET_8_6 = {"EXPLICIT_BATCH", "EXPLICIT_PRECISION", "STRONGLY_TYPED"}  # 8.6 lacks it in fact;
FLAGS_10 = {"FP16", "INT8", "TF32", "GPU_FALLBACK", "BF16", "FP8"}    # harmless superset here
NET_10 = {"EXPLICIT_BATCH", "STRONGLY_TYPED"}
FLAGS_11 = {"TF32", "GPU_FALLBACK", "REFIT", "DEBUG"}                 # FP16/INT8 removed
NET_11 = {"STRONGLY_TYPED"}


def test_version_tuple():
    assert version_tuple("8.5.2.2") == (8, 5, 2)
    assert version_tuple("11.4.0.106") == (11, 4, 0)
    assert version_tuple("10") == (10, 0, 0)
    with pytest.raises(ValueError):
        version_tuple("abc")


@pytest.mark.parametrize("ver,flags,net,precision,expect", [
    ("8.5.2", FLAGS_8, NET_8_5, "fp32", ("fp32", (), ("TF32",), ("EXPLICIT_BATCH",))),
    ("8.5.2", FLAGS_8, NET_8_5, "fp16", ("fp32", ("FP16",), (), ("EXPLICIT_BATCH",))),
    ("8.5.2", FLAGS_8, NET_8_5, "int8", ("int8", ("INT8", "FP16"), (), ("EXPLICIT_BATCH",))),
    ("10.3.0", FLAGS_10, NET_10, "fp16", ("fp32", ("FP16",), (), ())),     # no EXPLICIT_BATCH
    ("10.3.0", FLAGS_10, NET_10, "int8", ("int8", ("INT8", "FP16"), (), ())),
    ("11.4.0", FLAGS_11, NET_11, "fp32", ("fp32", (), ("TF32",), ())),
    ("11.4.0", FLAGS_11, NET_11, "fp16", ("fp16", (), (), ())),             # mixed ONNX
    ("11.4.0", FLAGS_11, NET_11, "int8", ("int8", (), (), ())),             # Q/DQ, strongly typed
    # a 10.x build without the FP16 flag (hypothetical): fp16 ONNX, STRONGLY_TYPED set
    ("10.14.0", {"TF32"}, NET_10, "fp16", ("fp16", (), (), ("STRONGLY_TYPED",))),
])
def test_plan_per_version(ver, flags, net, precision, expect):
    p = plan_build(precision, ver, flags, net)
    assert (p.onnx_kind, p.builder_flags, p.clear_flags, p.network_flags) == expect
    assert precision in p.describe()


def test_plan_rejects_unknown_precision():
    with pytest.raises(ValueError, match="fp32"):
        plan_build("bf16", "10.3", FLAGS_10, NET_10)


def test_profile_shapes():
    assert profile_shapes((3, 128, 128), 1, 4, 8) == {
        "min": [1, 3, 128, 128], "opt": [4, 3, 128, 128], "max": [8, 3, 128, 128]}
    for bad in ((0, 1, 1), (2, 1, 4), (1, 8, 4)):
        with pytest.raises(ValueError, match="min-batch"):
            profile_shapes((3, 32, 32), *bad)


@pytest.mark.parametrize("ver,cores,core,prec,ok,needle", [
    ("8.5.2", 2, 0, "fp16", True, "GPU fallback"),
    ("10.3.0", 2, 1, "int8", True, "DLA core 1"),
    ("10.3.0", 0, 0, "fp16", False, "no DLA"),
    ("11.1.0", 2, 0, "fp16", False, "11.0-11.3"),
    ("10.2.0", 2, 0, "fp16", False, "10.2.0"),
    ("10.3.0", 2, 2, "fp16", False, "does not exist"),
    ("10.3.0", 2, 0, "fp32", False, "fp16 or int8"),
])
def test_dla_gate(ver, cores, core, prec, ok, needle):
    got, why = dla_allowed(ver, cores, core, prec)
    assert got is ok and needle in why


# ------------------------------------------------------------------------- Jetson, fingerprint
ORIN = {"gpu": ("Orin", "8.7"), "trt_version": "10.3.0", "l4t": "36.4.0"}


def make_fp(tmp_path, **device):
    onnx_path = tmp_path / "m.onnx"
    if not onnx_path.exists():
        onnx_path.write_bytes(b"onnx bytes")
    dev = S.probe_device(**{**ORIN, **device})
    return build_fingerprint(precision="fp16", profile=profile_shapes((3, 64, 64), 1, 8, 8),
                             onnx_path=onnx_path, device=dev)


def test_fingerprint_contents(tmp_path):
    fp = make_fp(tmp_path)
    assert fp[S.FP_TRT_VERSION] == "10.3.0" and fp[S.FP_GPU_NAME] == "Orin"
    assert fp[S.FP_COMPUTE_CAPABILITY] == "8.7" and fp[S.FP_L4T] == "36.4.0"
    assert fp[S.FP_JETPACK] == "6.1" and fp[S.FP_DLA_CORE] is None
    assert fp[S.FP_PROFILE]["max"] == [8, 3, 64, 64] and len(fp[S.FP_ONNX_SHA256]) == 64
    assert set(fp) == set(S.FINGERPRINT_KEYS)


def test_fingerprint_comparison_names_differences(tmp_path):
    built = make_fp(tmp_path)
    assert S.compare(built, S.probe_device(**ORIN)) == []
    here = S.probe_device(gpu=("Xavier", "7.2"), trt_version="8.5.2", l4t="35.4.1")
    diffs = S.compare(built, here)
    text = "\n".join(diffs)
    assert "TensorRT version: engine built with 10.3.0, here 8.5.2" in text
    assert "GPU compute capability: engine built with 8.7, here 7.2" in text
    assert "L4T (Jetson Linux) release" in text and len(diffs) == 4
    msg = S.mismatch_message("m.engine", diffs, "python -m export.trt m.onnx")
    assert "rebuild it on this device" in msg and "python -m export.trt m.onnx" in msg


def test_sidecar_round_trip_and_rebuild_reasons(tmp_path):
    import onnx
    from onnx import helper

    from edge import contract as C

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", 1, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", 1, ["batch", 3, 8, 8])])
    model = helper.make_model(graph)
    meta = {C.META_CLASS_NAMES: ["a", "b"], C.META_INPUT_SIZE: [8, 8], C.META_IN_CHANNELS: 3,
            C.META_PREPROCESS: C.Preprocess((8, 8), (0.5,) * 3, (0.2,) * 3).to_dict(),
            C.META_ARCH: "x"}
    for k, v in C.encode_metadata(meta).items():
        model.metadata_props.add(key=k, value=v)
    model.metadata_props.add(key="other_tool.note", value="dropped")
    onnx_path = tmp_path / "m.onnx"
    onnx.save(model, str(onnx_path))
    fp = make_fp(tmp_path)       # overwrites nothing: m.onnx exists, its hash is taken
    engine = tmp_path / "out" / "m.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"plan")
    side = write_engine_sidecar(engine, onnx_path, fp,
                                rebuild_command="python -m export.trt ../m.onnx --out m.engine")
    assert side.name == "m.engine.json"
    doc = S.read_sidecar(engine)
    assert doc["fingerprint"] == json.loads(json.dumps(fp))
    assert doc["source_onnx"] == "../m.onnx"                 # relative to the engine's folder
    assert S.sidecar_metadata(doc)[C.META_CLASS_NAMES] == ["a", "b"]
    assert "other_tool.note" not in doc["metadata"]
    assert S.check_engine(engine, current=S.probe_device(**ORIN)) == doc   # sha256 checked too
    assert rebuild_reasons(engine, fp, S.probe_device(**ORIN)) == []
    reasons = rebuild_reasons(engine, {**fp, S.FP_PRECISION: "int8"}, S.probe_device(**ORIN))
    assert reasons == ["precision: engine built with fp16, here int8"]
    side.write_text("{broken")
    assert "not readable JSON" in rebuild_reasons(engine, fp, S.probe_device(**ORIN))[0]
    side.unlink()
    with pytest.raises(S.SidecarError, match="not found"):
        S.read_sidecar(engine)


def test_rebuild_command_from_the_cli_flags(tmp_path):
    from export.trt import build_parser, target_command

    onnx_path = tmp_path / "model.int8.onnx"
    a = ["--precision", "int8", "--min-batch", "2", "--max-batch", "16", "--dla", "0",
         "--input-size", "240", "320", "--workspace-mb", "2048"]
    args = build_parser().parse_args([str(onnx_path), *a, "--output", str(tmp_path / "e" / "x.engine")])
    cmd = target_command(args, onnx_path, tmp_path / "e" / "x.engine")
    assert cmd == ("python -m export.trt ../model.int8.onnx --precision int8 --min-batch 2 "
                   "--opt-batch 16 --max-batch 16 --input-size 240 320 --dla 0 "
                   "--workspace-mb 2048 --out x.engine")
    assert target_command(args, onnx_path).startswith(f"python -m export.trt {onnx_path} --precision int8")
    # TensorRT 11 fp16: the engine parses model.fp16.onnx, a rebuild starts from the fp32 ONNX
    assert " ../model.onnx " in target_command(args, tmp_path / "model.onnx", tmp_path / "e" / "x.engine")


def test_tegra_release_parsing(tmp_path):
    text = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: x"
    assert D.parse_tegra_release(text) == "35.4.1"
    assert D.jetpack_for_l4t("35.4.1") == "5.1.2"
    f = tmp_path / "nv_tegra_release"
    f.write_text(text)
    assert D.read_l4t(str(f)) == "35.4.1"


def test_edge_sidecar_is_torch_free():
    code = ("import sys, edge.sidecar, edge.contract; "
            "assert 'torch' not in sys.modules and 'export' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------- CLI without TensorRT
no_trt = pytest.mark.skipif(D.tensorrt_version() is not None and D.probe_gpu() is not None,
                            reason="TensorRT and a GPU are present: the exit-3 path is not taken")


@no_trt
def test_trt_cli_from_pt_writes_onnx_and_exits_3(digits_ckpt, tmp_path, capsys):
    import shutil

    from export.trt import main

    pt = tmp_path / "model.pt"
    shutil.copy(digits_ckpt, pt)
    assert main([str(pt), "--precision", "int8", "--max-batch", "8", "--calib-size", "128",
                 "--check-size", "16"]) == EXIT_NO_TRT
    out, err = capsys.readouterr()
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.int8.onnx").is_file()
    assert "INT8 Q/DQ vs fp32" in out and "TensorRT is not available here" in err
    cmd = f"python -m export.trt {tmp_path / 'model.int8.onnx'} --precision int8"
    assert cmd in err and "--max-batch 8" in err
    assert not (tmp_path / "model.engine").exists()


@no_trt
def test_trt_cli_from_onnx_is_torch_free_and_exits_3(digits_ckpt, tmp_path):
    from export.onnx import export_onnx

    onnx_path = export_onnx(digits_ckpt, tmp_path / "model.onnx", check_size=4).onnx_path
    code = ("import sys; from export.trt import main; "
            f"rc = main([{str(onnx_path)!r}, '--precision', 'fp16', '--max-batch', '8']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == EXIT_NO_TRT, r.stderr
    assert f"python -m export.trt {onnx_path} --precision fp16" in r.stderr


def test_trt_cli_bad_inputs(tmp_path, capsys):
    from export.trt import main

    assert main([str(tmp_path / "absent.onnx")]) == 2
    (tmp_path / "x.txt").write_text("hi")
    assert main([str(tmp_path / "x.txt")]) == 2
    (tmp_path / "g.onnx").write_bytes(b"\x00garbage")
    assert main([str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "expected a .pt" in err and "not a readable ONNX" in err


def test_trt_int8_from_fp32_onnx_needs_calibration_data(digits_ckpt, tmp_path, capsys):
    from export.onnx import export_onnx
    from export.trt import main

    onnx_path = export_onnx(digits_ckpt, tmp_path / "model.onnx", check_size=4).onnx_path
    assert main([str(onnx_path), "--precision", "int8"]) == 2
    assert "--calib-data" in capsys.readouterr().err


# ------------------------------------------------------------------------- real TensorRT
@pytest.mark.trt
def test_real_engine_build_and_parity(digits_ckpt, tmp_path):
    """Builds real engines (fp32, fp16, int8) and checks them against ONNX Runtime fp32."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if D.probe_gpu() is None:
        pytest.skip("no CUDA GPU visible")
    import shutil

    from export.trt import main

    pt = tmp_path / "model.pt"
    shutil.copy(digits_ckpt, pt)
    for precision in ("fp32", "fp16", "int8"):
        rc = main([str(pt), "--precision", precision, "--max-batch", "8", "--opt-batch", "4",
                   "--calib-size", "256", "--check-size", "64",
                   "--out", str(tmp_path / f"model.{precision}.engine")])
        assert rc == 0, precision
        doc = S.read_sidecar(tmp_path / f"model.{precision}.engine")
        assert doc["fingerprint"][S.FP_PRECISION] == precision
        assert doc["fingerprint"][S.FP_PROFILE]["max"][0] == 8
        assert S.check_engine(tmp_path / f"model.{precision}.engine") == doc   # the runtime's check
    assert (tmp_path / "model.timing.cache").is_file()
