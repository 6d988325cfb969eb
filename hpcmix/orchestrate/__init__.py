"""Where hpcmix computes: Dask clusters from site configs (local or SLURM)."""

from .errors import ClusterStartError, JobSubmissionError, WorkerTimeoutError
from .pools import Pool, Pools, make_clusters
from .sites import SiteConfig, SiteConfigError, available_sites, load_site, site_search_path

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
    "site_search_path",
]
