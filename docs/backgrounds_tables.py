"""The tables of docs/BACKGROUNDS.md from a background study's results.

For every estimator, smearing and treatment: sigma_alpha (Gaussian-fit width) beside its
nuisance-aware Cramer-Rao bound against the Z fraction (ttbar at its first grid value), the
cells with both backgrounds, the NN's gain over phi*, how close each estimator comes to its
bound, and coverage and the Wilks check (KS p-value of -2 Delta lnL against chi2(1)) per cell.

    python docs/backgrounds_tables.py jobs/backgrounds-small.yaml [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse

import numpy as np

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.results import open_results
from hpcmix.study import load_study


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


def gain_table(s, zs, at: dict, *, over: str = "phi_star") -> list[str]:
    """sigma(phi*) / sigma(estimator) - 1: the relative gain of each network estimator over phi*."""
    nets = [m for m in s["estimator"].values if m != over]
    lines = ["| smearing, treatment, estimator | " + " | ".join(f"Z = {z:g}" for z in zs) + " |",
             "|---|" + "---|" * len(zs)]
    for sm in s["smearing"].values:
        for tr in s["treatment"].values:
            for m in nets:
                row = []
                for z in zs:
                    ref = float(s["gauss_sigma"].sel(estimator=over, smearing=sm, treatment=tr, fraction_Z=z, **at))
                    w = float(s["gauss_sigma"].sel(estimator=m, smearing=sm, treatment=tr, fraction_Z=z, **at))
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
    print("\n## efficiency = bound / sigma (1: on the bound)\n")
    print("\n".join(metric_table(s, zs, first, "efficiency", ".2f")))
    print("\n## coverage of the Delta(-2 lnL) = 1 interval (nominal 0.683)\n")
    print("\n".join(metric_table(s, zs, first, "coverage", ".3f", "coverage_err")))
    print("\n## Wilks check: KS p-value of -2 Delta lnL(alpha_true) against chi2(1)\n")
    print("\n".join(metric_table(s, zs, first, "ks_pvalue", ".2g")))
    print(f"\n## mean alpha_hat (truth {a:g})\n")
    print("\n".join(metric_table(s, zs, first, "gauss_mean", ".3f", "gauss_mean_err")))


if __name__ == "__main__":
    main()
