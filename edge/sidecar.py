"""The TensorRT engine sidecar (DESIGN.md, contract 3): schema, device probe, fingerprint check.

``model.engine`` always travels with ``model.engine.json``::

    {"format": "edge-students/engine-sidecar", "format_version": 1,
     "metadata": {...the ONNX metadata_props, encoded as strings...},
     "fingerprint": {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
                     "l4t_release": "36.4.0", "jetpack": "6.1", "precision": "fp16",
                     "profile": {"min": [1,3,128,128], "opt": [8,3,128,128], "max": [8,3,128,128]},
                     "onnx_sha256": "...", "dla_core": null},
     "build": {"created": "...", "command": "python -m export.trt ..."}}

``export/`` writes it through :func:`write_sidecar`; ``edge/`` reads it with :func:`read_sidecar`
and, *before* deserialising the engine, compares the stored fingerprint against
:func:`probe_device` with :func:`compare_fingerprints`, which says in words what differs.
TensorRT plans are tied to the TensorRT version and the GPU (TENSORRT_NOTES F6), and a plan
built elsewhere fails to deserialise with an opaque message; this check replaces that crash.

Pure Python plus numpy-free stdlib: no torch, no TensorRT at import time. The GPU is probed with
ctypes on the CUDA driver library (``libcuda``), present wherever an NVIDIA driver is, Jetson
included, so the probe needs neither cuda-python nor PyTorch.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

SIDECAR_FORMAT = "edge-students/engine-sidecar"
SIDECAR_FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".json"                 # model.engine -> model.engine.json

# fingerprint keys
FP_TRT_VERSION = "tensorrt_version"
FP_GPU_NAME = "gpu_name"
FP_COMPUTE_CAPABILITY = "compute_capability"
FP_L4T = "l4t_release"
FP_JETPACK = "jetpack"
FP_PRECISION = "precision"
FP_PROFILE = "profile"                   # {"min": shape, "opt": shape, "max": shape}
FP_ONNX_SHA256 = "onnx_sha256"
FP_DLA_CORE = "dla_core"
FINGERPRINT_KEYS = (FP_TRT_VERSION, FP_GPU_NAME, FP_COMPUTE_CAPABILITY, FP_L4T, FP_JETPACK,
                    FP_PRECISION, FP_PROFILE, FP_ONNX_SHA256, FP_DLA_CORE)
#: what must match between the build device and the device that deserialises the plan
DEVICE_KEYS = (FP_TRT_VERSION, FP_COMPUTE_CAPABILITY, FP_GPU_NAME, FP_L4T)
LABELS = {FP_TRT_VERSION: "TensorRT version", FP_GPU_NAME: "GPU", FP_COMPUTE_CAPABILITY:
          "compute capability", FP_L4T: "L4T release", FP_JETPACK: "JetPack",
          FP_PRECISION: "precision", FP_PROFILE: "optimisation profile",
          FP_ONNX_SHA256: "source ONNX sha256", FP_DLA_CORE: "DLA core"}

# L4T release -> JetPack (TENSORRT_NOTES 4.1; dusty-nv/jetson-containers l4t_version.py)
L4T_TO_JETPACK = {
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}
TEGRA_RELEASE_FILE = "/etc/nv_tegra_release"


class SidecarError(ValueError):
    """A sidecar that is missing, unreadable or of an unknown format."""


def sidecar_path(engine_path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


# ------------------------------------------------------------------------- Jetson / L4T
def parse_tegra_release(text: str) -> Optional[str]:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``"35.4.1"``; None if the text is not one."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}"


def jetpack_for_l4t(l4t: Optional[str]) -> Optional[str]:
    """The JetPack release of an L4T release; ``"7.x"`` for R38+; None when unknown."""
    if not l4t:
        return None
    if l4t in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[l4t]
    major = int(l4t.split(".")[0])
    return "7.x" if major >= 38 else None


def read_l4t(path: str = TEGRA_RELEASE_FILE) -> Optional[str]:
    """The L4T release of this machine, or None when it is not a Jetson."""
    try:
        return parse_tegra_release(Path(path).read_text(errors="replace"))
    except OSError:
        return None


# ------------------------------------------------------------------------- GPU / TensorRT
def probe_gpu(device: int = 0) -> Optional[Tuple[str, str]]:
    """``(name, "major.minor")`` of CUDA device ``device`` via the driver API; None without one."""
    names = [ctypes.util.find_library("cuda"), "libcuda.so.1", "libcuda.so", "nvcuda.dll"]
    lib = None
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None or lib.cuInit(0) != 0:
        return None
    dev = ctypes.c_int()
    if lib.cuDeviceGet(ctypes.byref(dev), device) != 0:
        return None
    buf = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (cuda.h, stable since CUDA 5)
    if (lib.cuDeviceGetName(buf, 256, dev) != 0
            or lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) != 0
            or lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) != 0):
        return None
    return buf.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt  # noqa: F401  (optional: only where engines are built or run)
    except ImportError:
        return None
    return str(tensorrt.__version__)


def probe_device(trt_version: Optional[str] = None,
                 gpu: Optional[Tuple[str, str]] = None,
                 l4t: Optional[str] = None) -> Dict[str, Any]:
    """The device half of a fingerprint for this machine; arguments override the probes."""
    gpu = gpu if gpu is not None else probe_gpu()
    l4t = l4t if l4t is not None else read_l4t()
    return {
        FP_TRT_VERSION: trt_version if trt_version is not None else tensorrt_version(),
        FP_GPU_NAME: gpu[0] if gpu else None,
        FP_COMPUTE_CAPABILITY: gpu[1] if gpu else None,
        FP_L4T: l4t,
        FP_JETPACK: jetpack_for_l4t(l4t),
    }


# ------------------------------------------------------------------------- compare
def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, dict):
        return ", ".join(f"{k} {'x'.join(str(d) for d in s)}" for k, s in v.items())
    return str(v)


def compare_fingerprints(built: Mapping[str, Any], current: Mapping[str, Any],
                         keys=DEVICE_KEYS) -> List[str]:
    """Human-readable differences between two fingerprints over ``keys``; [] when they match.

    Only keys present in ``current`` are compared, so the runtime compares the device keys and
    a rebuild check can add precision, profile and the ONNX hash.
    """
    out = []
    for k in keys:
        if k not in current:
            continue
        a, b = built.get(k), current.get(k)
        if a != b:
            out.append(f"{LABELS.get(k, k)}: engine built with {_fmt(a)}, here {_fmt(b)}")
    return out


def mismatch_message(engine_path, differences: List[str], command: Optional[str] = None) -> str:
    lines = [f"{engine_path} was built for another device or TensorRT; it cannot be used here:"]
    lines += [f"  - {d}" for d in differences]
    lines.append("Rebuild it on this device: " + (command or "python -m export.trt model.onnx"))
    return "\n".join(lines)


# ------------------------------------------------------------------------- I/O
def write_sidecar(engine_path, metadata_props: Mapping[str, str], fingerprint: Mapping[str, Any],
                  build: Optional[Mapping[str, Any]] = None) -> Path:
    """Atomically write ``<engine>.json``; ``metadata_props`` is the encoded ONNX metadata."""
    unknown = set(fingerprint) - set(FINGERPRINT_KEYS)
    if unknown:
        raise ValueError(f"unknown fingerprint keys {sorted(unknown)}; valid: {FINGERPRINT_KEYS}")
    doc = {"format": SIDECAR_FORMAT, "format_version": SIDECAR_FORMAT_VERSION,
           "metadata": {str(k): str(v) for k, v in metadata_props.items()},
           "fingerprint": dict(fingerprint), "build": dict(build or {})}
    path = sidecar_path(engine_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_sidecar(path) -> Dict[str, Any]:
    """Read a sidecar (give the engine or the .json path); raises :class:`SidecarError`."""
    p = Path(path)
    if p.suffix != SIDECAR_SUFFIX:
        p = sidecar_path(p)
    if not p.is_file():
        raise SidecarError(f"engine sidecar not found: {p} (every engine needs the JSON written "
                           "beside it by `python -m export.trt`)")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SidecarError(f"{p} is not readable JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise SidecarError(f"{p} is not an edge-students engine sidecar (format tag missing)")
    if int(doc.get("format_version", -1)) > SIDECAR_FORMAT_VERSION:
        raise SidecarError(f"{p} has sidecar format {doc['format_version']}, newer than this "
                           f"edge-students ({SIDECAR_FORMAT_VERSION}); upgrade the package")
    for key in ("metadata", "fingerprint"):
        if not isinstance(doc.get(key), dict):
            raise SidecarError(f"{p} lacks its {key!r} section")
    return doc
