"""``embedforge datasets get|list|export|split``: evaluation datasets in the local cache, named ``beir:NAME`` in
jobs; ``export`` writes a job's synthetic queries and chunks as a BEIR directory (BEIR out as well as in);
``split`` divides one set of judged queries into a development and a held-out part.

``get NAME`` downloads BEIR's archive (checked against its published sha256 and md5); ``get NAME --from PATH``
copies a local BEIR directory instead (offline). Either way the copy is checked against the dataset's known
document, query and judgement counts before a job may use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedforge.commands import add_group


def get(name: Annotated[str, typer.Argument(help="Dataset name (scifact, nfcorpus, fiqa, cranfield) or beir:NAME")],
        from_path: Annotated[Path | None, typer.Option("--from", help="Copy this local BEIR directory instead of "
                                                        "downloading")] = None,
        force: Annotated[bool, typer.Option("--force", "-f", help="Fetch again even when present")] = False) -> None:
    """Fetch a dataset into the cache ($EMBEDFORGE_DATASETS) and check it; jobs then name it beir:NAME."""
    from embedforge.cli import fail
    from embedforge.data.datasets import DatasetError
    from embedforge.data.datasets import get as get_dataset
    from embedforge.progress import console

    try:
        target = get_dataset(name, from_path, force=force)
    except DatasetError as exc:
        fail(str(exc))
    from embedforge.data.datasets import count

    counts = count(target)
    console.print(f"{target}: {counts['docs']:,} documents, {counts['test_queries']} judged test queries, "
                  f"{counts['test_judgements']:,} judgements — use it as beir:{target.name}", highlight=False, soft_wrap=True)


def list_datasets() -> None:
    """Datasets in the cache and the ones ``get`` can download."""
    from rich.table import Table

    from embedforge.data.datasets import KNOWN, cache_root, present
    from embedforge.progress import console

    here = {d["name"]: d for d in present()}
    table = Table("name", "state", "docs", "judged queries", "source")
    for name in sorted(set(KNOWN) | set(here)):
        d = here.get(name)
        known = KNOWN.get(name)
        state = "present" if d else ("downloadable" if known and known.url else "--from PATH only")
        docs = d["docs"] if d else (known.docs if known else "")
        queries = d["test_queries"] if d else (known.test_queries if known else "")
        table.add_row(name, state, f"{docs:,}" if docs != "" else "", str(queries),
                      d["source"] if d else (known.url or "") if known else "")
    console.print(f"cache: {cache_root()}", highlight=False, soft_wrap=True)
    console.print(table)


def export(chunks: Annotated[Path, typer.Option("--chunks", help="A chunk stage's output directory")],
           queries: Annotated[Path, typer.Option("--queries", help="A generate stage's output directory")],
           out: Annotated[Path, typer.Option("--out", "-o", help="BEIR directory to write")],
           split: Annotated[str, typer.Option(help="Which generated queries: val (held out) or train")] = "val") -> None:
    """Write a job's synthetic queries and its chunks as a BEIR directory (qrels: each query's source chunk)."""
    from embedforge.cli import fail
    from embedforge.data.datasets import write_beir
    from embedforge.evaluation.heldout import heldout_dataset
    from embedforge.progress import console

    try:
        dataset, counts = heldout_dataset(chunks, queries, split=split, name=out.name)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        fail(f"cannot read the stage outputs: {exc}")
    if not dataset.query_ids:
        fail(f"{queries}: no usable '{split}' queries ({counts})")
    write_beir(dataset, out)
    console.print(f"{out}: {len(dataset.corpus_ids):,} passages, {len(dataset.query_ids):,} {split} queries "
                  "(BEIR layout; evaluate it with --dataset)", highlight=False, soft_wrap=True)


def split(dataset: Annotated[str, typer.Argument(help="A BEIR directory or beir:NAME")],
          qrels: Annotated[str, typer.Option("--split", help="The qrels split to divide (qrels/<split>.tsv)")] = "test",
          dev_share: Annotated[float, typer.Option("--dev-share", help="Share of the judged queries for development")]
          = 0.5,
          seed: Annotated[int, typer.Option(help="Seed of the division")] = 0) -> None:
    """Divide one set of judged queries into a development part (chooses the checkpoint) and a held-out part
    (measures the result): qrels/<split>-dev.tsv and qrels/<split>-heldout.tsv."""
    from embedforge.cli import fail
    from embedforge.data.beir import BeirFormatError, split_judged
    from embedforge.progress import console

    try:
        out = split_judged(dataset, qrels, dev_share, seed)
    except (BeirFormatError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(f"{dataset}: {out['dev_queries']} judged queries in qrels/{out['dev_split']}.tsv, "
                  f"{out['heldout_queries']} in qrels/{out['heldout_split']}.tsv — in a job: train.judged_queries: "
                  f"{dataset}, train.judged_split: {out['dev_split']}, evaluate.split: {out['heldout_split']}",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    add_group(app, "datasets", "Evaluation datasets: fetch BEIR datasets into the local cache (jobs name them "
              "beir:NAME).", {"get": get, "list": list_datasets, "export": export,
                                                        "split": split})
