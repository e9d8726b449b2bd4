"""Ray Data executor of the generate stage's LLM calls: an actor pool with one generator engine per worker.

The chunk shards the run still needs become a Ray dataset with one row per shard (its name and its prompts, as
JSON); ``map_batches`` sends each row to a :class:`GenerateShard` actor, which runs the job's own backend
(:func:`embedforge.generation.backends.open_backend`: one vLLM ``LLM`` per GPU on GPU nodes — ``num_gpus`` from the
stage's ``resources`` —, the ``hf`` or ``openai`` backend elsewhere) over that shard's prompts in one call,
exactly as the local executor does. The completions stream back to the driver, which hands them to the stage
in shard order; the stage then parses, filters, splits and writes each shard with the same code as a local run.

So the output is the local run's, shard for shard (one backend call per shard keeps even batch-dependent
backends such as hf's left-padded batches identical), and a run can be resumed by either executor: shards are
written as soon as they and all earlier shards are back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from embedforge import device as dev
from embedforge.configs.generate import GenerateConfig
from embedforge.distributed.pool import plan_pool, watched
from embedforge.generation.backends import Completion, Sampling, Usage
from embedforge.generation.query_maker import QueryMaker, ShardCompletions

log = logging.getLogger("embedforge.generate.ray")


class GenerateShard:
    """Ray actor: one generator backend; maps rows ``shard, prompts`` to ``shard, completions, generator``."""

    def __init__(self, config: dict[str, Any], seed: int) -> None:
        from embedforge.generation.backends import open_backend
        from embedforge.models import resolve_model

        cfg = GenerateConfig.model_validate(config)
        model = cfg.model if cfg.backend == "openai" else str(resolve_model(cfg.model))
        self.backend = open_backend(cfg, model, seed)
        self.sampling = Sampling(cfg.samples_per_prompt, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
        self.seed = seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list[Any]] = {"shard": [], "completions": [], "generator": [], "retries": []}
        for shard, prompts in zip(batch.column("shard").to_pylist(), batch.column("prompts").to_pylist(),
                                  strict=True):
            before = getattr(self.backend, "retries", 0)
            completions = self.backend.generate(json.loads(prompts), self.sampling, self.seed)
            out["shard"].append(shard)
            out["completions"].append(json.dumps([asdict(c) for c in completions], ensure_ascii=False))
            out["generator"].append(self.backend.generator_id)
            out["retries"].append(getattr(self.backend, "retries", 0) - before)
        return pa.table({"shard": pa.array(out["shard"], pa.string()),
                         "completions": pa.array(out["completions"], pa.large_string()),
                         "generator": pa.array(out["generator"], pa.string()),
                         "retries": pa.array(out["retries"], pa.int64())})


def ray_completions(shards: Iterable[tuple[str, list[dict[str, Any]]]], maker: QueryMaker, usage: Usage, *,
                    workers: int = 1, gpus: int | None = None, cpus: int | None = None,
                    stall_s: float = 1800.0) -> Iterator[ShardCompletions]:
    """Completions of every shard's prompts from a Ray actor pool of ``workers`` engines, yielded in shard order.

    ``gpus`` per actor (null: 1 when the cluster has GPUs, else 0); ``cpus`` per actor (null: a share of the
    CPUs that leaves one free, see :func:`~embedforge.distributed.pool.plan_pool`). The pool autoscales
    between 1 and ``workers`` actors; when no shard comes back for ``stall_s`` seconds the call fails with
    :class:`~embedforge.distributed.pool.Stalled`. Connects to the cluster of ``RAY_ADDRESS`` (as under
    ``embedforge submit``) or starts a local one for the call.
    """
    ray = dev.optional_import("ray", "the Ray generate executor")
    planned = [ShardCompletions(name, rows, *maker.prompts(rows), [], None) for name, rows in shards]
    remote = [s for s in planned if s.prompts]
    if not remote:
        yield from planned
        return
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        resources = ray.cluster_resources()
        if gpus is None:
            gpus = 1 if resources.get("GPU", 0) > 0 else 0
        pool = plan_pool(resources, actors=max(1, min(workers, len(remote))), cpus_per_actor=cpus,
                         use_gpu=gpus > 0)
        log.info("generate on Ray: %d shards with prompts; pool %s", len(remote), pool.describe())
        items = [{"shard": s.name, "prompts": json.dumps([p.messages for p in s.prompts], ensure_ascii=False)}
                 for s in remote]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(GenerateShard, batch_size=1, batch_format="pyarrow", compute=pool.compute(ray),
                            num_gpus=gpus, num_cpus=pool.cpus_per_actor,
                            fn_constructor_kwargs={"config": maker.cfg.model_dump(mode="json"), "seed": maker.seed})
        by_name = {s.name: s for s in planned}
        order = iter(planned)
        ready: set[str] = {s.name for s in planned if not s.prompts}
        nxt = next(order, None)
        t0 = time.perf_counter()
        done = 0

        def status() -> str:
            return f"{done}/{len(remote)} shards back; pool {pool.describe()}; cluster {resources}"

        for row in watched(iter(ds.iter_rows()), stall_s, "generate", status):
            done += 1
            shard = by_name[row["shard"]]
            shard.completions = [Completion(**c) for c in json.loads(row["completions"])]
            shard.generator_id = row["generator"]
            now = time.perf_counter()  # wall time of the pool, counted as it passes so live rates are right
            usage.add(shard.completions, now - t0)
            t0 = now
            usage.extra["retries"] = usage.extra.get("retries", 0) + int(row["retries"])
            ready.add(shard.name)
            while nxt is not None and nxt.name in ready:
                yield nxt
                nxt = next(order, None)
        usage.seconds += time.perf_counter() - t0
        if nxt is not None:
            raise RuntimeError(f"generate on Ray: no completions came back for shard {nxt.name}")
    finally:
        if started:
            ray.shutdown()
