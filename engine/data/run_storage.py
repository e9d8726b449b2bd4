"""Run directories on shared storage addressed by fsspec URLs (``s3://``, ``gs://``, ``file://``, ``memory://``).

Stages keep working on local files: with ``run_dir: s3://bucket/runs`` each stage runs in a local scratch copy
(``$EMBEDFORGE_SCRATCH``, default ``~/.cache/embedforge/scratch``, one folder per URL), and the runner

- checks completion on the storage (``<url>/<job>/<stage>-<hash>/_SUCCESS``, and reads the manifest there), so
  every node sees the same state;
- pulls an upstream stage's finished directory into scratch before a stage that needs it (once per machine);
- pushes a finished stage directory with :func:`push`: every file except ``manifest.json`` and ``_SUCCESS``
  first, then ``manifest.json``, then ``_SUCCESS`` — so a stage is visible as complete only once it is.

A plain path (or no scheme) is a local run dir and none of this applies.

>>> is_url("s3://bucket/runs"), is_url("/shared/runs")
(True, False)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("embedforge.storage")

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
_LAST = (MANIFEST, SUCCESS)


def is_url(run_dir: str) -> bool:
    """True for an fsspec URL (``scheme://…``), False for a local path."""
    return "://" in run_dir


def join(url: str, *parts: str) -> str:
    """``join("s3://b/runs", "job", "chunk-abc")`` → ``s3://b/runs/job/chunk-abc``."""
    return "/".join([url.rstrip("/"), *parts])


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it (``s3`` needs ``s3fs``, ``gs`` needs ``gcsfs``)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"run_dir {url}: {exc} (install the fsspec backend of this scheme, e.g. s3fs or gcsfs)"
                         ) from None
    return fs, path


def scratch_dir(run_dir: str) -> Path:
    """Local scratch root mirroring the run dir URL ``run_dir`` (``$EMBEDFORGE_SCRATCH/<url hash>``)."""
    from engine.generation.gguf_convert import cache_root

    root = Path(os.environ.get("EMBEDFORGE_SCRATCH") or cache_root() / "scratch").expanduser()
    return root / hashlib.sha256(run_dir.rstrip("/").encode()).hexdigest()[:12]


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def read_json(url: str) -> dict[str, Any]:
    """A JSON file on the storage ({} when absent)."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return {}
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read().decode("utf-8"))


def remove(url: str) -> None:
    """Delete a stage directory on the storage (``--force``)."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def glob(url_pattern: str) -> list[str]:
    """URLs matching a glob pattern on the storage."""
    fs, path = filesystem(url_pattern)
    return [fs.unstrip_protocol(p) for p in sorted(fs.glob(path))]


def push(local_dir: Path, url: str) -> int:
    """Upload a finished stage directory; ``manifest.json`` then ``_SUCCESS`` go last. Returns files uploaded.

    Files are uploaded one by one (object stores have no atomic directory rename); readers trust a stage
    directory only once ``_SUCCESS`` is there, and that comes after everything else.
    """
    fs, root = filesystem(url)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
    body = [p for p in files if p.relative_to(local_dir).as_posix() not in _LAST]
    last = [local_dir / name for name in _LAST if (local_dir / name).is_file()]
    if fs.exists(f"{root}/{SUCCESS}"):  # a re-push (--force): retract completion first
        fs.rm(f"{root}/{SUCCESS}")
    for p in [*body, *last]:
        target = f"{root}/{p.relative_to(local_dir).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(p), target)
    log.info("pushed %d files → %s", len(files), url)
    return len(files)


def pull(url: str, local_dir: Path) -> int:
    """Download a finished stage directory into ``local_dir`` (``_SUCCESS`` last). Returns files downloaded."""
    fs, root = filesystem(url)
    if not fs.exists(f"{root}/{SUCCESS}"):
        raise FileNotFoundError(f"{url} is not a finished stage directory (no {SUCCESS})")
    staging = local_dir.with_name(f".{local_dir.name}.pull")
    shutil.rmtree(staging, ignore_errors=True)
    remote = sorted(p for p in fs.find(root) if not p.endswith("/"))
    prefix = root.rstrip("/") + "/"
    names = [p.removeprefix(prefix) for p in remote if p.startswith(prefix)]
    names.sort(key=lambda n: n == SUCCESS)
    for name in names:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(prefix + name, str(target))
    shutil.rmtree(local_dir, ignore_errors=True)
    os.replace(staging, local_dir)
    log.info("pulled %d files ← %s", len(names), url)
    return len(names)
