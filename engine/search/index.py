"""The one search API: top-k inner-product search over normalized vectors, FAISS or torch, exact order.

Every stage that searches (mine, evaluate, search, the round-trip filter) calls :func:`search`, or builds a
:class:`SearchIndex` once with :func:`build_index` and searches it block after block. Backends give identical
results on identical input:

- ``faiss``: a flat inner-product index; on CUDA machines faiss-gpu (``StandardGpuResources`` per GPU, fp16
  vectors, sharded over every visible GPU with ``index_cpu_to_gpu_multiple_py(shard=True)``), else faiss-cpu;
- ``torch``: matmul + top-k, in query blocks × corpus blocks (never more than ``block × corpus_block`` scores at
  once), on the job's device. On CPUs with native bf16 dot products (:func:`embedforge.device.cpu_bf16_dot`) the
  candidates come from a bf16 matmul with a certificate that the exact top-k is among them
  (:mod:`embedforge.search.bf16_candidates`); queries whose certificate fails are searched again in fp32;
- ``auto``: faiss-gpu on CUDA machines; torch on CPUs with native bf16 dot products (3.5x faster matmul than
  faiss-cpu's fp32 one); faiss otherwise; torch when faiss is missing, or on a GPU without faiss-gpu.

``kind="ivf"`` builds an inverted-file index (faiss only) for corpora too large for flat search: approximate
candidates, exact scores.

Identical results: every backend fetches a few extra candidates, rescores them exactly (one float32 dot product per
pair of the original vectors, computed the same way whatever the block or candidate list: :func:`pair_scores`) and orders them by (score desc, corpus row asc). So faiss's
fp16 GPU scores, BLAS summation order and ``topk`` tie order never change which rows come back or their order.
The bf16 torch path fetches ``BF16_PAD`` extra candidates and proves, per query, that no other row can reach the
exact top-k (else it searches that query again in fp32), so it returns the same rows and scores.

The corpus may be a memory-mapped array (``np.load(path, mmap_mode="r")``): the torch path reads it block by
block (its bf16 variant keeps a bf16 copy, half the bytes); faiss copies it into its index once.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

import embedforge.kernels as kernels
from embedforge import device as dev
from embedforge.kernels.reference import merge_topk, select_topk
from embedforge.search import faiss_indexes
from embedforge.search.bf16_candidates import Bf16Corpus, bf16_candidates, bf16_corpus

log = logging.getLogger("embedforge.index")

Backend = Literal["auto", "faiss", "torch"]
IndexKind = Literal["flat", "ivf"]

GPU_MAX_K = 2048
"""faiss-gpu returns at most this many neighbours per query; larger k use the torch path on the GPU."""
EXACT_PAD = 8
"""Extra candidates fetched before exact rescoring, so near-ties at the k-th place resolve the same everywhere."""
BF16_PAD = 32
"""Extra bf16 candidates per query in the certified torch path (on SciFact MiniLM: 99.9% of queries certified)."""


def pair_scores(queries: np.ndarray, corpus: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Exact ``queries[i] · corpus[ids[i, j]]`` as float32 ``(q, m)``; ``-inf`` where ``ids < 0``.

    One vectorized float32 dot product per pair, read straight from ``corpus`` (in RAM or memory-mapped; no
    gathered copy of the rows): torch's sampled dense-dense matmul (``torch.sparse.sampled_addmm``, whose CPU
    kernel computes each pair with the same ``map2_reduce_all`` over ``d``). A pair's score therefore depends on
    its two vectors alone, never on the backend, block size, candidate list or thread count.
    """
    ids = np.asarray(ids, dtype=np.int64)
    q, m = ids.shape
    out = np.full((q, m), -np.inf, dtype=np.float32)
    if q == 0 or m == 0:
        return out
    valid = ids >= 0
    n = corpus.shape[0]
    inverse = None
    if m <= n and valid.all():  # the usual case: m candidates in every row
        cols, crow = ids.reshape(-1), np.arange(0, q * m + 1, m, dtype=np.int64)
    else:
        rows, cols = np.nonzero(valid)[0], ids[valid]
        if len(cols) > q * n:  # only with repeated ids: torch takes at most one entry per cell; score pairs once
            cells, inverse = np.unique(rows * n + cols, return_inverse=True)
            rows, cols = cells // n, cells % n
        crow = np.zeros(q + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=q), out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        pattern = torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(cols), torch.zeros(len(cols)),
                                          size=(q, n), check_invariants=False)
    qv = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    scores = torch.sparse.sampled_addmm(pattern, qv, _float32_rows(corpus).T, beta=0.0).values().numpy()
    if inverse is not None:
        scores = scores[inverse]
    out[valid] = scores
    return out


def _float32_rows(corpus: np.ndarray) -> torch.Tensor:
    """``corpus`` as a float32 tensor, sharing memory when it is one already (read-only memory maps included)."""
    arr = np.asarray(corpus)
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    with warnings.catch_warnings():  # torch warns that a read-only array must not be written: it is only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def exact_order(queries: np.ndarray, corpus: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rescore candidate ``ids`` exactly and keep the best ``k`` per row, ordered by (score desc, id asc)."""
    if corpus.shape[0] >= _MISSING:
        raise ValueError(f"a corpus of {corpus.shape[0]:,} rows does not fit the 32-bit row codes of the search "
                         "(split it into shards of under 4 billion rows)")
    scores = torch.from_numpy(pair_scores(queries, corpus, ids))
    rows = torch.from_numpy(np.where(ids >= 0, ids, _MISSING).astype(np.int64))
    best_s, best_i = select_topk(scores, rows, k)  # the kernels' packed (score, row) key: one sort
    best_i[best_i == _MISSING] = -1
    return best_s.numpy(), best_i.numpy()


_MISSING = 0xFFFFFFFF
"""Row code of a missing candidate in :func:`exact_order` (with its ``-inf`` score it sorts after every real row)."""


@dataclass
class SearchIndex:
    """A corpus ready to search; build it once with :func:`build_index`, search many query blocks."""

    corpus: np.ndarray
    backend: str
    """``faiss-gpu``, ``faiss`` or ``torch``."""
    kind: IndexKind = "flat"
    block: int = 1024
    """Queries per block in the torch path."""
    corpus_block: int = 65536
    """Corpus rows per block in the torch path."""
    faiss_index: Any = None
    bf16: Bf16Corpus | None = field(default=None, repr=False)
    """The corpus in bf16 when the torch path finds candidates in bf16 (CPUs with native bf16 dot products)."""
    certified_rows: int = 0
    """Queries answered from certified bf16 candidates (the rest of the bf16 path's queries: ``fallback_rows``)."""
    fallback_rows: int = 0
    """Queries whose bf16 certificate failed and were searched again in fp32."""
    _gpu_resources: list[Any] = field(default_factory=list, repr=False)

    @property
    def size(self) -> int:
        return int(self.corpus.shape[0])

    @property
    def dim(self) -> int:
        return int(self.corpus.shape[1])

    def search(self, queries: np.ndarray, k: int, exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: ``(scores float32 (q, k'), ids int64 (q, k'))``, k' = min(k, corpus rows).

        Rows the index could not fill (IVF with few probed lists) have id ``-1`` and score ``-inf``.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2:
            raise ValueError(f"expected 2-d query vectors, got shape {queries.shape}")
        if queries.shape[1] != self.dim:
            raise ValueError(f"dimension mismatch: queries have {queries.shape[1]}, the corpus has {self.dim}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        k = min(k, self.size)
        fetch = min(k + EXACT_PAD, self.size) if exact else k
        if queries.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if self.bf16 is not None and exact:
            return self._certified_search(queries, k)
        if self.faiss_index is not None and not (self.backend == "faiss-gpu" and fetch > GPU_MAX_K):
            scores, ids = self.faiss_index.search(queries, fetch)
            ids = ids.astype(np.int64)
        else:
            scores, ids = _torch_exact(queries, self.corpus, fetch, self.block, self.corpus_block)
        if not exact:
            return scores.astype(np.float32), ids
        return exact_order(queries, self.corpus, ids, k)

    def _certified_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """bf16 candidates, exact rescoring; queries whose k-th exact score is not above the bound go again in fp32."""
        assert self.bf16 is not None
        ids, bound = bf16_candidates(queries, self.bf16, k + BF16_PAD, self.block, self.corpus_block)
        scores, ids = exact_order(queries, self.corpus, ids, k)
        redo = np.flatnonzero(~(scores[:, k - 1] > bound))
        if len(redo):
            again = _fp32_candidates(queries[redo], self.corpus, min(k + EXACT_PAD, self.size), self.corpus_block)
            scores[redo], ids[redo] = exact_order(queries[redo], self.corpus, again, k)
        self.fallback_rows += len(redo)
        self.certified_rows += queries.shape[0] - len(redo)
        return scores, ids


def build_index(corpus: np.ndarray, backend: Backend = "auto", kind: IndexKind = "flat", *, nlist: int | None = None,
                nprobe: int = 32, seed: int = 0, block: int = 1024, corpus_block: int = 65536,
                add_block: int = 262144) -> SearchIndex:
    """Prepare ``corpus`` (float32 ``(n, d)``, in RAM or memory-mapped) for :meth:`SearchIndex.search`.

    >>> index = build_index(np.load("vectors.npy", mmap_mode="r"), kind="flat")
    >>> scores, ids = index.search(query_vectors, k=50)
    """
    if corpus.ndim != 2:
        raise ValueError(f"expected a 2-d corpus, got shape {corpus.shape}")
    if corpus.shape[0] == 0:
        raise ValueError("cannot search an empty corpus")
    if corpus.dtype != np.float32:
        corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    if backend == "auto":
        backend = auto_backend(kind)
    if kind == "ivf" and backend != "faiss":
        raise ValueError("kind='ivf' needs the faiss backend (pip install faiss-cpu or faiss-gpu-cu12)")
    if backend == "torch":
        bf16 = bf16_corpus(corpus, corpus_block) if dev.device().type == "cpu" and dev.cpu_bf16_dot() else None
        return SearchIndex(corpus, "torch", "flat", block=block, corpus_block=corpus_block, bf16=bf16)
    if backend != "faiss":
        raise ValueError(f"unknown search backend '{backend}' (auto, faiss or torch)")
    faiss = faiss_indexes.faiss_module()
    index, _ = faiss_indexes.build(kind, corpus, nlist=nlist, seed=seed, add_rows=add_block)
    resources: list[Any] = []
    name = "faiss"
    if dev.cuda_available() and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index, resources = _to_all_gpus(faiss, index)
        name = "faiss-gpu"
    if kind == "ivf":
        space = faiss.GpuParameterSpace() if resources else faiss.ParameterSpace()
        space.set_index_parameter(index, "nprobe", nprobe)
    return SearchIndex(corpus, name, kind, block=block, corpus_block=corpus_block, faiss_index=index,
                       _gpu_resources=resources)


def search(queries: np.ndarray, corpus: np.ndarray, k: int, backend: Backend = "auto",
           block: int = 1024, kind: IndexKind = "flat") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus rows per query by inner product: ``(scores float32 (q, k'), ids int64 (q, k'))``, k' = min(k, n).

    >>> scores, ids = search(query_vectors, passage_vectors, k=10)
    """
    queries = np.asarray(queries)
    if queries.ndim != 2 or corpus.ndim != 2:
        raise ValueError(f"expected 2-d arrays, got queries {queries.shape} and corpus {corpus.shape}")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"dimension mismatch: queries have {queries.shape[1]}, corpus has {corpus.shape[1]}")
    return build_index(corpus, backend, kind, block=block).search(queries, k)


def auto_backend(kind: IndexKind = "flat") -> Backend:
    """faiss-gpu on CUDA machines; torch on CPUs with native bf16 dot products (its certified bf16 candidate search
    beats faiss-cpu's fp32 flat search, same results); faiss on other CPUs; torch without faiss, or on a GPU
    without faiss-gpu (matmul on the GPU beats faiss-cpu). IVF always needs faiss."""
    if not dev.has_module("faiss"):
        return "torch"
    if kind == "ivf":
        return "faiss"
    if not dev.cuda_available():
        return "torch" if dev.cpu_bf16_dot() else "faiss"
    faiss = faiss_indexes.faiss_module()
    return "faiss" if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 else "torch"


def _to_all_gpus(faiss: Any, index: Any) -> tuple[Any, list[Any]]:
    """Clone ``index`` to every visible GPU, fp16 vectors, sharded (each GPU holds a slice of the corpus)."""
    n = max(1, dev.gpu_count())
    resources = [faiss.StandardGpuResources() for _ in range(n)]
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    options.useFloat16 = True
    log.info("faiss-gpu: %s index sharded over %d GPU(s), fp16", type(index).__name__, n)
    return faiss.index_cpu_to_gpu_multiple_py(resources, index, options), resources


def _fp32_candidates(queries: np.ndarray, corpus: np.ndarray, k: int, corpus_block: int) -> np.ndarray:
    """Top-``k`` rows per query by fp32 matmul on the CPU, unordered (the caller rescores and orders them)."""
    q = torch.from_numpy(queries)
    best_s = best_i = None
    for cs in range(0, corpus.shape[0], corpus_block):
        c = torch.from_numpy(np.array(corpus[cs:cs + corpus_block], dtype=np.float32))
        s, i = torch.topk(q @ c.T, min(k, c.shape[0]), dim=1, sorted=False)
        best_s, best_i = merge_topk(best_s, best_i, s, i + cs, k)
    assert best_i is not None
    return best_i.numpy()


def _torch_exact(queries: np.ndarray, corpus: np.ndarray, k: int, block: int,
                 corpus_block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by matmul, query block × corpus block, merging the running top-k (scores on the job's device)."""
    device = dev.device()
    all_scores, all_ids = [], []
    for qs in range(0, queries.shape[0], block):
        q = torch.from_numpy(queries[qs:qs + block]).to(device)
        best_s = best_i = None
        for cs in range(0, corpus.shape[0], corpus_block):
            rows = corpus[cs:cs + corpus_block]
            c = torch.from_numpy(rows if rows.flags.writeable else np.array(rows)).to(device)  # mmap: copy block
            s, i = kernels.similarity_topk(q, c, min(k, c.shape[0]))  # Triton on CUDA, torch reference on CPU
            best_s, best_i = merge_topk(best_s, best_i, s, i + cs, k)
        assert best_s is not None and best_i is not None
        best_s, order = torch.sort(best_s, dim=1, descending=True)  # merged blocks come back unordered
        best_i = torch.gather(best_i, 1, order)
        all_scores.append(best_s.cpu().numpy())
        all_ids.append(best_i.cpu().numpy())
    return np.concatenate(all_scores), np.concatenate(all_ids).astype(np.int64)
