"""Search: exact and candidate search with one top-k merge, FAISS index builders, quantization, persisted
indexes, BM25 and hybrid fusion. Used by mine, evaluate, embed/export and the ``search`` command."""
