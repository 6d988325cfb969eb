"""The tables of docs/BACKGROUNDS.md from a background study's results.

For every estimator, smearing and treatment: sigma_alpha (Gaussian-fit width) beside its
nuisance-aware Cramer-Rao bound against the Z fraction (ttbar at its first grid value), the
cells with both backgrounds, the NN's gain over phi*, how close each estimator comes to its
bound, coverage and the Wilks check (KS p-value of -2 Delta lnL against chi2(1)) per cell, and
the mean alpha_hat of the fixed treatment beside its pool limit: the alpha that a weighted fit to
the whole test pool gives (docs/pool_limit.py, here with the nuisances at their true fractions),
which every toy of a cell, drawn from that one pool, tends to.

    python docs/backgrounds_tables.py jobs/backgrounds-small.yaml [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import minimize_scalar

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.results import open_results
from hpcmix.store.artefacts import load_templates, load_test_pool
from hpcmix.study import load_study


def pool_limit(pool, support, alpha: float, nuisances: dict) -> float:
    """Weighted ML alpha on the whole pool, nuisances fixed: each component's events weighted by
    f_c / n_c, alpha within the templates' positivity limits (the mixture >= 0 at every support node)."""
    comps = pool.components                      # (alpha = 0, alpha = 1, nuisances...)
    s = 1.0 - sum(nuisances.values())
    f_true = {comps[0]: (1 - alpha) * s, comps[1]: alpha * s, **nuisances}
    d = {k: np.concatenate([pool.density[(k, c)] for c in comps]) for k in comps}
    w = np.concatenate([np.full(pool.size(c), f_true[c] / pool.size(c)) for c in comps])
    rest = sum(nuisances[k] * d[k] for k in comps[2:])
    sup = np.asarray(support, float)
    # support @ f >= 0 is linear in alpha: s (sup_H + alpha (sup_A - sup_H)) + nuisances >= 0
    c0 = s * sup[:, 0] + sup[:, 2:] @ np.array([nuisances[k] for k in comps[2:]])
    g = s * (sup[:, 1] - sup[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.max(np.where(g > 0, -c0 / g, -np.inf), initial=-np.inf)
        hi = np.min(np.where(g < 0, -c0 / g, np.inf), initial=np.inf)
    lo, hi = max(lo, -10.0), min(hi, 10.0)

    def nll(a):
        with np.errstate(divide="ignore", invalid="ignore"):
            m = s * ((1 - a) * d[comps[0]] + a * d[comps[1]]) + rest
            return -np.sum(w * np.log(m)) if np.all(m > 0) else np.inf

    return float(minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7}).x)


def pool_table(s, plan, zs, at: dict) -> list[str]:
    """mean alpha_hat of the fixed treatment [pool limit] per (estimator, smearing) against the Z fraction."""
    a = float(s["alpha"])
    lines = ["| estimator, smearing | " + " | ".join(f"Z = {z:g}" for z in zs) + " |", "|---|" + "---|" * len(zs)]
    for (m, sm), t in plan.templates.items():
        pool, support = load_test_pool(t.folder), load_templates(t.folder).support_nodes()
        row = []
        for z in zs:
            c = s.sel(estimator=m, smearing=sm, treatment="fixed", fraction_Z=z, **at)
            nuis = {"Z": z, **{k.removeprefix("fraction_"): v for k, v in at.items()}}
            row.append(f"{float(c['gauss_mean']):.3f} [{pool_limit(pool, support, a, nuis):.3f}]")
        lines.append(f"| {m}, {sm} | " + " | ".join(row) + " |")
    return lines


def _cell(c) -> str:
    w, cr = float(c["gauss_sigma"]), float(c["cramer_rao"])
    if not np.isfinite(w):
        return "n/a"
    text = f"{w:.3f} [{cr:.3f}]"
    flat, lim = float(c.get("flat_fraction", 0.0)), float(c["at_limit_fraction"])
    notes = [f"{flat:.0%} flat"] if flat >= 0.05 else []
    notes += [f"{lim:.0%} at limit"] if lim >= 0.05 else []
    return text + (f" ({', '.join(notes)})" if notes else "")


def sigma_table(s, zs, at: dict) -> list[str]:
    """sigma [bound] per (estimator, smearing, treatment) against the Z fraction."""
    lines = ["| estimator, smearing, treatment | " + " | ".join(f"Z = {z:g}" for z in zs) + " |",
             "|---|" + "---|" * len(zs)]
    for m in s["estimator"].values:
        for sm in s["smearing"].values:
            for tr in s["treatment"].values:
                row = [_cell(s.sel(estimator=m, smearing=sm, treatment=tr, fraction_Z=z, **at)) for z in zs]
                lines.append(f"| {m}, {sm}, {tr} | " + " | ".join(row) + " |")
    return lines


def gain_table(s, zs, at: dict, *, over: str = "phi_star", var: str = "gauss_sigma") -> list[str]:
    """var(phi*) / var(estimator) - 1: the relative gain of each network estimator over phi*
    (var: the fitted width, or the Cramer-Rao bound, which fits stopped by a limit do not shrink)."""
    nets = [m for m in s["estimator"].values if m != over]
    lines = ["| smearing, treatment, estimator | " + " | ".join(f"Z = {z:g}" for z in zs) + " |",
             "|---|" + "---|" * len(zs)]
    for sm in s["smearing"].values:
        for tr in s["treatment"].values:
            for m in nets:
                row = []
                for z in zs:
                    ref = float(s[var].sel(estimator=over, smearing=sm, treatment=tr, fraction_Z=z, **at))
                    w = float(s[var].sel(estimator=m, smearing=sm, treatment=tr, fraction_Z=z, **at))
                    row.append(f"{ref / w - 1:+.0%}" if np.isfinite(ref) and np.isfinite(w) and w > 0 else "n/a")
                lines.append(f"| {sm}, {tr}, {m} | " + " | ".join(row) + " |")
    return lines


def metric_table(s, zs, at: dict, name: str, fmt: str, err: str | None = None) -> list[str]:
    lines = ["| estimator, smearing, treatment | " + " | ".join(f"Z = {z:g}" for z in zs) + " |",
             "|---|" + "---|" * len(zs)]
    for m in s["estimator"].values:
        for sm in s["smearing"].values:
            for tr in s["treatment"].values:
                row = []
                for z in zs:
                    c = s.sel(estimator=m, smearing=sm, treatment=tr, fraction_Z=z, **at)
                    v = float(c[name])
                    text = format(v, fmt) if np.isfinite(v) else "n/a"
                    if err is not None and np.isfinite(v):
                        text += " ± " + format(float(c[err]), fmt)
                    row.append(text)
                lines.append(f"| {m}, {sm}, {tr} | " + " | ".join(row) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    plan = plan_study(load_study(args.job, sets=args.overrides))
    ds = open_results(plan.results)
    s = ds.mixture.summary().isel(alpha=0, n_events=0)
    a, n = float(s["alpha"]), int(s["n_events"])
    zs = [float(z) for z in s["fraction_Z"].values]
    others = [d for d in s["gauss_sigma"].dims if d.startswith("fraction_") and d != "fraction_Z"]
    first = {d: float(s[d].values[0]) for d in others}
    where = ", ".join(f"{d.removeprefix('fraction_')} = {v:g}" for d, v in first.items())
    print(f"results {plan.results}; alpha = {a:g}, {n} expected signal events per test set, "
          f"{int(np.nanmax(s['n_toys'].values))} test sets per cell\n")
    print(f"## sigma_alpha [Cramer-Rao bound] against the Z fraction ({where or 'no other background'})\n")
    print("\n".join(sigma_table(s, zs, first)))
    for d in others:
        for v in s[d].values[1:]:
            at = {**first, d: float(v)}
            label = ", ".join(f"{k.removeprefix('fraction_')} = {x:g}" for k, x in at.items())
            print(f"\n## both backgrounds: {label}\n")
            print("\n".join(sigma_table(s, zs, at)))
    print(f"\n## relative gain sigma(phi*) / sigma - 1 ({where or 'no other background'})\n")
    print("\n".join(gain_table(s, zs, first)))
    print(f"\n## relative gain in the bound, bound(phi*) / bound - 1 ({where or 'no other background'})\n")
    print("\n".join(gain_table(s, zs, first, var="cramer_rao")))
    print("\n## efficiency = bound / sigma (1: on the bound)\n")
    print("\n".join(metric_table(s, zs, first, "efficiency", ".2f")))
    print("\n## coverage of the Delta(-2 lnL) = 1 interval (nominal 0.683)\n")
    print("\n".join(metric_table(s, zs, first, "coverage", ".3f", "coverage_err")))
    print("\n## Wilks check: KS p-value of -2 Delta lnL(alpha_true) against chi2(1)\n")
    print("\n".join(metric_table(s, zs, first, "ks_pvalue", ".2g")))
    print(f"\n## mean alpha_hat (truth {a:g})\n")
    print("\n".join(metric_table(s, zs, first, "gauss_mean", ".3f", "gauss_mean_err")))
    if "fixed" in s["treatment"].values:
        print(f"\n## mean alpha_hat, fixed treatment [pool limit] (truth {a:g})\n")
        print("\n".join(pool_table(s, plan, zs, first)))


if __name__ == "__main__":
    main()
