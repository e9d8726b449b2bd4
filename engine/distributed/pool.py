"""What the Ray executors share: an actor pool sized from the cluster, and a stall watchdog over its output.

Sizing (:func:`plan_pool`): CPU is kept for Ray Data's read tasks (``io_cpus``, at most half the cluster) so
that encoder actors can never take every CPU and starve the reads — the hang of an over-sized pool, where
Ray Data waits forever for a CPU that its own actors hold. On GPU clusters each actor takes one GPU; on CPU
clusters the rest of the CPUs are split between actors of up to 4 CPUs each (torch's intra-op threads stop
scaling well beyond that on one encoder). The pool autoscales between 1 and the planned size and starts at
the planned size.

Threads are not reservations: the CPU kept for the reads is a scheduling reservation, but a read task holds
it for milliseconds per block, so on CPU clusters the actors' threads also use it (``threads`` = the actor's
share plus its part of ``io_cpus``, rounded). On a 2-CPU machine the one actor reserves 1 CPU and encodes
with 2 threads; without this it encoded on one core while the other sat idle.

Watchdog (:func:`watched`): the driver consumes the dataset's output in a background thread; when no block
arrives for ``stall_s`` seconds the stage fails with :class:`Stalled`, naming the stage, the rows done and
the cluster's resources, instead of waiting silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from embedforge.encoding.encoder import prefetch
from embedforge.stages.base import StageFailed

MAX_CPUS_PER_ACTOR = 4.0


class Stalled(StageFailed):
    """No block finished on Ray for the configured time (a :class:`StageFailed`: the CLI prints it, exit 2)."""


@dataclass(frozen=True)
class PoolPlan:
    """How many actors, and what each reserves."""

    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: int
    threads: int
    """torch intra-op threads per actor: its CPU share plus, on CPU clusters, its part of the CPU kept for the
    reads (at least 1)."""
    io_cpus: float
    """CPUs each read task reserves (and that the actors leave free)."""

    def compute(self, ray: Any) -> Any:
        """The Ray Data compute strategy: an autoscaling actor pool 1..max, starting at max."""
        return ray.data.ActorPoolStrategy(min_size=1, max_size=self.max_actors, initial_size=self.max_actors)

    def describe(self) -> str:
        return (f"{self.max_actors} actor(s) x ({self.cpus_per_actor:g} CPU, {self.gpus_per_actor} GPU, "
                f"{self.threads} threads), reads {self.io_cpus:g} CPU")


def plan_pool(resources: dict[str, float], *, actors: int | None = None, cpus_per_actor: float | None = None,
              io_cpus: float = 1.0, use_gpu: bool = True) -> PoolPlan:
    """Size the pool from a cluster's ``ray.cluster_resources()``.

    ``actors``: most actors (null: one per GPU, or as many CPU actors as fit); ``cpus_per_actor`` (null:
    an even share of the free CPUs, at most 4); ``io_cpus``: CPUs left for read/write tasks (capped at half
    the cluster so a 1-CPU cluster still runs).
    """
    cpus = float(resources.get("CPU", 1.0))
    gpus = int(resources.get("GPU", 0)) if use_gpu else 0
    io = min(io_cpus, cpus / 2)
    free = max(cpus - io, 0.0)
    if gpus:
        n = min(actors or gpus, gpus)
        per = cpus_per_actor or min(MAX_CPUS_PER_ACTOR, max(free / n, 0.0))
    elif actors:
        n = actors
        per = cpus_per_actor or free / n
    else:
        per = cpus_per_actor or min(MAX_CPUS_PER_ACTOR, free)
        n = max(1, math.floor(free / per + 1e-9)) if per > 0 else 1
    if per * n > free + 1e-9:  # asked for more than fits: shrink the share so the reads keep their CPU
        per = free / n
    per = max(round(per, 3), 0.001)
    n = max(1, n)
    threads = round(per) if gpus else round(per + io / n)  # CPU actors also use the reads' mostly idle CPU
    return PoolPlan(max_actors=n, cpus_per_actor=per, gpus_per_actor=1 if gpus else 0,
                    threads=max(1, threads), io_cpus=round(io, 3) or 0.001)


def watched(items: Iterator[Any], stall_s: float, stage: str, status: Any = None) -> Iterator[Any]:
    """``items`` consumed in a background thread; :class:`Stalled` when none arrives for ``stall_s`` seconds.

    ``status()`` (optional) returns a short text for the error (rows done, resources).
    """
    try:
        yield from prefetch(items, depth=2, timeout=stall_s)
    except TimeoutError:
        # The consumer thread stays blocked inside Ray Data and is abandoned; once the caller shuts Ray down it
        # would wake up and let Ray's auto-init start a fresh local cluster. Auto-connect goes off for good.
        from ray._private import auto_init_hook

        auto_init_hook.enable_auto_connect = False
        detail = f" ({status()})" if status is not None else ""
        raise Stalled(f"{stage}: no block finished on Ray for {stall_s:g} s{detail}; the pool may be starved of "
                      "CPUs/GPUs or an actor is stuck — see `ray status`, or raise ray_stall_timeout_s") from None
