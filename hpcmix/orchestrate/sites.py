"""Site configs: their schema and validation, SiteConfig, and finding a site by name or path."""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import sys
from collections.abc import Mapping
from importlib.resources.abc import Traversable
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
from .slurm import walltime_seconds

__all__ = [
    "DEFAULT_SITE",
    "LOCAL_POOL_FIELDS",
    "POOL_NAMES",
    "SITE_ENV",
    "SITE_PATH_ENV",
    "SLURM_POOL_FIELDS",
    "SiteConfig",
    "SiteConfigError",
    "available_sites",
    "load_site",
    "packaged_site_dir",
    "site_search_path",
]

#: Environment variable: directories (``os.pathsep``-separated) searched for
#: ``<name>.yaml`` site configs, before the sites packaged with hpcmix.
SITE_PATH_ENV = "HPCMIX_SITE_PATH"
#: Environment variable naming the site used when none is given.
SITE_ENV = "HPCMIX_SITE"
DEFAULT_SITE = "local"

_SUFFIXES = (".yaml", ".yml")


class SiteConfigError(ConfigError):
    """A site config file cannot be found, parsed or validated."""


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


def _is_walltime(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        return walltime_seconds(v) > 0
    except ValueError:
        return False


#: The pools a site can have, in the order they are started.
POOL_NAMES = ("cpu", "gpu")

#: A pool's measured training rate (local and SLURM pools alike): read by the dry run's estimate only
_TRAINING_RATE = Field(_opt(_is_number), "a number > 0, or null", None,
                       "this pool's measured training rate, one worker, the study's network "
                       "(benchmarks/gpu_throughput.py); hpcmix run --dry-run estimates training from it; "
                       "null: a gpu pool from hpcmix.estimates' GPU rates, a cpu pool in CPU core-hours")

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
    "dashboard_address": Field(_opt(_is_str), "an address like 'localhost:8787' (port 0 = any free port) or null",
                               None, "scheduler dashboard; default 'localhost:8787' (cpu), 'localhost:0' (gpu): this "
                               "machine only; ':8787' listens on every interface"),
    "wait_timeout": Field(_is_number, "a number of seconds > 0", 60,
                          "how long make_clusters waits for the workers"),
    "training_samples_per_second": _TRAINING_RATE,
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
    "dashboard_address": Field(_opt(_is_str), "an address like 'localhost:8787' (port 0 = any free port) or null",
                               None, "scheduler dashboard; default 'localhost:8787' (cpu), 'localhost:0' (gpu): the "
                               "login node only, reached through the ssh tunnel hpcmix prints"),
    "gpu_check": Field(lambda v: v in ("error", "warn", "off"), "'error', 'warn' or 'off'", "error",
                       "when SLURM gave a job a GPU that TensorFlow cannot see: stop with the install to fix "
                       "('error'), or say so and train on the CPU ('warn': stand-in GPUs)"),
    "tls": Field(lambda v: isinstance(v, bool), "true or false", True,
                 "TLS between client, scheduler and workers (temporary certificates, mutual TLS); false: plain "
                 "TCP, which anyone on the login node could connect to"),
    "tls_directory": Field(_opt(_is_str), "a directory path or null", None,
                           "where the workers' temporary certificates go (made mode 0700; must be readable by the "
                           "worker jobs: a shared file system); default ~/.hpcmix/tls"),
    "wait_timeout": Field(_is_number, "a number of seconds > 0", 300,
                          "how long make_clusters waits for the minimum workers"),
    "training_samples_per_second": _TRAINING_RATE,
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
    out["dashboard_address"] = "localhost:8787" if pool == "cpu" else "localhost:0"
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
        for pool in POOL_NAMES:
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



# --------------------------------------------------------------------------
# finding a site
# --------------------------------------------------------------------------
def packaged_site_dir() -> Traversable:
    """The sites that ship inside the package (``hpcmix/sites/``: local, ci-slurm, slurm)."""
    return importlib.resources.files("hpcmix") / "sites"


def _user_site_dirs() -> list[Path]:
    dirs: list[Path] = []
    for p in os.environ.get(SITE_PATH_ENV, "").split(os.pathsep):
        d = Path(p).expanduser() if p else None
        if d is not None and d not in dirs:
            dirs.append(d)
    return dirs


def site_search_path() -> list[Path | Traversable]:
    """Directories searched for ``<name>.yaml``, in order: $HPCMIX_SITE_PATH's, then the packaged one."""
    return [*_user_site_dirs(), packaged_site_dir()]


def _site_names(d: Path | Traversable) -> set[str]:
    if not d.is_dir():
        return set()
    return {e.name.rsplit(".", 1)[0] for e in d.iterdir() if e.name.endswith(_SUFFIXES) and e.is_file()}


def available_sites() -> list[str]:
    """Names of the site configs found on :func:`site_search_path`."""
    names: set[str] = set()
    for d in site_search_path():
        names |= _site_names(d)
    return sorted(names)


def _find_site(name: str) -> Path | Traversable:
    """The first ``<name>.yaml`` / ``<name>.yml`` on the search path, or a SiteConfigError."""
    dirs = site_search_path()
    for d in dirs:
        for ext in _SUFFIXES:
            candidate = d / f"{name}{ext}"
            if candidate.is_file():
                return candidate
    packaged = packaged_site_dir()
    searched = ", ".join(f"{d} (packaged)" if d == packaged else f"{d} (${SITE_PATH_ENV})"
                         for d in dirs)
    raise SiteConfigError(
        f"unknown site {name!r}: no {name}.yaml in {searched} (add directories with "
        f"${SITE_PATH_ENV}); allowed: a file path or one of "
        f"{', '.join(available_sites()) or '(none found)'}"
    )


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.endswith(_SUFFIXES)


def load_site(name_or_path: str | os.PathLike[str] | SiteConfig | None = None) -> SiteConfig:
    """Find, parse and validate a site config.

    ``name_or_path``: a site name (``"local"``, ``"ci-slurm"``, ``"slurm"``;
    looked up as ``<name>.yaml`` in the directories of $HPCMIX_SITE_PATH, then
    among the sites packaged with hpcmix, see :func:`site_search_path`), a path
    to a YAML file, or a :class:`SiteConfig` (returned as is). ``None``:
    $HPCMIX_SITE, else ``"local"``.

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
        found: Path | Traversable = Path(s).expanduser()
        if not found.is_file():
            raise SiteConfigError(f"site config {found}: no such file")
        name = found.stem
    else:
        found = _find_site(s)
        name = s
    if isinstance(found, Path):
        found = found.resolve()
    try:
        text = found.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SiteConfigError(f"site config {found}: cannot read: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SiteConfigError(f"site config {found}: not valid YAML: {e}") from e
    return SiteConfig.from_mapping(data, name=name, path=str(found))
