"""The one place hpcmix reads ``dask.config``: package defaults (``hpcmix.yaml``) and the user's layers.

The package defaults are loaded into ``dask.config`` under ``hpcmix`` at import
(the dask-jobqueue way), so ``~/.config/dask/*.yaml`` and ``DASK_HPCMIX__...``
environment variables override them. Nothing else in hpcmix calls ``dask.config``
for hpcmix settings: :func:`hpcmix.study.resolve_study` takes :func:`tree` once,
on the client, and passes explicit values down from there.
"""

from __future__ import annotations

import copy
from importlib.resources import files
from typing import Any

import dask.config
import yaml

_DEFAULTS_RESOURCE = "hpcmix.yaml"


def package_defaults() -> dict[str, Any]:
    """The ``hpcmix`` section of the packaged ``hpcmix.yaml`` (no user layers)."""
    text = files("hpcmix").joinpath(_DEFAULTS_RESOURCE).read_text()
    return yaml.safe_load(text)["hpcmix"]


def _normalise_keys(value: Any) -> Any:
    """dask.config treats ``max-epochs`` and ``max_epochs`` as one key; hpcmix keys use underscores."""
    if isinstance(value, dict):
        return {str(k).replace("-", "_"): _normalise_keys(v) for k, v in value.items()}
    return value


def tree() -> dict[str, Any]:
    """Package defaults merged with the user's dask config (YAML files, environment), as a deep copy."""
    return _normalise_keys(copy.deepcopy(dask.config.get("hpcmix", default={})))


dask.config.update_defaults({"hpcmix": package_defaults()})
