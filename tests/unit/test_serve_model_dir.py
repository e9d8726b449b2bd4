"""The serving check of model directories: complete, safetensors only, no remote code; every problem named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from embedforge.serving.model_dir import ModelDirError, check_model_dir


def _copy(src: Path, dst: Path, skip: set[str] = frozenset()) -> Path:
    """A cheap copy of a model dir: small files copied, the weights symlinked."""
    for file in src.rglob("*"):
        rel = file.relative_to(src)
        if file.is_dir() or str(rel) in skip:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if file.stat().st_size > 1_000_000:
            target.symlink_to(file)
        else:
            shutil.copy(file, target)
    return dst


def _problems(path: Path) -> str:
    with pytest.raises(ModelDirError) as info:
        check_model_dir(path)
    return str(info.value)


def test_packaged_minilm_is_servable(minilm_path: Path) -> None:
    info = check_model_dir(minilm_path)
    assert info.modules == ["Transformer", "Pooling", "Normalize"]
    assert info.max_seq_length == 256


def test_missing_pieces_are_all_named(minilm_path: Path, tmp_path: Path) -> None:
    model = _copy(
        minilm_path,
        tmp_path / "m",
        skip={"tokenizer.json", "vocab.txt", "model.safetensors", "1_Pooling/config.json"},
    )
    message = _problems(model)
    assert (
        "missing tokenizer" in message and "missing weights" in message and "1_Pooling/config.json" in message
    )
    (model / "config.json").unlink()
    assert "missing config.json" in _problems(model)
    (model / "modules.json").unlink()
    assert "missing modules.json" in _problems(model)
    assert "not a directory" in _problems(tmp_path / "nowhere")


def test_pickle_only_weights_are_refused(minilm_path: Path, tmp_path: Path) -> None:
    model = _copy(minilm_path, tmp_path / "m", skip={"model.safetensors"})
    (model / "pytorch_model.bin").write_bytes(b"not really a pickle")
    message = _problems(model)
    assert "only pytorch_model.bin found" in message and "safetensors only" in message


def test_remote_code_is_refused(minilm_path: Path, tmp_path: Path) -> None:
    model = _copy(minilm_path, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_x.XModel"}}))
    modules = json.loads((model / "modules.json").read_text())
    modules[1]["type"] = "my_package.CustomPooling"
    (model / "modules.json").write_text(json.dumps(modules))
    message = _problems(model)
    assert (
        "auto_map" in message
        and "my_package.CustomPooling" in message
        and "trust_remote_code is off" in message
    )


def test_sharded_safetensors_need_every_shard(minilm_path: Path, tmp_path: Path) -> None:
    model = _copy(minilm_path, tmp_path / "m", skip={"model.safetensors"})
    index = {
        "metadata": {},
        "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "b.weight": "model-00002-of-00002.safetensors",
        },
    }
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    (model / "model-00001-of-00002.safetensors").symlink_to(minilm_path / "model.safetensors")
    assert "missing shard(s) model-00002-of-00002.safetensors" in _problems(model)
    (model / "model-00002-of-00002.safetensors").symlink_to(minilm_path / "model.safetensors")
    assert check_model_dir(model).modules[0] == "Transformer"


def test_directory_saved_by_sentence_transformers_6(st_model, tmp_path: Path) -> None:
    """ST 6 keeps max_seq_length in tokenizer_config.json (model_max_length), not sentence_bert_config."""
    st_model.save(str(tmp_path / "saved"))
    info = check_model_dir(tmp_path / "saved")
    assert info.max_seq_length == st_model.max_seq_length == 256
    assert info.modules == ["Transformer", "Pooling", "Normalize"]


def test_peft_adapter_dir_gets_a_hint(minilm_path: Path, tmp_path: Path) -> None:
    model = _copy(minilm_path, tmp_path / "adapter", skip={"config.json", "model.safetensors"})
    (model / "adapter_config.json").write_text("{}")
    (model / "adapter_model.safetensors").write_bytes(b"")
    assert "holds a PEFT adapter, not a full model" in _problems(model)
