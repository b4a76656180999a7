"""Losses on a CUDA device: KD's teacher follows the inputs there lazily; POSD/OSKD run on GPU.

Skipped at module level without CUDA (``pytest -m gpu`` on a GPU machine).
"""
from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

from train.losses import build_loss  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "make_loss_golden", Path(__file__).parent / "fixtures" / "make_loss_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
C, SIZE = golden.C, golden.SIZE

pytestmark = pytest.mark.gpu


def test_kd_teacher_moves_to_inputs_device(tmp_path):
    loss = build_loss("kd", teacher=str(golden.make_teacher_checkpoint(tmp_path / "t.pt")))
    x = torch.randn(4, 3, SIZE, SIZE, device="cuda")
    terms = loss(torch.randn(4, C, device="cuda"), torch.arange(4, device="cuda") % C, inputs=x)
    assert next(loss.teacher.parameters()).device.type == "cuda"
    assert all(torch.isfinite(v) for v in terms.values())


@pytest.mark.parametrize("name,kwargs", [("posd", {"knn": 2}), ("posd", {"knn": 2, "kernel_d": 1.0, "qmi": True}),
                                         ("oskd", {"knn": 2})])
def test_self_distillation_on_cuda_matches_cpu(name, kwargs):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=g, dtype=torch.float64)
    feats = torch.randn(16, 8, generator=g, dtype=torch.float64)
    y = torch.arange(16) % C
    loss = build_loss(name, **kwargs)
    cpu = loss(logits, y, features=feats)
    gpu = loss(logits.cuda(), y.cuda(), features=feats.cuda())
    for key, value in cpu.items():
        torch.testing.assert_close(gpu[key].cpu(), value, rtol=1e-9, atol=1e-12)
