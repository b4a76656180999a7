"""Models that ship inside the package, so ``python -m edge.run --model crowd`` works before
anyone trains: ``crowd`` is the crowd_fcn trained on the built-in crowd_synth scenes only (how it
was made, and what it scores, is in docs/builtin_model.md). A name that is also an existing file
path means the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: name -> (ONNX file, checkpoint it was exported from), both in :data:`MODELS_DIR`
BUILTIN_MODELS: Dict[str, tuple] = {"crowd": ("crowd_fcn.onnx", "crowd_fcn.pt")}


def resolve_model(spec: Union[str, Path]) -> Path:
    """A model path, or the ONNX file of a built-in model name."""
    path = Path(spec)
    if str(spec) in BUILTIN_MODELS and not path.exists():
        onnx = MODELS_DIR / BUILTIN_MODELS[str(spec)][0]
        if not onnx.is_file():
            raise FileNotFoundError(f"built-in model {spec!r} is missing from this install "
                                    f"({onnx}); reinstall edge-students")
        return onnx
    return path


def builtin_checkpoint(name: str) -> Path:
    """The checkpoint a built-in model was exported from (for export.trt, or fine-tuning)."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"no built-in model {name!r}; built-in: {', '.join(sorted(BUILTIN_MODELS))}")
    return MODELS_DIR / BUILTIN_MODELS[name][1]
