"""Hard-negative mining: the mining corpus, positive-aware negative rules, the mining report."""
