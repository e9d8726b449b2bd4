"""PNG plots of evaluation rows (matplotlib, Agg backend): quality vs dimension, latency vs dimension,
quality vs index bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

_MARKERS = {"none": "o", "int8": "s", "binary": "^", "binary_rescore": "v"}


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _datasets(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["dataset"] for r in rows))


def _grid(plt: Any, n: int, title: str) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
    fig.suptitle(title)
    return fig, list(axes[0])


def _label(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels, a light grid and a small legend: every panel looks the same."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no labelled line (e.g. BM25 only): no empty legend
        ax.legend(fontsize=7)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def quality_vs_dim(rows: Sequence[dict[str, Any]], path: Path, metric: str = "ndcg_at_10") -> Path:
    """One panel per dataset: ``metric`` vs dimension, a line per model × quantization; BM25 as a dashed line."""
    plt = _pyplot()
    names = _datasets(rows)
    fig, axes = _grid(plt, len(names), f"{metric} vs Matryoshka dimension")
    for ax, ds in zip(axes, names, strict=True):
        sub = [r for r in rows if r["dataset"] == ds]
        for r in sub:
            if r["dim"] is None:
                ax.axhline(r[metric], linestyle="--", color="gray", label=f"{r['model']}")
        series = dict.fromkeys((r["model"], r["quantization"]) for r in sub if r["dim"] is not None)
        for model, quant in series:
            pts = sorted((r["dim"], r[metric]) for r in sub if r["model"] == model and r["quantization"] == quant
                         and r["dim"] is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=_MARKERS.get(quant, "o"),
                    linestyle="-" if quant == "none" else ":", label=f"{model} ({quant})")
        ax.set_xscale("log", base=2)
        dims = sorted({r["dim"] for r in sub if r["dim"] is not None})
        if dims:
            ax.set_xticks(dims, [str(d) for d in dims])
        _label(ax, ds, "dimension", metric)
    return _save(fig, path)


def latency_vs_dim(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One panel per dataset: single-query search p50 (flat per quantization, HNSW) vs dimension, per model."""
    plt = _pyplot()
    names = _datasets(rows)
    fig, axes = _grid(plt, len(names), "search latency (single query, p50) vs dimension")
    for ax, ds in zip(axes, names, strict=True):
        sub = [r for r in rows if r["dataset"] == ds and r["dim"] is not None and r.get("search_ms_p50") is not None]
        for model, quant in dict.fromkeys((r["model"], r["quantization"]) for r in sub):
            pts = sorted((r["dim"], r["search_ms_p50"]) for r in sub if r["model"] == model and r["quantization"] == quant)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=_MARKERS.get(quant, "o"),
                    label=f"{model} flat ({quant})")
            if quant == "none":
                hn = sorted((r["dim"], r["hnsw_search_ms_p50"]) for r in sub if r["model"] == model
                            and r["quantization"] == "none" and r.get("hnsw_search_ms_p50") is not None)
                if hn:
                    ax.plot([p[0] for p in hn], [p[1] for p in hn], marker="D", linestyle="--", label=f"{model} HNSW")
        for r in rows:
            if r["dataset"] == ds and r["dim"] is None and r.get("search_ms_p50") is not None:
                ax.axhline(r["search_ms_p50"], linestyle="--", color="gray", label=f"{r['model']}")
        ax.set_xscale("log", base=2)
        dims = sorted({r["dim"] for r in sub})
        if dims:
            ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_yscale("log")
        _label(ax, f"{ds} ({sub[0]['n_docs'] if sub else '?'} docs)", "dimension", "ms per query (p50)")
    return _save(fig, path)


def quality_vs_bytes(rows: Sequence[dict[str, Any]], path: Path, metric: str = "ndcg_at_10") -> Path:
    """One panel per dataset: ``metric`` vs index bytes (log), marker per quantization, labelled by dimension."""
    plt = _pyplot()
    names = _datasets(rows)
    fig, axes = _grid(plt, len(names), f"{metric} vs index size")
    for ax, ds in zip(axes, names, strict=True):
        sub = [r for r in rows if r["dataset"] == ds and r.get("index_bytes")]
        for model in dict.fromkeys(r["model"] for r in sub):
            color = None
            for quant in dict.fromkeys(r["quantization"] for r in sub if r["model"] == model):
                pts = sorted((r["index_bytes"], r[metric], r["dim"]) for r in sub
                             if r["model"] == model and r["quantization"] == quant)
                line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=_MARKERS.get(quant, "o"),
                               linestyle=":", color=color, label=f"{model} ({quant})")
                color = line[0].get_color()
                for b, v, d in pts:
                    if d is not None:
                        ax.annotate(str(d), (b, v), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        _label(ax, ds, "index bytes", metric)
    return _save(fig, path)
