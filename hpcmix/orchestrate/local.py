"""The default cluster: a ``LocalCluster`` of single-threaded worker processes, one per core."""

from __future__ import annotations

import os


def local_client(n_workers: int | None = None, *, dashboard_address: str = ":0", silence_logs: bool = True):
    """Start a LocalCluster and return its Client (the caller closes both)."""
    import logging

    from distributed import Client, LocalCluster

    n_workers = n_workers or len(os.sched_getaffinity(0))
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=dashboard_address,
                           silence_logs=logging.WARNING if silence_logs else logging.INFO)
    return Client(cluster)
