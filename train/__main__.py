"""``python -m train``: train a student. See :mod:`train.cli` for the recipes."""
from __future__ import annotations

import signal
import sys
from typing import Optional, Sequence

from train.cli import main as _main


def main(argv: Optional[Sequence[str]] = None) -> int:
    return _main(argv)


if __name__ == "__main__":
    code = main()
    # exiting anyway: a late second Ctrl-C must not print a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
