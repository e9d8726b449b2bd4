"""Executors that run stages beyond one process (Ray Data)."""
