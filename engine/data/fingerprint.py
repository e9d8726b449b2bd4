"""Content fingerprints of input files: every byte counts, so any edit re-runs the stages that read them.

Local files are hashed whole with XXH3-128 (``xxhash``), streamed in 8 MiB blocks: several GB/s on one core,
so a 1 GB corpus costs well under a second once in the page cache (``benchmarks/bench_hash.py`` measures it
against BLAKE3 and SHA-256). XXH3 is not a cryptographic hash; it guards against stale outputs, not against an
adversary crafting collisions. Within one process a file's hash is remembered by (path, size, mtime, inode), so
``validate`` + ``run`` read it once.

Files on an object store (an fsspec URL) are fingerprinted by the store's own checksum (ETag, md5, crc32c, …)
plus the size, without reading the bytes.

>>> file_fingerprint(Path("corpus.jsonl"))  # doctest: +SKIP
'a3f0c2…'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import xxhash

BLOCK = 8 << 20
_memo: dict[tuple[str, int, int, int], str] = {}
_STORE_KEYS = ("ETag", "etag", "md5Hash", "md5", "crc32c", "checksum", "ContentMD5", "sha256", "version_id")


def file_fingerprint(path: Path) -> str:
    """32-hex XXH3-128 of every byte of ``path`` (with its size)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _memo:
        return _memo[key]
    digest = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as fh:
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    out = f"{st.st_size}:{digest.hexdigest()}"
    _memo[key] = out
    return out


def store_fingerprint(url: str) -> str:
    """The object store's checksum of ``url`` plus its size (nothing is downloaded)."""
    from embedforge.data.run_storage import filesystem

    fs, path = filesystem(url)
    info = fs.info(path)
    checksum = next((str(info[k]) for k in _STORE_KEYS if info.get(k)), None)
    if checksum is None:  # a store without content checksums: fsspec's own token of the file's metadata
        checksum = str(fs.checksum(path))
    return f"{info.get('size')}:{checksum}"


def files_fingerprint(files: Iterable[tuple[str, Path]]) -> str:
    """One hash over (relative name, content fingerprint) pairs, in the given order."""
    digest = xxhash.xxh3_128()
    for name, path in files:
        digest.update(f"{name}\0{file_fingerprint(path)}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def tree_fingerprint(root: Path) -> str:
    """Fingerprint of a file or of every file under a directory (relative names, sorted)."""
    if root.is_file():
        return files_fingerprint([(root.name, root)])
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return files_fingerprint((os.fsdecode(p.relative_to(root)), p) for p in files)


def path_fingerprint(ref: str) -> str:
    """Fingerprint of a file or directory named in a config (``builtin:NAME``, a path, or an fsspec URL);
    ``missing:<ref>`` when it cannot be read (the job's preflight reports why)."""
    from embedforge.data.ingest import resolve_path
    from embedforge.data.run_storage import is_url

    try:
        if is_url(ref):
            return store_fingerprint(ref)
        return tree_fingerprint(resolve_path(ref))
    except (OSError, ValueError):
        return f"missing:{ref}"
