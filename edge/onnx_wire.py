"""Read an ONNX file's metadata and operator types without the ``onnx`` package.

The device runtime installs numpy, OpenCV and ONNX Runtime only, but it must know two things
about a model before it opens a session: whether it is explicitly quantised (Q/DQ), which decides
the TensorRT provider's options, and its contract metadata (``python -m edge.sidecar adopt``).
An ONNX file is a protobuf ``ModelProto``; these fields are read straight from the wire format
(field numbers from onnx/onnx.proto, stable since ONNX 1.0):

    ModelProto: graph = 7 (GraphProto), metadata_props = 14 (StringStringEntryProto: key 1, value 2)
    GraphProto: node = 1 (NodeProto: op_type = 4)

Only the top-level graph's nodes are listed (not the bodies of If/Loop), which is where an
exporter puts Q/DQ nodes.
"""
from __future__ import annotations

import mmap
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf, i: int, end: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= end or shift > 63:
            raise ValueError("truncated or corrupt protobuf varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf, start: int, end: int) -> Iterator[Tuple[int, int, object]]:
    """``(field number, wire type, value)`` of one message; a length-delimited value is the
    ``(start, end)`` span of its bytes in ``buf``."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, i = _varint(buf, i, end)
        elif wire == _LEN:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise ValueError("truncated protobuf field")
            value, i = (i, i + n), i + n
        elif wire in (_I64, _I32):
            n = 8 if wire == _I64 else 4
            if i + n > end:
                raise ValueError("truncated protobuf field")
            value, i = bytes(buf[i:i + n]), i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (not an ONNX model?)")
        yield number, wire, value


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", errors="replace")


def _read(path, want_graph: bool) -> Tuple[Dict[str, str], Set[str]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file not found: {p}")
    with open(p, "rb") as f:
        if p.stat().st_size == 0:
            raise ValueError(f"{p} is empty, not an ONNX model")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            meta: Dict[str, str] = {}
            ops: Set[str] = set()
            try:
                for number, wire, value in fields(buf, 0, len(buf)):
                    if number == 14 and wire == _LEN:
                        entry = {n: _text(buf, v) for n, w, v in fields(buf, *value) if w == _LEN}
                        meta[entry.get(1, "")] = entry.get(2, "")
                    elif number == 7 and wire == _LEN and want_graph:
                        for n, w, v in fields(buf, *value):
                            if n == 1 and w == _LEN:
                                ops.update(_text(buf, s) for k, ww, s in fields(buf, *v)
                                           if k == 4 and ww == _LEN)
            except ValueError as e:
                raise ValueError(f"{p} is not a readable ONNX model: {e}") from None
    return meta, ops


def model_metadata(path) -> Dict[str, str]:
    """The raw ``metadata_props`` of an ONNX file (key -> value strings)."""
    return _read(path, want_graph=False)[0]


def op_types(path) -> Set[str]:
    """The operator types of the model's top-level graph."""
    return _read(path, want_graph=True)[1]


def is_qdq(path) -> bool:
    """Whether the model is explicitly quantised (QuantizeLinear/DequantizeLinear nodes)."""
    return bool(op_types(path) & {"QuantizeLinear", "DequantizeLinear"})
