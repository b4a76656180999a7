"""Build fingerprints of TensorRT engines: a thin export-side layer over :mod:`edge.sidecar`.

The schema, the device probe, the comparison and the sidecar I/O live in ``edge/sidecar.py``
(the one implementation: the edge runtime checks with it before deserialising, and ``edge/``
imports nothing from ``export/``). This module only adds what needs the ``onnx`` package or the
build request: reading the parsed ONNX's metadata, and deciding whether an existing engine
still fits a request.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from edge import sidecar as S
from edge.sidecar import (BUILD_KEYS, DEVICE_KEYS, compare,  # noqa: F401  (API)
                          read_sidecar, sidecar_path)


def build_fingerprint(*, precision: str, profile: Mapping[str, List[int]], onnx_path,
                      dla_core: Optional[int] = None,
                      device: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The fingerprint of a build on this machine (``device`` overrides the probe)."""
    return S.make_fingerprint(device=device if device is not None else S.probe_device(),
                              precision=precision, profile=profile, onnx_path=onnx_path,
                              dla_core=dla_core)


def onnx_metadata_props(onnx_path) -> Dict[str, str]:
    """The raw (encoded) ``metadata_props`` of an ONNX file."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def write_engine_sidecar(engine_path, onnx_path, fingerprint: Mapping[str, Any], *,
                         rebuild_command: str,
                         build: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``<engine>.json`` for an engine TensorRT built from ``onnx_path``."""
    return S.write_sidecar(engine_path, onnx_metadata_props(onnx_path), fingerprint,
                           source_onnx=onnx_path, rebuild_command=rebuild_command, build=build)


def rebuild_reasons(engine_path, wanted: Mapping[str, Any],
                    current_device: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Why an existing engine does not fit ``wanted`` (a fingerprint) or this device; [] if it does.

    A missing or unreadable sidecar is itself a reason: an engine without one is never trusted.
    """
    if not Path(engine_path).is_file():
        return [f"no engine at {engine_path}"]
    try:
        built = read_sidecar(engine_path)[S.KEY_FINGERPRINT]
    except S.SidecarError as e:
        return [str(e)]
    device = dict(current_device if current_device is not None else S.probe_device())
    return compare(built, device, DEVICE_KEYS) + compare(built, wanted, BUILD_KEYS)
