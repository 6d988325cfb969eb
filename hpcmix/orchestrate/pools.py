"""Pools of Dask workers for a site (a LocalCluster or SLURMCluster and its Client each): make_clusters."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ..schema import is_positive_number as _is_number
from .errors import ClusterStartError, JobSubmissionError, WorkerTimeoutError
from ..train.device import GPU_CHECK_ENV
from .security import dashboard_is_local, pool_security, remove_worker_certificates
from .sites import POOL_NAMES, SiteConfig, load_site
from .slurm import (
    JobTracker,
    all_jobs_ended,
    job_report,
    lifetime_args,
    preflight_sbatch,
    submission_failure_message,
    tracked_slurm_job_class,
)

logger = logging.getLogger(__name__)

__all__ = ["Pool", "Pools", "make_clusters"]


def _where(site: SiteConfig, pool: str) -> str:
    """How errors name a pool: ``site 'ci-slurm' (/path/ci-slurm.yaml), pool 'cpu'``."""
    return f"site {site.name!r} ({site.path}), pool {pool!r}"


@dataclasses.dataclass(frozen=True)
class Pool:
    """One pool: a cluster, its Client, and the settings it was built from."""

    name: str  # "cpu" | "gpu"
    site: SiteConfig
    cluster: Any  # LocalCluster | SLURMCluster
    client: Any  # distributed.Client
    settings: Mapping[str, Any]
    _tracker: JobTracker | None = dataclasses.field(default=None, repr=False)

    # -- information -------------------------------------------------------
    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.cluster.dashboard_link
        except Exception:  # no dashboard (bokeh missing, dashboard off)
            return None

    @property
    def job_ids(self) -> list[str]:
        return list(self._tracker.job_ids) if self._tracker else []

    @property
    def default_workers(self) -> int:
        """Workers :meth:`wait_for_workers` waits for by default."""
        s = self.settings
        if self.site.kind == "slurm":
            return s["minimum_jobs"] * s["processes"]
        return len(self.cluster.worker_spec)

    def n_workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def describe(self) -> str:
        s = self.settings
        cls = type(self.cluster).__name__
        if self.site.kind == "slurm":
            where = (f"partition {s['queue'] or '(default)'}, {s['cores']} cores / {s['memory']} / "
                     f"{s['walltime']} per job"
                     + (f", --gres={s['gres']}" if s["gres"] else "")
                     + f", jobs {s['minimum_jobs']}..{s['maximum_jobs']}")
        else:
            where = (f"{len(self.cluster.worker_spec)} workers x "
                     f"{s['threads_per_worker']} thread(s)")
        link = self.dashboard_link
        if link and self.site.kind == "slurm" and dashboard_is_local(s.get("dashboard_address")):
            # bound to the login node's localhost: the link's host would not answer (the tunnel is printed)
            link = f"localhost:{urlsplit(link).port} on {socket.gethostname()}"
        tls = "" if self.site.kind != "slurm" else ("; TLS" if s.get("tls") else "; plain TCP (tls: false)")
        return (f"{self.name}: {cls} ({where}); {self.n_workers()} worker(s) connected; "
                f"scheduler {self.cluster.scheduler_address}{tls}; dashboard {link or '(none)'}")

    # -- waiting -----------------------------------------------------------
    def wait_for_workers(self, n: int | None = None, timeout: float | None = None) -> None:
        """Wait until ``n`` workers are connected, or raise a clear error.

        ``n`` defaults to the pool's minimum (``minimum_jobs * processes`` on
        SLURM, ``n_workers`` locally); ``timeout`` to the pool's
        ``wait_timeout``. Raises :class:`JobSubmissionError` at once when
        sbatch rejected a job (with SLURM's message), :class:`ClusterStartError`
        when all jobs ended before their workers connected, and
        :class:`WorkerTimeoutError` after ``timeout`` seconds (with ``squeue``
        for the pool's jobs and the tail of their stderr).
        """
        n = self.default_workers if n is None else int(n)
        timeout = float(self.settings["wait_timeout"] if timeout is None else timeout)
        if n <= 0:
            return
        if self.site.kind == "slurm":
            most = self.settings["maximum_jobs"] * self.settings["processes"]
            if n > most:
                raise ValueError(f"pool {self.name!r} of site {self.site.name!r} can have at most "
                                 f"{most} workers (maximum_jobs x processes), asked to wait for {n}")
        start = time.monotonic()
        next_job_check = start + 2.0
        while True:
            if self._tracker and self._tracker.failures:
                raise JobSubmissionError(submission_failure_message(
                    self._where(), self.settings, self._tracker.failures))
            got = self.n_workers()
            if got >= n:
                return
            now = time.monotonic()
            if now - start >= timeout:
                raise WorkerTimeoutError(self._timeout_message(n, got, now - start))
            if self.site.kind == "slurm" and now >= next_job_check:
                next_job_check = now + 2.0
                ended = all_jobs_ended(self.job_ids)
                if ended:
                    raise ClusterStartError(
                        self._header(n, self.n_workers(), time.monotonic() - start)
                        + ": every worker job ended before its worker connected.\n"
                        + job_report(self.job_ids, self.settings))
            time.sleep(0.25)

    def _where(self) -> str:
        return _where(self.site, self.name)

    def _header(self, n: int, got: int, waited: float) -> str:
        return f"{self._where()}: {got} of {n} worker(s) connected after waiting {waited:.1f} s"

    def _timeout_message(self, n: int, got: int, waited: float) -> str:
        msg = self._header(n, got, waited) + f" (wait_timeout {self.settings['wait_timeout']:g} s)."
        if self.site.kind != "slurm":
            return msg + f"\nCluster: {self.cluster!r}"
        return msg + "\n" + job_report(self.job_ids, self.settings)

    # -- closing -------------------------------------------------------------
    def close(self) -> None:
        """Close the client, then the cluster (cancels SLURM jobs)."""
        with contextlib.suppress(Exception):
            self.client.close()
        try:
            self.cluster.close()
        finally:
            remove_worker_certificates(self.cluster)


@dataclasses.dataclass(frozen=True)
class Pools:
    """The pools of a site: ``.cpu`` (always) and ``.gpu`` (or None). A context manager."""

    site: SiteConfig
    cpu: Pool
    gpu: Pool | None = None

    @property
    def training(self) -> Pool:
        """The pool to train on: gpu if the site has one, else cpu."""
        return self.gpu if self.gpu is not None else self.cpu

    def pools(self) -> list[Pool]:
        return [p for p in (self.cpu, self.gpu) if p is not None]

    def describe(self) -> str:
        head = f"site {self.site.name!r} ({self.site.path}), kind {self.site.kind}"
        if self.site.description:
            head += f": {self.site.description}"
        return "\n".join([head] + [f"  {p.describe()}" for p in self.pools()])

    def wait_for_workers(self, timeout: float | None = None) -> None:
        for p in self.pools():
            p.wait_for_workers(timeout=timeout)

    def close(self) -> None:
        errors = []
        for p in reversed(self.pools()):
            try:
                p.close()
            except Exception as e:  # close the other pool anyway
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> Pools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_local_pool(site: SiteConfig, name: str, s: Mapping[str, Any]) -> Pool:
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    n = s["n_workers"] if s["n_workers"] is not None else (CPU_COUNT if name == "cpu" else 1)
    kwargs: dict[str, Any] = dict(
        n_workers=n,
        threads_per_worker=s["threads_per_worker"],
        memory_limit=s["memory_limit"],
        processes=s["processes"],
        dashboard_address=s["dashboard_address"],
    )
    if s["local_directory"]:
        kwargs["local_directory"] = os.path.expandvars(os.path.expanduser(s["local_directory"]))
    cluster = LocalCluster(**kwargs)
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    return Pool(name=name, site=site, cluster=cluster, client=client, settings=MappingProxyType(dict(s)))


def _make_slurm_pool(site: SiteConfig, name: str, s: Mapping[str, Any], *, preflight: bool) -> Pool:
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    s = dict(s)
    s["job_name"] = s["job_name"] or f"hpcmix-{name}"
    log_dir = s["log_directory"] or os.path.join("hpcmix-output", "slurm-logs", site.name)
    s["log_directory"] = os.path.abspath(os.path.expandvars(os.path.expanduser(log_dir)))
    directives = list(s["job_extra_directives"])
    if s["gres"]:
        directives.append(f"--gres={s['gres']}")
    worker_args = list(s["worker_extra_args"]) + lifetime_args(
        s["walltime"], s["lifetime"], s["lifetime_stagger"])
    tracker = JobTracker()
    kwargs: dict[str, Any] = dict(
        job_cls=tracked_slurm_job_class(tracker),
        cores=s["cores"],
        memory=s["memory"],
        processes=s["processes"],
        walltime=s["walltime"],
        queue=s["queue"],
        account=s["account"],
        job_extra_directives=directives,
        job_directives_skip=list(s["job_directives_skip"]),
        worker_extra_args=worker_args,
        # the site's gpu_check reaches the training code in the job's environment (train/device.py)
        job_script_prologue=list(s["job_script_prologue"]) + [f"export {GPU_CHECK_ENV}={s['gpu_check']}"],
        local_directory=s["local_directory"],
        interface=s["interface"],
        log_directory=s["log_directory"],
        job_name=s["job_name"],
        death_timeout=s["death_timeout"],
        python=site.python,
        scheduler_options={"dashboard_address": s["dashboard_address"]},
        # TLS by default: no one else on the login node can use the scheduler (orchestrate/security.py)
        **pool_security(s, where=_where(site, name)),
    )
    cluster = SLURMCluster(**kwargs)
    client = None
    try:
        if preflight:
            preflight_sbatch(_where(site, name), s, cluster.job_script())
        client = Client(cluster)
        cluster.adapt(minimum_jobs=s["minimum_jobs"], maximum_jobs=s["maximum_jobs"])
    except BaseException:
        if client is not None:
            client.close()
        try:
            cluster.close()
        finally:
            remove_worker_certificates(cluster)
        raise
    return Pool(name=name, site=site, cluster=cluster, client=client,
                settings=MappingProxyType(s), _tracker=tracker)


def make_clusters(
    site: str | os.PathLike[str] | SiteConfig | None = None,
    *,
    cpu: Mapping[str, Any] | None = None,
    gpu: Mapping[str, Any] | bool | None = None,
    python: str | None = None,
    wait: bool = True,
    wait_timeout: float | None = None,
    preflight: bool = True,
) -> Pools:
    """Start the pools of ``site`` and return them (close them, or use ``with``).

    The dask-jobqueue model: a site config (see ``docs/site-config.md``) says
    what one worker job looks like; the code asks for a number of jobs. A site
    has a ``cpu`` pool (event generation, fits) and an optional ``gpu`` pool
    (training). dask-jobqueue cannot mix worker specs in one cluster, so each
    pool is its own cluster (``LocalCluster`` or ``SLURMCluster``) with its own
    scheduler and ``Client``::

        with make_clusters("ci-slurm", wait_timeout=60) as pools:
            print(pools.describe())
            pools.cpu.client.submit(sum, [1, 2]).result()
            if pools.gpu is not None:
                pools.gpu.client.submit(train, ...).result()

    Resolution is "keyword else config": keyword arguments win over the site
    file, which wins over the defaults in ``LOCAL_POOL_FIELDS`` /
    ``SLURM_POOL_FIELDS`` (:mod:`hpcmix.orchestrate.sites`). Anything hpcmix
    does not set is left to dask-jobqueue's own configuration
    (``jobqueue.slurm.*`` in dask.config).

    site: name, path or :class:`SiteConfig` (see :func:`load_site`); None:
        $HPCMIX_SITE else "local".
    cpu, gpu: per-pool overrides of site-file keys ("keyword else config"),
        validated like the file; ``gpu=False`` skips the GPU pool.
    python: the workers' Python (SLURM; default: the site's, else this one).
    wait: wait until each pool has its minimum workers (SLURM:
        ``minimum_jobs * processes``; local: ``n_workers``).
    wait_timeout: seconds, overrides each pool's ``wait_timeout``.
    preflight: SLURM only: check each job with ``sbatch --test-only`` first,
        so a rejected job fails here with SLURM's message.

    SLURM pools scale adaptively between ``minimum_jobs`` and
    ``maximum_jobs``. On any failure everything started is closed again.
    """
    cfg = load_site(site)
    if cpu is not None or gpu is not None or python is not None:
        cfg = cfg.with_overrides(cpu=cpu, gpu=gpu, python=python)
    if wait_timeout is not None and not _is_number(wait_timeout):
        raise ValueError(f"wait_timeout must be a number of seconds > 0, got {wait_timeout!r}")
    built: list[Pool] = []
    try:
        for name in POOL_NAMES:
            settings = cfg.cpu if name == "cpu" else cfg.gpu
            if settings is None:
                continue
            if cfg.kind == "local":
                built.append(_make_local_pool(cfg, name, settings))
            else:
                built.append(_make_slurm_pool(cfg, name, settings, preflight=preflight))
        pools = Pools(site=cfg, cpu=built[0], gpu=built[1] if len(built) > 1 else None)
        if wait:
            for p in built:
                p.wait_for_workers(timeout=wait_timeout)
        return pools
    except BaseException:
        for p in reversed(built):
            try:
                p.close()
            except Exception:  # keep the original error
                logger.exception("closing pool %s after a failed start", p.name)
        raise
