"""embedforge: a domain corpus in, a domain-tuned embedding model and its embeddings out."""

import os as _os

# Models resolve to local directories before any loader sees them (embedforge.models), so transformers never
# looks a name up on the hub by itself; a user's HF_HUB_OFFLINE (or its absence) decides whether
# embedforge.models may download a hub id that is not in the local cache.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # one version, the one pyproject.toml declares
    from importlib.metadata import PackageNotFoundError as _Missing
    from importlib.metadata import version as _version

    __version__ = _version("embedforge")
except _Missing:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"
