"""Text table and figures in the style of the paper from a results Dataset (matplotlib, Agg backend).

Figures: templates (Fig. 2a, 3a), alpha_hat histograms with Gaussian fits (Fig. 4, 5),
lr_stat against chi2(1) and one toy's -2 Delta lnL curves (Fig. 6); with nuisance
components also sigma(alpha_hat) against each nuisance fraction, per estimator and treatment.
The reweighting stage's per-feature histograms come from its records (``reweighting_figures``).
Figures use mplhep's ROOT style (sized for a report page); events are binned with ``hist``.
``index.html`` puts the tables, every figure, the per-cell summary and the provenance in one page.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from scipy import stats

from . import accessor  # noqa: F401  (registers ds.mixture)
from .accessor import n_text
from .dataset import nuisance_components

__all__ = ["reweighting_figures", "write_report"]


# mplhep's ROOT style is made for 10 x 10 inch single plots; the report's are about 5 x 4
_REPORT_SIZES = {"font.size": 10, "axes.linewidth": 1.0, "xtick.major.size": 6, "xtick.minor.size": 3,
                 "ytick.major.size": 6, "ytick.minor.size": 3, "xtick.major.pad": 3, "legend.fontsize": "small"}


@contextlib.contextmanager
def hep_style():
    """The HEP look users expect (mplhep ROOT: ticks inside on all four sides, minor ticks, axis labels
    at the ends, its colour cycle), scaled to the report's figure sizes; only inside the block."""
    import mplhep as hep

    with plt.style.context([hep.style.ROOT, _REPORT_SIZES]):
        yield


def _histogram(x: np.ndarray, bins: int, lo: float, hi: float):
    """``x`` binned with ``hist`` on [lo, hi], the upper edge included (hist's last bin is half-open)."""
    import hist

    # a bin index computed as (x - lo) / width can round up to `bins` for x == hi: widen by a hair
    return hist.Hist(hist.axis.Regular(bins, lo, hi + 1e-9 * (hi - lo), name="x")).fill(x)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name).replace("*", "star"))


def _template_figures(ds: xr.Dataset, out: str, templates) -> list[str]:
    paths = []
    tabs = {}
    if templates:
        for (m, s), t in templates.items():
            tab = t.tabulate(512)
            if len(tab) == 2:  # K components: (x, densities (n, K))
                tabs[(m, s)] = (tab[0], {c: tab[1][:, k] for k, c in enumerate(t.components)})
            else:
                tabs[(m, s)] = tab
    elif "template_density" in ds:
        for m in ds["estimator"].values:
            for s in ds["smearing"].values:
                x = ds["template_x"].sel({"estimator": m, "smearing": s}).values
                keep = np.isfinite(x)
                if keep.any():
                    d = ds["template_density"].sel({"estimator": m, "smearing": s}).values[keep]
                    tabs[(m, s)] = (x[keep], {str(c): d[:, k] for k, c in enumerate(ds["component"].values)})
    elif "template_x" in ds:
        for m in ds["estimator"].values:
            for s in ds["smearing"].values:
                x = ds["template_x"].sel({"estimator": m, "smearing": s}).values
                if np.isfinite(x).any():
                    keep = np.isfinite(x)
                    tabs[(m, s)] = (x[keep], ds["template_p_a"].sel({"estimator": m, "smearing": s}).values[keep],
                                    ds["template_p_h"].sel({"estimator": m, "smearing": s}).values[keep])
    for (m, s), tab in tabs.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        if len(tab) == 2:
            x, curves = tab
            for c, p in curves.items():
                ax.plot(x, p, label=c)
        else:
            x, pa, ph = tab
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


def _extra_points(ds: xr.Dataset) -> list[dict]:
    """Every point of the nuisance dimensions (treatment, fraction_<component>); [{}] without nuisances."""
    extra = [d for d in ds["alpha_hat"].dims if d not in ("estimator", "smearing", "alpha", "n_events", "toy")]
    return [dict(zip(extra, p)) for p in itertools.product(*(ds[d].values for d in extra))]


def _point_label(point: dict) -> tuple[str, str]:
    """(title suffix, file-name suffix) of a nuisance point."""
    if not point:
        return "", ""
    title = ", ".join(f"{d.removeprefix('fraction_')} = {v:g}" if d.startswith("fraction_") else str(v)
                      for d, v in point.items())
    return f", {title}", "_" + "_".join(_safe(f"{d.removeprefix('fraction_')}{v:g}" if d.startswith("fraction_")
                                                else str(v)) for d, v in point.items())


def _alpha_hat_figures(ds: xr.Dataset, summ: xr.Dataset, out: str) -> list[str]:
    import mplhep as hep

    paths = []
    for n, point, m, s in itertools.product(ds["n_events"].values, _extra_points(ds), ds["estimator"].values,
                                            ds["smearing"].values):
        title, suffix = _point_label(point)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        drawn, legend = 0, []
        for a in ds["alpha"].values:
            x = ds["alpha_hat"].sel({"estimator": m, "smearing": s, "alpha": a, "n_events": n, **point}).values
            x = x[np.isfinite(x)]
            if x.size < 2:
                continue
            drawn += 1
            c = summ.sel({"estimator": m, "smearing": s, "alpha": a, "n_events": n, **point})
            mu, sig = float(c["gauss_mean"]), float(c["gauss_sigma"])
            h = _histogram(x, 50, *_hist_range(x))
            art = hep.histplot(h, ax=ax, histtype="step")   # with Poisson error bars
            legend.append((art[0].legend_artist, f"alpha = {a:g}"))
            edges = h.axes[0].edges
            if np.isfinite(sig) and sig > 0:
                grid = np.linspace(edges[0], edges[-1], 300)
                ax.plot(grid, x.size * (edges[1] - edges[0]) * stats.norm.pdf(grid, mu, sig),
                        lw=1, color=art[0].stairs.get_edgecolor())
                legend.append((ax.plot([], [], " ")[0], f"  fit {mu:.2f} ± {sig:.2f}"))
        ax.set_xlabel("alpha_hat")
        ax.set_ylabel("test sets")
        ax.set_title(f"{m}, {s}, {n_text(ds, n).split(' (')[0]}{title}")
        if drawn:
            ax.legend(*zip(*legend), fontsize=7)
        else:
            ax.text(0.5, 0.5, "fewer than 2 finite alpha_hat per alpha", ha="center",
                    transform=ax.transAxes)
        p = os.path.join(out, f"alpha_hat_{_safe(m)}_{_safe(s)}_N{int(n)}{suffix}.png")
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths


def _lr_figure(ds: xr.Dataset, out: str) -> list[str]:
    import mplhep as hep

    fig, ax = plt.subplots(figsize=(5.5, 4))
    bins = np.linspace(0, 8, 41)
    treatments = ds["treatment"].values if "treatment" in ds.dims else [None]
    for m, s, tr in itertools.product(ds["estimator"].values, ds["smearing"].values, treatments):
        at = {"estimator": m, "smearing": s, **({"treatment": tr} if tr is not None else {})}
        lr = ds["lr_stat"].sel(at).values.ravel()
        lr = lr[np.isfinite(lr) & (lr >= bins[0]) & (lr <= bins[-1])]
        if lr.size:
            hep.histplot(_histogram(lr, len(bins) - 1, bins[0], bins[-1]), ax=ax, density=True, yerr=False,
                         histtype="step", label=f"{m}, {s}" + (f", {tr}" if tr is not None else ""))
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


def _fraction_figures(ds: xr.Dataset, summ: xr.Dataset, out: str) -> list[str]:
    """sigma(alpha_hat) against each nuisance fraction: one line per estimator, smearing and treatment,
    its nuisance-aware Cramer-Rao bound dashed beside it (middle alpha, one figure per N)."""
    paths = []
    alphas = summ["alpha"].values
    a = alphas[len(alphas) // 2]
    nuis = nuisance_components(ds)
    for comp, n in itertools.product(nuis, summ["n_events"].values):
        dim = f"fraction_{comp}"
        others = {f"fraction_{o}": summ[f"fraction_{o}"].values[0] for o in nuis if o != comp}
        c = summ.sel({"alpha": a, "n_events": n, **others})
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        bounds, widths = [], []
        for (m, s, tr), style in zip(itertools.product(c["estimator"].values, c["smearing"].values,
                                                      c["treatment"].values), itertools.cycle(["o", "s", "^", "v"])):
            cell = c.sel({"estimator": m, "smearing": s, "treatment": tr})
            x, w, err = cell[dim].values, cell["gauss_sigma"].values, cell["gauss_sigma_err"].values
            err = np.where(err < w, err, np.nan)  # an error as large as the width says nothing on a log axis
            line = ax.errorbar(x, w, yerr=err, marker=style, ms=4, capsize=2, label=f"{m}, {s}, {tr}")
            ax.plot(x, cell["cramer_rao"].values, ls="--", lw=1, color=line[0].get_color())
            bounds += list(cell["cramer_rao"].values)
            widths += list(w)
        ax.plot([], [], "k--", lw=1, label="Cramer-Rao bound")
        ax.set_yscale("log")
        finite = [v for v in bounds + widths if np.isfinite(v) and v > 0]
        top = [v for v in bounds if np.isfinite(v) and v > 0]
        if finite and top:
            # widths far above every bound (a degenerate fit) are cut at 10 x the largest bound
            ax.set_ylim(0.7 * min(finite), min(1.5 * max(finite), 10 * max(top)))
        ax.set_xlabel(f"true {comp} fraction")
        ax.set_ylabel("sigma of alpha_hat (Gaussian-fit width)")
        ax.set_title(f"alpha = {float(a):g}, {n_text(ds, n).split(' (')[0]}"
                     + "".join(f", {k.removeprefix('fraction_')} = {v:g}" for k, v in others.items()))
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        p = os.path.join(out, f"sigma_vs_fraction_{_safe(comp)}_N{int(n)}.png")
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths


def write_report(ds: xr.Dataset, out, *, templates: dict | None = None, width: str = "gauss_sigma",
                 extra_tables: Sequence[tuple[str, str]] = (), extra_figures: Sequence[str] = (),
                 notes: Sequence[str] = ()):
    """Write the tables (Markdown), the figures (PNG) and ``index.html`` (all of them in one page) into
    folder ``out``; return (table text, list of PNG paths).

    ``templates``: optional {(estimator, smearing): MixtureTemplates}; else the tabulated templates
    stored in the Dataset are drawn (if any). ``extra_tables``: (name, Markdown) written as
    ``<name>.md`` after the results' own tables; ``extra_figures``: PNGs already in ``out`` (the
    reweighting stage's), shown in the page; ``notes``: shown at the page's top after the pool-reuse note.
    """
    from .html import write_index

    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    summ = ds.mixture.summary()
    table1 = ds.mixture.table(width=width, summary=summ)
    with hep_style():
        paths = _template_figures(ds, out, templates)
        paths += _alpha_hat_figures(ds, summ, out)
        paths += _lr_figure(ds, out)
        paths += _curve_figure(ds, out)
        if nuisance_components(ds):
            paths += _fraction_figures(ds, summ, out)
    sections = [("table1", table1)]
    if nuisance_components(ds):
        sections.insert(0, ("sigma_vs_fraction", ds.mixture.fraction_table(summary=summ)))
    if "alpha_hat_by_network" in ds:   # templates.weight_networks: all
        sections.append(("weight_networks", ds.mixture.network_table()))
    sections += [(name, text) for name, text in extra_tables if text]
    for name, text in sections:
        with open(os.path.join(out, f"{name}.md"), "w") as f:
            f.write(text + "\n")
    paths += list(extra_figures)
    reuse = ds.attrs.get("pool_reuse_note", "")
    if not any(n.startswith(reuse) for n in notes):   # the pipeline's note extends this one
        notes = [reuse, *notes]
    write_index(out, title=str(ds.attrs.get("study") or ds.attrs.get("title", "hpcmix results")),
                tables=[(_HEADINGS.get(n, n), t) for n, t in sections], figures=paths, summary=summ,
                attrs=ds.attrs, notes=notes)
    return "\n\n".join(t for _, t in sections), paths


# the page's headings for the report's tables (by file name)
_HEADINGS = {"table1": "Table 1: mean ± width of alpha_hat", "sigma_vs_fraction": "sigma(alpha_hat) against the "
             "nuisance fractions", "weight_networks": "Per reweighting network", "auc_study": "AUC study",
             "networks": "Networks", "reweighting": "Reweighting"}


def reweighting_figures(records, out) -> list[str]:
    """Per weight and region (control, blinded): every compared feature's source, reweighted source and
    target shapes on the target's equal-population bins, with chi2 / ndf before -> after; from the
    reweighting stage's records (their ``features``), so no event is read."""
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    with hep_style():
        return _reweighting_figures(records, out)


def _reweighting_figures(records, out: str) -> list[str]:
    import mplhep as hep

    paths = []
    for name, rec in records.items():
        info = rec["info"]
        feats = info.get("features") or {}
        for region in sorted({r for f in feats.values() for r in f}):
            shown = {f: v[region] for f, v in feats.items() if region in v}
            cols = min(5, len(shown))
            rows = -(-len(shown) // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
            for ax, (feature, c) in zip(axes.flat, shown.items()):
                edges = np.asarray(c["edges"])
                width = np.diff(edges)
                for key, label, style in (("source", info["source"], dict(color="C0", ls="--")),
                                          ("reweighted", f"{info['source']} reweighted", dict(color="C0")),
                                          ("target", info["target"], dict(color="k"))):
                    h = np.asarray(c[key], float)
                    hep.histplot(h / h.sum() / width, edges, ax=ax, yerr=False, label=label, **style)
                ax.set_title(f"{feature}: chi2/ndf {c['before']['chi2_per_ndf']:.2f} -> {c['after']['chi2_per_ndf']:.2f}",
                             fontsize=8)
                ax.tick_params(labelsize=7)
            for ax in list(axes.flat)[len(shown):]:
                ax.axis("off")
            axes.flat[0].legend(fontsize=7)
            fig.suptitle(f"reweighting {name} ({info['source']} -> {info['target']}), {region} region, test split"
                         + (f", blinded {info['blind']}" if info.get("blind") else ""), fontsize=10)
            fig.tight_layout()
            p = os.path.join(out, f"reweighting_{_safe(name)}_{_safe(region)}.png")
            fig.savefig(p, dpi=90)
            plt.close(fig)
            paths.append(p)
    return paths
