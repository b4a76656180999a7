"""Storage of a model, under the definitions people mean by "model size", side by side.

- ``fp32_weight_bytes``: parameters x 4 bytes (buffers such as BN running statistics excluded);
- ``state_dict_file``: the file ``torch.save(model.state_dict())`` writes (PyTorch's zip format,
  the default since 1.6: 64-byte aligned records plus per-tensor zip headers);
- ``state_dict_file_legacy``: the same with ``_use_new_zipfile_serialization=False`` (the
  pre-1.6 format, less overhead);
- ``checkpoint_sgd_file``: ``torch.save({"state_dict": ..., "optimizer": sgd.state_dict()})``
  after one SGD step with momentum, so the momentum buffers exist: about twice the weights;
  ``checkpoint_sgd_file_legacy`` the same in the pre-1.6 format;
- ``onnx_file``: ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``, opset 17) of the
  eval-mode model at batch 1;
- ``fp16_weight_bytes`` / ``int8_weight_bytes``: parameters x 2 / x 1, computed from the count,
  not from a converted file (int8 per-tensor scales and zero points are not included).
"""
from __future__ import annotations

import copy
import io
import os
import tempfile
import warnings
from typing import Dict, Union

import torch
import torch.nn.functional as F
from torch import nn

from profiling.complexity import count_params


def _saved_size(obj, legacy: bool = False) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return len(buf.getvalue())


def _checkpoint_with_momentum(model: nn.Module, input_size: int, in_channels: int,
                              num_classes: int) -> Dict[str, int]:
    model = copy.deepcopy(model).train()  # the caller's model is left as it was
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(2, in_channels, input_size, input_size)
    F.cross_entropy(model(x), torch.arange(2) % num_classes).backward()
    opt.step()  # SGD creates its momentum buffers on the first step
    ckpt = {"state_dict": model.state_dict(), "optimizer": opt.state_dict()}
    return {"checkpoint_sgd_file": _saved_size(ckpt),
            "checkpoint_sgd_file_legacy": _saved_size(ckpt, legacy=True)}


def onnx_size(model: nn.Module, input_size: int, in_channels: int) -> Union[int, str]:
    """Size of the exported ONNX file, or 'n/a (reason)' when export is unavailable."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        return "n/a (onnx not installed: pip install onnx)"
    x = torch.zeros(1, in_channels, input_size, input_size)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(copy.deepcopy(model).eval(), x, path, dynamo=False, opset_version=17,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except (RuntimeError, TypeError, ValueError) as e:  # exporter unavailable or unsupported op
            return f"n/a ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
        return os.path.getsize(path)


def storage_report(model: nn.Module, input_size: int, in_channels: int = 3,
                   num_classes: int = 10, onnx: bool = True) -> Dict[str, Union[int, str]]:
    """All storage definitions for ``model`` in bytes (see the module docstring)."""
    params = count_params(model)
    out: Dict[str, Union[int, str]] = {
        "params": params,
        "fp32_weight_bytes": 4 * params,
        "fp16_weight_bytes": 2 * params,
        "int8_weight_bytes": params,
        "state_dict_file": _saved_size(model.state_dict()),
        "state_dict_file_legacy": _saved_size(model.state_dict(), legacy=True),
    }
    if onnx:
        out["onnx_file"] = onnx_size(model, input_size, in_channels)
    out.update(_checkpoint_with_momentum(model, input_size, in_channels, num_classes))
    return out
