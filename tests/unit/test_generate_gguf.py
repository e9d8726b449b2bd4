"""The packaged SmolLM2 GGUF → plain HF directory conversion: cached by the GGUF file's hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedforge.generation.gguf_convert import cache_root, convert_gguf, file_hash, packaged_smollm2_gguf


def test_converted_dir_is_cached_by_file_hash(smollm2_dir: Path) -> None:
    gguf = packaged_smollm2_gguf()
    assert smollm2_dir.name == f"{gguf.stem}-{file_hash(gguf)}"
    assert (smollm2_dir / ".converted").is_file() and (smollm2_dir / "model.safetensors").is_file()
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert "chat_template" in (smollm2_dir / "tokenizer_config.json").read_text() or \
        (smollm2_dir / "chat_template.jinja").is_file()
    assert convert_gguf(gguf, smollm2_dir.parents[1]) == smollm2_dir  # second call reuses it


def test_cache_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBEDFORGE_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("EMBEDFORGE_CACHE")
    assert cache_root() == Path.home() / ".cache" / "embedforge"


def test_missing_gguf_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path)
    assert not (tmp_path / "gguf").exists()
