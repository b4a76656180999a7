"""The TensorRT engine sidecar (``model.engine.json``) and its build fingerprint (DESIGN.md, contract 3).

A serialised engine only loads on the TensorRT version and GPU it was built for; a mismatch
otherwise shows up as a bare ``None`` from ``deserialize_cuda_engine`` or a crash. The runtime
therefore compares the sidecar's fingerprint with this device *before* deserialising and names
each difference and the command that rebuilds the engine.

Sidecar schema (format 1)::

    {
      "format_version": 1,
      "metadata": {<the ONNX metadata_props, encoded as edge.contract.encode_metadata>},
      "fingerprint": {
        "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
        "l4t": "36.4.0", "jetpack": "6.1",             # null off a Jetson
        "precision": "fp16", "profile": {"min": 1, "opt": 8, "max": 32},
        "onnx_sha256": "<hex>"
      },
      "source_onnx": "crowd.onnx", "rebuild_command": "python -m export.trt crowd.pt ..."
    }

``gpu_name`` and ``compute_capability`` must come from the same place on both sides:
``cudaGetDeviceProperties`` (cuda-python), as :func:`gpu_identity` reads them, with nvidia-smi only
as a fallback (it gives the same name on desktop GPUs; on a Jetson only cuda-python answers).

This module needs only the standard library; TensorRT and cuda-python are imported lazily.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from edge.contract import META_PREFIX

SIDECAR_FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".json"         # crowd.engine -> crowd.engine.json

#: fingerprint keys that decide whether a plan deserialises here (compared strictly)
HARD_KEYS = ("tensorrt_version", "compute_capability", "gpu_name", "l4t")
#: recorded for the report, not a reason to refuse an engine
INFO_KEYS = ("jetpack", "precision", "profile", "onnx_sha256")
LABELS = {
    "tensorrt_version": "TensorRT version", "compute_capability": "GPU compute capability",
    "gpu_name": "GPU", "l4t": "L4T (Jetson Linux) release", "onnx_sha256": "source ONNX sha256",
}

# L4T major.minor -> JetPack (TENSORRT_NOTES.md section 4.1)
_L4T_TO_JETPACK = {
    "32.6": "4.6", "32.7": "4.6.x", "35.1": "5.0.2", "35.2": "5.1", "35.3": "5.1.1",
    "35.4": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4", "36.2": "6.0 DP", "36.3": "6.0",
    "36.4": "6.1/6.2",
}


class SidecarError(ValueError):
    """The sidecar is missing, unreadable or does not match this device."""


def sidecar_path(engine_path) -> Path:
    return Path(str(engine_path) + SIDECAR_SUFFIX)


def read_sidecar(engine_path) -> Dict[str, Any]:
    """Load ``<engine>.json``; raise :class:`SidecarError` naming the file if absent or invalid."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise SidecarError(
            f"{path} not found: every engine needs its sidecar (written by `python -m export.trt`); "
            "rebuild the engine on this device")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SidecarError(f"cannot read sidecar {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), dict):
        raise SidecarError(f"sidecar {path} has no 'fingerprint' object")
    return data


def sidecar_metadata(sidecar: Mapping[str, Any]) -> Dict[str, str]:
    """The encoded metadata map of a sidecar (under "metadata", or prefixed keys at top level)."""
    meta = sidecar.get("metadata")
    if isinstance(meta, dict):
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    return {k: v if isinstance(v, str) else json.dumps(v)
            for k, v in sidecar.items() if k.startswith(META_PREFIX)}


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --- this device ---------------------------------------------------------------------------
def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, heavy
    except ImportError:
        return None
    return str(trt.__version__)


def l4t_release(path: str = "/etc/nv_tegra_release") -> Optional[str]:
    """'36.4.0' from '# R36 (release), REVISION: 4.0, ...'; None off a Jetson."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack_for_l4t(l4t: Optional[str]) -> Optional[str]:
    if not l4t:
        return None
    return _L4T_TO_JETPACK.get(".".join(l4t.split(".")[:2]))


def gpu_identity() -> Dict[str, Optional[str]]:
    """GPU name and compute capability via cuda-python, else nvidia-smi; None when unknown."""
    ident = _gpu_from_cuda_python()
    if ident is None:
        ident = _gpu_from_nvidia_smi()
    return ident or {"gpu_name": None, "compute_capability": None}


def _gpu_from_cuda_python() -> Optional[Dict[str, Optional[str]]]:
    try:
        from edge.backends.cuda_rt import cudart  # noqa: PLC0415
        rt = cudart()
    except ImportError:
        return None
    err, props = rt.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu_name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}


def _gpu_from_nvidia_smi() -> Optional[Dict[str, Optional[str]]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    parts = [p.strip() for p in first.split(",")]
    if len(parts) != 2:
        return None
    return {"gpu_name": parts[0], "compute_capability": parts[1]}


def current_fingerprint() -> Dict[str, Any]:
    """What this device would write into a sidecar (unknown entries are None, never guessed)."""
    l4t = l4t_release()
    fp: Dict[str, Any] = {"tensorrt_version": tensorrt_version(), "l4t": l4t,
                          "jetpack": jetpack_for_l4t(l4t)}
    fp.update(gpu_identity())
    return fp


# --- comparison ----------------------------------------------------------------------------
def _norm(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == "gpu_name":
        return " ".join(str(value).split()).lower()
    return str(value)


def compare(expected: Mapping[str, Any], actual: Mapping[str, Any],
            keys=HARD_KEYS) -> List[str]:
    """Differences between the engine's fingerprint and this device, one sentence each.

    A key the engine does not record is not compared. A key this device cannot determine (None)
    is a difference too: loading an engine we cannot vouch for is what this check prevents.
    """
    diffs = []
    for key in keys:
        want = expected.get(key)
        if want is None:
            continue
        have = actual.get(key)
        label = LABELS.get(key, key)
        if have is None:
            diffs.append(f"{label}: engine built for {want}, this device: unknown "
                         f"({'tensorrt not importable' if key == 'tensorrt_version' else 'not detected'})")
        elif _norm(key, want) != _norm(key, have):
            diffs.append(f"{label}: engine built for {want}, this device has {have}")
    return diffs


def rebuild_command(sidecar: Mapping[str, Any], engine_path) -> str:
    cmd = sidecar.get("rebuild_command")
    if cmd:
        return str(cmd)
    src = sidecar.get("source_onnx") or sidecar.get("source_checkpoint") or "MODEL.pt"
    return f"python -m export.trt {src} --output {engine_path}"


def check_engine(engine_path, actual: Optional[Mapping[str, Any]] = None,
                 onnx_path=None) -> Dict[str, Any]:
    """Read the sidecar and refuse (``SidecarError``) if this device does not match it.

    Returns the sidecar. ``onnx_path``, when given, is also checked against ``onnx_sha256`` so a
    re-exported model does not silently run on an engine built from the old one.
    """
    sidecar = read_sidecar(engine_path)
    fp = sidecar["fingerprint"]
    diffs = compare(fp, current_fingerprint() if actual is None else actual)
    if onnx_path is not None and fp.get("onnx_sha256"):
        have = file_sha256(onnx_path)
        if have != fp["onnx_sha256"]:
            diffs.append(f"{LABELS['onnx_sha256']}: engine built from {fp['onnx_sha256'][:12]}..., "
                         f"{onnx_path} is {have[:12]}...")
    if diffs:
        raise SidecarError(
            f"engine {engine_path} does not match this device:\n  - " + "\n  - ".join(diffs)
            + f"\nrebuild it on this device with:\n  {rebuild_command(sidecar, engine_path)}")
    return sidecar
