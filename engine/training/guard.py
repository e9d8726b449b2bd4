"""Regression guard: the job's model is the better of the start model and the tuned one on the validation signal.

The train stage measures every candidate on the same held-out validation signal at every Matryoshka dimension:
the start model (``base``, the step-0 measurement), the tuned model (the best checkpoint) and, with
``weight_averaging``, the average of the two (``averaged``). :func:`choose` picks the model the stage saves:

- ``promote: if_better`` — the best tuned candidate at the primary dimension if it is strictly better than the
  base there, else the base itself (a tie keeps the base: training did not help);
- ``promote: always`` — the last tuned candidate (the averaged one when averaging is on), whatever the scores.

The verdict carries a plain-words line for the log, the model card and the manifest, e.g. "the tuned model is
not better than the base model on synthetic-query nDCG@10 at 384 d: 0.6100 vs 0.6200; the job's model is the
base model".

>>> v = choose([Candidate("base", {"val_ndcg@10_d384": 0.62}), Candidate("tuned", {"val_ndcg@10_d384": 0.61})],
...            key=lambda d: f"val_ndcg@10_d{d}", dims=[384], primary_dim=384, promote="if_better",
...            signal="synthetic-query nDCG@10")
>>> v.promoted
'base'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Candidate:
    """A model the stage could save: its name (``base``, ``tuned``, ``averaged``) and its validation metrics."""

    name: str
    metrics: dict[str, float]


@dataclass
class Verdict:
    """Which candidate is saved, why, and every candidate's score per dimension."""

    promoted: str
    tuned: str
    """The tuned candidate compared with the base (the best one of ``tuned``/``averaged``)."""
    better: bool | None
    """Whether that tuned candidate beats the base at the primary dimension (None: nothing to compare)."""
    message: str
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """``{candidate: {dim: score}}`` on the guard's signal."""

    def as_manifest(self, signal: str, primary_dim: int, promote: str) -> dict[str, Any]:
        return {"promoted": "base" if self.promoted == "base" else "tuned", "candidate": self.promoted,
                "signal": signal, "primary_dim": primary_dim, "promote": promote, "better": self.better,
                "message": self.message, "scores": self.scores}


def choose(candidates: list[Candidate], *, key: Callable[[int], str], dims: list[int], primary_dim: int,
           promote: str, signal: str) -> Verdict:
    """The candidate to save (see the module docstring); ``candidates[0]`` is the base, the others are tuned."""
    if len(candidates) < 2 or candidates[0].name != "base":
        raise ValueError("choose() needs the base model first and at least one tuned model")
    base, tuned = candidates[0], candidates[1:]
    scores = {c.name: {str(d): c.metrics.get(key(d)) for d in dims} for c in candidates}
    primary = key(primary_dim)
    if base.metrics.get(primary) is None or any(c.metrics.get(primary) is None for c in tuned):
        last = tuned[-1].name
        return Verdict(last, last, None, f"no validation score at {primary_dim} d: the guard could not compare the "
                                         f"tuned model with the base model; the job's model is the {_name(last)}",
                       scores)
    best = max(tuned, key=lambda c: c.metrics[primary])  # first of equals: tuned before averaged
    if promote == "always":
        best = tuned[-1]
    t, b = best.metrics[primary], base.metrics[primary]
    better = t > b
    if better:
        return Verdict(best.name, best.name, True, f"the {_name(best.name)} is better than the base model on "
                                                   f"{signal} at {primary_dim} d: {t:.4f} vs {b:.4f}; the job's "
                                                   f"model is the {_name(best.name)}", scores)
    if promote == "always":
        tail = f"the job's model is the {_name(best.name)} (promote: always)"
        promoted = best.name
    else:
        tail = "the job's model is the base model"
        promoted = "base"
    return Verdict(promoted, best.name, False, f"the {_name(best.name)} is not better than the base model on "
                                               f"{signal} at {primary_dim} d: {t:.4f} vs {b:.4f}; {tail}", scores)


def _name(candidate: str) -> str:
    return {"base": "base model", "tuned": "tuned model", "averaged": "weight-averaged tuned model"}.get(
        candidate, f"{candidate} model")


def table(verdict: Verdict, dims: list[int]) -> list[str]:
    """Log lines: one row per dimension with every candidate's score on the guard's signal."""
    names = list(verdict.scores)
    lines = ["dim  " + "  ".join(f"{n:>9}" for n in names)]
    for d in dims:
        cells = [verdict.scores[n].get(str(d)) for n in names]
        lines.append(f"{d:<4} " + "  ".join(f"{'–' if c is None else f'{c:.4f}':>9}" for c in cells))
    return lines
