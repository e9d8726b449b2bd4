"""Drift between embedding sets, clustering coherence, suite validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedforge.data.schemas import embeddings_schema
from embedforge.data.shards import ShardWriter, shard_name
from embedforge.evaluation.clustering import coherence
from embedforge.evaluation.drift import drift_metrics, drift_verdict, load_embeddings
from embedforge.evaluation.suite import SuiteError, check_expectations, load_suite


def _clusters(rng: np.random.Generator, centers: np.ndarray, n: int, noise: float = 0.3) -> tuple[np.ndarray, list[int]]:
    labels = rng.integers(0, len(centers), n)
    return centers[labels] + noise * rng.normal(size=(n, centers.shape[1])), labels.tolist()


def test_same_distribution_does_not_drift_and_shifted_one_does() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 32))
    a, _ = _clusters(rng, centers, 600)
    b, _ = _clusters(rng, centers, 600)
    c, _ = _clusters(rng, centers + rng.normal(size=32) * 1.5, 600)
    same = drift_metrics(a, b, sample=400, permutations=50)
    shifted = drift_metrics(a, c, sample=400, permutations=50)
    assert same["centroid_cosine"] > 0.97 and shifted["centroid_cosine"] < same["centroid_cosine"]
    assert shifted["mmd"] > 5 * max(same["mmd"], 1e-4)
    assert shifted["mmd_p_value"] < 0.05 < same["mmd_p_value"]
    assert shifted["ks_mean"] > same["ks_mean"]
    assert drift_verdict(same, 0.95, 0.05) == []
    assert drift_verdict(shifted, 0.95, 0.05)
    with pytest.raises(ValueError, match="same dimension"):
        drift_metrics(a, a[:, :8])


def test_coherence_rewards_label_structure() -> None:
    rng = np.random.default_rng(1)
    x, labels = _clusters(rng, rng.normal(size=(3, 16)) * 3, 300, noise=0.5)
    good = coherence(x, labels)
    bad = coherence(x, rng.permutation(labels).tolist())
    assert good["silhouette"] > 0.3 > bad["silhouette"]
    assert good["nmi"] > 0.8 and bad["nmi"] < 0.1
    with pytest.raises(ValueError, match="at least 2 labels"):
        coherence(x, [1] * len(x))


def test_load_embeddings_from_shards_and_npy(tmp_path: Path) -> None:
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    schema = embeddings_schema(4).append(pa.field("topic", pa.string()))
    table = pa.table({"id": ["a", "b", "c"], "chunk_id": ["a", "b", "c"], "doc_version": ["v"] * 3,
                      "model_id": ["m"] * 3, "dim": [4] * 3, "vector": vecs.tolist(), "topic": ["x", "y", "x"]},
                     schema=schema)
    ShardWriter(tmp_path / "emb").write(shard_name(0), table)
    loaded, labels = load_embeddings(tmp_path / "emb", "topic")
    assert np.array_equal(loaded, vecs) and labels == ["x", "y", "x"]
    np.save(tmp_path / "e.npy", vecs)
    assert np.array_equal(load_embeddings(tmp_path / "e.npy")[0], vecs)
    with pytest.raises(ValueError, match="no label column 'genre'"):
        load_embeddings(tmp_path / "emb", "genre")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_embeddings(tmp_path / "missing")


def test_suite_validation_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [x]\nmodels: [bm25]\ndims: [384]\ncolour: red\n")
    with pytest.raises(SuiteError, match=r"bad\.yaml: invalid suite: colour: Extra inputs"):
        load_suite(bad)
    (tmp_path / "data").mkdir()
    good = tmp_path / "good.yaml"
    good.write_text("datasets: [data, {path: builtin:adi}]\nmodels: [bm25]\n"
                    "expect: [{dataset: adi, model: bm25, value: 0.42, tolerance: 0.01}]\n")
    suite = load_suite(good)
    assert suite.datasets[0].path == str((tmp_path / "data").resolve())
    assert suite.datasets[1].path == "builtin:adi"
    checks = check_expectations([{"dataset": "adi", "model": "bm25", "dim": None, "quantization": "none",
                                  "ndcg_at_10": 0.425}], suite.expect)
    assert checks[0]["ok"] and checks[0]["measured"] == 0.425
    assert not check_expectations([], suite.expect)[0]["ok"]
    assert suite.expect[0].informative is False
