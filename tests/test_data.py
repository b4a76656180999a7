"""Data: image folders (odd images, corrupt files, bad layouts), digits, augmentation, normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.contract import Preprocess
from train.data import DataError, build_dataset, list_datasets
from train.data.augment import NAMES, Normalizer, apply, draw, random_crop, random_flip
from train.data.builtin import folder_dataset


def _write(path, img):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _folder(root, n=3, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("crowd", "no_crowd"):
            for i in range(n):
                _write(root / split / cls / f"{i}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


def test_folder_with_mixed_formats_modes_and_sizes(tmp_path):
    root = _folder(tmp_path / "d")
    rng = np.random.default_rng(1)
    _write(root / "train" / "crowd" / "gray.jpg", rng.integers(0, 256, (50, 70), dtype=np.uint8))
    _write(root / "train" / "crowd" / "rgba.png", rng.integers(0, 256, (33, 21, 4), dtype=np.uint8))
    _write(root / "train" / "no_crowd" / "odd.bmp", rng.integers(0, 256, (17, 129, 3), dtype=np.uint8))
    (root / "train" / "crowd" / "notes.txt").write_text("not an image")      # ignored by extension
    splits = folder_dataset(root, 32)
    assert splits.class_names == ["crowd", "no_crowd"]
    assert splits.train_x.shape == (9, 3, 32, 32) and splits.train_x.dtype == torch.uint8
    assert splits.test_x.shape == (6, 3, 32, 32)
    assert splits.train_y.tolist() == [0] * 5 + [1] * 4
    assert len(splits.preprocess.mean) == 3 and all(0 < s < 1 for s in splits.preprocess.std)


def test_corrupt_images_are_skipped_with_a_counted_warning(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "train" / "crowd" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "train" / "crowd" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 2 undecodable"):
        splits = folder_dataset(root, 32)
    assert len(splits.train_y) == 6


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("breakage,message", [
    ("missing", "data folder not found"),
    ("no_test", "missing folder"),
    ("empty_class", "has no images"),
    ("test_lacks_class", "lacks the class folder"),
    ("all_corrupt", "no decodable images in class folder"),
])
def test_bad_layouts_give_clear_errors(tmp_path, breakage, message):
    import shutil

    root = _folder(tmp_path / "d")
    if breakage == "missing":
        root = tmp_path / "nope"
    elif breakage == "no_test":
        shutil.rmtree(root / "test")
    elif breakage == "empty_class":
        for f in (root / "train" / "crowd").iterdir():
            f.unlink()
    elif breakage == "test_lacks_class":
        shutil.rmtree(root / "test" / "crowd")
    elif breakage == "all_corrupt":
        for f in (root / "test" / "crowd").iterdir():
            f.write_bytes(b"junk")
    with pytest.raises(DataError, match=message):
        folder_dataset(root, 32)


def test_digits_is_real_offline_data(digits):
    assert digits.train_x.shape[1:] == (1, 32, 32) and len(digits.train_y) + len(digits.test_y) == 1797
    assert digits.num_classes == 10 and digits.preprocess.channel_order == "GRAY"
    assert set(digits.test_y.tolist()) == set(range(10))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'.*cifar10"):
        build_dataset("cifar11")
    assert {"cifar10", "cifar100", "svhn", "fashion_mnist", "tiny_imagenet", "digits"} <= set(list_datasets())


def test_torchvision_dataset_absent_offline_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="--download"):
        build_dataset("cifar10", root=str(tmp_path))


# ------------------------------------------------------------------ augmentation
def test_random_crop_matches_a_per_sample_reference():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(5)
    out = random_crop(x, 2, gen)
    gen = torch.Generator().manual_seed(5)
    oy = torch.randint(0, 5, (6,), generator=gen)
    ox = torch.randint(0, 5, (6,), generator=gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        ref = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        assert torch.equal(out[i], ref)


def test_flip_flips_about_half_and_keeps_the_rest():
    x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    out = random_flip(x, 3, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1) & ~(out == x).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped | same).all() and 150 < int(flipped.sum()) < 250


@pytest.mark.parametrize("name", sorted(NAMES))
def test_augmentations_keep_shape_dtype_and_are_seeded(name):
    x = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    a = apply(x, draw(name, x.shape, torch.Generator().manual_seed(1)))
    b = apply(x, draw(name, x.shape, torch.Generator().manual_seed(1)))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)


def test_torch_normaliser_equals_the_edge_recipe():
    pre = Preprocess(size=(8, 8), mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616))
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    edge = pre.normalize(x)
    torch_side = Normalizer(pre.mean, pre.std, "cpu")(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(torch_side.numpy(), edge)
