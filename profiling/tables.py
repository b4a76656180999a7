"""The POSD paper's cost tables (14-17) for any student/teacher pair, and the CLI that prints them.

    python -m profiling.tables                          # all tables, Markdown, paper's pairs + ours
    python -m profiling.tables --format json --out reports/
    python -m profiling.tables --tables memory --batch-size 128 --device cuda
    python -m profiling.tables --student crowd_fcn --teacher resnet32 --input-size 128 --num-classes 2
    python -m profiling.tables --plot --out reports/    # + bar-chart PNGs of cost per method
    python -m profiling.tables --out docs/              # regenerates docs/profiling_tables.md

Definitions: docs/profiling.md. Library: profiling.complexity (count_macs, count_params),
profiling.storage (storage_report), profiling.memory (training_memory), profiling.timing.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from typing import List, Optional, Sequence

import torch

from edge.cli_checks import OneLineParser, fail, one_line
from profiling import report
from profiling.builders import TABLES, build_tables
from profiling.specs import DEFAULT_PAIRS, Pair, with_batch

PROG = "python -m profiling.tables"
#: what a --student pair gets where its flags are not given (the default pairs carry their own)
STUDENT_DEFAULTS = {"teacher": "resnet32", "input_size": 32, "in_channels": 3, "num_classes": 10}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from train.models import list_models

    p = OneLineParser(prog=PROG, description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", nargs="+", default=["all"], choices=["all", *TABLES],
                   help="which tables to build (default: all)")
    p.add_argument("--format", default="markdown", choices=report.FORMATS, help="output format")
    p.add_argument("--out", default=None, help="folder to write into (default: print to stdout)")
    p.add_argument("--plot", action="store_true", help="also write bar-chart PNGs (to --out, "
                   "default reports/)")
    p.add_argument("--student", default=None, choices=list_models(),
                   help="profile this pair instead of the default pairs")
    p.add_argument("--teacher", default=None, choices=list_models(),
                   help=f"KD teacher for --student (default {STUDENT_DEFAULTS['teacher']})")
    p.add_argument("--input-size", type=int, default=None,
                   help=f"input side in px for --student (default {STUDENT_DEFAULTS['input_size']})")
    p.add_argument("--in-channels", type=int, default=None,
                   help=f"input channels for --student (default {STUDENT_DEFAULTS['in_channels']})")
    p.add_argument("--num-classes", type=int, default=None,
                   help=f"classes for --student (default {STUDENT_DEFAULTS['num_classes']})")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch for memory and time (default 32)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for memory/time")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per method (median)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for PyTorch (default 1: reproducible on a shared machine; "
                   "0 keeps PyTorch's own choice)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export in storage")
    return p.parse_args(argv)


def _student_value(args: argparse.Namespace, name: str):
    value = getattr(args, name)
    return STUDENT_DEFAULTS[name] if value is None else value


def pairs_from(args: argparse.Namespace) -> tuple:
    if args.student is None:
        return with_batch(DEFAULT_PAIRS, args.batch_size)
    v = lambda name: _student_value(args, name)   # noqa: E731
    pair = Pair(args.student, v("teacher"), v("input_size"), v("num_classes"), v("in_channels"),
                args.batch_size or 32, source="command line")
    return (pair,)


def header(args: argparse.Namespace, argv: Sequence[str]) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip() or "n/a"
    except OSError:
        commit = "n/a"
    device = args.device
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name()})"
    cmd = " ".join(["python -m profiling.tables", *argv])
    return ("# Profiling tables (generated)\n\nGenerated, not typed (do not edit by hand): "
            f"`{cmd}`. "
            f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, "
            f"{platform.processor() or platform.machine()}, commit {commit}. "
            "Definitions and the comparison with the paper: docs/profiling.md.")


def check_args(args: argparse.Namespace) -> None:
    """Flag values in range and the output folder writable, before anything is measured."""
    from train.cli_checks import check_int, check_output_dir

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to PyTorch")
    if args.batch_size is not None and args.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (POSD needs neighbours), got {args.batch_size}")
    if args.student is None:
        given = [f"--{name.replace('_', '-')}" for name in STUDENT_DEFAULTS if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} describe{'s' if len(given) == 1 else ''} the "
                             "--student pair, and no --student is given (the default pairs carry "
                             "their own); add --student NAME")
    check_int("--repeats", args.repeats, 1)
    check_int("--threads", args.threads, 0)
    check_int("--input-size", args.input_size, 1)
    check_int("--in-channels", args.in_channels, 1)
    check_int("--num-classes", args.num_classes, 2)
    if args.out is not None or args.plot:
        check_output_dir(args.out or "reports", "--out")


def main(argv: Optional[Sequence[str]] = None) -> List[report.Table]:
    """Build, print or write the tables; bad input: one line on stderr and ``SystemExit(2)``."""
    from train.cli_checks import describe_os_error

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        check_args(args)
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        which = TABLES if "all" in args.tables else tuple(t for t in TABLES if t in args.tables)
        tables = build_tables(pairs_from(args), which, device=args.device, repeats=args.repeats,
                              onnx=not args.no_onnx)
        _emit(tables, args, header(args, argv))
    except ValueError as e:
        raise SystemExit(fail(PROG, str(e))) from None
    except OSError as e:                  # a full disk, a folder that cannot be written
        raise SystemExit(fail(PROG, describe_os_error(e))) from None
    except RuntimeError as e:             # PyTorch's allocators: too large a model, input or batch
        if not _out_of_memory(e):
            raise
        raise SystemExit(fail(PROG, f"out of memory on {args.device} ({one_line(e, 200)}); lower "
                                    "--input-size or --batch-size")) from None
    return tables


def _out_of_memory(e: RuntimeError) -> bool:
    text = str(e)
    return isinstance(e, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in text \
        or "can't allocate memory" in text


def _emit(tables: List[report.Table], args: argparse.Namespace, head: str) -> None:
    if args.out is None:
        sys.stdout.write(report.render(tables, args.format, head))
    else:
        for path in report.write(tables, args.format, args.out, head):
            print(f"wrote {path}")
    if args.plot:
        for path in report.plot(tables, args.out or "reports"):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
