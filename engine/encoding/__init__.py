"""Encoding: the one encoder (token-budget batches, torch/ONNX backends), its embedding cache, bulk embedding."""
