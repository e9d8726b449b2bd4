"""Run directories on shared storage addressed by fsspec URLs (``s3://``, ``gs://``, ``file://``, ``memory://``).

Stages keep working on local files: with ``run_dir: s3://bucket/runs`` each stage runs in a local scratch copy
(``$EMBEDFORGE_SCRATCH``, default ``~/.cache/embedforge/scratch``, one folder per URL), and the runner

- checks completion on the storage (``<url>/<job>/<stage>-<hash>/_SUCCESS``, and reads the manifest there), so
  every node sees the same state;
- pulls an upstream stage's finished directory into scratch before a stage that needs it (once per machine);
- pushes a finished stage directory with :func:`push`: every file except ``manifest.json`` and ``_SUCCESS``
  first, then ``manifest.json``, then ``_SUCCESS`` — so a stage is visible as complete only once it is;
- pushes the shards done so far when a stage stops with an error, and pulls them on a machine that starts the
  stage with an empty scratch, so a failed stage resumes anywhere (a SIGKILLed one only where it ran).

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
    from embedforge.generation.gguf_convert import cache_root

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


def _upload_order(rel: str) -> tuple[int, str]:
    """Counters and quarantine before shards (a shard is the commit point of its counters), then
    ``manifest.json``, then ``_SUCCESS``."""
    if rel in _LAST:
        return 3 + _LAST.index(rel), rel
    return (1 if rel.startswith("shards/") else 0), rel


def push(local_dir: Path, url: str, *, partial: bool = False) -> int:
    """Upload a stage directory; returns the files uploaded.

    Finished (``partial=False``): everything, then ``manifest.json``, then ``_SUCCESS``. Files are uploaded one
    by one (object stores have no atomic directory rename); readers trust a stage directory only once
    ``_SUCCESS`` is there, and that comes last. ``partial=True`` uploads the shards done so far (with their
    counters and quarantine first) of a stage that stopped, so another machine can resume it.
    """
    fs, root = filesystem(url)
    files = [p for p in local_dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]
    rels = sorted((p.relative_to(local_dir).as_posix() for p in files), key=_upload_order)
    if partial:
        rels = [r for r in rels if r not in _LAST]
    if fs.exists(f"{root}/{SUCCESS}"):  # a re-push (--force): retract completion first
        fs.rm(f"{root}/{SUCCESS}")
    for rel in rels:
        target = f"{root}/{rel}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(local_dir / rel), target)
    log.info("pushed %d files%s → %s", len(rels), " (partial stage)" if partial else "", url)
    return len(rels)


def pull(url: str, local_dir: Path, *, partial: bool = False) -> int:
    """Download a stage directory into ``local_dir``; returns the files downloaded.

    A finished one (``_SUCCESS`` required, downloaded last) by default; ``partial=True`` takes the shards a
    stopped run pushed (no ``_SUCCESS`` expected), to resume that stage here.
    """
    fs, root = filesystem(url)
    if not partial and not fs.exists(f"{root}/{SUCCESS}"):
        raise FileNotFoundError(f"{url} is not a finished stage directory (no {SUCCESS})")
    staging = local_dir.with_name(f".{local_dir.name}.pull")
    shutil.rmtree(staging, ignore_errors=True)
    remote = sorted(p for p in fs.find(root) if not p.endswith("/")) if fs.exists(root) else []
    prefix = root.rstrip("/") + "/"
    names = sorted((p.removeprefix(prefix) for p in remote if p.startswith(prefix)), key=_upload_order)
    staging.mkdir(parents=True)
    for name in names:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(prefix + name, str(target))
    shutil.rmtree(local_dir, ignore_errors=True)
    os.replace(staging, local_dir)
    log.info("pulled %d files%s ← %s", len(names), " (partial stage)" if partial else "", url)
    return len(names)
