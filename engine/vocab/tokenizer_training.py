"""Train a domain tokenizer (WordPiece or BPE) that keeps the base model's conventions.

The new tokenizer takes the base tokenizer's normalizer, pre-tokenizer, post-processor and decoder, and its
special tokens at the **same ids** (``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103 for
BERT), so a BERT-family model's special-token handling lines up. Only the subword vocabulary is learned from the
corpus. The result is saved as a versioned artifact: ``tokenizer-<sha12>.json`` (sha256 of its bytes).

A new vocabulary does not fit a pretrained model's embedding matrix: use it to train a model from scratch, or to
compare ratios; to adapt a pretrained model, extend its vocabulary (``embedforge.training.vocab_extension``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tokenizers import Tokenizer, pre_tokenizers, trainers

from embedforge.data.shards import atomic_write_text

Algorithm = Literal["auto", "wordpiece", "bpe"]


@dataclass(frozen=True)
class TokenizerArtifact:
    """A saved tokenizer: its file, content hash and facts for the manifest."""

    path: Path
    sha256: str
    vocab_size: int
    algorithm: str
    special_tokens: dict[str, int]

    def manifest(self) -> dict[str, Any]:
        return {"file": self.path.name, "sha256": self.sha256, "vocab_size": self.vocab_size,
                "algorithm": self.algorithm, "special_tokens": self.special_tokens}


def special_tokens(base: Tokenizer) -> dict[str, int]:
    """The base tokenizer's special tokens → ids, in id order."""
    found = {tok.content: int(i) for i, tok in base.get_added_tokens_decoder().items() if tok.special}
    return dict(sorted(found.items(), key=lambda kv: kv[1]))


def base_algorithm(base: Tokenizer) -> str:
    """``wordpiece`` or ``bpe``: the base tokenizer's model type."""
    kind = json.loads(base.to_str())["model"]["type"]
    if kind not in ("WordPiece", "BPE"):
        raise ValueError(f"base tokenizer model is {kind}; only WordPiece and BPE bases are supported "
                         "(set algorithm explicitly to train one of those)")
    return kind.lower()


def _trainer(base_json: dict[str, Any], algorithm: str, vocab_size: int, min_frequency: int,
             specials: list[str], limit_alphabet: int) -> trainers.Trainer:
    model = base_json["model"]
    byte_level = "ByteLevel" in json.dumps(base_json.get("pre_tokenizer"))
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    if algorithm == "wordpiece":
        return trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                         special_tokens=specials, limit_alphabet=limit_alphabet,
                                         initial_alphabet=alphabet,
                                         continuing_subword_prefix=model.get("continuing_subword_prefix") or "##")
    kwargs: dict[str, Any] = {}
    if model.get("type") == "BPE":
        if model.get("continuing_subword_prefix"):
            kwargs["continuing_subword_prefix"] = model["continuing_subword_prefix"]
        if model.get("end_of_word_suffix"):
            kwargs["end_of_word_suffix"] = model["end_of_word_suffix"]
    return trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                               special_tokens=specials, limit_alphabet=limit_alphabet, initial_alphabet=alphabet,
                               **kwargs)


def _empty_model(base_json: dict[str, Any], algorithm: str) -> dict[str, Any]:
    unk = base_json["model"].get("unk_token") or "[UNK]"
    if algorithm == "wordpiece":
        return {"type": "WordPiece", "unk_token": unk, "continuing_subword_prefix":
                base_json["model"].get("continuing_subword_prefix") or "##", "max_input_chars_per_word": 100,
                "vocab": {unk: 0}}
    byte_fallback = bool(base_json["model"].get("byte_fallback"))
    return {"type": "BPE", "dropout": None, "unk_token": base_json["model"].get("unk_token"),
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
            "byte_fallback": byte_fallback, "vocab": {}, "merges": []}


def align_special_ids(tokenizer_json: dict[str, Any], specials: dict[str, int]) -> dict[str, Any]:
    """Reassign ids so every special token has its base id; other tokens keep their order around them.

    Ids left over below the largest special id (BERT's ``[unused*]`` range when the corpus yields few tokens)
    get ``[unusedN]`` placeholders, so the vocabulary has no holes.
    """
    vocab: dict[str, int] = tokenizer_json["model"]["vocab"]
    ordinary = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in specials]
    by_id = {i: t for t, i in specials.items()}
    size = max(len(ordinary) + len(specials), max(specials.values(), default=-1) + 1)
    new_vocab: dict[str, int] = {}
    it: Iterator[str] = iter(ordinary)
    placeholder = 0
    for i in range(size):
        if i in by_id:
            new_vocab[by_id[i]] = i
            continue
        token = next(it, None)
        if token is None:
            token = f"[unused{placeholder}]"
            placeholder += 1
        new_vocab[token] = i
    tokenizer_json["model"]["vocab"] = new_vocab
    for added in tokenizer_json.get("added_tokens", []):
        if added["content"] in new_vocab:
            added["id"] = new_vocab[added["content"]]
    tokenizer_json["added_tokens"].sort(key=lambda a: a["id"])
    return tokenizer_json


def train_tokenizer(texts: Iterable[str], base: Tokenizer, *, algorithm: Algorithm = "auto",
                    vocab_size: int = 32_000, min_frequency: int = 2, limit_alphabet: int = 1000,
                    length: int | None = None) -> Tokenizer:
    """Learn a ``vocab_size`` vocabulary on ``texts`` with the base tokenizer's pipeline and special-token ids."""
    algo = base_algorithm(base) if algorithm == "auto" else algorithm
    base_json = json.loads(base.to_str())
    specials = special_tokens(base)
    if specials and max(specials.values()) >= vocab_size:
        name, sid = max(specials.items(), key=lambda kv: kv[1])
        raise ValueError(f"vocab_size {vocab_size} cannot keep special token {name} at its base id {sid}; "
                         f"raise vocab_size above {sid}")
    fresh = dict(base_json)
    fresh["model"] = _empty_model(base_json, algo)
    fresh["added_tokens"] = []
    fresh["truncation"] = None
    fresh["padding"] = None
    if algo == "wordpiece" and base_json["model"]["type"] != "WordPiece":
        fresh["decoder"] = {"type": "WordPiece", "prefix": "##", "cleanup": True}
    tokenizer = Tokenizer.from_str(json.dumps(fresh))
    trainer = _trainer(base_json, algo, vocab_size, min_frequency, list(specials), limit_alphabet)
    seen = 0

    def counted() -> Iterator[str]:
        nonlocal seen
        for text in texts:
            seen += 1
            yield text

    tokenizer.train_from_iterator(counted(), trainer=trainer, length=length)
    if seen == 0:
        raise ValueError("no documents to train a tokenizer on (empty corpus)")
    trained = json.loads(tokenizer.to_str())
    if len(trained["model"]["vocab"]) <= len(specials):
        raise ValueError(f"the corpus gave no vocabulary ({seen} documents): is it empty, binary, or not text?")
    trained = align_special_ids(trained, specials)
    trained["post_processor"] = base_json.get("post_processor")
    return Tokenizer.from_str(json.dumps(trained))


def save_versioned(tokenizer: Tokenizer, out_dir: str | Path, algorithm: str) -> TokenizerArtifact:
    """Save as ``tokenizer-<sha12>.json`` (sha256 of the JSON bytes) in ``out_dir``."""
    text = tokenizer.to_str(pretty=True)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path = Path(out_dir) / f"tokenizer-{sha[:12]}.json"
    atomic_write_text(path, text)
    return TokenizerArtifact(path, sha, tokenizer.get_vocab_size(with_added_tokens=True), algorithm,
                             special_tokens(tokenizer))


def save_hf_dir(tokenizer: Tokenizer, base_dir: str | Path, out_dir: str | Path) -> Path:
    """A ``transformers``-loadable tokenizer directory (tokenizer.json + the base's tokenizer/special configs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "tokenizer.json", tokenizer.to_str(pretty=True))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        src = Path(base_dir) / name
        if src.is_file():
            atomic_write_text(out_dir / name, src.read_text(encoding="utf-8"))
    return out_dir
