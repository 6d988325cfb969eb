"""hpcmix: signal-mixture toy studies from Pythia events to xarray tables, on a laptop or SLURM."""

from importlib.metadata import PackageNotFoundError, version as _version

from . import config  # noqa: F401  (loads the YAML defaults into dask.config)

try:
    __version__ = _version("hpcmix")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "config"]
