"""Kill the driver of a Ray embed run mid-way on a real Ray head (127.0.0.1), rerun it: the shards equal an
uninterrupted local run's (names, ids, order, vectors), and the rerun redoes only the unfinished input files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedforge.data.shards import list_shards, read_table

WORDS = "protein cell gene wing flow heat pressure vitamin sleep river model data study trial dose".split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """``ray start --head`` on loopback with 2 CPUs, in its own process group (stopped by signalling only it)."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--include-dashboard=false", "--num-cpus=2", "--disable-usage-stats",
         f"--temp-dir={tempfile.mkdtemp(prefix='/tmp/efray')}"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while subprocess.run([str(Path(sys.executable).parent / "ray"), "status", f"--address={address}"], env=_env(),
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the local Ray head did not come up")
        time.sleep(2)
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _corpus(root: Path, files: int = 8, rows: int = 300) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for f in range(files):
        ids = [f"p{f}-{i}" for i in range(rows)]
        texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 40)))) for _ in range(rows)]
        pq.write_table(pa.table({"id": ids, "text": texts}), root / f"part-{f:05d}.parquet")
    return root


def _embed(args: list[str], address: str | None) -> subprocess.Popen[str]:
    env = {**_env(), **({"RAY_ADDRESS": address} if address else {})}
    return subprocess.Popen([sys.executable, "-P", "-m", "embedforge.cli", "embed", "--model", "all-MiniLM-L6-v2",
                             "--index", "none", "--backend", "torch", "--device", "cpu", "--no-cache", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("embed did not finish")
    assert proc.returncode == 0, err[-3000:]
    return err


def _content(out: Path) -> tuple[list[str], list[str], np.ndarray]:
    table = read_table(out)
    return ([p.name for p in list_shards(out)], table.column("id").to_pylist(),
            np.array(table.column("vector").to_pylist(), np.float32))


@pytest.mark.slow
def test_killed_ray_run_resumes_and_equals_an_uninterrupted_run(ray_head: str, tmp_path: Path) -> None:
    source = _corpus(tmp_path / "corpus")
    common = ["--input", str(source), "--shard-rows", "150", "--threads", "1"]
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"

    proc = _embed([*common, "--output", str(ray_out), "--executor", "ray"], ray_head)
    deadline = time.monotonic() + 300
    while len(list_shards(ray_out)) < 3:  # kill once a few shards are committed
        assert proc.poll() is None, f"finished before the kill: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no shard committed in 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name for p in list_shards(ray_out)}
    assert 3 <= len(done) < 16, f"{len(done)} shards at the kill"

    _finish(_embed([*common, "--output", str(ray_out), "--executor", "ray"], ray_head))
    manifest = json.loads((ray_out / "manifest.json").read_text())
    assert manifest["counts"]["run_shards_skipped"] == len(done)  # every committed shard is kept
    assert manifest["counts"]["run_shards_written"] + manifest["counts"]["run_shards_skipped"] == 16
    for name in done:  # committed shards are not rewritten
        assert (ray_out / "shards" / name).stat().st_mtime < (ray_out / "manifest.json").stat().st_mtime

    _finish(_embed([*common, "--output", str(local_out)], None))
    names, ids, vectors = _content(ray_out)
    local_names, local_ids, local_vectors = _content(local_out)
    assert names == local_names == [f"part-{i:05d}.parquet" for i in range(16)]
    assert ids == local_ids and len(ids) == 2400
    assert float((vectors * local_vectors).sum(1).min()) > 0.99999
