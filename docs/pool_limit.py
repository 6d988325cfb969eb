"""The alpha_hat that toys drawn from a finite test pool tend to, and how far it may sit from the truth.

Every toy of a cell draws from the same test pool and is fitted with the same
templates, so the cell mean inherits one common offset: the maximum of the
pool's weighted log-likelihood, sum_A w_A ln p(x|alpha) + sum_H w_H ln p(x|alpha)
with w_A = alpha / n_A and w_H = (1 - alpha) / n_H (A: the alpha = 1 component,
H: the alpha = 0 one). Its statistical scale is sigma_alpha(N) sqrt(N / n_pool)
from the pool alone (the templates, built from a separate split of the same size,
add about as much again).

    python docs/pool_limit.py [jobs/paper-table1-small.yaml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import minimize_scalar

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.store.artefacts import load_test_pool
from hpcmix.study import load_study


def pool_limit(pool, alpha: float) -> float:
    """Weighted maximum-likelihood alpha on the whole pool (inside the templates' positivity limits)."""
    h, a = pool.components                     # (alpha = 0, alpha = 1)
    p1 = np.concatenate([pool.density[(a, a)], pool.density[(a, h)]])   # alpha = 1 density at A, H events
    p0 = np.concatenate([pool.density[(h, a)], pool.density[(h, h)]])   # alpha = 0 density at A, H events
    n_a, n_h = pool.size(a), pool.size(h)
    w = np.concatenate([np.full(n_a, alpha / n_a), np.full(n_h, (1 - alpha) / n_h)])

    def nll(x):
        p = x * p1 + (1 - x) * p0
        return np.inf if (p <= 0).any() else -np.sum(w * np.log(p))

    return float(minimize_scalar(nll, bounds=(alpha - 0.3, alpha + 0.3), method="bounded",
                                 options={"xatol": 1e-6}).x)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default="jobs/paper-table1-small.yaml", help="the study's job file")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, as with `hpcmix run --set` (repeatable)")
    args = parser.parse_args(argv)
    plan = plan_study(load_study(args.job, sets=args.sets))
    alphas = plan.study.toys.alpha
    h, a = plan.study.pair
    print(f"| estimator, smearing | n_pool ({a}, {h}) | pool limit at {plan.study.poi.name} = "
          + " / ".join(f"{x:g}" for x in alphas) + " |")
    print("|---|---|---|")
    for (estimator, smearing), t in plan.templates.items():
        pool = load_test_pool(t.folder)
        limits = [pool_limit(pool, x) for x in alphas]
        print(f"| {estimator}, {smearing} | {pool.size(a)}, {pool.size(h)} | "
              + " / ".join(f"{x:.3f}" for x in limits) + " |")


if __name__ == "__main__":
    main()
