"""Export a checkpoint to ONNX and gate it on parity with PyTorch.

    python -m export.onnx runs/crowd/model.pt                   # -> runs/crowd/model.onnx + report
    python -m export.onnx runs/crowd/model.pt --probs           # also output `probabilities`
    python -m export.onnx runs/crowd/model.pt --dense           # crowd_fcn: `score_map`, any H/W
    python -m export.onnx runs/crowd/model.pt --check-data DIR  # parity on these images instead
    python -m export.onnx runs/crowd/model.pt --out /tmp/m.onnx --opset 17

The ONNX has input ``input`` (float32 NCHW, dynamic batch) and output ``logits``; class names,
input size, preprocessing, architecture, method and the checkpoint's sha256 are in its
``metadata_props`` (keys in :mod:`edge.contract`). After writing, the model runs in ONNX Runtime
(CPU) and in PyTorch on the same batch of real samples from the model's own test split (random
inputs only when no data is available, and the report says so); max |delta logits| <= 1e-4 and
100% top-1 agreement, else exit 1 with the figures. The ONNX is written to a temporary sibling
and renamed over ``--out`` only once it passed: a failed gate, a full disk or an interruption
leaves the previous file as it was. Exit 2: the input is not a usable checkpoint, a flag is out
of range, or the output cannot be written.

The samples come only from ``--check-data`` or from a built-in dataset at its default place
(never from paths, downloads or generator settings stored in the checkpoint, see
export/source.py).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edge import contract as C
from edge.cli_checks import OneLineParser, UsageError, one_line, printable
from export import EXIT_BAD_INPUT, EXIT_GATE, EXIT_OK, ExportInputError
from export.checks import Staged, check_onnx_args
from export.parity import (TOLERANCES, ParityReport, Samples, compare_outputs, ort_run,
                           random_samples)
from export.source import ExportSource

DEFAULT_OPSET = 17


@dataclass
class ExportResult:
    onnx_path: Path
    metadata: Dict[str, Any]
    samples: Samples
    reports: List[ParityReport] = field(default_factory=list)
    written: bool = False         # False: the gate failed and onnx_path was left as it was

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports)


# ------------------------------------------------------------------------- metadata
def build_metadata(ckpt: Dict[str, Any], sha256: str, outputs: List[str], *, dense: bool,
                   fully_convolutional: bool, opset: int, precision: str = "fp32") -> Dict[str, Any]:
    """The typed metadata of contracts 2 and 4 (encode with :func:`edge.contract.encode_metadata`);
    the ground scale and the decision rule only when the checkpoint has them."""
    meta = {
        C.META_FORMAT_VERSION: C.METADATA_FORMAT_VERSION,
        C.META_CLASS_NAMES: list(ckpt["class_names"]),
        C.META_NUM_CLASSES: int(ckpt["num_classes"]),
        C.META_INPUT_SIZE: [int(v) for v in ckpt["input_size"]],
        C.META_IN_CHANNELS: int(ckpt["in_channels"]),
        C.META_PREPROCESS: C.Preprocess.from_dict(ckpt["preprocess"]).to_dict(),
        C.META_ARCH: str(ckpt["arch"]),
        C.META_ARCH_KWARGS: dict(ckpt["arch_kwargs"]),
        C.META_METHOD: str(ckpt["method"]),
        C.META_CHECKPOINT_SHA256: sha256,
        C.META_OUTPUTS: list(outputs),
        C.META_PRECISION: precision,
        C.META_FULLY_CONVOLUTIONAL: bool(fully_convolutional),
        C.META_DENSE: bool(dense),
        C.META_OPSET: int(opset),
    }
    try:
        if ckpt.get("scale") is not None:
            meta[C.META_SCALE] = C.GroundScale.from_dict(ckpt["scale"]).to_dict()
        if ckpt.get("decision") is not None:
            meta[C.META_DECISION] = C.DecisionRule.from_dict(ckpt["decision"]).to_dict()
    except ValueError as e:
        raise ExportInputError(f"checkpoint scale/decision record: {e}") from None
    return meta


# ------------------------------------------------------------------------- export
def _wrapper(model, probs: bool, dense: bool):
    import torch
    from torch import nn

    class ExportHead(nn.Module):
        """The graph to export: logits (+ probabilities), or the dense score map."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            if dense:
                return self.model.score_map(x)             # [B, C, H/16, W/16]
            logits = self.model(x)                          # [B, C]
            return (logits, torch.softmax(logits, dim=1)) if probs else logits

    return ExportHead().eval()


def torch_to_onnx(module, example, path: Path, outputs: List[str], dense: bool, opset: int) -> str:
    """Write the graph; the TorchScript exporter first (no onnxscript needed, mature dynamic
    axes), the dynamo exporter as the fallback. Returns which one wrote the file."""
    import torch

    axes = {C.INPUT_NAME: {0: C.BATCH_AXIS_NAME}}
    for name in outputs:
        axes[name] = {0: C.BATCH_AXIS_NAME}
    if dense:
        axes[C.INPUT_NAME].update({2: C.HEIGHT_AXIS_NAME, 3: C.WIDTH_AXIS_NAME})
        axes[outputs[0]].update({2: "out_" + C.HEIGHT_AXIS_NAME, 3: "out_" + C.WIDTH_AXIS_NAME})
    common = dict(input_names=[C.INPUT_NAME], output_names=outputs, opset_version=opset)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example,), str(path), dynamic_axes=axes,
                              do_constant_folding=True, dynamo=False, **common)
        return "torchscript"
    except Exception as first:  # noqa: BLE001  retried with the other exporter, then re-raised
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise first from None
        dim = torch.export.Dim
        shapes = {0: dim("batch", min=1, max=4096)}
        if dense:
            shapes.update({2: dim("height", min=16, max=8192), 3: dim("width", min=16, max=8192)})
        torch.onnx.export(module, (example,), str(path), dynamic_shapes=({**shapes},),
                          dynamo=True, optimize=True, **common)
        return "dynamo"


def finish_onnx(path: Path, metadata: Dict[str, Any]) -> None:
    """Store the metadata, run the full checker, save."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in C.encode_metadata(metadata).items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "edge-students"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def torch_outputs(model, x: np.ndarray, dense: bool, batch: int = 256) -> np.ndarray:
    import torch

    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            t = torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))
            parts.append((model.score_map(t) if dense else model(t)).numpy())
    return np.concatenate(parts)


def export_onnx(source, out=None, *, opset: int = DEFAULT_OPSET, probs: bool = False,
                dense: bool = False, check_data=None, check_size: int = 64,
                tolerance: Optional[float] = None, seed: int = 0) -> ExportResult:
    """Export ``source`` (a checkpoint path, or an :class:`ExportSource` opened on one) and run
    the parity gate; ``result.passed`` says if it held."""
    import torch

    from edge.files import file_sha256

    src = source if isinstance(source, ExportSource) else ExportSource.from_checkpoint(source)
    model, ckpt = src.model, src.checkpoint
    fcn = bool(getattr(model, "fully_convolutional", False))
    if dense and not (fcn and hasattr(model, "score_map")):
        raise ExportInputError(f"--dense needs a fully convolutional model with score_map; "
                               f"{ckpt['arch']} is not one")
    if dense and probs:
        raise ExportInputError("--dense and --probs do not combine (the dense output is a score map)")
    out = Path(out) if out else src.path.with_suffix(".onnx")
    outputs = [C.SCORE_MAP_NAME] if dense else [C.OUTPUT_NAME] + ([C.PROBS_NAME] if probs else [])
    samples = src.check_samples(check_size, check_data, seed)
    meta = build_metadata(ckpt, file_sha256(src.path), outputs, dense=dense,
                          fully_convolutional=fcn, opset=opset)
    result = ExportResult(out, meta, samples)
    tol = TOLERANCES["fp32"][0] if tolerance is None else float(tolerance)
    try:
        with Staged(out) as stage:
            example = torch.from_numpy(samples.x[:2].copy())
            torch_to_onnx(_wrapper(model, probs, dense), example, stage.tmp, outputs, dense, opset)
            finish_onnx(stage.tmp, meta)
            parity_reports(result, src, stage.tmp, tol, dense, seed)
            if result.passed:
                stage.commit()
                result.written = True
    except OSError as e:
        raise ExportInputError(f"cannot write {out}: {e.strerror or e} (the previous file, if "
                               "any, is unchanged)") from None
    return result


def parity_reports(result: ExportResult, src: ExportSource, onnx_path: Path, tol: float,
                   dense: bool, seed: int) -> None:
    """The gate: PyTorch against ONNX Runtime on the samples (and, dense, on a larger frame)."""
    samples, outputs, out = result.samples, result.metadata[C.META_OUTPUTS], onnx_path
    result.reports.append(compare_outputs(
        torch_outputs(src.model, samples.x, dense), ort_run(out, samples.x, outputs[0]),
        name=f"ONNX Runtime CPU vs PyTorch, {outputs[0]} (fp32)", source=samples.source,
        max_abs_tol=tol, min_agreement=1.0))
    if dense:  # the point of --dense: a frame larger than the training size, non-square
        h, w = src.checkpoint["input_size"]
        pre = src.preprocess
        frame = C.Preprocess(size=(int(1.5 * h), 2 * w), mean=pre.mean, std=pre.std,
                             channel_order=pre.channel_order)
        big = random_samples(frame, 2, seed, f"a {frame.size[0]}x{frame.size[1]} frame")
        result.reports.append(compare_outputs(
            torch_outputs(src.model, big.x, True), ort_run(out, big.x, outputs[0]),
            name="ONNX Runtime CPU vs PyTorch, score_map on a larger frame (fp32)",
            source=big.source, max_abs_tol=tol, min_agreement=1.0))


# ------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m export.onnx", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_onnx_args(p)
    return p


def add_onnx_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="an edge-students checkpoint (model.pt)")
    p.add_argument("--out", default=None, help="output .onnx (default: beside the checkpoint)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 13..20 (default 17)")
    p.add_argument("--probs", action="store_true", help="also output softmax `probabilities`")
    p.add_argument("--dense", action="store_true",
                   help="fully convolutional models: export `score_map` with dynamic H/W")
    p.add_argument("--check-data", default=None, metavar="DIR",
                   help="images for the parity check (default: the model's own test split)")
    p.add_argument("--check-size", type=int, default=64, help="samples in the parity check (1..10000)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max |delta logits| allowed, >= 0 (default 1e-4)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_onnx_args(args)
        result = export_onnx(args.checkpoint, args.out, opset=args.opset, probs=args.probs,
                             dense=args.dense, check_data=args.check_data,
                             check_size=args.check_size, tolerance=args.tolerance)
    except (ExportInputError, UsageError) as e:
        print(f"python -m export.onnx: error: {printable(one_line(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for r in result.reports:
        print(r.format())
    if not result.passed:
        print(f"python -m export.onnx: error: the ONNX model does not match PyTorch (figures "
              f"above); {result.onnx_path} not written", file=sys.stderr)
        return EXIT_GATE
    print(f"wrote {result.onnx_path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
