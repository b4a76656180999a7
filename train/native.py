"""Native CPU kernels (``native.c``), built once with the system C compiler, used when they help.

A small net's CPU training step at batch 64 takes 5-10 ms, and after its convolutions every
*distinct* PyTorch op runs cache-cold at 20-75 us. Two parts of the step are chains of such ops,
and the library does each in one call:

- POSD's default path (d = 2, V_IN; nine ops in :class:`train.losses.posd._VInD2`):
  :func:`vin_d2`, the same value and gradient to float rounding (the neighbour search breaks
  exact ties by the lower index);
- the batch's gather, augmentation and normalisation (about twenty ops in
  :mod:`train.data.augment`): :func:`augment_u8`, bit-identical to them; and with the
  robustness steps of ``aerial-robust`` (:mod:`train.data.robust`, a few hundred ops):
  :func:`augment_robust_u8`, bit-identical too.

``benchmarks/bench_posd_overhead.py`` and ``benchmarks/bench_data_path.py`` time both paths;
figures are in ``docs/benchmarks.md``.

The library is compiled on first use (``$CC``, else ``cc``, ``gcc`` or ``clang``; a few seconds)
into ``$EDGE_STUDENTS_CACHE/native`` (default ``~/.cache/edge-students/native``), under a name
that hashes the source, the compiler's version, the flags and the machine, so an upgrade or
another machine sharing the folder rebuilds rather than loads a stale or foreign build. The
build goes to a temporary file that is renamed into place, so concurrent processes (DDP ranks)
never load half a file, and a corrupt file is rebuilt.

Nothing depends on it: without a compiler, when the build fails (one warning says why), or with
``EDGE_STUDENTS_NATIVE=0``, the pure-PyTorch code runs. :func:`status` says which path this
process uses, and training records it in ``config.json``.
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

SOURCE = Path(__file__).with_name("native.c")
ABI = 3                       # must equal NATIVE_ABI in native.c
FLAGS = ("-O3", "-shared", "-fPIC", "-ffp-contract=off", "-pthread")
# POSD: the C Gram matrix is single-threaded, so batches beyond N*N*D multiply-adds (e.g. batch
# 256 at D = 64, batch 64 at D = 1024) take PyTorch's multi-threaded BLAS instead
MAX_WORK = 1 << 22
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
    return cache_dir() / f"native-{key.hexdigest()[:16]}{suffix}"


def build(cc: str, dest: Path) -> Path:
    """Compile ``native.c`` to ``dest`` atomically; raises RuntimeError with the compiler's words."""
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
    lib.native_abi.restype = ctypes.c_int
    lib.native_abi.argtypes = []
    if lib.native_abi() != ABI:
        raise OSError(f"{path} has ABI {lib.native_abi()}, expected {ABI}")
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    for name, res, args in (
            ("posd_vin_d2", ctypes.c_int, [p, i64, i64, i64, ctypes.c_double, p, p, p, p, i64]),
            ("posd_workspace_bytes", i64, [i64, i64, i64]),
            ("posd_select_kernel", ctypes.c_int, [ctypes.c_int]),
            ("augment_u8", ctypes.c_int, [p, i64, i64, i64, i64, p, i64, i64, p, p, p, p, p, p, p, p]),
            ("augment_robust_u8", ctypes.c_int,
             [p, i64, i64, i64, i64, p, i64, p, p, p, p, i64, p, p, p, p, p, p, p, i64, p])):
        getattr(lib, name).restype = res
        getattr(lib, name).argtypes = args
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
        _state = f"pure PyTorch (building the native kernels failed: {exc})"
        warnings.warn(f"edge-students: {_state}; training continues on the PyTorch path "
                      f"(set {ENV_SWITCH}=0 to silence this)", RuntimeWarning, stacklevel=3)
        return
    _lib, _fn = lib, lib.posd_vin_d2
    _state = f"native ({path})"


def kernel():
    """The loaded ``posd_vin_d2`` function, or None (building the library on the first call)."""
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
    """``"native (<library>)"`` or ``"pure PyTorch (<why>)"``: which path CPU training takes."""
    kernel()
    return _state


def select_kernel(which: int = -1) -> int:
    """The Gram kernel inside the library: -1 the best for this CPU, 0 generic, 1 AVX2+FMA.
    Returns the one now in use, or -1 if unavailable (tests use it to check both)."""
    if kernel() is None:
        raise RuntimeError(f"the native kernels are not loaded: {_state}")
    return int(_lib.posd_select_kernel(int(which)))


def supports(y: torch.Tensor) -> bool:
    """Whether POSD hands these features ([N, D]) to :func:`vin_d2`."""
    return (not _paused and y.dtype == torch.float32 and y.device.type == "cpu" and y.dim() == 2
            and y.shape[0] * y.shape[0] * y.shape[1] <= MAX_WORK and kernel() is not None)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Within this block POSD and the augmentation take their pure-PyTorch paths (benchmarks and
    tests compare the two). Process-wide, not per thread."""
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
        raise RuntimeError(f"the native kernels are not loaded: {_state}")
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


def augment_ready(x: torch.Tensor) -> bool:
    """Whether :func:`augment_u8` takes batches of these training images ([N, C, H, W] uint8)."""
    return (not _paused and x.dtype == torch.uint8 and x.device.type == "cpu" and x.dim() == 4
            and x.is_contiguous() and kernel() is not None)


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def augment_u8(x: torch.Tensor, idx: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor,
               pad: int = 0, oy: Optional[torch.Tensor] = None, ox: Optional[torch.Tensor] = None,
               flip_w: Optional[torch.Tensor] = None, flip_h: Optional[torch.Tensor] = None,
               turn: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``normalise(transform(x[idx]))`` as float32 [B, C, H, W], in one call.

    ``x``: contiguous uint8 [N, C, H, W] (:func:`augment_ready`); ``idx``: int64 [B];
    ``mean``/``inv_std``: float32 [C]; per sample, in this order: a crop at (``oy``, ``ox``) of
    the image zero-padded by ``pad``, a flip of the width, of the height, and a transpose (square
    images). ``None`` skips a step. The same arithmetic as :mod:`train.data.augment`, bit for bit.
    """
    n, c, h, w = _images(x, "augment_u8")
    b = len(idx)
    if b == 0:
        return torch.empty(0, c, h, w)
    idx, oy, ox = (None if t is None else _as(t, torch.int64, b) for t in (idx, oy, ox))
    flags = [None if t is None else _as(t, torch.bool, b) for t in (flip_w, flip_h, turn)]
    mean, inv_std = _as(mean, torch.float32, c), _as(inv_std, torch.float32, c)
    out = torch.empty(b, c, h, w)
    rc = _lib.augment_u8(x.data_ptr(), n, c, h, w, idx.data_ptr(), b, int(pad), _ptr(oy), _ptr(ox),
                         *(_ptr(f) for f in flags), mean.data_ptr(), inv_std.data_ptr(), out.data_ptr())
    if rc != 0:
        _check_indices(idx, n)
        raise ValueError(f"augment_u8 rejected its arguments (pad {pad}, offsets within [0, {2 * pad}] "
                         f"needed; a turn needs square images, got {h}x{w})")
    return out


def _check_indices(idx: torch.Tensor, n: int) -> None:
    """Name the first batch index outside the ``n`` training images (why a kernel said no)."""
    bad = idx[(idx < 0) | (idx >= n)]
    if len(bad):
        raise IndexError(f"batch index {int(bad[0])} out of range for {n} training images")


def _images(x: torch.Tensor, name: str):
    """(N, C, H, W) of the images a batch kernel reads, once the kernels are loaded and ``x`` is
    what the C code can read: contiguous uint8 [N, C, H, W] on the CPU."""
    if kernel() is None:
        raise RuntimeError(f"the native kernels are not loaded: {_state}")
    if not (x.dtype == torch.uint8 and x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous()):
        raise ValueError(f"{name} needs contiguous uint8 CPU images [N, C, H, W], got {x.dtype} "
                         f"{tuple(x.shape)} on {x.device}")
    return x.shape


def _as(t: torch.Tensor, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """``t`` as a contiguous CPU tensor of ``dtype`` with ``numel`` values (no copy when it is one:
    this runs every step). A bool tensor is one byte per value, which the C code reads as 0/1."""
    if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
        t = t.to("cpu", dtype).contiguous()
    if t.numel() != numel:
        raise ValueError(f"expected {numel} values, got a tensor of shape {tuple(t.shape)}")
    return t


def augment_robust_u8(x: torch.Tensor, idx: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor,
                      flip_w: Optional[torch.Tensor], flip_h: Optional[torch.Tensor],
                      turn: Optional[torch.Tensor], params: torch.Tensor, lut: torch.Tensor,
                      qtab: torch.Tensor, qinv: torch.Tensor, noise: torch.Tensor,
                      threads: Optional[int] = None) -> torch.Tensor:
    """``normalise(aerial_robust(x[idx]))`` as float32 [B, C, H, W], in one call: per sample the
    tone table ``lut`` [B, C, 256] and saturation, the zoom, blur, noise and JPEG of
    :mod:`train.data.robust`, whose :class:`~train.data.robust.RobustPlan` holds ``params``,
    ``lut``, ``qtab`` and ``qinv`` (``noise`` is its int16 noise field), then the flips and the
    turn. The same arithmetic as the PyTorch ops there, bit for bit. The samples are shared among
    ``threads`` threads (default: as many as PyTorch uses, like the convolutions around it); each
    is computed alone, so the result does not depend on how many."""
    from train.data import robust

    n, c, h, w = _images(x, "augment_robust_u8")
    b = len(idx)
    if b == 0:
        return torch.empty(0, c, h, w)
    idx = _as(idx, torch.int64, b)
    flags = [None if t is None else _as(t, torch.bool, b) for t in (flip_w, flip_h, turn)]
    tables = (_as(params, torch.int32, b * len(robust.PARAMS)), _as(lut, torch.uint8, b * c * 256),
              _as(qtab, torch.int32, b * 128), _as(qinv, torch.float32, b * 128),
              _as(noise, torch.int16, robust.NOISE_SIZE ** 2), _as(robust.dct_matrix(), torch.float32, 64))
    mean, inv_std = _as(mean, torch.float32, c), _as(inv_std, torch.float32, c)
    out = torch.empty(b, c, h, w)
    prm, lut_, qt, qi, nz, dct = tables
    rc = _lib.augment_robust_u8(x.data_ptr(), n, c, h, w, idx.data_ptr(), b, *(_ptr(f) for f in flags),
                                prm.data_ptr(), len(robust.PARAMS), lut_.data_ptr(), qt.data_ptr(),
                                qi.data_ptr(), nz.data_ptr(), dct.data_ptr(), mean.data_ptr(),
                                inv_std.data_ptr(), int(threads or torch.get_num_threads()),
                                out.data_ptr())
    if rc == 2:
        raise MemoryError("augment_robust_u8: out of memory")
    if rc != 0:
        _check_indices(idx, n)
        raise ValueError(f"augment_robust_u8 rejected its arguments (parameters out of range, or a "
                         f"turn of non-square {h}x{w} images)")
    return out
