"""Embedding drift between two embedding sets: centroid cosine and distribution shift (MMD with a permutation
p-value, per-dimension Kolmogorov–Smirnov statistics, mean shift in units of the reference's spread).

Embedding sets are Parquet embedding shards (a directory with the ``embeddings`` schema, ``vector`` column) or
``.npy`` arrays. Drift is flagged when the centroid cosine falls below ``min_centroid_cosine`` or the MMD rises
above ``max_mmd``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_embeddings(path: str | Path, label_column: str | None = None) -> tuple[np.ndarray, list[Any] | None]:
    """``(vectors float32 (n, d), labels or None)`` from a ``.npy`` file or Parquet embedding shards."""
    import pyarrow.parquet as pq

    from embedforge.data.shards import list_shards, read_table

    path = Path(path)
    if path.suffix == ".npy":
        vectors = np.load(path)
        if vectors.ndim != 2:
            raise ValueError(f"{path}: expected a 2-d array of embeddings, got shape {vectors.shape}")
        return vectors.astype(np.float32), None
    if not path.exists() or not list_shards(path):
        raise FileNotFoundError(f"{path}: neither a .npy file nor a directory of Parquet embedding shards")
    probe = pq.read_schema(list_shards(path)[0])
    if "vector" not in probe.names:
        raise ValueError(f"{path}: no 'vector' column (embedding shards have id, chunk_id, ..., vector)")
    if label_column and label_column not in probe.names:
        raise ValueError(f"{path}: no label column '{label_column}' (columns: {', '.join(probe.names)})")
    table = read_table(path, columns=["vector"] + ([label_column] if label_column else []))
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size if hasattr(column.type, "list_size") else len(column[0])
    vectors = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    labels = table.column(label_column).to_pylist() if label_column else None
    return vectors, labels


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[rng.choice(len(x), size=n, replace=False)]


def mmd_rbf(a: np.ndarray, b: np.ndarray, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """Unbiased squared MMD with an RBF kernel (median-distance bandwidth) and a permutation p-value."""
    x = np.concatenate([a, b]).astype(np.float64)
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    off = d2[np.triu_indices(len(x), 1)]
    bandwidth = float(np.median(off)) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    n = len(a)

    def stat(idx: np.ndarray) -> float:
        k = kernel[np.ix_(idx, idx)]
        kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
        m, p = n, len(idx) - n
        return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (p * (p - 1))
                     - 2 * kxy.mean())

    order = np.arange(len(x))
    observed = stat(order)
    rng = np.random.default_rng(seed)
    exceed = sum(stat(rng.permutation(order)) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def drift_metrics(reference: np.ndarray, current: np.ndarray, sample: int = 1000, permutations: int = 200,
                  seed: int = 0) -> dict[str, float]:
    """Centroid cosine, centroid shift, MMD (+ p-value), per-dimension KS and mean shift of two embedding sets."""
    from scipy import stats

    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"embedding sets must have the same dimension: {reference.shape} vs {current.shape}")
    if len(reference) < 2 or len(current) < 2:
        raise ValueError("each embedding set needs at least 2 vectors")
    ref, cur = _normalize(reference.astype(np.float32)), _normalize(current.astype(np.float32))
    c_ref, c_cur = ref.mean(0), cur.mean(0)
    cosine = float(c_ref @ c_cur / max(np.linalg.norm(c_ref) * np.linalg.norm(c_cur), 1e-12))
    rng = np.random.default_rng(seed)
    a, b = _sample(ref, sample, rng), _sample(cur, sample, rng)
    mmd, p_value = mmd_rbf(a, b, permutations, seed)
    ks = np.array([stats.ks_2samp(a[:, j], b[:, j]).statistic for j in range(a.shape[1])])
    spread = ref.std(0) + 1e-12
    return {"n_reference": float(len(ref)), "n_current": float(len(cur)), "dim": float(ref.shape[1]),
            "centroid_cosine": cosine, "centroid_shift": float(np.linalg.norm(c_ref - c_cur)),
            "mmd": mmd, "mmd_p_value": p_value, "ks_mean": float(ks.mean()), "ks_max": float(ks.max()),
            "mean_shift_in_std": float(np.mean(np.abs(c_ref - c_cur) / spread))}


def drift_verdict(metrics: dict[str, float], min_centroid_cosine: float, max_mmd: float) -> list[str]:
    """Reasons the current set drifted (empty: no drift)."""
    reasons = []
    if metrics["centroid_cosine"] < min_centroid_cosine:
        reasons.append(f"centroid cosine {metrics['centroid_cosine']:.4f} < {min_centroid_cosine}")
    if metrics["mmd"] > max_mmd:
        reasons.append(f"MMD {metrics['mmd']:.4f} > {max_mmd} (permutation p = {metrics['mmd_p_value']:.3f})")
    return reasons
