"""The paper's Crowd-drone setting (POSD paper, sec. 4.3, Table 6) as one command.

    python -m train.crowd_drone --posd --knn 2                 # built-in crowd_synth data, paper size
    python -m train.crowd_drone --posd --knn 2 --epochs 1 --synth-size 100 --out runs/quick
    python -m train.crowd_drone --data /path/to/crowd-drone --posd --knn 2   # the real dataset

Preset: crowd_fcn, batch 32, SGD lr 1e-3 momentum 0.9, 100 epochs; POSD lambda 1e-4. The
built-in data is generated once (7,000 + 7,000 training and 3,000 + 3,000 test images) into
~/.cache/edge-students/crowd_synth. Every flag of ``python -m train`` can override.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from train.cli import main as _main


def main(argv: Optional[Sequence[str]] = None) -> int:
    return _main(argv, prog="python -m train.crowd_drone", preset="crowd")


if __name__ == "__main__":
    sys.exit(main())
