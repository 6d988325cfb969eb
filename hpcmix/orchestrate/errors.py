"""Errors raised when a pool's workers cannot be started."""

from __future__ import annotations

from ..errors import HpcmixError

__all__ = ["ClusterStartError", "JobSubmissionError", "WorkerTimeoutError"]


class ClusterStartError(HpcmixError, RuntimeError):
    """A pool's workers could not be started."""


class JobSubmissionError(ClusterStartError):
    """The batch system rejected a worker job (its own message is included)."""


class WorkerTimeoutError(ClusterStartError, TimeoutError):
    """Workers did not connect to the scheduler in time."""
