"""Parity gates: the exported model against its reference on the same batch of samples.

``compare_outputs`` measures max |delta| and top-1 agreement; a disagreement where the reference's
own top-2 margin is within the tolerance is a *tie* (random-init nets often have near-equal
logits) and is reported separately instead of failing the gate. Samples come from the model's own
test split, from ``--check-data DIR``, or, when neither is available, from random inputs, and the
report says which.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edge.cli_checks import printable
from edge.contract import IMAGE_EXTENSIONS, Preprocess
from edge.files import images_under
from edge.preprocess import decode_rgb

#: (max |delta logits|, min top-1 agreement) per precision, against fp32 ONNX Runtime
TOLERANCES = {
    "fp32": (1e-4, 1.0),          # ONNX Runtime CPU vs PyTorch (the export gate)
    "fp16": (5e-2, 0.99),         # fp16 weights/compute, fp32 I/O
    "int8": (float("inf"), 0.98),  # Q/DQ: agreement is the gate, |delta| is reported
    "trt_fp32": (1e-3, 1.0),      # TensorRT kernels reorder sums; TF32 is switched off
    "trt_fp16": (5e-2, 0.99),
    "trt_int8": (float("inf"), 0.98),
}


@dataclass
class Samples:
    x: np.ndarray                 # float32 NCHW network input
    y: Optional[np.ndarray]       # int64 labels when known
    source: str                   # where they came from, for the report
    real: bool
    corrupt: List[str] = field(default_factory=list)   # files of the folder that did not decode


@dataclass
class ParityReport:
    name: str                     # e.g. "ONNX Runtime CPU vs PyTorch (fp32)"
    n: int
    max_abs: float
    mean_abs: float
    agreement: float              # top-1 agreement over non-tied samples
    ties: int                     # disagreements inside the reference's own margin
    max_abs_tol: float
    min_agreement: float
    source: str
    passed: bool

    def format(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        tol = "n/a" if self.max_abs_tol == float("inf") else f"{self.max_abs_tol:g}"
        tie = f" ({self.ties} near-tie(s) excluded)" if self.ties else ""
        return (f"[{status}] {self.name}: {self.n} samples from {self.source}\n"
                f"    max |delta| {self.max_abs:.3g} (tolerance {tol}), mean |delta| "
                f"{self.mean_abs:.3g}, top-1 agreement {100 * self.agreement:.2f}% "
                f"(required {100 * self.min_agreement:.0f}%){tie}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _top1(a: np.ndarray) -> np.ndarray:
    """Class per sample; a score map [N, C, h, w] gives one class per cell."""
    if a.ndim > 2:
        a = np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
    return a.argmax(-1), a


def compare_outputs(ref: np.ndarray, got: np.ndarray, *, name: str, source: str,
                    max_abs_tol: float, min_agreement: float) -> ParityReport:
    if ref.shape != got.shape:
        raise ValueError(f"{name}: output shapes differ: reference {ref.shape}, got {got.shape}")
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    diff = np.abs(ref - got)
    finite = bool(np.isfinite(got).all())
    ref_top, ref2 = _top1(ref)
    got_top, _ = _top1(got)
    srt = np.sort(ref2, axis=-1)
    margin = srt[:, -1] - srt[:, -2] if ref2.shape[1] > 1 else np.full(len(ref2), np.inf)
    tie_band = max(2 * (max_abs_tol if np.isfinite(max_abs_tol) else 0.0), 1e-6)
    differ = ref_top != got_top
    ties = int((differ & (margin <= tie_band)).sum())
    counted = len(ref_top) - ties
    agreement = 1.0 if counted == 0 else float((~differ).sum()) / counted
    max_abs = float(diff.max()) if finite else float("inf")
    passed = finite and max_abs <= max_abs_tol and agreement >= min_agreement
    return ParityReport(name, int(ref.shape[0]), max_abs, float(diff.mean()), agreement, ties,
                        max_abs_tol, min_agreement, source, passed)


# ------------------------------------------------------------------------- samples
def folder_samples(root, pre: Preprocess, limit: int, seed: int = 0) -> Samples:
    """Up to ``limit`` images from a folder (a seeded random subset), preprocessed per contract.

    torch-free (OpenCV + :class:`Preprocess`), so it also runs on a Jetson. Labels are set when
    the folder has class sub-folders (``DIR/<class>/*`` or ``DIR/test/<class>/*``).
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = images_under(root)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    rng = np.random.default_rng(seed)
    if len(files) > limit:
        files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
    imgs, corrupt = [], []
    for f in files:
        im = decode_rgb(f)
        if im is None:
            corrupt.append(str(f))
        else:
            imgs.append(pre.to_uint8(im))
    if not imgs:
        raise FileNotFoundError(f"no decodable images under {root} ({len(corrupt)} corrupt)")
    source = f"{len(imgs)} images of {root}"
    if corrupt:   # counted and named in the report, never dropped silently
        shown = ", ".join(printable(Path(c).name) for c in corrupt[:3]) + (", ..." if len(corrupt) > 3 else "")
        source += f" ({len(corrupt)} corrupt file(s) skipped: {shown})"
    return Samples(pre.normalize(np.stack(imgs)), None, source, True, corrupt)


def random_samples(pre: Preprocess, n: int, seed: int = 0, why: str = "no data") -> Samples:
    rng = np.random.default_rng(seed)
    h, w = pre.size
    x = rng.integers(0, 256, size=(n, h, w, pre.channels), dtype=np.uint8)
    return Samples(pre.normalize(x), None, f"RANDOM inputs ({why}): not real samples", False)


def uint8_samples(x_nchw: np.ndarray, y: Optional[np.ndarray], pre: Preprocess,
                  source: str) -> Samples:
    """uint8 NCHW images (a DataSplits split) -> network input, per the contract's recipe."""
    x = pre.normalize(np.ascontiguousarray(np.asarray(x_nchw).transpose(0, 2, 3, 1)))
    return Samples(x, None if y is None else np.asarray(y, dtype=np.int64), source, True)


# ------------------------------------------------------------------------- ONNX Runtime
def ort_session(path, threads: int = 0):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("onnxruntime is needed for the parity check: "
                          "pip install 'edge-students[export]' (or pip install onnxruntime)") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_run(path_or_session, x: np.ndarray, output: Optional[str] = None,
            batch: int = 256) -> np.ndarray:
    """Run an ONNX model on CPU over ``x`` in chunks; the first output unless ``output`` names one."""
    sess = path_or_session if hasattr(path_or_session, "run") else ort_session(path_or_session)
    in_name = sess.get_inputs()[0].name
    out_name = output or sess.get_outputs()[0].name
    parts = [sess.run([out_name], {in_name: np.ascontiguousarray(x[i:i + batch])})[0]
             for i in range(0, len(x), batch)]
    return np.concatenate(parts).astype(np.float32)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(-1) == y).mean())
