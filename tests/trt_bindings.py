"""Test fixture: TensorRT's real Python bindings, importable without a GPU.

:func:`bindings_env` installs one version of the bindings wheel (``pip install --no-deps
--target``, cached under ``~/.cache/edge-students/trt-bindings``), compiles the stand-in
libraries from ``tests/trt_standin.c`` with the system C compiler (cached by the source's hash),
and returns the environment in which ``import tensorrt_bindings`` works. Each step that cannot
be done here (no registry, no compiler) skips the test with the reason.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Tuple

import pytest

try:
    import pip_cache
except ImportError:
    from tests import pip_cache

REPO = Path(__file__).resolve().parents[1]
STANDIN_C = Path(__file__).with_name("trt_standin.c")
PROBE = Path(__file__).with_name("trt_bindings_probe.py")

#: (distribution, version): JetPack 6.0's line, JetPack 6.1/6.2's 10.3, a recent 10.x, an 11.x
VERSIONS: Tuple[Tuple[str, str], ...] = (
    ("tensorrt-bindings", "8.6.1"),
    ("tensorrt-cu12-bindings", "10.3.0"),
    ("tensorrt-cu12-bindings", "10.16.1.11"),
    ("tensorrt-cu12-bindings", "11.4.0.106"),
)
#: the libraries the bindings link against (ldd / readelf NEEDED), per major version
LIBRARIES = ("libnvinfer", "libnvonnxparser", "libnvinfer_plugin", "libnvparsers")


def cache_root() -> Path:
    return pip_cache.cache_root() / "trt-bindings"


def install_bindings(dist: str, version: str) -> Path:
    """The folder holding ``tensorrt_bindings`` for this version (downloaded once)."""
    return pip_cache.pip_target(dist, version, "tensorrt_bindings/__init__.py", cache_root())


def build_standin(major: int) -> Path:
    """A folder with ``libnvinfer.so.<major>`` etc., all compiled from tests/trt_standin.c."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) to build the TensorRT stand-in libraries")
    digest = hashlib.sha256(STANDIN_C.read_bytes()).hexdigest()[:12]
    final = cache_root() / f"standin-{digest}" / f"lib{major}"
    if all((final / f"{lib}.so.{major}").is_file() for lib in LIBRARIES):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".lib{major}.", dir=final.parent))
    for lib in LIBRARIES:
        name = f"{lib}.so.{major}"
        r = subprocess.run([cc, "-shared", "-fPIC", "-O0", f"-Wl,-soname,{name}", "-o",
                            str(tmp / name), str(STANDIN_C)], capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip(f"{cc} could not build the TensorRT stand-in: {r.stderr.strip()[-300:]}")
    pip_cache.publish(tmp, final)
    return final


def bindings_env(dist: str, version: str) -> Dict[str, str]:
    """The environment of a process in which the real bindings of ``version`` import."""
    site = install_bindings(dist, version)
    libs = build_standin(int(version.split(".")[0]))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libs), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_probe(dist: str, version: str, workdir: Path, *extra: str) -> subprocess.Popen:
    """Start tests/trt_bindings_probe.py with the real bindings of ``version`` (it writes
    ``workdir/result.json``); the probes of several versions can run side by side."""
    env = bindings_env(dist, version)
    return subprocess.Popen([sys.executable, str(PROBE), str(workdir), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
