"""Collect Dask futures as they finish, with a progress bar, forgetting each one once read."""

from __future__ import annotations

from typing import Any, Hashable, Iterator, MutableMapping

from ..errors import HpcmixError, TaskFailedError


def as_finished(futures: MutableMapping[Hashable, Any], desc: str, *, progress: bool, unit: str = "task",
                per_task: int = 1) -> Iterator[tuple[Hashable, Any]]:
    """Yield ``(key, result)`` as the tasks finish; cancel the rest on error or when the caller stops.

    A task's unexpected exception arrives as :class:`TaskFailedError` (stage ``desc``, its key);
    the project's own errors pass unchanged.

    ``futures`` is emptied: from then on only this generator refers to the
    pending ones, and each finished future is dropped once its result is
    read. That matters on clusters whose workers retire (dask-jobqueue
    ``--lifetime``, a SLURM walltime): Dask recomputes every task whose
    future is still held and whose result lived on the leaving worker, so a
    stage that kept all its futures would redo its finished tasks at every
    handover.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    if not futures:
        return
    key_of = {f.key: k for k, f in futures.items()}
    pending = as_completed(list(futures.values()))
    n = len(futures)
    futures.clear()
    with tqdm(total=n * per_task, desc=desc, unit=unit, disable=not progress, smoothing=0.1) as bar:
        try:
            for fut in pending:
                key = key_of.pop(fut.key)
                try:
                    result = fut.result()
                except HpcmixError:
                    raise
                except Exception as err:
                    raise TaskFailedError(desc, str(key), err) from err
                fut.release()
                del fut
                bar.update(per_task)
                yield key, result
        finally:
            # released futures that nobody else holds are cancelled by the scheduler
            pending.clear()
