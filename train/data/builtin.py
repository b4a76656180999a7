"""Registered datasets: torchvision downloads, Tiny-ImageNet, scikit-learn digits, crowd_synth.

Every builder takes the same keywords (``root``, ``download``, ``synth_size``, ``synth_seed``,
``input_size``) and ignores those it has no use for, so the CLI can pass them uniformly.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from edge.contract import Preprocess
from train.data import DataError, DataSplits, default_cache_dir, register_dataset
from train.data.folder import list_classes, load_folder_splits

# per-channel statistics of the training splits (the usual published values)
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}


def channel_stats(x: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1] units) of a uint8 NCHW tensor, in float64."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(1024):
        f = chunk.double() / 255.0
        total += f.sum((0, 2, 3))
        sq += (f * f).sum((0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _root(root: Optional[str], name: str) -> Path:
    return Path(root) if root else default_cache_dir() / "datasets" / name


def _torchvision(cls_name: str, name: str, root, download: bool, split_kw):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    path = _root(root, name)
    out = []
    for split in ("train", "test"):
        try:
            out.append(cls(str(path), download=download, **split_kw(split)))
        except RuntimeError as e:
            if download:
                raise DataError(f"{name}: could not download into {path}: {e}") from None
            raise DataError(
                f"{name} not found under {path}. Pass --download to fetch it (needs internet), "
                f"or --data-root DIR where it already is."
            ) from None
        except OSError as e:  # URLError and friends when offline
            raise DataError(f"{name}: download into {path} failed ({e}); are you offline?") from None
    return path, out


def _hwc_to_nchw(a) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a))
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    return t.permute(0, 3, 1, 2).contiguous().to(torch.uint8)


def _targets(ds) -> torch.Tensor:
    y = getattr(ds, "targets", None)
    if y is None:
        y = ds.labels
    return torch.as_tensor(np.asarray(y), dtype=torch.int64)


def _splits(name, path, train_x, train_y, test_x, test_y, classes, augment) -> DataSplits:
    mean, std = STATS[name]
    size = tuple(train_x.shape[2:])
    pre = Preprocess(size=size, mean=mean, std=std, channel_order="GRAY" if len(mean) == 1 else "RGB")
    return DataSplits(name, train_x, train_y, test_x, test_y, list(classes), pre, augment, str(path))


@register_dataset("cifar10")
def cifar10(root=None, download=False, **_):
    path, (tr, te) = _torchvision("CIFAR10", "cifar10", root, download, lambda s: {"train": s == "train"})
    return _splits("cifar10", path, _hwc_to_nchw(tr.data), _targets(tr), _hwc_to_nchw(te.data),
                   _targets(te), tr.classes, "crop-flip")


@register_dataset("cifar100")
def cifar100(root=None, download=False, **_):
    path, (tr, te) = _torchvision("CIFAR100", "cifar100", root, download, lambda s: {"train": s == "train"})
    return _splits("cifar100", path, _hwc_to_nchw(tr.data), _targets(tr), _hwc_to_nchw(te.data),
                   _targets(te), tr.classes, "crop-flip")


@register_dataset("svhn")
def svhn(root=None, download=False, **_):
    path, (tr, te) = _torchvision("SVHN", "svhn", root, download, lambda s: {"split": s})
    classes = [str(i) for i in range(10)]
    # SVHN stores NCHW already; random crop only (a flipped digit is another digit)
    return _splits("svhn", path, torch.as_tensor(tr.data), _targets(tr), torch.as_tensor(te.data),
                   _targets(te), classes, "crop")


@register_dataset("fashion_mnist")
def fashion_mnist(root=None, download=False, **_):
    path, (tr, te) = _torchvision("FashionMNIST", "fashion_mnist", root, download,
                                  lambda s: {"train": s == "train"})
    return _splits("fashion_mnist", path, tr.data.unsqueeze(1).contiguous(), _targets(tr),
                   te.data.unsqueeze(1).contiguous(), _targets(te), tr.classes, "none")


@register_dataset("tiny_imagenet")
def tiny_imagenet(root=None, **_):
    """The standard ``tiny-imagenet-200`` layout: train/<wnid>/images/*.JPEG and
    val/images/*.JPEG with val/val_annotations.txt (the validation split is the test set)."""
    path = _root(root, "tiny-imagenet-200")
    if not (path / "train").is_dir():
        raise DataError(f"Tiny-ImageNet not found under {path} (expected tiny-imagenet-200/train); "
                        "download it from the CS231n site and pass --data-root")
    mean, std = STATS["tiny_imagenet"]
    pre = Preprocess(size=(64, 64), mean=mean, std=std)
    classes = list_classes(path / "train")
    train_x, train_y = _tiny_train(path, classes, pre)
    test_x, test_y = _tiny_val(path, classes, pre)
    return DataSplits("tiny_imagenet", train_x, train_y, test_x, test_y, classes, pre, "crop-flip", str(path))


def _tiny_train(path: Path, classes: Sequence[str], pre: Preprocess):
    from edge.files import images_in
    from train.data.folder import decode_files

    files = []
    for label, wnid in enumerate(classes):
        img_dir = path / "train" / wnid / "images"
        files += [(p, label) for p in images_in(img_dir if img_dir.is_dir() else img_dir.parent)]
    x, y, _ = decode_files(files, pre, desc="decode tiny-imagenet/train", where=str(path / "train"))
    return x, y


def _tiny_val(path: Path, classes: Sequence[str], pre: Preprocess):
    from train.data.folder import decode_rgb

    ann = path / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"{ann} missing: the Tiny-ImageNet validation split is the test set")
    index = {c: i for i, c in enumerate(classes)}
    xs, ys = [], []
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            continue
        img = decode_rgb(path / "val" / "images" / parts[0])
        if img is not None:
            xs.append(pre.to_uint8(img))
            ys.append(index[parts[1]])
    if not xs:
        raise DataError(f"no decodable Tiny-ImageNet validation images under {path / 'val'}")
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ys)


@register_dataset("digits")
def digits(input_size: Optional[int] = None, **_):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download), upscaled
    to 32x32 gray; a fixed stratified 70/30 split (seed 0, independent of the run's seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    size = int(input_size or 32)
    d = load_digits()
    imgs = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)  # [N, 8, 8]
    probe = Preprocess(size=(size, size), mean=(0.0,), std=(1.0,), channel_order="GRAY")
    x = torch.from_numpy(np.stack([probe.to_uint8(im) for im in imgs])).permute(0, 3, 1, 2).contiguous()
    y = torch.as_tensor(d.target, dtype=torch.int64)
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.3, random_state=0, stratify=d.target)
    train_x, test_x = x[idx_tr], x[idx_te]
    mean, std = channel_stats(train_x)
    pre = Preprocess(size=(size, size), mean=mean, std=std, channel_order="GRAY")
    return DataSplits("digits", train_x, y[idx_tr], test_x, y[idx_te], [str(i) for i in range(10)],
                      pre, "crop", "sklearn.datasets.load_digits")


@register_dataset("crowd_synth")
def crowd_synth(root=None, synth_size: Optional[int] = None, synth_seed: int = 0,
                input_size: Optional[int] = None, synth_version: Optional[int] = None, **_):
    """The built-in Crowd-drone-like aerial scenes (see :mod:`train.data.crowd_synth`), trained
    by default with the version's policy (:func:`train.data.crowd_synth.default_augment`):
    ``aerial-mosaic`` for v10, ``aerial`` for the earlier versions. The scenes (v3 on) already vary
    light, blur, noise, compression and scale, and adding ``aerial-robust`` on top measured worse on
    real photos; the mosaics' wider views measured better (docs/augmentation.md)."""
    from train.data.crowd_synth import (GENERATOR_VERSION, PAPER_TRAIN_PER_CLASS, default_augment,
                                        ensure_crowd_synth, ground_scale)

    per_class = int(synth_size or PAPER_TRAIN_PER_CLASS)
    version = int(synth_version or GENERATOR_VERSION)
    folder = ensure_crowd_synth(per_class, seed=synth_seed, cache_dir=Path(root) if root else None,
                                version=version)
    size = int(input_size or 128)
    splits = folder_dataset(folder, size, augment=default_augment(version), name="crowd_synth")
    splits.scale = ground_scale(version)  # resizing keeps the ground covered
    # Camera frames are wide (16:9, 4:3) and the scenes square: classify letterboxes a whole frame
    # rather than squeezing it, so people keep their shape (the scenes carry letterbox bands in
    # 10 % of images). On real photos it ranks and calibrates better (docs/builtin_model.md).
    splits.preprocess = replace(splits.preprocess, resize="letterbox")
    return splits


def folder_dataset(root, size: int, augment: Optional[str] = None, name: Optional[str] = None,
                   channels: int = 3) -> DataSplits:
    """An image folder at ``size`` x ``size``; mean/std measured on its training split;
    ``augment`` None: chosen from the images (:func:`train.data.augment.folder_default`)."""
    order = "GRAY" if channels == 1 else "RGB"
    probe = Preprocess(size=(size, size), mean=(0.0,) * channels, std=(1.0,) * channels,
                       channel_order=order)
    splits = load_folder_splits(root, probe, augment, name)
    mean, std = channel_stats(splits.train_x)
    splits.preprocess = Preprocess(size=(size, size), mean=mean, std=std, channel_order=order)
    return splits
