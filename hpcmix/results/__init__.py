"""Results of a toy study: the xarray Dataset, its Zarr store, the ``ds.mixture`` accessor and the report."""

from .accessor import MixtureAccessor, gauss_fit_histogram
from .dataset import (
    CELL_DIMS,
    DIMS,
    RESULTS_FORMAT,
    NotResultsError,
    ResultsBuilder,
    ResultsFormatWarning,
    open_results,
    save_results,
)

__all__ = [
    "CELL_DIMS",
    "DIMS",
    "MixtureAccessor",
    "NotResultsError",
    "RESULTS_FORMAT",
    "ResultsBuilder",
    "ResultsFormatWarning",
    "gauss_fit_histogram",
    "open_results",
    "save_results",
]
