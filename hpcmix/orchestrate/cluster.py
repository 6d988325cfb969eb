"""Dask clusters for hpcmix from site configs: a local machine or SLURM.

The dask-jobqueue model: a *site config* (a YAML file, see
``docs/site-config.md``) says what one worker job looks like; the code asks for
a number of jobs. A site has a ``cpu`` pool (event generation, fits) and an
optional ``gpu`` pool (training). dask-jobqueue cannot mix worker specs in one
cluster, so each pool is its own cluster (``LocalCluster`` or
``SLURMCluster``) with its own scheduler and ``Client``.

    from hpcmix.orchestrate import make_clusters

    with make_clusters("ci-slurm", wait_timeout=60) as pools:
        print(pools.describe())
        pools.cpu.client.submit(sum, [1, 2]).result()
        if pools.gpu is not None:
            pools.gpu.client.submit(train, ...).result()

Resolution is "keyword else config": keyword arguments of
:func:`make_clusters` win over the site file, which wins over the built-in
defaults listed in :data:`LOCAL_POOL_FIELDS` / :data:`SLURM_POOL_FIELDS`.
Anything hpcmix does not set is left to dask-jobqueue's own configuration
(``jobqueue.slurm.*`` in dask.config).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from dask.utils import parse_bytes, parse_timedelta

from ..schema import REQUIRED as _REQUIRED
from ..schema import ConfigError, Field, check_section
from ..schema import is_int as _is_int
from ..schema import is_positive_number as _is_number
from ..schema import is_str as _is_str
from ..schema import is_str_list as _is_str_list
from ..schema import optional as _opt
from ..schema import type_name as _type_name

logger = logging.getLogger(__name__)

__all__ = [
    "ClusterStartError",
    "JobSubmissionError",
    "LOCAL_POOL_FIELDS",
    "Pool",
    "Pools",
    "SLURM_POOL_FIELDS",
    "SiteConfig",
    "SiteConfigError",
    "WorkerTimeoutError",
    "available_sites",
    "lifetime_args",
    "load_site",
    "make_clusters",
    "parse_scontrol_job",
    "site_search_path",
    "slurm_job_gres",
    "walltime_seconds",
    "worker_info",
]

#: Environment variable: extra directories (``os.pathsep``-separated) searched
#: for ``<name>.yaml`` site configs, before the repository's ``site_configs/``.
SITE_PATH_ENV = "HPCMIX_SITE_PATH"
#: Environment variable naming the site used when none is given.
SITE_ENV = "HPCMIX_SITE"
DEFAULT_SITE = "local"

_REPO_SITE_DIR = Path(__file__).resolve().parents[2] / "site_configs"
_PACKAGE_SITE_DIR = Path(__file__).resolve().parents[1] / "site_configs"


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
class SiteConfigError(ConfigError):
    """A site config file cannot be found, parsed or validated."""


class ClusterStartError(RuntimeError):
    """A pool's workers could not be started."""


class JobSubmissionError(ClusterStartError):
    """The batch system rejected a worker job (its own message is included)."""


class WorkerTimeoutError(ClusterStartError, TimeoutError):
    """Workers did not connect to the scheduler in time."""


# --------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------
def _is_bytes(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v > 0
    if not isinstance(v, str):
        return False
    try:
        return parse_bytes(v) > 0
    except (ValueError, TypeError):
        return False


def _is_duration(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return False
    try:
        return parse_timedelta(v, default="seconds") > 0
    except (ValueError, TypeError, KeyError):
        return False


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


def _is_walltime(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        return walltime_seconds(v) > 0
    except ValueError:
        return False


_POOL_NAMES = ("cpu", "gpu")

#: Keys of a ``kind: local`` pool (``cpu`` or ``gpu``) -> ``LocalCluster``.
LOCAL_POOL_FIELDS: dict[str, Field] = {
    "n_workers": Field(
        _opt(lambda v: _is_int(v, 1)), "an integer >= 1, or null (= number of cores)", None,
        "LocalCluster(n_workers=); null: the number of usable cores (cpu pool) or 1 (gpu pool)",
    ),
    "threads_per_worker": Field(lambda v: _is_int(v, 1), "an integer >= 1", 1,
                                "LocalCluster(threads_per_worker=)"),
    "memory_limit": Field(lambda v: v == "auto" or _is_bytes(v),
                          "'auto' or a size like '2GB' / bytes as an integer", "auto",
                          "LocalCluster(memory_limit=), per worker"),
    "processes": Field(lambda v: isinstance(v, bool), "true or false", True,
                       "LocalCluster(processes=): workers in their own processes"),
    "local_directory": Field(_opt(_is_str), "a directory path or null", None,
                             "worker scratch/spill directory"),
    "dashboard_address": Field(_opt(_is_str), "an address like ':8787' (':0' = any free port) or null",
                               None, "scheduler dashboard; default ':8787' (cpu), ':0' (gpu)"),
    "wait_timeout": Field(_is_number, "a number of seconds > 0", 60,
                          "how long make_clusters waits for the workers"),
}

#: Keys of a ``kind: slurm`` pool (``cpu`` or ``gpu``) -> ``SLURMCluster``.
SLURM_POOL_FIELDS: dict[str, Field] = {
    "cores": Field(lambda v: _is_int(v, 1), "an integer >= 1", _REQUIRED,
                   "cores per job: SLURMCluster(cores=) -> #SBATCH --cpus-per-task"),
    "memory": Field(_is_bytes, "a size like '4GB' or '500MiB'", _REQUIRED,
                    "memory per job: SLURMCluster(memory=) -> #SBATCH --mem"),
    "processes": Field(lambda v: _is_int(v, 1), "an integer >= 1", 1,
                       "Dask worker processes per job (threads = cores / processes)"),
    "walltime": Field(_is_walltime, "a SLURM time like '01:00:00', '2-00:00:00' or '30'", "01:00:00",
                      "SLURMCluster(walltime=) -> #SBATCH -t"),
    "queue": Field(_opt(_is_str), "a partition name or null", None,
                   "SLURMCluster(queue=) -> #SBATCH -p"),
    "partition": Field(_opt(_is_str), "a partition name or null (same as queue)", None,
                       "alias of queue; give one of them"),
    "account": Field(_opt(_is_str), "an account name or null", None,
                     "SLURMCluster(account=) -> #SBATCH -A"),
    "gres": Field(_opt(_is_str), "a GRES spec like 'gpu:1' or 'gpu:a100:2', or null", None,
                  "#SBATCH --gres=<gres>; default 'gpu:1' in the gpu pool"),
    "job_extra_directives": Field(_is_str_list, "a list of strings", [],
                                  "more #SBATCH lines, e.g. ['--qos=short', '--constraint=v100']"),
    "job_directives_skip": Field(_is_str_list, "a list of strings", [],
                                 "drop generated #SBATCH lines containing any of these"),
    "worker_extra_args": Field(_is_str_list, "a list of strings", [],
                               "more `dask worker` arguments"),
    "lifetime": Field(_opt(lambda v: v == "auto" or _is_duration(v)),
                      "null, 'auto', or a duration like '55m'", None,
                      "dask worker --lifetime: retire workers before the walltime kills them"),
    "lifetime_stagger": Field(_opt(_is_duration), "null or a duration like '4m'", None,
                              "dask worker --lifetime-stagger (+/- this much)"),
    "minimum_jobs": Field(lambda v: _is_int(v, 0), "an integer >= 0", 1,
                          "adaptive lower bound (jobs kept even when idle)"),
    "maximum_jobs": Field(_opt(lambda v: _is_int(v, 1)), "an integer >= 1 or null (= minimum_jobs)", None,
                          "adaptive upper bound"),
    "job_script_prologue": Field(_is_str_list, "a list of shell lines", [],
                                 "lines run in the job before the worker starts (module load, exports)"),
    "local_directory": Field(_opt(_is_str), "a directory path or null", None,
                             "worker scratch/spill directory on the node, e.g. '$TMPDIR'"),
    "interface": Field(_opt(_is_str), "a network interface name like 'ib0', or null", None,
                       "interface for scheduler and workers"),
    "log_directory": Field(_opt(_is_str), "a directory path or null", None,
                           "job stdout/stderr files; default hpcmix-output/slurm-logs/<site>"),
    "job_name": Field(_opt(_is_str), "a job name or null", None,
                      "#SBATCH -J; default hpcmix-<pool>"),
    "death_timeout": Field(_is_number, "a number of seconds > 0", 60,
                           "a worker gives up when it cannot reach the scheduler this long"),
    "dashboard_address": Field(_opt(_is_str), "an address like ':8787' (':0' = any free port) or null",
                               None, "scheduler dashboard; default ':8787' (cpu), ':0' (gpu)"),
    "wait_timeout": Field(_is_number, "a number of seconds > 0", 300,
                          "how long make_clusters waits for the minimum workers"),
}

_TOP_FIELDS: dict[str, dict[str, Field]] = {
    "local": {
        "kind": Field(lambda v: v == "local", "'local' or 'slurm'", _REQUIRED),
        "description": Field(_opt(lambda v: isinstance(v, str)), "a string", None),
        "cpu": Field(lambda v: isinstance(v, Mapping), "a mapping of pool settings", _REQUIRED),
        "gpu": Field(lambda v: v is None or isinstance(v, Mapping), "a mapping of pool settings or null", None),
    },
    "slurm": {
        "kind": Field(lambda v: v == "slurm", "'local' or 'slurm'", _REQUIRED),
        "description": Field(_opt(lambda v: isinstance(v, str)), "a string", None),
        "python": Field(_opt(_is_str), "a path to a Python executable, or null (= this Python)", None,
                        "Python that runs the workers in the jobs"),
        "cpu": Field(lambda v: isinstance(v, Mapping), "a mapping of pool settings", _REQUIRED),
        "gpu": Field(lambda v: v is None or isinstance(v, Mapping), "a mapping of pool settings or null", None),
    },
}


def _check_section(data, fields, *, source: str, prefix: str, require: bool = True) -> None:
    check_section(data, fields, source=source, prefix=prefix, require=require, error=SiteConfigError)


def _pool_defaults(kind: str, pool: str) -> dict[str, Any]:
    fields = LOCAL_POOL_FIELDS if kind == "local" else SLURM_POOL_FIELDS
    out = {k: (list(f.default) if isinstance(f.default, list) else f.default)
           for k, f in fields.items() if not f.required}
    if kind == "slurm" and pool == "gpu":
        out["gres"] = "gpu:1"
    out["dashboard_address"] = ":8787" if pool == "cpu" else ":0"
    if kind == "local" and pool == "gpu":
        out["n_workers"] = 1
    return out


def _finish_pool(kind: str, pool: str, raw: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """Defaults + cross-field checks; ``raw`` already passed :func:`_check_section`."""
    p = _pool_defaults(kind, pool)
    p.update(raw)
    pre = f"{pool}."
    if kind == "slurm":
        if raw.get("queue") is not None and raw.get("partition") is not None \
                and raw["queue"] != raw["partition"]:
            raise SiteConfigError(
                f"{source}: fields '{pre}queue' ({raw['queue']!r}) and '{pre}partition' "
                f"({raw['partition']!r}) disagree; allowed: give only one of them"
            )
        p["queue"] = p.get("queue") or p.get("partition")
        p["partition"] = p["queue"]
        if p["processes"] > p["cores"]:
            raise SiteConfigError(
                f"{source}: field '{pre}processes' has value {p['processes']!r}; "
                f"allowed: at most '{pre}cores' ({p['cores']})"
            )
        if p["maximum_jobs"] is None:
            p["maximum_jobs"] = max(p["minimum_jobs"], 1)
        if p["maximum_jobs"] < p["minimum_jobs"]:
            raise SiteConfigError(
                f"{source}: field '{pre}maximum_jobs' has value {p['maximum_jobs']!r}; "
                f"allowed: an integer >= '{pre}minimum_jobs' ({p['minimum_jobs']})"
            )
        if p["gres"] and any(re.match(r"\s*--gres\b", d) for d in p["job_extra_directives"]):
            raise SiteConfigError(
                f"{source}: field '{pre}job_extra_directives' has value "
                f"{p['job_extra_directives']!r}; allowed: no --gres line when '{pre}gres' "
                f"is set ({p['gres']!r}); set '{pre}gres: null' to write your own"
            )
        for flag in ("--lifetime", "--lifetime-stagger"):
            if flag in p["worker_extra_args"] and p["lifetime"] is not None:
                raise SiteConfigError(
                    f"{source}: field '{pre}worker_extra_args' has value {p['worker_extra_args']!r}; "
                    f"allowed: no {flag} when '{pre}lifetime' is set"
                )
        wall = walltime_seconds(p["walltime"])
        if p["lifetime"] is not None and p["lifetime"] != "auto":
            life = parse_timedelta(p["lifetime"], default="seconds")
            stagger = parse_timedelta(p["lifetime_stagger"] or 0, default="seconds")
            if life + stagger >= wall:
                raise SiteConfigError(
                    f"{source}: field '{pre}lifetime' has value {p['lifetime']!r}; allowed: "
                    f"lifetime + lifetime_stagger ({life + stagger:g} s) shorter than "
                    f"'{pre}walltime' {p['walltime']!r} ({wall} s)"
                )
        elif p["lifetime_stagger"] is not None and p["lifetime"] is None:
            raise SiteConfigError(
                f"{source}: field '{pre}lifetime_stagger' has value {p['lifetime_stagger']!r}; "
                f"allowed: only together with '{pre}lifetime'"
            )
    return p


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
# site configs
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SiteConfig:
    """A validated site config with defaults filled in."""

    name: str
    path: str  # file it came from ("<memory>" when built from a mapping)
    kind: str  # "local" | "slurm"
    cpu: Mapping[str, Any]
    gpu: Mapping[str, Any] | None = None
    description: str | None = None
    python: str = sys.executable
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_mapping(cls, data: Any, *, name: str = "<memory>", path: str = "<memory>") -> SiteConfig:
        source = f"site config {path}"
        if not isinstance(data, Mapping):
            raise SiteConfigError(
                f"{source}: the file must be a YAML mapping with 'kind' and 'cpu', "
                f"got {_type_name(data)}"
            )
        kind = data.get("kind", _REQUIRED)
        if kind is _REQUIRED:
            raise SiteConfigError(f"{source}: missing required field 'kind' ('local' or 'slurm')")
        if kind not in _TOP_FIELDS:
            raise SiteConfigError(
                f"{source}: field 'kind' has value {kind!r} ({_type_name(kind)}); "
                f"allowed: 'local' or 'slurm'"
            )
        _check_section(data, _TOP_FIELDS[kind], source=source, prefix="")
        pool_fields = LOCAL_POOL_FIELDS if kind == "local" else SLURM_POOL_FIELDS
        pools: dict[str, dict[str, Any] | None] = {}
        for pool in _POOL_NAMES:
            section = data.get(pool)
            if section is None:
                pools[pool] = None
                continue
            _check_section(section, pool_fields, source=source, prefix=f"{pool}.")
            pools[pool] = _finish_pool(kind, pool, section, source=source)
        return cls(
            name=name,
            path=path,
            kind=kind,
            cpu=MappingProxyType(pools["cpu"]),
            gpu=None if pools["gpu"] is None else MappingProxyType(pools["gpu"]),
            description=data.get("description"),
            python=data.get("python") or sys.executable,
            raw=MappingProxyType(dict(data)),
        )

    def with_overrides(
        self,
        *,
        cpu: Mapping[str, Any] | None = None,
        gpu: Mapping[str, Any] | bool | None = None,
        python: str | None = None,
    ) -> SiteConfig:
        """A copy with keyword overrides applied (validated like the file).

        ``gpu=False`` drops the GPU pool; a mapping overrides its keys (and
        creates the pool from defaults if the site has none, which for SLURM
        then needs at least ``cores`` and ``memory``).
        """
        source = f"site config {self.path} (keyword overrides)"
        fields = LOCAL_POOL_FIELDS if self.kind == "local" else SLURM_POOL_FIELDS
        raw = dict(self.raw)
        if python is not None:
            if self.kind != "slurm" or not _is_str(python):
                raise SiteConfigError(f"{source}: field 'python' has value {python!r}; "
                                      "allowed: a path, for kind: slurm only")
            raw["python"] = python
        for pool, over in (("cpu", cpu), ("gpu", gpu)):
            if over is None or over is True:
                continue
            if over is False:
                if pool == "cpu":
                    raise SiteConfigError(f"{source}: the cpu pool cannot be switched off")
                raw["gpu"] = None
                continue
            if not isinstance(over, Mapping):
                raise SiteConfigError(f"{source}: '{pool}' overrides must be a mapping, "
                                      f"got {_type_name(over)}")
            _check_section(over, fields, source=source, prefix=f"{pool}.", require=False)
            merged = dict(raw.get(pool) or {})
            merged.update(over)
            # an explicit queue/partition override replaces both spellings
            if "queue" in over or "partition" in over:
                new = over.get("queue", over.get("partition"))
                merged.pop("partition", None)
                merged["queue"] = new
            raw[pool] = merged
        return SiteConfig.from_mapping(raw, name=self.name, path=self.path)


def site_search_path() -> list[Path]:
    """Directories searched for ``<name>.yaml``: $HPCMIX_SITE_PATH, then the repo's site_configs/."""
    dirs = [Path(p).expanduser() for p in os.environ.get(SITE_PATH_ENV, "").split(os.pathsep) if p]
    for d in (_REPO_SITE_DIR, _PACKAGE_SITE_DIR):
        if d.is_dir() and d not in dirs:
            dirs.append(d)
    return dirs


def available_sites() -> list[str]:
    """Names of the site configs found on :func:`site_search_path`."""
    names: set[str] = set()
    for d in site_search_path():
        if d.is_dir():
            names.update(p.stem for p in d.iterdir() if p.suffix in (".yaml", ".yml"))
    return sorted(names)


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.endswith((".yaml", ".yml"))


def load_site(name_or_path: str | os.PathLike[str] | SiteConfig | None = None) -> SiteConfig:
    """Find, parse and validate a site config.

    ``name_or_path``: a site name (``"local"``, ``"ci-slurm"``; looked up as
    ``<name>.yaml`` in $HPCMIX_SITE_PATH then the repository's
    ``site_configs/``), a path to a YAML file, or a :class:`SiteConfig`
    (returned as is). ``None``: $HPCMIX_SITE, else ``"local"``.

    Raises :class:`SiteConfigError` (a ValueError) naming the file, field,
    value and what is allowed.
    """
    if isinstance(name_or_path, SiteConfig):
        return name_or_path
    if name_or_path is None:
        name_or_path = os.environ.get(SITE_ENV) or DEFAULT_SITE
    s = os.fspath(name_or_path)
    if not s:
        raise SiteConfigError("site config: empty site name")
    if _looks_like_path(s) or os.path.isfile(s):
        path = Path(s).expanduser()
        if not path.is_file():
            raise SiteConfigError(f"site config {path}: no such file")
    else:
        path = None
        for d in site_search_path():
            for ext in (".yaml", ".yml"):
                if (d / f"{s}{ext}").is_file():
                    path = d / f"{s}{ext}"
                    break
            if path:
                break
        if path is None:
            raise SiteConfigError(
                f"unknown site {s!r}: no {s}.yaml in {', '.join(map(str, site_search_path())) or '(no directories)'}"
                f" (add directories with ${SITE_PATH_ENV}); allowed: a file path or one of "
                f"{', '.join(available_sites()) or '(none found)'}"
            )
    path = path.resolve()
    try:
        text = path.read_text()
    except OSError as e:
        raise SiteConfigError(f"site config {path}: cannot read: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SiteConfigError(f"site config {path}: not valid YAML: {e}") from e
    return SiteConfig.from_mapping(data, name=path.stem, path=str(path))


# --------------------------------------------------------------------------
# SLURM helpers
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


class _JobTracker:
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


def _tracked_slurm_job_class(tracker: _JobTracker) -> type:
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
# pools
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Pool:
    """One pool: a cluster, its Client, and the settings it was built from."""

    name: str  # "cpu" | "gpu"
    site: SiteConfig
    cluster: Any  # LocalCluster | SLURMCluster
    client: Any  # distributed.Client
    settings: Mapping[str, Any]
    _tracker: _JobTracker | None = dataclasses.field(default=None, repr=False)

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
        return (f"{self.name}: {cls} ({where}); {self.n_workers()} worker(s) connected; "
                f"scheduler {self.cluster.scheduler_address}; dashboard "
                f"{self.dashboard_link or '(none)'}")

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
                raise JobSubmissionError(self._submission_message())
            got = self.n_workers()
            if got >= n:
                return
            now = time.monotonic()
            if now - start >= timeout:
                raise WorkerTimeoutError(self._timeout_message(n, got, now - start))
            if self.site.kind == "slurm" and now >= next_job_check:
                next_job_check = now + 2.0
                ended = self._all_jobs_ended()
                if ended:
                    raise ClusterStartError(
                        self._header(n, self.n_workers(), time.monotonic() - start)
                        + ": every worker job ended before its worker connected.\n"
                        + self._slurm_report())
            time.sleep(0.25)

    def _header(self, n: int, got: int, waited: float) -> str:
        return (f"site {self.site.name!r} ({self.site.path}), pool {self.name!r}: "
                f"{got} of {n} worker(s) connected after waiting {waited:.1f} s")

    def _submission_message(self) -> str:
        s = self.settings
        msgs = "\n".join(f"  {line}" for f in self._tracker.failures for line in f.splitlines())
        return (f"site {self.site.name!r} ({self.site.path}), pool {self.name!r}: sbatch rejected "
                f"the worker job (partition {s.get('queue')!r}, cores {s.get('cores')}, memory "
                f"{s.get('memory')!r}, gres {s.get('gres')!r}). SLURM said:\n{msgs}")

    def _timeout_message(self, n: int, got: int, waited: float) -> str:
        msg = self._header(n, got, waited) + f" (wait_timeout {self.settings['wait_timeout']:g} s)."
        if self.site.kind != "slurm":
            return msg + f"\nCluster: {self.cluster!r}"
        return msg + "\n" + self._slurm_report()

    def _job_states(self) -> dict[str, str]:
        ids = self.job_ids
        if not ids:
            return {}
        r = _run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)])
        if r.returncode != 0:
            if "Invalid job id" in r.stderr:
                return {i: "GONE" for i in ids}
            return {}
        states = dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip())
        return {i: states.get(i, "GONE").strip() for i in ids}

    def _all_jobs_ended(self) -> bool:
        states = self._job_states()
        active = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
                  "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
        return bool(states) and all(s not in active for s in states.values())

    def _slurm_report(self) -> str:
        s = self.settings
        ids = self.job_ids
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

    # -- closing -------------------------------------------------------------
    def close(self) -> None:
        """Close the client, then the cluster (cancels SLURM jobs)."""
        with contextlib.suppress(Exception):
            self.client.close()
        self.cluster.close()


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


def _preflight_sbatch(site: SiteConfig, name: str, s: Mapping[str, Any], script: str) -> None:
    """``sbatch --test-only``: let SLURM reject a bad job before we wait for it."""
    if shutil.which("sbatch") is None:
        raise JobSubmissionError(
            f"site {site.name!r} ({site.path}), pool {name!r}: sbatch not found on PATH; "
            "this site needs a SLURM submit host")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="hpcmix-preflight-", delete=False) as f:
        f.write(script)
    try:
        r = _run(["sbatch", "--test-only", f.name], timeout=60)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(f.name)
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip() or f"exit code {r.returncode}")
        raise JobSubmissionError(
            f"site {site.name!r} ({site.path}), pool {name!r}: sbatch rejected the worker job "
            f"(partition {s.get('queue')!r}, cores {s['cores']}, memory {s['memory']!r}, "
            f"gres {s.get('gres')!r}). SLURM said:\n"
            + "\n".join(f"  {line}" for line in said.splitlines()))


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
    tracker = _JobTracker()
    kwargs: dict[str, Any] = dict(
        job_cls=_tracked_slurm_job_class(tracker),
        cores=s["cores"],
        memory=s["memory"],
        processes=s["processes"],
        walltime=s["walltime"],
        queue=s["queue"],
        account=s["account"],
        job_extra_directives=directives,
        job_directives_skip=list(s["job_directives_skip"]),
        worker_extra_args=worker_args,
        job_script_prologue=list(s["job_script_prologue"]),
        local_directory=s["local_directory"],
        interface=s["interface"],
        log_directory=s["log_directory"],
        job_name=s["job_name"],
        death_timeout=s["death_timeout"],
        python=site.python,
        scheduler_options={"dashboard_address": s["dashboard_address"]},
    )
    cluster = SLURMCluster(**kwargs)
    client = None
    try:
        if preflight:
            _preflight_sbatch(site, name, s, cluster.job_script())
        client = Client(cluster)
        cluster.adapt(minimum_jobs=s["minimum_jobs"], maximum_jobs=s["maximum_jobs"])
    except BaseException:
        if client is not None:
            client.close()
        cluster.close()
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
        for name in _POOL_NAMES:
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
