"""Vocabulary extension: give a pretrained model whole tokens for frequent domain terms it shreds.

The terms (e.g. ``chromatin`` → ``ch ##rom ##atin``) are added to the tokenizer as ``AddedToken(term,
single_word=True, normalized=True)``: they match only as whole words of the normalized text, so a word that
merely contains a term (``cardiomyopathies`` for ``cardiomyopathy``) tokenizes exactly as before, and any text
without the terms gets exactly the old token ids. (Inserting the terms into the WordPiece vocabulary instead would
change the greedy longest-match split of such longer words.) The embedding matrix grows by one row per term, and
each new row starts as the mean of the embeddings of the pieces the old tokenizer made of the term. Old rows are
untouched, so texts without the terms embed exactly as before (cosine 1.0).

The result is a SentenceTransformer directory (``SentenceTransformer(path)`` loads it) with ``extension.json``
listing every added term, its id and its old pieces.

>>> result = extend_model("all-MiniLM-L6-v2", ["chromatin", "apoptosis"], "out/extended")  # doctest: +SKIP
>>> result.added[0].pieces
('ch', '##rom', '##atin')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from embedforge.data.shards import atomic_write_json

EXTENSION_JSON = "extension.json"


@dataclass(frozen=True)
class AddedTerm:
    """One new token: the term, its new id, and the old pieces (tokens and ids) its embedding came from."""

    term: str
    token_id: int
    pieces: tuple[str, ...]
    piece_ids: tuple[int, ...]


@dataclass
class ExtensionResult:
    """What :func:`extend_model` did."""

    model_dir: Path
    base_vocab_size: int
    vocab_size: int
    added: list[AddedTerm]
    skipped: dict[str, str]
    """Term → why it was not added (already one token, too few pieces, duplicate)."""

    def manifest(self) -> dict[str, Any]:
        return {"model_dir": str(self.model_dir), "base_vocab_size": self.base_vocab_size,
                "vocab_size": self.vocab_size, "added": len(self.added), "skipped": len(self.skipped),
                "first_terms": [a.term for a in self.added[:20]]}


def plan_terms(tokenizer: Any, terms: Sequence[str], min_pieces: int = 3) -> tuple[list[AddedTerm], dict[str, str]]:
    """Which terms to add (with their old pieces) and which to skip, with reasons; ids are not assigned yet."""
    planned: list[AddedTerm] = []
    skipped: dict[str, str] = {}
    seen: set[str] = set()
    backend = tokenizer.backend_tokenizer
    for term in terms:
        norm = backend.normalizer.normalize_str(term) if backend.normalizer is not None else term
        if norm != term or not term or any(c.isspace() for c in term):
            skipped[term] = f"not a single normalized word (normalizes to '{norm}')"
            continue
        if term in seen:
            skipped[term] = "duplicate"
            continue
        seen.add(term)
        ids = tokenizer(term, add_special_tokens=False, truncation=False, padding=False)["input_ids"]
        if len(ids) < min_pieces:
            skipped[term] = f"only {len(ids)} piece(s), fewer than min_pieces={min_pieces}"
            continue
        planned.append(AddedTerm(term, -1, tuple(tokenizer.convert_ids_to_tokens(ids)), tuple(ids)))
    return planned, skipped


def add_terms(model: Any, terms: Sequence[str], min_pieces: int = 3) -> tuple[list[AddedTerm], dict[str, str]]:
    """Add ``terms`` to a loaded SentenceTransformer in place: tokens, embedding rows, mean-of-pieces init."""
    from tokenizers import AddedToken

    tokenizer = model.tokenizer
    planned, skipped = plan_terms(tokenizer, terms, min_pieces)
    if not planned:
        return [], skipped
    old_size = len(tokenizer)
    tokenizer.add_tokens([AddedToken(t.term, single_word=True, normalized=True, special=False) for t in planned])
    backbone = model[0].auto_model
    backbone.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weights = backbone.get_input_embeddings().weight
    added: list[AddedTerm] = []
    with torch.no_grad():
        for t in planned:
            token_id = tokenizer.convert_tokens_to_ids(t.term)
            if token_id < old_size:
                raise RuntimeError(f"term '{t.term}' got an old id {token_id}; the tokenizer did not add it")
            weights[token_id] = weights[list(t.piece_ids)].mean(dim=0)
            added.append(AddedTerm(t.term, int(token_id), t.pieces, t.piece_ids))
    return added, skipped


def extend_model(model_dir: str | Path, terms: Sequence[str], out_dir: str | Path,
                 min_pieces: int = 3) -> ExtensionResult:
    """Load the model, add ``terms``, save a SentenceTransformer directory to ``out_dir``."""
    from sentence_transformers import SentenceTransformer

    from embedforge.models import resolve_model

    source = resolve_model(str(model_dir))
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    base_size = len(model.tokenizer)
    added, skipped = add_terms(model, terms, min_pieces)
    out_dir = Path(out_dir)
    model.save(str(out_dir))
    result = ExtensionResult(out_dir, base_size, len(model.tokenizer), added, skipped)
    atomic_write_json(out_dir / EXTENSION_JSON, {
        "base_model": str(source), "base_vocab_size": base_size, "vocab_size": result.vocab_size,
        "init": "mean of the old pieces' input embeddings", "min_pieces": min_pieces,
        "added": [asdict(a) for a in added], "skipped": skipped})
    return result


def load_extension(model_dir: str | Path) -> dict[str, Any]:
    """The ``extension.json`` of an extended model directory."""
    return json.loads((Path(model_dir) / EXTENSION_JSON).read_text(encoding="utf-8"))
