"""How a command starts: its flags are parsed, it is set up (model, data, source, outputs), and a
bad model, data set or value ends it with ONE line ``prog: error: ...`` on stderr and status 2
before any work is done; then the work runs. ``edge.run``, ``edge.bench``, ``edge.evaluate`` and
``train.calibrate`` start this way. Standard library and ``edge`` only (the runtime imports it).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Tuple, Type

from edge.cli_checks import one_line
from edge.sidecar import SidecarError


def run_command(prog: str, args: argparse.Namespace, setup: Callable[[argparse.Namespace], Any],
                work: Callable[[argparse.Namespace, Any], int],
                errors: Tuple[Type[BaseException], ...],
                say: Callable[[BaseException], str] = str) -> int:
    """``work(args, setup(args))``, the exit status; ``setup`` raising one of ``errors`` prints
    ``prog: error: say(e)`` on stderr and returns 2."""
    try:
        state = setup(args)
    except errors as e:
        print(f"{prog}: error: {say(e)}", file=sys.stderr)
        return 2
    return work(args, state)


def model_error(e: BaseException) -> str:
    """An error on one line, except an engine refusal: it lists each difference and the
    rebuild command, one a line."""
    return str(e) if isinstance(e, SidecarError) else one_line(e)
