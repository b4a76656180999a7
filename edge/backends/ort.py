"""ONNX Runtime backend: TensorRT EP -> CUDA EP -> CPU EP, reporting the provider that runs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edge.contract import (INPUT_NAME, META_PRECISION, OUTPUT_NAME, SCORE_MAP_NAME, ModelInfo,
                           decode_metadata)

PROVIDERS = {
    "ort-trt": "TensorrtExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-cpu": "CPUExecutionProvider",
}
PREFERENCE = ("ort-trt", "ort-cuda", "ort-cpu")


def _import_ort():
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        raise ImportError("the ONNX Runtime backend needs onnxruntime: `pip install onnxruntime` "
                          "(on a Jetson: onnxruntime-gpu from NVIDIA's Jetson packages, see "
                          "docs/jetson.md)") from None
    return ort


def provider_chain(backend: str, available: List[str], model_path: Path, cache_dir=None,
                   fp16: bool = False) -> List:
    """The providers list for ``InferenceSession``: the requested one first, then the slower ones."""
    if backend == "ort-auto":
        start = next((b for b in PREFERENCE if PROVIDERS[b] in available), "ort-cpu")
    else:
        if PROVIDERS[backend] not in available:
            raise RuntimeError(
                f"--backend {backend} needs {PROVIDERS[backend]}, which this onnxruntime does not "
                f"offer (available: {', '.join(available)}); install onnxruntime-gpu or choose "
                "--backend auto|ort-cpu")
        start = backend
    chain: List = []
    for b in PREFERENCE[PREFERENCE.index(start):]:
        name = PROVIDERS[b]
        if name not in available:
            continue
        if b == "ort-trt":
            cache = Path(cache_dir) if cache_dir else model_path.parent / (model_path.stem + ".ort-trt-cache")
            cache.mkdir(parents=True, exist_ok=True)
            chain.append((name, {
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                "trt_fp16_enable": bool(fp16),
            }))
        else:
            chain.append(name)
    return chain


class OrtBackend:
    """``OrtBackend("crowd.onnx")(x) -> logits``; ``.provider`` says which EP actually runs."""

    kind = "ort"

    def __init__(self, path, backend: str = "ort-auto", threads: Optional[int] = None,
                 cache_dir=None, fp16: bool = False) -> None:
        ort = _import_ort()
        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # the pipeline's reader thread decodes while we infer: leave it a core by default
        n = threads if threads else max(1, (os.cpu_count() or 2) - 1)
        opts.intra_op_num_threads = int(n)
        opts.inter_op_num_threads = 1
        self.threads = int(n)
        chain = provider_chain(backend, ort.get_available_providers(), self.path, cache_dir, fp16)
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=chain)
        self.provider = self.session.get_providers()[0]
        self.name = next((b for b, p in PROVIDERS.items() if p == self.provider), self.provider)
        meta = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.info = ModelInfo.from_metadata(meta)
        self.precision = str(meta.get(META_PRECISION, "fp32"))
        self._check_io()
        self.max_batch = None  # dynamic

    def _check_io(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in ins or OUTPUT_NAME not in outs:
            raise ValueError(f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                             f"found inputs {list(ins)} outputs {list(outs)}")
        shape = ins[INPUT_NAME].shape  # e.g. ['batch', 3, 128, 128]
        self.spatial_dynamic = not all(isinstance(d, int) for d in shape[2:])
        self.has_dense = SCORE_MAP_NAME in outs and self.spatial_dynamic

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def score_map(self, batch: np.ndarray) -> np.ndarray:
        """Dense logits [N, C, h, w] for inputs of any size (only if the ONNX has ``score_map``)."""
        if not self.has_dense:
            raise ValueError(f"{self.path} has no dense {SCORE_MAP_NAME!r} output with dynamic H/W; "
                             "use --heatmap-impl tiles")
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([SCORE_MAP_NAME], {INPUT_NAME: x})[0]

    def describe(self) -> Dict[str, object]:
        import onnxruntime as ort  # noqa: PLC0415

        return {"backend": self.name, "provider": self.provider, "precision": self.precision,
                "threads": self.threads, "onnxruntime": ort.__version__,
                "providers_available": ort.get_available_providers()}
