"""Command-line checks shared by the CLIs (``edge.run``, ``edge.bench``, ``export.onnx``,
``export.trt``): numbers in their allowed range, output paths that can be written, and text that
is safe to print. The one-line argument parser (:class:`OneLineParser`) and error line
(:func:`fail`) serve every command of the toolkit, ``python -m train`` and
``python -m profiling.tables`` included.

Every check runs before a command opens a model, a source or an output, and raises
:class:`UsageError` with one line that names the flag, the bad value and what is allowed; the
CLI prints it and exits 2, so a bad value never leaves a file created or changed. numpy-free and
torch-free: the Jetson runtime imports it.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple


class UsageError(ValueError):
    """A command-line value outside what is allowed (exit status 2); the message is one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as ONE line (``prog: error: ...``) and exits 2,
    instead of the usage block followed by the error: a script or a service log then holds the
    reason on the line it greps for."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


# --- numbers --------------------------------------------------------------------------------
def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_show(v) for v in value)
    return str(value)


def need_int(flag: str, value, low: int = 1, high: Optional[int] = None, note: str = "") -> None:
    """``value`` is an int in ``[low, high]`` (``None`` passes: the flag's default applies)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise UsageError(f"{flag} {_show(value)}: must be {allowed}{note}")


def need_number(flag: str, value, low: Optional[float] = None, high: Optional[float] = None,
                low_open: bool = False, high_open: bool = False, note: str = "") -> None:
    """``value`` is a finite number inside the interval (``None`` passes)."""
    if value is None:
        return
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        raise UsageError(f"{flag} {_show(value)}: must be {_interval(low, high, low_open, high_open)}"
                         f"{note}")


def _interval(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                f"{')' if high_open else ']'}")
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def need_ints(flag: str, values: Optional[Sequence[int]], low: int = 1,
              high: Optional[int] = None) -> None:
    """Every value of an ``nargs`` flag is an int in ``[low, high]``."""
    for v in values or ():
        try:
            need_int(flag, v, low, high)
        except UsageError:
            allowed = f"integers >= {low}" if high is None else f"integers in {low}..{high}"
            raise UsageError(f"{flag} {_show(list(values))}: must be {allowed}") from None


Rule = Tuple[str, str, Callable[[str, object], None]]


def check_rules(args: argparse.Namespace, rules: Iterable[Rule]) -> None:
    """Apply ``(attribute, flag, check)`` rules to parsed arguments; the first failure raises."""
    for attr, flag, check in rules:
        if hasattr(args, attr):
            check(flag, getattr(args, attr))


# --- output paths ---------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _can_create_in(folder: Path) -> Optional[str]:
    """None when a file can be created in ``folder`` (tried for real: the permission bits do not
    tell for root, read-only mounts or full quotas), else the reason."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(tmp)
    return None


def _check_parent(flag: str, path: Path, shown: Optional[Path] = None) -> None:
    """Files can be created where ``path`` would go; messages name ``shown`` (default ``path``)."""
    anchor = _nearest_existing(path.parent)
    shown = path if shown is None else shown
    if not anchor.is_dir():
        raise UsageError(f"{flag} {shown}: {anchor} is a file, not a folder")
    why = _can_create_in(anchor)
    if why:
        raise UsageError(f"{flag} {shown}: cannot create files in {anchor} ({why})")


def check_output_file(flag: str, path, allow_stdout: bool = False, replace: bool = True) -> None:
    """``path`` can be written as a file: not a folder, not under a file, in a writable place.

    An existing file is opened for appending (which changes nothing) to prove it can be written;
    a device or FIFO (``/dev/null``) is accepted as it is. ``replace``: the file is written
    through a temporary sibling and a rename, so its folder must take new files too (an
    appended log only needs the file itself)."""
    if path is None or (allow_stdout and str(path) == "-"):
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {p} is a folder; give a file path")
    if p.exists():
        mode = p.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            raise UsageError(f"{flag} {p} is not a regular file")
        try:
            with open(p, "ab"):
                pass
        except OSError as e:
            raise UsageError(f"{flag} {p}: cannot write it ({e.strerror or e})") from None
        if not (replace and stat.S_ISREG(mode)):
            return
    _check_parent(flag, p)


def check_output_dir(flag: str, path) -> None:
    """``path`` is (or can become) a folder files can be written into."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {p} is a file; give a folder")
    if p.is_dir():
        why = _can_create_in(p)
        if why:
            raise UsageError(f"{flag} {p}: cannot create files in it ({why})")
        return
    _check_parent(flag, p / "x", shown=p)          # a file inside the folder-to-be


def check_frames_dir(flag: str, path, inputs: Iterable[Tuple[str, object]]) -> None:
    """``path``, a folder ``edge.run`` writes numbered frames into (``000001.jpg``...), holds none
    yet and is not a folder the command reads: a frame written there would replace a file."""
    from edge.outputs import is_frame_name

    if path is None or not Path(path).is_dir():
        return
    check_not_input(flag, path, inputs)
    try:
        frames = sorted(e.name for e in os.scandir(path) if is_frame_name(e.name))
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot list it ({e.strerror or e})") from None
    if frames:
        more = f" and {len(frames) - 1} more" if len(frames) > 1 else ""
        raise UsageError(f"{flag} {path} already holds frames ({frames[0]}{more}), which this run "
                         "would overwrite; give an empty or new folder")


def check_not_input(flag: str, path, inputs: Iterable[Tuple[str, object]]) -> None:
    """``path`` is none of the files the command reads (``(what, path)`` pairs, e.g.
    ``("--model", args.model)``): an output given an input's name would destroy the input."""
    if path is None:
        return
    for what, source in inputs:
        if source is None:
            continue
        try:
            same = os.path.samefile(path, source)
        except (OSError, ValueError):      # either one missing (a new output): not the same
            continue
        if same:
            raise UsageError(f"{flag} {path} is {what} {source}, which this command reads; "
                             "writing it would destroy it: give another path")


def model_inputs(model) -> list:
    """``--model``'s files as :func:`check_not_input` takes them: the model (a built-in name
    resolved to its file) and an engine's sidecar."""
    from edge.builtin import resolve_model

    try:
        path = resolve_model(model)
    except OSError:                        # a missing built-in: opening the model says so
        return []
    return [("--model", path), ("--model's sidecar", path.with_name(path.name + ".json"))]


def write_text_output(path, text: str) -> None:
    """Write a small text output: atomically (temporary file, then rename) for a regular file,
    in place for a device or FIFO (renaming over ``/dev/stdout`` would replace the device)."""
    from edge.files import atomic_write

    p = Path(path)
    if p.exists() and not stat.S_ISREG(p.stat().st_mode):
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        return
    atomic_write(p, lambda f: f.write(text.encode("utf-8")))


# --- printing ---------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str, limit: Optional[int] = 400) -> str:
    """``text`` (e.g. a library's multi-line error) on one line, shortened to ``limit`` chars
    (``None``: never shortened)."""
    flat = " ".join(str(text).split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 3] + "..."


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences, newlines) shown as ``\\xHH``,
    for echoing names that came from a file or another user."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def shell_quote(arg: str) -> str:
    """One shell word for ``arg``: ``shlex.quote``, or bash's ``$'...'`` form when ``arg`` holds
    control characters, so the printed command is both safe to show on a terminal (no raw escape
    codes) and exact when pasted."""
    arg = str(arg)
    if not _CONTROL.search(arg):
        return shlex.quote(arg)
    body = arg.replace("\\", "\\\\").replace("'", "\\'")
    # byte escapes of the UTF-8 encoding: bash's \xHH writes bytes, so a C1 control (U+009B)
    # needs both of its bytes to come back as the same text
    return "$'" + _CONTROL.sub(lambda m: "".join(f"\\x{b:02x}" for b in m.group().encode()),
                                body) + "'"


def shell_join(words: Iterable[str]) -> str:
    return " ".join(shell_quote(w) for w in words)


def fail(prog: str, message) -> int:
    """Print ``prog: error: message`` on stderr as one line; returns the exit status 2. The
    message is a command's own (flag, value, reason): flattened and made printable, never cut,
    so the reason at its end survives a long echoed command line."""
    print(f"{prog}: error: {printable(one_line(message, None))}", file=sys.stderr)
    return 2


# --- per command ------------------------------------------------------------------------------
def _int(low=1, high=None, note=""):
    return lambda flag, v: need_int(flag, v, low, high, note)


def _num(low=None, high=None, low_open=False, high_open=False):
    return lambda flag, v: need_number(flag, v, low, high, low_open, high_open)


def _ints(low=1, high=None):
    return lambda flag, v: need_ints(flag, v, low, high)


MAX_FRAME_SIDE = 8192

RUN_RULES: Tuple[Rule, ...] = (
    ("threshold", "--threshold", _num(0, 1, low_open=True, high_open=True)),
    ("unsafe_above", "--unsafe-above", _num(0, 1)),
    ("safe_below", "--safe-below", _num(0, 1)),
    ("smooth", "--smooth", _num(0, 1, low_open=True)),
    ("hold", "--hold", _int(1)),
    ("tile", "--tile", _int(1, note=" (omit it to size tiles from the camera)")),
    ("stride", "--stride", _int(1, note=" (omit it for half a tile)")),
    ("tile_batch", "--tile-batch", _int(1)),
    ("batch", "--batch", _int(1)),
    ("queue_size", "--queue-size", _int(1)),
    ("threads", "--threads", _int(1, note=" (omit it for cores - 1)")),
    ("max_frames", "--max-frames", _int(1, note=" (omit it to run to the end of the source)")),
    ("reconnect_timeout", "--reconnect-timeout", _num(0, low_open=True)),
    ("csi_size", "--csi-size", _ints(1, MAX_FRAME_SIDE)),
    ("csi_fps", "--csi-fps", _int(1)),
    ("video_fps", "--video-fps", _num(0, low_open=True)),
)


def check_run_args(args: argparse.Namespace) -> None:
    """``edge.run``'s numbers and output paths, before the model, source or outputs open."""
    check_rules(args, RUN_RULES)
    if args.safe_below > args.unsafe_above:
        raise UsageError(f"--safe-below {_show(args.safe_below)} is above --unsafe-above "
                         f"{_show(args.unsafe_above)}: the hysteresis needs safe-below <= unsafe-above")
    check_output_file("--output", args.output, allow_stdout=True, replace=False)
    check_output_file("--summary-json", args.summary_json)
    check_output_file("--save-video", args.save_video)
    check_output_dir("--save-images", args.save_images)
    inputs = model_inputs(args.model) + [("--source", args.source),
                                         ("--altitude-log", getattr(args, "altitude_log", None))]
    check_frames_dir("--save-images", args.save_images, inputs)
    check_not_input("--output", args.output, inputs)
    check_not_input("--summary-json", args.summary_json, inputs)
    check_not_input("--save-video", args.save_video, inputs)


BENCH_RULES: Tuple[Rule, ...] = (
    ("batch", "--batch", _ints(1, 4096)),
    ("warmup", "--warmup", _int(0)),
    ("iters", "--iters", _int(1)),
    ("threads", "--threads", _int(1, note=" (omit it for cores - 1)")),
    ("pipeline_frames", "--pipeline-frames", _int(0, note=" (0 skips the end-to-end run)")),
    ("pipeline_size", "--pipeline-size", _ints(1, MAX_FRAME_SIDE)),
)


def check_bench_args(args: argparse.Namespace) -> None:
    """``edge.bench``'s numbers and its --json path, before the model opens."""
    check_rules(args, BENCH_RULES)
    check_output_file("--json", args.json)
    check_not_input("--json", args.json, model_inputs(args.model))

