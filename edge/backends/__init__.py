"""Inference backends: one small class each, ``backend(batch) -> logits`` (float32 NCHW in).

``open_backend(model, "auto")`` picks TensorRT for a ``.engine`` and ONNX Runtime (TensorRT EP ->
CUDA EP -> CPU EP, whichever this install offers) for a ``.onnx``; an explicitly requested
backend that is not available is an error, never a silent downgrade.
"""
from __future__ import annotations

from typing import Optional

from edge.builtin import resolve_model
from edge.contract import PRECISIONS

BACKENDS = ("auto", "trt", "ort-trt", "ort-cuda", "ort-cpu")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def open_backend(model, backend: str = "auto", threads: Optional[int] = None,
                 cache_dir=None, check_fingerprint: bool = True, precision: Optional[str] = None):
    """Open ``model`` (.onnx, .engine, or a built-in name such as ``crowd``) with ``backend``
    (one of :data:`BACKENDS`).

    ``precision`` (fp32/fp16/int8; default: the model's own): an engine's is fixed when it is
    built, so it must match; ``ort-trt`` can run an fp32 ONNX at fp16; int8 is a Q/DQ ONNX.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} not in {BACKENDS}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    path = resolve_model(model)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    is_engine = path.suffix.lower() in ENGINE_SUFFIXES
    if backend == "auto":
        backend = "trt" if is_engine else "ort-auto"
    if backend == "trt":
        if not is_engine:
            raise ValueError(f"--backend trt needs a TensorRT engine ({'/'.join(ENGINE_SUFFIXES)}), "
                             f"got {path}; build one with `python -m export.trt MODEL.pt`")
        from edge.backends.trt import TrtBackend

        engine = TrtBackend(path, check_fingerprint=check_fingerprint)
        if precision is not None and precision != engine.precision:
            engine.close()
            raise ValueError(f"{path} is a {engine.precision} engine, not {precision}: rebuild it "
                             f"with `python -m export.trt MODEL.onnx --precision {precision}`")
        return engine
    if is_engine:
        raise ValueError(f"--backend {backend} runs ONNX models; {path} is a TensorRT engine "
                         "(use --backend trt or auto)")
    from edge.backends.ort import OrtBackend

    return OrtBackend(path, backend=backend, threads=threads, cache_dir=cache_dir,
                      precision=precision)
