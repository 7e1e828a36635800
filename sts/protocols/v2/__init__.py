"""KServe v2 / Open Inference Protocol: JSON and binary tensors, health, metadata, and
the model repository extension."""
