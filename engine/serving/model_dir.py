"""Check a sentence-transformers directory before serving it: complete, safetensors only, no remote code.

>>> info = check_model_dir(resolve_model("all-MiniLM-L6-v2"))
>>> info.max_seq_length
256

Everything wrong is named in one :class:`ModelDirError`, so a user fixes the directory in one go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
"""Any one of these holds a tokenizer's vocabulary."""
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.bin", "pytorch_model.pt", "model.pt")


class ModelDirError(ValueError):
    """The directory cannot be served; the message lists every problem found."""


@dataclass(frozen=True)
class ModelDirInfo:
    """What the check learned about a servable directory."""

    path: Path
    modules: list[str]
    """Module class names in order, e.g. ``["Transformer", "Pooling", "Normalize"]``."""
    max_seq_length: int | None
    """Longest input in tokens, from the model's files (``None`` when none says)."""


def _read_json(path: Path, problems: list[str]) -> object | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name}: cannot be read as JSON ({exc})")
        return None


def _has_safetensors(folder: Path, problems: list[str]) -> bool:
    """True when ``folder`` holds safetensors weights (single file, or an index whose shards all exist)."""
    if (folder / "model.safetensors").is_file():
        return True
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return False
    data = _read_json(index, problems)
    shards = set((data or {}).get("weight_map", {}).values()) if isinstance(data, dict) else set()
    missing = sorted(s for s in shards if not (folder / s).is_file())
    if missing:
        problems.append(f"{index}: missing shard(s) {', '.join(missing)}")
    return bool(shards) and not missing


def _check_weights(folder: Path, label: str, problems: list[str], required: bool) -> None:
    if _has_safetensors(folder, problems):
        return
    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if pickles:
        problems.append(
            f"{label}: only {', '.join(pickles)} found — embedforge serves safetensors only (pickle "
            "weights can run code); re-save it with SentenceTransformer(...).save(dir) or convert to "
            "model.safetensors"
        )
    elif required:
        problems.append(f"missing weights in {label} (model.safetensors or model.safetensors.index.json)")


def _check_transformer(folder: Path, where: str, problems: list[str]) -> None:
    """``where`` is the module's sub-folder with a trailing slash ('' for the model root)."""
    config = folder / "config.json"
    if (folder / "adapter_config.json").is_file() and not config.is_file():
        problems.append(
            f"{where or 'the model directory'} holds a PEFT adapter, not a full model: serve the "
            "merged model the train stage saves (or merge it with peft's merge_and_unload and save)"
        )
    if not config.is_file():
        problems.append(f"missing {where}config.json (the transformer's configuration)")
    else:
        data = _read_json(config, problems)
        if isinstance(data, dict) and data.get("auto_map"):
            problems.append(
                f"{where}config.json: 'auto_map' asks for custom model code; trust_remote_code is off"
            )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        problems.append(
            f"missing tokenizer in {where or 'the model directory'} (one of {', '.join(TOKENIZER_FILES)})"
        )
    _check_weights(folder, where or "the model directory", problems, required=True)


def check_model_dir(path: str | Path) -> ModelDirInfo:
    """Validate a sentence-transformers directory for serving; :class:`ModelDirError` lists the problems."""
    root = Path(path)
    if not root.is_dir():
        raise ModelDirError(f"{root}: not a directory (expected a sentence-transformers model directory)")
    problems: list[str] = []
    modules_file = root / "modules.json"
    modules: list[dict] = []
    if not modules_file.is_file():
        problems.append(
            "missing modules.json (not a sentence-transformers directory; save the model with "
            "SentenceTransformer.save)"
        )
    else:
        data = _read_json(modules_file, problems)
        if data is not None and not (isinstance(data, list) and all(isinstance(m, dict) for m in data)):
            problems.append("modules.json: expected a list of modules")
        else:
            modules = data or []
    if len(modules) == 1 and str(modules[0].get("type", "")).endswith(".Router"):
        modules = _router_modules(root, problems)  # query and document encoders: each route's modules
    names: list[str] = []
    for i, module in enumerate(modules):
        kind = str(module.get("type", ""))
        name = kind.rsplit(".", 1)[-1]
        names.append(name)
        sub = str(module.get("path", ""))
        folder = root / sub
        label = f"module {i} ({name}, path '{sub or '.'}')"
        if not kind.startswith("sentence_transformers."):
            problems.append(f"{label}: type '{kind}' is custom code; trust_remote_code is off")
        elif name == "Transformer":
            if folder.is_dir():
                _check_transformer(folder, f"{sub}/" if sub else "", problems)
            else:
                problems.append(f"{label}: missing folder {sub}")
        elif name == "Pooling" and not (folder / "config.json").is_file():
            problems.append(f"{label}: missing {sub}/config.json")
        elif folder.is_dir() and sub:
            _check_weights(folder, label, problems, required=False)
    if modules and "Transformer" not in names:
        problems.append("modules.json: no Transformer module (nothing to tokenize and encode with)")
    if problems:
        raise ModelDirError(f"{root} cannot be served:\n  - " + "\n  - ".join(problems))
    transformer = next(m for m in modules if str(m.get("type", "")).endswith(".Transformer"))
    max_len = _max_seq_length(root / str(transformer.get("path", "")))
    return ModelDirInfo(path=root, modules=names, max_seq_length=max_len)


def _router_modules(root: Path, problems: list[str]) -> list[dict]:
    """The modules of every route of a ``Router`` model (``router_config.json``), as modules.json entries."""
    config = _read_json(root / "router_config.json", problems) if (root / "router_config.json").is_file() else None
    if not isinstance(config, dict) or not isinstance(config.get("structure"), dict):
        problems.append("modules.json names a Router but router_config.json is missing or has no 'structure'")
        return []
    types = config.get("types") or {}
    return [{"type": str(types.get(name, "")), "path": name}
            for route in config["structure"].values() for name in route]


def _max_seq_length(folder: Path) -> int | None:
    """Tokens the model reads: ``max_seq_length`` of sentence_bert_config.json (older ST), else the
    tokenizer's ``model_max_length`` (what ST 6 saves), else ``max_position_embeddings``."""
    sources = [
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
        ("config.json", "max_position_embeddings"),
    ]
    for name, key in sources:
        file = folder / name
        data = _read_json(file, []) if file.is_file() else None
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    return None
