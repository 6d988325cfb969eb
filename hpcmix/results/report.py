"""Text table and figures in the style of the paper from a results Dataset (matplotlib, Agg backend).

Figures: templates (Fig. 2a, 3a), alpha_hat histograms with Gaussian fits (Fig. 4, 5),
lr_stat against chi2(1) and one toy's -2 Delta lnL curves (Fig. 6).
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from scipy import stats

from . import accessor  # noqa: F401  (registers ds.mixture)

__all__ = ["write_report"]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name).replace("*", "star"))


def _template_figures(ds: xr.Dataset, out: str, templates) -> list[str]:
    paths = []
    tabs = {}
    if templates:
        for (m, s), t in templates.items():
            tabs[(m, s)] = t.tabulate(512)
    elif "template_x" in ds:
        for m in ds["estimator"].values:
            for s in ds["smearing"].values:
                x = ds["template_x"].sel({"estimator": m, "smearing": s}).values
                if np.isfinite(x).any():
                    keep = np.isfinite(x)
                    tabs[(m, s)] = (x[keep], ds["template_p_a"].sel({"estimator": m, "smearing": s}).values[keep],
                                    ds["template_p_h"].sel({"estimator": m, "smearing": s}).values[keep])
    for (m, s), (x, pa, ph) in tabs.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(x, pa, label="A (CP-odd)")
        ax.plot(x, ph, label="H (CP-even)")
        ax.set_xlabel("phi* [rad]" if "phi" in str(m).lower() else "network output y")
        ax.set_ylabel("probability density")
        if x.min() >= 0 and x.max() <= 1 and "phi" not in str(m).lower():
            ax.set_yscale("log")
        ax.set_title(f"templates: {m}, {s}")
        ax.legend()
        p = os.path.join(out, f"templates_{_safe(m)}_{_safe(s)}.png")
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths


def _hist_range(x: np.ndarray) -> tuple[float, float]:
    """The values' range, widened where it is too narrow for 50 finite bins (toys all on one limit)."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-6 * max(1.0, abs(lo), abs(hi)):
        lo, hi = lo - 5e-4, hi + 5e-4
    return lo, hi


def _alpha_hat_figures(ds: xr.Dataset, summ: xr.Dataset, out: str) -> list[str]:
    paths = []
    for n in ds["n_events"].values:
        for m in ds["estimator"].values:
            for s in ds["smearing"].values:
                fig, ax = plt.subplots(figsize=(5.5, 4))
                drawn = 0
                for a in ds["alpha"].values:
                    x = ds["alpha_hat"].sel({"estimator": m, "smearing": s, "alpha": a, "n_events": n}).values
                    x = x[np.isfinite(x)]
                    if x.size < 2:
                        continue
                    drawn += 1
                    c = summ.sel({"estimator": m, "smearing": s, "alpha": a, "n_events": n})
                    mu, sig = float(c["gauss_mean"]), float(c["gauss_sigma"])
                    _, edges, patches = ax.hist(x, bins=50, range=_hist_range(x), histtype="step",
                                                label=f"alpha = {a:g}")
                    if np.isfinite(sig) and sig > 0:
                        grid = np.linspace(edges[0], edges[-1], 300)
                        ax.plot(grid, x.size * (edges[1] - edges[0]) * stats.norm.pdf(grid, mu, sig),
                                lw=1, color=patches[0].get_edgecolor())
                        ax.plot([], [], " ", label=f"  fit {mu:.2f} ± {sig:.2f}")
                ax.set_xlabel("alpha_hat")
                ax.set_ylabel("test sets")
                ax.set_title(f"{m}, {s}, N = {int(n)}")
                if drawn:
                    ax.legend(fontsize=7)
                else:
                    ax.text(0.5, 0.5, "fewer than 2 finite alpha_hat per alpha", ha="center",
                            transform=ax.transAxes)
                p = os.path.join(out, f"alpha_hat_{_safe(m)}_{_safe(s)}_N{int(n)}.png")
                fig.savefig(p, dpi=110, bbox_inches="tight")
                plt.close(fig)
                paths.append(p)
    return paths


def _lr_figure(ds: xr.Dataset, out: str) -> list[str]:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    bins = np.linspace(0, 8, 41)
    for m in ds["estimator"].values:
        for s in ds["smearing"].values:
            lr = ds["lr_stat"].sel({"estimator": m, "smearing": s}).values.ravel()
            lr = lr[np.isfinite(lr) & (lr >= bins[0]) & (lr <= bins[-1])]
            if lr.size:
                ax.hist(lr, bins=bins, density=True, histtype="step", label=f"{m}, {s}")
    g = np.linspace(0.02, 8, 300)
    ax.plot(g, stats.chi2(1).pdf(g), "k--", label="chi2(1)")
    ax.set_yscale("log")
    ax.set_xlabel("-2 ln(L(alpha_true) / L(alpha_hat))")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    p = os.path.join(out, "lr_stat_chi2.png")
    fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [p]


def _curve_figure(ds: xr.Dataset, out: str) -> list[str]:
    if "curve_alpha" not in ds:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in ds["estimator"].values:
        for s in ds["smearing"].values:
            x = ds["curve_alpha"].sel({"estimator": m, "smearing": s}).values
            y = ds["curve_m2dlnl"].sel({"estimator": m, "smearing": s}).values
            keep = np.isfinite(x) & np.isfinite(y)
            if keep.any():
                ax.plot(x[keep], y[keep], label=f"{m}, {s}")
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set_ylim(0, 4)
    ax.set_xlabel("alpha")
    ax.set_ylabel("-2 Delta ln L")
    ax.set_title("likelihood curves of one test set")
    ax.legend(fontsize=7)
    p = os.path.join(out, "likelihood_curves.png")
    fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [p]


def write_report(ds: xr.Dataset, out, *, templates: dict | None = None, width: str = "gauss_sigma"):
    """Write the figures into folder ``out`` and return (table text, list of PNG paths).

    ``templates``: optional {(estimator, smearing): MixtureTemplates}; else the tabulated
    templates stored in the Dataset are drawn (if any).
    """
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    summ = ds.mixture.summary()
    table = ds.mixture.table(width=width, summary=summ)
    paths = _template_figures(ds, out, templates)
    paths += _alpha_hat_figures(ds, summ, out)
    paths += _lr_figure(ds, out)
    paths += _curve_figure(ds, out)
    with open(os.path.join(out, "table1.md"), "w") as f:
        f.write(table + "\n")
    return table, paths
