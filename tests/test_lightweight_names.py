"""The lightweight nets' conventional layer names: the paper's Table 16 file sizes to the digit,
and checkpoints saved under the previous names still load, resume and export."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from edge import contract as C
from train.checkpoint import build_checkpoint, load_model, save_checkpoint
from train.models import build_model
from train.models.lightweight import legacy_keys


class _PreviousLayout(nn.Module):
    """The lightweight nets as they were laid out before the rename (written out here, so the
    test does not depend on the code it checks): Sequential blocks features/hidden/classifier."""

    def __init__(self, convs, fcs, in_channels, input_size, num_classes=10):
        super().__init__()
        layers, c, s = [], in_channels, input_size
        for out_c in convs:
            layers += [nn.Conv2d(c, out_c, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)]
            c, s = out_c, (s - 4) // 2
        self.features = nn.Sequential(*layers)
        hidden, d = [], c * s * s
        for width in fcs:
            hidden += [nn.Linear(d, width), nn.ReLU(inplace=True)]
            d = width
        self.hidden = nn.Sequential(nn.Flatten(1), *hidden)
        self.classifier = nn.Linear(d, num_classes)

    def forward(self, x):
        return self.classifier(self.hidden(self.features(x)))


PREVIOUS = {"cifar_cnn": ((6, 16), (128, 64), 3, 32), "fashion_cnn": ((20, 50), (64,), 1, 28)}


def _file_kib(state_dict, zipfile: bool) -> float:
    buf = io.BytesIO()
    torch.save(state_dict, buf, _use_new_zipfile_serialization=zipfile)
    return len(buf.getvalue()) / 1024


@pytest.mark.parametrize("name,paper_kib", [("cifar_cnn", "248.0"), ("fashion_cnn", "303.9")])
def test_table16_to_the_digit(name, paper_kib):
    model = build_model(name)
    assert [k.split(".")[0] for k in model.state_dict()][::2] == \
        ["conv1", "conv2", "fc1", "fc2", "fc3"][:len(model.state_dict()) // 2]
    assert f"{_file_kib(model.state_dict(), zipfile=False):.1f}" == paper_kib
    # the previous names held the same weights in a larger file: the names are part of the size
    convs, fcs, c, s = PREVIOUS[name]
    old = _file_kib(_PreviousLayout(convs, fcs, c, s).state_dict(), zipfile=False)
    assert f"{old:.1f}" != paper_kib and old > float(paper_kib)


def test_the_key_map_covers_every_previous_key():
    for name, (convs, fcs, c, s) in PREVIOUS.items():
        old_modules = {k.rpartition(".")[0] for k in _PreviousLayout(convs, fcs, c, s).state_dict()}
        new_modules = {k.rpartition(".")[0] for k in build_model(name).state_dict()}
        names = legacy_keys(len(fcs) + 1)
        assert set(names) >= old_modules and {names[m] for m in old_modules} == new_modules


def _previous_checkpoint(tmp_path, name):
    convs, fcs, c, s = PREVIOUS[name]
    torch.manual_seed(1)
    old = _PreviousLayout(convs, fcs, c, s).eval()
    pre = C.Preprocess(size=(s, s), mean=(0.5,) * c, std=(0.25,) * c,
                       channel_order="GRAY" if c == 1 else "RGB")
    ckpt = build_checkpoint(old, arch=name, arch_kwargs={"in_channels": c, "input_size": s},
                            class_names=[f"c{i}" for i in range(10)], input_size=(s, s),
                            in_channels=c, preprocess=pre.to_dict(), method="posd")
    assert any(k.startswith("features.") for k in ckpt["state_dict"])
    return old, save_checkpoint(ckpt, tmp_path / f"{name}.pt"), (c, s)


@pytest.mark.parametrize("name", sorted(PREVIOUS))
def test_a_checkpoint_with_the_previous_names_loads_and_gives_the_same_outputs(tmp_path, name):
    old, path, (c, s) = _previous_checkpoint(tmp_path, name)
    model, _ = load_model(path)
    x = torch.randn(5, c, s, s)
    with torch.no_grad():
        assert torch.equal(model(x), old(x))
    # strict loading still refuses keys that are neither old nor new names
    bad = dict(old.state_dict(), **{"features.9.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="features.9.weight"):
        build_model(name).load_state_dict(bad)


def test_a_checkpoint_with_the_previous_names_exports(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from export.onnx import export_onnx
    from export.parity import ort_run

    old, path, (c, s) = _previous_checkpoint(tmp_path, "cifar_cnn")
    res = export_onnx(path, check_size=8)
    assert res.passed
    x = torch.randn(3, c, s, s)
    with torch.no_grad():
        want = old(x).numpy()
    got = ort_run(res.onnx_path, x.numpy(), C.OUTPUT_NAME)
    assert abs(got - want).max() < 1e-4


def test_a_run_saved_under_the_previous_names_resumes_bit_identically(tmp_path, digits):
    from train.config import TrainConfig
    from train.engine import Trainer

    def cfg(out):
        return TrainConfig(dataset="digits", model="cifar_cnn", method="posd", epochs=1,
                           batch_size=256, lr=0.05, out=str(tmp_path / out), seed=2)

    def interrupt(trainer, epoch, step):
        if step == 2:
            raise KeyboardInterrupt

    ref = Trainer(cfg("ref"), data=digits, progress=False)
    ref.fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg("cut"), data=digits, progress=False, on_step=interrupt).fit()
    state_path = tmp_path / "cut" / "state.pt"
    state = torch.load(state_path, weights_only=True)
    back = {new: old for old, new in legacy_keys(3).items()}
    state["state_dict"] = {back[k.rpartition(".")[0]] + "." + k.rpartition(".")[2]: v
                           for k, v in state["state_dict"].items()}
    assert "hidden.3.weight" in state["state_dict"]
    torch.save(state, state_path)
    resumed = Trainer(cfg("cut").replace(resume=True), data=digits, progress=False)
    resumed.fit()
    for (n, p), (_, q) in zip(ref.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), n
