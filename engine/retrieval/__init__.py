"""Retrieval parts shared by every stage: one encoder, one index API, metrics, BM25."""
