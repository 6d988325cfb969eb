"""``ds.mixture``: per-cell summary of a results Dataset and the paper's Table 1 layout.

Light to import (numpy and xarray only; scipy loads on first use): ``import hpcmix`` imports
it to register the accessor.
"""

from __future__ import annotations

import itertools

import numpy as np
import xarray as xr

from .dataset import cell_dims, nuisance_components

__all__ = ["MixtureAccessor", "gauss_fit_histogram"]


def _num_hessian(f, x, step):
    """Central finite-difference Hessian of a scalar function."""
    n = x.size
    h = np.empty((n, n))
    for i, j in itertools.product(range(n), repeat=2):
        ei, ej = np.eye(n)[i] * step[i], np.eye(n)[j] * step[j]
        h[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * step[i] * step[j])
    return h


def gauss_fit_histogram(x, *, bins: int | None = None, n_sigma: float = 4.0):
    """Fit a Gaussian to the histogram of ``x`` (binned multinomial ML, as the paper fitted histograms).

    The histogram spans mean +- n_sigma std; returns (mu, sigma, mu_err, sigma_err) with
    errors from the inverse Hessian. NaNs when fewer than 10 finite values.
    """
    from scipy import optimize, stats

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 10:
        return (np.nan,) * 4
    m, s = x.mean(), x.std(ddof=1)
    if not s > 0:
        return (m, 0.0, 0.0, 0.0)
    bins = bins or int(np.clip(np.sqrt(x.size) / 2, 10, 60))
    counts, edges = np.histogram(x, bins=bins, range=(m - n_sigma * s, m + n_sigma * s))

    def nll(p):
        mu, sig = p[0], p[1]
        if sig <= 0:
            return np.inf
        cdf = stats.norm.cdf(edges, mu, sig)
        prob = np.diff(cdf) / max(cdf[-1] - cdf[0], 1e-300)
        return -np.sum(counts * np.log(np.maximum(prob, 1e-300)))

    res = optimize.minimize(nll, np.array([m, s]), method="Nelder-Mead",
                            options={"xatol": 1e-7 * s, "fatol": 1e-9, "maxiter": 2000})
    mu, sig = res.x
    try:
        cov = np.linalg.inv(_num_hessian(nll, res.x, np.array([1e-3 * sig, 1e-3 * sig])))
        mu_err, sig_err = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        mu_err = sig_err = np.nan
    return float(mu), float(abs(sig)), float(mu_err), float(sig_err)


_SUMMARY_ATTRS = {
    "n_toys": {"long_name": "toys with a finite alpha_hat"},
    "mean": {"long_name": "mean of alpha_hat", "units": "1"},
    "std": {"long_name": "standard deviation of alpha_hat", "units": "1"},
    "gauss_mean": {"long_name": "mean of a Gaussian fitted to the alpha_hat histogram", "units": "1"},
    "gauss_mean_err": {"long_name": "error of gauss_mean", "units": "1"},
    "gauss_sigma": {"long_name": "width of a Gaussian fitted to the alpha_hat histogram (figure of merit)",
                    "units": "1"},
    "gauss_sigma_err": {"long_name": "error of gauss_sigma", "units": "1"},
    "pull_mean": {"long_name": "mean of (alpha_hat - alpha) / sigma_hat"},
    "pull_width": {"long_name": "standard deviation of (alpha_hat - alpha) / sigma_hat"},
    "coverage": {"long_name": "fraction of Delta(-2 lnL) = 1 intervals containing alpha (nominal 0.6827)"},
    "coverage_err": {"long_name": "binomial error of coverage"},
    "ks_pvalue": {"long_name": "Kolmogorov-Smirnov p-value of lr_stat against chi2(1)"},
    "cramer_rao": {"long_name": "Cramer-Rao bound 1/sqrt(N I(alpha))", "units": "1"},
    "efficiency": {"long_name": "cramer_rao / gauss_sigma (1 = on the bound)"},
    "converged_fraction": {"long_name": "fraction of converged fits"},
    "at_limit_fraction": {"long_name": "fraction of fits with alpha_hat on a positivity limit"},
}
#: fraction_table marks cells with at least this fraction of fits on a positivity limit
LIMIT_NOTE_FRACTION = 0.05
_NETWORK_ATTRS = {"mean": "mean of alpha_hat", "mean_err": "error of the mean",
                  "gauss_sigma": "width of a Gaussian fitted to the alpha_hat histogram",
                  "gauss_sigma_err": "error of gauss_sigma"}
_FLAT_ATTRS = {"long_name": "fraction of fits with a flat direction (a fraction the data cannot fix)"}


def _cell_summary(a_hat, s_hat, lo, hi, lr, conv, lim, alpha, cr):
    from scipy import stats

    ok = np.isfinite(a_hat)
    x = a_hat[ok]
    out = dict.fromkeys(_SUMMARY_ATTRS, np.nan)
    out["n_toys"] = float(ok.sum())
    out["cramer_rao"] = cr
    filled = ~np.isnan(a_hat) | conv  # unfilled toy slots are NaN and not converged
    if filled.any():
        out["converged_fraction"] = conv[filled].mean()
        out["at_limit_fraction"] = lim[filled].mean()
    if x.size < 2:
        return out
    out["mean"], out["std"] = x.mean(), x.std(ddof=1)
    mu, sig, mu_err, sig_err = gauss_fit_histogram(x)
    out.update(gauss_mean=mu, gauss_mean_err=mu_err, gauss_sigma=sig, gauss_sigma_err=sig_err)
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = (x - alpha) / s_hat[ok]
    pull = pull[np.isfinite(pull)]
    if pull.size > 1:
        out["pull_mean"], out["pull_width"] = pull.mean(), pull.std(ddof=1)
    cov = (lo[ok] <= alpha) & (alpha <= hi[ok])
    out["coverage"] = cov.mean()
    out["coverage_err"] = np.sqrt(out["coverage"] * (1 - out["coverage"]) / cov.size)
    lrf = lr[ok][np.isfinite(lr[ok])]
    if lrf.size > 1:
        out["ks_pvalue"] = stats.kstest(lrf, stats.chi2(1).cdf).pvalue
    if sig and np.isfinite(cr):
        out["efficiency"] = cr / sig
    return out


@xr.register_dataset_accessor("mixture")
class MixtureAccessor:
    """Summary statistics per (estimator, smearing, alpha, n_events) cell of a results Dataset
    (and per treatment and nuisance fraction where the study has nuisance components)."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def summary(self) -> xr.Dataset:
        """Dataset over the cell dims: mean, std, Gaussian-fit width and error, pulls, coverage, KS, Cramer-Rao."""
        ds = self._ds
        missing = [v for v in ("alpha_hat", "sigma_hat", "interval_lo", "interval_hi", "lr_stat") if v not in ds]
        if missing:
            raise ValueError(f"not a results Dataset: missing variables {missing}")
        dims = cell_dims(ds)
        # every per-toy variable in alpha_hat's order, every per-cell one in its cell order
        ds = ds.transpose(*dims, "toy", ...)
        shape = tuple(ds.sizes[d] for d in dims)
        res = {k: np.full(shape, np.nan) for k in _SUMMARY_ATTRS}
        i_alpha = dims.index("alpha")
        cr_all = ds["cramer_rao"].values if "cramer_rao" in ds else np.full(shape, np.nan)
        conv_all = ds["converged"].values if "converged" in ds else np.isfinite(ds["alpha_hat"].values)
        lim_all = ds["at_limit"].values if "at_limit" in ds else np.zeros(ds["alpha_hat"].shape, bool)
        alphas = ds["alpha"].values
        # load each variable once (a lazily opened Zarr Dataset reads from disk on every .values)
        a_hat, s_hat, lo, hi, lr = (ds[v].values for v in ("alpha_hat", "sigma_hat", "interval_lo",
                                                             "interval_hi", "lr_stat"))
        for idx in np.ndindex(*shape):  # a loop over cells (few), never over toys
            cell = _cell_summary(a_hat[idx], s_hat[idx], lo[idx], hi[idx], lr[idx], conv_all[idx], lim_all[idx],
                                 alphas[idx[i_alpha]], float(cr_all[idx]))
            for k, v in cell.items():
                res[k][idx] = v
        out = xr.Dataset({k: (dims, v, _SUMMARY_ATTRS[k]) for k, v in res.items()},
                         coords={d: ds[d] for d in dims})
        if "flat" in ds:
            filled = np.isfinite(a_hat) | ds["converged"].values | ds["flat"].values
            with np.errstate(invalid="ignore"):
                flat = ds["flat"].values.sum(axis=-1) / filled.sum(axis=-1)
            out["flat_fraction"] = (dims, flat, _FLAT_ATTRS)
        out.attrs["source"] = ds.attrs.get("title", "hpcmix results")
        out.attrs["n_events_of"] = "signal" if "events_per_toy" in ds else "all"
        return out

    def table(self, *, n_events=None, width: str = "gauss_sigma", summary: xr.Dataset | None = None) -> str:
        """The paper's Table 1 layout: rows 'method, smearing' (one per estimator and smearing), columns alpha,
        cells 'mean +- width'.

        One block per N (or only ``n_events``). ``width`` is 'gauss_sigma' (paper) or 'std'.
        """
        if width not in ("gauss_sigma", "std"):
            raise ValueError(f"width must be 'gauss_sigma' or 'std', got {width!r}")
        s = self.summary() if summary is None else summary
        ns = s["n_events"].values if n_events is None else np.atleast_1d(n_events)
        for n in ns:
            if int(n) not in s["n_events"].values.tolist():
                raise ValueError(f"n_events={n} not in the results ({s['n_events'].values.tolist()})")
        extra = [d for d in s["mean"].dims if d not in ("estimator", "smearing", "alpha", "n_events")]
        if extra:  # nuisances: one block per treatment and nuisance-fraction point
            blocks = []
            for point in itertools.product(*(s[d].values for d in extra)):
                at = dict(zip(extra, point))
                label = ", ".join(f"{d.removeprefix('fraction_')} fraction {v:g}" if d.startswith("fraction_")
                                  else f"{v} nuisance" for d, v in at.items())
                blocks.append(_table_blocks(s.sel(at), ns, width, label))
            return "\n\n".join(blocks)
        return _table_blocks(s, ns, width, "")

    def network_systematic(self) -> xr.Dataset:
        """Per cell and reweighting network (templates.weight_networks: all): the mean and Gaussian-fit width
        of alpha_hat, and the network-choice systematic, the largest shift of either from network 0's
        (the nominal, whose fits are ``alpha_hat``)."""
        ds = self._ds
        if "alpha_hat_by_network" not in ds:
            raise ValueError("this results Dataset has no alpha_hat_by_network: run the study with "
                             "templates.weight_networks: all (and a weight in templates.weights or toys.weights)")
        dims = (*cell_dims(ds), "reweight_network")
        a = ds["alpha_hat_by_network"].transpose(*dims, "toy").values
        res = {k: np.full(a.shape[:-1], np.nan) for k in ("mean", "mean_err", "gauss_sigma", "gauss_sigma_err")}
        for idx in np.ndindex(*a.shape[:-1]):   # a loop over cells and networks, never over toys
            x = a[idx][np.isfinite(a[idx])]
            if x.size < 2:
                continue
            res["mean"][idx], res["mean_err"][idx] = x.mean(), x.std(ddof=1) / np.sqrt(x.size)
            _, res["gauss_sigma"][idx], _, res["gauss_sigma_err"][idx] = gauss_fit_histogram(x)
        out = xr.Dataset({k: (dims, v, {"long_name": f"{_NETWORK_ATTRS[k]}, per reweighting network", "units": "1"})
                          for k, v in res.items()}, coords={d: ds[d] for d in dims})
        for k, label in (("mean", "mean_shift"), ("gauss_sigma", "gauss_sigma_shift")):
            shift = np.abs(out[k] - out[k].sel(reweight_network=0)).max("reweight_network", skipna=True)
            out[label] = shift.assign_attrs(long_name=f"network-choice systematic: the largest |{k} - {k} of "
                                                      "network 0| over the other networks", units="1")
        return out

    def network_table(self) -> str:
        """The network-choice systematic (``network_systematic``): per cell, the Gaussian-fit width and the
        mean of alpha_hat for each reweighting network, and the largest shift from network 0."""
        s = self.network_systematic()
        nets = [int(m) for m in s["reweight_network"].values]
        cell = [d for d in s["gauss_sigma_shift"].dims]
        head = ([*cell, *(f"sigma, network {m}" for m in nets), "sigma shift",
                 *(f"mean, network {m}" for m in nets), "mean shift"])
        lines = ["Network-choice systematic: alpha_hat on the templates and pools of each reweighting network's "
                 "weights (the same seeds; weighted pools are drawn with that network's weights too; network 0 is "
                 "the nominal), Gaussian-fit width and mean",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for point in itertools.product(*(s[d].values for d in cell)):
            c = s.sel(dict(zip(cell, point)))
            row = [f"{v:g}" if isinstance(v, (float, np.floating)) else str(v) for v in point]
            row += [f"{float(c['gauss_sigma'].sel(reweight_network=m)):.4f}" for m in nets]
            row.append(f"{float(c['gauss_sigma_shift']):.4f}")
            row += [f"{float(c['mean'].sel(reweight_network=m)):.4f}" for m in nets]
            row.append(f"{float(c['mean_shift']):.4f}")
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)

    def fraction_table(self, *, alpha=None, summary: xr.Dataset | None = None) -> str:
        """sigma of alpha_hat (Gaussian-fit width) against each nuisance fraction, beside its Cramer-Rao bound.

        Rows: estimator, smearing, treatment; columns: the fraction grid of each nuisance, at one
        alpha (default: the middle one), one block per N. Cells with at least
        LIMIT_NOTE_FRACTION of their fits on a positivity limit say so: their width is not a spread.
        """
        s = self.summary() if summary is None else summary
        nuis = nuisance_components(self._ds)
        if not nuis:
            raise ValueError("this results Dataset has no nuisance components (no fraction_<component> dimension)")
        alphas = s["alpha"].values
        a = alphas[len(alphas) // 2] if alpha is None else alpha
        blocks = []
        for n in s["n_events"].values:
            for comp in nuis:
                dim = f"fraction_{comp}"
                rest = [o for o in nuis if o != comp]     # the other nuisances, at their first grid value
                others = {f"fraction_{o}": s[f"fraction_{o}"].values[0] for o in rest}
                c = s.sel(alpha=a, method="nearest").sel(n_events=n).sel(others)
                head = ["estimator, smearing, treatment"] + [f"{comp} = {v:g}" for v in c[dim].values]
                lines = [f"sigma of alpha_hat (Gaussian-fit width) [Cramer-Rao bound] against the {comp} fraction, "
                         f"alpha = {float(c['alpha']):g}, {n_text(s, n)}"
                         + (f" ({', '.join(f'{o} = {v:g}' for o, v in zip(rest, others.values()))})"
                            if others else ""),
                         "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                for m in c["estimator"].values:
                    for sm in c["smearing"].values:
                        for tr in c["treatment"].values:
                            row = [f"{m}, {sm}, {tr}"]
                            for v in c[dim].values:
                                cell = c.sel({"estimator": m, "smearing": sm, "treatment": tr, dim: v})
                                w, cr = float(cell["gauss_sigma"]), float(cell["cramer_rao"])
                                text = "n/a" if not np.isfinite(w) else f"{w:.3f} [{cr:.3f}]"
                                # a width from toys piled on a positivity limit is no Gaussian spread
                                lim = float(cell["at_limit_fraction"])
                                if lim >= LIMIT_NOTE_FRACTION:
                                    text += f" ({lim:.0%} at limit)"
                                row.append(text)
                            lines.append("| " + " | ".join(row) + " |")
                blocks.append("\n".join(lines))
        return "\n\n".join(blocks)


def n_text(ds: xr.Dataset, n) -> str:
    """How a table or figure says the test-set size: N, or (toys.n_events_of: signal) the expected pair events."""
    if ds.attrs.get("n_events_of") == "signal" or "events_per_toy" in ds:
        return f"n = {int(n)} expected signal events (N = n / (1 - nuisance fractions))"
    return f"N = {int(n)}"


def _table_blocks(s: xr.Dataset, ns, width: str, label: str) -> str:
    """Table 1 blocks (one per N) of a summary over (estimator, smearing, alpha, n_events)."""
    blocks = []
    for n in ns:
        c = s.sel(n_events=int(n))
        n_toys = int(np.nanmax(c["n_toys"].values)) if np.isfinite(c["n_toys"].values).any() else 0
        head = ["method, smearing"] + [f"alpha = {a:g}" for a in c["alpha"].values]
        lines = [f"Table 1 layout: mean ± {'Gaussian-fit width' if width == 'gauss_sigma' else 'std'} "
                 f"of alpha_hat, {n_toys} test sets of {n_text(s, n)}" + (f" ({label})" if label else ""),
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in c["estimator"].values:
            for sm in c["smearing"].values:
                row = [f"{m}, {sm}"]
                for a in c["alpha"].values:
                    cell = c.sel(estimator=m, smearing=sm, alpha=a)
                    mean, w = float(cell["mean"]), float(cell[width])
                    row.append("n/a" if not np.isfinite(mean) else f"{mean:.2f} ± {w:.2f}")
                lines.append("| " + " | ".join(row) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
