"""Search: exact search (:mod:`~embedforge.search.index`, with bf16 candidates), FAISS index builders
(:mod:`~embedforge.search.faiss_indexes`), the one int8/binary quantization rule and the quantized search
(:mod:`~embedforge.search.quantize`), exported indexes (:mod:`~embedforge.search.export`), BM25 and hybrid fusion.
Used by mine, evaluate, embed and the ``search`` command; the top-k merge and the (score, id) sort key are the
kernels' torch twins (:mod:`embedforge.kernels.reference`)."""
