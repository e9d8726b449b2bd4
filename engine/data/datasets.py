"""Named evaluation datasets: ``beir:scifact`` in a job → a BEIR directory in the local dataset cache.

``embedforge datasets get scifact`` downloads BEIR's published archive, checks its sha256 and md5, unpacks it into
``$EMBEDFORGE_DATASETS/<name>/`` (default ``~/.cache/embedforge/datasets``) and checks the unpacked files against
the known document, judged-query and judgement counts. Offline, ``--from PATH`` copies a local BEIR directory and
runs the same checks. Each ready dataset holds ``.embedforge-dataset.json`` (source, counts, sha256 per file), and
only a directory with that file counts as present, so an interrupted copy is never used.

The download is plain ``urllib`` + ``zipfile``: the ``beir`` and ``ir_datasets`` packages would add large dependency
trees for one HTTP GET and one unzip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedforge.data.beir import BeirDataset

PREFIX = "beir:"
MARKER = ".embedforge-dataset.json"
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


@dataclass(frozen=True)
class KnownDataset:
    """A dataset ``datasets get`` knows: where its archive is and what a correct copy contains."""

    name: str
    docs: int
    """Documents in ``corpus.jsonl``."""
    test_queries: int
    """Distinct queries judged in ``qrels/test.tsv``."""
    test_judgements: int
    """Rows of ``qrels/test.tsv`` (header excluded)."""
    url: str | None = None
    """Archive URL; ``None``: no public BEIR archive, only ``--from PATH``."""
    sha256: str | None = None
    """sha256 of the archive."""
    md5: str | None = None
    """md5 of the archive as BEIR publishes it."""
    license: str = ""
    """The data's license, as its authors state it."""


KNOWN: dict[str, KnownDataset] = {d.name: d for d in (
    KnownDataset("scifact", 5183, 300, 339, BEIR_URL.format(name="scifact"),
                 "536e14446a0ba56ed1398ab1055f39fe852686ecad24a6306c80c490fa8e0165",
                 "5f7d1de60b170fc8027bb7898e2efca1", "CC BY 4.0 (claims), ODC-By 1.0 (abstracts)"),
    KnownDataset("nfcorpus", 3633, 323, 12334, BEIR_URL.format(name="nfcorpus"),
                 "efe5be03f8c5b86a5870102d0599d227c8c6e2484328e68c6522560385671b0b",
                 "a89dba18a62ef92f7d323ec890a0d38d", "free academic use (see the NFCorpus site)"),
    KnownDataset("fiqa", 57638, 648, 1706, BEIR_URL.format(name="fiqa"),
                 "32c7df99ed21252fdfb2cf3f5673502a8d245ee0c44c4a133570d92ce2b3ad02",
                 "17918ed23cd04fb15047f73e6c3bd9d9", "CC BY-SA 4.0"),
    KnownDataset("cranfield", 1400, 225, 1612, license="research use (Glasgow IR test collections)"),
)}
"""Datasets ``embedforge datasets get`` knows by name."""


class DatasetError(ValueError):
    """A dataset that is unknown, absent, or whose files fail the checks; the message says what to do."""


class DatasetMissing(DatasetError, FileNotFoundError):
    """``beir:NAME`` names a dataset that is not in the cache (callers that handle a missing path handle this)."""


def cache_root() -> Path:
    """``$EMBEDFORGE_DATASETS``, else ``$XDG_CACHE_HOME/embedforge/datasets`` (``~/.cache/…``). Not under
    ``$EMBEDFORGE_CACHE``: a run with fresh computation caches should still find the datasets."""
    if os.environ.get("EMBEDFORGE_DATASETS"):
        return Path(os.environ["EMBEDFORGE_DATASETS"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "embedforge" / "datasets"


def is_dataset_ref(ref: str) -> bool:
    """``beir:NAME`` names a dataset of the cache."""
    return ref.startswith(PREFIX)


def resolve_dataset(ref: str) -> Path:
    """``beir:scifact`` → its directory in the cache; raises :class:`DatasetError` telling how to get it."""
    name = ref[len(PREFIX):] if is_dataset_ref(ref) else ref
    target = cache_root() / name
    if (target / MARKER).is_file():
        return target
    how = (f"embedforge datasets get {name}" if name in KNOWN and KNOWN[name].url else
           f"embedforge datasets get {name} --from PATH/TO/{name}")
    known = f" (known: {', '.join(sorted(KNOWN))})" if name not in KNOWN else ""
    raise DatasetMissing(f"dataset '{name}' is not in {cache_root()}{known}; run: {how}")


def count(root: Path) -> dict[str, int]:
    """Documents, judged test queries and test judgements of a BEIR directory."""
    with open(root / "corpus.jsonl", "rb") as fh:
        docs = sum(1 for line in fh if line.strip())
    rows = [line.split("\t") for line in (root / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
            if line.strip()]
    return {"docs": docs, "test_queries": len({r[0] for r in rows}), "test_judgements": len(rows)}


def check(root: Path, known: KnownDataset | None, label: str | None = None) -> dict[str, int]:
    """Raise :class:`DatasetError` unless ``root`` is a BEIR directory with the counts ``known`` expects."""
    label = label or str(root)
    for need in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        if not (root / need).is_file():
            raise DatasetError(f"{label}: missing {need} (BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    found = count(root)
    if known is not None:
        expected = {"docs": known.docs, "test_queries": known.test_queries, "test_judgements": known.test_judgements}
        wrong = [f"{k} {found[k]} (expected {v})" for k, v in expected.items() if found[k] != v]
        if wrong:
            raise DatasetError(f"{label}: not a complete copy of {known.name}: {', '.join(wrong)}")
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _copy_tree(source: Path, target: Path) -> None:
    """Copy files only (not permissions: a read-only source must not give a cache entry that cannot be replaced)."""
    for path in sorted(source.rglob("*")):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif path.is_file() and path.name != MARKER:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)


def _finish(staging: Path, name: str, source: str, known: KnownDataset | None, label: str) -> Path:
    """Check the staged copy, write its marker and move it into place."""
    counts = check(staging, known, label)
    files = {str(p.relative_to(staging)): _sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    (staging / MARKER).write_text(json.dumps({"name": name, "source": source, **counts, "sha256": files}, indent=2))
    target = cache_root() / name
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def _download(known: KnownDataset, work: Path) -> Path:
    archive = work / f"{known.name}.zip"
    try:
        with urllib.request.urlopen(known.url, timeout=60) as response, open(archive, "wb") as out:  # noqa: S310
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        raise DatasetError(f"cannot download {known.url} ({exc}); offline, copy a local BEIR directory with: "
                           f"embedforge datasets get {known.name} --from PATH") from None
    data = archive.read_bytes()
    for algo, want in (("sha256", known.sha256), ("md5", known.md5)):
        if want and hashlib.new(algo, data).hexdigest() != want:
            raise DatasetError(f"{known.url}: {algo} {hashlib.new(algo, data).hexdigest()} is not the published {want}")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(work / "unzipped")
    return work / "unzipped" / known.name


def get(name: str, from_path: str | Path | None = None, force: bool = False) -> Path:
    """Make dataset ``name`` present in the cache (download, or copy ``from_path``) and return its directory.

    >>> get("scifact", from_path="/data/beir/scifact")  # doctest: +SKIP
    PosixPath('/home/me/.cache/embedforge/datasets/scifact')
    """
    name = name[len(PREFIX):] if is_dataset_ref(name) else name
    known = KNOWN.get(name)
    if not force and (cache_root() / name / MARKER).is_file():
        return cache_root() / name
    if from_path is None and (known is None or known.url is None):
        raise DatasetError(f"dataset '{name}' has no download URL (known downloads: "
                           f"{', '.join(n for n, k in sorted(KNOWN.items()) if k.url)}); use --from PATH")
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root(), prefix=f".{name}-") as work:
        staging = Path(work) / name
        if from_path is not None:
            source = Path(from_path).expanduser()
            if not source.is_dir():
                raise DatasetError(f"{source}: not a directory")
            _copy_tree(source, staging)
            origin, label = f"local copy {source.name}", str(source)
        else:
            shutil.move(_download(known, Path(work)), staging)
            origin = label = known.url
        return _finish(staging, name, origin, known, label)


def present() -> list[dict]:
    """Datasets in the cache, with their counts and source."""
    root = cache_root()
    if not root.is_dir():
        return []
    return [json.loads((p / MARKER).read_text()) for p in sorted(root.iterdir()) if (p / MARKER).is_file()]


def require(name: str) -> Path:
    """For scripts (benchmarks): the cached dataset's directory, or exit with the command that fetches it."""
    try:
        return resolve_dataset(f"{PREFIX}{name}")
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}") from None


def write_beir(dataset: BeirDataset, out: str | Path, split: str = "test") -> Path:
    """Write ``dataset`` as a BEIR directory (``corpus.jsonl`` with each passage as it is embedded,
    ``queries.jsonl``, ``qrels/<split>.tsv``), which BEIR, MTEB-style loaders and ``load_beir`` read back."""
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, text in zip(dataset.corpus_ids, dataset.corpus_texts, strict=True):
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in zip(dataset.query_ids, dataset.query_texts, strict=True):
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid in dataset.query_ids:
            for doc_id, grade in dataset.qrels[qid].items():
                fh.write(f"{qid}\t{doc_id}\t{grade}\n")
    return out
