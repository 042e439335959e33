"""Peers run the same workloads as COO, each from its own driver process (``bench.peers.driver``,
started by ``bench.peers.runner``). A peer that cannot be installed, reached or started is recorded
as skipped with the reason; no number is ever filled in for it.

This package's modules import nothing heavy at import time: Temporal's workflow sandbox re-imports
``bench.peers.temporal_app`` together with its parent packages."""

PEERS = ("celery", "dbos", "temporal")
