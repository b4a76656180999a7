"""Build a TensorRT engine (+ ``model.engine.json``) from a checkpoint or an ONNX file.

    python -m export.trt runs/crowd/model.pt                                # ONNX + engine + sidecar
    python -m export.trt runs/crowd/model.onnx --precision fp16 --max-batch 8   # Jetson, no torch
    python -m export.trt runs/crowd/model.pt --precision int8 --calib-data DIR  # Q/DQ INT8
    python -m export.trt runs/crowd/model.pt --precision int8               # calibrate on train split
    python -m export.trt runs/crowd/model.int8.onnx --precision int8        # a Q/DQ ONNX as is
    python -m export.trt runs/crowd/model.onnx --precision fp16 --dla 0     # Xavier / AGX Orin DLA

From a ``.pt`` it first runs ``export.onnx`` (parity gate included). For int8 it writes the Q/DQ
ONNX ``model.int8.onnx`` (calibrated on ``--calib-size`` images of the training split or
``--calib-data DIR``) and reports its accuracy against fp32 on CPU. Then it builds
``model.engine`` for the TensorRT found here (8.5 .. 11; see docs/export.md for what each version
does), writes the sidecar with the build fingerprint, and checks the engine against ONNX
Runtime fp32 on the same samples, every named output, run by the runtime's own engine class
(``edge.backends.trt.TrtBackend``). An engine whose sidecar already records this device and
this request (precision, profile, ONNX sha256, DLA core) is kept, not rebuilt (``--force``).
Exit 0 ok, 1 a parity gate failed or TensorRT failed to build the engine, 2 bad input, 3
TensorRT or a GPU is missing or unusable here: the ONNX files are written and the exact command
for the target printed.
The ``.onnx`` path never imports torch.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge import contract as C
from edge.cli_checks import OneLineParser, UsageError, one_line, printable, shell_join
from export import (EXIT_BAD_INPUT, EXIT_GATE, EXIT_NO_TRT, EXIT_OK, ExportInputError,
                    GateFailed, TensorRTUnavailable)
from export.checks import Staged, check_trt_args
from export.parity import TOLERANCES, Samples, compare_outputs, ort_run, random_samples
from export.source import ExportSource


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m export.trt", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="model.pt (checkpoint) or model.onnx (exported, torch-free)")
    p.add_argument("--precision", choices=C.PRECISIONS, default="fp32", help="engine precision")
    p.add_argument("--min-batch", type=int, default=1, help="optimisation profile: min batch")
    p.add_argument("--opt-batch", type=int, default=None,
                   help="optimisation profile: the batch tuned for (default: --max-batch)")
    p.add_argument("--max-batch", type=int, default=1, help="optimisation profile: max batch")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="engine input H W (default: the model's; for a --dense ONNX the frame)")
    p.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace pool (MiB)")
    p.add_argument("--timing-cache", default=None,
                   help="timing cache file, reused across builds (default: beside the engine)")
    p.add_argument("--dla", type=int, default=None, metavar="N",
                   help="build for DLA core N with GPU fallback (Xavier, AGX Orin, Orin NX); needs "
                        "fp16/int8 and a static batch (min = opt = max)")
    p.add_argument("--calib-data", default=None, metavar="DIR",
                   help="int8: calibration images (default: the checkpoint's training split)")
    p.add_argument("--calib-size", type=int, default=512, help="int8: calibration images")
    p.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"),
                   default="minmax", help="int8: ONNX Runtime calibration method")
    p.add_argument("--check-data", default=None, metavar="DIR",
                   help="images for the parity checks (default: the model's own test split)")
    p.add_argument("--check-size", type=int, default=64, help="samples in the parity checks")
    p.add_argument("--probs", action="store_true", help=".pt: also export `probabilities`")
    p.add_argument("--out", "--output", dest="out", default=None,
                   help="engine path (default: beside the ONNX, .engine)")
    p.add_argument("--force", action="store_true",
                   help="rebuild the engine even when its sidecar shows it was built from this "
                        "ONNX with these settings on this device")
    p.add_argument("--verbose", action="store_true", help="TensorRT verbose log")
    return p


# ------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class OnnxStage:
    """What the ONNX stage hands on."""

    onnx: Path                    # the ONNX the next stage starts from (fp32, or a given one)
    reference: Path               # the fp32 ONNX the engine is checked against
    metadata: Dict[str, Any]      # its contract metadata
    samples: Samples              # the parity samples (the engine gate reuses them)


def stage_onnx(source: ExportSource, args) -> OnnxStage:
    """From a checkpoint: write the fp32 ONNX and gate it (export.onnx). From an ONNX: take it
    as it is; an int8 build of a Q/DQ ONNX is checked against its fp32 parent when it is there."""
    if source.checkpoint is None:
        reference = source.fp32_parent() if args.precision == "int8" else source.path
        return OnnxStage(source.path, reference, source.metadata,
                         source.check_samples(args.check_size, args.check_data))
    from export.onnx import export_onnx  # torch only on this path

    res = export_onnx(source, None, probs=args.probs, check_data=args.check_data,
                      check_size=args.check_size)
    for r in res.reports:
        print(r.format())
    if not res.passed:
        raise GateFailed(f"the ONNX model does not match PyTorch (figures above); "
                         f"{res.onnx_path} not written")
    print(f"wrote {res.onnx_path}")
    return OnnxStage(res.onnx_path, res.onnx_path, res.metadata, res.samples)


def stage_int8(source: ExportSource, model: OnnxStage, args) -> Path:
    """The Q/DQ ONNX (made, or ``model.onnx`` when it is one already), its accuracy against fp32
    on CPU reported; returns its path."""
    from export.quantize import int8_report, is_qdq, quantize_qdq

    if is_qdq(model.onnx):
        print(f"{model.onnx} is already a Q/DQ ONNX: built as is")
        return model.onnx
    calib, where = source.calibration_set(args.calib_size, args.calib_data)
    fp32 = model.onnx
    int8 = quantize_qdq(fp32, fp32.with_name(fp32.stem + ".int8.onnx"), calib,
                        method=args.calib_method)
    print(f"wrote {int8} (Q/DQ INT8, calibrated on {where})")
    test = source.test_split()
    ref = test if test is not None else model.samples
    rep = int8_report(fp32, int8, ref.x, ref.y, ref.source)
    print(rep.format(), file=sys.stdout if rep.passed else sys.stderr)
    return int8


def stage_fp16(fp32: Path, samples: Samples) -> Tuple[int, Path]:
    """TensorRT 11: the mixed-precision ONNX, checked on CPU with the fp16 tolerance. Returns
    ``(EXIT_OK, fp16 ONNX)``, or ``(EXIT_GATE, fp32)`` with the previous fp16 ONNX untouched."""
    from export.quantize import convert_fp16

    tol, agree = TOLERANCES["fp16"]
    with Staged(fp32.with_name(fp32.name.split(".")[0] + ".fp16.onnx")) as stage:
        convert_fp16(fp32, stage.tmp)
        rep = compare_outputs(ort_run(fp32, samples.x), ort_run(stage.tmp, samples.x),
                              name="fp16 ONNX vs fp32 ONNX (ONNX Runtime CPU)",
                              source=samples.source, max_abs_tol=tol, min_agreement=agree)
        print(rep.format())
        if not rep.passed:             # the previous fp16 ONNX, if any, stays as it was
            print(f"{stage.final} not written", file=sys.stderr)
            return EXIT_GATE, fp32
        fp16 = stage.commit()
    print(f"wrote {fp16}")
    return EXIT_OK, fp16


def target_command(args, onnx: Path, engine: Optional[Path] = None) -> str:
    """``python -m export.trt ONNX`` with the flags that decide the engine (precision, profile,
    input size, DLA, workspace). With ``engine``: the sidecar's rebuild command, paths relative
    to the engine's folder (where ``edge`` prints it to be run) and ``--out`` the engine. ``onnx``
    is what export.trt starts from (on TensorRT 11 fp16, the fp32 ONNX the fp16 one derives
    from)."""
    from edge.sidecar import relative_to_engine

    a = args
    parts = ["python", "-m", "export.trt",
             relative_to_engine(onnx, engine) if engine is not None else str(onnx),
             "--precision", a.precision,
             "--min-batch", str(a.min_batch), "--opt-batch", str(a.opt_batch or a.max_batch),
             "--max-batch", str(a.max_batch)]
    if a.input_size:
        parts += ["--input-size", *map(str, a.input_size)]
    if a.dla is not None:
        parts += ["--dla", str(a.dla)]
    if a.workspace_mb != 1024:
        parts += ["--workspace-mb", str(a.workspace_mb)]
    if engine is not None:
        parts += ["--out", engine.name]
    elif a.out:
        parts += ["--out", str(a.out)]
    return shell_join(parts)


def probe_tensorrt():
    """``(trt module, (gpu name, cc))`` or :class:`TensorRTUnavailable` saying which is missing."""
    from edge.device import probe_gpu
    from export.trt_build import import_tensorrt

    try:
        trt = import_tensorrt()
    except ImportError as e:
        raise TensorRTUnavailable(str(e)) from None
    gpu = probe_gpu()
    if gpu is None:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is installed but no CUDA GPU "
                                  "is visible (libcuda / driver missing)")
    return trt, gpu


def stage_engine(args, plan, onnx: Path, parsed: Path, model: OnnxStage, trt, gpu) -> int:
    """Build the engine TensorRT parses from ``parsed`` (``onnx``, or its fp16 form), gate it
    against ``model.reference`` and write its sidecar. An engine whose sidecar records this
    device and this request (precision, profile, ONNX sha256, DLA core) is kept as it is:
    it passed its gate when it was built (``--force`` rebuilds it)."""
    from edge import sidecar as S
    from export.fingerprint import build_fingerprint, rebuild_reasons, write_engine_sidecar
    from export.trt_build import build_engine, profile_shapes

    a = args
    h, w = a.input_size or model.metadata[C.META_INPUT_SIZE]
    try:
        profile = profile_shapes((model.metadata[C.META_IN_CHANNELS], h, w), a.min_batch,
                                 a.opt_batch or a.max_batch, a.max_batch)
    except ValueError as e:
        raise ExportInputError(str(e)) from None
    base = onnx.name.split(".")[0]
    engine = Path(a.out) if a.out else onnx.with_name(base + ".engine")
    cache = Path(a.timing_cache) if a.timing_cache else engine.with_name(base + ".timing.cache")
    device = S.probe_device(trt.__version__, gpu)
    fp = build_fingerprint(precision=a.precision, profile=profile, onnx_path=parsed,
                           dla_core=a.dla, device=device)
    reasons = rebuild_reasons(engine, fp, device)
    if not reasons and not a.force:
        print(f"{engine} is up to date (its sidecar records this TensorRT, GPU, precision, "
              "profile, ONNX and DLA core; it passed its gate when built): not rebuilt, "
              "--force rebuilds it")
        return EXIT_OK
    if engine.exists():
        print(f"rebuilding {engine}: " + ("; ".join(reasons) or "--force"))
    print(f"building {engine} with TensorRT {trt.__version__} on {gpu[0]} (sm {gpu[1]}): "
          f"{plan.describe()}")
    build: dict = {"plan": plan.describe(), "dla": None}
    command = target_command(a, onnx, engine)
    # built, described and gated under a temporary name, by the runtime's own class (which reads
    # the sidecar): a failed gate leaves the previous engine and its sidecar as they were
    with Staged(engine) as stage:
        info = build_engine(parsed, stage.tmp, plan, profile, workspace_mb=a.workspace_mb,
                            timing_cache=cache, dla_core=a.dla, verbose=a.verbose)
        build["dla"] = info.get("dla")
        if info.get("used_dla"):
            build["dla_layers"] = info["dla_layers"]
            print_dla_placement(info["dla"], info["dla_layers"])
        staged_side = write_engine_sidecar(stage.tmp, parsed, fp, rebuild_command=command,
                                           build=build)
        try:
            code = engine_parity(a, stage.tmp, model)
        finally:
            staged_side.unlink(missing_ok=True)
        if code != EXIT_OK:
            print(f"{engine} not written", file=sys.stderr)
            return code
        stage.commit()
    side = write_engine_sidecar(engine, parsed, fp, rebuild_command=command, build=build)
    print(f"wrote {engine}, {side} and the timing cache {cache}")
    return EXIT_OK


def print_dla_placement(note: str, report) -> None:
    """Say where the layers run: a DLA build whose layers fall back to the GPU must not pass
    for a DLA engine unnoticed."""
    b, e = report["builder"], report["engine"]
    print(f"DLA: {note}; the builder places {b['dla']} of {b['layers']} layers on DLA")
    if b["gpu_fallback"]:
        shown = ", ".join(b["gpu_fallback"][:8]) + (" ..." if len(b["gpu_fallback"]) > 8 else "")
        print(f"WARNING: {len(b['gpu_fallback'])} layer(s) fall back to the GPU: {shown}",
              file=sys.stderr)
    if b["dla"] == 0:
        print("WARNING: no layer can run on DLA: this engine runs entirely on the GPU",
              file=sys.stderr)
    if e["known"]:
        print(f"engine inspector: {len(e['dla'])} of {e['layers']} engine layers on DLA")
    else:
        print(f"engine inspector: placement unknown ({e['why']})")


def check_dla_request(args) -> None:
    """Refuse a DLA request that no device can honour before anything is written."""
    if args.dla is None:
        return
    from edge.device import tensorrt_version
    from export.trt_build import dla_request_problem

    batches = (args.min_batch, args.opt_batch or args.max_batch, args.max_batch)
    problem = dla_request_problem(args.precision, batches, tensorrt_version(),
                                  qdq=args.precision == "int8")
    if problem:
        raise ExportInputError(f"--dla {args.dla}: {problem}")


def open_engine(engine: Path):
    """The shipped runtime class on a fresh engine, sidecar check included (the runtime's own)."""
    from edge.backends.trt import TrtBackend

    return TrtBackend(engine)


def engine_parity(args, engine: Path, model: OnnxStage) -> int:
    """Every named output of the engine against ONNX Runtime fp32, run by the runtime's class."""
    x = model.samples.x
    if args.input_size:   # a dense engine at a frame size: random frames of that size
        x = random_samples(C.Preprocess.from_dict({**model.metadata[C.META_PREPROCESS],
                                                   "size": args.input_size}),
                           len(x), 0, "frames at --input-size").x
    names = list(model.metadata[C.META_OUTPUTS])
    backend = open_engine(engine)
    try:
        got = backend.run_all(x, names)
    except ValueError as e:            # an output the ONNX promises is not in the engine
        raise GateFailed(f"{engine}: {e}") from None
    finally:
        backend.close()
    tol, agree = TOLERANCES["trt_" + args.precision]
    passed = True
    for name in names:
        rep = compare_outputs(ort_run(model.reference, x, name), got[name],
                              name=f"TensorRT {args.precision} engine vs ONNX Runtime fp32 ({name})",
                              source=model.samples.source, max_abs_tol=tol, min_agreement=agree)
        print(rep.format())
        passed &= rep.passed
    return EXIT_OK if passed else EXIT_GATE


def main(argv=None) -> int:
    from edge.backends.trt import TensorRTUnusable

    args = build_parser().parse_args(argv)
    try:
        check_trt_args(args)       # before anything is built or TensorRT is looked for
    except UsageError as e:
        print(f"python -m export.trt: error: {printable(one_line(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    onnx = Path(args.source)       # what the engine stage starts from, once known
    written: List[Path] = []
    try:
        check_dla_request(args)
        source = ExportSource.open(args.source)
        model = stage_onnx(source, args)
        onnx = model.onnx
        if source.checkpoint is not None:
            written.append(onnx)
        if args.precision == "int8":
            onnx = stage_int8(source, model, args)
            written += [onnx] if onnx != model.onnx else []
        trt, gpu = probe_tensorrt()
        from export.trt_build import enum_names, plan_build

        plan = plan_build(args.precision, trt.__version__, enum_names(trt.BuilderFlag),
                          enum_names(trt.NetworkDefinitionCreationFlag))
        parsed = onnx
        if plan.onnx_kind == "fp16":      # the fp16 ONNX derives from `onnx`: rebuilds start there
            code, parsed = stage_fp16(onnx, model.samples)
            if code != EXIT_OK:
                return code
            written.append(parsed)
        return stage_engine(args, plan, onnx, parsed, model, trt, gpu)
    except ExportInputError as e:
        print(f"python -m export.trt: error: {printable(one_line(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except GateFailed as e:
        print(f"python -m export.trt: error: {e}", file=sys.stderr)
        return EXIT_GATE
    except (TensorRTUnavailable, TensorRTUnusable) as e:
        files = ", ".join(str(p) for p in written) or str(onnx)
        print(f"TensorRT is not available here: {e}\n"
              f"ONNX ready: {files}\n"
              f"On the target (Jetson / GPU machine with TensorRT), run:\n"
              f"  {target_command(args, onnx)}", file=sys.stderr)
        return EXIT_NO_TRT
    except RuntimeError as e:          # TensorRT could not parse/build/run (its log says why)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_GATE


if __name__ == "__main__":
    sys.exit(main())
