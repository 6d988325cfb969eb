"""SLURM introspection and failure diagnostics: walltimes, scontrol/squeue, job tracking, sbatch preflight."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dask.utils import parse_timedelta

from .errors import JobSubmissionError

__all__ = [
    "JobTracker",
    "all_jobs_ended",
    "job_report",
    "job_states",
    "lifetime_args",
    "parse_scontrol_job",
    "preflight_sbatch",
    "slurm_job_gres",
    "submission_failure_message",
    "tracked_slurm_job_class",
    "walltime_seconds",
    "worker_info",
]


# --------------------------------------------------------------------------
# walltimes
# --------------------------------------------------------------------------
# SLURM time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_WALLTIME_RE = re.compile(r"^(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)$")


def walltime_seconds(walltime: str) -> int:
    """Seconds in a SLURM time limit string (``"01:30:00"``, ``"2-00:00:00"``, ``"90"``)."""
    m = _WALLTIME_RE.match(str(walltime).strip())
    if not m:
        raise ValueError(f"not a SLURM time limit: {walltime!r}")
    d, dh, dm, ds, a, b, c = m.groups()
    if d is not None:
        return int(d) * 86400 + int(dh) * 3600 + int(dm or 0) * 60 + int(ds or 0)
    parts = [int(x) for x in (a, b, c) if x is not None]
    if len(parts) == 1:  # minutes
        return parts[0] * 60
    if len(parts) == 2:  # minutes:seconds
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def lifetime_args(walltime: str, lifetime: Any, stagger: Any) -> list[str]:
    """``dask worker`` arguments that retire a worker before SLURM kills its job.

    ``lifetime: auto`` uses ``walltime - m`` with ``m = clamp(10 % of walltime,
    1 min, 10 min)`` and a stagger of ``m / 2`` (dask staggers by +/- the
    value), so every worker is gone at least ``m / 2`` before the walltime.
    """
    if lifetime is None:
        return []
    if lifetime == "auto":
        wall = walltime_seconds(walltime)
        margin = min(600.0, max(60.0, 0.1 * wall), wall / 2)
        life_s, stagger_s = wall - margin, margin / 2
    else:
        life_s = parse_timedelta(lifetime, default="seconds")
        stagger_s = parse_timedelta(stagger or 0, default="seconds")
    args = ["--lifetime", f"{int(life_s)}s"]
    if stagger_s:
        args += ["--lifetime-stagger", f"{int(stagger_s)}s"]
    return args



# --------------------------------------------------------------------------
# scontrol, squeue
# --------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a command, never hanging; a missing command or timeout gives rc 127/124."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError as e:
        return subprocess.CompletedProcess(cmd, 127, "", str(e))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{cmd[0]} timed out after {timeout:g} s")


def _scontrol_job(job_id: str, details: bool = False) -> str:
    cmd = ["scontrol", "show", "job"] + (["-d"] if details else []) + [str(job_id)]
    r = _run(cmd)
    return r.stdout if r.returncode == 0 else ""


def _scontrol_field(text: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", text)
    return m.group(1) if m else None


def _expand_slurm_filename(pattern: str, job_id: str, job_name: str) -> str:
    """Expand the sbatch filename pattern (scontrol shows ``%J`` etc. unexpanded)."""
    subs = {"j": job_id, "J": job_id, "A": job_id, "x": job_name,
            "u": os.environ.get("USER", ""), "%": "%"}
    return re.sub(r"%(\d*)([jJAxu%])", lambda m: subs[m.group(2)].zfill(int(m.group(1) or 0)), pattern)


def _count_gres(spec: str | None, name: str = "gpu") -> int:
    """``gpu:1``, ``gpu:a100:2``, ``gpu:1(IDX:0),shard:2`` -> number of ``name`` units."""
    if not spec or spec in ("(null)", "N/A"):
        return 0
    total = 0
    for item in re.sub(r"\([^)]*\)", "", spec).split(","):
        parts = item.strip().split(":")
        if parts and parts[0] in (name, f"gres/{name}"):
            count = parts[-1] if len(parts) > 1 and parts[-1].isdigit() else "1"
            total += int(count)
    return total


def parse_scontrol_job(text: str) -> dict[str, Any]:
    """The GRES facts in ``scontrol show job -d`` output (see :func:`slurm_job_gres`)."""
    job_gres = _scontrol_field(text, "JOB_GRES")
    node_gres = re.findall(r"^\s*Nodes=\S+ .*?\bGRES=(\S+)", text, flags=re.M)
    tres = _scontrol_field(text, "TRES") or _scontrol_field(text, "AllocTRES")
    gpus = _count_gres(job_gres)
    if not gpus:
        gpus = sum(_count_gres(g) for g in node_gres)
    if not gpus and tres:
        m = re.search(r"gres/gpu(?::[^=,]+)?=(\d+)", tres)
        gpus = int(m.group(1)) if m else 0
    return {
        "job_id": _scontrol_field(text, "JobId"),
        "job_state": _scontrol_field(text, "JobState"),
        "partition": _scontrol_field(text, "Partition"),
        "job_gres": job_gres,
        "node_gres": node_gres,
        "tres": tres,
        "gpus": gpus,
        "raw": text,
    }


def slurm_job_gres(job_id: str | int | None = None) -> dict[str, Any]:
    """What SLURM says a job holds, from ``scontrol show job -d <id>``.

    ``job_id`` defaults to ``$SLURM_JOB_ID`` (call it on a worker). Returns
    ``{"job_id", "job_state", "partition", "job_gres", "node_gres", "tres",
    "gpus", "raw"}`` where ``gpus`` counts allocated gpu GRES (from
    ``JOB_GRES``, else the per-node ``GRES=`` lines, else ``gres/gpu`` in
    ``TRES``), e.g. ``job_gres="gpu:1"``, ``node_gres=["gpu:1(IDX:0)"]``.
    """
    if job_id is None:
        job_id = os.environ.get("SLURM_JOB_ID")
        if not job_id:
            raise RuntimeError("slurm_job_gres: not inside a SLURM job (no SLURM_JOB_ID)")
    r = _run(["scontrol", "show", "job", "-d", str(job_id)])
    if r.returncode != 0:
        raise RuntimeError(f"scontrol show job -d {job_id} failed: {r.stderr.strip() or r.stdout.strip()}")
    return parse_scontrol_job(r.stdout)


def worker_info() -> dict[str, Any]:
    """Where a task runs: host, pid, Python, SLURM job and GPU environment (submit it to a pool)."""
    import socket

    env = {k: v for k, v in os.environ.items()
           if k.startswith("SLURM_") or k in ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL",
                                                "ROCR_VISIBLE_DEVICES", "PYTHONPATH")}
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "python": sys.executable,
        "cwd": os.getcwd(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "env": env,
    }


class JobTracker:
    """What one pool submitted: job ids, and sbatch failures (with SLURM's message)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.job_ids: list[str] = []
        self.failures: list[str] = []

    def add_job(self, job_id: str) -> None:
        with self._lock:
            self.job_ids.append(job_id)

    def add_failure(self, msg: str) -> None:
        with self._lock:
            self.failures.append(msg)


def tracked_slurm_job_class(tracker: JobTracker) -> type:
    """A ``SLURMCluster(job_cls=)`` that records its job ids and sbatch failures in ``tracker``."""
    from dask_jobqueue.slurm import SLURMJob
    from distributed.core import Status

    class HpcmixSLURMJob(SLURMJob):
        """SLURMJob that reports its job id and sbatch's error to the pool."""

        _hpcmix_tracker = tracker

        async def start(self) -> None:
            try:
                await super().start()
            except BaseException:
                # SpecCluster.close() insists that every job it created ended
                # up closed or failed; a rejected submission is "failed".
                self.status = Status.failed
                raise

        async def _submit_job(self, script_filename: str) -> str:
            try:
                return await super()._submit_job(script_filename)
            except RuntimeError as e:  # dask-jobqueue: non-zero exit, stderr in the text
                msg = str(e)
                m = re.search(r"stderr:\n(.*)", msg, flags=re.S)
                self._hpcmix_tracker.add_failure((m.group(1) if m else msg).strip() or msg)
                raise

        def _job_id_from_submit_output(self, out: str) -> str:
            job_id = super()._job_id_from_submit_output(out)
            self._hpcmix_tracker.add_job(job_id)
            return job_id

    return HpcmixSLURMJob


# --------------------------------------------------------------------------
# failure diagnostics
# --------------------------------------------------------------------------
def _job_summary(s: Mapping[str, Any]) -> str:
    return (f"partition {s.get('queue')!r}, cores {s.get('cores')}, memory {s.get('memory')!r}, "
            f"gres {s.get('gres')!r}")


def submission_failure_message(where: str, s: Mapping[str, Any], failures: Sequence[str]) -> str:
    """``where`` (site and pool) + the job's resources + what sbatch said for each failure."""
    msgs = "\n".join(f"  {line}" for f in failures for line in f.splitlines())
    return f"{where}: sbatch rejected the worker job ({_job_summary(s)}). SLURM said:\n{msgs}"


def preflight_sbatch(where: str, s: Mapping[str, Any], script: str) -> None:
    """``sbatch --test-only``: let SLURM reject a bad job before we wait for it.

    Raises :class:`JobSubmissionError` with SLURM's message (``where`` names
    the site and pool) when sbatch is missing or rejects ``script``.
    """
    if shutil.which("sbatch") is None:
        raise JobSubmissionError(f"{where}: sbatch not found on PATH; this site needs a SLURM submit host")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="hpcmix-preflight-", delete=False) as f:
        f.write(script)
    try:
        r = _run(["sbatch", "--test-only", f.name], timeout=60)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(f.name)
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip() or f"exit code {r.returncode}")
        raise JobSubmissionError(submission_failure_message(where, s, [said]))


_ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
                            "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"})


def job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """``{job id: squeue state}``; ``GONE`` for jobs no longer in the queue, ``{}`` if squeue fails."""
    ids = list(job_ids)
    if not ids:
        return {}
    r = _run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)])
    if r.returncode != 0:
        if "Invalid job id" in r.stderr:
            return {i: "GONE" for i in ids}
        return {}
    states = dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip())
    return {i: states.get(i, "GONE").strip() for i in ids}


def all_jobs_ended(job_ids: Sequence[str]) -> bool:
    """True when there are jobs and none of them is pending, running or about to run."""
    states = job_states(job_ids)
    return bool(states) and all(s not in _ACTIVE_STATES for s in states.values())


def job_report(job_ids: Sequence[str], s: Mapping[str, Any]) -> str:
    """What SLURM says about a pool's jobs: squeue rows, scontrol state/reason, stderr tails.

    ``s`` are the pool's settings (``queue``, ``cores``, ``memory``,
    ``walltime``, ``gres``, ``job_name``, ``log_directory``).
    """
    ids = list(job_ids)
    lines = [f"Jobs: partition {s['queue'] or '(default)'}, {s['cores']} core(s), memory "
             f"{s['memory']}, walltime {s['walltime']}"
             + (f", --gres={s['gres']}" if s["gres"] else "")
             + f"; submitted job ids: {', '.join(ids) or 'none'}"]
    if not ids:
        lines.append("No job was submitted (is minimum_jobs 0 with nothing to compute?).")
        return "\n".join(lines)
    r = _run(["squeue", "-t", "all", "-j", ",".join(ids),
              "-o", "%.12i %.10P %.20j %.10T %.10M %.6D %R"])
    out = (r.stdout.strip() or "(no rows: the jobs have left the queue)") if r.returncode == 0 \
        else f"(squeue failed: {r.stderr.strip()})"
    lines.append("squeue -t all -j " + ",".join(ids) + ":")
    lines += [f"  {line}" for line in out.splitlines()]
    for job_id in ids[:4]:
        text = _scontrol_job(job_id)
        if text:
            state = " ".join(f"{k}={_scontrol_field(text, k)}"
                             for k in ("JobState", "Reason", "ExitCode"))
            lines.append(f"job {job_id}: {state}")
        err_path = _scontrol_field(text, "StdErr") if text else None
        if not err_path and s.get("log_directory"):
            err_path = os.path.join(s["log_directory"], f"{s['job_name']}-%J.err")
        if err_path:
            err_path = _expand_slurm_filename(err_path, job_id, s["job_name"])
        if err_path:
            try:
                with open(err_path, errors="replace") as f:
                    tail = f.readlines()[-20:]
                lines.append(f"stderr of job {job_id} ({err_path}), last {len(tail)} line(s):")
                lines += [f"  | {t.rstrip()}" for t in tail] or ["  (empty)"]
            except OSError:
                lines.append(f"stderr of job {job_id}: {err_path} (not written yet: "
                             "the job has not started)")
    return "\n".join(lines)

