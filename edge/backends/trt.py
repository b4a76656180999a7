"""TensorRT engine backend: name-based API (TensorRT 8.5 -> 11), cuda-python buffers, one stream.

Written against the documented API (docs/tensorrt.md, "The TensorRT API per line"). Every
TensorRT name used here is checked against the real Python bindings of 8.6, 10.x and 11.x on CPU
(tests/test_trt_bindings.py); running an engine needs a GPU, so the tests that do carry the
``trt`` marker. The sidecar fingerprint is checked (``edge.sidecar.check_engine``) before
TensorRT is imported or the plan read.

This is the one engine runner: ``python -m export.trt`` checks a fresh engine with this class
(:meth:`TrtBackend.run_all`, every named output), so the code checked at export is the code that
runs on the device.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.backends.cuda_rt import check, cudart
from edge.contract import INPUT_NAME, META_PRECISION, OUTPUT_NAME, ModelInfo
from edge.device import import_tensorrt
from edge.sidecar import (FP_DLA_CORE, FP_GPU_NAME, FP_PRECISION, FP_PROFILE, KEY_FINGERPRINT,
                          check_engine, read_sidecar, sidecar_metadata)

_NP_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
              "BOOL": np.bool_, "UINT8": np.uint8, "INT64": np.int64}


class TensorRTUnusable(RuntimeError):
    """TensorRT imports but cannot create its Builder/Runtime here (no usable GPU or driver)."""


def create_trt_object(trt, factory, logger):
    """``factory(logger)`` (``trt.Builder``, ``trt.Runtime``), or :class:`TensorRTUnusable` in one line.

    Without a usable GPU or driver TensorRT's factory returns NULL and pybind11 raises
    ``TypeError: pybind11::init(): factory function returned nullptr`` (docs/tensorrt.md,
    "Without a GPU"); any other TypeError is a programming error and propagates unchanged.
    """
    try:
        return factory(logger)
    except TypeError as e:
        if "nullptr" not in str(e):
            raise
        raise TensorRTUnusable(f"TensorRT {trt.__version__} cannot create a {factory.__name__}: no "
                               "usable CUDA GPU or driver here (see the TensorRT log line above)") from None


def _np_dtype(trt_dtype) -> np.dtype:
    name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1].upper()
    if name not in _NP_DTYPES:
        raise ValueError(f"unsupported TensorRT I/O dtype {trt_dtype}")
    return np.dtype(_NP_DTYPES[name])


def batch_chunks(n: int, min_batch: int, max_batch: int) -> List[Tuple[int, int, int]]:
    """How ``n`` samples go through a profile [min_batch, max_batch]: ``(start, stop, size)`` per
    call, ``size`` >= ``stop - start`` being the batch actually sent (a chunk below the profile's
    minimum is padded up to it; an engine refuses a shape outside its profile)."""
    if not 1 <= min_batch <= max_batch:
        raise ValueError(f"bad engine profile: min batch {min_batch}, max batch {max_batch}")
    if n < 1:
        raise ValueError(f"empty batch: {n} samples")
    return [(i, min(i + max_batch, n), max(min(i + max_batch, n) - i, min_batch))
            for i in range(0, n, max_batch)]


def pad_batch(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` with its last sample repeated up to ``size`` rows (padding only: samples are
    independent, and a real sample keeps the values in range for fp16/int8 engines)."""
    if len(x) >= size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


class _Pinned:
    """A page-locked host buffer viewed as a numpy array (``cudaMallocHost``)."""

    def __init__(self, rt, nbytes: int, dtype) -> None:
        self.rt = rt
        self.ptr = check(rt.cudaMallocHost(nbytes), "cudaMallocHost")
        self.nbytes = nbytes
        raw = (ctypes.c_byte * nbytes).from_address(int(self.ptr))
        self.array = np.frombuffer(raw, dtype=dtype)

    def free(self) -> None:
        if self.ptr is not None:
            check(self.rt.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = None


class TrtBackend:
    """``TrtBackend("crowd.engine")(x) -> logits``; ``last_timing`` holds h2d/compute/d2h ms."""

    kind = "trt"
    name = "trt"

    def __init__(self, path, check_fingerprint: bool = True, profile_index: int = 0) -> None:
        self.path = Path(path)
        # refuse a foreign engine before TensorRT sees it (contract 3)
        self.sidecar = check_engine(self.path) if check_fingerprint else read_sidecar(self.path)
        meta = sidecar_metadata(self.sidecar)
        self.info = ModelInfo.from_metadata(meta)
        fp = self.sidecar[KEY_FINGERPRINT]
        self.precision = str(fp.get(FP_PRECISION) or meta.get(META_PRECISION, "n/a"))
        trt = self.trt = import_tensorrt()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = create_trt_object(trt, trt.Runtime, self.logger)
        if fp.get(FP_DLA_CORE) is not None:     # a DLA plan deserialises onto the core it targets
            self.runtime.DLA_core = int(fp[FP_DLA_CORE])
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {self.path} although its sidecar "
                               "matches this device; rebuild it with `python -m export.trt`")
        self.rt = cudart()
        self.context = self.engine.create_execution_context()
        self.provider = f"TensorRT {trt.__version__}"
        self.has_dense = False
        self._setup_io(profile_index)
        self.stream = check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self._events = [check(self.rt.cudaEventCreate(), "cudaEventCreate") for _ in range(4)]
        self.last_timing: Dict[str, float] = {}

    def _setup_io(self, profile_index: int) -> None:
        trt, eng = self.trt, self.engine
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        modes = {n: eng.get_tensor_mode(n) for n in names}
        if modes.get(INPUT_NAME) != trt.TensorIOMode.INPUT or modes.get(OUTPUT_NAME) != trt.TensorIOMode.OUTPUT:
            raise ValueError(f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                             f"engine has {names}")
        lo, _opt, hi = (tuple(s) for s in eng.get_tensor_profile_shape(INPUT_NAME, profile_index))
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self.input_shape_chw = tuple(int(d) for d in hi[1:])
        self.dtypes = {n: _np_dtype(eng.get_tensor_dtype(n)) for n in names}
        # size every buffer for the largest batch of the profile, once
        self.context.set_input_shape(INPUT_NAME, hi)
        self.device: Dict[str, int] = {}
        self.host: Dict[str, _Pinned] = {}
        for n in names:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise ValueError(f"tensor {n!r} still has a dynamic shape {shape} at max batch")
            nbytes = int(np.prod(shape)) * self.dtypes[n].itemsize
            self.device[n] = check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({n})")
            self.host[n] = _Pinned(self.rt, nbytes, self.dtypes[n])
            self.context.set_tensor_address(n, int(self.device[n]))
        self.outputs = [n for n in names if modes[n] == trt.TensorIOMode.OUTPUT]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits [N, classes] for a float32 NCHW batch of any size."""
        return self.run_all(batch, (OUTPUT_NAME,))[OUTPUT_NAME]

    def run_all(self, batch: np.ndarray,
                names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """Every named output (or those in ``names``) for a batch of any size: chunks of the
        profile's maximum, the last one padded up to its minimum and the padding dropped."""
        x = np.asarray(batch)
        if tuple(x.shape[1:]) != self.input_shape_chw:
            raise ValueError(f"engine {self.path.name} takes [N, {', '.join(map(str, self.input_shape_chw))}], "
                             f"got {list(x.shape)}")
        names = tuple(self.outputs if names is None else names)
        unknown = [n for n in names if n not in self.outputs]
        if unknown:
            raise ValueError(f"engine {self.path.name} has no output {unknown}; it has {self.outputs}")
        parts: Dict[str, List[np.ndarray]] = {n: [] for n in names}
        for start, stop, size in batch_chunks(len(x), self.min_batch, self.max_batch):
            out = self._run(pad_batch(x[start:stop], size), names)
            for n in names:
                parts[n].append(out[n][:stop - start])
        return {n: v[0] if len(v) == 1 else np.concatenate(v) for n, v in parts.items()}

    def _run(self, x: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        """One call inside the profile: H2D, execute, D2H of ``names`` (timed with CUDA events)."""
        rt, s, ev = self.rt, self.stream, self._events
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
        hin = self.host[INPUT_NAME].array[: x.size]
        np.copyto(hin, x.astype(self.dtypes[INPUT_NAME], copy=False).ravel())
        check(rt.cudaEventRecord(ev[0], s), "cudaEventRecord")
        check(rt.cudaMemcpyAsync(self.device[INPUT_NAME], self.host[INPUT_NAME].ptr,
                                 hin.nbytes, h2d, s), "cudaMemcpyAsync H2D")
        check(rt.cudaEventRecord(ev[1], s), "cudaEventRecord")
        if not self.context.execute_async_v3(int(s)):   # the raw cudaStream_t handle
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        check(rt.cudaEventRecord(ev[2], s), "cudaEventRecord")
        shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in names}
        for n in names:
            nbytes = int(np.prod(shapes[n])) * self.dtypes[n].itemsize
            check(rt.cudaMemcpyAsync(self.host[n].ptr, self.device[n], nbytes, d2h, s),
                  f"cudaMemcpyAsync D2H ({n})")
        check(rt.cudaEventRecord(ev[3], s), "cudaEventRecord")
        check(rt.cudaStreamSynchronize(s), "cudaStreamSynchronize")
        ms = [check(rt.cudaEventElapsedTime(ev[i], ev[i + 1]), "cudaEventElapsedTime") for i in range(3)]
        self.last_timing = {"h2d_ms": float(ms[0]), "compute_ms": float(ms[1]), "d2h_ms": float(ms[2])}
        return {n: self.host[n].array[:int(np.prod(shapes[n]))].reshape(shapes[n]).astype(np.float32, copy=True)
                for n in names}

    def describe(self) -> Dict[str, object]:
        fp = self.sidecar.get(KEY_FINGERPRINT, {})
        return {"backend": "trt", "provider": self.provider, "precision": self.precision,
                "profile": fp.get(FP_PROFILE), "gpu": fp.get(FP_GPU_NAME), "tensorrt": self.trt.__version__}

    def close(self) -> None:
        for buf in self.host.values():
            buf.free()
        for ptr in self.device.values():
            check(self.rt.cudaFree(ptr), "cudaFree")
        for e in self._events:
            check(self.rt.cudaEventDestroy(e), "cudaEventDestroy")
        check(self.rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
        self.host, self.device, self._events = {}, {}, []
