"""Adapter mode: a small residual adapter trained on frozen, cached embeddings, saved as sentence-transformers modules.

The start model encodes every training text once (the one encoder); training then touches only the cached
vectors, so it takes seconds to minutes on a CPU and works for any embedder whose vectors are cached. The adapter
is stock ``Dense`` modules with a residual connection and zero-initialised weights (it starts as the identity):

- ``linear``: ``x + W x + b``;
- ``two_layer``: ``h = x + GELU(W1 x + b1)``, ``y = h + W2 h + b2``.

The loss is in-batch-negatives cross-entropy (MNRL) with the hard negatives when present, summed over the
Matryoshka dimensions. The saved model is the start model's modules, then the adapter, then ``Normalize``:
``SentenceTransformer(path)`` loads it without ``trust_remote_code``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedforge.training.data import TrainingRows

log = logging.getLogger("embedforge.train")


def adapter_modules(dim: int, kind: str) -> list[nn.Module]:
    """Zero-initialised residual ``Dense`` modules (the identity map before training)."""
    from sentence_transformers.base.modules.dense import Dense

    acts = [nn.Identity()] if kind == "linear" else [nn.GELU(), nn.Identity()]
    if kind not in ("linear", "two_layer"):
        raise ValueError(f"train.adapter_kind: unknown adapter {kind!r} (linear | two_layer)")
    return [Dense(dim, dim, bias=True, activation_function=act, use_residual=True,
                  init_weight=torch.zeros(dim, dim), init_bias=torch.zeros(dim)) for act in acts]


def apply_adapter(layers: nn.Sequential, vectors: torch.Tensor) -> torch.Tensor:
    """Run the Dense modules on a batch of vectors."""
    return layers({"sentence_embedding": vectors})["sentence_embedding"]


def matryoshka_mnrl(q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor | None, dims: list[int],
                    scale: float) -> torch.Tensor:
    """In-batch-negatives cross-entropy summed over Matryoshka dims; ``negs`` is ``(batch, k, dim)`` or None."""
    targets = torch.arange(q.shape[0])
    total = q.new_zeros(())
    for d in dims:
        qd = F.normalize(q[:, :d], dim=-1)
        docs = p[:, :d] if negs is None else torch.cat([p[:, :d], negs[:, :, :d].reshape(-1, d)])
        scores = qd @ F.normalize(docs, dim=-1).T * scale
        total = total + F.cross_entropy(scores, targets)
    return total


@dataclass
class AdapterResult:
    """The trained adapter and its history."""

    layers: nn.Sequential
    losses: list[float] = field(default_factory=list)
    """Mean training loss per epoch."""
    evals: list[dict[str, float]] = field(default_factory=list)
    """Validation metrics per epoch (epoch 0: before training)."""
    best_epoch: int = 0
    steps: int = 0


def train_adapter(rows: TrainingRows, encode: Callable[[list[str]], np.ndarray], dims: list[int], *, kind: str,
                  epochs: int, lr: float, batch_size: int, scale: float, weight_decay: float, seed: int,
                  evaluate: Callable[[nn.Sequential], dict[str, float]] | None = None,
                  primary: str | None = None, keep_best: bool = True) -> AdapterResult:
    """Encode the rows once, then train the adapter; with ``evaluate`` and ``keep_best`` the epoch with the best
    ``primary`` metric is kept (epoch 0, the identity, when no epoch beats the start model), else the last."""
    torch.manual_seed(seed)
    anchors = torch.from_numpy(encode(rows.columns["anchor"]))
    positives = torch.from_numpy(encode(rows.columns["positive"]))
    neg_cols = [c for c in rows.columns if c.startswith("negative_")]
    negatives = (torch.stack([torch.from_numpy(encode(rows.columns[c])) for c in neg_cols], dim=1)
                 if neg_cols else None)
    dim = anchors.shape[1]
    layers = nn.Sequential(*adapter_modules(dim, kind))
    optimizer = torch.optim.AdamW(layers.parameters(), lr=lr, weight_decay=weight_decay)
    result = AdapterResult(layers=layers)
    best_state = copy.deepcopy(layers.state_dict())
    if evaluate is not None:
        result.evals.append({"epoch": 0, **evaluate(layers)})
    best_score = result.evals[0][primary] if evaluate is not None and primary else float("-inf")
    generator = torch.Generator().manual_seed(seed)
    n = anchors.shape[0]
    for epoch in range(1, epochs + 1):
        layers.train()
        order = torch.randperm(n, generator=generator)
        epoch_loss = 0.0
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size) if len(order[i:i + batch_size]) > 1]
        for idx in batches:
            q = apply_adapter(layers, anchors[idx])
            p = apply_adapter(layers, positives[idx])
            negs = None
            if negatives is not None:
                b, k, d = negatives[idx].shape
                negs = apply_adapter(layers, negatives[idx].reshape(-1, d)).reshape(b, k, d)
            loss = matryoshka_mnrl(q, p, negs, dims, scale)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach())
            result.steps += 1
        result.losses.append(epoch_loss / max(len(batches), 1))
        layers.eval()
        if evaluate is not None:
            metrics = evaluate(layers)
            result.evals.append({"epoch": epoch, "loss": result.losses[-1], **metrics})
            if not keep_best or (primary and metrics[primary] > best_score):
                best_score, result.best_epoch = metrics[primary], epoch
                best_state = copy.deepcopy(layers.state_dict())
        else:
            result.best_epoch = epoch
            best_state = copy.deepcopy(layers.state_dict())
        log.info("adapter epoch %d/%d: loss %.4f", epoch, epochs, result.losses[-1])
    layers.load_state_dict(best_state)
    layers.eval()
    return result


def adapt_vectors(layers: nn.Sequential, vectors: np.ndarray) -> np.ndarray:
    """Apply a trained adapter to cached vectors (no gradient)."""
    with torch.no_grad():
        return apply_adapter(layers, torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))).numpy()


def save_with_adapter(start_model: str | Path, layers: nn.Sequential, out_dir: Path) -> None:
    """Save the start model + adapter modules + Normalize as one sentence-transformers directory."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize

    model = SentenceTransformer(str(start_model), device="cpu", local_files_only=True)
    for module in layers:
        model.append(module)
    model.append(Normalize())
    model.save(str(out_dir))
