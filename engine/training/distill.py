"""Pieces of the distillation losses: a scaled cosine student score, a weighted sum of two library losses, and an
anchor that keeps the student's in-batch rankings near the start model's."""

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


class StartModelAnchor(nn.Module):
    """``main + weight · KL(start ‖ student)`` over each batch's query × passage scores (learning without forgetting).

    The start model, frozen, scores every query of the batch against every passage of the batch (positives and
    negatives) as ``scale · cos``; the student's scores at full dimension are pulled towards that distribution, so
    rankings the training rows do not ask to change stay as the start model had them. The student's embeddings are
    the ones ``main`` computed (captured from its forward passes, so the student runs once per column); the start
    model adds one forward pass without gradients. Hand-written because sentence-transformers' ``DistillKLDivLoss``
    needs the teacher's scores stored in the rows, and these come from the start model on each batch's own rows.
    """

    def __init__(self, model: SentenceTransformer, main: nn.Module, start: SentenceTransformer, weight: float,
                 scale: float) -> None:
        super().__init__()
        self.model, self.main, self.weight, self.scale = model, main, weight, scale
        self.start = [start.eval().requires_grad_(False)]  # a list: not a submodule (not trained, not saved)
        self.kls: list[float] = []  # each batch's KL, for the stage's manifest

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        import torch
        import torch.nn.functional as F

        features = list(sentence_features)
        inputs = [{k: v for k, v in f.items() if k not in ("token_embeddings", "sentence_embedding")} for f in features]
        captured: list[Tensor] = []
        original = self.model.forward

        def capture(batch: dict[str, Tensor]) -> dict[str, Tensor]:
            output = original(batch)
            captured.append(output["sentence_embedding"])  # full dimension, before MatryoshkaLoss shrinks it
            return output

        self.model.forward = capture
        try:
            loss = self.main(features, labels)
        finally:
            self.model.forward = original
        if len(captured) < 2:
            raise RuntimeError("StartModelAnchor: the wrapped loss did not embed a query and a passage column")
        student_q, student_p = captured[0], torch.cat(captured[1:])
        with torch.no_grad():
            start_q, *start_p = [self.start[0](f)["sentence_embedding"] for f in inputs]
        student = self.scale * F.normalize(student_q, dim=-1) @ F.normalize(student_p, dim=-1).T
        teacher = self.scale * F.normalize(start_q, dim=-1) @ F.normalize(torch.cat(start_p), dim=-1).T
        kl = F.kl_div(F.log_softmax(student.float(), -1), F.log_softmax(teacher.float(), -1), log_target=True,
                      reduction="batchmean")
        self.kls.append(float(kl.detach()))
        return loss + self.weight * kl

    def get_config_dict(self) -> dict[str, Any]:
        return {"main": type(self.main).__name__, "weight": self.weight, "scale": self.scale}
