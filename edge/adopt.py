"""Adopt an engine built elsewhere (``trtexec``): write the sidecar the runtime needs.

    python -m edge.sidecar adopt crowd.engine --onnx crowd.onnx --precision fp16
    python -m edge.sidecar adopt crowd.engine --onnx crowd.int8.onnx          # int8: from the Q/DQ ONNX
    python -m edge.sidecar adopt crowd.engine --onnx crowd.onnx --precision fp16 --dla 0

An engine only runs with its sidecar (contract 3, docs/export.md). ``python -m export.trt`` writes
one; an engine built with ``trtexec --onnx=crowd.onnx --saveEngine=crowd.engine`` (the JetPack 5.1
route, docs/jetson.md) has none. Run this on the device that built the engine: it reads the model
metadata from the ONNX (without the onnx package), the optimisation profile and I/O from the
engine itself (deserialised with this device's TensorRT, which also proves it was built for it),
the TensorRT version, GPU and L4T release from this device, and takes the precision from the ONNX
(fp16/int8 ONNX) or ``--precision`` (an fp32 ONNX may have been built with or without
``trtexec --fp16``: that is not guessed). Torch-free.

Exit: 0 written, 2 bad input or an engine this TensorRT cannot read (nothing written),
3 TensorRT or a usable GPU is missing here.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge import onnx_wire
from edge import sidecar as S
from edge.contract import (INPUT_NAME, META_IN_CHANNELS, META_PRECISION, OUTPUT_NAME, PRECISIONS,
                           decode_metadata)

EXIT_OK, EXIT_BAD_INPUT, EXIT_NO_TRT = 0, 2, 3


class AdoptError(ValueError):
    """Bad input, or an engine this TensorRT cannot read (exit 2)."""


class NoTensorRT(RuntimeError):
    """TensorRT or a usable GPU is missing here (exit 3)."""


@dataclass
class EngineInfo:
    tensorrt_version: str
    profile: Dict[str, List[int]]     # {"min": [N, C, H, W], "opt": [...], "max": [...]}
    inputs: List[str]
    outputs: List[str]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge.sidecar adopt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", help="the TensorRT engine (trtexec --saveEngine)")
    p.add_argument("--onnx", required=True, help="the ONNX it was built from (trtexec --onnx)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp16 if trtexec had --fp16 (required for an fp32 ONNX; fp16/int8 ONNX say it)")
    p.add_argument("--dla", type=int, default=None, metavar="N",
                   help="the DLA core it was built for (trtexec --useDLACore=N)")
    p.add_argument("--force", action="store_true", help="replace an existing sidecar")
    return p


# ------------------------------------------------------------------------- the ONNX side
def onnx_facts(onnx_path: Path) -> Dict[str, Any]:
    """The ONNX's raw contract metadata, its decoded form and whether it is Q/DQ."""
    if not onnx_path.is_file():
        raise AdoptError(f"ONNX file not found: {onnx_path}")
    try:
        raw = onnx_wire.model_metadata(onnx_path)
        qdq = onnx_wire.is_qdq(onnx_path)
        meta = decode_metadata(raw)
    except ValueError as e:
        raise AdoptError(f"{onnx_path}: {e}") from None
    return {"raw": raw, "meta": meta, "qdq": qdq}


def engine_precision(requested: Optional[str], onnx_precision: str, qdq: bool) -> str:
    """The engine's precision: the ONNX's when it decides (Q/DQ -> int8, an fp16 ONNX -> fp16),
    else what the user declares."""
    own = "int8" if qdq else onnx_precision
    if own in ("int8", "fp16"):
        if requested not in (None, own):
            raise AdoptError(f"--precision {requested}: the ONNX is {own}, so is its engine")
        return own
    if requested is None:
        raise AdoptError("pass --precision fp32 or fp16: an engine built from an fp32 ONNX is fp16 "
                         "when trtexec had --fp16, and that cannot be read back")
    if requested == "int8":
        raise AdoptError("--precision int8 needs the Q/DQ ONNX the engine was built from "
                         "(crowd.int8.onnx from `python -m export.trt MODEL --precision int8`)")
    return requested


# ------------------------------------------------------------------------- the engine side
def read_engine(engine_path: Path, dla_core: Optional[int]) -> EngineInfo:
    """Deserialise the engine with this device's TensorRT and read its profile and I/O."""
    from edge.backends.trt import TensorRTUnusable, create_trt_object, import_tensorrt

    try:
        trt = import_tensorrt()
    except ImportError as e:
        raise NoTensorRT(str(e)) from None
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        runtime = create_trt_object(trt, trt.Runtime, logger)
    except TensorRTUnusable as e:
        raise NoTensorRT(str(e)) from None
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise AdoptError(f"TensorRT {trt.__version__} cannot read {engine_path}: not an engine, or "
                         "built with another TensorRT version or for another GPU (see the TensorRT "
                         "log above); build it on this device")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise AdoptError(f"{engine_path}: expected input {INPUT_NAME!r} and output "
                         f"{OUTPUT_NAME!r}, engine has inputs {inputs} outputs {outputs}")
    shapes = engine.get_tensor_profile_shape(INPUT_NAME, 0)
    profile = {k: [int(d) for d in s] for k, s in zip(("min", "opt", "max"), shapes)}
    return EngineInfo(str(trt.__version__), profile, inputs, outputs)


def check_against_onnx(info: EngineInfo, meta: Dict[str, Any]) -> None:
    channels = int(meta[META_IN_CHANNELS])
    if info.profile["max"][1] != channels:
        raise AdoptError(f"the engine takes {info.profile['max'][1]} input channels, the ONNX "
                         f"{channels}: not built from this ONNX")


def trtexec_command(engine: Path, onnx_path: Path, info: EngineInfo, precision: str,
                    dla_core: Optional[int]) -> str:
    """The commands that rebuild and re-adopt the engine, run in the engine's folder."""
    shape = {k: f"{INPUT_NAME}:" + "x".join(map(str, v)) for k, v in info.profile.items()}
    onnx_rel = S.relative_to_engine(onnx_path, engine)
    build = ["trtexec", f"--onnx={onnx_rel}", f"--saveEngine={engine.name}",
             f"--minShapes={shape['min']}", f"--optShapes={shape['opt']}",
             f"--maxShapes={shape['max']}"]
    if int(info.tensorrt_version.split(".")[0]) < 11:    # 11 has no precision flags
        build += {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[precision]
    if dla_core is not None:
        build += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    adopt = ["python", "-m", "edge.sidecar", "adopt", engine.name, "--onnx", onnx_rel,
             "--precision", precision, "--force"]
    if dla_core is not None:
        adopt += ["--dla", str(dla_core)]
    return " ".join(map(shlex.quote, build)) + " && " + " ".join(map(shlex.quote, adopt))


# ------------------------------------------------------------------------- command
def adopt(engine: Path, onnx_path: Path, precision: Optional[str], dla_core: Optional[int],
          force: bool) -> Path:
    """Validate, read the engine, write its sidecar atomically; returns the sidecar's path."""
    if not engine.is_file() or engine.stat().st_size == 0:
        raise AdoptError(f"engine not found or empty: {engine}")
    if dla_core is not None and dla_core < 0:
        raise AdoptError(f"--dla {dla_core}: a DLA core is 0 or more")
    side = S.sidecar_path(engine)
    if side.exists() and not force:
        raise AdoptError(f"{side} exists (written by export.trt?); pass --force to replace it")
    onnx = onnx_facts(onnx_path)
    prec = engine_precision(precision, str(onnx["meta"].get(META_PRECISION, "fp32")), onnx["qdq"])
    info = read_engine(engine, dla_core)
    check_against_onnx(info, onnx["meta"])
    device = S.probe_device(info.tensorrt_version)
    fp = S.make_fingerprint(device=device, precision=prec, profile=info.profile,
                            onnx_path=onnx_path, dla_core=dla_core)
    build = {"plan": f"built elsewhere (trtexec), adopted; precision {prec} "
                     + ("from the ONNX" if precision is None else "as declared"),
             "adopted_by": "python -m edge.sidecar adopt", "engine_outputs": info.outputs}
    return S.write_sidecar(engine, onnx["raw"], fp, source_onnx=onnx_path,
                           rebuild_command=trtexec_command(engine, onnx_path, info, prec, dla_core),
                           build=build)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        side = adopt(Path(args.engine), Path(args.onnx), args.precision, args.dla, args.force)
    except AdoptError as e:
        print(f"edge.sidecar adopt: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NoTensorRT as e:
        print(f"edge.sidecar adopt: error: {e}; run it on the device that built the engine",
              file=sys.stderr)
        return EXIT_NO_TRT
    print(f"wrote {side}")
    return EXIT_OK
