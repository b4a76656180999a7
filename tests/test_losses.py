"""Losses: the registry contract, slow reference implementations, edge cases and golden values.

The references below are written plainly (Python loops over samples; for POSD literally eqs. 8-10
of the paper) and compared with the vectorised losses on random float64 inputs.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from train.checkpoint import CheckpointError
from train.features import FeatureTap
from train.config import TrainConfig
from train.losses import LOSSES, Distiller, build_loss, list_losses, loss_settings
from train.losses.oskd import oskd_loss
from train.losses.posd import posd_loss
from train.models import build_model

FIXTURES = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_loss_golden", FIXTURES / "make_loss_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

C, SIZE = golden.C, golden.SIZE
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    return golden.make_teacher_checkpoint(tmp_path_factory.mktemp("kd") / "teacher.pt")


def default_kwargs(name, teacher_path):
    """Builder kwargs for every registered loss; a new loss must add its entry here."""
    table = {"ce": {}, "posd": {"knn": 2}, "oskd": {"knn": 2, "lam": 0.1},
             "kd": {"teacher": str(teacher_path)},
             "dml": {"peer_model": "cifar_cnn", "num_classes": C, "input_size": SIZE}}
    return table[name]


def student_step(loss, n=12, seed=0):
    """One forward of a tiny cifar_cnn student through ``loss``: (model, terms)."""
    torch.manual_seed(seed)
    model = build_model("cifar_cnn", num_classes=C, input_size=SIZE)
    tap = FeatureTap(model, loss.feature_layer) if loss.needs_features else None
    x = torch.randn(n, 3, SIZE, SIZE)
    y = torch.arange(n) % C
    logits = model(x)
    terms = loss(logits, y, features=tap.read(logits) if tap else None,
                 inputs=x if loss.needs_inputs else None)
    return model, terms


# ---------------------------------------------------------------- every registered loss

@pytest.mark.parametrize("name", list_losses())
def test_every_loss_finite_scalar_terms_and_gradients(name, teacher_path):
    loss = build_loss(name, **default_kwargs(name, teacher_path)).train()
    model, terms = student_step(loss)
    assert isinstance(terms, dict) and "ce" in terms
    for key, value in terms.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, key
        assert torch.isfinite(value), key
    sum(terms.values()).backward()
    trainable = list(model.parameters()) + [p for p in loss.parameters() if p.requires_grad]
    for p in trainable:
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", list_losses())
def test_builder_signature_and_interface(name, teacher_path):
    params = inspect.signature(LOSSES.get(name)).parameters
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values())
    loss = build_loss(name, **default_kwargs(name, teacher_path))
    for attr in ("needs_features", "needs_inputs", "feature_layer"):
        assert hasattr(loss, attr)
    assert isinstance(loss, Distiller)


def test_builder_keywords_as_documented():
    expected = {"ce": ["ce_reduction"],
                "posd": ["knn", "lam", "kernel_d", "feature_layer", "qmi", "ce_reduction"],
                "oskd": ["knn", "lam", "feature_layer", "ce_reduction"],
                "kd": ["teacher", "temperature", "kd_alpha"],
                "dml": ["peer_model", "num_classes", "in_channels", "input_size", "temperature"]}
    for name, keys in expected.items():
        assert list(inspect.signature(LOSSES.get(name)).parameters) == keys


def test_every_builder_setting_is_a_config_field_or_a_data_fact():
    """One name per setting from the command line to the loss: no renaming table in between."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {"num_classes", "in_channels", "input_size"}
    for name in list_losses():
        assert set(loss_settings(name)) <= fields, name


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="posd") as info:
        build_loss("nope")
    for name in list_losses():
        assert name in str(info.value)


# ---------------------------------------------------------------- POSD

def ref_posd(y, k, d, qmi):
    """Eqs. (8)-(10) of the POSD paper, with K = -||a - b||^d and groups {p} + kNN(p)."""
    n = len(y)
    kern = [[0.0 if a == b else -torch.linalg.norm(y[a] - y[b]) ** d for b in range(n)]
            for a in range(n)]
    groups = []
    for p in range(n):
        others = sorted((float(torch.linalg.norm(y[p] - y[j]).detach()), j) for j in range(n) if j != p)
        groups.append([p] + [j for _, j in others[:k]])
    kp = k + 1
    v_in = sum(kern[a][b] for g in groups for a in g for b in g) / n ** 2
    if not qmi:
        return v_in
    v_all = sum((kp / n) ** 2 for _ in range(n)) * sum(kern[a][b] for a in range(n)
                                                       for b in range(n)) / n ** 2
    v_btw = sum(kp / n * sum(kern[j][m] for j in g for m in range(n)) for g in groups) / n ** 2
    return v_in + v_all - 2 * v_btw


@pytest.mark.parametrize("qmi", [False, True])
@pytest.mark.parametrize("d", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("k", [2, 4])
def test_posd_matches_reference_value_and_gradient(k, d, qmi):
    y = torch.randn(9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    y_fast, y_ref = y.clone().requires_grad_(), y.clone().requires_grad_()
    fast, ref = posd_loss(y_fast, k, d, qmi), ref_posd(y_ref, k, d, qmi)
    torch.testing.assert_close(fast, ref, **TOL)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(y_fast.grad, y_ref.grad, **TOL)


def test_posd_loss_terms_are_ce_minus_lambda_v():
    g = torch.Generator().manual_seed(3)
    logits, feats = torch.randn(6, C, generator=g), torch.randn(6, 4, generator=g)
    y = torch.arange(6) % C
    terms = build_loss("posd", knn=2, lam=0.5)(logits, y, features=feats)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits, y))
    torch.testing.assert_close(terms["posd"], -0.5 * posd_loss(feats, 2))


@pytest.mark.parametrize("qmi", [False, True])
@pytest.mark.parametrize("d", [0.5, 1.0, 2.0, 3.0, 4.0])
@pytest.mark.parametrize("layout", ["identical", "duplicated"])
def test_posd_zero_distances_finite_gradients(layout, d, qmi):
    base = torch.randn(4, 3)
    y = torch.ones(8, 3) if layout == "identical" else torch.cat([base, base])
    y.requires_grad_()
    v = posd_loss(y, 2, d, qmi)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(y.grad).all()
    if layout == "identical":
        assert float(v.detach()) == 0.0


@pytest.mark.parametrize("qmi", [False, True])
@pytest.mark.parametrize("d", [1.0, 2.0])
def test_posd_permutation_invariant(d, qmi):
    y = torch.randn(16, 6, dtype=torch.float64)
    perm = torch.randperm(16)
    torch.testing.assert_close(posd_loss(y[perm], 3, d, qmi), posd_loss(y, 3, d, qmi), **TOL)


def test_posd_k_clamped_to_batch():
    y = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(posd_loss(y, 10), posd_loss(y, 3))   # every group = whole batch
    assert float(posd_loss(torch.randn(1, 3), 2)) == 0.0            # a batch of one
    terms = build_loss("posd", knn=8)(torch.randn(3, C), torch.tensor([0, 1, 2]),
                                    features=torch.randn(3, 5))
    assert torch.isfinite(terms["posd"])


@pytest.mark.parametrize("bad", [{"knn": 0}, {"kernel_d": 0.0}, {"kernel_d": -1.0}])
def test_posd_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        build_loss("posd", **bad)


# ---------------------------------------------------------------- OSKD

def ref_oskd(phi, targets, k):
    """Per sample: means of the k nearest same-/other-class outputs (detached), then J1, J2."""
    n = len(phi)
    j1, j2 = [], []
    for i in range(n):
        dist = lambda j: float(((phi[i] - phi[j]) ** 2).sum().detach())  # noqa: E731
        same = sorted((j for j in range(n) if j != i and targets[j] == targets[i]), key=dist)[:k]
        other = sorted((j for j in range(n) if targets[j] != targets[i]), key=dist)[:k]
        if same:
            mu_r = torch.stack([phi[j].detach() for j in same]).mean(0)
            j1.append(((phi[i] - mu_r) ** 2).sum())
        if other:
            mu_v = torch.stack([phi[j].detach() for j in other]).mean(0)
            j2.append(((phi[i] - mu_v) ** 2).sum())
    return sum(j1) / max(len(j1), 1), sum(j2) / max(len(j2), 1)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_oskd_matches_reference_value_and_gradient(k):
    g = torch.Generator().manual_seed(k)
    phi = torch.randn(11, 4, dtype=torch.float64, generator=g).softmax(1)
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 0])   # class 3 is a singleton
    p_fast, p_ref = phi.clone().requires_grad_(), phi.clone().requires_grad_()
    fast, ref = oskd_loss(p_fast, targets, k), ref_oskd(p_ref, targets, k)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, **TOL)
    (fast[0] - fast[1]).backward()
    (ref[0] - ref[1]).backward()
    torch.testing.assert_close(p_fast.grad, p_ref.grad, **TOL)


def test_oskd_terms_and_feature_layer():
    g = torch.Generator().manual_seed(0)
    logits, feats = torch.randn(8, C, generator=g), torch.randn(8, 5, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    probs = build_loss("oskd", knn=2, lam=0.3)
    assert not probs.needs_features
    j1, j2 = oskd_loss(logits.softmax(1), y, 2)
    torch.testing.assert_close(probs(logits, y)["oskd"], 0.3 * (j1 + 1 - j2))
    raw = build_loss("oskd", knn=2, lam=0.3, feature_layer="logits")
    j1, j2 = oskd_loss(logits, y, 2)
    torch.testing.assert_close(raw(logits, y)["oskd"], 0.3 * (j1 + 1 - j2))
    tapped = build_loss("oskd", feature_layer="hidden")
    assert tapped.needs_features and type(tapped).needs_features is False
    j1, j2 = oskd_loss(feats, y, 2)
    torch.testing.assert_close(tapped(logits, y, features=feats)["oskd"], 1e-4 * (j1 + 1 - j2))


def test_oskd_permutation_invariant_and_small_batches():
    phi = torch.randn(12, 4, dtype=torch.float64).softmax(1)
    y = torch.arange(12) % 3
    perm = torch.randperm(12)
    for a, b in zip(oskd_loss(phi[perm], y[perm], 2), oskd_loss(phi, y, 2)):
        torch.testing.assert_close(a, b, **TOL)
    j1, j2 = oskd_loss(phi[:1], y[:1], 4)                    # batch of one: no neighbours at all
    assert float(j1) == 0.0 and float(j2) == 0.0
    j1, j2 = oskd_loss(phi[:3], torch.zeros(3, dtype=torch.long), 8)   # k >= N, one class
    assert torch.isfinite(j1) and float(j2) == 0.0


# ---------------------------------------------------------------- KD

def ref_kl(student, target, temperature):
    """T^2 * mean_i KL(softmax(target_i / T) || softmax(student_i / T)), one sample at a time."""
    total = 0.0
    for i in range(len(student)):
        p_t = torch.softmax(target[i].detach() / temperature, 0)
        p_s = torch.softmax(student[i] / temperature, 0)
        total = total + (p_t * (p_t.log() - p_s.log())).sum()
    return temperature ** 2 * total / len(student)


def ref_ce(logits, targets):
    return sum(-torch.log_softmax(logits[i], 0)[targets[i]] for i in range(len(logits))) / len(logits)


def test_kd_matches_reference(teacher_path):
    loss = build_loss("kd", teacher=str(teacher_path), temperature=3.0, kd_alpha=0.7)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, SIZE, SIZE, generator=g)
    student = torch.randn(6, C, dtype=torch.float64, generator=g)
    y = torch.arange(6) % C
    terms = loss(student, y, inputs=x)
    with torch.no_grad():
        teacher = loss.teacher(x).double()
    torch.testing.assert_close(terms["ce"], 0.3 * ref_ce(student, y), **TOL)
    torch.testing.assert_close(terms["kd"], 0.7 * ref_kl(student, teacher, 3.0), **TOL)


def test_kd_teacher_frozen_and_in_eval(teacher_path):
    loss = build_loss("kd", teacher=str(teacher_path)).train()
    assert loss.training and not loss.teacher.training
    assert all(not m.training for m in loss.teacher.modules())
    assert all(not p.requires_grad for p in loss.teacher.parameters())
    model, terms = student_step(loss)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in loss.teacher.parameters())


def test_kd_rejects_bad_teacher(teacher_path, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build_loss("kd", teacher=str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        build_loss("kd", teacher=str(junk))
    loss = build_loss("kd", teacher=str(teacher_path))
    with pytest.raises(ValueError, match="classes"):
        loss(torch.randn(2, C + 1), torch.tensor([0, 1]), inputs=torch.randn(2, 3, SIZE, SIZE))


# ---------------------------------------------------------------- DML

def test_dml_matches_reference():
    torch.manual_seed(0)
    loss = build_loss("dml", peer_model="cifar_cnn", num_classes=C, input_size=SIZE).double()
    x = torch.randn(5, 3, SIZE, SIZE, dtype=torch.float64)
    student = torch.randn(5, C, dtype=torch.float64)
    y = torch.arange(5) % C
    terms = loss(student, y, inputs=x)
    peer = loss.peer(x)
    torch.testing.assert_close(terms["ce"], ref_ce(student, y), **TOL)
    torch.testing.assert_close(terms["dml"], ref_kl(student, peer, 1.0), **TOL)
    torch.testing.assert_close(terms["peer_ce"], ref_ce(peer, y), **TOL)
    torch.testing.assert_close(terms["peer_dml"], ref_kl(peer, student, 1.0), **TOL)


def test_dml_gradients_reach_the_right_network():
    loss = build_loss("dml", peer_model="cifar_cnn", num_classes=C, input_size=SIZE)
    model, terms = student_step(loss)
    terms["dml"].backward(retain_graph=True)
    assert all(p.grad is None for p in loss.peer.parameters())       # a target, not a learner
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    (terms["peer_ce"] + terms["peer_dml"]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.peer.parameters())
    assert all(p.grad is None for p in model.parameters())           # peer_dml's target detached


# ---------------------------------------------------------------- golden values

def test_golden_values(teacher_path):
    stored = json.loads((FIXTURES / "loss_golden.json").read_text())["values"]
    computed = golden.compute_golden(teacher_path)
    assert computed.keys() == stored.keys()
    for case, terms in stored.items():
        assert computed[case].keys() == terms.keys(), case
        for key, value in terms.items():
            assert computed[case][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (case, key)


def test_posd_fused_d2_matches_plain_autograd_and_gradcheck():
    """The default path (d=2, V_IN) is one hand-written autograd node; it must equal the plain
    autograd composition of neighbour_idx + _group_potential_d2 and pass torch's gradcheck."""
    from train.losses.posd import _VInD2, _group_potential_d2, neighbour_idx
    y = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for k, scale in [(1, 1.0), (3, -0.25), (11, 2.0)]:
        ya, yb = y.clone().requires_grad_(), y.clone().requires_grad_()
        fused = _VInD2.apply(ya, k, scale)
        plain = _group_potential_d2(yb, neighbour_idx(yb, k), scale)
        torch.testing.assert_close(fused, plain, **TOL)
        fused.backward()
        plain.backward()
        torch.testing.assert_close(ya.grad, yb.grad, **TOL)
        assert torch.autograd.gradcheck(lambda t: _VInD2.apply(t, k, scale), (y.clone().requires_grad_(),))


def test_posd_under_autocast_is_computed_in_float32():
    y = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    ref = posd_loss(y, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = posd_loss(y, 2)
    assert v.dtype == torch.float32
    torch.testing.assert_close(v, ref)
