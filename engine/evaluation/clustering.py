"""Clustering coherence of labelled embeddings: do documents with the same label sit together?

Silhouette (cosine) of the given labels, and agreement (NMI, ARI) between the labels and a k-means clustering
with as many clusters as labels — all from scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def coherence(vectors: np.ndarray, labels: Sequence[Any], sample: int = 5000, seed: int = 0) -> dict[str, float]:
    """``silhouette`` in [-1, 1] (higher: tighter label clusters), ``nmi`` and ``ari`` of k-means vs labels."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    if len(vectors) != len(labels):
        raise ValueError(f"{len(vectors)} vectors but {len(labels)} labels")
    keep = [i for i, label in enumerate(labels) if label is not None and label != ""]
    names = sorted({str(labels[i]) for i in keep})
    if len(names) < 2 or len(keep) <= len(names):
        raise ValueError(f"clustering coherence needs at least 2 labels and more documents than labels "
                         f"(got {len(names)} labels over {len(keep)} labelled documents)")
    rng = np.random.default_rng(seed)
    if len(keep) > sample:
        keep = sorted(rng.choice(keep, size=sample, replace=False).tolist())
    x = vectors[keep].astype(np.float32)
    y = np.array([names.index(str(labels[i])) for i in keep])
    predicted = KMeans(n_clusters=len(names), n_init=4, random_state=seed).fit_predict(x)
    return {"silhouette": float(silhouette_score(x, y, metric="cosine")),
            "nmi": float(normalized_mutual_info_score(y, predicted)), "ari": float(adjusted_rand_score(y, predicted)),
            "n_labels": float(len(names)), "n_documents": float(len(keep))}
