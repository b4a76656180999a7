"""What every crowd_synth generator version shares: image size, classes, splits, sizes, marker."""
from __future__ import annotations

import math

GENERATOR_VERSION = 10            # the default version (``--synth-version``)
VERSIONS = (2, 3, 4, 5, 6, 10)      # every version that can still be generated
PAPER_TRAIN_PER_CLASS = 7000
SIZE = 128
CLASSES = ("crowd", "no_crowd")   # folder names; sorted, so the label of "crowd" is 0
SPLITS = ("train", "test")
MARKER = "crowd_synth.json"       # written last: a folder without it is never used
#: the augmentation a version trains with when ``--augment`` is not given (train/data/augment.py):
#: v10 was chosen together with ``aerial-mosaic`` (docs/crowd_synth.md); the earlier versions keep
#: ``aerial``, so their runs reproduce with ``--synth-version N`` alone
DEFAULT_AUGMENT = {10: "aerial-mosaic"}


def default_augment(version: int) -> str:
    """The augmentation policy version ``version`` trains with by default."""
    return DEFAULT_AUGMENT.get(int(version), "aerial")


def n_test_per_class(train_per_class: int) -> int:
    """The paper's 7:3 train/test split: 7000 train -> 3000 test images per class."""
    return math.ceil(train_per_class * 3 / 7)
