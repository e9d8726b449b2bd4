"""``embedforge vocab analyze|train|extend``: the vocabulary tools on any corpus, outside a job.

The corpus (``--corpus``) is anything ``ingest`` reads: a JSONL or Parquet file, a BEIR directory, a folder of
.txt/.md/.html files, or ``builtin:adi``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedforge.commands import add_group, fail
from embedforge.configs.vocab import DEFAULT_THRESHOLD

Model = Annotated[str, typer.Option("--model", "-m", help="Base model: packaged name or model directory")]
Corpus = Annotated[str, typer.Option("--corpus", "-c", help="JSONL / Parquet file, BEIR dir, folder, or builtin:NAME")]
Format = Annotated[str, typer.Option("--format", help="Corpus format: auto, jsonl, parquet, beir, folder")]
TextField = Annotated[str, typer.Option(help="Text field of JSONL/Parquet rows")]


def analyze(model: Model = "all-MiniLM-L6-v2", corpus: Corpus = "builtin:adi",
            tokenizer: Annotated[list[str] | None, typer.Option(
                "--tokenizer", help="Another tokenizer to compare (model name/dir or tokenizer.json); repeatable")] = None,
            out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the report, histogram and stats")] = Path("vocab-report"),
            threshold: Annotated[float, typer.Option(help="Ratio above which extension is advised")] = DEFAULT_THRESHOLD,
            top_terms: Annotated[int, typer.Option(help="Fragmented terms listed")] = 50,
            min_pieces: Annotated[int, typer.Option(help="Pieces that make a term fragmented")] = 3,
            fmt: Format = "auto", text_field: TextField = "text") -> None:
    """Token-to-word ratio, [UNK] rate and most fragmented terms of a corpus, for one or more tokenizers."""
    from rich.table import Table

    from embedforge.progress import console
    from embedforge.vocab.analysis import analyze as run_analysis
    from embedforge.vocab.analysis import load_tokenizer
    from embedforge.vocab.corpus import CorpusError, SourceReader
    from embedforge.vocab.report import REPORT_MD, write_report

    try:
        views = [load_tokenizer(model, name=model)] + [load_tokenizer(t, name=t) for t in tokenizer or []]
        reader = SourceReader(corpus, fmt, text_field)
        analysis = run_analysis(reader.batches(), views)
    except (CorpusError, FileNotFoundError, ValueError) as exc:
        fail(str(exc), 1)
    summary = write_report(analysis, out, threshold=threshold, min_pieces=min_pieces, top_terms=top_terms,
                           source=corpus, bad_rows=reader.bad_rows)
    table = Table("tokenizer", "vocab", "ratio", "all-token ratio", "[UNK] rate", "per-doc p50")
    for s in summary["tokenizers"]:
        table.add_row(s["name"], f"{s['vocab_size']:,}", f"{s['ratio']:.3f}", f"{s['all_token_ratio']:.3f}",
                      f"{s['unk_rate']:.4%}", f"{s['doc_ratio_p50']:.3f}")
    console.print(table)
    decision = summary["decision"]
    console.print(f"decision: {'EXTEND the vocabulary' if decision['extend'] else 'keep the tokenizer'} "
                  f"({decision['reason']}); {analysis.documents} documents, {reader.bad_rows} unusable rows",
                  highlight=False)
    console.print(f"report: {out / REPORT_MD}", highlight=False)


def train(out: Annotated[Path, typer.Option("--out", "-o", help="Directory for tokenizer-<sha12>.json and tokenizer/")],
          model: Model = "all-MiniLM-L6-v2", corpus: Corpus = "builtin:adi",
          algorithm: Annotated[str, typer.Option(help="auto (the base's type), wordpiece or bpe")] = "auto",
          vocab_size: Annotated[int, typer.Option(help="Target vocabulary size")] = 32_000,
          min_frequency: Annotated[int, typer.Option(help="Least occurrences of a learned subword")] = 2,
          fmt: Format = "auto", text_field: TextField = "text") -> None:
    """Train a domain tokenizer with the base tokenizer's normalizer, pre-tokenizer and special-token ids."""
    from embedforge.models import resolve_model
    from embedforge.progress import console
    from embedforge.vocab.analysis import load_tokenizer
    from embedforge.vocab.corpus import CorpusError, SourceReader
    from embedforge.vocab.tokenizer_training import (
        base_algorithm,
        save_hf_dir,
        save_versioned,
        train_tokenizer,
    )

    try:
        base = load_tokenizer(model)
        reader = SourceReader(corpus, fmt, text_field)
        texts = (text for batch in reader.batches() for text in batch)
        tokenizer = train_tokenizer(texts, base.tokenizer, algorithm=algorithm,  # type: ignore[arg-type]
                                    vocab_size=vocab_size, min_frequency=min_frequency)
    except (CorpusError, FileNotFoundError, ValueError) as exc:
        fail(str(exc), 1)
    algo = base_algorithm(base.tokenizer) if algorithm == "auto" else algorithm
    artifact = save_versioned(tokenizer, out, algo)
    save_hf_dir(tokenizer, resolve_model(model), out / "tokenizer")
    console.print(f"{artifact.path} ({algo}, {artifact.vocab_size:,} tokens, sha256 {artifact.sha256[:12]}); "
                  f"special tokens {artifact.special_tokens}", highlight=False)


def extend(out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the extended SentenceTransformer model")],
           model: Model = "all-MiniLM-L6-v2", corpus: Corpus = "builtin:adi",
           top_n: Annotated[int, typer.Option(help="Most frequent fragmented terms to add")] = 500,
           min_pieces: Annotated[int, typer.Option(help="Least pieces of an added term")] = 3,
           min_frequency: Annotated[int, typer.Option(help="Least occurrences of an added term")] = 5,
           fmt: Format = "auto", text_field: TextField = "text") -> None:
    """Add the corpus's most frequent shredded terms to the model as whole tokens (mean-of-pieces init)."""
    from embedforge.progress import console
    from embedforge.training.vocab_extension import extend_model
    from embedforge.vocab.analysis import analyze as run_analysis
    from embedforge.vocab.analysis import load_tokenizer
    from embedforge.vocab.corpus import CorpusError, SourceReader

    try:
        analysis = run_analysis(SourceReader(corpus, fmt, text_field).batches(), [load_tokenizer(model)])
    except (CorpusError, FileNotFoundError, ValueError) as exc:
        fail(str(exc), 1)
    terms = analysis.fragmented_terms(min_pieces=min_pieces, top=top_n, min_frequency=min_frequency)
    if not terms:
        fail(f"no term of {corpus} occurs ≥ {min_frequency} times and splits into ≥ {min_pieces} pieces", 1)
    result = extend_model(model, [t.term for t in terms], out, min_pieces=min_pieces)
    console.print(f"{out}: added {len(result.added)} tokens (vocab {result.base_vocab_size:,} → "
                  f"{result.vocab_size:,}), e.g. {', '.join(a.term for a in result.added[:8])}", highlight=False)


def register(app: typer.Typer) -> None:
    add_group(app, "vocab", "Vocabulary: analyze a corpus's tokenization, train a tokenizer, extend a model's "
              "vocabulary.", {"analyze": analyze, "train": train, "extend": extend})
