"""Build fingerprints of TensorRT engines: a thin export-side layer over :mod:`edge.sidecar`.

The schema, the device probe, the comparison and the sidecar I/O live in ``edge/sidecar.py``
(the one implementation: the edge runtime checks with it before deserialising, and ``edge/``
imports nothing from ``export/``). This module only adds what the build request decides: the
fingerprint of a build, the sidecar of an engine built from an ONNX, and whether an existing
engine still fits a request (``export.trt`` keeps an engine that does instead of rebuilding it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from edge import sidecar as S
from edge.onnx_wire import model_metadata


def build_fingerprint(*, precision: str, profile: Mapping[str, List[int]], onnx_path,
                      dla_core: Optional[int] = None,
                      device: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The fingerprint of a build on this machine (``device`` overrides the probe)."""
    return S.make_fingerprint(device=device if device is not None else S.probe_device(),
                              precision=precision, profile=profile, onnx_path=onnx_path,
                              dla_core=dla_core)


def write_engine_sidecar(engine_path, onnx_path, fingerprint: Mapping[str, Any], *,
                         rebuild_command: str,
                         build: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``<engine>.json`` for an engine TensorRT built from ``onnx_path`` (its
    ``metadata_props`` as stored, read by the runtime's own reader, edge/onnx_wire.py)."""
    return S.write_sidecar(engine_path, model_metadata(onnx_path), fingerprint,
                           source_onnx=onnx_path, rebuild_command=rebuild_command, build=build)


def rebuild_reasons(engine_path, wanted: Mapping[str, Any],
                    current_device: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Why an existing engine does not fit ``wanted`` (a fingerprint) or this device; [] if it does.

    A missing or unreadable sidecar is itself a reason: an engine without one is never trusted.
    """
    if not Path(engine_path).is_file():
        return [f"no engine at {engine_path}"]
    try:
        built = S.read_sidecar(engine_path)[S.KEY_FINGERPRINT]
    except S.SidecarError as e:
        return [str(e)]
    device = dict(current_device if current_device is not None else S.probe_device())
    return S.compare(built, device, S.DEVICE_KEYS) + S.compare(built, wanted, S.BUILD_KEYS)
