"""Self-describing, versioned checkpoints (DESIGN.md, contract 1), written and read here only.

A checkpoint is a plain dict of strings, numbers, lists, dicts and tensors, so it loads with
``torch.load(..., weights_only=True)``; nothing in it needs arbitrary unpickling, and a file that
does is refused. Writes are atomic: a temporary file in the same folder, then a rename.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from edge.contract import DecisionRule, GroundScale, ModelInfo, Preprocess
from edge.sidecar import atomic_write, file_sha256  # noqa: F401  (file_sha256 re-exported)

FORMAT = "edge-students/checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("arch", "arch_kwargs", "num_classes", "class_names", "input_size", "in_channels",
            "preprocess", "method", "state_dict")


class CheckpointError(ValueError):
    """A file that is not a usable edge-students checkpoint."""


def build_checkpoint(model: nn.Module, *, arch: str, arch_kwargs: Mapping[str, Any],
                     class_names, input_size, in_channels: int, preprocess: Mapping[str, Any],
                     method: str, config: Optional[Mapping[str, Any]] = None,
                     metrics: Optional[Mapping[str, Any]] = None,
                     train_state: Optional[Mapping[str, Any]] = None,
                     scale: Optional[Mapping[str, Any]] = None,
                     decision: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``scale`` (``GroundScale.to_dict()``) and ``decision`` (``DecisionRule.to_dict()``) are
    optional: a model without them runs with native-resolution tiles and the default rule."""
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "torch_version": str(torch.__version__),
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "num_classes": len(class_names),
        "class_names": [str(c) for c in class_names],
        "input_size": [int(v) for v in input_size],
        "in_channels": int(in_channels),
        "preprocess": dict(preprocess),
        "method": method,
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
    }
    if scale is not None:
        ckpt["scale"] = GroundScale.from_dict(scale).to_dict()
    if decision is not None:
        ckpt["decision"] = DecisionRule.from_dict(decision).to_dict()
    if train_state is not None:
        ckpt["train_state"] = dict(train_state)
    return ckpt


def model_info(ckpt: Mapping[str, Any]) -> ModelInfo:
    """What the edge runtime would know about this model, built from the checkpoint (the same
    fields export.onnx writes into the ONNX metadata)."""
    scale, decision = ckpt.get("scale"), ckpt.get("decision")
    return ModelInfo(class_names=[str(c) for c in ckpt["class_names"]],
                     preprocess=Preprocess.from_dict(ckpt["preprocess"]),
                     arch=str(ckpt["arch"]), method=str(ckpt["method"]),
                     scale=GroundScale.from_dict(scale) if scale is not None else None,
                     decision=DecisionRule.from_dict(decision) if decision is not None else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel/DistributedDataParallel/compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(ckpt: Mapping[str, Any], path) -> Path:
    """Atomically write ``ckpt`` to ``path`` (temporary file + rename)."""
    return atomic_write(path, lambda f: torch.save(dict(ckpt), f), sync=True)


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint. Raises :class:`CheckpointError` with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln),
                      str(e).splitlines()[0] if str(e) else "")
        raise CheckpointError(
            f"{path} needs unpickling of arbitrary Python objects, which edge-students refuses "
            f"(torch.load with weights_only=True failed: {reason})"
        ) from None
    except Exception as e:  # noqa: BLE001 - garbage bytes raise anything from the unpickler
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an edge-students checkpoint (no format tag {FORMAT!r}); "
            "a bare state_dict cannot be exported because it does not say its architecture"
        )
    if int(ckpt.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt['format_version']}, newer than this "
            f"edge-students ({FORMAT_VERSION}); upgrade the package"
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> nn.Module:
    """Rebuild the architecture and load the weights; the model is returned in eval mode."""
    from train.models import build_model

    kwargs = dict(ckpt["arch_kwargs"])
    kwargs.pop("num_classes", None)
    model = build_model(ckpt["arch"], num_classes=int(ckpt["num_classes"]), **kwargs)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_model(path, map_location="cpu"):
    """``(model, checkpoint)`` from a checkpoint path."""
    ckpt = load_checkpoint(path, map_location)
    return model_from_checkpoint(ckpt), ckpt
