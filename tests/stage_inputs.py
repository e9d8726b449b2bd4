"""Upstream stage outputs written straight from rows, for tests that run one stage (train) on its own."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from embedforge.data.shards import ShardWriter, shard_name


def write_stage_outputs(root: Path, tables: dict[str, tuple[list[dict], pa.Schema]]) -> dict[str, tuple[str, str]]:
    """One finished shard directory per stage (``<root>/<stage>-fixture`` with ``_SUCCESS``); returns
    ``{stage: (hash, directory)}``, the form the tests turn into ``StageOutput`` objects."""
    out = {}
    for name, (rows, schema) in tables.items():
        d = root / f"{name}-fixture"
        ShardWriter(d).write(shard_name(0), pa.Table.from_pylist(rows, schema=schema))
        (d / "_SUCCESS").write_text("fixture\n")
        out[name] = (f"{name}hash", str(d))
    return out
