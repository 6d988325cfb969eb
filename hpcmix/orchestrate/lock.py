"""One ``hpcmix run`` per output folder at a time.

An advisory ``flock`` on ``<output>/.hpcmix.lock``: the kernel releases it when
the holder exits, however it exits (SIGKILL, node reboot), so a crashed run
never leaves the folder stuck. The file's text names the holder for the
message a second run prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time

from ..errors import HpcmixError

LOCK_FILE = ".hpcmix.lock"


class OutputLockedError(HpcmixError, RuntimeError):
    """Another run holds the output folder."""


@contextlib.contextmanager
def output_lock(folder: str, *, what: str = "hpcmix run"):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{}"
            try:
                h = json.loads(holder)
                who = f"{h.get('what')} (pid {h.get('pid')} on {h.get('host')}, started {h.get('started')})"
            except ValueError:
                who = holder
            raise OutputLockedError(
                f"output folder {folder!r} is in use by {who}; wait for it to finish or use another output. "
                f"The lock ({path}) is released automatically when that process exits."
            ) from None
        info = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor drops the flock


def holder(folder: str) -> dict | None:
    """Who holds the output lock of ``folder`` now ({what, pid, host, started}), or None when no one does.

    Probes with a shared, non-blocking flock that is let go at once: a run starting in that instant
    of a microsecond would be told the folder is in use, and can simply be started again.
    """
    path = os.path.join(folder, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.pread(fd, 4096, 0).decode(errors="replace") or "{}")
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
