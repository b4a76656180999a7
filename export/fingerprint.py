"""Build fingerprints of TensorRT engines: create, write, read, compare.

The schema, the device probe and the comparison live in :mod:`edge.sidecar`, because the edge
runtime must check a fingerprint before deserialising and ``edge/`` imports nothing from
``export/``; this module composes a full fingerprint for a build and writes it through there.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from edge import sidecar as S
from edge.sidecar import compare_fingerprints, read_sidecar, sidecar_path  # noqa: F401  (API)

BUILD_KEYS = (S.FP_PRECISION, S.FP_PROFILE, S.FP_ONNX_SHA256, S.FP_DLA_CORE)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_fingerprint(*, precision: str, profile: Mapping[str, List[int]], onnx_path,
                      dla_core: Optional[int] = None,
                      device: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The fingerprint of a build on this machine (``device`` overrides the probe, for tests)."""
    fp = dict(device if device is not None else S.probe_device())
    fp.update({S.FP_PRECISION: precision,
               S.FP_PROFILE: {k: [int(v) for v in profile[k]] for k in ("min", "opt", "max")},
               S.FP_ONNX_SHA256: sha256_file(onnx_path), S.FP_DLA_CORE: dla_core})
    return fp


def onnx_metadata_props(onnx_path) -> Dict[str, str]:
    """The raw (encoded) ``metadata_props`` of an ONNX file."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def write_engine_sidecar(engine_path, onnx_path, fingerprint: Mapping[str, Any],
                         build: Optional[Mapping[str, Any]] = None) -> Path:
    return S.write_sidecar(engine_path, onnx_metadata_props(onnx_path), fingerprint, build)


def rebuild_reasons(engine_path, wanted: Mapping[str, Any],
                    current_device: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Why an existing engine does not fit ``wanted`` (a fingerprint) or this device; [] if it does.

    A missing or unreadable sidecar is itself a reason: an engine without one is never trusted.
    """
    if not Path(engine_path).is_file():
        return [f"no engine at {engine_path}"]
    try:
        built = read_sidecar(engine_path)["fingerprint"]
    except S.SidecarError as e:
        return [str(e)]
    device = dict(current_device if current_device is not None else S.probe_device())
    out = compare_fingerprints(built, device, S.DEVICE_KEYS)
    out += compare_fingerprints(built, {k: wanted.get(k) for k in BUILD_KEYS}, BUILD_KEYS)
    return out
