"""Evaluation: retrieval quality and latency per model × dataset × Matryoshka dimension × quantization, reports
and plots, benchmark suites, embedding drift and clustering coherence.

Encoding goes through :mod:`engine.retrieval.encoder`, exact float search through :mod:`engine.retrieval.index`;
the quantized and HNSW indexes measured here are built in :mod:`engine.evaluation.vector_indexes`.
"""
