"""Query-side training (``train.mode: query``): the documents keep the start model's vectors; only the query
encoder learns, against every chunk of the corpus at once.

The start model encodes every chunk once (the one encoder). Each step encodes a batch of training queries with
the model being trained and scores them against all chunk vectors; a document scores as its best chunk, and the
loss is cross-entropy over every document of the corpus (``scale`` × cosine, the MNRL temperature), summed over
the Matryoshka dimensions. The other documents a query's rows name as positive are masked, not negatives.

Why: with the documents fixed, training cannot move a document no training query names, which is where full
fine-tuning lost on SciFact (the claims about untrained documents fell as the trained ones rose, see
docs/adaptation.md); and every document is a negative of every query, which in-batch negatives approximate with
a few dozen. Fixed document vectors are also what make the whole-corpus softmax affordable: a step costs one
forward and backward pass over a batch of short queries and one matrix product.

The saved model is a sentence-transformers ``Router`` (no remote code): route ``query`` is the trained encoder,
route ``document`` the start model unchanged, so ``SentenceTransformer(path).encode_query`` /
``encode_document`` work as usual and vectors a user already made with the start model stay valid.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embedforge.training.data import TrainingRows

log = logging.getLogger("embedforge.train")


@dataclass
class Targets:
    """Training rows as (query, document row) with the other documents to mask, over a corpus of chunks."""

    queries: list[str]
    docs: np.ndarray
    """Document row of each query's positive."""
    masks: list[list[int]]
    """Other positive document rows of the same query (not negatives)."""
    unmatched: int = 0
    """Rows whose positive is not one of the corpus chunks (dropped)."""


def targets(rows: TrainingRows, chunk_ids: list[str], passages: dict[str, str],
            chunk_docs: dict[str, str]) -> tuple[Targets, np.ndarray]:
    """``(targets, owner)``: each row's positive mapped to its document, and the document row of each chunk."""
    doc_rows: dict[str, int] = {}
    owner = np.array([doc_rows.setdefault(chunk_docs.get(c, c), len(doc_rows)) for c in chunk_ids])
    chunk_of_text: dict[str, int] = {}
    for i, cid in enumerate(chunk_ids):
        chunk_of_text.setdefault(passages[cid], i)
    pairs = [(q, chunk_of_text.get(p)) for q, p in zip(rows.columns["anchor"], rows.columns["positive"], strict=True)]
    positives: dict[str, set[int]] = {}
    for q, c in pairs:
        if c is not None:
            positives.setdefault(q, set()).add(int(owner[c]))
    kept = [(q, int(owner[c])) for q, c in pairs if c is not None]
    return Targets([q for q, _ in kept], np.array([d for _, d in kept], dtype=np.int64),
                   [sorted(positives[q] - {d}) for q, d in kept], len(pairs) - len(kept)), owner


def document_scores(queries: torch.Tensor, chunks: torch.Tensor, owner: torch.Tensor, n_docs: int) -> torch.Tensor:
    """``(B, n_docs)``: each document's best chunk score for each query (``queries`` and ``chunks`` normalized)."""
    scores = queries @ chunks.T
    out = torch.full((len(queries), n_docs), -1e4, dtype=scores.dtype)
    return out.scatter_reduce(1, owner.expand(len(queries), -1), scores, reduce="amax", include_self=False)


def corpus_softmax_loss(queries: torch.Tensor, chunks_by_dim: dict[int, torch.Tensor], owner: torch.Tensor,
                        n_docs: int, docs: torch.Tensor, masks: list[list[int]], scale: float) -> torch.Tensor:
    """Cross-entropy of each query's positive document among all documents, summed over the dimensions."""
    loss = queries.new_zeros(())
    for dim, chunks in chunks_by_dim.items():
        q = F.normalize(queries[:, :dim], dim=-1)
        logits = document_scores(q, chunks, owner, n_docs) * scale
        for row, other in enumerate(masks):
            if other:
                logits[row, other] = -1e4
        loss = loss + F.cross_entropy(logits, docs)
    return loss


@dataclass
class QuerySideResult:
    best_state: dict[str, torch.Tensor] | None
    """Query-encoder weights of the best evaluation (None: no evaluation, the last weights are in the model)."""
    best_step: int
    steps: int
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)


def train_query_side(model: Any, target: Targets, chunk_vectors: np.ndarray, owner: np.ndarray, dims: list[int], *,
                     steps: int, batch_size: int, lr: float, warmup_ratio: float, weight_decay: float, scale: float,
                     seed: int, evaluate: Callable[[Any], dict[str, float]] | None = None,
                     primary: str | None = None, eval_steps: int = 50, keep_best: bool = True,
                     patience: int = 0, stop_behind_start: int = 0) -> QuerySideResult:
    """Train ``model`` (a SentenceTransformer, the query encoder) in place; ``evaluate(model)`` gives validation
    metrics (step 0 is the start model); the best by ``primary`` is kept when ``keep_best``.

    ``patience``: stop after this many evaluations without a new best (0: never); ``stop_behind_start``: stop
    after this many evaluations in a row below the start (0: never)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    chunks = torch.from_numpy(np.ascontiguousarray(chunk_vectors, dtype=np.float32))
    chunks_by_dim = {d: F.normalize(chunks[:, :d], dim=-1) for d in dims}
    owner_t = torch.from_numpy(owner.astype(np.int64))
    n_docs = int(owner.max()) + 1
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    warmup = max(1, math.ceil(steps * warmup_ratio))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    result = QuerySideResult(None, 0, 0)
    best = start = None
    since_best = behind = 0
    if evaluate is not None:
        metrics = evaluate(model)
        result.evals.append({"step": 0.0, **metrics})
        best = start = metrics[primary] if primary else None
    t0 = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        picked = rng.choice(len(target.queries), size=min(batch_size, len(target.queries)), replace=False)
        features = model.preprocess([target.queries[i] for i in picked])
        embedded = model(features)["sentence_embedding"]
        loss = corpus_softmax_loss(embedded, chunks_by_dim, owner_t, n_docs, torch.from_numpy(target.docs[picked]),
                                   [target.masks[i] for i in picked], scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        result.losses.append(float(loss.detach()))
        result.steps = step
        if step % 10 == 0:
            log.info("train (query side): step %d/%d, loss %.4f, %.1f s/step", step, steps,
                     float(np.mean(result.losses[-10:])), (time.perf_counter() - t0) / step)
        if evaluate is None or (step % eval_steps and step != steps):
            continue
        model.eval()
        with torch.no_grad():
            metrics = evaluate(model)
        model.train()
        result.evals.append({"step": float(step), "loss": float(np.mean(result.losses[-eval_steps:])), **metrics})
        value = metrics[primary] if primary else None
        log.info("train (query side): step %d, %s %.4f (start %.4f)", step, primary, value, start)
        if value is not None and value > best:
            best, since_best, result.best_step = value, 0, step
            if keep_best:
                result.best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        behind = behind + 1 if value is not None and value < start else 0
        if (patience and since_best >= patience) or (stop_behind_start and behind >= stop_behind_start):
            log.info("train (query side): stopped at step %d (best step %d)", step, result.best_step)
            break
    model.eval()
    if not keep_best or evaluate is None:
        result.best_state, result.best_step = copy.deepcopy(model.state_dict()), result.steps
    return result


def save_router(query_model: Any, start_model: str | Path, path: Path) -> None:
    """A sentence-transformers ``Router`` at ``path``: ``query`` → ``query_model``, ``document`` → the start
    model as it was loaded from ``start_model``, recorded as its copy: the document route keeps the start model's
    id, so vectors and indexes made with the start model are reused and accepted."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Router

    from embedforge.models import record_route_origin

    documents = SentenceTransformer(str(start_model), device="cpu", local_files_only=True)
    router = Router.for_query_document(query_modules=list(query_model), document_modules=list(documents))
    SentenceTransformer(modules=[router], device="cpu").save(str(path))
    record_route_origin(path, "document", start_model)
