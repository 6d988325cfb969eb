"""Where hpcmix computes: Dask clusters from site configs (local or SLURM)."""

from .cluster import (
    ClusterStartError,
    JobSubmissionError,
    Pool,
    Pools,
    SiteConfig,
    SiteConfigError,
    WorkerTimeoutError,
    available_sites,
    load_site,
    make_clusters,
)

__all__ = [
    "ClusterStartError",
    "JobSubmissionError",
    "Pool",
    "Pools",
    "SiteConfig",
    "SiteConfigError",
    "WorkerTimeoutError",
    "available_sites",
    "load_site",
    "make_clusters",
]
