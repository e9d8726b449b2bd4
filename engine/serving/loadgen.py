"""Load runs against a real server: ``embedforge serve`` in a subprocess, then N requests at concurrency C.

Used by ``benchmarks/bench_serve.py`` and the integration tests.

>>> with ServerProcess("all-MiniLM-L6-v2", ["--max-wait-ms", "5"]) as server:
...     result = asyncio.run(run_load(server.url, texts, requests=500, concurrency=16))

>>> result = asyncio.run(run_load("http://127.0.0.1:8000", texts, requests=500, concurrency=16))
>>> result["errors"], result["p50_ms"], result["p99_ms"]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np


async def run_load(
    base_url: str,
    texts: Sequence[str],
    *,
    requests: int = 500,
    concurrency: int = 16,
    inputs_per_request: int = 1,
    api_key: str | None = None,
    model: str | None = None,
    timeout_s: float = 120.0,
    keep_latencies: bool = False,
) -> dict[str, object]:
    """Send ``requests`` embedding requests (``inputs_per_request`` texts each, cycling over ``texts``) from
    ``concurrency`` concurrent clients; report latency percentiles, throughput and errors."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    counter = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    n_inputs = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal n_inputs
        while (i := next(counter)) < requests:
            start = i * inputs_per_request
            batch = [texts[(start + j) % len(texts)] for j in range(inputs_per_request)]
            body: dict[str, object] = {"input": batch if inputs_per_request > 1 else batch[0]}
            if model:
                body["model"] = model
            t0 = time.perf_counter()
            try:
                response = await client.post("/v1/embeddings", json=body, headers=headers)
                elapsed = time.perf_counter() - t0
                ok = response.status_code == 200 and len(response.json()["data"]) == len(batch)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if not ok:
                errors.append(f"{response.status_code}: {response.text[:200]}")
                continue
            latencies.append(elapsed)
            n_inputs += len(batch)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "requests": requests,
        "concurrency": concurrency,
        "inputs_per_request": inputs_per_request,
        "completed": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:5],
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(latencies) / seconds, 2),
        "inputs_per_s": round(n_inputs / seconds, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        **({"latencies_ms": ms.tolist()} if keep_latencies else {}),
    }


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``embedforge serve MODEL`` on 127.0.0.1 in a subprocess; ready when ``/health`` answers 200; stopped
    (SIGTERM, then SIGKILL) on exit. The server's output goes to ``log_path`` (shown when start-up fails)."""

    def __init__(
        self,
        model: str | Path,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 180.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-P",  # not the working directory on sys.path: a checkout's folders must not shadow packages
            "-m",
            "embedforge.cli",
            "serve",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path or Path(f"/tmp/embedforge-serve-{self.port}.log")
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=Path(__file__).resolve().parents[2],
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with code {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server not healthy after {self.startup_timeout_s:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
