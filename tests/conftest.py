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
