"""Argument checks of ``export.onnx`` and ``export.trt``, run before any file is read or written
(and, for ``export.trt``, before TensorRT is looked for: a bad profile is a bad command on every
machine, so it is never printed as "the command for the target").

Each check raises :class:`edge.cli_checks.UsageError` with one line naming the flag, the value
and what is allowed; the CLIs exit 2. Also :class:`Staged`, the temporary sibling every export
artefact is written to, checked in, and renamed from.
"""
from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import Tuple

from edge.cli_checks import (Rule, UsageError, check_not_input, check_output_file, check_rules,
                             need_int, need_ints, need_number)

#: 13: per-channel QuantizeLinear/DequantizeLinear (the INT8 Q/DQ path) exist from opset 13;
#: 20: the highest opset the TorchScript exporter writes.
MIN_OPSET, MAX_OPSET = 13, 20
MAX_SAMPLES = 10000            # parity/calibration samples are held in memory at once
MAX_SIDE = 8192


def _int(low=1, high=None, note=""):
    return lambda flag, v: need_int(flag, v, low, high, note)


ONNX_RULES: Tuple[Rule, ...] = (
    ("opset", "--opset", _int(MIN_OPSET, MAX_OPSET)),
    ("check_size", "--check-size", _int(1, MAX_SAMPLES)),
    ("tolerance", "--tolerance", lambda flag, v: need_number(flag, v, 0.0)),
)

TRT_RULES: Tuple[Rule, ...] = (
    ("min_batch", "--min-batch", _int(1)),
    ("opt_batch", "--opt-batch", _int(1, note=" (omit it for --max-batch)")),
    ("max_batch", "--max-batch", _int(1)),
    ("input_size", "--input-size", lambda flag, v: need_ints(flag, v, 1, MAX_SIDE)),
    ("workspace_mb", "--workspace-mb", _int(1)),
    ("dla", "--dla", _int(0, note=" (a DLA core index; omit it for the GPU)")),
    ("calib_size", "--calib-size", _int(1, MAX_SAMPLES)),
    ("check_size", "--check-size", _int(1, MAX_SAMPLES)),
)


def check_onnx_args(args: argparse.Namespace) -> None:
    check_rules(args, ONNX_RULES)
    check_output_file("--out", args.out)
    check_not_input("--out", args.out, [("the checkpoint", args.checkpoint)])


def check_trt_args(args: argparse.Namespace) -> None:
    """Every numeric flag and the optimisation profile, before the ONNX stage and TensorRT."""
    check_rules(args, TRT_RULES)
    opt = args.opt_batch if args.opt_batch is not None else args.max_batch
    if not args.min_batch <= opt <= args.max_batch:
        raise UsageError(f"--min-batch {args.min_batch} --opt-batch {opt} --max-batch "
                         f"{args.max_batch}: the profile needs min-batch <= opt-batch <= max-batch")
    check_output_file("--out", args.out)
    check_output_file("--timing-cache", args.timing_cache)
    for flag, path in (("--out", args.out), ("--timing-cache", args.timing_cache)):
        check_not_input(flag, path, [("the source", args.source)])


class Staged:
    """A temporary sibling of ``final`` for writers that take a path (``torch.onnx.export``,
    ``onnx.save``, TensorRT): write and check ``tmp``, then :meth:`commit` renames it over
    ``final`` in one step. Leaving the ``with`` block without a commit (a failed gate, a full
    disk, an exception) deletes it: the previous ``final`` is never touched. The name keeps the
    suffix (some writers pick the format from it); it is created with the ordinary mode, so the
    umask applies."""

    def __init__(self, final) -> None:
        self.final = Path(final)
        self.tmp = self.final.with_name(f".{self.final.stem}.{os.getpid()}-"
                                        f"{secrets.token_hex(4)}.tmp{self.final.suffix}")

    def __enter__(self) -> "Staged":
        self.final.parent.mkdir(parents=True, exist_ok=True)
        return self

    def commit(self) -> Path:
        os.replace(self.tmp, self.final)
        return self.final

    def discard(self) -> None:
        if self.tmp.exists():
            self.tmp.unlink()

    def __exit__(self, *exc) -> None:
        self.discard()
