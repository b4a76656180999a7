"""On-device runtime for edge-students models: numpy, OpenCV, ONNX Runtime and/or TensorRT only.

Nothing under ``edge/`` imports torch: on a Jetson PyTorch is a separate, JetPack-pinned install.

Modules: ``contract`` (I/O contract), ``backends`` (ORT, TensorRT), ``sidecar`` (engine
sidecar: schema, write, check), ``sources``, ``preprocess``, ``heatmap``, ``pipeline``, ``outputs``, ``power``;
CLIs ``python -m edge.run`` and ``python -m edge.bench``. Guide: docs/jetson.md.
"""
