"""Self-describing, versioned checkpoints (docs/design.md, contract 1), written and read here only.

A checkpoint is a plain dict of strings, numbers, lists, dicts and tensors, so it loads with
``torch.load(..., weights_only=True)``; nothing in it needs arbitrary unpickling, and a file that
does is refused. Writes are atomic: a temporary file in the same folder, then a rename.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from edge.contract import DecisionRule, GroundScale, ModelInfo, Preprocess
from edge.files import atomic_write

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
    """Read and validate a checkpoint. Raises :class:`CheckpointError` with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():    # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: {_why_unsafe(str(e))}") from None
    except Exception as e:  # noqa: BLE001 - garbage bytes raise anything from the unpickler
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an edge-students checkpoint (no format tag {FORMAT!r}); "
            "a bare state_dict cannot be exported because it does not say its architecture"
        )
    version = ckpt.get("format_version", -1)
    if not _is_int(version):
        raise CheckpointError(f"{path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, newer than this "
            f"edge-students ({FORMAT_VERSION}); upgrade the package"
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    check_fields(ckpt, path)
    return ckpt


def _why_unsafe(message: str) -> str:
    """Why a file failed the safe loader, in edge-students' words. Never repeats torch's advice
    to load it unsafely: a checkpoint is plain data, and one that is not is not loaded at all."""
    name = re.search(r"GLOBAL ([\w.]+)", message)
    what = f"loading it would import {name.group(1)}" if name else "it holds objects other than plain data"
    return (f"edge-students refuses this file because it carries code ({what}); a checkpoint "
            "must be plain data (tensors, numbers, strings, lists, dicts)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_fields(ckpt: Mapping[str, Any], path="checkpoint") -> None:
    """The description fields have the types and sizes the loaders rely on; a tampered or
    hand-made file is refused here with one line, not by a traceback deep in a consumer."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}")

    for key in ("arch", "method"):
        if not isinstance(ckpt[key], str) or not ckpt[key]:
            raise bad(f"{key} must be a non-empty string, got {ckpt[key]!r}")
    for key in ("arch_kwargs", "preprocess", "config", "metrics"):
        if key in ckpt and not (isinstance(ckpt[key], dict) and all(isinstance(k, str) for k in ckpt[key])):
            raise bad(f"{key} must be a dict with string keys, got {type(ckpt[key]).__name__}")
    n = ckpt["num_classes"]
    if not _is_int(n) or n < 1:
        raise bad(f"num_classes must be a positive integer, got {n!r}")
    names = ckpt["class_names"]
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names) or len(names) != n:
        raise bad(f"class_names must be a list of {n} strings (num_classes), got {names!r}"[:300])
    size, channels = ckpt["input_size"], ckpt["in_channels"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) and v >= 1 for v in size):
        raise bad(f"input_size must be [height, width] of positive integers, got {size!r}")
    if not _is_int(channels) or channels < 1:
        raise bad(f"in_channels must be a positive integer, got {channels!r}")
    _check_preprocess(ckpt["preprocess"], list(size), channels, bad)
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise bad("state_dict must map parameter names to tensors")
    if "train_state" in ckpt and not isinstance(ckpt["train_state"], dict):
        raise bad(f"train_state must be a dict, got {type(ckpt['train_state']).__name__}")


def _check_preprocess(recipe: Mapping[str, Any], size, channels: int, bad) -> None:
    from edge.contract import Preprocess

    try:
        pre = Preprocess.from_dict(recipe)
    except (TypeError, ValueError) as e:
        raise bad(f"preprocess recipe is invalid ({_first_line(e)})") from None
    if list(pre.size) != size:
        raise bad(f"preprocess size {list(pre.size)} differs from input_size {size}")
    if pre.channels != channels:
        raise bad(f"preprocess {pre.channel_order} has {pre.channels} channel(s) but in_channels is {channels}")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], where="checkpoint") -> None:
    """``model.load_state_dict`` after naming, in one line, the first name or shape that does
    not fit the architecture (PyTorch's own error lists every tensor over many lines). A model
    that renamed its layers translates the old names first (``upgrade_state_dict``)."""
    upgrade = getattr(model, "upgrade_state_dict", None)
    if upgrade is not None:
        state_dict = upgrade(dict(state_dict))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        part = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which"
        raise CheckpointError(f"{where}: the weights do not fit the architecture: the file {part}"
                              f"{' the model does not have' if not missing else ''} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    for k, v in expected.items():
        if tuple(state_dict[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{where}: the weights do not fit the architecture: {k} has shape "
                                  f"{list(state_dict[k].shape)} in the file, {list(v.shape)} in the model")
    model.load_state_dict(state_dict)


def model_from_checkpoint(ckpt: Mapping[str, Any], where="checkpoint") -> nn.Module:
    """Rebuild the architecture and load the weights; the model is returned in eval mode."""
    from train.models import MODELS, build_model

    if ckpt["arch"] not in MODELS:
        raise CheckpointError(f"{where}: unknown architecture {ckpt['arch']!r}; "
                              f"known: {', '.join(MODELS.names())}")
    kwargs = dict(ckpt["arch_kwargs"])
    kwargs.pop("num_classes", None)
    try:
        model = build_model(ckpt["arch"], num_classes=int(ckpt["num_classes"]), **kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: arch_kwargs {kwargs} do not build {ckpt['arch']} "
                              f"({_first_line(e)})"[:400]) from None
    load_weights(model, ckpt["state_dict"], where)
    return model.eval()


def load_model(path, map_location="cpu"):
    """``(model, checkpoint)`` from a checkpoint path."""
    ckpt = load_checkpoint(path, map_location)
    return model_from_checkpoint(ckpt, path), ckpt


#: what ``state.pt`` holds beyond a checkpoint, to continue a run
TRAIN_STATE_KEYS = ("run", "optimizer", "scheduler", "loss_state", "torch_rng")


def train_state_of(ckpt: Mapping[str, Any], where="state.pt") -> Dict[str, Any]:
    """The resumable part of ``state.pt``, checked for the keys and types a resume needs."""
    ts = ckpt.get("train_state")
    if not isinstance(ts, dict):
        raise CheckpointError(f"{where} holds no training state (train_state), so the run cannot be "
                              "resumed from it; it is a model checkpoint, not a state.pt")
    missing = [k for k in TRAIN_STATE_KEYS if k not in ts]
    if missing:
        raise CheckpointError(f"{where}: train_state lacks {', '.join(missing)}")
    run = ts["run"]
    need = ("epoch", "step", "sums", "history", "best_acc", "best_epoch")
    if not isinstance(run, dict) or any(k not in run for k in need):
        raise CheckpointError(f"{where}: train_state.run must be a dict with {', '.join(need)}")
    if not all(_is_int(run[k]) and run[k] >= 0 for k in ("epoch", "step")) or not isinstance(run["history"], list):
        raise CheckpointError(f"{where}: train_state.run has an invalid position "
                              f"(epoch {run['epoch']!r}, step {run['step']!r})")
    if not isinstance(ts["torch_rng"], torch.Tensor) or ts["torch_rng"].dtype != torch.uint8:
        raise CheckpointError(f"{where}: train_state.torch_rng must be a uint8 tensor")
    for key in ("optimizer", "scheduler", "loss_state"):
        if not isinstance(ts[key], dict):
            raise CheckpointError(f"{where}: train_state.{key} must be a dict")
    return dict(ts)
