"""What this machine is: its GPU (through the CUDA driver), its L4T / JetPack release, and the
TensorRT it can import.

The single probe behind both halves of an engine fingerprint (edge/sidecar.py): the writer
(``python -m export.trt``) and the reader (the runtime) ask these functions, so they never
disagree on the spelling of a GPU name. Standard library only; TensorRT is imported lazily.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
from pathlib import Path
from typing import Optional, Tuple

# L4T release -> JetPack (docs/tensorrt.md; dusty-nv/jetson-containers l4t_version.py)
L4T_TO_JETPACK = {
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}
TEGRA_RELEASE_FILE = "/etc/nv_tegra_release"


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
    try:
        major = int(l4t.split(".")[0])
    except ValueError:
        return None
    return "7.x" if major >= 38 else None


def read_l4t(path: str = TEGRA_RELEASE_FILE) -> Optional[str]:
    """The L4T release of this machine, or None when it is not a Jetson."""
    try:
        return parse_tegra_release(Path(path).read_text(errors="replace"))
    except OSError:
        return None


# ------------------------------------------------------------------------- GPU / TensorRT
_CUDA_LIBS = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")


def probe_gpu(device: int = 0) -> Optional[Tuple[str, str]]:
    """``(name, "major.minor")`` of CUDA device ``device`` via the driver API; None without one.

    The single GPU probe of the writer and the reader (see the module docstring).
    """
    lib = None
    for name in filter(None, (ctypes.util.find_library("cuda"),) + _CUDA_LIBS):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return None
    try:
        if lib.cuInit(0) != 0:
            return None
        dev = ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(dev), int(device)) != 0:
            return None
        buf = ctypes.create_string_buffer(256)
        major, minor = ctypes.c_int(), ctypes.c_int()
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (cuda.h, since CUDA 5)
        if (lib.cuDeviceGetName(buf, ctypes.c_int(256), dev) != 0
                or lib.cuDeviceGetAttribute(ctypes.byref(major), ctypes.c_int(75), dev) != 0
                or lib.cuDeviceGetAttribute(ctypes.byref(minor), ctypes.c_int(76), dev) != 0):
            return None
    except AttributeError:               # not a CUDA driver library after all
        return None
    name = " ".join(buf.value.decode(errors="replace").split())
    return name, f"{major.value}.{minor.value}"


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt  # noqa: PLC0415  (optional: only where engines are built or run)
    except ImportError:
        return None
    return str(tensorrt.__version__)


TENSORRT_INSTALL_HINT = (
    "TensorRT's Python package is not usable here. On a Jetson it comes with JetPack "
    "(`sudo apt install python3-libnvinfer`, or `sudo apt install nvidia-jetpack`); on a desktop "
    "GPU `pip install tensorrt` (its wheels fetch the real libraries from NVIDIA's index). "
    "It needs an NVIDIA GPU and driver.")


def import_tensorrt():
    """``import tensorrt``, or ImportError naming the install (and the underlying cause)."""
    try:
        import tensorrt as trt  # noqa: PLC0415  (optional: only where engines are built or run)
    except ImportError as e:           # also: missing libnvinfer/libnvonnxparser (docs/tensorrt.md)
        raise ImportError(f"{TENSORRT_INSTALL_HINT} (import tensorrt: {e})") from None
    return trt
