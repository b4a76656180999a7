"""Open a model for ``edge.run`` / ``edge.bench`` and prove it can run before any frame is read.

A file that is not a model (truncated, random, empty, a PyTorch checkpoint), metadata that does
not describe the graph (input size, channels, number of classes) and a model that fails on an
input built from its own metadata all become one :class:`ModelError` line, raised at start,
instead of a traceback from the backend in the middle of a run.
"""
from __future__ import annotations

import zipfile
from typing import Optional, Sequence

import numpy as np

from edge.cli_checks import one_line


class ModelError(ValueError):
    """The model file cannot be used; the message names the file and what is wrong."""


def open_model(model, backend: str = "auto", threads: Optional[int] = None,
               precision: Optional[str] = None):
    """``edge.backends.open_backend`` plus the checks of :func:`check_model`."""
    from edge.backends import open_backend
    from edge.builtin import resolve_model
    from edge.sidecar import SidecarError

    path = resolve_model(model)
    if path.is_file() and zipfile.is_zipfile(path):
        raise ModelError(f"--model {path} is a PyTorch checkpoint (a zip archive), not an exported "
                         "model: export it with `python -m export.onnx MODEL.pt` (or "
                         "`python -m export.trt MODEL.pt` for an engine)")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelError(f"--model {path} is empty")
    try:
        opened = open_backend(model, backend, threads=threads, precision=precision)
    except (FileNotFoundError, ImportError, SidecarError):
        raise                              # their own messages already say what to do
    except ValueError as e:                # metadata (json, missing keys, bad recipe), I/O names
        msg = one_line(e)
        if msg.startswith(f"{path} "):     # "<path> is not a readable ONNX model: ..." says it once
            raise ModelError(f"--model {msg}") from None
        raise ModelError(f"--model {path}: {msg}") from None
    except Exception as e:  # noqa: BLE001 - the runtimes raise their own types on a bad file
        raise ModelError(f"--model {path} cannot be loaded ({type(e).__name__}: {one_line(e)}); "
                         "is it a complete .onnx/.engine written by export?") from None
    check_model(opened, path)
    return opened


def graph_input_shape(backend) -> Optional[Sequence]:
    """The input's shape as the graph declares it (ints or names for dynamic axes), if known."""
    session = getattr(backend, "session", None)
    if session is not None:
        from edge.contract import INPUT_NAME

        for i in session.get_inputs():
            if i.name == INPUT_NAME:
                return list(i.shape)
    return None


def check_model(backend, path) -> None:
    """The metadata matches the graph, and one call on a blank input of the metadata's shape
    gives one score per class name."""
    pre = backend.info.preprocess
    names = list(backend.info.class_names)
    if not names or len(set(names)) != len(names):
        raise ModelError(f"--model {path}: its class names {names} must be distinct and non-empty")
    want = [pre.channels, *pre.size]
    shape = graph_input_shape(backend)
    if shape is not None and len(shape) == 4:
        for axis, what, have, need in zip((1, 2, 3), ("channels", "height", "width"), shape[1:], want):
            if isinstance(have, int) and have != need:
                raise ModelError(
                    f"--model {path}: its metadata asks for {pre.channel_order} input of "
                    f"{want[0]}x{want[1]}x{want[2]} (C x H x W) but the graph takes "
                    f"{shape[1]}x{shape[2]}x{shape[3]} ({what} {have} != {need}); re-export it")
    n = max(1, int(getattr(backend, "min_batch", None) or 1))   # an engine's profile minimum
    x = np.zeros((n, *want), np.float32)
    try:
        out = np.asarray(backend(x))
    except Exception as e:  # noqa: BLE001 - any failure here means the model cannot run as described
        raise ModelError(f"--model {path} does not run on a {n}x{want[0]}x{want[1]}x{want[2]} input "
                         f"built from its own metadata ({type(e).__name__}: {one_line(e)})") from None
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] != len(names):
        raise ModelError(f"--model {path} gives outputs of shape {list(out.shape)} per image but its "
                         f"metadata names {len(names)} classes {names}; re-export it")
