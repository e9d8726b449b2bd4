"""The query-side loss and its targets (``embedforge.training.query_side``) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedforge.training.data import TrainingRows
from embedforge.training.query_side import corpus_softmax_loss, document_scores, targets


def test_targets_map_positives_to_documents_and_mask_a_querys_other_positives() -> None:
    passages = {"a-0": "alpha one", "a-1": "alpha two", "b-0": "beta", "c-0": "gamma"}
    chunk_docs = {"a-0": "A", "a-1": "A", "b-0": "B", "c-0": "C"}
    rows = TrainingRows({"anchor": ["q1", "q1", "q2", "q3"],
                         "positive": ["alpha two", "gamma", "beta", "text that is no chunk"]}, "queries", [])
    got, owner = targets(rows, sorted(passages), passages, chunk_docs)
    assert owner.tolist() == [0, 0, 1, 2]  # chunk → document row, in chunk order
    assert got.queries == ["q1", "q1", "q2"] and got.docs.tolist() == [0, 2, 1]
    assert got.masks == [[2], [0], []]  # q1's other positive is not its negative
    assert got.unmatched == 1


def test_corpus_softmax_loss_is_cross_entropy_over_best_chunk_document_scores() -> None:
    torch.manual_seed(0)
    chunks = F.normalize(torch.randn(5, 8), dim=-1)
    owner = torch.tensor([0, 0, 1, 2, 2])
    queries = torch.randn(2, 8, requires_grad=True)
    docs, masks, scale = torch.tensor([1, 2]), [[0], []], 20.0
    loss = corpus_softmax_loss(queries, {8: chunks, 4: F.normalize(chunks[:, :4], dim=-1)}, owner, 3, docs, masks,
                               scale)
    expected = 0.0
    for dim in (8, 4):
        q = F.normalize(queries[:, :dim], dim=-1).detach().numpy()
        c = chunks[:, :dim].numpy() / np.linalg.norm(chunks[:, :dim].numpy(), axis=1, keepdims=True)
        s = q @ c.T
        per_doc = np.stack([s[:, :2].max(1), s[:, 2], s[:, 3:].max(1)], axis=1) * scale
        per_doc[0, 0] = -1e4 * scale / scale  # masked: another positive of query 0
        for row, target in enumerate((1, 2)):
            logits = per_doc[row]
            expected += (np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[target]) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert queries.grad is not None and float(queries.grad.abs().sum()) > 0
    scores = document_scores(F.normalize(queries.detach(), dim=-1), chunks, owner, 3)
    assert scores.shape == (2, 3)
