"""Submit job specs to a Ray cluster through the Ray Jobs API, and follow, list, inspect or cancel them.

The job runs ``embedforge run JOB`` on the cluster with the project directory as its runtime ``working_dir``
(and, optionally, pip packages such as ``embedforge[gpu]`` or a wheel). Run directories must be on storage every
node sees; the stage manifests and ``_SUCCESS`` markers there make completion visible to every node and to a
later local ``embedforge run``, which resumes or skips what the cluster finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedforge import device
from embedforge.spec import JobSpec, load_spec

CONNECT_TIMEOUT_S = 15.0
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", "bench_out", "*.egg-info", ".pytest_cache", ".ruff_cache"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class ClusterError(RuntimeError):
    """The cluster cannot be reached or refused the request; the message says which and why."""


def normalize_address(address: str) -> str:
    """``127.0.0.1:8265`` → ``http://127.0.0.1:8265`` (the Ray dashboard address the Jobs API lives on)."""
    address = address.strip()
    if not address:
        raise ClusterError("empty Ray address; pass the dashboard address, e.g. http://head-node:8265")
    if address.startswith("ray://"):
        raise ClusterError(f"'{address}' is a Ray Client address; the Jobs API needs the dashboard address, "
                           "e.g. http://head-node:8265")
    if "://" not in address:
        address = f"http://{address}"
    host_port = address.split("://", 1)[1].rstrip("/")
    if ":" not in host_port:
        raise ClusterError(f"'{address}' has no port; the Ray dashboard usually listens on 8265")
    return address


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S):  # noqa: ANN201
    """A ``JobSubmissionClient`` for ``address``, or a :class:`ClusterError` within ``timeout`` seconds."""
    job_submission = device.optional_import("ray.job_submission", "submitting jobs to Ray")
    url = normalize_address(address)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(job_submission.JobSubmissionClient, url)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise ClusterError(f"no answer from the Ray dashboard at {url} within {timeout:.0f}s") from None
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError/RuntimeError/ValueError variously
        raise ClusterError(f"cannot reach the Ray cluster at {url}: {str(exc).splitlines()[0][:300]}") from None
    finally:
        pool.shutdown(wait=False)


def entrypoint_resources(spec: JobSpec, stages: list[str] | None) -> dict[str, Any]:
    """The largest per-stage request among the stages that will run (the driver runs them one after another)."""
    names = stages or spec.stage_names()
    gpus = max((spec.config(n).resources.gpus or 0 for n in names), default=0)
    cpus = max((spec.config(n).resources.cpus or 1 for n in names), default=1)
    memory = max((spec.config(n).resources.memory_bytes() or 0 for n in names), default=0)
    out: dict[str, Any] = {"entrypoint_num_cpus": cpus}
    if gpus:
        out["entrypoint_num_gpus"] = gpus
    if memory:
        out["entrypoint_memory"] = memory
    return out


def build_submission(job: Path, *, working_dir: Path, overrides: list[str] | None = None,
                     stages: list[str] | None = None, pip: list[str] | None = None,
                     python: str = "python") -> dict[str, Any]:
    """Keyword arguments for ``JobSubmissionClient.submit_job`` (validated locally first)."""
    spec = load_spec(job, overrides)
    working_dir = working_dir.resolve()
    try:
        rel = job.resolve().relative_to(working_dir)
    except ValueError:
        raise ClusterError(f"job file {job} must be inside the working dir {working_dir} (it is uploaded with it)") from None
    if not Path(spec.run_dir).is_absolute() and "://" not in spec.run_dir:
        raise ClusterError(f"run_dir '{spec.run_dir}' is relative; on a cluster it must be storage every node sees "
                           "(an absolute path on a shared filesystem): pass run_dir=/shared/runs")
    args = ["run", str(rel), *(overrides or [])]
    if stages:
        args += ["--stages", ",".join(stages)]
    return {**command_submission(args, working_dir=working_dir, pip=pip, python=python,
                                 metadata={"embedforge_job": spec.name, "spec_hash": spec.spec_hash()[:16]}),
            **entrypoint_resources(spec, stages)}


def command_submission(args: list[str], *, working_dir: Path, pip: list[str] | None = None, python: str = "python",
                       metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """A Ray job running ``embedforge ARGS`` in the uploaded project directory (e.g. ``["bench", "suite.yaml"]``)."""
    runtime_env: dict[str, Any] = {"working_dir": str(working_dir.resolve()), "excludes": EXCLUDES,
                                   "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}}
    if pip:
        runtime_env["pip"] = pip
    return {"entrypoint": shlex.join([python, "-P", "-m", "embedforge.cli", *args]), "runtime_env": runtime_env,
            "metadata": metadata or {"embedforge_job": args[0]}}


def submit(address: str, submission: dict[str, Any]) -> str:
    """Submit; returns the Ray job id."""
    client = connect(address)
    try:
        return client.submit_job(**submission)
    except Exception as exc:  # noqa: BLE001
        raise ClusterError(f"the Ray cluster refused the job: {str(exc).splitlines()[0][:300]}") from None


def status(address: str, job_id: str) -> str:
    return str(connect(address).get_job_status(job_id).value)


def logs(address: str, job_id: str) -> str:
    return connect(address).get_job_logs(job_id)


def cancel(address: str, job_id: str) -> bool:
    return bool(connect(address).stop_job(job_id))


def list_jobs(address: str) -> list[dict[str, Any]]:
    rows = []
    for job in connect(address).list_jobs():
        rows.append({"id": job.submission_id or job.job_id, "status": str(job.status.value),
                     "job": (job.metadata or {}).get("embedforge_job", ""), "entrypoint": job.entrypoint,
                     "start_time": job.start_time})
    return rows


def follow(address: str, job_id: str, emit: Callable[[str], None]) -> str:
    """Stream the job's logs through ``emit`` until it ends; returns the final status."""
    client = connect(address)

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            emit(chunk)

    asyncio.run(_tail())
    return str(client.get_job_status(job_id).value)


def wait(address: str, job_id: str, timeout: float, poll: float = 1.0) -> str:
    """Poll until the job reaches a terminal state (or ``timeout`` seconds pass); returns the status."""
    client = connect(address)
    deadline = time.monotonic() + timeout
    while True:
        state = str(client.get_job_status(job_id).value)
        if state in TERMINAL or time.monotonic() > deadline:
            return state
        time.sleep(poll)
