"""Run inside a process where TensorRT's real bindings import (tests/trt_bindings.py sets it up):
check the project's TensorRT code against them and write the findings to WORKDIR/result.json.

    python tests/trt_bindings_probe.py WORKDIR [EXTRA_SOURCE.py ...]

The bindings' package is ``tensorrt_bindings``; it is registered as ``tensorrt`` so the project
imports it as on a device. The stand-in libraries make every Builder/Runtime creation fail the
way it does without a GPU, which is what the error-path checks rely on.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
from pathlib import Path

import tensorrt_bindings as trt

sys.modules["tensorrt"] = trt
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import trt_api_scan  # noqa: E402


def api(extra):
    return trt_api_scan.check(trt, trt_api_scan.scan(REPO, extra=[Path(p) for p in extra]))


def plans():
    from export.trt_build import enum_names, network_flag_bits, plan_build

    flags = enum_names(trt.BuilderFlag)
    net = enum_names(trt.NetworkDefinitionCreationFlag)
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        p = plan_build(precision, trt.__version__, flags, net)
        for name in p.builder_flags + p.clear_flags:
            getattr(trt.BuilderFlag, name)                      # each must be a real flag
        out[precision] = {"onnx_kind": p.onnx_kind, "builder_flags": list(p.builder_flags),
                          "clear_flags": list(p.clear_flags), "network_flags": list(p.network_flags),
                          "network_bits": network_flag_bits(trt, p.network_flags)}
    return out


def dtypes():
    """Our TensorRT -> numpy I/O dtype map against the bindings' own ``trt.nptype``."""
    import numpy as np

    from edge.backends.trt import _NP_DTYPES, _np_dtype

    out = {}
    for name in _NP_DTYPES:
        member = getattr(trt.DataType, name, None)
        if member is not None:
            out[name] = [str(_np_dtype(member)), str(np.dtype(trt.nptype(member)))]
    return out


def engine_files(work: Path):
    """An ONNX with the contract's metadata and an 'engine' whose sidecar matches this machine
    (this TensorRT, no GPU visible), so the runtime gets as far as creating its Runtime."""
    import onnx
    from onnx import TensorProto, helper

    from edge import contract as C
    from edge import sidecar as S

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {C.META_CLASS_NAMES: ["crowd", "no_crowd"], C.META_INPUT_SIZE: [8, 8], C.META_IN_CHANNELS: 3,
            C.META_PREPROCESS: C.Preprocess((8, 8), (0.5,) * 3, (0.2,) * 3).to_dict(),
            C.META_ARCH: "identity", C.META_OUTPUTS: ["logits"]}
    for k, v in C.encode_metadata(meta).items():
        model.metadata_props.add(key=k, value=v)
    onnx_path, engine = work / "m.onnx", work / "m.engine"
    onnx.save(model, str(onnx_path))
    engine.write_bytes(b"never read: the Runtime cannot be created")
    profile = {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [1, 3, 8, 8]}
    fp = S.make_fingerprint(device=S.probe_device(trt.__version__), precision="fp32",
                            profile=profile, onnx_path=onnx_path)
    S.write_sidecar(engine, C.encode_metadata(meta), fp, source_onnx=onnx_path,
                    rebuild_command="python -m export.trt m.onnx --out m.engine")
    return onnx_path, engine


def outcome(fn):
    """(return code or exception, stderr) of ``fn()``, tracebacks kept as text."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = fn()
        except BaseException as e:  # noqa: BLE001  record whatever escapes, as the user sees it
            return {"rc": None, "escaped": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(), "stderr": err.getvalue()}
    return {"rc": rc, "escaped": None, "traceback": None, "stderr": err.getvalue()}


def errors(work: Path):
    import edge.device
    from edge import adopt, bench, run
    from edge import sidecar as S
    from edge.backends.trt import TrtBackend
    from export import trt as export_trt

    onnx_path, engine = engine_files(work)
    res = {"backend": outcome(lambda: TrtBackend(engine)),
           "edge.run": outcome(lambda: run.main(["--model", str(engine),
                                                 "--source", "synthetic://32x32?frames=1"])),
           "edge.bench": outcome(lambda: bench.main(["--model", str(engine), "--pipeline-frames", "0"]))}
    built_elsewhere = work / "trtexec.engine"
    built_elsewhere.write_bytes(b"never read either")
    res["adopt"] = outcome(lambda: adopt.main([str(built_elsewhere), "--onnx", str(onnx_path),
                                               "--precision", "fp16"]))
    res["adopt"]["wrote"] = S.sidecar_path(built_elsewhere).exists()
    # the driver API sees a GPU but TensorRT cannot use it (e.g. a driver older than the CUDA
    # TensorRT was built with): the export gets as far as creating its Builder
    edge.device.probe_gpu = lambda device=0: ("stand-in GPU", "8.7")
    res["export.trt"] = outcome(lambda: export_trt.main([str(onnx_path), "--precision", "fp32",
                                                         "--check-size", "2"]))
    return res


def main(argv) -> int:
    work = Path(argv[0])
    result = {"version": trt.__version__,
              "enums": {"BuilderFlag": sorted(trt.BuilderFlag.__members__),
                        "NetworkDefinitionCreationFlag": sorted(trt.NetworkDefinitionCreationFlag.__members__)},
              "api": api(argv[1:]), "plans": plans(), "dtypes": dtypes(), "errors": errors(work)}
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
