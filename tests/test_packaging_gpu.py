"""The ``gpu`` extra and the cuda-python import paths the TensorRT backend accepts."""
from __future__ import annotations

import sys
import tomllib
import types
from pathlib import Path

import pytest

from edge.backends import cuda_rt

EXTRAS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
    "project"]["optional-dependencies"]


def names(reqs):
    return {r.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
            for r in reqs}


def test_gpu_extra_brings_the_gpu_runtime_and_no_cpu_onnxruntime():
    gpu = names(EXTRAS["gpu"])
    assert {"onnxruntime-gpu", "tensorrt-cu12", "cuda-python", "opencv-python-headless"} <= gpu
    assert "onnxruntime" not in gpu            # both provide the `onnxruntime` module
    assert not any("gpu" in r for r in EXTRAS["dev"]), "CI has no GPU: [dev] must not pull [gpu]"


@pytest.mark.parametrize("present,want", [
    (("cuda.bindings.runtime", "cuda.cudart"), "cuda.bindings.runtime"),   # cuda-python >= 12.6
    (("cuda.cudart",), "cuda.cudart"),                                     # older cuda-python
])
def test_cudart_import_paths(monkeypatch, present, want):
    cuda = types.ModuleType("cuda")
    cuda.__path__ = []
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    for mod in ("cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    if "cuda.bindings.runtime" in present:
        bindings = types.ModuleType("cuda.bindings")
        bindings.__path__ = []
        bindings.runtime = types.ModuleType("cuda.bindings.runtime")
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", bindings.runtime)
    else:
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)      # import fails
    if "cuda.cudart" in present:
        cuda.cudart = types.ModuleType("cuda.cudart")
        monkeypatch.setitem(sys.modules, "cuda.cudart", cuda.cudart)
    assert cuda_rt.cudart().__name__ == want


def test_cudart_missing_names_the_install(monkeypatch):
    for mod in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, mod, None)            # each import fails
    with pytest.raises(ImportError, match="pip install cuda-python"):
        cuda_rt.cudart()
