"""Shared fixtures. Tests run on CPU with few threads; data is made in the test or ships in a package."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Generated data (crowd_synth) goes to one per-session cache, never to ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "edge-students-cache"
    monkeypatch.setenv("EDGE_STUDENTS_CACHE", str(cache))


@pytest.fixture(scope="session")
def digits():
    from train.data import build_dataset

    return build_dataset("digits")


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory):
    """One small cifar_cnn trained on digits (real data, offline) per session: ~92% test accuracy."""
    from train.config import TrainConfig
    from train.engine import Trainer

    out = tmp_path_factory.mktemp("digits_run")
    cfg = TrainConfig(dataset="digits", model="cifar_cnn", epochs=8, batch_size=32, lr=0.05,
                      out=str(out), overwrite=True, seed=0)
    Trainer(cfg, progress=False).fit()
    return out / "model.pt"
