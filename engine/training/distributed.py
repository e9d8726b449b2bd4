"""Data-parallel training: the train stage's trainer run on N processes of one node (one per GPU), with DDP.

The stage calls :func:`run_data_parallel` with its trainer function when ``train.nproc`` > 1. That starts
``torchrun --standalone --nproc-per-node N -m embedforge.training.distributed PAYLOAD``: every process loads the
pickled stage context and arguments, and runs the same function; torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) makes the sentence-transformers trainer wrap the model in
DistributedDataParallel (NCCL on GPUs, gloo on CPUs) and give each process its own share of the batches. The
in-batch losses gather the other processes' embeddings (:func:`gather_across_devices`, read by
``embedforge.training.losses``), so every query is scored against N × ``batch_size`` passages: the effective
batch is N × ``batch_size``, the same loss a single process would compute with that batch. Rank 0 saves what the
stage needs afterwards (the model candidates) under ``<stage dir>/ddp/`` and hands back the result; the stage
then finishes in its own process as usual, and removes ``ddp/``.

Across nodes: ``EMBEDFORGE_TORCHRUN_ARGS`` replaces ``--standalone`` (e.g. ``--nnodes=2 --node-rank=0
--master-addr=node0 --master-port=29500``); each other node runs ``torchrun <its args> --nproc-per-node=N -m
embedforge.training.distributed <payload>`` on the same payload (the run directory on shared storage).

Why torchrun and not ``torch.multiprocessing`` or accelerate's launcher: torchrun is what the trainer expects
(its environment variables), it stops all processes when one fails, and the same entry point runs across nodes
(docs/gpu.md gives the command).
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("embedforge.train")


def world_size() -> int:
    """Processes in this training run (1 outside a distributed launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 outside a distributed launch)."""
    return int(os.environ.get("RANK", "0"))


def gather_across_devices() -> bool:
    """Whether in-batch losses should gather the other processes' embeddings (true under a multi-process launch)."""
    return world_size() > 1


def check_nproc(nproc: int, device_type: str) -> None:
    """Refuse more GPU processes than visible GPUs (CPU processes share the cores, on gloo)."""
    from embedforge import device as dev

    if device_type == "cuda" and nproc > dev.gpu_count():
        raise ValueError(f"train.nproc: {nproc} processes but {dev.gpu_count()} GPU(s) are visible "
                         "(one process per GPU; lower nproc or set CUDA_VISIBLE_DEVICES)")


@dataclass(frozen=True)
class SavedDir:
    """A directory rank 0 saved; calling it copies it to ``path`` (stands in for the stage's save functions)."""

    source: Path

    def __call__(self, path: str | Path) -> None:
        shutil.copytree(self.source, path, dirs_exist_ok=True)


def run_data_parallel(fn: Callable[..., dict[str, Any]], ctx: Any, nproc: int, *args: Any) -> dict[str, Any]:
    """Run ``fn(ctx, *args)`` on ``nproc`` processes with torchrun; rank 0's result, savers replaced by
    :class:`SavedDir`. ``ctx.counts``/``extra``/``throughput`` get rank 0's additions."""
    from embedforge import device as dev
    from embedforge.stages.base import StageFailed

    try:
        check_nproc(nproc, dev.device(ctx.job.device).type)
    except ValueError as exc:
        raise StageFailed(str(exc)) from None
    work = ctx.out_dir / "ddp"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    payload, result_file = work / "payload.pkl", work / "result.pkl"
    with open(payload, "wb") as fh:
        pickle.dump({"fn": (fn.__module__, fn.__qualname__), "ctx": ctx, "args": args}, fh)
    launch = shlex.split(os.environ.get("EMBEDFORGE_TORCHRUN_ARGS", "")) or ["--standalone"]
    cmd = [sys.executable, "-P", "-m", "torch.distributed.run", *launch, f"--nproc-per-node={nproc}",
           "-m", "embedforge.training.distributed", str(payload)]
    log.info("train: data-parallel on %d processes (effective batch %d): %s", nproc,
             nproc * getattr(ctx.config, "batch_size", 0), " ".join(cmd[2:]))
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))})
    if proc.returncode != 0 or not result_file.is_file():
        raise StageFailed(f"train: the data-parallel run on {nproc} processes failed (exit {proc.returncode}); "
                          "its processes' errors are in the log above")
    with open(result_file, "rb") as fh:
        out = pickle.load(fh)
    for key in [k for k in out["throughput"] if "examples" in k]:  # rank 0 counted its own share of each step
        out["throughput"][key] = round(out["throughput"][key] * nproc, 2)
    for name in ("counts", "extra", "throughput"):
        getattr(ctx, name).update(out[name])
    out["result"]["world_size"] = nproc
    return out["result"]


def _materialize(value: Any, into: Path, name: str = "save") -> Any:
    """``value`` with every function in it (dicts, lists, tuples) called on a fresh directory under ``into``
    and replaced by a :class:`SavedDir` of it."""
    if isinstance(value, dict):
        return {k: _materialize(v, into, f"{name}-{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_materialize(v, into, f"{name}-{i}") for i, v in enumerate(value)]
        return type(value)(items) if isinstance(value, tuple) else items
    if callable(value) and not isinstance(value, type):
        target = into / name
        value(target)
        return SavedDir(target)
    return value


def worker(payload: Path) -> None:
    """One process of the run: the stage's function, then rank 0 writes the result beside the payload."""
    import torch

    logging.basicConfig(level=logging.INFO if rank() == 0 else logging.WARNING,
                        format=f"[rank {rank()}] %(levelname)s %(name)s: %(message)s")
    with open(payload, "rb") as fh:
        data = pickle.load(fh)
    ctx = data["ctx"]
    if torch.cuda.is_available() and ctx.job.device != "cpu":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    module, qualname = data["fn"]
    fn = getattr(importlib.import_module(module), qualname)
    result = fn(ctx, *data["args"])
    if rank() == 0:
        out = {"result": _materialize(result, payload.parent), "counts": ctx.counts, "extra": ctx.extra,
               "throughput": ctx.throughput}
        tmp = payload.parent / "result.pkl.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(out, fh)
        tmp.rename(payload.parent / "result.pkl")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":  # through the package, so what rank 0 pickles names embedforge's module, not __main__
    from embedforge.training.distributed import worker as package_worker

    package_worker(Path(sys.argv[1]))
