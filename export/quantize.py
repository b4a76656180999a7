"""Reduced-precision ONNX for TensorRT, made and checked on the host (no GPU, no torch).

* INT8: static quantisation with ONNX Runtime's tools in QDQ format, the form TensorRT builds on
  every version from 8.5 to 11 (explicit quantisation; TRT 11 has no implicit INT8 calibration).
  Weights: int8, symmetric, per output channel (``per_channel=True``, ``WeightSymmetric``);
  activations: int8, symmetric (``ActivationSymmetric``: zero point 0, what TensorRT requires).
  ONNX Runtime quantises Conv/Gemm biases to int32 behind a DequantizeLinear; TensorRT's parser
  refuses that ("only activation types allowed as input to this layer", onnx/onnx-tensorrt#850,
  microsoft/onnxruntime#14229), so :func:`fold_int32_bias` turns them back into float
  initializers holding exactly the dequantised values (what ONNX Runtime computes anyway).
* FP16 (for TensorRT 11, which dropped the FP16 builder flag): a mixed-precision ONNX with fp16
  weights and compute and fp32 input/output, via onnxconverter-common's float16 converter.
"""
from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from edge import contract as C
from edge.files import file_sha256
from export.parity import TOLERANCES, accuracy, ort_run

CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIB_SIZE = 512
MAX_DROP_POINTS = 1.0        # a trained model may lose at most 1 accuracy point to INT8
MIN_AGREEMENT = TOLERANCES["int8"][1]


def _import_quantization():
    try:
        from onnxruntime import quantization as q
    except ImportError:
        raise ImportError("INT8 export needs onnxruntime's quantisation tools: "
                          "pip install 'edge-students[export]' (or pip install onnxruntime)") from None
    return q


def _retag(model, precision: str, parent_sha: str) -> None:
    """Copy-on-write of the contract metadata for a derived (fp16/int8) model."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update(C.encode_metadata({C.META_PRECISION: precision,
                                    C.META_SOURCE_ONNX_SHA256: parent_sha}))
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


# ------------------------------------------------------------------------- INT8
def fold_int32_bias(model) -> int:
    """Replace ``DequantizeLinear(int32 initializer)`` by its float value; returns how many."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    folded, keep = 0, []
    for node in model.graph.node:
        src = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if src is None or src.data_type != 6:   # TensorProto.INT32
            keep.append(node)
            continue
        q = numpy_helper.to_array(src).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
              if len(node.input) > 2 and node.input[2] else 0.0)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if np.ndim(scale) == 1 and q.ndim > 0:
            shape = [1] * q.ndim
            shape[axis if q.ndim > 1 else 0] = -1
            scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
        value = ((q - zp) * scale).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        folded += 1
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    alive = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(alive)
    return folded


def calibration_kwargs(quantize_static) -> Dict[str, Any]:
    """Calibrate on the CPU provider. The keyword exists from onnxruntime 1.21; before it (1.19.2
    is the last release for Python 3.8, JetPack 5.1) the calibrator always uses the CPU provider
    and the keyword is a TypeError (docs/tensorrt.md, "ONNX Runtime")."""
    if "calibration_providers" in inspect.signature(quantize_static).parameters:
        return {"calibration_providers": ["CPUExecutionProvider"]}
    return {}


class _Reader:
    """ONNX Runtime CalibrationDataReader over an in-memory float32 NCHW array."""

    def __init__(self, x: np.ndarray, batch: int) -> None:
        self.x, self.batch, self.i = x, batch, 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.i >= len(self.x):
            return None
        out = {C.INPUT_NAME: np.ascontiguousarray(self.x[self.i:self.i + self.batch])}
        self.i += self.batch
        return out

    def rewind(self) -> None:
        self.i = 0


def quantize_qdq(fp32_onnx, out, calib_x: np.ndarray, *, method: str = "minmax",
                 batch: int = 32) -> Path:
    """Write a TensorRT-ready Q/DQ INT8 ONNX calibrated on ``calib_x`` (float32 NCHW)."""
    import onnx

    if method not in CALIB_METHODS:
        raise ValueError(f"calibration method {method!r} not in {CALIB_METHODS}")
    if len(calib_x) == 0:
        raise ValueError("INT8 calibration needs at least one image")
    q = _import_quantization()
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "qdq.onnx"
        q.quantize_static(
            str(fp32_onnx), str(raw), _Reader(calib_x.astype(np.float32), batch),
            quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           # float weights -> Q -> DQ: the pattern every TRT (8.x+) parses
                           "AddQDQPairToWeight": True},
            **calibration_kwargs(q.quantize_static))
        model = onnx.load(str(raw))
    fold_int32_bias(model)
    _retag(model, "int8", file_sha256(fp32_onnx))
    return _save_checked(model, out)


def _save_checked(model, out) -> Path:
    """Check, write to a temporary sibling, rename: ``out`` is the old file or the new one."""
    import onnx

    from export.checks import Staged

    onnx.checker.check_model(model, full_check=True)
    with Staged(out) as stage:
        onnx.save(model, str(stage.tmp))
        onnx.checker.check_model(str(stage.tmp))          # what is on disk, not what was meant
        return stage.commit()


def is_qdq(onnx_path) -> bool:
    """Whether the ONNX is explicitly quantised (the runtime's own reader, edge/onnx_wire.py)."""
    from edge.onnx_wire import is_qdq as wire_is_qdq

    return wire_is_qdq(onnx_path)


@dataclass
class Int8Report:
    n: int
    fp32_acc: Optional[float]
    int8_acc: Optional[float]
    agreement: float
    source: str

    @property
    def drop_points(self) -> Optional[float]:
        if self.fp32_acc is None or self.int8_acc is None:
            return None
        return 100.0 * (self.fp32_acc - self.int8_acc)

    @property
    def passed(self) -> bool:
        drop_ok = self.drop_points is None or self.drop_points <= MAX_DROP_POINTS
        return drop_ok and self.agreement >= MIN_AGREEMENT

    def format(self) -> str:
        acc = ("accuracy n/a (no labels)" if self.fp32_acc is None else
               f"accuracy fp32 {100 * self.fp32_acc:.2f}% -> int8 {100 * self.int8_acc:.2f}% "
               f"(drop {self.drop_points:+.2f} points, allowed {MAX_DROP_POINTS:g})")
        head = "[PASS]" if self.passed else "[WARNING] INT8 BELOW THE BOUND:"
        return (f"{head} INT8 Q/DQ vs fp32 on ONNX Runtime CPU, {self.n} samples from "
                f"{self.source}\n    {acc}, top-1 agreement {100 * self.agreement:.2f}% "
                f"(required {100 * MIN_AGREEMENT:.0f}%)")

    def to_dict(self) -> Dict[str, Any]:
        return {"n": self.n, "fp32_acc": self.fp32_acc, "int8_acc": self.int8_acc,
                "drop_points": self.drop_points, "agreement": self.agreement,
                "source": self.source, "passed": self.passed}


def int8_report(fp32_onnx, int8_onnx, x: np.ndarray, y: Optional[np.ndarray],
                source: str) -> Int8Report:
    """INT8 vs fp32 on the same samples (the test split when labels are known)."""
    a = ort_run(fp32_onnx, x)
    b = ort_run(int8_onnx, x)
    agree = float((a.argmax(-1) == b.argmax(-1)).mean())
    if y is None:
        return Int8Report(len(x), None, None, agree, source)
    return Int8Report(len(x), accuracy(a, y), accuracy(b, y), agree, source)


# ------------------------------------------------------------------------- FP16
def convert_fp16(fp32_onnx, out) -> Path:
    """Mixed-precision ONNX: fp16 weights and compute, fp32 ``input``/outputs (TensorRT 11)."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ImportError("fp16 ONNX conversion needs onnxconverter-common: "
                          "pip install onnxconverter-common") from None
    model = onnx.load(str(fp32_onnx))
    half = float16.convert_float_to_float16(model, keep_io_types=True)
    _retag(half, "fp16", file_sha256(fp32_onnx))
    return _save_checked(half, out)
