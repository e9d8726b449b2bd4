"""Every selection rule of hard-negative mining on hand-built cases with exactly known scores."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.mining.corpus import KnownPositives, normalize_text, stable_keys
from embedforge.mining.negatives import CorpusKeys, NegativeRules, mine_block
from embedforge.search.index import build_index

# (text, doc, score against the query e0)
CORPUS = [
    ("The positive passage about turbines.", "A", 0.80),   # 0 positive
    ("the POSITIVE passage -- about turbines", "B", 0.90),  # 1 near-duplicate of the positive (normalized equal)
    ("A second relevant passage.", "C", 0.85),              # 2 second known positive of the same query text
    ("Another chunk of the positive's document.", "A", 0.70),  # 3 same document as the positive
    ("Almost as good as the positive.", "D", 0.78),         # 4 within the 5% relative margin (0.8 * 0.95 = 0.76)
    ("Negative five.", "E", 0.75),                          # 5 a good hard negative
    ("negative FIVE", "F", 0.74),                           # 6 duplicate text of 5
    ("Negative seven.", "G", 0.60),                         # 7
    ("Negative eight.", "H", 0.50),                         # 8
    ("Negative nine.", "I", 0.40),                          # 9
    ("Negative ten.", "J", 0.30),                           # 10
]


def _vec(score: float) -> list[float]:
    return [score, float(np.sqrt(1 - score * score)), 0.0]


@pytest.fixture(scope="module")
def setup():
    vectors = np.array([_vec(s) for _, _, s in CORPUS], dtype=np.float32)
    docs = {d: i for i, d in enumerate(sorted({d for _, d, _ in CORPUS}))}
    keys = CorpusKeys(np.array([docs[d] for _, d, _ in CORPUS], dtype=np.int64),
                      stable_keys(normalize_text(t) for t, _, _ in CORPUS))
    # two QUERIES rows share the query text: chunks 0 and 2 are both positives of it
    query_texts = ["what about turbines?", "What about turbines"]
    known = KnownPositives.from_pairs(stable_keys([normalize_text(q) for q in query_texts], "t:"), np.array([0, 2]))
    return build_index(vectors, "faiss"), keys, known


def _mine(setup, backend: str = "faiss", n_queries: int = 1, **rules) -> tuple[list[list[int]], dict[str, int]]:
    index, keys, known = setup
    if backend != index.backend:
        index = build_index(index.corpus, backend)
    pos = known.lookup(stable_keys([normalize_text("what about turbines?")] * n_queries, "t:"))
    q = np.tile(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), (n_queries, 1))
    sel = mine_block(index, q, pos, np.arange(n_queries), keys, NegativeRules(**rules))
    return [[int(i) for i in row if i >= 0] for row in sel.ids], sel.counts


def test_default_rules_pick_the_expected_negatives(setup) -> None:
    chosen, counts = _mine(setup, num_negatives=3)
    assert chosen == [[5, 7, 8]]
    assert counts["same_doc"] == 1 and counts["equal_to_positive"] == 1 and counts["duplicate_text"] == 1
    assert counts["relative_margin"] == 1  # chunk 4 (0.78 > 0.76)
    assert counts["known_positive_in_results"] == 2
    assert counts["kept"] == 3 and counts["candidates"] == len(CORPUS) - 2


def test_near_duplicate_of_the_positive_is_never_a_negative(setup) -> None:
    chosen, counts = _mine(setup, num_negatives=5, relative_margin=None, exclude_same_doc=False)
    assert 1 not in chosen[0]
    assert counts["equal_to_positive"] == 1
    assert chosen == [[4, 5, 3, 7, 8]]


def test_second_known_positive_is_never_a_negative(setup) -> None:
    chosen, _ = _mine(setup, num_negatives=9, relative_margin=None, exclude_same_doc=False,
                      exclude_equal_text=False)
    assert 0 not in chosen[0] and 2 not in chosen[0]
    assert chosen == [[1, 4, 5, 6, 3, 7, 8, 9, 10]]


def test_same_document_rule_can_be_turned_off(setup) -> None:
    on, _ = _mine(setup, num_negatives=6, relative_margin=None)
    off, _ = _mine(setup, num_negatives=6, relative_margin=None, exclude_same_doc=False)
    assert 3 not in on[0] and 3 in off[0]


def test_relative_margin_uses_the_lowest_known_positive(setup) -> None:
    # reference = min(0.80, 0.85) = 0.80; 10% margin → threshold 0.72: chunks 4 (0.78), 5 (0.75), 6 removed
    chosen, counts = _mine(setup, num_negatives=2, relative_margin=0.10)
    assert chosen == [[7, 8]]
    assert counts["relative_margin"] == 2  # 4 and 5; 6 was already removed as a duplicate of 5


def test_absolute_margin_max_and_min_score(setup) -> None:
    chosen, counts = _mine(setup, num_negatives=2, relative_margin=None, absolute_margin=0.15)
    assert chosen == [[7, 8]] and counts["absolute_margin"] == 2  # 0.78 and 0.75 are within 0.15 of 0.80
    chosen, counts = _mine(setup, num_negatives=2, relative_margin=None, max_score=0.55)
    assert chosen == [[8, 9]] and counts["max_score"] == 3
    chosen, counts = _mine(setup, num_negatives=8, relative_margin=None, min_score=0.45)
    assert chosen == [[4, 5, 7, 8]] and counts["min_score"] == 2


def test_rank_window_counts_ranks_among_non_positives(setup) -> None:
    # non-positive ranking: 1, 4, 5, 6, 3, 7, 8, 9, 10 → window [2, 6) holds 5, 6, 3, 7
    chosen, counts = _mine(setup, num_negatives=4, range_min=2, range_max=6, relative_margin=None,
                           exclude_same_doc=False, exclude_equal_text=False)
    assert chosen == [[5, 6, 3, 7]] and counts["candidates"] == 4


def test_too_few_candidates_pad_with_minus_one(setup) -> None:
    index, keys, known = setup
    pos = known.lookup(stable_keys([normalize_text("what about turbines?")], "t:"))
    sel = mine_block(index, np.array([[1.0, 0, 0]], np.float32), pos, np.arange(1), keys,
                     NegativeRules(num_negatives=4, range_max=6, max_score=0.65))
    assert sel.ids.tolist() == [[7, -1, -1, -1]] and np.isnan(sel.scores[0, 1:]).all()
    assert sel.n_kept.tolist() == [1]


def test_random_sampling_is_seeded_and_block_independent(setup) -> None:
    rules = dict(num_negatives=3, sampling="random", relative_margin=None, exclude_same_doc=False)
    a, _ = _mine(setup, n_queries=4, seed=1, **rules)
    b, _ = _mine(setup, n_queries=4, seed=1, **rules)
    assert a == b
    assert all(1 not in row and 0 not in row and 2 not in row for row in a)
    # query key i gives the same sample whether it is mined alone or in a block of four
    index, keys, known = setup
    pos = known.lookup(stable_keys([normalize_text("what about turbines?")], "t:"))
    alone = mine_block(index, np.array([[1.0, 0, 0]], np.float32), pos, np.array([2]), keys,
                       NegativeRules(seed=1, **rules))
    assert [int(i) for i in alone.ids[0]] == a[2]
    samples = {tuple(_mine(setup, n_queries=1, seed=s, **rules)[0][0]) for s in range(12)}
    assert len(samples) > 1  # the seed matters
    for s in samples:  # reported in score order
        scores = [CORPUS[i][2] for i in s]
        assert scores == sorted(scores, reverse=True)


def test_torch_and_faiss_select_the_same(setup) -> None:
    for rules in (dict(num_negatives=3), dict(num_negatives=5, relative_margin=None, range_min=1)):
        assert _mine(setup, "faiss", **rules) == _mine(setup, "torch", **rules)


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="range_min < range_max"):
        NegativeRules(range_min=5, range_max=5)
    with pytest.raises(ValueError, match="does not fit"):
        NegativeRules(num_negatives=10, range_min=0, range_max=5)
    with pytest.raises(ValueError, match="at least 1"):
        NegativeRules(num_negatives=0)
