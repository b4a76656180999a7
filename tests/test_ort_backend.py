"""ONNX Runtime backend on CPU: the torch-free ONNX reader, the TensorRT provider's options per
onnxruntime and per model, the precision a session runs at, and that a provider ONNX Runtime
drops or does not run on is never reported as running (docs/tensorrt.md, "ONNX Runtime")."""
from __future__ import annotations

import types
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge import contract as C
from edge import onnx_wire
from edge.backends import open_backend
from edge.backends.ort import (PROVIDERS, TRT_OPTION_SINCE, OrtBackend, placement_verdict,
                               providers_in_profile, resolve_precision, trt_option_names,
                               trt_options)

TRT, CUDA, CPU = (PROVIDERS[b] for b in ("ort-trt", "ort-cuda", "ort-cpu"))


def tiny_onnx(path, qdq=False, precision="fp32"):
    """input [N,3,4,4] -> logits [N,2] (optionally through Q/DQ), with the contract's metadata."""
    w = np.random.default_rng(0).standard_normal((48, 2)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    nodes = [helper.make_node("Flatten", ["input"], ["flat"])]
    src = "flat"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["flat", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        src = "dq"
    nodes.append(helper.make_node("MatMul", [src, "w"], ["logits"]))
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {C.META_CLASS_NAMES: ["crowd", "no_crowd"], C.META_INPUT_SIZE: [4, 4], C.META_IN_CHANNELS: 3,
            C.META_PREPROCESS: C.Preprocess((4, 4), (0.5,) * 3, (0.2,) * 3).to_dict(),
            C.META_ARCH: "linear", C.META_PRECISION: precision}
    for k, v in C.encode_metadata(meta).items():
        model.metadata_props.add(key=k, value=v)
    model.metadata_props.add(key="other.tool", value="ünïcode ✓")
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------- ONNX reader
@pytest.mark.parametrize("qdq", [False, True])
def test_wire_reader_matches_the_onnx_package(tmp_path, qdq):
    path = tiny_onnx(tmp_path / "m.onnx", qdq=qdq)
    model = onnx.load(str(path))
    assert onnx_wire.model_metadata(path) == {p.key: p.value for p in model.metadata_props}
    assert onnx_wire.op_types(path) == {n.op_type for n in model.graph.node}
    assert onnx_wire.is_qdq(path) is qdq


def test_wire_reader_refuses_what_is_not_onnx(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    for name in ("cut.onnx", "empty.onnx", "junk.onnx"):
        with pytest.raises(ValueError, match="not|empty"):
            onnx_wire.model_metadata(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        onnx_wire.model_metadata(tmp_path / "absent.onnx")


# ------------------------------------------------------------------------- TensorRT options
def test_trt_option_names_of_the_installed_onnxruntime():
    known, how = trt_option_names(ort)
    if "providers_tensorrt" in how:       # onnxruntime-gpu: read from its provider library
        assert "trt_fp16_enable" in known
    else:                                 # CPU package: from the release table
        assert str(ort.__version__) in how
        have = tuple(int(p) for p in ort.__version__.split(".")[:2])
        assert known == {n for n, v in TRT_OPTION_SINCE.items() if have >= v}
    old = types.SimpleNamespace(__version__="1.16.3", __file__=ort.__file__.replace("onnxruntime/", "nowhere/"))
    known_old, _ = trt_option_names(old)
    assert "trt_timing_cache_path" not in known_old and "trt_fp16_enable" in known_old


def test_trt_option_names_read_from_the_provider_library(tmp_path):
    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    # the option parser's strings as a compiler lays them out: NUL-terminated, tail-merged
    (capi / "libonnxruntime_providers_tensorrt.so").write_bytes(
        b"\x7fELF\0junk\0trt_fp16_enable\0xtrt_int8_enable\0trt_engine_cache_path_x\0")
    fake = types.SimpleNamespace(__version__="1.99.0", __file__=str(tmp_path / "onnxruntime" / "__init__.py"))
    known, how = trt_option_names(fake)
    assert known == {"trt_fp16_enable", "trt_int8_enable"} and "providers_tensorrt" in how


def test_trt_options_per_model_and_tensorrt(tmp_path):
    every = frozenset(TRT_OPTION_SINCE)
    opts, dropped = trt_options(tmp_path, "int8", True, every, 10)
    assert opts["trt_int8_enable"] and opts["trt_fp16_enable"] and not dropped
    opts, _ = trt_options(tmp_path, "int8", True, every, None)    # unknown TensorRT: <= 10
    assert opts["trt_int8_enable"]
    opts, _ = trt_options(tmp_path, "int8", True, every, 11)      # no INT8 flag on 11
    assert "trt_int8_enable" not in opts
    opts, _ = trt_options(tmp_path, "fp32", False, every, 10)
    assert opts["trt_fp16_enable"] is False and "trt_int8_enable" not in opts
    assert opts["trt_engine_cache_path"] == str(tmp_path)
    prof = {"min": [1, 3, 4, 4], "opt": [8, 3, 4, 4], "max": [32, 3, 4, 4]}
    opts, _ = trt_options(tmp_path, "fp16", False, every, 10, prof)
    assert opts["trt_profile_min_shapes"] == "input:1x3x4x4"
    assert opts["trt_profile_max_shapes"] == "input:32x3x4x4"
    old = every - {"trt_timing_cache_path"}
    opts, dropped = trt_options(tmp_path, "fp16", False, old, 10)
    assert "trt_timing_cache_path" not in opts and dropped == ["trt_timing_cache_path"]
    with pytest.raises(RuntimeError, match="trt_int8_enable"):
        trt_options(tmp_path, "int8", True, every - {"trt_int8_enable"}, 10)


@pytest.mark.parametrize("requested,model,qdq,first,want", [
    (None, "fp32", False, CPU, "fp32"), (None, "fp32", True, CPU, "int8"),
    ("fp16", "fp32", False, TRT, "fp16"), ("fp16", "fp16", False, CUDA, "fp16"),
    ("int8", "int8", True, TRT, "int8"),
    ("fp16", "fp32", False, CUDA, "needs the TensorRT provider"),
    ("fp16", "fp32", False, CPU, "needs the TensorRT provider"),
    ("int8", "fp32", False, TRT, "Q/DQ"), ("fp32", "int8", True, TRT, "this ONNX is int8"),
])
def test_resolve_precision(requested, model, qdq, first, want):
    if want in C.PRECISIONS:
        assert resolve_precision(requested, model, qdq, first) == want
    else:
        with pytest.raises(ValueError, match=want):
            resolve_precision(requested, model, qdq, first)


def test_precision_flag_reaches_the_backend_and_the_clis(tmp_path, capsys):
    from edge import bench, run

    path = tiny_onnx(tmp_path / "m.onnx")
    b = open_backend(path, "ort-cpu", threads=1)
    assert b.precision == "fp32" and b.describe()["precision"] == "fp32"
    assert open_backend(tiny_onnx(tmp_path / "q.onnx", qdq=True, precision="int8"), "auto",
                        threads=1).precision == "int8"
    with pytest.raises(ValueError, match="ort-trt"):
        open_backend(path, "ort-cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        open_backend(path, "ort-cpu", precision="bf16")
    assert run.main(["--model", str(path), "--source", "synthetic://8x8?frames=1",
                     "--backend", "ort-cpu", "--precision", "fp16"]) == 2
    assert bench.main(["--model", str(path), "--backend", "ort-cpu", "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "ort-trt" in err[0] and "Q/DQ" in err[1]


# ------------------------------------------------------------------------- what ran
def real_profile(tmp_path):
    """The profile ONNX Runtime itself writes for one run of a model on the CPU provider."""
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "p")
    s = ort.InferenceSession(str(tiny_onnx(tmp_path / "m.onnx")), opts, providers=[CPU])
    s.run(None, {"input": np.zeros((2, 3, 4, 4), np.float32)})
    return s.end_profiling()


def test_providers_in_a_real_profile(tmp_path):
    ran = providers_in_profile(real_profile(tmp_path))
    assert ran == {CPU: 2}                       # Flatten and MatMul
    assert placement_verdict(CPU, ran, True) == (CPU, None)
    with pytest.raises(RuntimeError, match="TensorRT engine build failed"):
        placement_verdict(TRT, ran, explicit=True)
    provider, warning = placement_verdict(TRT, ran, explicit=False)
    assert provider == CPU and "ran no node on TensorrtExecutionProvider" in warning
    assert placement_verdict(TRT, {TRT: 1, CPU: 3}, True) == (TRT, None)   # partial is fine


def test_a_provider_dropped_at_session_creation_is_never_reported(tmp_path, monkeypatch):
    """This onnxruntime has no CUDA provider; told that it has, it drops it while creating the
    session: explicit -> error, auto -> a warning and the provider that really runs."""
    path = tiny_onnx(tmp_path / "m.onnx")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)         # onnxruntime's own complaint
        with pytest.raises(RuntimeError, match="dropped CUDAExecutionProvider"):
            OrtBackend(path, "ort-cuda", threads=1)
        with pytest.warns(RuntimeWarning, match="dropped CUDAExecutionProvider"):
            b = OrtBackend(path, "ort-auto", threads=1)
    assert b.provider == CPU and b.name == "ort-cpu" and b.describe()["provider"] == CPU
    assert b(np.zeros((1, 3, 4, 4), np.float32)).shape == (1, 2)


@pytest.mark.parametrize("explicit", [True, False])
def test_first_run_profile_is_read_then_switched_off(tmp_path, monkeypatch, explicit):
    """A GPU provider kept by the session is checked once, from the first run's profile."""
    path = tiny_onnx(tmp_path / "m.onnx")
    b = OrtBackend(path, "ort-cpu", threads=1)
    assert b._profile_dir is None                            # nothing to verify on CPU
    # as if the session had kept a GPU provider that then ran nothing (the real profile)
    b.requested = b.provider = CUDA
    b.explicit = explicit
    prof = tmp_path / "prof"
    prof.mkdir()
    b._profile_dir = str(prof)
    monkeypatch.setattr(b, "session", _ProfiledSession(b.session, real_profile(tmp_path)))
    x = np.zeros((1, 3, 4, 4), np.float32)
    if explicit:
        with pytest.raises(RuntimeError, match="ran no node on CUDAExecutionProvider"):
            b(x)
    else:
        with pytest.warns(RuntimeWarning, match="ran no node on CUDAExecutionProvider"):
            b(x)
        assert b.provider == CPU and b.describe()["nodes_by_provider"] == {CPU: 2}
    assert b._profile_dir is None and not prof.exists()
    b.session.profile = None                                 # a second look would fail
    assert b(x).shape == (1, 2)                              # later runs: no more checks


class _ProfiledSession:
    def __init__(self, session, profile):
        self.session, self.profile = session, profile

    def run(self, *a):
        return self.session.run(*a)

    def end_profiling(self):
        return self.profile
