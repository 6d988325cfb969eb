"""The project's own errors: each says what to fix, so the CLI prints its message alone (exit 2)."""

from __future__ import annotations

__all__ = ["HpcmixError", "TaskFailedError"]


class HpcmixError(Exception):
    """An input or environment problem the user can fix from the message; not a bug."""


class TaskFailedError(RuntimeError):
    """A stage raised an unexpected exception in one of its tasks, or on the client (``task`` None).

    The original exception is ``error`` (and ``__cause__``).
    """

    def __init__(self, stage: str, task: str | None, error: BaseException):
        self.stage, self.task, self.error = stage, task, error
        super().__init__(f"{self.where}: {type(error).__name__}: {error}")

    @property
    def where(self) -> str:
        return f"stage {self.stage!r}, " + (f"task {self.task!r}" if self.task else "on the client")
