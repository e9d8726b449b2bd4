"""Evaluation: retrieval quality and latency per model × dataset × Matryoshka dimension × quantization, reports
and plots, benchmark suites, embedding drift and clustering coherence.

Encoding goes through :mod:`embedforge.retrieval.encoder`, exact float search through :mod:`embedforge.retrieval.index`;
the quantized and HNSW indexes measured here are built in :mod:`embedforge.evaluation.vector_indexes`.
"""
