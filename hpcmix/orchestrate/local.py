"""A Client on the default local site, for callers that want one client rather than the site's pools."""

from __future__ import annotations


def local_client(n_workers: int | None = None, *, dashboard_address: str = ":0"):
    """The CPU pool of the packaged ``local`` site (one single-threaded worker process per core
    unless ``n_workers``); the caller closes the client and ``client.cluster``."""
    from .pools import make_clusters

    pools = make_clusters("local", gpu=False, cpu={"n_workers": n_workers, "dashboard_address": dashboard_address})
    return pools.cpu.client
