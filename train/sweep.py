"""``python -m train.sweep``: the documented name of the sweep command, :mod:`train.experiments.sweep`."""
import sys

from train.experiments.sweep import main

if __name__ == "__main__":
    sys.exit(main())
