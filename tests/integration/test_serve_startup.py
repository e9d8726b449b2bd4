"""``embedforge serve`` refuses to start (clear message, exit code 2) when it cannot serve safely."""

from __future__ import annotations

import shutil
from pathlib import Path


def test_incomplete_model_dir_is_refused_naming_what_is_missing(
    cli, minilm_path: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(
        minilm_path, model, ignore=shutil.ignore_patterns("tokenizer.json", "vocab.txt", "model.safetensors")
    )
    (model / "pytorch_model.bin").write_bytes(b"pickle")
    proc = cli("serve", str(model), "--port", "9", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "cannot be served" in output and "missing tokenizer" in output
    assert "only pytorch_model.bin found" in output and "safetensors only" in output
    assert "Traceback" not in output


def test_named_but_empty_key_variable_is_refused(cli) -> None:
    proc = cli(
        "serve",
        "all-MiniLM-L6-v2",
        "--api-key-env",
        "EMBEDFORGE_UNSET_KEY_VAR",
        check=False,
        env={"EMBEDFORGE_UNSET_KEY_VAR": ""},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "EMBEDFORGE_UNSET_KEY_VAR is not set or empty" in output, output
