"""The training loss: one of the library losses, wrapped in MatryoshkaLoss at the configured dimensions.

Distillation on teacher scores (``margin_mse``: ``MarginMSELoss``; ``distill_kl``: ``DistillKLDivLoss``) takes
the ``label`` column ``[teacher(q, pos), teacher(q, neg_1), …] / teacher_temperature``. The student is
cosine-normalized (MatryoshkaLoss re-normalizes every truncation), so its scores are put on a comparable scale
by :class:`~embedforge.training.distill.ScaledCosine`: ``scale · cos(q, d)`` — the same logit scale MNRL uses. With ``mnrl_weight`` > 0 the
loss is ``distill + mnrl_weight · MNRL`` on one set of embeddings (:class:`~embedforge.training.distill.WeightedSum`).

>>> loss = build_loss(model, cfg, guide=None)   # MatryoshkaLoss(MultipleNegativesRankingLoss, [384, 256, 128, 64])
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from embedforge.configs.train import IN_BATCH_LOSSES, TrainConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch import nn

DISTILL_LOSSES = ("margin_mse", "distill_kl")

log = logging.getLogger("embedforge.train")


class TrainConfigError(ValueError):
    """A train setting that cannot work with this model, data or machine (the message names the field)."""


def check_matryoshka_dims(dims: list[int], model_dim: int) -> list[int]:
    """Dimensions valid for a model of ``model_dim``: each ≤ model_dim, sorted descending (error names the field)."""
    too_big = [d for d in dims if d > model_dim]
    if too_big:
        raise TrainConfigError(f"train.matryoshka_dims: {too_big} larger than the model's embedding dimension "
                               f"{model_dim} (got {dims})")
    if dims != sorted(set(dims), reverse=True):
        raise TrainConfigError(f"train.matryoshka_dims: must be distinct and sorted descending (got {dims})")
    return dims


def check_loss_data(cfg: TrainConfig, n_negatives: int) -> None:
    """Refuse a loss the training rows cannot feed, warn about accumulation with in-batch negatives."""
    if cfg.loss == "triplet" and n_negatives == 0:
        raise TrainConfigError("train.loss: 'triplet' needs hard negatives (run the mine stage), "
                               "the training rows have none; use 'mnrl' instead")
    if cfg.loss in DISTILL_LOSSES and n_negatives < 1:
        raise TrainConfigError(f"train.loss: '{cfg.loss}' needs teacher negatives, the training rows have none")
    if cfg.gradient_accumulation_steps > 1 and cfg.loss in IN_BATCH_LOSSES:
        log.warning("train.gradient_accumulation_steps=%d with loss '%s': accumulation does not add in-batch "
                    "negatives (each batch of %d still sees only its own rows); use loss 'cached_mnrl' with a larger "
                    "batch_size for more negatives at constant memory", cfg.gradient_accumulation_steps, cfg.loss,
                    cfg.batch_size)


def base_loss(model: SentenceTransformer, cfg: TrainConfig, guide: SentenceTransformer | None = None) -> nn.Module:
    """The configured loss on ``model`` (``guide`` is the frozen guide of GISTEmbed)."""
    from sentence_transformers.sentence_transformer import losses

    from embedforge.training.distributed import gather_across_devices

    if cfg.loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(model, scale=cfg.scale, gather_across_devices=gather_across_devices())
    if cfg.loss == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, scale=cfg.scale, mini_batch_size=cfg.mini_batch_size,
                                                         gather_across_devices=gather_across_devices())
    if cfg.loss == "triplet":
        return losses.TripletLoss(model, triplet_margin=cfg.triplet_margin)
    if cfg.loss == "gist":
        if guide is None:
            raise TrainConfigError("train.loss: 'gist' needs a guide model")
        return losses.GISTEmbedLoss(model, guide, temperature=cfg.gist_temperature,
                                    gather_across_devices=gather_across_devices())
    if cfg.loss in DISTILL_LOSSES:
        from embedforge.training.distill import ScaledCosine, WeightedSum

        student = ScaledCosine(cfg.scale)
        loss = (losses.MarginMSELoss(model, similarity_fct=student) if cfg.loss == "margin_mse"
                else losses.DistillKLDivLoss(model, similarity_fct=student, temperature=1.0))
        if cfg.mnrl_weight > 0:
            return WeightedSum(model, loss, losses.MultipleNegativesRankingLoss(model, scale=cfg.scale),
                               cfg.mnrl_weight)
        return loss
    raise TrainConfigError(f"train.loss: unknown loss {cfg.loss!r}")


def build_loss(model: SentenceTransformer, cfg: TrainConfig, guide: SentenceTransformer | None = None) -> nn.Module:
    """The configured loss, wrapped in MatryoshkaLoss when ``matryoshka_dims`` is not empty, then in
    :class:`~embedforge.training.distill.StartModelAnchor` when ``anchor_weight`` > 0 (``guide``: the frozen start
    model)."""
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    loss = base_loss(model, cfg, guide)
    if cfg.matryoshka_dims:
        dims = check_matryoshka_dims(cfg.matryoshka_dims, int(model.get_embedding_dimension()))
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=dims, matryoshka_weights=cfg.matryoshka_weights)
    if cfg.anchor_weight > 0:
        from embedforge.training.distill import StartModelAnchor

        if guide is None:
            raise TrainConfigError("train.anchor_weight: needs the frozen start model")
        loss = StartModelAnchor(model, loss, guide, cfg.anchor_weight, cfg.scale)
    return loss
