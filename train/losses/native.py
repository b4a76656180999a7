"""POSD's default path (d = 2, V_IN) on CPU as one native call, built once from ``posd_d2.c``.

At batch 64 a small net's CPU training step takes 5-10 ms, and after its convolutions every
*distinct* PyTorch op runs cache-cold at 20-75 us, so the pure-PyTorch POSD (nine kernels, see
:class:`train.losses.posd._VInD2`) costs 5-8 % of the step. The same maths in one C call costs
1-4 % (``benchmarks/bench_posd_overhead.py``; figures in ``docs/benchmarks.md``).

The library is compiled on first use with the system C compiler (``$CC``, else ``cc``, ``gcc`` or
``clang``; about 0.3 s) into ``$EDGE_STUDENTS_CACHE/native`` (default
``~/.cache/edge-students/native``), under a name that hashes the source, the compiler's version
and the machine, so an upgrade or another machine sharing the folder rebuilds rather than loads
a stale or foreign build. The build goes to a temporary file that is renamed into place, so
concurrent processes (DDP ranks) never load half a file.

Nothing depends on it: without a compiler, when the build fails (one warning says why), or with
``EDGE_STUDENTS_NATIVE=0``, POSD runs its pure-PyTorch path, which gives the same values and
gradients to float rounding. :func:`status` says which path this process uses.

The C code needs float32, C-contiguous CPU features and is single-threaded, so
:func:`supports` routes only batches up to :data:`MAX_WORK` multiply-adds of Gram matrix
(``N * N * D``) to it; larger ones (where PyTorch's multi-threaded BLAS wins) and every other
device or dtype take the PyTorch path.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch

SOURCE = Path(__file__).with_name("posd_d2.c")
ABI = 1                       # must equal POSD_ABI in posd_d2.c
FLAGS = ("-O3", "-shared", "-fPIC")
MAX_WORK = 1 << 22            # N*N*D: e.g. batch 256 at D = 64, batch 64 at D = 1024
ENV_SWITCH = "EDGE_STUDENTS_NATIVE"

_lock = threading.Lock()
_fn = None                    # the ctypes function once loaded
_lib: Optional[ctypes.CDLL] = None
_state = "not tried"          # why the native path is (not) in use, for status()
_paused = 0                   # > 0 inside paused(): supports() says no
_scratch = threading.local()  # per thread: a reusable uint8 workspace (never saved for backward)
ERRORS = {1: "bad arguments", 2: "out of memory", 3: "workspace too small"}


def enabled() -> bool:
    """False when ``EDGE_STUDENTS_NATIVE`` is 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    from train.data import default_cache_dir

    return default_cache_dir() / "native"


def find_compiler() -> Optional[str]:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or cc
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _compiler_id(cc: str) -> str:
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run the C compiler {cc!r}: {exc}") from None
    if res.returncode != 0:
        raise RuntimeError(f"`{cc} --version` failed: {res.stderr.strip()[:300]}")
    return res.stdout.strip().splitlines()[0] if res.stdout.strip() else cc


def library_path(cc: str) -> Path:
    """Where the build for this source, compiler and machine lives."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), _compiler_id(cc).encode(), " ".join(FLAGS).encode(),
                 platform.machine().encode(), platform.system().encode(), str(ABI).encode()):
        key.update(part)
        key.update(b"\0")
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    return cache_dir() / f"posd_d2-{key.hexdigest()[:16]}{suffix}"


def build(cc: str, dest: Path) -> Path:
    """Compile ``posd_d2.c`` to ``dest`` atomically; raises RuntimeError with the compiler's words."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.stem + ".", suffix=dest.suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    try:
        cmd = [cc, *FLAGS, "-o", tmp, str(SOURCE)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"cannot run {' '.join(cmd)}: {exc}") from None
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{(res.stderr or res.stdout).strip()[:2000]}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _bind(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.posd_abi.restype = ctypes.c_int
    lib.posd_abi.argtypes = []
    if lib.posd_abi() != ABI:
        raise OSError(f"{path} has ABI {lib.posd_abi()}, expected {ABI}")
    fn = lib.posd_vin_d2
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_double,
                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.posd_workspace_bytes.restype = ctypes.c_int64
    lib.posd_workspace_bytes.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    lib.posd_select_kernel.restype = ctypes.c_int
    lib.posd_select_kernel.argtypes = [ctypes.c_int]
    return lib


def _load() -> None:
    global _fn, _lib, _state
    if not enabled():
        _state = f"pure PyTorch ({ENV_SWITCH}={os.environ.get(ENV_SWITCH)})"
        return
    cc = find_compiler()
    if cc is None:
        _state = "pure PyTorch (no C compiler found; set CC to use one)"
        return
    try:
        path = library_path(cc)
        if path.exists():
            try:
                lib = _bind(path)
            except OSError:           # a truncated, foreign or stale file: build it again
                path.unlink()
                lib = _bind(build(cc, path))
        else:
            lib = _bind(build(cc, path))
    except (OSError, RuntimeError) as exc:
        _state = f"pure PyTorch (building the native kernel failed: {exc})"
        warnings.warn(f"POSD: {_state}; training continues on the PyTorch path "
                      f"(set {ENV_SWITCH}=0 to silence this)", RuntimeWarning, stacklevel=3)
        return
    _lib, _fn = lib, lib.posd_vin_d2
    _state = f"native ({path})"


def kernel():
    """The loaded ``posd_vin_d2`` function, or None (building it on the first call)."""
    if _state == "not tried":
        with _lock:
            if _state == "not tried":
                _load()
    return _fn


def reset() -> None:
    """Forget the loaded library so the next :func:`kernel` looks again (tests, after changing
    ``EDGE_STUDENTS_NATIVE``, ``CC`` or the cache folder)."""
    global _fn, _lib, _state
    with _lock:
        _fn, _lib, _state = None, None, "not tried"


def status() -> str:
    """``"native (<library>)"`` or ``"pure PyTorch (<why>)"``: which path POSD (d = 2) takes on CPU."""
    kernel()
    return _state


def select_kernel(which: int = -1) -> int:
    """The Gram kernel inside the library: -1 the best for this CPU, 0 generic, 1 AVX2+FMA.
    Returns the one now in use, or -1 if unavailable (tests use it to check both)."""
    if kernel() is None:
        raise RuntimeError(f"the native POSD kernel is not loaded: {_state}")
    return int(_lib.posd_select_kernel(int(which)))


def supports(y: torch.Tensor) -> bool:
    """Whether POSD hands these features ([N, D]) to :func:`vin_d2`."""
    return (not _paused and y.dtype == torch.float32 and y.device.type == "cpu" and y.dim() == 2
            and y.shape[0] * y.shape[0] * y.shape[1] <= MAX_WORK and kernel() is not None)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Within this block POSD takes its pure-PyTorch path (benchmarks and tests compare the two).
    Process-wide, not per thread."""
    global _paused
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1


def vin_d2(y: torch.Tensor, k: int, scale: float,
           members: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scale * V, scale * dV/dy)`` for V_IN with d = 2: a 0-dim and an [N, D] tensor.

    ``y``: float32 CPU [N, D] (made contiguous); ``k`` is clamped to ``N - 1``. ``members``, if
    given, is an int64 [N, min(k, N-1) + 1] tensor that receives each group (column 0 is ``p``).
    No autograd here: :class:`train.losses.posd._VInD2Native` wraps it.
    """
    fn = kernel()
    if fn is None:
        raise RuntimeError(f"the native POSD kernel is not loaded: {_state}")
    if y.device.type != "cpu" or y.dtype != torch.float32 or y.dim() != 2:
        raise ValueError(f"vin_d2 needs float32 CPU features [N, D], got {y.dtype} {tuple(y.shape)} "
                         f"on {y.device}")
    y = y.detach().contiguous()
    n, d = y.shape
    if n < 1 or d < 1 or k < 0:
        raise ValueError(f"vin_d2 needs N >= 1, D >= 1 and k >= 0, got N={n}, D={d}, k={k}")
    if members is not None:
        want = (n, min(k, n - 1) + 1)
        if members.dtype != torch.int64 or tuple(members.shape) != want or not members.is_contiguous():
            raise ValueError(f"members must be a contiguous int64 tensor of shape {want}")
    value, grad = torch.empty(()), torch.empty(n, d)
    run(y, n, d, k, scale, grad, value, members)
    return value, grad


def run(y: torch.Tensor, n: int, d: int, k: int, scale: float, grad: torch.Tensor,
        value: torch.Tensor, members: Optional[torch.Tensor] = None) -> None:
    """Call the kernel on checked, contiguous tensors (the hot path: no checks here)."""
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = torch.empty(1 << 16, dtype=torch.uint8)
    mp = None if members is None else members.data_ptr()
    rc = _fn(y.data_ptr(), n, d, k, scale, grad.data_ptr(), value.data_ptr(), mp, buf.data_ptr(), buf.numel())
    if rc == 3:                   # a bigger batch than before: grow the scratch once
        need = int(_lib.posd_workspace_bytes(n, d, k))
        buf = _scratch.buf = torch.empty(max(need, 2 * buf.numel()), dtype=torch.uint8)
        rc = _fn(y.data_ptr(), n, d, k, scale, grad.data_ptr(), value.data_ptr(), mp, buf.data_ptr(), buf.numel())
    if rc != 0:
        raise RuntimeError(f"posd_vin_d2 failed with code {rc} ({ERRORS.get(rc, 'unknown')})")
