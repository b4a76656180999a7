"""On-device runtime for edge-students models: numpy, OpenCV, ONNX Runtime and/or TensorRT only.

Nothing under ``edge/`` imports torch: on a Jetson PyTorch is a separate, JetPack-pinned install.
"""
