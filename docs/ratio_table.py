"""The ratio estimators beside nn and phi* at one (alpha, N): width, bias, bound, coverage, Wilks.

    python docs/ratio_table.py [jobs/ratio-small.yaml] [--alpha 0.7] [--n-events 500] [--set KEY=VALUE ...]

Reads the results of a finished ``hpcmix run`` of the job (it runs nothing).
"""

from __future__ import annotations

import argparse

import xarray as xr

import hpcmix  # noqa: F401  (registers the .mixture accessor)
from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.study import load_study


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job", nargs="?", default="jobs/ratio-small.yaml")
    ap.add_argument("--alpha", type=float, default=0.7)
    ap.add_argument("--n-events", type=int, default=500)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    plan = plan_study(load_study(args.job, sets=args.set))
    ds = xr.open_zarr(plan.results, consolidated=False)
    s = ds.mixture.summary().sel(alpha=args.alpha, n_events=args.n_events)
    print(f"alpha = {args.alpha}, N = {args.n_events}, {int(s.n_toys.max())} toys per cell")
    print("| estimator, smearing | sigma (Gauss fit) | bias | Cramer-Rao | coverage (68 %) | Wilks KS p | at a limit |")
    print("|---|---|---|---|---|---|---|")
    for sm in ds.smearing.values:
        for est in ds.estimator.values:
            c = s.sel(estimator=est, smearing=sm)
            print(f"| {est}, {sm} | {float(c.gauss_sigma):.3f} | {float(c['mean']) - args.alpha:+.3f} | "
                  f"{float(c.cramer_rao):.3f} | {float(c.coverage):.3f} | {float(c.ks_pvalue):.2f} | "
                  f"{float(c.at_limit_fraction):.2f} |")


if __name__ == "__main__":
    main()
