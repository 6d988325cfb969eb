"""hpcmix configuration: package defaults in ``hpcmix.yaml`` loaded into ``dask.config``.

Resolution follows dask-jobqueue: an explicit keyword argument wins, else the
value under ``hpcmix.<key>`` in ``dask.config`` (YAML files, environment).
"""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

_DEFAULTS_FILE = os.path.join(os.path.dirname(__file__), "hpcmix.yaml")
_MISSING = object()


def _load_defaults() -> None:
    with open(_DEFAULTS_FILE) as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)


def get(key: str, value: Any = None, *, default: Any = _MISSING) -> Any:
    """Return ``value`` if given, else ``dask.config['hpcmix.' + key]``."""
    if value is not None:
        return value
    if default is _MISSING:
        return dask.config.get(f"hpcmix.{key}")
    return dask.config.get(f"hpcmix.{key}", default=default)


_load_defaults()
