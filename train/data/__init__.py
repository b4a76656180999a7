"""Datasets as preloaded uint8 tensors: decoded once, augmented batched on the training device.

``build_dataset(name, ...)`` returns :class:`DataSplits`. Registered names are the CLI's
``--dataset`` choices; ``--data DIR`` (an image folder, ``DIR/train/<class>/*`` and
``DIR/test/<class>/*``) goes through :func:`train.data.folder.load_folder_splits`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import torch

from edge.contract import GroundScale, Preprocess
from train.registry import Registry


class DataError(ValueError):
    """A dataset that cannot be loaded: missing, empty or unreadable. The message says why."""


@dataclass
class DataSplits:
    """Train and test images as uint8 NCHW tensors with int64 labels."""

    name: str
    train_x: torch.Tensor   # [N, C, H, W] uint8
    train_y: torch.Tensor   # [N] int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: List[str]
    preprocess: Preprocess
    augment: str            # one of train.data.augment.NAMES
    source: str = ""        # where the data came from, for the config record
    scale: Optional[GroundScale] = None   # ground a training image covers, when known
    augment_reason: str = ""   # why this augmentation, when it was chosen from the data

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:   # a classifier of one class is always right and learns nothing
            raise DataError(f"{self.name} has {len(self.class_names)} class(es) "
                            f"({', '.join(map(str, self.class_names)) or 'none'}); a classifier needs at least 2")
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise DataError(f"{self.name} {split} images must be uint8 NCHW, got {x.dtype} {tuple(x.shape)}")
            if len(x) != len(y):
                raise DataError(f"{self.name} {split}: {len(x)} images but {len(y)} labels")
            if len(x) == 0:
                raise DataError(f"{self.name} has no {split} images")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self):
        return tuple(self.train_x.shape[2:])

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])


DATASETS: Registry[DataSplits] = Registry("dataset")
register_dataset = DATASETS.register


def default_cache_dir() -> Path:
    """Where built-in data is generated and downloads go unless told otherwise."""
    env = os.environ.get("EDGE_STUDENTS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edge-students"


def build_dataset(name: str, **kwargs: Any) -> DataSplits:
    return DATASETS.get(name)(**kwargs)


def list_datasets() -> List[str]:
    return DATASETS.names()


from train.data import builtin  # noqa: E402,F401  (registers)
