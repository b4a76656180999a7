"""The thin TensorRT glue: version dispatch, builder settings and the engine build.

Everything that decides *what* to do is a pure function of the TensorRT version string and the
names its enums expose (:func:`plan_build`, :func:`profile_shapes`, :func:`dla_allowed`), so it
is unit-tested on CPU, and against the real bindings of 8.6, 10.x and 11.x
(tests/test_trt_bindings.py). :func:`build_engine` imports TensorRT inside and follows
docs/tensorrt.md: name-based API only (8.5 .. 11), ``set_memory_pool_limit``,
``build_serialized_network``, no EXPLICIT_BATCH from 10 on, STRONGLY_TYPED for Q/DQ or fp16 ONNX
where the FP16/INT8 builder flags are gone (11), flags looked up by name rather than by version
arithmetic, a timing cache reused across builds, DLA only where the version and the device have
it. Running an engine is the runtime's job (``edge.backends.trt.TrtBackend``), for the export
gate too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

from edge.backends.trt import create_trt_object
from edge.contract import INPUT_NAME, PRECISIONS
from edge.device import import_tensorrt
from edge.files import atomic_write

def version_tuple(version: str) -> Tuple[int, int, int]:
    parts = [int(p) for p in str(version).split(".")[:3] if p.isdigit()]
    if not parts:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]


# ------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class BuildPlan:
    precision: str                     # fp32 / fp16 / int8 (what the user asked for)
    onnx_kind: str                     # which ONNX to parse: fp32, fp16 (mixed) or int8 (Q/DQ)
    builder_flags: Tuple[str, ...]     # BuilderFlag names to set
    clear_flags: Tuple[str, ...]       # BuilderFlag names to clear
    network_flags: Tuple[str, ...]     # NetworkDefinitionCreationFlag names
    notes: Tuple[str, ...] = ()

    def describe(self) -> str:
        bits = [f"precision {self.precision} from the {self.onnx_kind} ONNX"]
        if self.builder_flags:
            bits.append("builder flags " + "+".join(self.builder_flags))
        if self.clear_flags:
            bits.append("cleared " + "+".join(self.clear_flags))
        if self.network_flags:
            bits.append("network " + "+".join(self.network_flags))
        return "; ".join(bits + list(self.notes))


def plan_build(precision: str, trt_version: str, builder_flags: Collection[str],
               network_flags: Collection[str]) -> BuildPlan:
    """What to build for ``precision`` on this TensorRT, given the enum names it has.

    * <= 10: FP16 is the builder flag on the fp32 ONNX; INT8 parses the Q/DQ ONNX with the INT8
      flag (explicit quantisation still needs it there) plus FP16 for the layers left in float.
    * 11: the flags are gone; the network is strongly typed (always, on 11) and the precision
      comes from the ONNX itself: the mixed fp16 ONNX, or the Q/DQ ONNX.
    * fp32 clears TF32 where it exists, so the fp32 engine is comparable to fp32 ONNX Runtime.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    major = version_tuple(trt_version)[0]
    net: List[str] = []
    if major < 10 and "EXPLICIT_BATCH" in network_flags:   # ignored on 10, absent on 11
        net.append("EXPLICIT_BATCH")

    def strongly_typed() -> Tuple[str, ...]:
        # on 11 the flag is deprecated and always on; 8.5 does not have it
        if major < 11 and "STRONGLY_TYPED" in network_flags:
            return ("STRONGLY_TYPED",)
        return ()

    clear = ("TF32",) if "TF32" in builder_flags else ()
    if precision == "fp32":
        return BuildPlan("fp32", "fp32", (), clear, tuple(net))
    if precision == "fp16":
        if "FP16" in builder_flags:
            return BuildPlan("fp16", "fp32", ("FP16",), (), tuple(net))
        return BuildPlan("fp16", "fp16", (), (), tuple(net) + strongly_typed(),
                         ("no FP16 builder flag: mixed-precision ONNX, strongly typed",))
    if "INT8" in builder_flags:
        flags = ("INT8", "FP16") if "FP16" in builder_flags else ("INT8",)
        return BuildPlan("int8", "int8", flags, (), tuple(net), ("explicit Q/DQ quantisation",))
    return BuildPlan("int8", "int8", (), (), tuple(net) + strongly_typed(),
                     ("no INT8 builder flag: Q/DQ ONNX, strongly typed",))


def enum_names(enum) -> set:
    """Member names of a pybind11 enum (``trt.BuilderFlag``), robust across versions."""
    members = getattr(enum, "__members__", None)
    if members:
        return set(members)
    return {n for n in dir(enum) if n.isupper()}


def profile_shapes(chw: Sequence[int], min_batch: int, opt_batch: int,
                   max_batch: int) -> Dict[str, List[int]]:
    """Optimisation profile for ``input``: {"min"/"opt"/"max": [N, C, H, W]}."""
    if not (1 <= min_batch <= opt_batch <= max_batch):
        raise ValueError(f"need 1 <= min-batch <= opt-batch <= max-batch, got "
                         f"{min_batch}/{opt_batch}/{max_batch}")
    if len(chw) != 3 or min(chw) < 1:
        raise ValueError(f"input shape must be (C, H, W) of positive ints, got {tuple(chw)}")
    c, h, w = (int(v) for v in chw)
    return {"min": [min_batch, c, h, w], "opt": [opt_batch, c, h, w], "max": [max_batch, c, h, w]}


def dla_request_problem(precision: str, batches: Sequence[int], trt_version: Optional[str] = None,
                        qdq: bool = False) -> Optional[str]:
    """Why ``--dla`` cannot be honoured on any device (None when it can), from the request alone
    and, when known, the TensorRT version (docs/tensorrt.md, "DLA"). With GPU fallback these
    builds would run on the GPU while the sidecar says DLA, so they are refused."""
    if precision == "fp32":
        return "DLA runs fp16 or int8 only; pass --precision fp16 or int8"
    lo, opt, hi = (int(b) for b in batches)
    if not lo == opt == hi:
        return (f"DLA needs a static shape, min = opt = max batch (got {lo}/{opt}/{hi}); pass "
                f"--min-batch {hi} --opt-batch {hi} --max-batch {hi}")
    if trt_version is None:
        return None
    v = version_tuple(trt_version)
    if v[0] == 11 and v[:2] < (11, 4):
        return f"TensorRT {trt_version} has no DLA support (absent in 11.0-11.3)"
    if v[:3] == (10, 2, 0):
        return "TensorRT 10.2.0 has a known DLA issue (excluded, as ultralytics does)"
    if v[0] < 10 and qdq:
        return (f"TensorRT {trt_version} does not run explicitly quantised (Q/DQ) networks on DLA; "
                "use --precision fp16 with --dla, or TensorRT >= 10")
    return None


def dla_allowed(trt_version: str, num_dla_cores: int, dla_core: int, precision: str, *,
                batches: Optional[Sequence[int]] = None, qdq: bool = False) -> Tuple[bool, str]:
    """Whether ``--dla dla_core`` can be honoured on this device; the reason when not."""
    problem = dla_request_problem(precision, batches or (1, 1, 1), trt_version, qdq)
    if problem:
        return False, problem
    if num_dla_cores <= 0:
        return False, "this device has no DLA cores (e.g. Orin Nano, desktop GPUs)"
    if not 0 <= dla_core < num_dla_cores:
        return False, f"DLA core {dla_core} does not exist; this device has {num_dla_cores}"
    return True, f"DLA core {dla_core} with GPU fallback"


def dla_layer_report(builder_layers: Mapping[str, bool],
                     inspector_json: Optional[str]) -> Dict[str, Any]:
    """Which layers run where, as far as TensorRT tells (for the sidecar's ``build``).

    ``builder_layers``: network layer name -> ``IBuilderConfig.can_run_on_DLA`` (the builder's
    answer before building). ``inspector_json``: the engine inspector's
    ``LayerInformationFormat.JSON`` of the built engine; with ``ProfilingVerbosity.DETAILED`` its
    layers are objects with a ``LayerType``, and a layer TensorRT placed on DLA says so there.
    With layer names only (or no inspector) the engine's own placement is left unknown.
    """
    gpu = [n for n, ok in builder_layers.items() if not ok]
    out: Dict[str, Any] = {"builder": {"layers": len(builder_layers),
                                       "dla": len(builder_layers) - len(gpu), "gpu_fallback": gpu}}
    engine: Dict[str, Any] = {"source": "engine inspector", "known": False}
    try:
        layers = json.loads(inspector_json)["Layers"] if inspector_json else None
    except (ValueError, KeyError, TypeError):
        layers = None
    if layers and all(isinstance(x, dict) for x in layers):
        rows = [(str(x.get("Name", "?")), str(x.get("LayerType", "?"))) for x in layers]
        on_dla = [n for n, kind in rows if "dla" in kind.lower()]
        engine = {"source": "engine inspector", "known": True, "layers": len(rows),
                  "dla": on_dla, "gpu": [n for n, kind in rows if "dla" not in kind.lower()],
                  "layer_types": sorted({kind for _, kind in rows})}
    elif layers is not None:
        engine["why"] = "the inspector gave layer names only"
    else:
        engine["why"] = "no engine inspector output"
    out["engine"] = engine
    return out


def network_flag_bits(trt, names: Sequence[str]) -> int:
    bits = 0
    for n in names:
        bits |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, n))
    return bits


# ------------------------------------------------------------------------- build
def _parse(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path)) if hasattr(parser, "parse_from_file") \
        else parser.parse(onnx_path.read_bytes())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors))


def _timing_cache(config, path: Optional[Path]):
    old = path.read_bytes() if path and path.is_file() else b""
    cache = config.create_timing_cache(old)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(onnx_path, engine_path, plan: BuildPlan, profile: Dict[str, List[int]], *,
                 workspace_mb: int = 1024, timing_cache: Optional[Path] = None,
                 dla_core: Optional[int] = None, verbose: bool = False) -> Dict[str, Any]:
    """Build and write the engine; returns what was done (for the report and the sidecar)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = create_trt_object(trt, trt.Builder, logger)   # TensorRTUnusable without a GPU
    network = builder.create_network(network_flag_bits(trt, plan.network_flags))
    _parse(trt, network, logger, Path(onnx_path))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(INPUT_NAME, profile["min"], profile["opt"], profile["max"])
    config.add_optimization_profile(opt_profile)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    dla = _configure_dla(trt, builder, network, config, plan, profile, dla_core) \
        if dla_core is not None else None
    cache = _timing_cache(config, timing_cache)
    plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} "
                           "(see the TensorRT log above)")
    plan_bytes = bytes(plan_bytes)
    atomic_write(engine_path, lambda f: f.write(plan_bytes))
    if timing_cache is not None:
        cache_bytes = bytes(cache.serialize())
        atomic_write(timing_cache, lambda f: f.write(cache_bytes))
    info: Dict[str, Any] = {"tensorrt_version": trt.__version__, "plan": plan.describe(),
                            "dla": None, "used_dla": False}
    if dla is not None:
        report = dla_layer_report(dla, _inspect(trt, logger, plan_bytes, dla_core))
        info.update(dla=f"DLA core {dla_core} with GPU fallback", used_dla=True, dla_layers=report)
    return info


def _configure_dla(trt, builder, network, config, plan: BuildPlan, profile, dla_core: int):
    """Target DLA core ``dla_core`` with GPU fallback, or refuse (ExportInputError); returns the
    builder's per-layer answer (name -> can run on DLA)."""
    from export import ExportInputError

    ok, why = dla_allowed(trt.__version__, int(getattr(builder, "num_DLA_cores", 0)), dla_core,
                          plan.precision, batches=[profile[k][0] for k in ("min", "opt", "max")],
                          qdq=plan.onnx_kind == "int8")
    if not ok:
        raise ExportInputError(f"--dla {dla_core}: {why} (leave out --dla to build for the GPU)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(dla_core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    # layer-level detail in the plan, so the engine inspector can say where each layer runs
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    placement = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        placement[layer.name] = bool(config.can_run_on_DLA(layer))
    return placement


def _inspect(trt, logger, plan_bytes: bytes, dla_core: int) -> Optional[str]:
    """The engine inspector's JSON of a freshly built plan (None if it cannot be read back)."""
    runtime = create_trt_object(trt, trt.Runtime, logger)
    runtime.DLA_core = int(dla_core)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        return None
    inspector = engine.create_engine_inspector()
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)
