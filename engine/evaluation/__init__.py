"""Evaluation: retrieval quality and latency per model × dataset × Matryoshka dimension × quantization, reports
and plots, benchmark suites, embedding drift and clustering coherence.

Encoding goes through :mod:`embedforge.encoding.encoder`, exact float search through :mod:`embedforge.search.index`;
the quantized and HNSW indexes measured here are built in :mod:`embedforge.search.vector_indexes`.
"""
