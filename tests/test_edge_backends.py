"""Backend selection: ORT provider order (TensorRT EP -> CUDA EP -> CPU EP), no silent downgrade."""
from __future__ import annotations

import numpy as np
import pytest

from edge.backends import open_backend
from edge.backends.ort import provider_chain

try:
    from edge_helpers import build_crowd_model, export_crowd_onnx
except ImportError:
    from tests.edge_helpers import build_crowd_model, export_crowd_onnx

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_provider_chain_order_and_trt_cache(tmp_path):
    model = tmp_path / "crowd.onnx"
    chain = provider_chain("ort-auto", ALL, model)
    assert [c if isinstance(c, str) else c[0] for c in chain] == ALL
    opts = chain[0][1]
    assert opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path / "crowd.ort-trt-cache")
    assert (tmp_path / "crowd.ort-trt-cache").is_dir()
    assert provider_chain("ort-cuda", ALL, model) == ALL[1:]
    assert provider_chain("ort-auto", ["CPUExecutionProvider"], model) == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="TensorrtExecutionProvider"):
        provider_chain("ort-trt", ["CUDAExecutionProvider", "CPUExecutionProvider"], model)


def test_ort_cpu_matches_torch_and_reports_provider(tmp_path):
    torch = pytest.importorskip("torch")
    net = build_crowd_model(seed=3)
    path = export_crowd_onnx(tmp_path / "m.onnx", size=64, model=net)
    b = open_backend(path, "auto", threads=1)
    assert b.name == "ort-cpu" and b.provider == "CPUExecutionProvider"
    assert b.info.class_names == ["crowd", "no_crowd"] and b.info.preprocess.size == (64, 64)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
        ref_map = net.score_map(torch.from_numpy(x[:1])).numpy()
    np.testing.assert_allclose(b(x), ref, atol=1e-4)
    np.testing.assert_allclose(b.score_map(x[:1]), ref_map, atol=1e-4)
    with pytest.raises(ValueError, match="backend"):
        open_backend(path, "cuda")
    with pytest.raises(ValueError, match="needs a TensorRT engine"):
        open_backend(path, "trt")
