"""Encoding: the one encoder (token-budget batches, torch/ONNX backends), its embedding cache, bulk embedding, and
:func:`~embedforge.encoding.embed_corpus.embed_corpus`, which the embed stage and command share."""
