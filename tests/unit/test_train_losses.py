"""Loss building (library losses in MatryoshkaLoss), trainer arguments, and the adapter's pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embedforge import device as dev
from embedforge.configs.train import TrainConfig
from embedforge.training.adapter import adapter_modules, apply_adapter, matryoshka_mnrl
from embedforge.training.arguments import precision_flags, training_arguments
from embedforge.training.checkpoints import last_checkpoint, publish_dir
from embedforge.training.losses import TrainConfigError, build_loss


def test_default_loss_is_mnrl_in_matryoshka(st_model) -> None:
    from sentence_transformers.sentence_transformer import losses

    loss = build_loss(st_model, TrainConfig())
    assert isinstance(loss, losses.MatryoshkaLoss)
    assert isinstance(loss.loss, losses.MultipleNegativesRankingLoss)
    assert list(loss.matryoshka_dims) == [384, 256, 128, 64]


def test_each_configured_loss_is_built(st_model) -> None:
    from sentence_transformers.sentence_transformer import losses

    cached = build_loss(st_model, TrainConfig(loss="cached_mnrl", mini_batch_size=4, matryoshka_dims=[384, 32]))
    assert isinstance(cached.loss, losses.CachedMultipleNegativesRankingLoss) and cached.loss.mini_batch_size == 4
    assert isinstance(build_loss(st_model, TrainConfig(loss="triplet", matryoshka_dims=[])), losses.TripletLoss)
    gist = build_loss(st_model, TrainConfig(loss="gist"), guide=st_model)
    assert isinstance(gist.loss, losses.GISTEmbedLoss) and gist.loss.guide is st_model
    with pytest.raises(TrainConfigError, match="guide"):
        build_loss(st_model, TrainConfig(loss="gist"))
    with pytest.raises(TrainConfigError, match=r"train\.matryoshka_dims"):
        build_loss(st_model, TrainConfig(matryoshka_dims=[1024, 384]))


def test_training_arguments_follow_the_config(tmp_path: Path) -> None:
    from sentence_transformers.base.sampler import BatchSamplers

    cpu = torch.device("cpu")
    cfg = TrainConfig(batch_size=8, gradient_accumulation_steps=2, optimizer="adamw_8bit", eval_steps=5,
                      max_steps=10, warmup_ratio=0.2, gradient_checkpointing=True)
    args = training_arguments(cfg, output_dir=tmp_path, device=cpu, seed=3, primary_metric="val_ndcg@10_d384")
    assert args.batch_sampler == BatchSamplers.NO_DUPLICATES
    assert args.optim == "adamw_bnb_8bit" and args.gradient_checkpointing
    assert args.metric_for_best_model == "eval_val_ndcg@10_d384" and args.load_best_model_at_end
    assert args.save_steps == args.eval_steps == 5 and args.max_steps == 10 and args.warmup_steps == 0.2
    assert args.bf16 == dev.cpu_native_bf16() and not args.fp16 and args.use_cpu and args.seed == 3
    assert precision_flags(TrainConfig(precision="bf16"), cpu) == {"bf16": True, "fp16": False}
    # auto on CPU: bf16 only where the CPU has native bf16 (emulated bf16 is far slower than fp32)
    assert precision_flags(TrainConfig(), cpu) == {"bf16": dev.cpu_native_bf16(), "fp16": False}
    with pytest.raises(RuntimeError, match=r"fp16.*CUDA"):
        precision_flags(TrainConfig(precision="fp16"), cpu)
    no_eval = training_arguments(TrainConfig(), output_dir=tmp_path, device=cpu, seed=3, primary_metric=None)
    assert no_eval.eval_strategy == "no" and not no_eval.load_best_model_at_end


def test_adapter_starts_as_identity_and_loss_sums_dims() -> None:
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    for kind in ("linear", "two_layer"):
        layers = torch.nn.Sequential(*adapter_modules(16, kind))
        assert torch.allclose(apply_adapter(layers, x.clone()), x)
    with pytest.raises(ValueError, match="adapter_kind"):
        adapter_modules(16, "mlp")
    q, p = torch.randn(4, 16), torch.randn(4, 16)
    both = matryoshka_mnrl(q, p, None, [16, 8], scale=20)
    assert torch.isclose(both, matryoshka_mnrl(q, p, None, [16], 20) + matryoshka_mnrl(q, p, None, [8], 20))
    assert matryoshka_mnrl(q, q, None, [16], 20) < matryoshka_mnrl(q, p, None, [16], 20)  # matching pairs score best
    negs = torch.randn(4, 2, 16)
    assert matryoshka_mnrl(q, p, negs, [16], 20) > matryoshka_mnrl(q, p, None, [16], 20)


def test_last_checkpoint_skips_and_removes_torn_ones(tmp_path: Path) -> None:
    for step, complete in ((2, True), (4, True), (6, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "modules.json").write_text("[]")
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()
    assert last_checkpoint(tmp_path / "missing") is None


def test_publish_dir_replaces_atomically(tmp_path: Path) -> None:
    final = tmp_path / "model"
    publish_dir(final, lambda d: (d / "a.txt").write_text("1"))
    publish_dir(final, lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    def broken(d: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        publish_dir(final, broken)
    assert (final / "b.txt").read_text() == "2"  # the published model is untouched by a failed write


def test_lora_merge_keeps_the_adapted_outputs_and_saves_a_plain_model(minilm_path: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from embedforge.training.lora import add_lora, merge_lora

    model = SentenceTransformer(str(minilm_path), device="cpu")
    total = sum(p.numel() for p in model.parameters())
    trainable = add_lora(model, r=4, alpha=8, dropout=0.0)
    assert 0 < trainable < total / 50
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained adapter: B is no longer zero
    texts = ["glucose uptake in muscle", "a second sentence"]
    adapted = model.encode(texts)
    assert not np.allclose(adapted, SentenceTransformer(str(minilm_path), device="cpu").encode(texts), atol=1e-4)
    assert merge_lora(model) > 0
    np.testing.assert_allclose(model.encode(texts), adapted, atol=1e-5)
    model.save(str(tmp_path / "m"))
    assert (tmp_path / "m" / "model.safetensors").is_file() and not (tmp_path / "m" / "adapter_config.json").exists()
    np.testing.assert_allclose(SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(texts), adapted, atol=1e-5)


def test_start_model_anchor_adds_the_kl_to_the_start_models_batch_rankings(minilm_path: Path) -> None:
    import copy

    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    from embedforge.training.distill import StartModelAnchor

    start = SentenceTransformer(str(minilm_path), device="cpu")
    student = copy.deepcopy(start).eval()
    queries = ["glucose uptake in muscle", "tumour suppressor genes", "vitamin d and bone density"]
    passages = ["Insulin raises glucose uptake by skeletal muscle.", "p53 is a tumour suppressor.",
                "Vitamin D supplements and fractures in the elderly."]

    def features() -> list[dict]:
        return [student.tokenize(queries), student.tokenize(passages)]

    cfg = TrainConfig(anchor_weight=2.0)
    with pytest.raises(TrainConfigError, match=r"train\.anchor_weight"):
        build_loss(student, cfg)
    loss = build_loss(student, cfg, guide=start)
    assert isinstance(loss, StartModelAnchor) and loss.start[0] is start
    plain = build_loss(student, TrainConfig())
    labels = torch.arange(3)
    # the same weights: the anchor adds nothing and the loss is MatryoshkaLoss(MNRL)'s own
    torch.testing.assert_close(loss(features(), labels), plain(features(), labels), atol=1e-5, rtol=0)
    assert loss.kls[-1] < 1e-6
    with torch.no_grad():  # the student drifts
        for p in student[0].auto_model.encoder.layer[-1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    total, main = loss(features(), labels), float(plain(features(), labels).detach())
    q0, p0 = (torch.as_tensor(start.encode(t)) for t in (queries, passages))  # the oracle: encode, by hand
    q1, p1 = (torch.as_tensor(student.encode(t)) for t in (queries, passages))
    cos = lambda a, b: 20.0 * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # noqa: E731
    kl = F.kl_div(F.log_softmax(cos(q1, p1), -1), F.log_softmax(cos(q0, p0), -1), log_target=True,
                  reduction="batchmean")
    assert kl > 1e-4
    assert loss.kls[-1] == pytest.approx(float(kl), rel=1e-3)
    assert float(total.detach()) == pytest.approx(main + 2.0 * float(kl), rel=1e-4)
    total.backward()  # the gradient reaches the student, never the start model
    assert student[0].auto_model.encoder.layer[-1].output.dense.weight.grad is not None
    assert all(p.grad is None for p in start.parameters())
    with pytest.raises(ValueError, match="anchor_weight"):
        TrainConfig(anchor_weight=1.0, mode="adapter")
    with pytest.raises(ValueError, match="anchor_weight.*cached_mnrl"):
        TrainConfig(anchor_weight=1.0, loss="cached_mnrl")
