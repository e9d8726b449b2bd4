"""Hard-negative selection rules, vectorized over a block of queries.

For each query, candidates come from :meth:`SearchIndex.search` in exact order (score desc, corpus row asc).
The rules, in the order they are applied (each removed candidate is counted under the first rule that removed
it, so the manifest can say what share each rule took):

1. ``known_positive``: every known positive of the query (all chunks paired with the same query text or query id)
   is taken out *before* ranks are counted, so rank 0 is the best non-positive chunk;
2. rank window: only non-positive ranks ``range_min <= rank < range_max`` are candidates;
3. ``same_doc``: chunks of the same document as a known positive (``exclude_same_doc``);
4. ``equal_to_positive``: chunks whose normalized text equals a known positive's (``exclude_equal_text``);
5. ``duplicate_text``: a chunk whose normalized text equals a better-ranked surviving candidate's;
6. optional cross-encoder rescoring of the survivors and the positives (``rescorer``);
7. ``absolute_margin``: removed when ``score + absolute_margin > positive``;
8. ``relative_margin``: removed when ``score > positive - |positive| * relative_margin`` (0.05 → a negative must
   score below 95% of a positive score; NV-Retriever's TopK-PercPos);
9. ``max_score`` / ``min_score``;
10. sampling: ``top`` keeps the best ``num_negatives`` survivors, ``random`` a seeded sample of them (the same for a
    query whatever the block it is in), reported in score order.

"positive" in 7–8 is the *lowest* score among the query's known positives (the safe side, as in
sentence-transformers' ``mine_hard_negatives``), unless the caller names the positive a row is trained on
(``margin_to``: a judged query with many relevant documents gets one row per document).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from embedforge.search.index import SearchIndex, pair_scores

RULES = ("same_doc", "equal_to_positive", "duplicate_text", "absolute_margin", "relative_margin", "max_score",
         "min_score")
"""Rules that remove window candidates, in the order they are applied."""

Rescorer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(candidate ids (q, m), positive ids (q, p)) → (candidate scores, positive scores)``; ids < 0 are unused."""


@dataclass(frozen=True)
class NegativeRules:
    """The selection settings (see the module docstring for their meaning and order)."""

    num_negatives: int = 5
    range_min: int = 0
    range_max: int = 50
    sampling: Literal["top", "random"] = "top"
    relative_margin: float | None = 0.05
    absolute_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    exclude_same_doc: bool = True
    exclude_equal_text: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {self.num_negatives}")
        if not 0 <= self.range_min < self.range_max:
            raise ValueError(f"need 0 <= range_min < range_max, got {self.range_min} and {self.range_max}")
        if self.num_negatives > self.range_max - self.range_min:
            raise ValueError(f"num_negatives ({self.num_negatives}) does not fit in the rank window "
                             f"[{self.range_min}, {self.range_max})")


@dataclass
class CorpusKeys:
    """Per corpus row: a document code and a hash of the normalized text (for the same-doc and text rules)."""

    doc_codes: np.ndarray
    text_hashes: np.ndarray


@dataclass
class Selection:
    """Chosen negatives of a block of queries, padded with id ``-1`` / score ``nan``, and the rule counters."""

    ids: np.ndarray
    scores: np.ndarray
    pos_scores: np.ndarray
    """Score of each query's known positives ``(q, p)`` (``nan`` padding); after rescoring when a rescorer ran."""
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_kept(self) -> np.ndarray:
        return (self.ids >= 0).sum(axis=1)


def mine_block(index: SearchIndex, query_vectors: np.ndarray, positive_ids: np.ndarray, query_keys: np.ndarray,
               keys: CorpusKeys, rules: NegativeRules, rescorer: Rescorer | None = None,
               margin_to: np.ndarray | None = None) -> Selection:
    """Search one block of queries and select their negatives.

    ``positive_ids`` ``(q, p)``: corpus rows of every known positive per query (-1 padding, at least one each);
    ``query_keys`` int64 ``(q,)``: a stable per-query key that seeds ``random`` sampling; ``margin_to`` ``(q,)``:
    the column of ``positive_ids`` whose score the margins are measured against (default: the lowest-scoring
    positive; a training row built on one of a query's several positives measures against that one).
    """
    k = rules.range_max + positive_ids.shape[1]
    cand_scores, cand_ids = index.search(query_vectors, k)
    pos_scores = pair_scores(query_vectors, index.corpus, positive_ids)
    return select_negatives(cand_ids, cand_scores, positive_ids, pos_scores, query_keys, keys, rules, rescorer,
                            margin_to)


def select_negatives(cand_ids: np.ndarray, cand_scores: np.ndarray, positive_ids: np.ndarray,
                     pos_scores: np.ndarray, query_keys: np.ndarray, keys: CorpusKeys, rules: NegativeRules,
                     rescorer: Rescorer | None = None, margin_to: np.ndarray | None = None) -> Selection:
    """Apply the rules to ranked candidates ``(q, m)`` (best first) and pick up to ``num_negatives`` per query
    (``margin_to``: see :func:`mine_block`)."""
    valid = cand_ids >= 0
    is_pos = _row_isin(cand_ids, positive_ids) & valid
    rank = np.cumsum(valid & ~is_pos, axis=1) - 1
    alive = valid & ~is_pos & (rank >= rules.range_min) & (rank < rules.range_max)
    counts = {"known_positive_in_results": int(is_pos.sum()), "candidates": int(alive.sum())}
    safe = np.where(valid, cand_ids, 0)
    safe_pos = np.maximum(positive_ids, 0)

    def drop(rule: str, hit: np.ndarray) -> None:
        hit = hit & alive
        counts[rule] = int(hit.sum())
        alive[hit] = False

    if rules.exclude_same_doc:
        pos_docs = np.where(positive_ids >= 0, keys.doc_codes[safe_pos], np.iinfo(np.int64).min)
        drop("same_doc", _row_isin(keys.doc_codes[safe], pos_docs))
    if rules.exclude_equal_text:
        cand_hash = keys.text_hashes[safe]
        pos_hash = np.where(positive_ids >= 0, keys.text_hashes[safe_pos], np.iinfo(np.int64).min)
        drop("equal_to_positive", _row_isin(cand_hash, pos_hash))
        drop("duplicate_text", _later_duplicates(cand_hash, alive))
    scores = cand_scores.astype(np.float32, copy=True)
    if rescorer is not None:
        scores, pos_scores = rescorer(np.where(alive, cand_ids, -1), positive_ids)
    pos_scores = np.where(positive_ids >= 0, pos_scores, np.nan).astype(np.float32)
    if margin_to is None:
        reference = np.nanmin(np.where(positive_ids >= 0, pos_scores, np.inf), axis=1)[:, None]
    else:
        reference = pos_scores[np.arange(len(pos_scores)), margin_to][:, None]
    if rules.absolute_margin is not None:
        drop("absolute_margin", scores + rules.absolute_margin > reference)
    if rules.relative_margin is not None:
        drop("relative_margin", scores > reference - np.abs(reference) * rules.relative_margin)
    if rules.max_score is not None:
        drop("max_score", scores > rules.max_score)
    if rules.min_score is not None:
        drop("min_score", scores < rules.min_score)
    counts["eligible"] = int(alive.sum())
    ids, chosen = _sample(cand_ids, scores, alive, query_keys, rules)
    counts["kept"] = int((ids >= 0).sum())
    counts["not_sampled"] = counts["eligible"] - counts["kept"]
    return Selection(ids, chosen, pos_scores, counts)


def _sample(cand_ids: np.ndarray, scores: np.ndarray, alive: np.ndarray, query_keys: np.ndarray,
            rules: NegativeRules) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``num_negatives`` alive candidates per row (top or seeded random), returned in score order."""
    n = min(rules.num_negatives, cand_ids.shape[1])
    if rules.sampling == "top":
        key = np.where(alive, -scores.astype(np.float64), np.inf)
    else:
        key = np.where(alive, random_keys(query_keys, cand_ids, rules.seed).astype(np.float64), np.inf)
    pick = np.argsort(key, axis=1, kind="stable")[:, :n]
    picked_alive = np.take_along_axis(alive, pick, axis=1)
    # report in score order (stable: ties keep rank order)
    pick_scores = np.where(picked_alive, np.take_along_axis(scores, pick, axis=1), -np.inf)
    order = np.argsort(-pick_scores.astype(np.float64), axis=1, kind="stable")
    pick = np.take_along_axis(pick, order, axis=1)
    picked_alive = np.take_along_axis(picked_alive, order, axis=1)
    ids = np.where(picked_alive, np.take_along_axis(cand_ids, pick, axis=1), -1)
    chosen = np.where(picked_alive, np.take_along_axis(scores, pick, axis=1), np.nan).astype(np.float32)
    if n < rules.num_negatives:  # corpus smaller than the request: pad to a fixed width
        pad = rules.num_negatives - n
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        chosen = np.pad(chosen, ((0, 0), (0, pad)), constant_values=np.nan)
    return ids, chosen


def random_keys(query_keys: np.ndarray, cand_ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per (query, candidate) pair (splitmix64): independent of block layout."""
    with np.errstate(over="ignore"):
        z = (query_keys.astype(np.uint64)[:, None] ^ (cand_ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
             ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) >> np.uint64(11)  # 53 bits: exact as float64


def _row_isin(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``out[i, j] = values[i, j] in targets[i]`` (targets padded with values that never occur)."""
    hit = np.zeros(values.shape, dtype=bool)
    for j in range(targets.shape[1]):
        hit |= values == targets[:, j:j + 1]
    return hit


def _later_duplicates(values: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """True where an alive entry repeats the value of an earlier alive entry of the same row."""
    q, m = values.shape
    if m < 2:
        return np.zeros(values.shape, dtype=bool)
    order = np.lexsort((np.broadcast_to(np.arange(m), (q, m)), values, ~alive), axis=1)
    v = np.take_along_axis(values, order, axis=1)
    a = np.take_along_axis(alive, order, axis=1)
    dup_sorted = np.zeros((q, m), dtype=bool)
    dup_sorted[:, 1:] = (v[:, 1:] == v[:, :-1]) & a[:, 1:] & a[:, :-1]
    out = np.zeros((q, m), dtype=bool)
    np.put_along_axis(out, order, dup_sorted, axis=1)
    return out
