"""Trainer callbacks: loss/eval history, progress through the engine's tracker, a final evaluation+save, and a stop
when the tuned model keeps trailing the start model on the guard's signal."""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from embedforge.progress import Tracker

log = logging.getLogger("embedforge.train")


class HistoryCallback(TrainerCallback):
    """Records every logged training loss and evaluation (``steps`` and ``evals``) and advances a tracker."""

    def __init__(self, tracker: Tracker | None = None, examples_per_step: int = 0) -> None:
        self.tracker = tracker
        self.examples_per_step = examples_per_step
        self.losses: list[tuple[int, float]] = []
        self.evals: list[dict[str, float]] = []
        self._last_step = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._last_step = state.global_step
        if self.tracker is not None and state.global_step:
            self.tracker.advance(state.global_step)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.tracker is not None:
            self.tracker.advance(state.global_step - self._last_step,
                                 examples=(state.global_step - self._last_step) * self.examples_per_step)
        self._last_step = state.global_step

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))
        metrics = {k: float(v) for k, v in logs.items() if k.startswith("eval_") and isinstance(v, (int, float))}
        if metrics:
            self.evals.append({"step": state.global_step, **metrics})
            log.info("step %d: %s", state.global_step,
                     "  ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in metrics.items() if "ndcg" in k))


class FinalEvaluationCallback(TrainerCallback):
    """Evaluate and save at the last step too, so the best-checkpoint choice sees the final weights."""

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> TrainerControl:
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_evaluate = True
            control.should_save = True
        return control


class BehindStartStop(TrainerCallback):
    """Stop training once the tuned model has scored at or below the start model on the guard's signal at
    ``patience`` validations in a row. With ``promote: if_better`` the guard publishes the start model unless a
    later checkpoint overtakes it, so the remaining steps would most likely be spent on a model the guard discards
    (a later overtaking is possible: the patience is the user's to set, 0 never stops)."""

    def __init__(self, metric: str, start_score: float, patience: int) -> None:
        self.metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.start_score = start_score
        self.patience = patience
        self.behind = 0
        self.stopped_at: int | None = None

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kwargs: Any) -> TrainerControl:
        score = (metrics or {}).get(self.metric)
        if score is None:
            return control
        self.behind = self.behind + 1 if score <= self.start_score else 0
        if self.behind >= self.patience and state.global_step < state.max_steps:
            self.stopped_at = state.global_step
            control.should_training_stop = True
            log.warning("train: stopping at step %d of %d: the tuned model trailed the start model at %d validations "
                        "in a row (%s %.4f vs %.4f); the guard keeps the better of the two (train.stop_behind_start)",
                        state.global_step, state.max_steps, self.behind, self.metric.removeprefix("eval_"), score,
                        self.start_score)
        return control

