"""hpcmix: signal-mixture toy studies from Pythia events to xarray tables, on a laptop or SLURM."""

import os as _os
from importlib.metadata import PackageNotFoundError, version as _version

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) on every worker buries the progress
# output; errors still show. Set TF_CPP_MIN_LOG_LEVEL yourself to see it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import config  # noqa: F401  (loads the YAML defaults into dask.config)

try:
    __version__ = _version("hpcmix")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# registers the ``ds.mixture`` accessor on xarray Datasets (numpy + xarray only; scipy loads on first use)
from .results import accessor as _accessor  # noqa: E402, F401

__all__ = ["__version__", "config"]
