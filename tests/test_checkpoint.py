"""Checkpoints: self-describing, atomic, loaded with weights_only=True; unsafe files are refused."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from train.checkpoint import (CheckpointError, build_checkpoint, load_checkpoint, load_model,
                              save_checkpoint)
from train.models import build_model

PRE = {"size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _ckpt(model):
    return build_checkpoint(model, arch="cifar_cnn", arch_kwargs={"in_channels": 3, "input_size": 32},
                            class_names=[f"c{i}" for i in range(10)], input_size=(32, 32),
                            in_channels=3, preprocess=PRE, method="posd",
                            config={"lr": 0.001}, metrics={"best_test_acc": 0.5})


def test_round_trip_restores_weights_and_description(tmp_path):
    model = build_model("cifar_cnn")
    path = save_checkpoint(_ckpt(model), tmp_path / "model.pt")
    loaded, ckpt = load_model(path)
    assert ckpt["class_names"][3] == "c3" and ckpt["method"] == "posd"
    assert ckpt["format_version"] == 1 and ckpt["preprocess"] == PRE
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), loaded(x))
    assert not loaded.training


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_carries_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "edge-students/checkpoint", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refuses"):
        load_checkpoint(path)


@pytest.mark.parametrize("content,match", [
    (b"", "not a readable"),
    (b"this is not a checkpoint at all", "not a readable"),
])
def test_corrupt_files_give_a_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(_ckpt(build_model("cifar_cnn")), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_bare_state_dict_and_missing_file(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(build_model("cifar_cnn").state_dict(), path)
    with pytest.raises(CheckpointError, match="not an edge-students checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_newer_format_is_refused(tmp_path):
    ckpt = _ckpt(build_model("cifar_cnn"))
    ckpt["format_version"] = 99
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path):
    path = save_checkpoint(_ckpt(build_model("cifar_cnn")), tmp_path / "m.pt")
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        save_checkpoint({"format": "x", "bad": lambda: 0}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]   # no temporary left behind
