"""Statistics of a mining run: score distributions of positives vs kept negatives, and what each rule removed.

Distributions are fixed-bin histograms (so per-shard statistics add up exactly after a resume) plus exact count,
mean, standard deviation, min and max; quantiles come from the histogram (bin width 0.01 on [-1, 1]; scores
outside are counted in the edge bins).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.data.shards import atomic_write_json
from embedforge.mining.negatives import RULES

BINS = np.linspace(-1.0, 1.0, 201)


@dataclass
class ScoreHistogram:
    """A streaming histogram with exact moments."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(BINS) - 1, dtype=np.int64))
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, scores: np.ndarray) -> None:
        s = np.asarray(scores, dtype=np.float64).ravel()
        s = s[np.isfinite(s)]
        if not len(s):
            return
        self.counts += np.histogram(np.clip(s, BINS[0], BINS[-1]), BINS)[0]
        self.n += len(s)
        self.total += float(s.sum())
        self.total_sq += float((s * s).sum())
        self.low = min(self.low, float(s.min()))
        self.high = max(self.high, float(s.max()))

    def merge(self, other: ScoreHistogram) -> None:
        self.counts += other.counts
        self.n += other.n
        self.total += other.total
        self.total_sq += other.total_sq
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def quantile(self, q: float) -> float:
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, q * self.n, side="left"))
        return float((BINS[i] + BINS[i + 1]) / 2)

    def summary(self) -> dict[str, float]:
        if not self.n:
            return {"count": 0}
        mean = self.total / self.n
        std = float(np.sqrt(max(self.total_sq / self.n - mean * mean, 0.0)))
        return {"count": self.n, "mean": round(mean, 4), "std": round(std, 4), "min": round(self.low, 4),
                "p25": round(self.quantile(0.25), 3), "median": round(self.quantile(0.5), 3),
                "p75": round(self.quantile(0.75), 3), "max": round(self.high, 4)}

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts.tolist(), "n": self.n, "total": self.total, "total_sq": self.total_sq,
                "low": self.low if self.n else None, "high": self.high if self.n else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreHistogram:
        return cls(np.asarray(data["counts"], dtype=np.int64), int(data["n"]), float(data["total"]),
                   float(data["total_sq"]), data["low"] if data["low"] is not None else float("inf"),
                   data["high"] if data["high"] is not None else float("-inf"))


@dataclass
class MiningStats:
    """Positive and kept-negative score histograms and rule counters of one shard or a whole run."""

    positives: ScoreHistogram = field(default_factory=ScoreHistogram)
    negatives: ScoreHistogram = field(default_factory=ScoreHistogram)
    counts: dict[str, int] = field(default_factory=dict)

    def add_counts(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + int(value)

    def merge(self, other: MiningStats) -> None:
        self.positives.merge(other.positives)
        self.negatives.merge(other.negatives)
        self.add_counts(other.counts)

    def save(self, path: Path) -> None:
        atomic_write_json(path, {"positives": self.positives.to_json(), "negatives": self.negatives.to_json(),
                                 "counts": self.counts})

    @classmethod
    def load(cls, path: Path) -> MiningStats:
        data = json.loads(path.read_text())
        return cls(ScoreHistogram.from_json(data["positives"]), ScoreHistogram.from_json(data["negatives"]),
                   {k: int(v) for k, v in data["counts"].items()})

    def removed_share(self) -> dict[str, float]:
        """Share of window candidates each rule removed (and the share not sampled, and kept)."""
        total = max(self.counts.get("candidates", 0), 1)
        keys = (*RULES, "not_sampled", "kept")
        return {k: round(self.counts.get(k, 0) / total, 4) for k in keys if k in self.counts}

    def report(self) -> dict[str, Any]:
        """The manifest section."""
        return {"positive_scores": self.positives.summary(), "negative_scores": self.negatives.summary(),
                "candidates_in_window": self.counts.get("candidates", 0), "removed_share": self.removed_share(),
                "counts": dict(sorted(self.counts.items()))}


def plot_stats(stats: MiningStats, path: Path, title: str = "hard-negative mining") -> None:
    """Two panels: score histograms (positives vs kept negatives) and the share of candidates each rule removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    centers = (BINS[:-1] + BINS[1:]) / 2
    for hist, label, color in ((stats.positives, "positives", "tab:green"), (stats.negatives, "kept negatives",
                                                                            "tab:red")):
        if hist.n:
            left.step(centers, hist.counts / hist.n, where="mid", label=f"{label} (n={hist.n:,})", color=color)
    left.set_xlabel("score")
    left.set_ylabel("share per 0.01 bin")
    left.set_title("score distributions")
    if stats.positives.n or stats.negatives.n:
        left.legend()
    shares = stats.removed_share()
    right.barh(list(shares), list(shares.values()), color="tab:blue")
    right.set_xlabel("share of window candidates")
    right.set_title("what happened to the candidates")
    right.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
