"""Export edge-students checkpoints to ONNX (``python -m export.onnx``) and TensorRT
(``python -m export.trt``), with parity gates, INT8 Q/DQ and build fingerprints (docs/export.md).

Exit codes shared by the CLIs: 0 ok, 1 a parity/accuracy gate failed (or TensorRT failed to
build), 2 bad input, 3 TensorRT or a GPU is missing or unusable (the ONNX was written and the
command for the target printed).
"""

EXIT_OK, EXIT_GATE, EXIT_BAD_INPUT, EXIT_NO_TRT = 0, 1, 2, 3


class ExportInputError(ValueError):
    """A file or option that cannot be exported from; the message says why (exit code 2)."""


class GateFailed(RuntimeError):
    """A parity or accuracy gate failed; the message carries the figures (exit code 1)."""


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a usable GPU is missing here (exit code 3)."""
