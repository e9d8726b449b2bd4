"""Corpus principal-axis rotation: a training-free way to make any embedding model's truncated dimensions useful.

Matryoshka truncation keeps the first ``d`` coordinates. A model not trained with a Matryoshka loss (most base
models, all-MiniLM-L6-v2 among them) spreads what tells *your* passages apart over all its coordinates, so its
first 96 say much less than the whole. Rotating the space onto the principal axes of the corpus's own vectors
(eigenvectors of their second-moment matrix, largest first) puts the directions along which this corpus varies
most in front. The rotation is orthogonal and uncentred, so full-dimension cosines — and every full-dimension
result — are unchanged (to float rounding); only truncation changes.

It is stored as sentence-transformers' own ``Dense`` module (no bias, identity activation) after the model's
other modules and before the final normalization, so ``SentenceTransformer(path)`` loads the model as usual and the encoder's fast paths
apply the same matrix (:class:`embedforge.encoding.encoder.Encoder`).

Measured with ``benchmarks/bench_rotation.py`` (all-MiniLM-L6-v2 with the corpus idf pooling weights, nDCG@10,
paired randomization test, change from rotating): SciFact train claims +0.038 at 96 d and +0.086 at 48 d,
Cranfield +0.058 and +0.099 (development sets, all p < 0.001); run once afterwards, SciFact test claims 0.6100 vs
0.5635 at 96 d (p < 0.001; the plain base model: 0.5533). 384 d is unchanged by construction. Centring the vectors before the
rotation, or scaling the axes toward whitening, was tried on the development sets and not kept: centring lowered
the full dimension (it is no longer a rotation of the cosines), whitening helped 96 d a little and hurt 192 d.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

MAX_PASSAGES = 4000
"""At most this many passages (a seeded sample) are encoded to fit the rotation. On SciFact a fit on 1,000 or
2,000 documents gave the same truncated-dimension nDCG@10 as one on all 5,183 (within 0.004); 500 was worse."""


def principal_axes(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rotation (D, D), variance share per axis (D,))``: rows are the eigenvectors of ``vectors``' uncentred
    second-moment matrix, largest eigenvalue first, each signed so its largest-magnitude entry is positive (the
    same vectors give the same matrix)."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError("corpus rotation: need at least two vectors to fit principal axes")
    eigenvalues, eigenvectors = np.linalg.eigh(x.T @ x / len(x))
    order = np.argsort(-eigenvalues, kind="stable")
    eigenvalues, axes = np.maximum(eigenvalues[order], 0.0), eigenvectors[:, order].T
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    axes *= np.where(signs == 0, 1.0, signs)[:, None]
    return axes.astype(np.float32), eigenvalues / max(eigenvalues.sum(), 1e-30)


def add_rotation(model, rotation: np.ndarray) -> None:
    """Append a bias-free, identity-activation ``Dense`` module holding ``rotation`` after the model's last module
    but a final ``Normalize`` (it rotates what the model outputs), replacing a rotation already there.
    ``model`` is a ``SentenceTransformer``."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    dim = rotation.shape[1]
    module = Dense(dim, rotation.shape[0], bias=False, activation_function=torch.nn.Identity(),
                   init_weight=torch.from_numpy(np.ascontiguousarray(rotation, dtype=np.float32)))
    names = list(model._modules)
    kept = [model._modules[k] for k in names if not is_rotation(model._modules[k])]
    at = len(kept) - int(type(kept[-1]).__name__ == "Normalize")
    for k in names:
        del model._modules[k]
    for i, m in enumerate([*kept[:at], module, *kept[at:]]):
        model.add_module(str(i), m)


def is_rotation(module) -> bool:
    """True for a square ``Dense`` module with no bias, an identity activation and an orthogonal matrix (what
    :func:`add_rotation` inserts; a model's own projection layer is never taken for one)."""
    import torch

    if not (type(module).__name__ == "Dense" and getattr(module.linear, "bias", None) is None
            and isinstance(module.activation_function, torch.nn.Identity)):
        return False
    w = module.linear.weight.detach().double()
    return w.shape[0] == w.shape[1] and torch.allclose(w @ w.T, torch.eye(len(w), dtype=w.dtype), atol=1e-4)


def sample(passages: Iterable[str], limit: int, seed: int = 0) -> list[str]:
    """All passages, or a seeded reservoir sample of ``limit`` of them (in their original order)."""
    rng = random.Random(seed)
    chosen: list[tuple[int, str]] = []
    for i, text in enumerate(passages):
        if len(chosen) < limit:
            chosen.append((i, text))
        else:
            j = rng.randint(0, i)
            if j < limit:
                chosen[j] = (i, text)
    return [text for _, text in sorted(chosen)]


def rotate_saved_model(model_dir: Path, passages: Iterable[str], *, max_passages: int = MAX_PASSAGES,
                       dims: Sequence[int] = ()) -> dict:
    """Rewrite the sentence-transformers model in ``model_dir`` with the principal-axis rotation of its vectors
    of ``passages`` (see the module docstring); returns what was done, for the manifest."""
    from sentence_transformers import SentenceTransformer

    from embedforge.encoding.encoder import Encoder
    from embedforge.training.model_files import save_in_place

    texts = sample(passages, max_passages)
    if len(texts) < 2:
        return {"applied": False, "reason": "fewer than two passages to fit the rotation on"}
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    if not any(type(m).__name__ == "Pooling" for m in model):
        return {"applied": False, "reason": "the model has no Pooling module"}
    if any(is_rotation(m) for m in model):  # fit on the unrotated space: drop the old rotation first
        model = SentenceTransformer(modules=[m for m in model if not is_rotation(m)], device="cpu")
        save_in_place(model, model_dir)
    vectors = Encoder(model_dir, device="cpu", backend="torch").encode(texts, normalize=False)
    rotation, share = principal_axes(vectors)
    add_rotation(model, rotation)
    save_in_place(model, model_dir)
    cumulative = np.cumsum(share)
    return {"applied": True, "kind": "pca", "passages": len(texts),
            "variance_share": {str(d): round(float(cumulative[d - 1]), 4) for d in dims if 0 < d <= len(share)}}
