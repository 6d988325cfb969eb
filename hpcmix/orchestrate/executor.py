"""Where stage tasks run: in this process, or on a site's Dask pools (local cluster or SLURM).

Every stage hands the executor a list of :class:`Task`; the executor runs them and
yields ``(key, result)`` as they finish. A task that raises one of the project's own
errors (:class:`~hpcmix.errors.HpcmixError`) passes it on unchanged; any other
exception arrives as :class:`~hpcmix.errors.TaskFailedError` naming the stage and task. Stages never import a cluster, and a
stage run from ``hpcmix run`` and from its own subcommand runs the same tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import HpcmixError, TaskFailedError

#: the pools a task can ask for: ``training`` is the site's GPU pool, else its CPU pool
POOLS = ("cpu", "training")


@dataclass(frozen=True)
class Task:
    """One unit of a stage: ``fn(*args, **kwargs)`` on a worker of ``pool``."""

    key: str                      # unique across the study (the Dask key)
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    pool: str = "cpu"

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"task {self.key!r}: pool must be one of {POOLS}, got {self.pool!r}")


class _Mapping:
    """``map``: one task per argument tuple, for stages that need no Task objects (generation)."""

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], *, keys: Sequence[str], stage: str,
            pool: str = "cpu", progress: bool = False, unit: str = "task",
            per_task: int = 1) -> Iterator[tuple[str, Any]]:
        tasks = [Task(key=k, fn=fn, args=tuple(a), pool=pool) for k, a in zip(keys, calls, strict=True)]
        return self.run(tasks, stage=stage, progress=progress, unit=unit, per_task=per_task)


class InProcess(_Mapping):
    """Runs tasks one after another in this process (small jobs, tests, a debugger)."""

    name = "this process"
    has_gpu_pool = False
    runs_here = True          # tasks run in the caller's process (they may print to its terminal)

    def run(self, tasks: Sequence[Task], *, stage: str, progress: bool = False, unit: str = "task",
            per_task: int = 1) -> Iterator[tuple[str, Any]]:
        from tqdm.auto import tqdm

        with tqdm(total=len(tasks) * per_task, desc=stage, unit=unit, disable=not progress) as bar:
            for t in tasks:
                try:
                    result = t.fn(*t.args, **dict(t.kwargs))
                except HpcmixError:
                    raise
                except Exception as err:
                    raise TaskFailedError(stage, t.key, err) from err
                bar.update(per_task)
                yield t.key, result

    def describe(self) -> str:
        return "executor: in this process"

    def dashboard_lines(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


class OnPools(_Mapping):
    """Runs tasks on a site's pools: ``cpu`` tasks on the CPU pool, ``training`` on the GPU pool if any."""

    runs_here = False

    def __init__(self, pools, *, own: bool = False):
        self.pools = pools
        self._own = own

    @property
    def has_gpu_pool(self) -> bool:
        return self.pools.gpu is not None

    def run(self, tasks: Sequence[Task], *, stage: str, progress: bool = False, unit: str = "task",
            per_task: int = 1) -> Iterator[tuple[str, Any]]:
        from .completion import as_finished

        futures = {}
        for t in tasks:
            pool = self.pools.training if t.pool == "training" else self.pools.cpu
            futures[t.key] = pool.client.submit(t.fn, *t.args, **dict(t.kwargs), pure=False, key=t.key)
        yield from as_finished(futures, stage, progress=progress, unit=unit, per_task=per_task)

    def describe(self) -> str:
        return self.pools.describe()

    def dashboard_lines(self) -> list[str]:
        """Where each pool's dashboard is; for a SLURM pool's dashboard on the login node's localhost
        (the default), the ssh tunnel to it."""
        from .security import tunnel_command

        lines = []
        for p in self.pools.pools():
            link = p.dashboard_link
            tunnel = tunnel_command(p.settings.get("dashboard_address"), link) if p.site.kind == "slurm" else None
            if tunnel:
                lines.append(f"Dask dashboard ({p.name} pool), on this node's localhost only; reach it with: {tunnel}")
            elif link:
                lines.append(f"Dask dashboard ({p.name} pool): {link}")
        return lines

    def close(self) -> None:
        if self._own:
            self.pools.close()


def site_executor(site=None, *, cpu: Mapping[str, Any] | None = None, gpu: Any = None) -> OnPools:
    """An executor on the pools of ``site`` (a name, a path or a SiteConfig; default: local), closed by the caller."""
    from .pools import make_clusters

    kwargs: dict[str, Any] = {}
    if cpu is not None:
        kwargs["cpu"] = cpu
    if gpu is not None:
        kwargs["gpu"] = gpu
    return OnPools(make_clusters(site, **kwargs), own=True)
