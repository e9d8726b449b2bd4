"""``embedforge init --corpus PATH [--eval BEIR_DIR [--dev-share 0.5]]``: a commented job spec sized to the corpus
and this machine.

It reads the corpus once (documents, characters), looks at the machine (CUDA and its memory, CPU cores, RAM)
and the base model (dimension), then writes a job file whose numbers follow from those: which query kinds (LLM
queries only with a GPU), batch size and steps of training, Matryoshka dimensions, which index kinds. With
``--dev-share`` part of the ``--eval`` judged queries chooses the checkpoint and the rest measures the result; with
``--train-share`` as well, that share of the dev part trains the query encoder beside the synthetic queries
(``train.mode: query``, docs/adaptation.md) and the rest of it chooses the checkpoint. Each sized value carries a
comment saying why. The file is validated before it is written.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

CHARS_PER_TOKEN = 4.0
"""Rough characters per WordPiece token of English text (for estimating chunk counts before tokenizing)."""
CPU_QUERY_KINDS = ["ict", "keyword"]
"""What a CPU-only job trains on: inverse-cloze and keyword queries. In the query-kind study (docs/adaptation.md)
``ict`` + ``keyword`` beat ``ict`` alone on both development sets, and SmolLM2's queries (the generator a CPU can
run) trained worse than keyword queries, at 25 of the SciFact job's 37 generate minutes."""
TRAIN_SHARE_HINT = 100
"""Dev queries from which ``init`` suggests ``--train-share`` (SciFact's 566 training claims lifted the test
claims; Cranfield's 78 and ADI's 13 did not significantly)."""
QUERY_SIDE_STEPS = 400
"""Steps of a query-side job (``--train-share``): chosen on the SciFact train claims (jobs/scifact_query.yaml kept
step 350 of 400); a step encodes one batch of short queries, so the count does not grow with the corpus."""


@dataclass
class Machine:
    """What the job will run on."""

    cuda: bool
    gpu_gb: float
    cores: int
    ram_gb: float

    @classmethod
    def here(cls) -> Machine:
        from embedforge.device import cuda_available, gpu_memory_bytes

        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return cls(cuda_available(), gpu_memory_bytes() / 2**30, cores, ram / 2**30)

    def describe(self) -> str:
        gpu = f"CUDA GPU with {self.gpu_gb:.0f} GiB" if self.cuda else "no GPU"
        return f"{gpu}, {self.cores} CPU cores, {self.ram_gb:.0f} GiB RAM"


@dataclass
class CorpusStats:
    """Documents and characters of the corpus, as ingest reads it."""

    docs: int
    chars: int
    bad_rows: int

    def chunks(self, max_tokens: int) -> int:
        per_doc = self.chars / max(self.docs, 1) / CHARS_PER_TOKEN
        return max(self.docs, int(self.docs * math.ceil(per_doc / max_tokens)))


def corpus_stats(path: str) -> CorpusStats:
    """Read the corpus through ingest's readers (same formats, same errors)."""
    from embedforge.configs.ingest import SourceConfig
    from embedforge.data.ingest import BadRow, iter_source

    docs = chars = bad = 0
    for item in iter_source(SourceConfig(path=path)):
        if isinstance(item, BadRow):
            bad += 1
            continue
        docs += 1
        chars += len(item.title) + len(item.text)
    if docs == 0:
        raise ValueError(f"{path}: no usable documents ({bad} unusable rows)")
    return CorpusStats(docs, chars, bad)


def model_dim(base_model: str) -> int:
    """Output dimension of a sentence-transformers model directory (from its config files, without loading it)."""
    from embedforge.models import resolve_model

    root = resolve_model(base_model)
    for pooling in sorted(root.glob("*Pooling/config.json")):
        return int(json.loads(pooling.read_text())["word_embedding_dimension"])
    return int(json.loads((root / "config.json").read_text())["hidden_size"])


def _yaml(value: object) -> str:
    return json.dumps(value)


def _kv(indent: int, key: str, value: object, comment: str = "") -> str:
    """``    key: value        # comment`` with the comments in one column."""
    text = f"{' ' * indent}{key}: {value}"
    return f"{text}{' ' * max(1, 32 - len(text))}# {comment}" if comment else text


def render(corpus: str, eval_dir: str | None, name: str, base_model: str, stats: CorpusStats, machine: Machine,
           dim: int, out: str = "job.yaml", dev_split: str | None = None, heldout_split: str | None = None,
           train_split: str | None = None) -> str:
    """The job file's text, every sized value with the reason next to it. ``dev_split``/``heldout_split``: qrels
    splits of ``eval_dir`` that choose the checkpoint (``validation: judged``) and measure the result;
    ``train_split``: judged queries to train on, which makes it a query-side job (``train.mode: query``)."""
    max_tokens = 256
    chunks = stats.chunks(max_tokens)
    llm = machine.cuda  # an LLM's queries pay only with a GPU's generator (CPU_QUERY_KINDS)
    rows = int(chunks * (6 if llm else len(CPU_QUERY_KINDS)))  # 3 LLM + title, ICT, keyword; or ICT + keyword
    batch = (128 if machine.gpu_gb >= 40 else 64) if machine.cuda else 32
    steps = max(10, math.ceil(rows / batch))
    cpu_steps = 60 * max(machine.cores, 1)  # ~1 step per 2 s per core pair on MiniLM-sized models: ~1 hour
    max_steps = None if machine.cuda or steps <= cpu_steps else cpu_steps
    dims = [d for d in (dim, dim // 2, dim // 4, dim // 8) if d >= 32]
    kinds = ["flat", "hnsw"] if stats.docs < 2_000_000 else ["hnsw"]
    lines = [
        f"# embedforge run {out}",
        f"# Written by `embedforge init` for {stats.docs:,} documents (~{chunks:,} chunks of {max_tokens} tokens) on",
        f"# this machine: {machine.describe()}. Every setting: embedforge validate {out} --explain",
        "# Editor completion: embedforge schema -o embedforge.schema.json, then keep the next line",
        "# yaml-language-server: $schema=embedforge.schema.json",
        _kv(0, "name", name),
        _kv(0, "base_model", base_model, "a packaged name, a Hugging Face id or a local model directory"),
        "stages:",
        "  ingest:",
        "    sources:",
        _kv(6, "- path", _yaml(corpus)),
        "  chunk:",
        _kv(4, "max_tokens", max_tokens, "what the model sees at search time"),
        "  generate:",
        *([_kv(4, "backend", "vllm", "vLLM on the GPU"),
           _kv(4, "sources", "[llm, title, ict, keyword]", "LLM-written, title, inverse-cloze and keyword queries"),
           "    # prompt: |-                # say what your users' queries look like (docs/generate.md); the default",
           "    #                           # asks for a question, a keyword query and a paraphrase of one claim"]
          if llm else
          [_kv(4, "sources", "[title, ict, keyword]", "no LLM on a CPU: its small generator's queries trained"),
           "    #                           # worse than keyword queries (docs/adaptation.md); on a GPU node add",
           "    #                           # llm (backend: vllm) with a large instruct model"]),
        "  mine:",
        _kv(4, "num_negatives", 1, "hard negatives per query, from the base model's ranking"),
        "  train:",
        *([_kv(4, "mode", "query", "only the query encoder trains; documents keep the base model's vectors")]
          if train_split else []),
        _kv(4, "batch_size", batch, "in-batch negatives: larger is better while it fits"
            + (f" ({machine.gpu_gb:.0f} GiB GPU)" if machine.cuda else " (CPU)")),
        _kv(4, "max_steps", QUERY_SIDE_STEPS, "SciFact train claims: step 350 of 400 kept") if train_split else
        _kv(4, "max_steps", max_steps, f"~{rows:,} training queries; about an hour on {machine.cores} cores")
        if max_steps is not None else _kv(4, "epochs", 1, f"one pass over ~{rows:,} training queries"),
        _kv(4, "matryoshka_dims", _yaml(dims), f"the model's {dim} dimensions and truncations of them"),
        *([] if llm else [_kv(4, "query_kinds", _yaml(CPU_QUERY_KINDS), "titles only validate")]),
    ]
    if train_split:
        lines += [
            _kv(4, "judged_queries", _yaml(eval_dir), "real queries with judgements (embedforge datasets split)"),
            _kv(4, "judged_split", dev_split, "these choose the checkpoint"),
            _kv(4, "judged_train_split", train_split, "these train, beside the synthetic queries"),
            _kv(4, "judged_train_repeat", "balance", "about as many judged rows as synthetic ones"),
            _kv(4, "max_negatives", 0, "every document of the corpus is a negative"),
            _kv(4, "validation", "judged", "the guard and the best-checkpoint choice use them"),
            _kv(4, "eval_steps", 50),
            _kv(4, "early_stopping_patience", 3, "end the run 3 validations after its best checkpoint"),
            _kv(4, "stop_behind_start", 3, "or after 3 validations in a row below the base model"),
        ]
    elif dev_split:
        every = max(10, (max_steps or steps) // 6)
        lines += [
            _kv(4, "judged_queries", _yaml(eval_dir), f"its qrels/{dev_split}.tsv: real queries choose the checkpoint"),
            _kv(4, "judged_split", dev_split, "(embedforge datasets split; evaluate reads the others)"),
            _kv(4, "validation", "judged", "the guard and the best-checkpoint choice use them"),
            _kv(4, "eval_steps", every, "a validation every ~1/6 of the run"),
            _kv(4, "early_stopping_patience", 2, "end the run 2 validations after its best checkpoint"),
        ]
    lines.append("  evaluate:")
    if eval_dir:
        lines.append(_kv(4, "datasets", f"[{_yaml(eval_dir)}]", "judged queries: base vs tuned nDCG@10 per dimension"))
        if heldout_split:
            lines.append(_kv(4, "split", heldout_split, "the judged queries that did not choose the checkpoint"))
    else:
        lines += ["    # datasets: [path/to/beir_dir]   # judged queries (BEIR layout) for a real comparison;",
                  "    #                                # without them the held-out synthetic queries are used"]
    lines += [
        _kv(4, "models", "[base, train]"),
        _kv(4, "dims", _yaml(dims)),
        _kv(4, "quantizations", "[none, int8]"),
        _kv(4, "score_by", "best_passage", "a long document scores as its best passage"),
        _kv(4, "passage_tokens", 128, "passage size (docs/evaluate.md)"),
        "  embed:",
        _kv(4, "dims", _yaml([dims[0], dims[min(2, len(dims) - 1)]]), "full and a truncated size, both re-normalized"),
        _kv(4, "index", f"{{kinds: {_yaml(kinds)}}}"),
        "",
    ]
    return "\n".join(lines)


def init(corpus: Annotated[str, typer.Option("--corpus", "-c", help="Your documents: JSONL / Parquet file, BEIR "
                                             "dir, folder of .txt/.md/.html, builtin:NAME or beir:NAME")],
         eval_dir: Annotated[str | None, typer.Option("--eval", "-e", help="BEIR directory with judged queries "
                                                      "(or beir:NAME) to compare base and tuned models on")] = None,
         out: Annotated[Path, typer.Option("--out", "-o", help="Job file to write")] = Path("job.yaml"),
         name: Annotated[str | None, typer.Option(help="Job name (default: the file name)")] = None,
         base_model: Annotated[str, typer.Option("--base-model", "-m", help="Model to start from")] = "all-MiniLM-L6-v2",
         dev_share: Annotated[float, typer.Option("--dev-share", help="With --eval: this share of its judged queries "
                                                  "chooses the checkpoint (validation: judged), the rest measures the "
                                                  "result (embedforge datasets split)")] = 0.0,
         train_share: Annotated[float, typer.Option("--train-share", help="With --dev-share: this share of the dev "
                                                    "queries trains the query encoder beside the synthetic queries "
                                                    "(train.mode: query), the rest chooses the checkpoint")] = 0.0,
         force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file")] = False) -> None:
    """Write a commented job spec sized to your corpus and this machine (then: embedforge run job.yaml)."""
    from embedforge.cli import fail
    from embedforge.progress import console
    from embedforge.spec import SpecError, load_spec

    if out.exists() and not force:
        fail(f"{out} exists; choose another --out or pass --force")
    if eval_dir is not None:
        from embedforge.data.ingest import resolve_path

        try:
            if not (resolve_path(eval_dir) / "qrels").is_dir():
                fail(f"--eval {eval_dir}: not a BEIR directory (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
        except (FileNotFoundError, ValueError) as exc:
            fail(f"--eval {eval_dir}: {exc}")
    if dev_share and eval_dir is None:
        fail("--dev-share divides the judged queries of --eval: pass --eval too")
    if train_share and not dev_share:
        fail("--train-share divides the dev queries that --dev-share sets apart: pass --dev-share too")
    if train_share and not 0 < train_share < 1:
        fail(f"--train-share must be between 0 and 1 (exclusive), got {train_share}")
    try:
        stats = corpus_stats(corpus)
        dim = model_dim(base_model)
        splits = {}
        if dev_share:
            from embedforge.data.beir import BeirFormatError, split_judged

            try:
                divided = split_judged(eval_dir or "", "test", dev_share)
            except BeirFormatError as exc:
                fail(f"--eval {eval_dir}: {exc}")
            splits = {"dev_split": str(divided["dev_split"]), "heldout_split": str(divided["heldout_split"])}
            said = (f"{divided['dev_queries']} judged queries choose the checkpoint (qrels/{divided['dev_split']}.tsv)")
            if train_share:
                try:  # the dev part again: its "-dev" share validates, its "-heldout" share trains
                    trained = split_judged(eval_dir or "", str(divided["dev_split"]), 1 - train_share)
                except BeirFormatError as exc:
                    fail(f"--eval {eval_dir}: --train-share: {exc}")
                splits.update(dev_split=str(trained["dev_split"]), train_split=str(trained["heldout_split"]))
                said = (f"{trained['heldout_queries']} judged queries train (qrels/{trained['heldout_split']}.tsv), "
                        f"{trained['dev_queries']} choose the checkpoint (qrels/{trained['dev_split']}.tsv)")
            console.print(f"--eval {eval_dir}: {said}, {divided['heldout_queries']} measure the result "
                          f"(qrels/{divided['heldout_split']}.tsv)", highlight=False, soft_wrap=True)
            if not train_share and int(divided["dev_queries"]) >= TRAIN_SHARE_HINT:
                console.print(f"{divided['dev_queries']} dev queries are enough to train on as well: --train-share "
                              f"0.7 writes a query-side job (train.mode: query, docs/adaptation.md)",
                              highlight=False, soft_wrap=True)
    except (FileNotFoundError, ValueError, OSError) as exc:
        fail(str(exc))
    machine = Machine.here()
    job_name = name or out.stem
    text = render(corpus, eval_dir, job_name, base_model, stats, machine, dim, str(out), **splits)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    try:
        load_spec(out)
    except SpecError as exc:  # a bug of this command, not of the user's input
        out.unlink()
        fail(f"init wrote an invalid job spec (please report): {exc}", 1)
    console.print(f"{out}: {stats.docs:,} documents, ~{stats.chunks(256):,} chunks; {machine.describe()}. "
                  f"Next: embedforge run {out}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
