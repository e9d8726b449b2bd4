"""A real local Ray cluster (``ray start --head`` on 127.0.0.1, started and stopped here) receives jobs."""

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

import pytest

from embedforge.cluster import ray_jobs
from embedforge.data.shards import list_shards, read_table

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray head on loopback in its own process group and temp dir; SIGTERM to the group stops only it."""
    temp = tempfile.mkdtemp(prefix="/tmp/efray")
    dash = _free_port()
    # A clean environment: an in-process ray.init elsewhere exports RAY_AUTH_MODE=token & co., and Ray ≥ 2.5x
    # turns token auth on for `ray start` once ~/.ray/auth_token exists. This loopback cluster runs without it,
    # for the server here and for every client (this process and the CLI subprocesses) alike.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "disabled"})
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")
    ray_bin = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 120
    while True:
        try:
            ray_jobs.connect(address, timeout=5).list_jobs()
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline or proc.poll() is not None:
                patch.undo()
                os.killpg(proc.pid, signal.SIGKILL)
                raise
            time.sleep(1)
    yield address
    patch.undo()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)  # Ray's graceful stop takes ~30 s; the cluster and its temp dir are throwaway
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def _content(run_dir: Path, stage: str) -> tuple[int, list]:
    (out,) = [p for p in (run_dir / "quickstart").glob(f"{stage}-*") if (p / "_SUCCESS").exists()]
    table = read_table(out)
    cols = [c for c in table.column_names if c != "source"]  # source names the file, which lives elsewhere there
    return table.num_rows, table.select(cols).to_pylist()


def test_submitted_quickstart_equals_a_local_run(ray_address: str, tmp_path: Path, cli) -> None:
    cluster_runs, local_runs = tmp_path / "cluster", tmp_path / "local"
    proc = cli("submit", "jobs/quickstart.yaml", f"run_dir={cluster_runs}", "--ray", ray_address,
               "--stages", "ingest,chunk", "--follow")
    job_id = proc.stdout.strip().splitlines()[0]
    assert job_id.startswith("raysubmit_")
    assert "stage chunk: done" in proc.stderr  # logs were streamed
    assert cli("jobs", "status", job_id, "--ray", ray_address).stdout.strip() == "SUCCEEDED"
    assert "stage ingest: done" in cli("jobs", "logs", job_id, "--ray", ray_address).stdout
    assert job_id in cli("jobs", "list", "--ray", ray_address).stdout

    cli("run", "jobs/quickstart.yaml", f"run_dir={local_runs}", "--stages", "ingest,chunk")
    for stage in ("ingest", "chunk"):
        assert _content(cluster_runs, stage) == _content(local_runs, stage)
        (done,) = [p for p in (cluster_runs / "quickstart").glob(f"{stage}-*")]
        assert list_shards(done)
    # the cluster's manifests make its stages complete for a later local run of the same spec
    out = cli("run", "jobs/quickstart.yaml", f"run_dir={cluster_runs}", "--stages", "ingest,chunk").stderr
    assert out.count("skipped") == 2


@pytest.mark.slow  # a second cluster job; the quickstart submission above runs by default
def test_bench_suite_as_a_cluster_job(ray_address: str, tmp_path: Path, cli) -> None:
    out = tmp_path / "bench"
    proc = cli("bench", "benchmarks/suites/quick.yaml", "--out", str(out), "--submit", ray_address)
    assert proc.stdout.strip().startswith("raysubmit_") and "SUCCEEDED" in proc.stderr
    rows = json.loads((out / "results.json").read_text())  # the same layout as a local bench run
    assert {(r["model"], r["dim"]) for r in rows} >= {("all-MiniLM-L6-v2", 384), ("all-MiniLM-L6-v2", 96)}
    assert (out / "report.md").is_file()
    proc = cli("bench", "benchmarks/suites/quick.yaml", "--out", "relative/out", "--submit", ray_address, check=False)
    assert proc.returncode == 2 and "absolute path" in " ".join(proc.stderr.split())


@pytest.mark.slow  # a third cluster job; the quickstart submission above runs by default
def test_cancel_a_running_job(ray_address: str, tmp_path: Path, cli) -> None:
    request = ray_jobs.build_submission(REPO / "jobs" / "quickstart.yaml", working_dir=REPO,
                                        overrides=[f"run_dir={tmp_path}"])
    request["entrypoint"] = "sleep 300"  # a job that would run long: only cancel matters here
    job_id = ray_jobs.submit(ray_address, request)
    assert ray_jobs.wait(ray_address, job_id, timeout=60, poll=0.5) not in ("FAILED", "SUCCEEDED")
    assert "stop requested" in cli("jobs", "cancel", job_id, "--ray", ray_address).stderr
    assert ray_jobs.wait(ray_address, job_id, timeout=60, poll=0.5) == "STOPPED"


def test_unreachable_and_bad_addresses_fail_fast(cli) -> None:
    port = _free_port()  # nothing listens there
    start = time.monotonic()
    proc = cli("jobs", "list", "--ray", f"127.0.0.1:{port}", check=False)
    assert proc.returncode == 2 and "cannot reach the Ray cluster" in proc.stderr + proc.stdout
    assert time.monotonic() - start < 60
    proc = cli("jobs", "list", "--ray", "ray://127.0.0.1:10001", check=False)
    assert proc.returncode == 2 and "dashboard address" in " ".join((proc.stderr + proc.stdout).split())
    proc = cli("submit", "jobs/quickstart.yaml", "--ray", f"127.0.0.1:{port}", check=False)
    assert proc.returncode == 2 and "run_dir" in proc.stderr + proc.stdout  # a relative run_dir is refused first
