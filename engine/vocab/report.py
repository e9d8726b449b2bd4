"""Vocabulary analysis outputs: Markdown report, PNG histogram of per-document ratios, JSON stats, TSV of terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedforge.data.shards import atomic_write_bytes, atomic_write_json, atomic_write_text
from embedforge.vocab.analysis import FragmentedTerm, VocabAnalysis

REPORT_MD = "vocab_report.md"
HISTOGRAM_PNG = "vocab_ratio_hist.png"
STATS_JSON = "vocab_stats.json"
TERMS_TSV = "fragmented_terms.tsv"


def write_histogram(analysis: VocabAnalysis, threshold: float, path: Path) -> None:
    """Overlaid histograms of the per-document token-to-word ratio, one per tokenizer, with the threshold."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    every = [r for s in analysis.tokenizers for r in s.doc_ratios]
    lo, hi = min(every + [1.0]), max(every + [threshold * 1.1])
    for stats in analysis.tokenizers:
        ax.hist(stats.doc_ratios, bins=50, range=(lo, hi), alpha=0.55,
                label=f"{stats.name} (corpus {stats.ratio:.3f})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xlabel("tokens per word (per document)")
    ax.set_ylabel("documents")
    ax.set_title("Token-to-word ratio per document")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def markdown(analysis: VocabAnalysis, decision: dict[str, Any], terms: list[FragmentedTerm],
             source: str, bad_rows: int = 0) -> str:
    """The human report: per-tokenizer table, the decision, and the most fragmented frequent terms."""
    lines = [f"# Vocabulary analysis: {source}", "",
             f"{analysis.documents} documents ({analysis.documents_without_words} without words"
             f"{f', {bad_rows} unusable rows' if bad_rows else ''}), {analysis.words:,} words, "
             f"{len(analysis.term_counts):,} distinct terms.", "",
             "A word is a maximal run of letters and digits; the ratio is the tokenizer's tokens for those words "
             "over the number of words (special tokens excluded). The all-token ratio also counts punctuation "
             "tokens.", "",
             "| tokenizer | vocab | ratio | all-token ratio | [UNK] rate | per-doc p5 | p50 | p95 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in (t.summary() for t in analysis.tokenizers):
        lines.append(f"| {s['name']} | {s['vocab_size']:,} | {s['ratio']:.3f} | {s['all_token_ratio']:.3f} | "
                     f"{s['unk_rate']:.4%} | {s['doc_ratio_p5']:.3f} | {s['doc_ratio_p50']:.3f} | "
                     f"{s['doc_ratio_p95']:.3f} |")
    verdict = "extend the vocabulary" if decision["extend"] else "keep the base tokenizer"
    lines += ["", f"**Decision:** {verdict} — base {decision['reason']}.", "",
              f"![per-document ratio]({HISTOGRAM_PNG})", "",
              f"## Most fragmented frequent terms (base tokenizer, top {len(terms)})", "",
              "| term | frequency | pieces | split |", "|---|---:|---:|---|"]
    for t in terms:
        lines.append(f"| {t.term} | {t.frequency:,} | {len(t.pieces)} | {' '.join(t.pieces)} |")
    return "\n".join(lines) + "\n"


def write_report(analysis: VocabAnalysis, out_dir: str | Path, *, threshold: float, min_pieces: int = 3,
                 top_terms: int = 50, min_chars: int = 4, source: str = "corpus",
                 bad_rows: int = 0) -> dict[str, Any]:
    """Write report, histogram, stats and terms to ``out_dir``; returns the summary for a manifest."""
    out_dir = Path(out_dir)
    decision = analysis.decision(threshold)
    terms = analysis.fragmented_terms(min_pieces=min_pieces, top=top_terms, min_chars=min_chars)
    summary = {"documents": analysis.documents, "documents_without_words": analysis.documents_without_words,
               "bad_rows": bad_rows, "words": analysis.words, "distinct_terms": len(analysis.term_counts),
               "tokenizers": [t.summary() for t in analysis.tokenizers], "decision": decision,
               "fragmented_terms": [{"term": t.term, "frequency": t.frequency, "pieces": list(t.pieces)}
                                    for t in terms]}
    atomic_write_json(out_dir / STATS_JSON, summary)
    atomic_write_text(out_dir / TERMS_TSV, "term\tfrequency\tpieces\n" + "".join(
        f"{t.term}\t{t.frequency}\t{' '.join(t.pieces)}\n" for t in terms))
    atomic_write_text(out_dir / REPORT_MD, markdown(analysis, decision, terms, source, bad_rows))
    write_histogram(analysis, threshold, out_dir / HISTOGRAM_PNG)
    return summary
