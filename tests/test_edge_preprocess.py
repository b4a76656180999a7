"""Edge preprocessing == train preprocessing (contract 4), and every image kind gets through."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge.contract import Preprocess  # noqa: E402
from edge.preprocess import FramePreprocessor, decode_bgr  # noqa: E402

try:
    from edge_helpers import MEAN, STD
except ImportError:  # tests/ collected as a package
    from tests.edge_helpers import MEAN, STD


def _images(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    out = {}
    for ext in ("png", "jpg", "bmp"):
        p = tmp_path / f"colour.{ext}"
        cv2.imwrite(str(p), rgb)
        out[ext] = p
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[:, :, 0])
    out["gray"] = tmp_path / "gray.png"
    rgba = np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    out["rgba"] = tmp_path / "rgba.png"
    cv2.imwrite(str(tmp_path / "tiny.png"), rgb[:7, :5])   # odd and smaller than the input
    out["tiny"] = tmp_path / "tiny.png"
    cv2.imwrite(str(tmp_path / "deep.png"), (rgb.astype(np.uint16) * 257))  # 16-bit PNG
    out["deep"] = tmp_path / "deep.png"
    return out


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center-crop"])
@pytest.mark.parametrize("order", ["RGB", "BGR", "GRAY"])
def test_edge_matches_train_preprocessing(tmp_path, order, resize):
    torch = pytest.importorskip("torch")
    folder = pytest.importorskip("train.data.folder")
    augment = pytest.importorskip("train.data.augment")
    n = 1 if order == "GRAY" else 3
    recipe = Preprocess((48, 64), MEAN[:n], STD[:n], order, resize)
    edge = FramePreprocessor(recipe)
    norm = augment.Normalizer(recipe.mean, recipe.std, "cpu")
    for kind, path in _images(tmp_path).items():
        # train: decode_rgb -> Preprocess.to_uint8 -> NCHW uint8 -> Normalizer (torch)
        u8 = recipe.to_uint8(folder.decode_rgb(path))
        ref = norm(torch.from_numpy(u8[None]).permute(0, 3, 1, 2).contiguous()).numpy()
        # edge: decode_bgr -> FramePreprocessor (both the fast path and the plain one)
        img = decode_bgr(path)
        fast = edge.batch([img])
        np.testing.assert_array_equal(edge.to_uint8(img), u8, err_msg=kind)
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-6, err_msg=kind)
        np.testing.assert_allclose(fast, recipe.normalize(u8[None]), rtol=0, atol=1e-6, err_msg=kind)


def test_decode_rejects_corrupt_and_empty(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert decode_bgr(bad) is None
    assert decode_bgr(empty) is None
    assert decode_bgr(tmp_path / "missing.png") is None


def test_fast_normalize_matches_the_contract_on_a_frame():
    recipe = Preprocess((720, 1280), MEAN, STD, "RGB")
    frame = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    fast = FramePreprocessor(recipe).to_tensor(frame, size=(720, 1280))
    ref = recipe.normalize(frame[None, :, :, ::-1])[0]
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-6)    # one rounding instead of three


def _reference_fit(img, size, policy, fill):
    """The policies written plainly: scale factor, then crop or pad around the centre."""
    h, w = size
    src_h, src_w = img.shape[:2]
    if policy == "stretch":
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if src_h * src_w > h * w else cv2.INTER_LINEAR)
    if policy == "center-crop":
        s = max(h / src_h, w / src_w)          # cover the input, cut what sticks out
        ch, cw = min(src_h, round(h / s)), min(src_w, round(w / s))
        y0, x0 = (src_h - ch) // 2, (src_w - cw) // 2
        return _reference_fit(img[y0:y0 + ch, x0:x0 + cw], size, "stretch", fill)
    s = min(h / src_h, w / src_w)              # fit inside the input, pad the rest
    nh, nw = round(src_h * s), round(src_w * s)
    out = np.zeros((h, w, img.shape[2]), np.uint8) + np.array(fill, np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top:top + nh, left:left + nw] = _reference_fit(img, (nh, nw), "stretch", fill)
    return out


@pytest.mark.parametrize("shape", [(90, 160), (160, 90), (64, 64), (30, 200), (7, 5)])
@pytest.mark.parametrize("policy", ["letterbox", "center-crop"])
def test_resize_policies_keep_the_aspect_ratio(shape, policy):
    from edge.contract import fit_to_size

    img = np.random.default_rng(2).integers(0, 256, shape + (3,), dtype=np.uint8)
    fill = (124, 116, 104)
    got = fit_to_size(img, (48, 64), policy, fill)
    assert got.shape == (48, 64, 3)
    np.testing.assert_array_equal(got, _reference_fit(img, (48, 64), policy, fill))


def test_letterbox_pads_with_the_mean_so_padding_normalises_to_zero():
    recipe = Preprocess((64, 64), MEAN, STD, "RGB", "letterbox")
    frame = np.full((90, 160, 3), 255, np.uint8)                 # white, wider than tall
    x = FramePreprocessor(recipe).batch([frame])[0]              # [3, 64, 64]
    assert np.abs(x[:, :14]).max() < 0.02 and np.abs(x[:, -14:]).max() < 0.02   # bands: ~0
    assert (x[:, 20:44] > 2).all()                                  # the white frame inside
    crop = FramePreprocessor(Preprocess((64, 64), MEAN, STD, "RGB", "center-crop")).to_uint8(frame)
    assert (crop == 255).all()                                      # nothing padded
    with pytest.raises(ValueError, match="resize policy"):
        Preprocess((64, 64), MEAN, STD, "RGB", "squash")
