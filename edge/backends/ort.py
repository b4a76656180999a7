"""ONNX Runtime backend: TensorRT EP -> CUDA EP -> CPU EP, reporting the provider that ran.

Never a silent downgrade (docs/tensorrt.md, "ONNX Runtime"): a provider ONNX Runtime drops while
creating the session, or one that runs no node at the first ``run()`` (the TensorRT provider
builds its engine there and falls back to CUDA when that fails), is an error when it was asked
for by name and a warning under ``auto``; ``provider`` and :meth:`OrtBackend.describe` always
name what ran.
"""
from __future__ import annotations

import json
import mmap
import os
import shutil
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Dict, FrozenSet, List, Mapping, Optional, Tuple

import numpy as np

from edge import onnx_wire
from edge.contract import (INPUT_NAME, META_PRECISION, OUTPUT_NAME, PRECISIONS, SCORE_MAP_NAME,
                           ModelInfo, decode_metadata)

PROVIDERS = {
    "ort-trt": "TensorrtExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-cpu": "CPUExecutionProvider",
}
PREFERENCE = ("ort-trt", "ort-cuda", "ort-cpu")
TRT_PROVIDER_LIBS = ("libonnxruntime_providers_tensorrt.so", "onnxruntime_providers_tensorrt.dll")
#: the TensorRT provider options used here and the first onnxruntime release that has each
#: (1.16: the oldest this project supports); only consulted when the provider library
#: itself cannot be read
TRT_OPTION_SINCE = {
    "trt_fp16_enable": (1, 16), "trt_int8_enable": (1, 16),
    "trt_engine_cache_enable": (1, 16), "trt_engine_cache_path": (1, 16),
    "trt_timing_cache_enable": (1, 16), "trt_timing_cache_path": (1, 17),
    "trt_profile_min_shapes": (1, 16), "trt_profile_opt_shapes": (1, 16),
    "trt_profile_max_shapes": (1, 16),
}


def _import_ort():
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        raise ImportError("the ONNX Runtime backend needs onnxruntime: `pip install onnxruntime` "
                          "(on a Jetson: onnxruntime-gpu from NVIDIA's Jetson packages, see "
                          "docs/jetson.md)") from None
    return ort


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in text.split("+")[0].split(".")[:2] if p.isdigit())


def trt_option_names(ort) -> Tuple[FrozenSet[str], str]:
    """The TensorRT provider options (of :data:`TRT_OPTION_SINCE`) this onnxruntime knows, and how
    that was found. An unknown option makes ONNX Runtime drop the whole provider, so the names
    are read from the provider library (its option parser holds them as strings); without that
    library, from the release that introduced each option."""
    capi = Path(ort.__file__).parent / "capi"
    lib = next((capi / n for n in TRT_PROVIDER_LIBS if (capi / n).is_file()), None)
    if lib is not None:
        with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = {n for n in TRT_OPTION_SINCE if data.find(n.encode() + b"\0") >= 0}
        return frozenset(found), f"read from {lib.name}"
    have = _version(ort.__version__)
    return (frozenset(n for n, since in TRT_OPTION_SINCE.items() if have >= since),
            f"onnxruntime {ort.__version__} (no TensorRT provider library to read)")


def trt_major() -> Optional[int]:
    """The TensorRT major version ONNX Runtime's provider will use, when the bindings tell."""
    from edge.device import tensorrt_version  # noqa: PLC0415

    v = tensorrt_version()
    return int(v.split(".")[0]) if v else None


def trt_options(cache: Path, precision: str, qdq: bool, known: FrozenSet[str],
                major: Optional[int], profile: Optional[Mapping[str, List[int]]] = None
                ) -> Tuple[Dict[str, object], List[str]]:
    """The TensorRT provider's options for ``precision``, and the useful ones this onnxruntime
    lacks (left out: an unknown option would drop the provider). A Q/DQ model needs
    ``trt_int8_enable`` on TensorRT <= 10 (11 has no INT8 flag; unknown counts as <= 10, what
    every onnxruntime-gpu release links); fp16 and int8 also let the unquantised layers run fp16,
    as ``export.trt`` builds them."""
    want: Dict[str, object] = {
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": precision in ("fp16", "int8")}
    if qdq and (major is None or major <= 10):
        want["trt_int8_enable"] = True
    if profile is not None:      # one engine for every batch in range, not one per new shape
        for k in ("min", "opt", "max"):
            want[f"trt_profile_{k}_shapes"] = f"{INPUT_NAME}:" + "x".join(map(str, profile[k]))
    needed = {"trt_fp16_enable"} if precision == "fp16" else set()
    needed |= {"trt_int8_enable"} if "trt_int8_enable" in want else set()
    missing = sorted(needed - known)
    if missing:
        raise RuntimeError(f"this onnxruntime's TensorRT provider lacks {', '.join(missing)}, "
                           f"needed for {precision}; upgrade onnxruntime-gpu")
    return ({k: v for k, v in want.items() if k in known},
            sorted(k for k in want if k not in known))


def first_backend(backend: str, available: List[str]) -> str:
    """The backend that heads the chain: the requested one (an error when this onnxruntime does
    not offer it), or under ``ort-auto`` the fastest available."""
    if backend == "ort-auto":
        return next((b for b in PREFERENCE if PROVIDERS[b] in available), "ort-cpu")
    if backend not in PROVIDERS:
        raise ValueError(f"backend {backend!r} not in {('ort-auto',) + PREFERENCE}")
    if PROVIDERS[backend] not in available:
        raise RuntimeError(
            f"--backend {backend} needs {PROVIDERS[backend]}, which this onnxruntime does not "
            f"offer (available: {', '.join(available)}); install onnxruntime-gpu or choose "
            "--backend auto|ort-cpu")
    return backend


def provider_chain(backend: str, available: List[str], model_path: Path, cache_dir=None,
                   trt: Optional[Mapping[str, object]] = None) -> List:
    """The providers list for ``InferenceSession``: the requested one first, then the slower ones;
    ``trt`` holds the TensorRT provider's options (default: caches beside the model)."""
    start = first_backend(backend, available)
    chain: List = []
    for b in PREFERENCE[PREFERENCE.index(start):]:
        name = PROVIDERS[b]
        if name not in available:
            continue
        if b == "ort-trt":
            cache = Path(cache_dir) if cache_dir else trt_cache_dir(model_path)
            cache.mkdir(parents=True, exist_ok=True)
            options = dict(trt) if trt is not None else {
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
            chain.append((name, options))
        else:
            chain.append(name)
    return chain


def trt_cache_dir(model_path: Path) -> Path:
    return model_path.parent / (model_path.stem + ".ort-trt-cache")


def resolve_precision(requested: Optional[str], model_precision: str, qdq: bool,
                      first_provider: str) -> str:
    """The precision a session runs at. The model's own unless asked otherwise; only the TensorRT
    provider can lower an fp32 model to fp16; int8 needs a Q/DQ model (never implicit)."""
    own = "int8" if qdq else model_precision
    if requested is None or requested == own:
        return own
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} not in {PRECISIONS}")
    if requested == "fp16" and own == "fp32" and first_provider == PROVIDERS["ort-trt"]:
        return "fp16"
    if requested == "int8":
        raise ValueError("--precision int8 needs the Q/DQ ONNX (model.int8.onnx, written by "
                         "`python -m export.trt MODEL --precision int8`)")
    if requested == "fp16":
        raise ValueError(f"--precision fp16 on an {own} ONNX needs the TensorRT provider "
                         f"(--backend ort-trt); {first_provider} runs the ONNX as it is")
    raise ValueError(f"--precision {requested}: this ONNX is {own}")


# ------------------------------------------------------------------------- what ran
def providers_in_profile(path) -> Counter:
    """Nodes per execution provider in an ONNX Runtime profile (its per-node kernel events)."""
    events = json.loads(Path(path).read_text())
    return Counter(e["args"]["provider"] for e in events
                   if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
                   and "provider" in e.get("args", {}))


def placement_verdict(requested: str, ran: Mapping[str, int], explicit: bool) -> Tuple[str, Optional[str]]:
    """``(provider that ran, warning or None)``; RuntimeError when an explicitly requested
    provider ran nothing."""
    if requested in ran or not ran:
        return requested, None
    actual = max(ran, key=lambda p: ran[p])
    msg = (f"ONNX Runtime ran no node on {requested} (nodes per provider: "
           f"{', '.join(f'{p} {n}' for p, n in sorted(ran.items()))}); "
           + ("the TensorRT engine build failed at the first run (see the ONNX Runtime log above)"
              if requested == PROVIDERS["ort-trt"] else "see the ONNX Runtime log above"))
    if explicit:
        raise RuntimeError(msg)
    return actual, msg + f"; running on {actual}"


def _name(provider: str) -> str:
    return next((b for b, p in PROVIDERS.items() if p == provider), provider)


class OrtBackend:
    """``OrtBackend("crowd.onnx")(x) -> logits``; ``.provider`` says which EP actually runs
    (checked after the first call when a GPU provider was asked for)."""

    kind = "ort"

    def __init__(self, path, backend: str = "ort-auto", threads: Optional[int] = None,
                 cache_dir=None, precision: Optional[str] = None,
                 trt_profile: Optional[Mapping[str, List[int]]] = None) -> None:
        """``trt_profile``: the TensorRT provider's optimisation profile ({"min"/"opt"/"max":
        [N, C, H, W]}); without it the provider builds a new engine for each new input shape."""
        ort = self.ort = _import_ort()
        self.path = Path(path)
        self.explicit = backend != "ort-auto"
        raw = onnx_wire.model_metadata(self.path)
        qdq = onnx_wire.is_qdq(self.path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # the pipeline's reader thread decodes while we infer: leave it a core by default
        n = threads if threads else max(1, (os.cpu_count() or 2) - 1)
        opts.intra_op_num_threads = int(n)
        opts.inter_op_num_threads = 1
        self.threads = int(n)
        available = ort.get_available_providers()
        self.requested = PROVIDERS[first_backend(backend, available)]
        self.precision = resolve_precision(precision, str(raw.get(META_PRECISION, "fp32")), qdq,
                                           self.requested)
        self.trt_options_dropped: List[str] = []
        self.trt_options_source: Optional[str] = None
        trt = None
        if self.requested == PROVIDERS["ort-trt"]:
            known, self.trt_options_source = trt_option_names(ort)
            cache = Path(cache_dir) if cache_dir else trt_cache_dir(self.path)
            trt, self.trt_options_dropped = trt_options(cache, self.precision, qdq, known,
                                                        trt_major(), trt_profile)
        chain = provider_chain(backend, available, self.path, cache_dir, trt)
        self._profile_dir = None
        if self.requested != PROVIDERS["ort-cpu"]:   # learn what ran from the first run's profile
            self._profile_dir = tempfile.mkdtemp(prefix="edge-ort-profile-")
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(self._profile_dir, "first-run")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=chain)
        except BaseException:
            if self._profile_dir is not None:
                shutil.rmtree(self._profile_dir, ignore_errors=True)
            raise
        self.nodes_by_provider: Dict[str, int] = {}
        self._set_provider(self._registered_provider())
        meta = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.info = ModelInfo.from_metadata(meta)
        self._check_io()
        self.max_batch = None  # dynamic

    def _registered_provider(self) -> str:
        """The requested provider if the session kept it; else the verdict on its drop."""
        have = self.session.get_providers()
        if self.requested in have:
            return self.requested
        self._end_profiling()
        msg = (f"ONNX Runtime dropped {self.requested} while creating the session (see its log "
               f"above); providers kept: {', '.join(have)}")
        if self.explicit:
            raise RuntimeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return have[0]

    def _set_provider(self, provider: str) -> None:
        self.provider = provider
        self.name = _name(provider)

    def _end_profiling(self) -> Optional[Counter]:
        if self._profile_dir is None:
            return None
        try:
            path = self.session.end_profiling()
            return providers_in_profile(path) if path else None
        finally:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
            self._profile_dir = None

    def _check_first_run(self) -> None:
        ran = self._end_profiling()
        if ran is None:
            return
        self.nodes_by_provider = dict(ran)
        provider, warning = placement_verdict(self.provider, ran, self.explicit)
        if warning:
            warnings.warn(warning, RuntimeWarning, stacklevel=3)
        self._set_provider(provider)

    def _check_io(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in ins or OUTPUT_NAME not in outs:
            raise ValueError(f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                             f"found inputs {list(ins)} outputs {list(outs)}")
        shape = ins[INPUT_NAME].shape  # e.g. ['batch', 3, 128, 128]
        self.spatial_dynamic = not all(isinstance(d, int) for d in shape[2:])
        self.has_dense = SCORE_MAP_NAME in outs and self.spatial_dynamic

    def _run(self, name: str, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        out = self.session.run([name], {INPUT_NAME: x})[0]
        if self._profile_dir is not None:
            self._check_first_run()
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(OUTPUT_NAME, batch)

    def score_map(self, batch: np.ndarray) -> np.ndarray:
        """Dense logits [N, C, h, w] for inputs of any size (only if the ONNX has ``score_map``)."""
        if not self.has_dense:
            raise ValueError(f"{self.path} has no dense {SCORE_MAP_NAME!r} output with dynamic H/W; "
                             "use --heatmap-impl tiles")
        return self._run(SCORE_MAP_NAME, batch)

    def describe(self) -> Dict[str, object]:
        out = {"backend": self.name, "provider": self.provider, "precision": self.precision,
               "threads": self.threads, "onnxruntime": self.ort.__version__,
               "providers_available": self.ort.get_available_providers()}
        if self.nodes_by_provider:
            out["nodes_by_provider"] = dict(self.nodes_by_provider)
        if self.trt_options_source:
            out["trt_options"] = {"known_from": self.trt_options_source,
                                  "unsupported": list(self.trt_options_dropped)}
        return out

    def close(self) -> None:
        self._end_profiling()
