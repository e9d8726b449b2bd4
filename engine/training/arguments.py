"""TrainConfig → ``SentenceTransformerTrainingArguments``: precision, optimizer, schedule, checkpoints.

Device and precision decisions come from :mod:`embedforge.device`; options that need a GPU are refused on a CPU
machine with a message naming the field.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from embedforge import device as dev
from embedforge.configs.train import TrainConfig
from embedforge.training.losses import TrainConfigError

log = logging.getLogger("embedforge.train")


def precision_flags(cfg: TrainConfig, device: torch.device) -> dict[str, bool]:
    """``bf16``/``fp16`` trainer flags: ``auto`` asks the device module (on CPU: bf16 where the CPU has native bf16,
    else fp32); fp16 needs CUDA; an explicit bf16 on a CPU without native bf16 runs (emulated) with a warning."""
    if cfg.precision == "auto":
        if device.type == "cpu":
            return {"bf16": dev.cpu_native_bf16(), "fp16": False}
        return dev.mixed_precision_flags(device)
    if cfg.precision == "fp16":
        if device.type != "cuda":
            dev.require_cuda("train.precision: fp16 (mixed precision with a loss scaler)")
        return {"bf16": False, "fp16": True}
    if cfg.precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise TrainConfigError("train.precision: bf16 is not supported by this GPU; use fp16 or auto")
        if device.type == "cpu" and not dev.cpu_native_bf16():
            log.warning("train.precision: bf16 on a CPU without native bf16 (no AVX512-BF16/AMX) is emulated and "
                        "runs many times slower than fp32; precision: auto picks fp32 here")
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": False}


def optimizer_name(cfg: TrainConfig) -> str:
    """The transformers ``optim`` name; 8-bit AdamW needs bitsandbytes (it runs on CPU too)."""
    if cfg.optimizer == "adamw_8bit":
        dev.optional_import("bitsandbytes", "8-bit AdamW (train.optimizer: adamw_8bit)")
        return "adamw_bnb_8bit"
    return "adamw_torch"


def training_arguments(cfg: TrainConfig, *, output_dir: Path, device: torch.device, seed: int,
                       primary_metric: str | None) -> Any:
    """The trainer arguments for ``cfg`` (checkpoints in ``output_dir``, evaluation on ``primary_metric``)."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    evaluate = primary_metric is not None
    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=float(cfg.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        optim=optimizer_name(cfg),
        gradient_checkpointing=cfg.gradient_checkpointing,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.keep_best and evaluate,
        metric_for_best_model=f"eval_{primary_metric}" if evaluate else None,
        greater_is_better=True,
        logging_steps=1,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=cfg.dataloader_workers,
        dataloader_drop_last=False,
        use_cpu=device.type == "cpu",
        report_to="none",
        disable_tqdm=True,
        **precision_flags(cfg, device),
    )
