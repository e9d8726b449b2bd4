"""``embedforge embed`` (bulk embedding of any corpus) and ``embedforge search`` (query an exported index)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedforge.commands import fail
from embedforge.configs.embed import EmbedConfig
from embedforge.progress import console, rate_text, setup_logging


def embed(
    model: Annotated[str, typer.Option("--model", "-m", help="Model directory or packaged name (all-MiniLM-L6-v2)")],
    input: Annotated[str, typer.Option("--input", "-i", help="JSONL file, Parquet shards (e.g. a chunk stage dir) or BEIR dir")],
    output: Annotated[Path, typer.Option("--out", "-o", "--output", help="Output directory (resumed when it holds "
                                         "finished shards)")],
    dims: Annotated[str, typer.Option("--dims", "-d", help="Comma-separated Matryoshka dims, first is primary (default: full)")] = "",
    format: Annotated[str, typer.Option(help="auto, chunks, parquet, jsonl or beir")] = "auto",
    id_field: Annotated[str | None, typer.Option(help="Row id column/key (default: auto)")] = None,
    index: Annotated[str, typer.Option(help="Indexes to export: comma-separated flat,hnsw,ivfpq or 'none'")] = "flat",
    bm25: Annotated[bool, typer.Option(help="Also export a BM25 index of the passages (for search --hybrid)")] = False,
    vector_dtype: Annotated[str, typer.Option(help="float32 or float16")] = "float32",
    int8: Annotated[bool, typer.Option(help="Also write int8 + scale columns")] = False,
    binary: Annotated[bool, typer.Option(help="Also write packed binary columns")] = False,
    precision: Annotated[str, typer.Option("--dtype", "--precision", help="fp32, bf16, fp16 or auto")] = "fp32",
    backend: Annotated[str, typer.Option(help="auto, torch, onnx or onnx-int8 (lossy)")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N]")] = "auto",
    shard_rows: Annotated[int, typer.Option(help="Input rows per output shard")] = 20000,
    max_batch_tokens: Annotated[int, typer.Option(help="Token budget per model batch")] = 16384,
    cache: Annotated[bool, typer.Option(help="Use the embedding cache ($EMBEDFORGE_CACHE)")] = True,
    executor: Annotated[str, typer.Option(help="local or ray")] = "local",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Embed a corpus into Parquet embedding shards (one dataset per dim) and export FAISS indexes."""
    from embedforge import device as dev
    from embedforge.data.run_storage import MANIFEST, SUCCESS
    from embedforge.data.shards import SHARDS, ShardWriter, atomic_write_json, count_rows
    from embedforge.distributed.pool import Stalled
    from embedforge.encoding.embed_corpus import embed_corpus
    from embedforge.models import resolve_model
    from embedforge.provenance import library_versions

    setup_logging()
    dev.set_threads(threads)
    kinds = [] if index == "none" else [k.strip() for k in index.split(",") if k.strip()]
    try:
        dim_list = [int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        fail(f"--dims: expected comma-separated integers like 384,128, got '{dims}'")
    cfg = _config(model=model, input=input, format=format, id_field=id_field, dims=dim_list,
                  vector_dtype=vector_dtype, int8=int8, binary=binary, precision=precision, backend=backend,
                  shard_rows=shard_rows, max_batch_tokens=max_batch_tokens, cache=cache, executor=executor,
                  index={"kinds": kinds, "bm25": bm25} if kinds or bm25 else None)
    try:
        run = embed_corpus(cfg, str(resolve_model(model)), input, output, device=device)
    except (ValueError, FileNotFoundError, Stalled) as exc:
        fail(str(exc))
    writer = ShardWriter(output)
    manifest = {"command": "embed", "input": input, "format": run.format, **run.model,
                "config": cfg.model_dump(mode="json"), "rows_out": count_rows(output / SHARDS),
                "quarantined": writer.merge_quarantine(),
                "counts": {**writer.totals(), **{f"run_{k}": v for k, v in run.totals.items()}},
                "throughput": run.throughput, "seconds": round(run.seconds, 2), "indexes": run.indexes,
                "libraries": library_versions()}
    atomic_write_json(output / MANIFEST, manifest)
    (output / SUCCESS).write_text("ok\n")
    console.print(f"[green]embedded[/] {manifest['rows_out']} rows ({manifest['quarantined']} quarantined) → "
                  f"{output}  {rate_text(run.throughput, cached=run.totals.get('cache_hits', 0) > 0)}",
                  highlight=False)


def _config(**fields: object) -> EmbedConfig:
    """The ``embed`` stage's config from command-line options; a bad value exits 2 naming the option."""
    from pydantic import ValidationError

    try:
        return EmbedConfig(**fields)
    except ValidationError as err:
        fail("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in err.errors()))


def search(
    index: Annotated[Path, typer.Argument(help="An exported index dir, or an embed output/stage dir holding some")],
    query: Annotated[str, typer.Argument(help="Query text")],
    k: Annotated[int, typer.Option("--k", "-k", help="Results to show")] = 10,
    dim: Annotated[int | None, typer.Option("--dim", "-d", help="Pick the index of this dim")] = None,
    kind: Annotated[str | None, typer.Option(help="Pick the index of this kind (flat, hnsw, ivfpq)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=(
        "Model path: when it moved since the export, or a query/document model (train.mode: query) trained from "
        "the model that built the index"))] = None,
    hybrid: Annotated[str | None, typer.Option(
        help="Fuse with the exported BM25 index (embed --bm25 / index.bm25): zscore or rrf")] = None,
    per_doc: Annotated[bool, typer.Option(
        "--per-doc", help="One result per document: its best chunk (an index of chunks holds several per document)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines")] = False,
) -> None:
    """Search an exported index: the query is encoded with the index's model, precision and dim (with --hybrid,
    fused with BM25's results; the score is then the fused score; with --per-doc, each document scores as its best
    chunk)."""
    import json
    import sys

    from rich.table import Table

    from embedforge.encoding.encoder import get_encoder
    from embedforge.models import route_model_id, route_of
    from embedforge.search.export import find_bm25, find_indexes, hybrid_search, load_index
    from embedforge.search.passages import best_passage_rows, passages_to_fetch

    candidates = [p for p in find_indexes(index)
                  if (dim is None or json.loads((p / "meta.json").read_text())["dim"] == dim)
                  and (kind is None or json.loads((p / "meta.json").read_text())["kind"] == kind)]
    if not candidates:
        fail(f"no exported index under {index}" + (f" with dim={dim}" if dim else "") + (f" kind={kind}" if kind else ""))
    loaded = load_index(candidates[0])
    meta = loaded.meta
    model_path = model or meta["model_path"]
    if not Path(model_path).exists():
        fail(f"the index's model {model_path} is gone; pass --model with the model (id {meta['model_id']})")
    built_by = route_model_id(model_path, route_of(model_path, None))  # a Router: its document route embedded
    if built_by != meta["model_id"]:
        fail(f"model {model_path} has id {built_by} but the index was built with {meta['model_id']}")
    encoder = get_encoder(model_path, dtype=meta.get("precision", "fp32"), backend=meta.get("backend", "auto"),
                          role="query")
    owner = None
    fetch = k
    if per_doc:
        try:
            owner = loaded.documents()
        except ValueError as exc:
            fail(str(exc))
        fetch = passages_to_fetch(owner, k)
    if hybrid is None:
        scores, rows = loaded.search(encoder.encode([query], dim=meta["dim"]), fetch)
    else:
        bm25_dir = find_bm25(candidates[0])  # the BM25 index sits beside the FAISS index directories
        if hybrid not in ("zscore", "rrf"):
            fail(f"--hybrid {hybrid}: expected zscore or rrf")
        if bm25_dir is None:
            fail(f"--hybrid: no BM25 index beside {candidates[0]} (export one with embed --bm25 or index.bm25: true)")
        scores, rows = hybrid_search(loaded, bm25_dir, encoder.encode([query], dim=meta["dim"]), [query], fetch, hybrid)
    if owner is not None:  # each document at its best row: the first row of it in the ranking
        scores, rows = best_passage_rows(scores, rows, owner, k)
    ids = loaded.ids
    hits = [{"rank": r + 1, "score": round(float(s), 4), "id": ids.column("id")[int(i)].as_py(),
             "text": ids.column("text")[int(i)].as_py() if "text" in ids.column_names else None}
            for r, (s, i) in enumerate(zip(scores[0], rows[0], strict=True)) if i >= 0]
    if as_json:
        sys.stdout.write("".join(json.dumps(h, ensure_ascii=False) + "\n" for h in hits))
        return
    how = f"{meta['kind']}, d{meta['dim']}" + (f", + BM25 {hybrid}" if hybrid else "") + (", per document" if per_doc else "")
    table = Table("rank", "score", "id", "text", title=f"{candidates[0]} ({how})")
    for h in hits:
        table.add_row(str(h["rank"]), f"{h['score']:.4f}", h["id"], (h["text"] or "")[:160])
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
    app.command("search")(search)
