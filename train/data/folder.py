"""Image folders (``DIR/train/<class>/*``, ``DIR/test/<class>/*``) decoded once into uint8 tensors.

Decoding uses OpenCV and the resize of :class:`edge.contract.Preprocess`, the very code the edge
runtime runs, so training and deployment see the same pixels. Undecodable files are skipped with
one counted warning; grayscale, RGBA and odd sizes are converted to the model's input contract.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from edge.contract import IMAGE_EXTENSIONS, Preprocess
from edge.files import images_in
from edge.preprocess import decode_rgb  # noqa: F401  (one decoder for train, export and edge)
from train.data import DataError, DataSplits


def list_classes(split_dir: Path) -> List[str]:
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir} (expected <DIR>/train/<class>/* and <DIR>/test/<class>/*)")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir} has no class folders")
    return classes


def split_files(split_dir: Path, classes: Sequence[str]) -> List[Tuple[Path, int]]:
    """The (file, label) pairs of one split, class by class, each class's files sorted; nothing
    is decoded (export draws a few of them, see export/source.py)."""
    files: List[Tuple[Path, int]] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise DataError(f"{split_dir} lacks the class folder {name!r} that the train split has")
        images = images_in(class_dir)
        if not images:
            raise DataError(f"class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += [(p, label) for p in images]
    return files


def load_split(split_dir: Path, classes: Sequence[str], preprocess: Preprocess,
               workers: int = 4, desc: str = "",
               sizes: Optional[List[Tuple[int, int]]] = None) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Decode one split: (images uint8 [N,C,H,W], labels [N], number of skipped files); ``sizes``,
    if given, receives each kept image's original (H, W)."""
    files = split_files(split_dir, classes)
    x, y, skipped = decode_files(files, preprocess, workers, desc, where=str(split_dir), sizes=sizes)
    empty = [classes[c] for c in range(len(classes)) if not (y == c).any()]
    if empty:
        raise DataError(f"{split_dir}: no decodable images in class folder(s) {', '.join(empty)}")
    return x, y, skipped


def decode_files(files: Sequence[Tuple[Path, int]], preprocess: Preprocess, workers: int = 4,
                 desc: str = "", where: str = "",
                 sizes: Optional[List[Tuple[int, int]]] = None) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Decode (path, label) pairs in threads (OpenCV releases the GIL); skip undecodable ones.
    ``sizes``, if given, receives the original (H, W) of each kept image."""
    shapes: List[Optional[Tuple[int, int]]] = [None] * len(files)

    def work(i):
        img = decode_rgb(files[i][0])
        if img is None:
            return None
        shapes[i] = tuple(img.shape[:2])
        return preprocess.to_uint8(img)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(_progress(pool.map(work, range(len(files))), len(files), desc))
    keep = [i for i, im in enumerate(decoded) if im is not None]
    if sizes is not None:
        sizes.extend(shapes[i] for i in keep)
    skipped = len(files) - len(keep)
    if skipped:
        bad = [str(files[i][0]) for i, im in enumerate(decoded) if im is None][:3]
        warnings.warn(f"skipped {skipped} undecodable image(s) in {where} (e.g. {', '.join(bad)})")
    if not keep:
        raise DataError(f"no decodable images in {where}")
    x = torch.from_numpy(np.stack([decoded[i] for i in keep])).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([files[i][1] for i in keep], dtype=torch.int64)
    return x, y, skipped


def _progress(it, total: int, desc: str):
    if not desc:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="img", leave=False, mininterval=1.0, disable=None)


def load_folder_splits(root, preprocess: Preprocess, augment: Optional[str] = None,
                       name: Optional[str] = None) -> DataSplits:
    """``augment`` None: the policy is chosen from the training images' original sizes
    (:func:`train.data.augment.folder_default`)."""
    from train.data.augment import folder_default

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    classes = list_classes(root / "train")
    if not (root / "test").is_dir():
        raise DataError(f"missing folder {root / 'test'} (expected <DIR>/train/<class>/* and <DIR>/test/<class>/*)")
    extra = sorted(set(list_classes(root / "test")) - set(classes))
    if extra:
        raise DataError(f"{root / 'test'} has class folders the train split lacks: {', '.join(extra)}")
    sizes: List[Tuple[int, int]] = []
    train_x, train_y, _ = load_split(root / "train", classes, preprocess, desc=f"decode {root.name}/train",
                                     sizes=sizes)
    test_x, test_y, _ = load_split(root / "test", classes, preprocess, desc=f"decode {root.name}/test")
    reason = ""
    if augment is None:
        augment, reason = folder_default(sizes)
    return DataSplits(name or root.name, train_x, train_y, test_x, test_y, classes, preprocess,
                      augment, source=str(root), augment_reason=reason)
