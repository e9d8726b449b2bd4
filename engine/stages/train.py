"""Stage ``train``: (query, positive[, hard negatives]) rows → a domain-tuned model in ``<stage dir>/model``.

Reads the ``mine`` triples when the job has them, else the ``generate`` queries joined with the ``chunk``
passages; holds out the ``val`` queries and measures nDCG@10 at every Matryoshka dimension before training,
every ``eval_steps`` and after. Modes: ``full`` and ``lora`` run the sentence-transformers trainer (checkpoints
in ``<stage dir>/checkpoints``; a re-run after a kill resumes from the last complete one); ``adapter`` trains a
residual adapter on embeddings cached once. The final model is written to a temp directory and renamed, with a
model card (README.md) giving its lineage, training arguments and metrics per dimension.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from embedforge import device as dev
from embedforge.configs.train import TrainConfig
from embedforge.data.beir import load_judged
from embedforge.data.schemas import TRIPLES
from embedforge.data.shards import ShardWriter, atomic_write_text, list_shards, read_table, shard_name
from embedforge.models import hub_id, model_id
from embedforge.progress import track
from embedforge.provenance import library_versions
from embedforge.stages.base import StageContext, StageFailed
from embedforge.training.checkpoints import interpolate, last_checkpoint, publish_dir, state_copy
from embedforge.training.corpus_rotation import rotate_saved_model
from embedforge.training.data import (
    TrainingRows,
    ValidationSet,
    add_judged,
    doc_key,
    load_passages,
    load_queries,
    rows_from_queries,
    rows_from_teacher,
    rows_from_triples,
    select_queries,
    split_queries,
    train_queries,
    validation_set,
)
from embedforge.training.guard import Candidate, choose
from embedforge.training.guard import table as guard_table
from embedforge.training.losses import (
    DISTILL_LOSSES,
    TrainConfigError,
    check_loss_data,
    check_matryoshka_dims,
)
from embedforge.training.matryoshka_evaluator import MatryoshkaRetrievalEvaluator
from embedforge.training.model_card import kept_base, model_card
from embedforge.training.model_files import card_license, finish_model_dir
from embedforge.training.teacher import Teacher, auto_temperature, build_teacher, label_queries
from embedforge.training.token_weights import weight_saved_model
from embedforge.training.yardstick import SIGNAL_NAMES, metric_key, teacher_validation_labels

log = logging.getLogger("embedforge.train")


def run(ctx: StageContext) -> None:
    cfg: TrainConfig = ctx.config
    check_machine(ctx, cfg)
    start_model = start_model_dir(ctx, cfg)
    rows, val = load_training_data(ctx, cfg, start_model)
    try:
        check_loss_data(cfg, rows.n_negatives)
    except TrainConfigError as exc:
        raise StageFailed(str(exc)) from None
    log.info("train: %d rows from %s (%d hard negatives each), %d val queries (%d judged) in %d passages, mode %s, "
             "loss %s", len(rows), rows.source, rows.n_negatives, len(val), len(val.judged), len(val.corpus), cfg.mode,
             cfg.loss)
    if cfg.mode == "adapter":
        result = train_adapter_mode(ctx, cfg, start_model, rows, val)
    elif cfg.mode == "query":
        result = train_query_mode(ctx, cfg, start_model, rows, val)
    elif cfg.nproc > 1 or os.environ.get("EMBEDFORGE_TORCHRUN_ARGS"):  # DDP (embedforge.training.distributed)
        from embedforge.training.distributed import run_data_parallel

        result = run_data_parallel(train_with_trainer, ctx, cfg.nproc, cfg, start_model, rows, val)
    else:
        result = train_with_trainer(ctx, cfg, start_model, rows, val)
    finish(ctx, cfg, start_model, rows, val, result)
    shutil.rmtree(ctx.out_dir / "ddp", ignore_errors=True)  # data-parallel scratch: payload, rank 0's candidates


def check_machine(ctx: StageContext, cfg: TrainConfig) -> None:
    """Refuse options this machine cannot run before any work (fp16 without CUDA, missing bitsandbytes/peft)."""
    from embedforge.training.arguments import optimizer_name, precision_flags

    try:
        if cfg.mode != "adapter":
            precision_flags(cfg, dev.device(ctx.job.device))
            optimizer_name(cfg)
        if cfg.mode == "lora":
            dev.optional_import("peft", "LoRA training (train.mode: lora)")
    except (RuntimeError, TrainConfigError) as exc:
        raise StageFailed(f"train: {exc}") from None


def start_model_dir(ctx: StageContext, cfg: TrainConfig) -> str:
    """The model to start from: ``base``, a path, or an upstream stage's model (vocabulary extension:
    ``train.model: extend_vocab`` starts from the extended model that stage wrote)."""
    from embedforge.stages import STAGES

    if cfg.model in {s.name for s in STAGES} and not ctx.has_input(cfg.model):
        raise StageFailed(f"train.model: '{cfg.model}' names a stage this job does not run "
                          f"(add it to the job, or use 'base' or a model path)")
    try:
        return ctx.resolve_model(cfg.model)
    except FileNotFoundError as exc:
        raise StageFailed(f"train.model: {exc}") from None


# ---------------------------------------------------------------- data


def load_training_data(ctx: StageContext, cfg: TrainConfig, start_model: str) -> tuple[TrainingRows, ValidationSet]:
    """Training rows (teacher-labelled, triples or queries) and the validation set, unusable rows quarantined."""
    if not ctx.has_input("chunk"):
        raise StageFailed("train needs the chunk stage's passages (add 'chunk' to the job)")
    if not (ctx.has_input("generate") or ctx.has_input("mine")):
        raise StageFailed("train needs training pairs: add the 'generate' stage (and 'mine' for hard negatives)")
    passages = load_passages(ctx.input_dir("chunk"))
    if ctx.has_input("generate"):
        queries = load_queries(ctx.input_dir("generate"))
    else:  # triples only: validation documents are held out here
        t = read_table(ctx.input_dir("mine"), columns=["query_id", "pos_chunk_id", "query"]).to_pylist()
        queries = [{"query_id": r["query_id"], "chunk_id": r["pos_chunk_id"], "query": r["query"],
                    "split": "train"} for r in t]
    train_ids, val_ids = split_queries(queries, cfg.val_fraction, ctx.job.seed)
    try:
        keep = 1.0 if cfg.mode == "query" else cfg.ict_keep_sentence  # query mode: a positive is its chunk's vector
        only, strip = select_queries(queries, cfg.query_kinds, keep, ctx.job.seed)
    except ValueError as exc:
        raise StageFailed(f"train: {exc}") from None
    val = validation_set(queries, passages, val_ids, cfg.eval_corpus_max, ctx.job.seed)
    if cfg.judged_queries:
        add_judged_queries(ctx, cfg, val, passages)
    teacher_signal = cfg.validation in ("teacher", "both") and val.queries
    teacher = make_teacher(ctx, cfg, start_model, passages) if cfg.teacher != "none" or teacher_signal else None
    if cfg.teacher != "none":
        rows = teacher_rows(ctx, cfg, teacher, start_model, queries, passages,
                            train_ids if only is None else train_ids & only, strip)
    elif ctx.has_input("mine"):
        val_docs = {doc_key(q["chunk_id"]) for q in queries if q["query_id"] in val_ids}
        rows = rows_from_triples(ctx.input_dir("mine"), cfg.max_negatives, exclude_ids=val_ids, exclude_docs=val_docs,
                                 only_ids=only, strip_ids=strip)
    else:
        shards = [str(p) for p in list_shards(ctx.input_dir("generate"))]
        rows = rows_from_queries(queries, passages, train_ids if only is None else train_ids & only, shards, strip)
    if cfg.judged_train_split:
        add_judged_rows(ctx, cfg, rows, passages, start_model)
    if teacher_signal:
        val.teacher = teacher_validation_labels(teacher, val, list(passages), gains=cfg.teacher_gains,
                                                positive_gain=cfg.teacher_positive_gain, depth=cfg.teacher_depth)
    if rows.quarantine:
        atomic_write_text(ctx.out_dir / "quarantine.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.quarantine))
        ctx.count("quarantined", len(rows.quarantine))
    ctx.count("rows_in", len(rows) + len(rows.quarantine))
    if len(rows) < 2:
        raise StageFailed(f"train: only {len(rows)} usable training rows (need at least 2; see quarantine.jsonl)")
    if not (val.queries or val.judged):
        log.warning("train: no validation queries (set train.val_fraction > 0 or give generate a val split); "
                    "training runs without evaluation, best-checkpoint choice or regression guard")
    return rows, val


def add_judged_queries(ctx: StageContext, cfg: TrainConfig, val: ValidationSet, passages: dict[str, str]) -> None:
    """The judged queries of ``cfg.judged_queries`` join the validation set (their documents' chunks its corpus)."""
    try:
        queries, qrels = load_judged(cfg.judged_queries, cfg.judged_split)
    except (ValueError, OSError) as exc:  # BeirFormatError, a dataset reference that is not there
        raise StageFailed(f"train.judged_queries: {exc}") from None
    kept = add_judged(val, queries, qrels, passages, chunk_documents(ctx))
    if not kept:
        raise StageFailed(f"train.judged_queries: none of the {len(qrels)} judged queries of {cfg.judged_queries} "
                          f"(qrels/{cfg.judged_split}.tsv) has a judged document among the job's chunks: the qrels' "
                          "corpus ids must be the doc ids the ingest stage kept")
    ctx.count("judged_queries", kept)
    if kept < len(qrels):
        ctx.count("judged_queries_left_out", len(qrels) - kept)
        log.warning("train: %d of %d judged queries have no judged document among the chunks (or no text) and are "
                    "left out", len(qrels) - kept, len(qrels))


def chunk_documents(ctx: StageContext) -> dict[str, str]:
    """chunk id → the ingested document id it was cut from."""
    docs = read_table(ctx.input_dir("chunk"), columns=["chunk_id", "doc_id"])
    return dict(zip(docs.column("chunk_id").to_pylist(), docs.column("doc_id").to_pylist(), strict=True))


def add_judged_rows(ctx: StageContext, cfg: TrainConfig, rows: TrainingRows, passages: dict[str, str],
                    start_model: str) -> None:
    """The judged queries of ``judged_train_split`` become training rows too (``judged_train_repeat`` times each,
    ``balance``: about as many as the synthetic rows); pairs that cannot be used join the quarantine."""
    from embedforge.encoding.encoder import get_encoder
    from embedforge.training.judged_rows import judged_repeat, judged_rows

    try:
        queries, qrels = load_judged(cfg.judged_queries, cfg.judged_train_split)
    except (ValueError, OSError) as exc:
        raise StageFailed(f"train.judged_train_split: {exc}") from None
    encoder = get_encoder(start_model, device=ctx.job.device)
    k = rows.n_negatives
    judged, quarantine = judged_rows(queries, qrels, passages, chunk_documents(ctx),
                                     lambda texts: encoder.encode(texts, cache=True), n_negatives=k)
    if not judged:
        raise StageFailed(f"train.judged_train_split: none of the {len(qrels)} judged queries of "
                          f"{cfg.judged_queries} (qrels/{cfg.judged_train_split}.tsv) has a judged document among "
                          "the job's chunks: the qrels' corpus ids must be the doc ids the ingest stage kept")
    synthetic = len(rows)
    repeat = judged_repeat(cfg.judged_train_repeat, synthetic, len(judged))
    for _ in range(repeat):
        for r in judged:
            rows.columns["anchor"].append(r["anchor"])
            rows.columns["positive"].append(r["positive"])
            for j in range(k):
                rows.columns[f"negative_{j + 1}"].append(r["negatives"][j])
    rows.quarantine.extend(quarantine)
    rows.source = f"{rows.source}+judged"
    ctx.count("judged_train_rows", len(judged))
    ctx.count("judged_train_repeat", repeat)
    log.info("train: %d rows from %d judged queries of %s (qrels/%s.tsv), x%d beside %d synthetic rows; %d pairs "
             "left out (quarantine)", len(judged), len({r['query_id'] for r in judged}), cfg.judged_queries,
             cfg.judged_train_split, repeat, synthetic, len(quarantine))


def make_teacher(ctx: StageContext, cfg: TrainConfig, start_model: str, passages: dict[str, str]) -> Teacher:
    """The configured teacher over every chunk (the hybrid one when only the validation signal needs it)."""
    kind = cfg.teacher if cfg.teacher != "none" else "hybrid"
    t0 = time.perf_counter()
    try:
        teacher = build_teacher(kind, list(passages.values()), start_model=start_model,
                                teacher_model=cfg.teacher_model, device=ctx.job.device, depth=cfg.teacher_depth)
    except (ValueError, OSError) as exc:
        raise StageFailed(f"train.teacher: {exc}") from None
    log.info("train: %s teacher over %d passages ready in %.1f s", kind, len(passages), time.perf_counter() - t0)
    return teacher


def teacher_rows(ctx: StageContext, cfg: TrainConfig, teacher: Teacher, start_model: str,
                 queries: list[dict[str, Any]], passages: dict[str, str], train_ids: set[str],
                 strip: set[str]) -> TrainingRows:
    """Label the training queries with the teacher; its triples (with scores) go to ``teacher_triples/``."""
    todo, quarantine = train_queries(queries, passages, train_ids, source="train")
    t0 = time.perf_counter()
    labels = label_queries(teacher, todo, list(passages), passages, num_negatives=cfg.max_negatives,
                           false_negative_margin=cfg.false_negative_margin, query_filter_rank=cfg.query_filter_rank,
                           depth=cfg.teacher_depth, same_doc=lambda a, b: doc_key(a) == doc_key(b))
    seconds = time.perf_counter() - t0
    writer = ShardWriter(ctx.out_dir / "teacher_triples")
    writer.write(shard_name(0), pa.Table.from_pylist(labels.triples, schema=TRIPLES))
    atomic_write_text(ctx.out_dir / "teacher_dropped.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labels.dropped))
    ranks = [r for r in labels.positive_ranks if r is not None]
    ctx.count("teacher_dropped", len(labels.dropped))
    ctx.extra["teacher"] = {
        "kind": teacher.name, "queries": len(todo), "kept": len(labels.triples), "dropped": len(labels.dropped),
        "query_filter_rank": cfg.query_filter_rank, "false_negative_margin": cfg.false_negative_margin,
        "positive_at_rank_1": round(sum(r == 1 for r in ranks) / max(len(todo), 1), 4),
        "positive_outside_list": len(labels.positive_ranks) - len(ranks), "seconds": round(seconds, 2)}
    log.info("train: teacher %s kept %d of %d training queries in %.1f s (%d dropped, reasons in teacher_dropped.jsonl)",
             teacher.name, len(labels.triples), len(todo), seconds, len(labels.dropped))
    temperature = None
    if cfg.loss in DISTILL_LOSSES:
        temperature = cfg.teacher_temperature
        if temperature == "auto":
            from embedforge.encoding.encoder import get_encoder

            encoder = get_encoder(start_model, device=ctx.job.device)
            temperature = auto_temperature(labels.triples, lambda texts: encoder.encode(texts, cache=True), cfg.scale)
            log.info("train: teacher_temperature auto = %.3f", temperature)
        ctx.extra["teacher"]["temperature"] = round(temperature, 4)
    rows = rows_from_teacher(labels.triples, strip, temperature)
    rows.shards = [str(p) for p in list_shards(ctx.out_dir / "teacher_triples")]
    rows.quarantine = quarantine
    return rows


# ---------------------------------------------------------------- full / LoRA with the trainer


def train_with_trainer(ctx: StageContext, cfg: TrainConfig, start_model: str, rows: TrainingRows,
                       val: ValidationSet) -> dict[str, Any]:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback

    from embedforge.training.arguments import training_arguments
    from embedforge.training.callbacks import BehindStartStop, FinalEvaluationCallback, HistoryCallback
    from embedforge.training.lora import add_lora, merge_lora
    from embedforge.training.losses import build_loss

    device = dev.device(ctx.job.device)
    model = SentenceTransformer(start_model, device=str(device), local_files_only=True)
    serving_max_seq_length = model.max_seq_length
    if cfg.max_seq_length:  # a training-time truncation; the saved model keeps its own limit
        model.max_seq_length = cfg.max_seq_length
    dims = eval_dims(cfg, int(model.get_embedding_dimension()))
    evaluator = MatryoshkaRetrievalEvaluator(val, dims, primary_dim=primary_dim(cfg, dims),
                                             signal=cfg.validation) if val.queries or val.judged else None
    before = evaluator(model) if evaluator else {}  # the start model: step 0 of the best-checkpoint choice
    if before:
        log.info("step 0 (start model): %s", "  ".join(f"{k} {v:.4f}" for k, v in before.items() if "ndcg" in k))
    guide = (SentenceTransformer(start_model, device=str(device), local_files_only=True)
             if cfg.loss == "gist" or cfg.anchor_weight > 0 else None)
    start_weights = state_copy(model) if cfg.weight_averaging else None  # before LoRA: the plain model's keys
    if cfg.mode == "lora":
        ctx.extra["lora_trainable_parameters"] = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    checkpoints = ctx.out_dir / "checkpoints"
    args = training_arguments(cfg, output_dir=checkpoints, device=device, seed=ctx.job.seed,
                              primary_metric=evaluator.primary_metric if evaluator else None)
    resume = last_checkpoint(checkpoints)
    examples_per_step = cfg.batch_size * cfg.gradient_accumulation_steps
    callbacks: list[Any] = [FinalEvaluationCallback()]
    stop = None
    if evaluator and cfg.stop_behind_start and cfg.promote == "if_better" and not cfg.weight_averaging:
        stop = BehindStartStop(evaluator.primary_metric, before[evaluator.primary_metric], cfg.stop_behind_start)
        callbacks.append(stop)
    early = EarlyStoppingCallback(cfg.early_stopping_patience) if evaluator and cfg.early_stopping_patience else None
    if early is not None:
        callbacks.append(early)
    with track("train", unit="steps") as progress:
        history = HistoryCallback(progress, examples_per_step)
        loss = build_loss(model, cfg, guide)
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict(rows.columns),
            loss=loss, evaluator=evaluator, callbacks=[history, *callbacks])
        trainer.remove_callback(PrinterCallback)  # progress and evaluations go through the engine's logger
        if resume:
            log.info("train: resuming from %s", resume)
        t0 = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        seconds = time.perf_counter() - t0
    if cfg.mode == "lora":
        ctx.extra["lora_layers_merged"] = merge_lora(model)
    after = logged_metrics(history.evals, trainer.state, before, cfg.keep_best) if cfg.mode == "full" else {}
    if evaluator and not after:  # LoRA merged, or the kept checkpoint was validated before a resume
        after = evaluator(model)
    candidates = {"base": (before, lambda path: save_start_model(start_model, path)),
                  "tuned": (after, lambda path: model.save(str(path)))}
    if start_weights is not None:  # WiSE-FT: a third candidate between the start and the tuned weights
        tuned_weights = state_copy(model)
        averaged_weights = interpolate(tuned_weights, start_weights, cfg.weight_averaging)
        model.load_state_dict(averaged_weights)
        averaged = evaluator(model) if evaluator else {}

        def save_weights(weights: dict[str, Any]) -> Any:
            return lambda path: (model.load_state_dict(weights), model.save(str(path)))

        candidates = {"base": candidates["base"], "tuned": (after, save_weights(tuned_weights)),
                      "averaged": (averaged, save_weights(averaged_weights))}
    model.max_seq_length = serving_max_seq_length
    steps_run = trainer.state.global_step - (int(resume.name.split("-")[1]) if resume else 0)
    ctx.throughput["train_steps_per_s"] = round(steps_run / max(seconds, 1e-9), 4)
    ctx.throughput["train_examples_per_s"] = round(steps_run * examples_per_step / max(seconds, 1e-9), 2)
    if cfg.anchor_weight > 0 and loss.kls:  # how far the student's batch rankings moved from the start model's
        ctx.extra["anchor_kl"] = {"first_10_batches": round(sum(loss.kls[:10]) / len(loss.kls[:10]), 5),
                                  "last_10_batches": round(sum(loss.kls[-10:]) / len(loss.kls[-10:]), 5)}
    if stop is not None and stop.stopped_at is not None:
        ctx.extra["stopped_behind_start"] = {"step": stop.stopped_at, "max_steps": trainer.state.max_steps,
                                             "validations_behind": stop.behind}
    if early is not None and early.early_stopping_patience_counter >= early.early_stopping_patience \
            and trainer.state.global_step < trainer.state.max_steps:
        ctx.extra["stopped_without_gain"] = {"step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
                                             "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name}
        log.warning("train: stopped at step %d of %d: %d validations in a row did not beat the best checkpoint "
                    "(%s, %s %.4f; train.early_stopping_patience)", trainer.state.global_step,
                    trainer.state.max_steps, early.early_stopping_patience_counter,
                    ctx.extra["stopped_without_gain"]["best_checkpoint"], evaluator.primary_metric,
                    trainer.state.best_metric or float("nan"))
    return {"dims": dims, "before": before, "after": after,
            "steps": trainer.state.global_step, "resumed_from": str(resume) if resume else None,
            "best": trainer.state.best_model_checkpoint, "losses": history.losses, "evals": history.evals,
            "seconds": round(seconds, 2), "train_loss": float(output.training_loss), "candidates": candidates}


def logged_metrics(evals: list[dict[str, float]], state: Any, before: dict[str, float],
                   keep_best: bool) -> dict[str, float]:
    """The validation of the weights the trainer ends with (with ``keep_best`` the best checkpoint, else the last
    step) as it was logged during training, so the stage does not encode the validation set once more; ``{}``
    when this run did not log it (or logged other metrics than ``before``'s)."""
    best = state.best_model_checkpoint if keep_best else None
    step = int(Path(best).name.rsplit("-", 1)[1]) if best else state.global_step
    for entry in evals:
        metrics = {k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")}
        if entry.get("step") == step and before and all(k in metrics for k in before):
            return {k: metrics[k] for k in before}
    return {}


def save_start_model(start_model: str, path: Path) -> None:
    """Write the start model unchanged (the guard promoted it): loaded and saved by sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(start_model, device="cpu", local_files_only=True).save(str(path))


def primary_dim(cfg: TrainConfig, dims: list[int]) -> int:
    """The dimension the guard and the best-checkpoint choice look at."""
    if cfg.primary_dim is not None and cfg.primary_dim not in dims:
        raise StageFailed(f"train.primary_dim: {cfg.primary_dim} is not one of the evaluated dimensions {dims}")
    return cfg.primary_dim or dims[0]


def eval_dims(cfg: TrainConfig, model_dim: int) -> list[int]:
    """Matryoshka dims checked against the model (evaluation at the full dimension without Matryoshka)."""
    try:
        return check_matryoshka_dims(cfg.matryoshka_dims, model_dim) if cfg.matryoshka_dims else [model_dim]
    except TrainConfigError as exc:
        raise StageFailed(str(exc)) from None


# ---------------------------------------------------------------- adapter on cached embeddings


def train_adapter_mode(ctx: StageContext, cfg: TrainConfig, start_model: str, rows: TrainingRows,
                       val: ValidationSet) -> dict[str, Any]:
    from embedforge.encoding.encoder import Encoder, get_encoder
    from embedforge.training.adapter import adapt_vectors, save_with_adapter, train_adapter

    if cfg.max_seq_length:  # a training-time truncation: a private encoder, not the shared one
        encoder = Encoder(start_model, device=ctx.job.device, max_seq_length=cfg.max_seq_length)
    else:
        encoder = get_encoder(start_model, device=ctx.job.device)
    dims = eval_dims(cfg, encoder.dim)
    evaluator = MatryoshkaRetrievalEvaluator(val, dims, primary_dim=primary_dim(cfg, dims),
                                             signal=cfg.validation) if val.queries or val.judged else None
    evaluate = None
    if evaluator is not None:
        vectors = [encoder.encode(t) if t else None for t in evaluator.texts()]

        def evaluate(layers: Any) -> dict[str, float]:
            return evaluator.metrics_for(*(None if v is None else adapt_vectors(layers, v) for v in vectors))

    t0 = time.perf_counter()
    result = train_adapter(rows, encoder.encode, dims, kind=cfg.adapter_kind, epochs=cfg.adapter_epochs,
                           lr=cfg.adapter_learning_rate, batch_size=cfg.batch_size, scale=cfg.scale,
                           weight_decay=cfg.weight_decay, seed=ctx.job.seed, evaluate=evaluate,
                           primary=evaluator.primary_metric if evaluator else None, keep_best=cfg.keep_best)
    seconds = time.perf_counter() - t0
    ctx.throughput["adapter_steps_per_s"] = round(result.steps / max(seconds, 1e-9), 2)
    before = {k: v for k, v in result.evals[0].items() if k != "epoch"} if result.evals else {}
    after = {k: v for k, v in result.evals[result.best_epoch].items() if k not in ("epoch", "loss")} \
        if result.evals else {}
    return {"dims": dims, "before": before, "after": after, "steps": result.steps, "resumed_from": None,
            "best": f"epoch {result.best_epoch}", "losses": list(enumerate(result.losses, 1)),
            "evals": result.evals, "seconds": round(seconds, 2), "train_loss": result.losses[-1],
            "candidates": {"base": (before, lambda path: save_start_model(start_model, path)),
                           "tuned": (after, lambda path: save_with_adapter(start_model, result.layers, path))}}


# ---------------------------------------------------------------- query side against fixed document vectors


def train_query_mode(ctx: StageContext, cfg: TrainConfig, start_model: str, rows: TrainingRows,
                     val: ValidationSet) -> dict[str, Any]:
    """Only the query encoder trains, against the start model's vectors of every chunk; validation searches the
    whole corpus (``eval_corpus_max`` does not apply: every chunk vector is at hand)."""
    import dataclasses

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from embedforge.encoding.encoder import get_encoder
    from embedforge.training.query_side import save_router, targets, train_query_side

    passages = load_passages(ctx.input_dir("chunk"))
    chunk_docs = chunk_documents(ctx)
    chunk_ids = sorted(passages)
    encoder = get_encoder(start_model, device=ctx.job.device)
    t0 = time.perf_counter()
    chunk_vectors = encoder.encode([passages[c] for c in chunk_ids], normalize=False, cache=True)
    log.info("train (query side): %d chunks encoded by the start model in %.0f s", len(chunk_ids),
             time.perf_counter() - t0)
    target, owner = targets(rows, chunk_ids, passages, chunk_docs)
    if target.unmatched:
        ctx.count("rows_without_chunk", target.unmatched)
        log.warning("train (query side): %d rows whose positive is not a chunk of the corpus are left out",
                    target.unmatched)
    if len(target.queries) < 2:
        raise StageFailed(f"train: only {len(target.queries)} rows have a chunk of the corpus as positive")
    dims = eval_dims(cfg, encoder.dim)
    model = SentenceTransformer(start_model, device=str(dev.device(ctx.job.device)), local_files_only=True)
    if cfg.max_seq_length:
        model.max_seq_length = cfg.max_seq_length
    evaluate, evaluator = None, None
    if val.queries or val.judged:
        whole = dataclasses.replace(val, corpus={c: passages[c] for c in chunk_ids}, chunk_docs=chunk_docs)
        evaluator = MatryoshkaRetrievalEvaluator(whole, dims, primary_dim=primary_dim(cfg, dims), signal=cfg.validation)
        query_texts, _, judged_texts = evaluator.texts()

        def evaluate(m: Any) -> dict[str, float]:
            def enc(texts: list[str]) -> np.ndarray | None:
                return np.asarray(m.encode(texts, batch_size=64, show_progress_bar=False), np.float32) if texts \
                    else None
            return evaluator.metrics_for(enc(query_texts), chunk_vectors, enc(judged_texts))

    steps = cfg.max_steps or max(1, int(cfg.epochs * len(target.queries) / cfg.batch_size))
    t0 = time.perf_counter()
    result = train_query_side(model, target, chunk_vectors, owner, dims, steps=steps, batch_size=cfg.batch_size,
                              lr=cfg.learning_rate, warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                              scale=cfg.scale, seed=ctx.job.seed, evaluate=evaluate,
                              primary=evaluator.primary_metric if evaluator else None, eval_steps=cfg.eval_steps,
                              keep_best=cfg.keep_best, patience=cfg.early_stopping_patience,
                              stop_behind_start=cfg.stop_behind_start)
    seconds = time.perf_counter() - t0
    ctx.throughput["query_side_steps_per_s"] = round(result.steps / max(seconds, 1e-9), 3)
    strip = ("step", "loss")
    before = {k: v for k, v in result.evals[0].items() if k not in strip} if result.evals else {}
    best = next((e for e in result.evals if e["step"] == result.best_step), None)
    after = {k: v for k, v in best.items() if k not in strip} if best else {}
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return {"dims": dims, "before": before, "after": after, "steps": result.steps, "resumed_from": None,
            "best": f"step {result.best_step}", "losses": list(enumerate(result.losses, 1)), "evals": result.evals,
            "seconds": round(seconds, 2), "train_loss": result.losses[-1] if result.losses else None,
            "candidates": {"base": (before, lambda path: save_start_model(start_model, path)),
                           "tuned": (after, lambda path: save_router(model, start_model, path))}}


# ---------------------------------------------------------------- artifacts


def finish(ctx: StageContext, cfg: TrainConfig, start_model: str, rows: TrainingRows, val: ValidationSet,
           result: dict[str, Any]) -> None:
    """Guard (base vs tuned), save the promoted model atomically with its card; metrics per dim into the manifest."""
    dims = result["dims"]
    pdim = primary_dim(cfg, dims)
    candidates = [Candidate(name, metrics) for name, (metrics, _) in result["candidates"].items()]
    verdict = choose(candidates, key=lambda d: metric_key(cfg.validation, d), dims=dims, primary_dim=pdim,
                     promote=cfg.promote, signal=SIGNAL_NAMES[cfg.validation])
    guard = verdict.as_manifest(cfg.validation, pdim, cfg.promote)
    inputs = {name: {"hash": out.hash, "shards": [str(p) for p in list_shards(out.dir)]}
              for name, out in ctx.inputs.items()}
    data = {"source": rows.source, "train_rows": len(rows), "negatives": rows.n_negatives,
            "quarantined": len(rows.quarantine), "val_queries": len(val), "val_corpus": len(val.corpus),
            **({"judged_queries": len(val.judged), "judged_from": cfg.judged_queries, "judged_split": cfg.judged_split}
               if val.judged else {})}
    start_ref = ctx.job.base_model if cfg.model == "base" else cfg.model
    card = model_card(job=ctx.job.name, stage_hash=ctx.out_dir.name.rsplit("-", 1)[-1],
                      spec_hash=ctx.job.spec_hash(), start_model=start_model, start_model_ref=start_ref,
                      start_model_id=model_id(start_model), mode=cfg.mode, loss=cfg.loss, inputs=inputs, data=data,
                      config=cfg.model_dump(mode="json"), dims=dims, before=result["before"],
                      after=result["after"], history={"steps": result["steps"], "best": result["best"],
                                                      "seconds": result["seconds"]},
                      versions=library_versions(), guard=guard)
    save = result["candidates"][verdict.promoted][1]
    query_mode = cfg.mode == "query"  # the documents keep the start model's vectors: neither is applied
    weigh = cfg.token_weights == "idf" and not query_mode
    rotate = cfg.corpus_rotation == "pca" and not query_mode
    kept = "train.mode: query keeps the start model's document vectors"
    pooling_weights: dict[str, Any] = {"applied": False,
                                       "reason": kept if query_mode else "train.token_weights: none"}
    rotation: dict[str, Any] = {"applied": False, "reason": kept if query_mode else "train.corpus_rotation: none"}
    if query_mode and verdict.promoted != "base":
        card += ("\n\n**Query and document encoders.** Only the query encoder was trained; documents are "
                 "encoded by the start model, unchanged (a sentence-transformers `Router`). Use "
                 "`model.encode_query(...)` for queries and `model.encode_document(...)` for documents; vectors "
                 "already made with the start model stay valid.\n")
    if weigh:
        card += (f"\n\n**Pooling weights.** Token states are weighted by their idf in this job's chunks (power "
                 f"{cfg.token_weights_power}, floor {cfg.token_weights_floor}) before mean pooling: the "
                 f"`WordWeights` module. The validation figures above were measured without it.\n")
    if rotate:
        card += ("\n\n**Corpus rotation.** The embedding space is rotated onto the principal axes of this model's "
                 "vectors of the job's chunks (a `Dense` module before the normalization): full-dimension results are "
                 "unchanged, truncated dimensions keep the directions this corpus varies along most.\n")

    def write(tmp: Path) -> None:
        nonlocal pooling_weights, rotation
        save(tmp)
        passages = load_passages(ctx.input_dir("chunk")).values() if weigh or rotate else []
        if weigh:
            pooling_weights = weight_saved_model(tmp, passages, floor=cfg.token_weights_floor,
                                                 power=cfg.token_weights_power)
        if rotate:
            rotation = rotate_saved_model(tmp, passages, max_passages=cfg.corpus_rotation_passages, dims=dims)
        finish_model_dir(tmp, title=ctx.job.name, base_model=hub_id(start_ref), dims=dims, extra_markdown=card,
                         metrics=result["candidates"][verdict.promoted][0], base_kept=kept_base(guard),
                         license=card_license(Path(start_model)), onnx=not (query_mode and verdict.promoted != "base"))

    publish_dir(ctx.out_dir / "model", write)
    per_dim = {str(d): {"ndcg@10_before": result["before"].get(f"val_ndcg@10_d{d}"),
                        "ndcg@10_after": result["after"].get(f"val_ndcg@10_d{d}"),
                        "recall@10_before": result["before"].get(f"val_recall@10_d{d}"),
                        "recall@10_after": result["after"].get(f"val_recall@10_d{d}")} for d in dims}
    ctx.extra.update({
        "model_dir": str(ctx.out_dir / "model"), "model_id": model_id(ctx.out_dir / "model"),
        "start_model": start_model, "data": data, "metrics_per_dim": per_dim,
        "metrics_before": result["before"], "metrics_after": result["after"],
        "promoted": guard["promoted"], "guard": guard, "token_weights": pooling_weights,
        "corpus_rotation": rotation,
        "candidate_metrics": {name: metrics for name, (metrics, _) in result["candidates"].items()},
        "training": {"steps": result["steps"], "best": result["best"], "resumed_from": result["resumed_from"],
                     "seconds": result["seconds"], "train_loss": result["train_loss"],
                     "loss_history": result["losses"], "eval_history": result["evals"]},
    })
    for line in guard_table(verdict, dims):
        log.info("train: %s", line)
    (log.info if verdict.better or verdict.better is None else log.warning)("train: %s", verdict.message)
    if pooling_weights["applied"]:
        log.info("train: pooling weights: corpus idf over %d chunks (power %s, floor %s) on the %s model",
                 pooling_weights["passages"], cfg.token_weights_power, cfg.token_weights_floor, guard["promoted"])
    if rotation["applied"]:
        log.info("train: corpus rotation: principal axes of %d chunks (variance kept per dim: %s) on the %s model",
                 rotation["passages"], rotation["variance_share"], guard["promoted"])
    log.info("train: model saved to %s (%s)", ctx.out_dir / "model", guard["promoted"])
