"""The fused ONNX graph (ORT transformer optimizer) is exact fp32, is cached, and a bad cached file is rebuilt."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from embedforge.encoding.encoder import Encoder
from embedforge.encoding.onnx_runtime import FUSED_RECIPE, OrtTransformer

TEXTS = ["Vitamin D deficiency is linked to bone loss.", "  leading and trailing spaces  ", "x",
         "A much longer passage about aerodynamic heating of blunt bodies at hypersonic speeds, " * 6,
         "ÜNICODE and MiXeD case text", "Short query?", "What causes the heat transfer to drop near the nose?"]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private ``$EMBEDFORGE_CACHE`` for this module: the export and the fusion run here once."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDFORGE_CACHE", str(root))
        mp.delenv("EMBEDFORGE_ENCODER_BACKEND", raising=False)
        yield root


@pytest.fixture(scope="module")
def torch_encoder(minilm_path: Path) -> Encoder:
    return Encoder(minilm_path, device="cpu", backend="torch")


@pytest.fixture(scope="module")
def fused_encoder(onnx_cache: Path, minilm_path: Path) -> Encoder:
    return Encoder(minilm_path, device="cpu", backend="onnx")


def _ort(enc: Encoder) -> OrtTransformer:
    return OrtTransformer(enc.model[0].auto_model, enc.model_id, enc.input_names)


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(1).min())


def test_fused_graph_is_built_and_matches_torch_fp32(fused_encoder: Encoder, torch_encoder: Encoder) -> None:
    ort_model = _ort(fused_encoder)
    assert ort_model.graph == FUSED_RECIPE and ort_model.path.name == f"model.{FUSED_RECIPE}.onnx"
    ops = [n.op_type for n in onnx.load(str(ort_model.path)).graph.node]
    layers = fused_encoder.model[0].auto_model.config.num_hidden_layers
    assert ops.count("Attention") == layers and ops.count("SkipLayerNormalization") == 2 * layers
    assert "EmbedLayerNormalization" in ops and "Softmax" not in ops  # really fused, not the plain graph
    assert _min_cos(fused_encoder.encode(TEXTS), torch_encoder.encode(TEXTS)) >= 0.9999
    # mixed lengths in one padded batch: padding must not leak into the fused attention
    assert _min_cos(fused_encoder.encode(TEXTS, max_batch_tokens=10_000), torch_encoder.encode(TEXTS)) >= 0.9999


def test_plain_and_fused_graphs_agree_token_by_token(fused_encoder: Encoder) -> None:
    fused = _ort(fused_encoder)
    plain = OrtTransformer(fused_encoder.model[0].auto_model, fused_encoder.model_id, fused_encoder.input_names,
                           fused=False)
    assert plain.graph == "plain" and plain.path.name == "model.onnx"
    features = fused_encoder._pad(fused_encoder._tokenize(TEXTS))
    a, b = fused(features).numpy(), plain(features).numpy()
    keep = features["attention_mask"].astype(bool)
    np.testing.assert_allclose(a[keep], b[keep], atol=2e-4)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_cached_fused_file_is_rebuilt(damage: str, fused_encoder: Encoder, torch_encoder: Encoder) -> None:
    path = _ort(fused_encoder).path
    good = path.read_bytes()
    path.write_bytes({"truncated": good[:len(good) // 3], "garbage": b"not an onnx model" * 100,
                      "empty": b""}[damage])
    rebuilt = _ort(fused_encoder)
    assert rebuilt.graph == FUSED_RECIPE
    onnx.checker.check_model(str(path))  # a whole, valid model again
    features = torch_encoder._pad(torch_encoder._tokenize(TEXTS))
    with torch.inference_mode():
        hidden = rebuilt(features)
    reference = torch_encoder.model[0].auto_model(**{k: torch.from_numpy(v) for k, v in features.items()})
    keep = torch.from_numpy(features["attention_mask"]).bool()
    cos = torch.nn.functional.cosine_similarity(hidden[keep], reference.last_hidden_state[keep].detach(), dim=-1)
    assert float(cos.min()) >= 0.9999


def test_a_damaged_plain_export_is_rebuilt(fused_encoder: Encoder) -> None:
    plain = _ort(fused_encoder).folder / "model.onnx"
    plain.write_bytes(plain.read_bytes()[:1000])
    assert _ort(fused_encoder).graph == FUSED_RECIPE
    onnx.checker.check_model(str(plain))


def test_a_fused_graph_that_fails_the_check_is_refused_and_remembered(fused_encoder: Encoder,
                                                                       torch_encoder: Encoder) -> None:
    """A graph that loads but is not exact (here: the int8 model in the fused file's place) is not used."""
    hf, model_id, names = fused_encoder.model[0].auto_model, fused_encoder.model_id, fused_encoder.input_names
    int8 = OrtTransformer(hf, model_id, names, int8=True)
    fused_path = int8.folder / f"model.{FUSED_RECIPE}.onnx"
    refused = int8.folder / f"model.{FUSED_RECIPE}.refused"
    shutil.copyfile(int8.path, fused_path)
    try:
        chosen = OrtTransformer(hf, model_id, names)
        assert chosen.graph == "plain" and not fused_path.exists()
        assert "min token cosine" in refused.read_text()
        assert OrtTransformer(hf, model_id, names).graph == "plain"  # remembered: not rebuilt on every start
    finally:
        refused.unlink(missing_ok=True)
    assert OrtTransformer(hf, model_id, names).graph == FUSED_RECIPE  # without the marker it is built again


def test_a_backend_choice_measured_before_the_fused_graph_is_measured_again(onnx_cache: Path, minilm_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` records which ONNX graph it timed; a record without it (or of another graph) is stale."""
    import json

    from embedforge import device as dev
    from embedforge.encoding import encoder as enc

    model_id = Encoder(minilm_path, device="cpu", backend="torch").model_id
    key = f"{model_id}|{dev.cpu_model()}"
    stale = {key: {"backend": "torch", "timings": {"onnx": 9.0, "torch": 1.0}}}  # the format before fusion
    (onnx_cache / "encoder_backend.json").write_text(json.dumps(stale))
    monkeypatch.setattr(enc, "_FASTER", {})
    chosen = Encoder(minilm_path, device="cpu")
    saved = json.loads((onnx_cache / "encoder_backend.json").read_text())[key]
    assert saved["onnx_graph"] == FUSED_RECIPE and saved["timings"] != stale[key]["timings"]  # measured again
    assert chosen.onnx_graph == FUSED_RECIPE and chosen.backend == saved["backend"]


def test_int8_passes_its_fidelity_gate_or_is_refused_with_the_figure(fused_encoder: Encoder,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from embedforge.encoding import onnx_runtime

    hf, model_id, names = fused_encoder.model[0].auto_model, fused_encoder.model_id, fused_encoder.input_names
    int8 = OrtTransformer(hf, model_id, names, int8=True)
    assert onnx_runtime.INT8_MIN_COSINE <= int8.int8_cosine < 0.9999  # lossy, within the gate
    monkeypatch.setattr(onnx_runtime, "INT8_MIN_COSINE", 0.99999)
    with pytest.raises(ValueError, match=r"onnx-int8' refused .* min cosine to fp32 on the probe batch is 0\.9"):
        OrtTransformer(hf, model_id, names, int8=True)
