"""Evaluation: retrieval quality and latency per model × dataset × Matryoshka dimension × quantization, reports
and plots, benchmark suites, embedding drift and clustering coherence.

Encoding goes through :mod:`embedforge.encoding.encoder`, exact float search through :mod:`embedforge.search.index`;
the quantized rows search the codes of the one quantization rule (:mod:`embedforge.search.quantize`) with the
quantized kernels; HNSW and the float latency index are FAISS indexes (:mod:`embedforge.search.faiss_indexes`).
"""
