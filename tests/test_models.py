"""Every registered model: shapes, gradients, the feature tap, and the paper's exact figures."""
from __future__ import annotations

import io

import pytest
import torch

from train.features import FeatureTap, layer_names
from train.models import build_model, list_models

# smallest sensible input per model (resnet50 is torchvision's ImageNet net: 64x64 Tiny-ImageNet)
SIZES = {"fashion_cnn": (1, 28), "crowd_fcn": (3, 128), "resnet50": (3, 64)}
LARGE = {"wrn_28_10", "wrn_20_8", "resnet50"}


def _input(name, batch=2):
    c, s = SIZES.get(name, (3, 32))
    torch.manual_seed(0)
    return torch.randn(batch, c, s, s)


@pytest.mark.parametrize("name", list_models())
def test_forward_finite_and_every_parameter_gets_a_gradient(name):
    x = _input(name)
    model = build_model(name, num_classes=7, in_channels=x.shape[1], input_size=x.shape[2])
    model.train()
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


@pytest.mark.parametrize("name", [n for n in list_models() if n not in LARGE])
def test_feature_tap_reads_the_classifier_input_without_changing_the_output(name):
    x = _input(name, batch=3)
    model = build_model(name, num_classes=5, in_channels=x.shape[1], input_size=x.shape[2]).eval()
    with torch.no_grad():
        plain = model(x)
        tap = FeatureTap(model)
        tapped = model(x)
        feats = tap.read(tapped)
    assert torch.equal(plain, tapped)
    head = dict(model.named_modules())[model.head_name]
    assert feats.shape[0] == 3 and feats.ndim == 2
    # the tapped features really are what the classifier sees
    with torch.no_grad():
        again = head(feats.view(3, -1, 1, 1) if isinstance(head, torch.nn.Conv2d) else feats)
    assert torch.allclose(again.flatten(1), plain, atol=1e-6)
    tap.remove()


def test_feature_tap_named_layer_and_unknown_layer():
    model = build_model("cifar_cnn").eval()
    tap = FeatureTap(model, "fc2")
    logits = model(torch.randn(4, 3, 32, 32))
    assert tap.read(logits).shape == (4, 64)
    assert "fc2" in layer_names(model)
    with pytest.raises(ValueError, match="unknown feature layer 'nope'.*penultimate"):
        FeatureTap(model, "nope")


def _state_dict_file_size(model, zipfile: bool) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf, _use_new_zipfile_serialization=zipfile)
    return buf.tell()


@pytest.mark.parametrize("name,params,kib", [("cifar_cnn", 63106, 248.0), ("fashion_cnn", 77484, 303.9)])
def test_lightweight_nets_match_the_paper_table_16(name, params, kib):
    model = build_model(name, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == params
    # The paper's figures are torch.save(state_dict) files in PyTorch's original (pre-1.6,
    # non-zip) format: 248.01 and 303.94 KiB. Today's zip container adds ~2 KiB of headers.
    legacy = _state_dict_file_size(model, zipfile=False) / 1024
    assert f"{legacy:.1f}" == f"{kib:.1f}", f"{name} state_dict file {legacy:.2f} KiB, paper {kib} KiB"
    current = _state_dict_file_size(model, zipfile=True) / 1024
    assert 0 < current - legacy < 3.0
    assert abs(params * 4 / 1024 - kib) < 2.0   # the fp32 weights alone


@pytest.mark.parametrize("name,params", [
    ("resnet32", 464154), ("resnet110", 1727962), ("wrn_16_2", 691674), ("wrn_40_2", 2243546),
])
def test_reference_parameter_counts(name, params):
    # POSD paper Table 14 rounds these to 0.5 M, 1.7 M, 0.7 M; WRN-40-2 is 2.24 M with 10 classes
    assert sum(p.numel() for p in build_model(name, num_classes=10).parameters()) == params


def test_wrn_40_2_with_100_classes_is_the_papers_2_26_m():
    n = sum(p.numel() for p in build_model("wrn_40_2", num_classes=100).parameters())
    assert round(n / 1e6, 2) == 2.26


def test_crowd_fcn_budget_and_dense_score_map():
    model = build_model("crowd_fcn", num_classes=2).eval()
    assert sum(p.numel() for p in model.parameters()) <= 100_000
    macs = 0
    hooks = []

    def count(mod, inp, out):
        nonlocal macs
        macs += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(count))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        logits = model(x)
    assert macs <= 0.1e9
    for h in hooks:
        h.remove()
    with torch.no_grad():
        dense = model.score_map(x)                        # [1, 2, 8, 8]
        big = model.score_map(torch.randn(1, 3, 256, 384))
    assert dense.shape == (1, 2, 8, 8) and big.shape == (1, 2, 16, 24)
    # pooling commutes with the linear 1x1 classifier: the dense map averages to the logits
    assert torch.allclose(dense.mean((2, 3)), logits, atol=1e-5)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet33'.*resnet32"):
        build_model("resnet33")


def test_bad_depths_are_refused():
    from train.models.resnet_cifar import CifarResNet
    from train.models.wrn import WideResNet

    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(33)
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(17, 2)
