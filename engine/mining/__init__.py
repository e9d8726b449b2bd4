"""Hard-negative mining: the mining corpus, positive-aware negative rules, the per-shard mining loop
(:mod:`~embedforge.mining.shard`) and the mining report."""
