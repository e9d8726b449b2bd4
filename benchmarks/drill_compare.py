"""Compare one stage's output directory of a drilled (killed and resumed) run with an uninterrupted reference.

Used by ``benchmarks/drill_resume.py``; importable on its own (no torch unless a model's weights differ).

Every file of both directories is matched by relative path and compared by kind:

- Parquet: row count, an **order-defined** content hash (rows in file order, canonical JSON per row, sha256) and an
  order-independent one (sorted row digests), duplicated rows and duplicated ids, and that the file reads (no
  torn shard). Under the ``tolerance`` rule, float columns are compared within ``atol`` and everything else exactly.
- JSON / JSONL: equal after the run directories are replaced by ``<run>`` and the keys of :data:`VOLATILE_KEYS`
  (wall-clock, latency, cache hits, per-run counters, git SHA) are dropped.
- ``.npy``, ``.safetensors``, ``index.faiss`` and other binary files: byte-identical; otherwise ``.npy`` and
  ``.safetensors`` are reported with their largest absolute difference (a pass only under the ``tolerance`` rule).
- Skipped, with the reason: ``checkpoints/`` (kept or deleted by ``save_total_limit``, the final model is
  compared instead), the model card and ``report.md`` (wall-clock seconds), ``*.png`` (drawn from the compared
  JSON). Files of evaluate's ``partial/`` cache are named by a digest that includes the model's path (so the run
  directory): they are matched by dataset and model label.

Anything left by a kill — ``*.tmp`` files or directories, ``.<name>.old`` directories — is a failure.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

VOLATILE_KEYS = frozenset({
    "seconds", "started", "timings", "throughput", "spec_hash", "code_version", "git", "libraries",
    "resumed_from", "loss_history", "eval_history", "train_loss", "cache_hits", "corpus_cache_hits", "retries",
    "hnsw_build_s", "hnsw_search_ms_p50", "hnsw_search_ms_p99",
})
"""Keys that differ between two uninterrupted runs too (timing, latency, environment, git SHA), or that describe
how one process got there rather than the result: ``resumed_from``; the loss/eval history and ``train_loss`` (the
trainer's mean loss over the steps *this process* ran, so a resumed run averages only the steps after its
checkpoint); ``cache_hits`` (an attempt killed after filling the embedding cache leaves hits for the next)."""
VOLATILE_PATTERNS = (re.compile(r"(^|_)(ms|latency|qps)(_|$)"), re.compile(r"_s$"), re.compile(r"^run_"),
                     re.compile(r"_seconds$"))
"""Key patterns of the same kind: latency, durations and rates (``*_s``, ``*_per_s``), and counters of one process
(``run_*``)."""
SKIPPED = (
    (re.compile(r"(^|/)checkpoints/"), "training checkpoint (kept/deleted by save_total_limit; the final model is compared)"),
    (re.compile(r"(^|/)model/README\.md$"), "model card: lineage plus wall-clock seconds (its metrics are compared in the manifest)"),
    (re.compile(r"(^|/)report\.md$"), "report: rendered from results.json (compared) with latency figures"),
    (re.compile(r"\.png$"), "plot: drawn from the compared JSON"),
)
LEFTOVER = re.compile(r"(^|/)(\.[^/]*\.(tmp|old)|[^/]*\.tmp)(/|$)")


@dataclass
class Check:
    """One compared file (or dataset property): what was compared and whether it matched."""

    path: str
    kind: str
    ok: bool
    detail: str = ""
    rows_ref: int | None = None
    rows_drill: int | None = None


@dataclass
class StageComparison:
    """All checks of one stage, with the rule that was applied."""

    stage: str
    rule: str
    checks: list[Check] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    manifest_rows: tuple[int | None, int | None] = (None, None)
    """Rows of a stage without shards, from its manifest (train: training rows; evaluate: result rows)."""

    @property
    def rows(self) -> tuple[int | None, int | None]:
        """Rows of the stage's shards (``shards/*.parquet``), reference and drill (else :attr:`manifest_rows`)."""
        ref = [c.rows_ref for c in self.checks if c.kind == "parquet" and c.path.startswith("shards/")]
        drill = [c.rows_drill for c in self.checks if c.kind == "parquet" and c.path.startswith("shards/")]
        if not ref and not drill:
            return self.manifest_rows
        return (sum(r or 0 for r in ref) if ref else None, sum(r or 0 for r in drill) if drill else None)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        ref, drill = self.rows
        return {"stage": self.stage, "rule": self.rule, "ok": self.ok, "rows_ref": ref, "rows_drill": drill,
                "checks": [c.__dict__ for c in self.checks], "skipped": self.skipped}


# ---------------------------------------------------------------- normalization


def _volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or any(p.search(key) for p in VOLATILE_PATTERNS)


def normalize(obj: Any, roots: tuple[str, ...]) -> Any:
    """Drop volatile keys and replace the run roots in strings by ``<run>`` (recursively)."""
    if isinstance(obj, dict):
        return {k: normalize(v, roots) for k, v in obj.items() if not _volatile(str(k))}
    if isinstance(obj, list):
        return [normalize(v, roots) for v in obj]
    if isinstance(obj, str):
        for root in roots:
            obj = obj.replace(root, "<run>")
        return obj
    return obj


def diff(a: Any, b: Any, atol: float, path: str = "") -> str | None:
    """First difference between two JSON values (floats within ``atol``), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path or '.'}: keys differ ({sorted(set(a) ^ set(b))[:5]})"
        for k in a:
            if (d := diff(a[k], b[k], atol, f"{path}.{k}")) is not None:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path or '.'}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if (d := diff(x, y, atol, f"{path}[{i}]")) is not None:
                return d
        return None
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            if a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol:
                return None
        return f"{path}: {a!r} vs {b!r}"
    return None if a == b else f"{path}: {str(a)[:60]!r} vs {str(b)[:60]!r}"


# ---------------------------------------------------------------- parquet


def row_digests(table: pa.Table) -> list[bytes]:
    """sha256 of each row's canonical JSON (sorted keys; floats as repr, so exact)."""
    return [hashlib.sha256(json.dumps(r, sort_keys=True, default=repr).encode()).digest() for r in table.to_pylist()]


def table_hashes(table: pa.Table) -> tuple[str, str]:
    """(order-defined hash: rows in order, order-independent hash: sorted row digests) of a table."""
    digests = row_digests(table)
    ordered = hashlib.sha256(b"".join(digests)).hexdigest()[:16]
    unordered = hashlib.sha256(b"".join(sorted(digests))).hexdigest()[:16]
    return ordered, unordered


ID_COLUMNS = ("id", "query_id", "chunk_id", "doc_id")


def _float_column(t: pa.DataType) -> bool:
    while pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    return pa.types.is_floating(t)


def _max_abs_diff(a: pa.ChunkedArray, b: pa.ChunkedArray) -> float:
    import numpy as np

    def flat(col: pa.ChunkedArray) -> np.ndarray:
        arr = col.combine_chunks()
        while hasattr(arr, "flatten") and not pa.types.is_floating(arr.type):
            arr = arr.flatten()
        return arr.to_numpy(zero_copy_only=False).astype(np.float64)

    x, y = flat(a), flat(b)
    if x.shape != y.shape:
        return math.inf
    return float(np.max(np.abs(x - y))) if x.size else 0.0


def compare_parquet(ref: Path, drill: Path, rel: str, tolerance: float | None) -> Check:
    """Rows, order-defined hash, duplicates; floats within ``tolerance`` when one is given."""
    try:
        got = pq.read_table(drill)
    except Exception as exc:  # noqa: BLE001 - a torn file can fail in many ways
        return Check(rel, "parquet", False, f"torn or unreadable shard: {exc}")
    want = pq.read_table(ref)
    check = Check(rel, "parquet", True, rows_ref=want.num_rows, rows_drill=got.num_rows)
    problems = []
    if got.num_rows != want.num_rows:
        problems.append(f"rows {want.num_rows} vs {got.num_rows}")
    if got.schema != want.schema:
        problems.append("schema differs")
    dup_ref = want.num_rows - len(set(row_digests(want)))
    dup_drill = got.num_rows - len(set(row_digests(got)))
    if dup_drill > dup_ref:
        problems.append(f"{dup_drill - dup_ref} duplicated rows")
    id_col = next((c for c in ID_COLUMNS if c in got.column_names), None)
    if id_col is not None:
        dup_ids = got.num_rows - len(set(got.column(id_col).to_pylist()))
        dup_ids_ref = want.num_rows - len(set(want.column(id_col).to_pylist()))
        if dup_ids > dup_ids_ref:
            problems.append(f"{dup_ids - dup_ids_ref} duplicated {id_col}")
    if problems:
        check.ok, check.detail = False, "; ".join(problems)
        return check
    ordered_ref, unordered_ref = table_hashes(want)
    ordered, unordered = table_hashes(got)
    if ordered == ordered_ref:
        check.detail = f"sha {ordered} (order-defined)"
        return check
    if tolerance is None:
        check.ok = False
        check.detail = ("same rows, different order" if unordered == unordered_ref
                        else f"content differs: sha {ordered_ref} vs {ordered}")
        return check
    exact = [c for c in want.column_names if not _float_column(want.schema.field(c).type)]
    if table_hashes(want.select(exact))[0] != table_hashes(got.select(exact))[0]:
        check.ok, check.detail = False, f"non-float columns differ ({', '.join(exact)})"
        return check
    worst = max((_max_abs_diff(want.column(c), got.column(c)) for c in want.column_names if c not in exact),
                default=0.0)
    check.ok = worst <= tolerance
    check.detail = f"non-float columns exact; floats max |Δ| {worst:.2e} (tolerance {tolerance:g})"
    return check


# ---------------------------------------------------------------- other files


def _read_json(path: Path) -> Any:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(path.read_text(encoding="utf-8"))


def compare_json(ref: Path, drill: Path, rel: str, roots: tuple[str, ...], atol: float) -> Check:
    try:
        b = normalize(_read_json(drill), roots)
    except ValueError as exc:
        return Check(rel, "json", False, f"torn or unreadable: {exc}")
    a = normalize(_read_json(ref), roots)
    d = diff(a, b, atol)
    rows = len(a) if isinstance(a, list) else None
    return Check(rel, "json", d is None, d or ("equal" if atol == 0 else f"equal within {atol:g}"), rows, rows)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compare_binary(ref: Path, drill: Path, rel: str, tolerance: float | None) -> Check:
    a, b = _sha(ref), _sha(drill)
    if a == b:
        return Check(rel, "bytes", True, f"identical (sha {a[:16]})")
    worst = None
    if ref.suffix == ".npy":
        import numpy as np

        x, y = np.load(ref), np.load(drill)
        worst = float(np.max(np.abs(x.astype(np.float64) - y))) if x.shape == y.shape else math.inf
    elif ref.suffix == ".safetensors":
        worst = safetensors_max_diff(ref, drill)
    if worst is None:
        return Check(rel, "bytes", tolerance is not None and rel.endswith(".faiss"),
                     f"bytes differ (sha {a[:16]} vs {b[:16]})")
    ok = tolerance is not None and worst <= tolerance
    return Check(rel, "bytes", ok, f"bytes differ; max |Δ| {worst:.2e}" + (f" (tolerance {tolerance:g})" if tolerance else ""))


def safetensors_max_diff(ref: Path, drill: Path) -> float:
    """Largest absolute difference over all tensors of two safetensors files (inf when names or shapes differ)."""
    from safetensors.numpy import load_file

    a, b = load_file(str(ref)), load_file(str(drill))
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        return math.inf
    return max((float(abs(a[k].astype("float64") - b[k]).max()) for k in a if a[k].size), default=0.0)


# ---------------------------------------------------------------- a stage directory


_CACHE_DIGEST = re.compile(r"^(partial/.+)-[0-9a-f]{12}(\.json)$")


def _key(rel: str) -> str:
    """Files of evaluate's ``partial/`` cache are named by a digest of the model's path (which holds the run
    directory) and weights: matched by dataset and model label, their contents compared."""
    return _CACHE_DIGEST.sub(r"\1\2", rel)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temp files and directories a kill can leave (``.x.tmp``, ``x.tmp``, ``.x.old``) under ``root``."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if LEFTOVER.search(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "")))


def _manifest_rows(stage_dir: Path) -> int | None:
    path = stage_dir / "manifest.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    for value in (m.get("rows_out"), m.get("data", {}).get("train_rows"), m.get("counts", {}).get("result_rows")):
        if value is not None:
            return int(value)
    return None


def compare_stage(stage: str, ref_dir: Path, drill_dir: Path, rule: str, roots: tuple[str, ...],
                  atol: float = 0.0, vector_atol: float | None = None, weights_atol: float | None = None
                  ) -> StageComparison:
    """Compare ``drill_dir`` with ``ref_dir`` under ``rule`` (``exact`` or ``tolerance``).

    ``atol`` applies to numbers in JSON (metrics), ``vector_atol`` to float columns of Parquet files and ``.npy``
    arrays, ``weights_atol`` to model weights; all three are ignored under ``exact``.
    """
    exact = rule == "exact"
    out = StageComparison(stage, rule)
    out.manifest_rows = (_manifest_rows(ref_dir), _manifest_rows(drill_dir))
    for name in ("_SUCCESS", "manifest.json"):
        if not (drill_dir / name).is_file():
            out.checks.append(Check(name, "marker", False, "missing in the drilled run"))
    bad = leftovers(drill_dir)
    out.checks.append(Check("(temp files)", "leftover", not bad, ", ".join(bad[:5]) or "none"))
    ref_names, drill_names = _files(ref_dir), _files(drill_dir)
    ref_files, drill_files = {_key(f): f for f in ref_names}, {_key(f): f for f in drill_names}
    for rel in sorted(set(ref_files) | set(drill_files)):
        reason = next((why for pattern, why in SKIPPED if pattern.search(rel)), None)
        if reason is not None:
            out.skipped.setdefault(reason, 0)
            out.skipped[reason] += 1
            continue
        if LEFTOVER.search(rel):
            continue  # reported above
        if rel not in drill_files or rel not in ref_files:
            where = "the reference" if rel not in ref_files else "the drilled run"
            out.checks.append(Check(rel, "file", False, f"only in {'the drilled run' if rel in drill_files else 'the reference'} "
                                                        f"(missing in {where})"))
            continue
        a, b = ref_dir / ref_files[rel], drill_dir / drill_files[rel]
        if rel == "_SUCCESS":
            same = a.read_text() == b.read_text()
            out.checks.append(Check(rel, "marker", same, "same stage hash" if same else "different stage hash"))
        elif rel.endswith(".parquet"):
            out.checks.append(compare_parquet(a, b, rel, None if exact else vector_atol))
        elif rel.endswith((".json", ".jsonl")):
            out.checks.append(compare_json(a, b, rel, roots, 0.0 if exact else atol))
        else:
            tol = None if exact else (weights_atol if rel.endswith(".safetensors") else vector_atol)
            out.checks.append(compare_binary(a, b, rel, tol))
    return out
