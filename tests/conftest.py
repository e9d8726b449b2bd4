"""Shared fixtures: packaged models loaded once per session, real datasets, the real CLI.

Datasets: the ADI collection shipped with the package, and small slices of SciFact and Cranfield in
``tests/fixtures/`` (rebuilt by ``tests/fixtures/make_slices.py``). The slow correctness anchors need the full
collections: ``embedforge datasets get scifact`` and ``embedforge datasets get cranfield --from PATH``.

GPU-only tests carry ``@pytest.mark.gpu`` (or use :data:`gpu_test`) and are skipped when CUDA is absent;
nothing else is ever skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _worker_threads() -> int | None:
    """CPU threads per pytest-xdist worker: the cores this process may use, shared evenly (None: not a worker).

    Two workers that each run torch with every core oversubscribe the machine: OpenMP threads spin at every
    barrier waiting for a thread the other worker's threads pushed off its core, and small-batch work (a decode
    step, a training step on 16 rows) runs several times slower than on one thread per worker.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


WORKER_THREADS = _worker_threads()
if WORKER_THREADS:  # before torch is imported here or in a subprocess (CLI runs, Ray workers, vLLM) inheriting it
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, str(WORKER_THREADS))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


gpu_test = pytest.mark.gpu
"""Mark a test as needing CUDA (skipped when absent)."""


# `make test` runs the suite on pytest-xdist workers, a module to a worker (its module-scoped fixtures, often a
# training run, are built once). Modules that share a machine-wide resource also share a worker, one after
# another: Ray heads and in-process clusters find each other through /tmp/ray and fixed default ports; a vLLM
# engine takes several GiB.
SERIAL_GROUPS = {
    "ray": {"test_generate_ray", "test_submit_ray", "test_embed_ray_resume", "test_embed_ray"},
    "vllm": {"test_generate_backends", "test_generate_vllm_cli"},
}


def pytest_configure(config: pytest.Config) -> None:
    if WORKER_THREADS and "torch" in sys.modules:  # imported before this file (by a plugin): too late for the env
        sys.modules["torch"].set_num_threads(WORKER_THREADS)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Module-scoped scheduling with the groups above (a scope per module, one per group), handed out in collection
    order: tests/integration (the long modules, started first) before tests/unit (the short ones fill the end)."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # xdist's default order (most tests first) left the long modules last
    group_of = {module: group for group, modules in SERIAL_GROUPS.items() for module in modules}

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return group_of.get(Path(module).stem, module)

    return ModuleGroups(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda():
        return
    skip = pytest.mark.skipif(True, reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def adi_dir() -> Path:
    """The ADI collection shipped with embedforge (82 documents, 35 judged queries)."""
    from embedforge.data.ingest import resolve_path

    return resolve_path("builtin:adi")


@pytest.fixture(scope="session")
def scifact_slice() -> Path:
    """218 SciFact abstracts, 220 judged train claims (``qrels/train.tsv``) and 10 judged test claims."""
    return FIXTURES / "scifact-slice"


@pytest.fixture(scope="session")
def cranfield_slice() -> Path:
    """124 Cranfield documents and 12 queries with graded (1-4) judgements."""
    return FIXTURES / "cranfield-slice"


@pytest.fixture(scope="session")
def full_dataset():
    """``full_dataset("scifact")`` → the full collection from the dataset cache (``embedforge datasets get``)."""
    from embedforge.data.datasets import DatasetError, resolve_dataset

    def get(name: str) -> Path:
        try:
            return resolve_dataset(f"beir:{name}")
        except DatasetError as exc:
            pytest.fail(f"this slow test needs the full {name}: {exc}")

    return get


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from embedforge.models import resolve_model

    return resolve_model("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def encoder():
    """The shared MiniLM encoder (loaded once per session)."""
    from embedforge.encoding.encoder import get_encoder

    return get_encoder("all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def st_model(minilm_path: Path):
    """The reference SentenceTransformer (loaded once per session)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``embedforge`` CLI in a subprocess; on failure the assertion shows its output."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([sys.executable, "-P", "-m", "embedforge.cli", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
    if check:
        assert proc.returncode == 0, f"embedforge {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def run_cli_here(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The same ``embedforge`` command in this process (typer's test runner; the packages are already imported):
    for repeated calls of one command after a subprocess call has covered the entry point."""
    from typer.testing import CliRunner

    from embedforge.cli import app

    result = CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    proc = subprocess.CompletedProcess(["embedforge", *args], result.exit_code, result.stdout, result.stderr)
    if check:
        assert proc.returncode == 0, f"embedforge {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def cli_here():
    """``cli_here("search", ...)``: the CLI in this process (see :func:`run_cli_here`)."""
    return run_cli_here


@pytest.fixture(scope="session")
def cli():
    """``cli("run", "jobs/quickstart.yaml", ...)`` runs the real CLI."""
    return run_cli


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The packaged SmolLM2-135M-Instruct as a plain HF directory (converted from its GGUF once, cached)."""
    from embedforge.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_dir: Path):
    """The hf generate backend over the packaged SmolLM2 (loaded once per session)."""
    from embedforge.generation.hf_backend import HFBackend

    return HFBackend(str(smollm2_dir), device="cpu", batch_size=4)
