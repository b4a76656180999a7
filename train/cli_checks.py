"""Checks of user input at the command-line boundary: each names the flag, the bad value and
what is allowed, so a command can print one line and exit 2 before it creates anything.

Used by ``python -m train`` (and its presets), ``python -m train.sweep`` and
``python -m profiling.tables``, with :class:`edge.cli_checks.OneLineParser` and
:func:`edge.cli_checks.fail` for the error line. Library code below the boundary keeps its own
``ValueError``s.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

#: a model's keyword arguments that the data sets, never ``--model-kwargs``
DATA_SET_KWARGS = {"num_classes": "the data", "in_channels": "the data", "input_size": "--input-size"}
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def json_object(text: str) -> dict:
    """``type=`` for a flag that takes a JSON object (argparse reports the message)."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"widths\": [24, 48, 96]}}', "
                                         f"got {text!r}")
    return value


def flag(field: str) -> str:
    """The command-line flag of a :class:`train.config.TrainConfig` field."""
    return "--lambda" if field == "lam" else "--" + field.replace("_", "-")


def check_int(name: str, value: Optional[int], lo: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
        raise ValueError(f"{name} must be >= {lo} (an integer), got {value!r}")


def check_float(name: str, value: Optional[float], lo: Optional[float] = None,
                hi: Optional[float] = None, lo_open: bool = False, hi_open: bool = False) -> None:
    """A finite number in [lo, hi] (an end excluded when ``*_open``); None passes (a default)."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        raise ValueError(f"{name} must be a finite number {_range(lo, hi, lo_open, hi_open)}, got {value!r}")


def _range(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"{'<' if hi_open else '<='} {hi:g}" if hi is not None else "(not NaN or infinite)"


def check_milestones(milestones: Sequence[int]) -> None:
    ms = list(milestones)
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms) or ms != sorted(set(ms)):
        raise ValueError(f"--milestones must be increasing epochs >= 1, got {' '.join(map(str, ms))}")


def check_train_config(cfg) -> None:
    """Every numeric setting of a :class:`train.config.TrainConfig` in its allowed range."""
    for name in ("epochs", "eval_batch_size", "knn"):
        check_int(flag(name), getattr(cfg, name), 1)
    # BatchNorm and the batch-relational losses need at least two samples per batch
    check_int("--batch-size", cfg.batch_size, 2)
    for name in ("seed", "synth_seed"):
        check_int(flag(name), getattr(cfg, name), 0)
    check_int("--synth-size", cfg.synth_size, 1)
    check_int("--input-size", cfg.input_size, 1)
    check_float("--lr", cfg.lr, 0, lo_open=True)
    check_float("--momentum", cfg.momentum, 0, 1, hi_open=True)
    check_float("--weight-decay", cfg.weight_decay, 0)
    check_float("--gamma", cfg.gamma, 0, 1, lo_open=True)
    check_milestones(cfg.milestones)
    check_float("--lambda", cfg.lam, 0)
    check_float("--kernel-d", cfg.kernel_d, 0, lo_open=True)
    check_float("--temperature", cfg.temperature, 0, lo_open=True)
    check_float("--kd-alpha", cfg.kd_alpha, 0, 1)
    if not DEVICE_RE.match(str(cfg.device)):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    check_knn_fits_batch(cfg.method, cfg.knn, cfg.batch_size)
    check_model_kwargs(cfg.model, cfg.model_kwargs)


def check_knn_fits_batch(method: str, knn: int, batch_size: int, batch: str = "--batch-size") -> None:
    """Neighbours come from the sample's own batch: ``k`` of them need ``k + 1`` samples.
    Refused rather than silently clamped, so the recorded ``--knn`` is the one that ran (the
    last, smaller batch of an epoch is still clamped; see train.losses.posd). ``batch`` names
    the batch the neighbours come from (under DDP with local scope: each rank's share)."""
    from train.losses import loss_settings

    if "knn" in loss_settings(method) and knn >= batch_size:
        raise ValueError(f"--knn {knn} needs batches of more than {knn} samples (each sample's "
                         f"neighbours come from its batch), but {batch} is {batch_size}; "
                         f"use --knn <= {batch_size - 1} or a larger --batch-size")


def check_model_kwargs(model: str, kwargs: Mapping[str, Any]) -> None:
    """Keys the architecture's builder accepts, except those the data decides."""
    from train.models import MODELS

    params = inspect.signature(MODELS.get(model)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in kwargs:
        if key in DATA_SET_KWARGS:
            raise ValueError(f"--model-kwargs key {key!r} is set by {DATA_SET_KWARGS[key]}, not here")
        if key not in params and not takes_any:
            allowed = [k for k in params if k not in DATA_SET_KWARGS]
            raise ValueError(f"--model-kwargs key {key!r} is not an argument of {model}; "
                             f"allowed: {', '.join(allowed) or 'none'}")


def check_output_dir(path, name: str = "--out") -> None:
    """``path`` is, or can become, a folder this process may write into; the messages name the
    flag. Creates nothing that stays: the check creates and removes a file where the folder is or
    would be (permission bits do not tell for root, read-only mounts or ``/proc``)."""
    from edge.cli_checks import check_output_dir as check_folder

    check_folder(name, path)


def check_input_dir(path, name: str) -> None:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{name} {path} is a file, not a folder")


def describe_os_error(e: OSError) -> str:
    """One line for a failed file operation: what, where and the system's reason in words."""
    if e.strerror and e.filename:
        return f"{e.filename}: {e.strerror}"
    if e.strerror:
        return e.strerror
    return str(e).splitlines()[0] if str(e) else type(e).__name__
