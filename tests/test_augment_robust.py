"""aerial-robust: each robustness step against a plainly written per-pixel reference, the JPEG
step against libjpeg (OpenCV), the draws, the native kernel bit for bit against the PyTorch ops
(both CPU kernels), and training with it: deterministic, resumable bit for bit, path-independent."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train import native
from train.config import TrainConfig
from train.data import robust
from train.data.augment import Normalizer, apply, augment_batch, draw
from train.data.robust import COL, PARAMS, RobustPlan
from train.engine import Trainer


def identity_plan(b: int, c: int, **cols) -> RobustPlan:
    """A plan that changes nothing, with the given columns set for every sample."""
    p = np.zeros((b, len(PARAMS)), dtype=np.int32)
    p[:, COL["sat"]] = 256
    p[:, COL["zoom_step_y"]] = p[:, COL["zoom_step_x"]] = 256
    for name, value in cols.items():
        p[:, COL[name]] = value
    qtab, qinv = robust.jpeg_tables(p[:, COL["jpeg_quality"]])
    lut = np.tile(np.arange(256, dtype=np.uint8), (b, c, 1))
    return RobustPlan(torch.from_numpy(p), torch.from_numpy(lut), torch.from_numpy(qtab), torch.from_numpy(qinv))


def images(shape, seed=0):
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def smooth(shape, seed=0):
    """Images with structure at several scales (JPEG's worst and best cases both present)."""
    import cv2

    b, c, h, w = shape
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(b):
        img = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (0, 0), 1.5).reshape(h, w, c)
        out.append(img.transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(out)))


# ------------------------------------------------------------------ steps vs references
def test_identity_plan_changes_nothing():
    x = images((3, 3, 11, 13))
    assert torch.equal(robust.apply(x, identity_plan(3, 3)), x)


def test_tone_and_saturation_match_a_per_pixel_reference():
    x = images((4, 3, 5, 6))
    plan = draw("aerial-robust", x.shape, torch.Generator().manual_seed(3)).robust
    plan.params[:, COL["sat"]] = torch.tensor([0, 128, 256, 384], dtype=torch.int32)
    out = robust.photometric(x, plan)
    lut, sat = plan.lut.numpy().astype(int), plan.params[:, COL["sat"]].numpy()
    for s in range(4):
        for i in range(5):
            for j in range(6):
                r, g, b = (lut[s, ch, int(x[s, ch, i, j])] for ch in range(3))
                y = (77 * r + 150 * g + 29 * b + 128) // 256
                want = [min(255, max(0, y + (int(sat[s]) * (v - y) + 128) // 256)) for v in (r, g, b)]
                assert out[s, :, i, j].tolist() == want
    assert (out[0, 0] == out[0, 1]).all() and (out[0, 1] == out[0, 2]).all()   # saturation 0: gray


def test_tone_table_follows_its_formula():
    u = np.random.default_rng(0).random((3, 6))
    lut = robust.tone_lut(u, 3)
    k, delta = robust._loglerp(robust.CONTRAST, u[:, 0]), robust._lerp(robust.BRIGHTNESS, u[:, 1])
    gamma = robust._loglerp(robust.GAMMA, u[:, 5])
    for s in range(3):
        for c in range(3):
            gain = np.exp(robust.CAST * (2 * u[s, 2 + c] - 1))
            for v in (0, 1, 77, 128, 200, 255):
                lin = min(255, max(0, round(255 * gain * (k[s] * (v / 255 - 0.5) + 0.5 + delta[s]))))
                assert abs(int(lut[s, c, v]) - round(255 * (lin / 255) ** gamma[s])) <= 1


def _reflect(i, n):
    period = 2 * (n - 1)
    r = i % period
    return period - r if r >= n else r


@pytest.mark.parametrize("step,base", [((300, 300), (-700, -500)), ((200, 200), (1500, 900)), ((256, 256), (0, 0))])
def test_zoom_matches_a_per_pixel_reference(step, base):
    x = images((1, 2, 9, 7))
    plan = identity_plan(1, 2, zoom_step_y=step[0], zoom_step_x=step[1], zoom_base_y=base[0], zoom_base_x=base[1])
    out = robust.zoom(x, plan)
    for c in range(2):
        for i in range(9):
            qy = base[0] + i * step[0]
            y0, fy = qy >> 8, qy & 255
            for j in range(7):
                qx = base[1] + j * step[1]
                x0, fx = qx >> 8, qx & 255
                p = lambda a, b: int(x[0, c, _reflect(a, 9), _reflect(b, 7)])   # noqa: E731
                top = (256 - fx) * p(y0, x0) + fx * p(y0, x0 + 1)
                bottom = (256 - fx) * p(y0 + 1, x0) + fx * p(y0 + 1, x0 + 1)
                assert int(out[0, c, i, j]) == ((256 - fy) * top + fy * bottom + 32768) >> 16
    if step == (256, 256):
        assert torch.equal(out, x)


def test_drawn_zoom_keeps_the_view_inside_its_bounds():
    """A zoom-in reads only inside the image; a zoom-out shows the whole image."""
    plan = draw("aerial-robust", (4000, 3, 64, 64), torch.Generator().manual_seed(0)).robust
    step = plan.col("zoom_step_x").double()
    first = plan.col("zoom_base_x").double() / 256
    last = first + 63 * step / 256
    zoom_in, zoom_out = step < 256, step > 256
    assert abs(zoom_in.double().mean() - robust.P_ZOOM / 2) < 0.03      # log-symmetric range
    assert abs(zoom_out.double().mean() - robust.P_ZOOM / 2) < 0.03
    assert (first[zoom_in] >= -0.51).all() and (last[zoom_in] <= 63.51).all()
    assert (first[zoom_out] <= 0.51).all() and (last[zoom_out] >= 62.49).all()
    assert (256 / step).min() >= robust.ZOOM[0] - 0.01 and (256 / step).max() <= robust.ZOOM[1] + 0.01


def _clamped(x, i, j):
    return int(x[min(max(i, 0), x.shape[0] - 1), min(max(j, 0), x.shape[1] - 1)])


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_defocus_matches_a_per_pixel_reference(radius):
    x = images((2, 1, 8, 9))
    out = robust.defocus(x, radius)
    k = robust.DEFOCUS[radius]
    for s in range(2):
        img = x[s, 0]
        for i in range(8):
            for j in range(9):
                total = sum(k[a + radius] * k[b + radius] * _clamped(img, i + a, j + b)
                            for a in range(-radius, radius + 1) for b in range(-radius, radius + 1))
                assert int(out[s, 0, i, j]) == (total + (1 << (4 * radius - 1))) >> (4 * radius)


@pytest.mark.parametrize("length,direction", [(3, 0), (5, 1), (7, 2), (3, 3)])
def test_motion_blur_matches_a_per_pixel_reference(length, direction):
    x = images((1, 1, 9, 8))
    out = robust.motion(x, length, direction)
    dy, dx = robust.MOTION_DIRS[direction]
    r = length // 2
    for i in range(9):
        for j in range(8):
            total = sum(_clamped(x[0, 0], i + t * dy, j + t * dx) for t in range(-r, r + 1))
            assert int(out[0, 0, i, j]) == (total + r) // length


def test_blur_applies_each_samples_own_kernel():
    x = images((4, 2, 10, 10))
    plan = identity_plan(4, 2)
    plan.params[:, COL["blur_kind"]] = torch.tensor([0, 1, 2, 2], dtype=torch.int32)
    plan.params[:, COL["blur_size"]] = torch.tensor([0, 2, 3, 7], dtype=torch.int32)
    plan.params[:, COL["blur_dir"]] = torch.tensor([0, 0, 1, 3], dtype=torch.int32)
    out = robust.blur(x, plan)
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], robust.defocus(x[1:2], 2)[0])
    assert torch.equal(out[2], robust.motion(x[2:3], 3, 1)[0])
    assert torch.equal(out[3], robust.motion(x[3:4], 7, 3)[0])


def test_noise_matches_a_per_pixel_reference_and_is_the_same_in_every_channel():
    x = images((2, 3, 6, 300))                       # wider than the field: it wraps around
    plan = identity_plan(2, 3, noise_sigma16=64)
    plan.params[:, COL["noise_y"]] = torch.tensor([0, 250], dtype=torch.int32)
    plan.params[:, COL["noise_x"]] = torch.tensor([255, 3], dtype=torch.int32)
    out = robust.noise(x, plan)
    field = robust.noise_field().numpy().astype(int)
    for s in range(2):
        ny, nx = int(plan.params[s, COL["noise_y"]]), int(plan.params[s, COL["noise_x"]])
        for i in range(6):
            for j in range(0, 300, 7):
                n = (field[(ny + i) % 256, (nx + j) % 256] * 64 + 512) >> 10
                for c in range(3):
                    assert int(out[s, c, i, j]) == min(255, max(0, int(x[s, c, i, j]) + n))


def test_noise_field_is_standard_gaussian_in_sixty_fourths():
    f = robust.noise_field().double() / 64
    assert abs(float(f.mean())) < 0.02 and abs(float(f.std()) - 1) < 0.02
    assert torch.equal(robust.noise_field(), robust.noise_field())


def _cv2_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    flag = cv2.IMREAD_COLOR if img.ndim == 3 else cv2.IMREAD_GRAYSCALE
    ok, buf = cv2.imencode(".jpg", img[..., ::-1] if img.ndim == 3 else img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    out = cv2.imdecode(buf, flag)
    return out[..., ::-1] if img.ndim == 3 else out


@pytest.mark.parametrize("quality", [20, 50, 90])
def test_jpeg_approximates_libjpeg_at_the_same_quality(quality):
    """Same colour transform, 4:2:0 chroma, tables and quality scaling as libjpeg (OpenCV), and an
    exact integer DCT instead of libjpeg's: the outputs differ by about a grey level on average
    (half of one in gray), and the loss against the original matches libjpeg's to 10 %."""
    x = smooth((2, 3, 48, 64))
    qtab, qinv = (torch.from_numpy(t) for t in robust.jpeg_tables(np.array([quality] * 2)))
    ours = robust.jpeg_images(x, qtab, qinv).numpy().astype(int)
    for s in range(2):
        orig = x[s].numpy().transpose(1, 2, 0)
        ref = _cv2_jpeg(np.ascontiguousarray(orig), quality).astype(int)
        mine = ours[s].transpose(1, 2, 0)
        assert np.abs(mine - ref).mean() < 1.5
        loss_ours, loss_ref = np.abs(mine - orig).mean(), np.abs(ref - orig).mean()
        assert abs(loss_ours - loss_ref) < 0.1 * loss_ref
        gray = np.ascontiguousarray(orig[..., 1])
        g = robust.jpeg_images(torch.from_numpy(gray)[None, None], qtab[:1], qinv[:1])[0, 0].numpy().astype(int)
        g_ref = _cv2_jpeg(gray, quality).astype(int)
        assert np.abs(g - g_ref).mean() < 0.8
        assert abs(np.abs(g - gray).mean() - np.abs(g_ref - gray).mean()) < 0.1 * np.abs(g_ref - gray).mean()


def test_jpeg_at_quality_100_is_nearly_lossless_and_pads_odd_sizes():
    x = smooth((1, 1, 13, 21))
    qtab, qinv = (torch.from_numpy(t) for t in robust.jpeg_tables(np.array([100])))
    out = robust.jpeg_images(x, qtab, qinv)
    assert out.shape == x.shape and (out.int() - x.int()).abs().max() <= 1


def test_jpeg_tables_follow_the_ijg_scaling():
    qtab, qinv = robust.jpeg_tables(np.array([50, 10, 100, 0]))
    assert qtab[0, 0, 0] == 16 and qtab[0, 1, 0] == 17                 # quality 50: the standard tables
    assert qtab[1, 0, 0] == (16 * 500 + 50) // 100 and qtab[1].max() == 255
    assert (qtab[2] == 1).all() and (qtab[3] == 1).all()
    assert np.array_equal(qinv, (1.0 / (qtab * 2048.0)).astype(np.float32))


def test_dct_matrix_is_the_scaled_orthonormal_dct():
    m = robust.dct_matrix().double() / 2048
    assert torch.allclose(m @ m.t(), torch.eye(8, dtype=torch.float64), atol=2e-3)
    assert m.abs().max() * 2048 <= 1004


# ------------------------------------------------------------------ draws
def test_draws_are_seeded_and_within_their_ranges():
    shape = (5000, 3, 32, 32)
    a = draw("aerial-robust", shape, torch.Generator().manual_seed(9))
    b = draw("aerial-robust", shape, torch.Generator().manual_seed(9))
    assert all(torch.equal(getattr(a.robust, k), getattr(b.robust, k)) for k in ("params", "lut", "qtab", "qinv"))
    assert torch.equal(a.flip_w, b.flip_w) and torch.equal(a.turn, b.turn)
    p = a.robust.params
    col = lambda n: p[:, COL[n]]   # noqa: E731
    gray = (col("sat") == 0).double().mean()
    assert abs(gray - robust.P_GRAY) < 0.02
    sat = col("sat")[col("sat") > 0] / 256
    assert sat.min() >= robust.SATURATION[0] - 0.01 and sat.max() <= robust.SATURATION[1] + 0.01
    assert abs((col("blur_kind") > 0).double().mean() - robust.P_BLUR) < 0.03
    assert set(col("blur_size")[col("blur_kind") == 1].tolist()) == {1, 2, 3}
    assert set(col("blur_size")[col("blur_kind") == 2].tolist()) == {3, 5, 7}
    assert set(col("blur_dir")[col("blur_kind") == 2].tolist()) == {0, 1, 2, 3}
    noisy = col("noise_sigma16") > 0
    assert abs(noisy.double().mean() - robust.P_NOISE) < 0.03
    sigma = col("noise_sigma16")[noisy] / 16
    assert sigma.min() >= robust.NOISE_SIGMA[0] and sigma.max() <= robust.NOISE_SIGMA[1]
    q = col("jpeg_quality")
    assert abs((q > 0).double().mean() - robust.P_JPEG) < 0.03
    assert q[q > 0].min() == robust.JPEG_QUALITY[0] and q[q > 0].max() == robust.JPEG_QUALITY[1]
    assert ((col("noise_y") >= 0) & (col("noise_y") < 256)).all()


def test_a_float_batch_is_refused_by_the_robust_steps():
    plan = draw("aerial-robust", (2, 3, 8, 8), torch.Generator())
    with pytest.raises(ValueError, match="uint8"):
        apply(torch.zeros(2, 3, 8, 8), plan)


# ------------------------------------------------------------------ native kernel
@pytest.fixture(params=[0, 1], ids=["generic", "avx2"])
def kernel_choice(request):
    if native.kernel() is None:
        pytest.skip(f"native kernels unavailable here: {native.status()}")
    if native.select_kernel(request.param) != request.param:
        pytest.skip("this CPU lacks AVX2")
    yield request.param
    native.select_kernel(-1)


@pytest.mark.parametrize("shape", [(24, 3, 32, 32), (9, 1, 16, 16), (8, 3, 12, 20), (6, 2, 17, 17),
                                   (5, 3, 1, 9), (4, 3, 128, 128)])
def test_native_robust_is_bit_identical_to_the_pytorch_ops(kernel_choice, shape):
    x = images(shape, seed=shape[0])
    norm = Normalizer([0.2, 0.5, 0.7][: shape[1]], [0.25, 0.3, 0.11][: shape[1]], "cpu")
    idx = torch.randperm(shape[0], generator=torch.Generator().manual_seed(1))
    for seed in range(4):
        fast = augment_batch(x, idx, "aerial-robust", torch.Generator().manual_seed(seed), norm)
        with native.paused():
            ref = augment_batch(x, idx, "aerial-robust", torch.Generator().manual_seed(seed), norm)
        slow = norm(apply(x[idx], draw("aerial-robust", x[idx].shape, torch.Generator().manual_seed(seed))))
        assert torch.equal(fast, ref) and torch.equal(ref, slow), seed


@pytest.mark.parametrize("cols", [dict(sat=0), dict(sat=333), dict(zoom_step_y=300, zoom_step_x=300, zoom_base_y=-900, zoom_base_x=-300),
                                  dict(zoom_step_y=200, zoom_step_x=200, zoom_base_y=2000, zoom_base_x=100),
                                  dict(blur_kind=1, blur_size=1), dict(blur_kind=1, blur_size=3),
                                  dict(blur_kind=2, blur_size=5, blur_dir=2), dict(blur_kind=2, blur_size=7, blur_dir=3),
                                  dict(noise_sigma16=96, noise_y=200, noise_x=250), dict(jpeg_quality=15),
                                  dict(jpeg_quality=95)], ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_native_robust_each_step_alone(kernel_choice, cols):
    """Every step forced on every sample, with the flips (and the turn, square images), on 3 and
    1 channels, and on images wider than the noise field."""
    for shape in ((4, 3, 24, 24), (3, 1, 19, 19), (2, 3, 5, 300)):
        x = smooth(shape, seed=2)
        plan = identity_plan(shape[0], shape[1], **cols)
        flips = torch.tensor([True, False, True, False][: shape[0]])
        turn = flips if shape[2] == shape[3] else None
        mean, inv_std = torch.full((shape[1],), 0.4), torch.full((shape[1],), 3.0)
        idx = torch.arange(shape[0] - 1, -1, -1)
        out = native.augment_robust_u8(x, idx, mean, inv_std, flips, ~flips, turn, plan.params, plan.lut,
                                       plan.qtab, plan.qinv, robust.noise_field())
        ref = robust.apply(x[idx], plan)
        ref = torch.where(flips.view(-1, 1, 1, 1), ref.flip(3), ref)
        ref = torch.where((~flips).view(-1, 1, 1, 1), ref.flip(2), ref)
        if turn is not None:
            ref = torch.where(turn.view(-1, 1, 1, 1), ref.transpose(2, 3), ref)
        assert torch.equal(out, (ref.float() * (1.0 / 255.0) - mean.view(1, -1, 1, 1)) * inv_std.view(1, -1, 1, 1))


def test_native_robust_does_not_depend_on_the_thread_count(kernel_choice):
    x = images((7, 3, 20, 20), seed=5)
    plan = draw("aerial-robust", (5, 3, 20, 20), torch.Generator().manual_seed(8))
    r = plan.robust
    args = (x, torch.tensor([6, 0, 3, 3, 1]), torch.full((3,), 0.5), torch.full((3,), 2.0), plan.flip_w,
            plan.flip_h, plan.turn, r.params, r.lut, r.qtab, r.qinv, robust.noise_field())
    one = native.augment_robust_u8(*args, threads=1)
    for threads in (2, 3, 5, 9, 100):
        assert torch.equal(native.augment_robust_u8(*args, threads=threads), one), threads


def test_native_robust_rejects_bad_inputs(kernel_choice):
    x = images((4, 3, 6, 8))
    m, s = torch.zeros(3), torch.ones(3)

    def call(idx=torch.tensor([0]), turn=None, **cols):
        plan = identity_plan(len(idx), 3, **cols)
        return native.augment_robust_u8(x, idx, m, s, None, None, turn, plan.params, plan.lut, plan.qtab,
                                        plan.qinv, robust.noise_field())

    with pytest.raises(IndexError, match="batch index 4 out of range for 4"):
        call(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="non-square"):
        call(turn=torch.tensor([True]))
    for bad in (dict(blur_kind=2, blur_size=4), dict(blur_kind=1, blur_size=4), dict(blur_kind=3),
                dict(jpeg_quality=101), dict(noise_y=256), dict(zoom_step_x=0), dict(sat=-1)):
        with pytest.raises(ValueError, match="parameters out of range"):
            call(**bad)
    plan = identity_plan(1, 3)
    with pytest.raises(ValueError, match="uint8 CPU images"):
        native.augment_robust_u8(x.float(), torch.tensor([0]), m, s, None, None, None, plan.params, plan.lut,
                                 plan.qtab, plan.qinv, robust.noise_field())
    assert call(torch.tensor([], dtype=torch.int64)).shape == (0, 3, 6, 8)


# ------------------------------------------------------------------ training with it
def _cfg(tmp_path, name, **kw):
    base = dict(dataset="digits", model="cifar_cnn", method="ce", epochs=1, batch_size=64, lr=0.05,
                out=str(tmp_path / name), seed=1, augment="aerial-robust")
    base.update(kw)
    return TrainConfig(**base)


def test_resume_with_aerial_robust_is_bit_identical(tmp_path, digits):
    ref = Trainer(_cfg(tmp_path, "ref"), data=digits, progress=False)
    ref.fit()

    def interrupt(trainer, epoch, step):
        if epoch == 0 and step == 5:
            raise KeyboardInterrupt

    cut = _cfg(tmp_path, "cut")
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, data=digits, on_step=interrupt, progress=False).fit()
    resumed = Trainer(cut.replace(resume=True), data=digits, progress=False)
    resumed.fit()
    for (n, p), (_, q) in zip(ref.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), f"{n} differs after resume"
    assert resumed.resolved_info()["augment"] == "aerial-robust"


def test_training_with_aerial_robust_does_not_depend_on_the_path(tmp_path, digits):
    if native.kernel() is None:
        pytest.skip(f"native kernels unavailable here: {native.status()}")
    weights = []
    for name in ("native", "pytorch"):
        cfg = _cfg(tmp_path, name)
        if name == "native":
            Trainer(cfg, data=digits, progress=False).fit()
        else:
            with native.paused():
                Trainer(cfg, data=digits, progress=False).fit()
        weights.append(torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
