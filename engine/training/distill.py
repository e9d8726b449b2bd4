"""Pieces of the distillation losses: a scaled cosine student score, and a weighted sum of two library losses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class ScaledCosine:
    """Pairwise ``scale · cos(a, b)``: a cosine student on the logit scale of the ranking losses."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.__name__ = "scaled_cosine"

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        from sentence_transformers.util import pairwise_cos_sim

        return self.scale * pairwise_cos_sim(a, b)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}


class WeightedSum(nn.Module):
    """``main + weight · extra`` on one forward pass (each library loss scores the same embeddings)."""

    def __init__(self, model: SentenceTransformer, main: nn.Module, extra: nn.Module, weight: float) -> None:
        super().__init__()
        self.model, self.main, self.extra, self.weight = model, main, extra, weight

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)
        return (self.main.compute_loss_from_embeddings(embeddings, labels)
                + self.weight * self.extra.compute_loss_from_embeddings(embeddings, labels))

    def get_config_dict(self) -> dict[str, Any]:
        return {"main": type(self.main).__name__, "extra": type(self.extra).__name__, "weight": self.weight}
