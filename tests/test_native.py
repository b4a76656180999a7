"""The native CPU kernels (train/native.c): POSD's default path (d = 2, V_IN) against the PyTorch
path and the plainly written reference; the batch augmentation bit for bit against the PyTorch
ops; and a build that falls back cleanly when it cannot be had."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from train import native
from train.data.augment import Normalizer, apply, augment_batch, draw
from train.losses.posd import _VInD2, _VInD2Native, latent_groups, posd_loss
from tests.test_losses import ref_posd


@pytest.fixture
def kernel():
    if native.kernel() is None:
        pytest.skip(f"native POSD kernel unavailable here: {native.status()}")
    return native.kernel()


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty build cache and a forgotten library; the session's library comes back after."""
    monkeypatch.setenv("EDGE_STUDENTS_CACHE", str(tmp_path / "cache"))
    native.reset()
    yield tmp_path / "cache" / "native"
    native.reset()


def torch_path(y, k, scale=1.0):
    """Value and gradient of the PyTorch fused path in float64."""
    y64 = y.detach().double().requires_grad_()
    v = _VInD2.apply(y64, min(k, len(y) - 1), scale)
    v.backward()
    return v.detach(), y64.grad


def native_path(y, k, scale=1.0):
    y32 = y.detach().float().clone().requires_grad_()
    v = _VInD2Native.apply(y32, min(k, len(y) - 1), scale)
    v.backward()
    return v.detach(), y32.grad


SHAPES = [(64, 64, 2), (61, 10, 4), (17, 3, 1), (5, 130, 4), (2, 1, 1), (3, 2, 5), (33, 7, 32), (1, 4, 2)]


@pytest.mark.parametrize("n,d,k", SHAPES)
def test_native_matches_pytorch_path(kernel, n, d, k):
    y = torch.randn(n, d, generator=torch.Generator().manual_seed(n * 100 + d))
    v_ref, g_ref = torch_path(y, k, scale=0.01)
    v, g = native_path(y, k, scale=0.01)
    scale = max(1.0, float(v_ref.abs()))
    torch.testing.assert_close(v.double(), v_ref, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-5 * float(g_ref.abs().max() + 1))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_native_matches_slow_reference(kernel, k):
    """Against eqs. (8) of the paper written as loops (tests/test_losses.py: ref_posd)."""
    y = torch.randn(9, 5, generator=torch.Generator().manual_seed(k))
    y_ref = y.double().requires_grad_()
    ref = ref_posd(y_ref, k, 2.0, False)
    ref.backward()
    y32 = y.clone().requires_grad_()
    v = posd_loss(y32, k)
    assert "Native" in type(v.grad_fn).__name__
    v.backward()
    torch.testing.assert_close(v.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y32.grad.double(), y_ref.grad, rtol=1e-4, atol=1e-6)


def test_scratch_grows_for_a_bigger_batch(kernel):
    small = torch.randn(4, 3)
    native.vin_d2(small, 2, 1.0)
    y = torch.randn(250, 64, generator=torch.Generator().manual_seed(5))   # > the 64 KiB first scratch
    assert native._lib.posd_workspace_bytes(250, 64, 2) > (1 << 16)
    v, g = native.vin_d2(y, 2, 1.0)
    v_ref, g_ref = torch_path(y, 2)
    torch.testing.assert_close(v.double(), v_ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-5 * float(g_ref.abs().max()))
    torch.testing.assert_close(native.vin_d2(small, 2, 1.0)[0].double(), torch_path(small, 2)[0])


def test_native_groups_are_the_k_nearest(kernel):
    y = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    members = torch.empty(40, 4, dtype=torch.int64)
    native.vin_d2(y, 3, 1.0, members=members)
    assert torch.equal(members, latent_groups(y.double(), 3))   # p first, then nearest first


def test_both_gram_kernels_agree(kernel):
    y = torch.randn(37, 70, generator=torch.Generator().manual_seed(2))
    try:
        assert native.select_kernel(0) == 0
        v0, g0 = native.vin_d2(y, 2, 1.0)
        if native.select_kernel(1) != 1:
            pytest.skip("this CPU has no AVX2+FMA")
        v1, g1 = native.vin_d2(y, 2, 1.0)
    finally:
        native.select_kernel(-1)
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=0)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-4 * float(g0.abs().max()))


def test_native_deterministic_and_batch_order_invariant(kernel):
    y = torch.randn(50, 12, generator=torch.Generator().manual_seed(3))
    v1, g1 = native.vin_d2(y, 2, 1.0)
    v2, g2 = native.vin_d2(y.clone(), 2, 1.0)
    assert torch.equal(v1, v2) and torch.equal(g1, g2)           # bit for bit
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(4))
    vp, gp = native.vin_d2(y[perm], 2, 1.0)
    torch.testing.assert_close(vp, v1, rtol=1e-5, atol=0)
    torch.testing.assert_close(gp, g1[perm], rtol=1e-4, atol=1e-5 * float(g1.abs().max()))


@pytest.mark.parametrize("layout", ["identical", "duplicated", "one"])
def test_native_coincident_features(kernel, layout):
    base = torch.randn(4, 3)
    y = {"identical": torch.ones(8, 3), "duplicated": torch.cat([base, base]),
         "one": torch.randn(1, 3)}[layout].requires_grad_()
    v = posd_loss(y, 2)
    assert "Native" in type(v.grad_fn).__name__
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(y.grad).all()
    if layout != "duplicated":
        assert float(v.detach()) == 0.0 and not y.grad.any()
    else:   # each point's nearest other is its copy: groups {p, copy, third}
        torch.testing.assert_close(v.double(), torch_path(y, 2, 1 / 64)[0], rtol=1e-5, atol=1e-6)


def test_native_propagates_nan(kernel):
    """A NaN feature must give a NaN loss, so training stops with its non-finite message."""
    y = torch.randn(8, 4)
    y[3, 1] = float("nan")
    v, g = native.vin_d2(y, 2, 1.0)
    assert torch.isnan(v)


def test_dispatch_and_fallbacks(kernel):
    y = torch.randn(16, 8, requires_grad=True)
    assert "Native" in type(posd_loss(y, 2).grad_fn).__name__
    assert type(posd_loss(y.double(), 2).grad_fn).__name__ == "_VInD2Backward"     # float64
    with native.paused():
        assert type(posd_loss(y, 2).grad_fn).__name__ == "_VInD2Backward"
    big = torch.randn(300, 64)                                                      # > MAX_WORK
    assert 300 * 300 * 64 > native.MAX_WORK and not native.supports(big)
    nc = torch.randn(8, 16).t()                                                     # not contiguous
    torch.testing.assert_close(posd_loss(nc, 2), posd_loss(nc.contiguous(), 2))
    flat = torch.randn(16, 2, 2, 2)                                                 # flattened to [16, 8]
    torch.testing.assert_close(posd_loss(flat, 2), posd_loss(flat.flatten(1), 2))


def test_native_refuses_double_backward(kernel):
    """Like the PyTorch path, the kernel is first-order: its gradient carries no graph, and a
    second differentiation through it raises instead of silently dropping POSD's Hessian."""
    y = torch.randn(10, 4, requires_grad=True)
    (g,) = torch.autograd.grad(posd_loss(y, 2), y, create_graph=True)
    assert not g.requires_grad
    w = torch.ones((), requires_grad=True)
    (g,) = torch.autograd.grad(posd_loss(y, 2), y, grad_outputs=w, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_vin_d2_rejects_bad_inputs(kernel):
    with pytest.raises(ValueError, match="float32 CPU"):
        native.vin_d2(torch.randn(4, 3, dtype=torch.float64), 2, 1.0)
    with pytest.raises(ValueError, match="float32 CPU"):
        native.vin_d2(torch.randn(4), 2, 1.0)
    with pytest.raises(ValueError, match="k >= 0"):
        native.vin_d2(torch.randn(4, 3), -1, 1.0)
    with pytest.raises(ValueError, match="members"):
        native.vin_d2(torch.randn(4, 3), 2, 1.0, members=torch.empty(4, 2, dtype=torch.int64))


# ------------------------------------------------------------------ batch augmentation

@pytest.mark.parametrize("policy", ["cifar", "crop", "aerial", "none"])
@pytest.mark.parametrize("shape", [(40, 3, 32, 32), (30, 1, 8, 8), (20, 3, 12, 20), (9, 3, 5, 5)])
def test_native_augmentation_is_bit_identical(kernel, policy, shape):
    """Same draws, same tensor, bit for bit, as the PyTorch ops (so runs and resumes do not
    depend on the path); 8x8 with the CIFAR pad of 4 crops whole rows and columns away."""
    g = torch.Generator().manual_seed(shape[0])
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    norm = Normalizer([0.2, 0.5, 0.7][: shape[1]], [0.25, 0.3, 0.11][: shape[1]], "cpu")
    idx = torch.randperm(shape[0], generator=g)[: shape[0] // 2 + 1]
    fast = augment_batch(x, idx, policy, torch.Generator().manual_seed(7), norm)
    with native.paused():
        ref = augment_batch(x, idx, policy, torch.Generator().manual_seed(7), norm)
    slow = norm(apply(x[idx], draw(policy, x[idx].shape, torch.Generator().manual_seed(7))))
    assert fast.dtype == torch.float32 and fast.shape == (len(idx),) + shape[1:]
    assert torch.equal(fast, ref) and torch.equal(ref, slow)


def test_native_augmentation_each_step_alone(kernel):
    """Crop offsets, each flip and the turn, one at a time, against explicit per-sample indexing."""
    x = torch.randint(0, 256, (6, 2, 7, 7), dtype=torch.uint8)
    mean, inv_std = torch.zeros(2), torch.ones(2)
    idx = torch.tensor([5, 0, 3])
    as_float = lambda t: t.float() * (1.0 / 255.0)   # noqa: E731  normalise with mean 0, std 1
    oy, ox = torch.tensor([0, 3, 6]), torch.tensor([6, 1, 3])
    out = native.augment_u8(x, idx, mean, inv_std, pad=3, oy=oy, ox=ox)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i, s in enumerate(idx):
        assert torch.equal(out[i], as_float(padded[s, :, oy[i]:oy[i] + 7, ox[i]:ox[i] + 7]))
    mask = torch.tensor([True, False, True])
    for kw, op in (("flip_w", lambda t: t.flip(-1)), ("flip_h", lambda t: t.flip(-2)),
                   ("turn", lambda t: t.transpose(-1, -2))):
        out = native.augment_u8(x, idx, mean, inv_std, **{kw: mask})
        for i, s in enumerate(idx):
            assert torch.equal(out[i], as_float(op(x[s]) if mask[i] else x[s])), kw


def test_native_augmentation_rejects_bad_inputs(kernel):
    x = torch.randint(0, 256, (4, 3, 6, 8), dtype=torch.uint8)
    m, s = torch.zeros(3), torch.ones(3)
    with pytest.raises(IndexError, match="batch index 4 out of range for 4"):
        native.augment_u8(x, torch.tensor([0, 4]), m, s)
    with pytest.raises(IndexError, match="batch index -1"):
        native.augment_u8(x, torch.tensor([-1]), m, s)
    with pytest.raises(ValueError, match="square"):
        native.augment_u8(x, torch.tensor([0]), m, s, turn=torch.tensor([True]))
    with pytest.raises(ValueError, match="offsets within"):
        native.augment_u8(x, torch.tensor([0]), m, s, pad=1, oy=torch.tensor([3]), ox=torch.tensor([0]))
    with pytest.raises(ValueError, match="expected 3 values"):
        native.augment_u8(x, torch.tensor([0]), torch.zeros(2), s)
    with pytest.raises(ValueError, match="uint8 CPU images"):
        native.augment_u8(x.float(), torch.tensor([0]), m, s)
    assert not native.augment_ready(x.permute(0, 1, 3, 2))          # not contiguous: PyTorch path
    assert not native.augment_ready(x.float())


# ------------------------------------------------------------------ build, cache and fallback

def test_build_once_then_load_not_rebuild(fresh):
    if native.find_compiler() is None:
        pytest.skip("no C compiler here")
    assert native.kernel() is not None
    built = list(fresh.glob("native-*"))
    assert len(built) == 1 and native.status() == f"native ({built[0]})"
    assert not list(fresh.glob("*.tmp"))                       # the temporary file was renamed
    mtime = built[0].stat().st_mtime_ns
    native.reset()
    assert native.kernel() is not None and built[0].stat().st_mtime_ns == mtime   # loaded, not rebuilt


def test_corrupt_cached_library_is_rebuilt(tmp_path):
    """A truncated or foreign file under the library's name is replaced, silently. In a fresh
    process: one that has the library loaded already would reuse its mapping."""
    if native.find_compiler() is None:
        pytest.skip("no C compiler here")
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import torch\n"
        "from train import native\n"
        "path = native.library_path(native.find_compiler())\n"
        "path.parent.mkdir(parents=True, exist_ok=True)\n"
        "path.write_bytes(b'\\x7fELF truncated')\n"
        "assert native.kernel() is not None, native.status()\n"
        "assert path.read_bytes()[:4] == b'\\x7fELF' and path.stat().st_size > 1000\n"
        "v, g = native.vin_d2(torch.randn(6, 3), 2, 1.0)\n"
        "assert torch.isfinite(v)\n"
        "print('rebuilt', path)\n"
    )
    env = dict(os.environ, EDGE_STUDENTS_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "rebuilt" in res.stdout


def test_switched_off_by_environment(fresh, monkeypatch):
    monkeypatch.setenv("EDGE_STUDENTS_NATIVE", "0")
    assert native.kernel() is None
    assert native.status() == "pure PyTorch (EDGE_STUDENTS_NATIVE=0)"
    y = torch.randn(16, 8, requires_grad=True)
    v = posd_loss(y, 2)
    assert type(v.grad_fn).__name__ == "_VInD2Backward"
    assert not fresh.exists()                                  # nothing was built


def test_no_compiler_falls_back_quietly(fresh, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(fresh.parent / "empty-bin"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.kernel() is None
    assert "no C compiler found" in native.status()
    assert type(posd_loss(torch.randn(8, 3, requires_grad=True), 2).grad_fn).__name__ == "_VInD2Backward"


def test_failing_compiler_warns_once_and_falls_back(fresh, monkeypatch, tmp_path):
    cc = tmp_path / "badcc"
    cc.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'badcc 1.0'; exit 0; fi\n"
                  "echo 'native.c:1: error: this compiler is broken' >&2\nexit 1\n")
    cc.chmod(cc.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(cc))
    with pytest.warns(RuntimeWarning, match="this compiler is broken"):
        assert native.kernel() is None
    assert "building the native kernels failed" in native.status()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # the warning came once
        assert posd_loss(torch.randn(8, 3), 2).isfinite()
    assert not list(fresh.glob("*"))                           # no half-built library left
    monkeypatch.setenv("CC", str(tmp_path / "missing-cc"))
    native.reset()
    with pytest.warns(RuntimeWarning, match="cannot run the C compiler"):
        assert native.kernel() is None


def test_training_records_which_path(tmp_path, kernel):
    import json

    from train.config import TrainConfig
    from train.engine import Trainer

    cfg = TrainConfig(dataset="digits", model="cifar_cnn", method="posd", epochs=1, batch_size=64,
                      out=str(tmp_path / "run"), overwrite=True, seed=0, knn=2)
    Trainer(cfg, progress=False).fit()
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    found = [v for k, v in _walk(info) if k == "native_kernels"]
    assert found and found[0].startswith("native (")


def _walk(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def test_training_is_bit_identical_on_either_augmentation_path(tmp_path, kernel):
    """CE training (no POSD rounding involved) gives the same weights with the native batch
    augmentation and with the PyTorch ops: a resume may switch paths and stay exact."""
    from train.config import TrainConfig
    from train.engine import Trainer

    weights = []
    for name, ctx in (("native", None), ("pytorch", native.paused())):
        cfg = TrainConfig(dataset="digits", model="cifar_cnn", method="ce", epochs=1, batch_size=64,
                          lr=0.05, out=str(tmp_path / name), overwrite=True, seed=0)
        if ctx is None:
            Trainer(cfg, progress=False).fit()
        else:
            with ctx:
                Trainer(cfg, progress=False).fit()
        sd = torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"]
        weights.append(sd)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
