"""sts: one HTTP server for TensorFlow, PyTorch, ONNX and MXNet models."""

__version__ = "0.1.0"
