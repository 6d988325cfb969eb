"""The results Dataset of a toy study: per-toy fit outputs on (estimator, smearing, alpha, n_events, toy).

A study with nuisance components (more than two) has two more kinds of dimension between
``smearing`` and ``alpha``: ``treatment`` (fixed | floated | constrained) and one
``fraction_<component>`` per nuisance (its true fraction), and per-toy variables
``fraction_hat_<component>`` (the fitted nuisance fractions) and ``flat``.

Besides the per-toy variables it holds per-cell Cramer-Rao bounds and pool-reuse counts,
and optionally the templates (for Fig. 2a/3a) and one toy's likelihood curve per
estimator (Fig. 6), so a report needs nothing but the Zarr store.

Results format (``ds.attrs["results_format"]``): 2 names the estimator dimension
``estimator``; format 1 (stores without the attr) called it ``method``, which collides
with the ``method=`` keyword of ``Dataset.sel``. ``open_results`` reads both.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from typing import Any

import numpy as np
import xarray as xr

from ..errors import HpcmixError

__all__ = ["CELL_DIMS", "DIMS", "RESULTS_FORMAT", "NotResultsError", "ResultsBuilder", "ResultsFormatWarning",
           "cell_dims",
           "fraction_dim", "nuisance_components", "open_results", "save_results"]

RESULTS_FORMAT = 2
"""Format number written to ``ds.attrs["results_format"]``; stores without it are format 1."""


class ResultsFormatWarning(UserWarning):
    """``open_results`` upgraded a store written in an older results format."""


class NotResultsError(HpcmixError, ValueError):
    """A path that holds no hpcmix results store (or one this hpcmix cannot read)."""


DIMS = ("estimator", "smearing", "alpha", "n_events", "toy")
CELL_DIMS = DIMS[:-1]
FRACTION_PREFIX = "fraction_"


def fraction_dim(component: str) -> str:
    """The dimension of a nuisance component's true fraction, e.g. ``fraction_Z``."""
    return f"{FRACTION_PREFIX}{component}"


def nuisance_components(ds: xr.Dataset) -> list[str]:
    """The nuisance components of a results Dataset (from its ``fraction_<component>`` dimensions)."""
    return [d[len(FRACTION_PREFIX):] for d in ds["alpha_hat"].dims if str(d).startswith(FRACTION_PREFIX)]


def cell_dims(ds: xr.Dataset) -> tuple[str, ...]:
    """The dimensions of one cell of toys: every dimension of alpha_hat but ``toy``."""
    return tuple(d for d in ds["alpha_hat"].dims if d != "toy")

_TOY_VARS = {
    # name: (dtype, fill, attrs)
    "alpha_hat": (float, np.nan, {"long_name": "ML estimate of the A fraction", "units": "1"}),
    "sigma_hat": (float, np.nan, {"long_name": "error of alpha_hat from the curvature of ln L", "units": "1"}),
    "lr_stat": (float, np.nan, {"long_name": "-2 ln(L(alpha_true) / L(alpha_hat))", "units": "1",
                                "expected_distribution": "chi2(1) (Wilks)"}),
    "interval_lo": (float, np.nan, {"long_name": "lower end of the Delta(-2 lnL) = 1 interval", "units": "1"}),
    "interval_hi": (float, np.nan, {"long_name": "upper end of the Delta(-2 lnL) = 1 interval", "units": "1"}),
    "converged": (bool, False, {"long_name": "fit converged"}),
    "at_limit": (bool, False, {"long_name": "alpha_hat on a positivity limit"}),
    "interval_clipped": (bool, False, {"long_name": "an interval end clipped at a positivity limit"}),
}


class ResultsBuilder:
    """Collects ``MixtureFit`` results cell by cell and turns them into the results Dataset.

    ``add`` takes one fit (a batch of toys) for one cell at a toy offset; ``to_dataset``
    returns the Dataset with provenance attrs (``attrs`` are merged in; keep them JSON-able).
    """

    def __init__(self, *, estimators, smearings, alphas, n_events, n_toys: int, attrs: dict | None = None,
                 nuisances: dict | None = None, treatments=()):
        nuisances = dict(nuisances or {})
        if nuisances and not treatments:
            raise ValueError("a study with nuisance components needs the fit treatments (fixed, floated, ...)")
        extra = {}
        if nuisances:
            extra["treatment"] = np.array([str(t) for t in treatments], dtype=object)
            extra.update({fraction_dim(c): np.asarray(f, dtype=float) for c, f in nuisances.items()})
        self.nuisances = list(nuisances)
        self.coords = {
            "estimator": np.array([str(e) for e in estimators], dtype=object),
            "smearing": np.array([str(s) for s in smearings], dtype=object),
            **extra,
            "alpha": np.asarray(alphas, dtype=float),
            "n_events": np.asarray(n_events, dtype=np.int64),
            "toy": np.arange(int(n_toys)),
        }
        for k, v in self.coords.items():
            if v.size == 0 or len(set(v.tolist())) != v.size:
                raise ValueError(f"{k} coordinate must be non-empty with unique values, got {v.tolist()}")
        self.dims = tuple(self.coords)
        shape = tuple(self.coords[d].size for d in self.dims)
        self.toy_vars = dict(_TOY_VARS)
        if nuisances:
            self.toy_vars["flat"] = (bool, False, {"long_name": "a flat direction: the fit cannot fix a combination "
                                                                "of fractions (Hessian singular)"})
            for c in self.nuisances:
                self.toy_vars[f"fraction_hat_{c}"] = (float, np.nan, {"long_name": f"fitted fraction of {c} "
                                                                      "(its true value where fixed)", "units": "1"})
        self.data = {k: np.full(shape, fill, dtype=dt) for k, (dt, fill, _) in self.toy_vars.items()}
        cshape = shape[:-1]
        self.cramer_rao = np.full(cshape, np.nan)
        self.uses_sum = np.zeros(cshape)      # pool-event uses summed over batches
        self.pool_size = np.zeros(cshape)
        self.max_uses = np.zeros(cshape, dtype=np.int64)
        self.pool_short = np.zeros(cshape, dtype=bool)
        self.filled = np.zeros(cshape, dtype=np.int64)
        self.templates: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self.curve_info: dict[str, Any] = {}
        self.component_names: list[str] = []
        self.attrs = dict(attrs or {})

    def _cell(self, estimator, smearing, alpha, n_events, treatment=None, fractions=None):
        def pos(dim, value):
            c = self.coords[dim]
            hit = np.flatnonzero(np.isclose(c, value)) if c.dtype.kind == "f" else np.flatnonzero(c == value)
            if hit.size != 1:
                raise ValueError(f"{dim}={value!r} is not one of {c.tolist()}")
            return int(hit[0])

        fractions = dict(fractions or {})
        if self.nuisances and (treatment is None or sorted(fractions) != sorted(self.nuisances)):
            raise ValueError(f"a cell of this study needs a treatment and the fractions of {self.nuisances}, "
                             f"got treatment={treatment!r}, fractions={fractions}")
        extra = ((pos("treatment", str(treatment)), *(pos(fraction_dim(c), fractions[c]) for c in self.nuisances))
                 if self.nuisances else ())
        return (pos("estimator", str(estimator)), pos("smearing", str(smearing)), *extra,
                pos("alpha", float(alpha)), pos("n_events", int(n_events)))

    def add(self, estimator, smearing, alpha, n_events, fit, *, offset: int = 0, draw=None, cramer_rao=None,
            treatment=None, fractions=None, fraction_hat=None):
        """Store the toys of ``fit`` (a MixtureFit or FractionFit) at toy positions offset, offset + 1, ...

        With nuisances: ``treatment``, the cell's true ``fractions`` {component: f} and the fitted
        ``fraction_hat`` {component: per-toy values}.
        """
        cell = self._cell(estimator, smearing, alpha, n_events, treatment, fractions)
        n = len(fit)
        if offset < 0 or offset + n > self.coords["toy"].size:
            raise ValueError(f"toys {offset}..{offset + n} do not fit in n_toys={self.coords['toy'].size}")
        sl = cell + (slice(offset, offset + n),)
        for k in _TOY_VARS:
            self.data[k][sl] = getattr(fit, k)
        if self.nuisances:
            self.data["flat"][sl] = fit.flat
            for c in self.nuisances:
                self.data[f"fraction_hat_{c}"][sl] = fraction_hat[c]
        self.filled[cell] += n
        if cramer_rao is not None:
            self.cramer_rao[cell] = float(cramer_rao)
        if draw is not None:
            uses = draw.uses.values()  # PoolUses, ToyDraw, MixtureDraw: uses per component
            self.uses_sum[cell] += sum(u.sum() for u in uses)
            self.pool_size[cell] = sum(u.size for u in uses)
            self.max_uses[cell] = max(self.max_uses[cell], draw.max_uses)
            self.pool_short[cell] |= self.uses_sum[cell] > self.pool_size[cell]

    def add_templates(self, estimator, smearing, templates, *, n_points: int = 512):
        """Tabulate templates for the figures: a MixtureTemplates pair, or ComponentTemplates (K components)."""
        tab = templates.tabulate(n_points)
        if len(tab) == 2:  # (x, densities (n, K)) of ComponentTemplates
            self.component_names = list(templates.components)
        self.templates[(str(estimator), str(smearing))] = tab

    def add_curve(self, estimator, smearing, alpha_grid, m2dlnl, **info):
        """-2 Delta lnL(alpha) of one example toy (Fig. 6); ``info`` (e.g. alpha, n_events) goes to attrs."""
        alpha_grid, m2dlnl = np.asarray(alpha_grid, float), np.asarray(m2dlnl, float)
        if alpha_grid.shape != m2dlnl.shape or alpha_grid.ndim != 1:
            raise ValueError("alpha_grid and m2dlnl must be 1-D arrays of one length")
        self.curves[(str(estimator), str(smearing))] = (alpha_grid, m2dlnl)
        self.curve_info.update({k: (v.item() if hasattr(v, "item") else v) for k, v in info.items()})

    def to_dataset(self) -> xr.Dataset:
        ds = xr.Dataset(coords=self.coords)
        ds["alpha"].attrs.update(long_name="true A fraction of the toys", units="1")
        ds["n_events"].attrs.update(long_name="events per toy (test-set size N)", units="events")
        ds["toy"].attrs.update(long_name="pseudo-experiment index")
        ds["estimator"].attrs.update(long_name="estimator of alpha (phi_star: phi* angle, nn: network output)")
        ds["smearing"].attrs.update(long_name="detector smearing")
        if self.nuisances:
            ds["treatment"].attrs.update(long_name="how the fit treats the nuisance fractions "
                                                   "(fixed at the truth, floated, Gaussian-constrained)")
            for c in self.nuisances:
                ds[fraction_dim(c)].attrs.update(long_name=f"true fraction of {c} in the toys", units="1")
        dims, cdims = self.dims, self.dims[:-1]
        for k, (_, _, attrs) in self.toy_vars.items():
            ds[k] = (dims, self.data[k], attrs)
        ds["cramer_rao"] = (cdims, self.cramer_rao,
                            {"long_name": "Cramer-Rao bound on alpha from the templates (nuisances as treated: "
                                          "floated and constrained ones profiled)", "units": "1"})
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_uses = np.where(self.pool_size > 0, self.uses_sum / self.pool_size, np.nan)
        ds["pool_mean_uses"] = (cdims, mean_uses, {"long_name": "mean toys per pool event", "units": "1"})
        ds["pool_max_uses"] = (cdims, self.max_uses, {"long_name": "most toys sharing one pool event"})
        ds["pool_smaller_than_needed"] = (cdims, self.pool_short,
                                          {"long_name": "toys needed more events than the pool holds (reuse)"})
        ds["n_toys_filled"] = (cdims, self.filled, {"long_name": "toys stored in the cell"})
        if self.component_names:
            ds = _add_component_tables(ds, self.templates, self.component_names)
        else:
            ds = _add_tables(ds, self.templates, "template_point",
                             ("template_x", "template_p_a", "template_p_h"),
                             ({"long_name": "template abscissa (phi* or network output y)"},
                              {"long_name": "p_A template density"}, {"long_name": "p_H template density"}))
        ds = _add_tables(ds, self.curves, "curve_point", ("curve_alpha", "curve_m2dlnl"),
                         ({"long_name": "alpha", "units": "1"},
                          {"long_name": "-2 Delta ln L of one example toy", "units": "1", **self.curve_info}))
        from .. import __version__

        short = int(self.pool_short.sum())
        ds.attrs.update({
            "title": "hpcmix mixture-fraction toy study",
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "hpcmix_version": __version__,
            "fit": "unbinned ML, p = alpha p_A + (1 - alpha) p_H, alpha bounded by template positivity",
            "interval": "Delta(-2 ln L) = 1",
            "pool_reuse_note": (f"pool smaller than the toys need in {short} cell(s): events repeat across toys"
                                if short else "no pool event used in more toys than the pools could supply"),
        })
        ds.attrs.update(self.attrs)
        ds.attrs["results_format"] = RESULTS_FORMAT
        return ds


def _add_tables(ds, tables, point_dim, names, attrs):
    if not tables:
        return ds
    n = max(v[0].size for v in tables.values())
    shape = (ds.sizes["estimator"], ds.sizes["smearing"], n)
    arrays = [np.full(shape, np.nan) for _ in names]
    estimators, smearings = list(ds["estimator"].values), list(ds["smearing"].values)
    for (m, s), cols in tables.items():
        i, j = estimators.index(m), smearings.index(s)
        for arr, col in zip(arrays, cols):
            arr[i, j, : col.size] = col
    for name, arr, at in zip(names, arrays, attrs):
        ds[name] = (("estimator", "smearing", point_dim), arr, at)
    return ds


def _add_component_tables(ds, tables, components):
    """template_x (estimator, smearing, template_point) and template_density (..., component)."""
    n = max(v[0].size for v in tables.values())
    x = np.full((ds.sizes["estimator"], ds.sizes["smearing"], n), np.nan)
    dens = np.full(x.shape + (len(components),), np.nan)
    estimators, smearings = list(ds["estimator"].values), list(ds["smearing"].values)
    for (m, s), (xs, d) in tables.items():
        i, j = estimators.index(m), smearings.index(s)
        x[i, j, : xs.size] = xs
        dens[i, j, : xs.size] = d
    ds = ds.assign_coords(component=np.array(components, dtype=object))
    ds["template_x"] = (("estimator", "smearing", "template_point"), x,
                        {"long_name": "template abscissa (phi* or network output y)"})
    ds["template_density"] = (("estimator", "smearing", "template_point", "component"), dens,
                              {"long_name": "template density of each component"})
    return ds


def _jsonable(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = np.asarray(v).tolist() if isinstance(v, (np.ndarray, np.generic)) else str(v)
    return out


def save_results(ds: xr.Dataset, path) -> None:
    """Write the results Dataset to a Zarr store (overwrites). Strings are stored as variable-length UTF-8."""
    ds = ds.copy()
    for name in ("estimator", "smearing", "treatment", "component"):
        if name in ds.coords:
            ds = ds.assign_coords({name: np.array([str(v) for v in ds[name].values], dtype=object)})
    ds.attrs = _jsonable(ds.attrs)
    for v in ds.variables.values():
        v.attrs = _jsonable(v.attrs)
    ds.to_zarr(str(path), mode="w", consolidated=False)


def _upgrade(ds: xr.Dataset, path) -> xr.Dataset:
    """Bring a results Dataset of an older format to RESULTS_FORMAT (warns once when it changes anything)."""
    fmt = int(ds.attrs.get("results_format", 1))
    if fmt > RESULTS_FORMAT:
        raise NotResultsError(f"{path}: results format {fmt} is newer than this hpcmix reads ({RESULTS_FORMAT}); "
                         "upgrade hpcmix")
    if fmt == 1 and "method" in ds.dims and "estimator" not in ds.dims:
        ds = ds.rename({"method": "estimator"})
        if isinstance(ds.attrs.get("estimator"), str) and "fit" not in ds.attrs:
            ds.attrs["fit"] = ds.attrs.pop("estimator")  # format 1 kept the fit description under this name
        warnings.warn(f"{path} is a results format 1 store: the dimension was renamed from 'method' to "
                      f"'estimator' in hpcmix results format {RESULTS_FORMAT}, so ds.sel(estimator=...) now works; "
                      "renamed on read (save_results writes the new format)", ResultsFormatWarning, stacklevel=3)
    ds.attrs["results_format"] = RESULTS_FORMAT
    return ds


def open_results(path) -> xr.Dataset:
    """Load a results store written by ``save_results`` into memory (format-1 stores are upgraded on read).

    A path that is no results store raises :class:`NotResultsError`, naming what to pass instead.
    """
    hint = ("pass the results store hpcmix run printed (OUTPUT/results/<address>.zarr, or the "
            "OUTPUT/results.zarr link)")
    try:
        ds = xr.open_zarr(str(path), consolidated=False)
    except (FileNotFoundError, KeyError, ValueError, TypeError, OSError) as err:
        raise NotResultsError(f"{path} is not a Zarr store of hpcmix results ({type(err).__name__}: {err}); "
                              f"{hint}") from None
    missing = [v for v in ("alpha_hat", "sigma_hat", "lr_stat") if v not in ds]
    if missing:
        raise NotResultsError(f"{path} is a Zarr store but not hpcmix results (no {', '.join(missing)}); {hint}")
    ds = _upgrade(ds.load(), path)
    for name in ("estimator", "smearing", "treatment", "component"):
        if name not in ds.coords:
            continue
        ds = ds.assign_coords({name: np.array([str(v) for v in ds[name].values], dtype=object)})
    return ds
