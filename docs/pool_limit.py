"""The alpha_hat that toys drawn from a finite test pool tend to, and how far it may sit from the truth.

Every toy of a cell draws from the same test pool and is fitted with the same
templates, so the cell mean inherits one common offset: the maximum of the
pool's weighted log-likelihood, sum_A w_A ln p(x|alpha) + sum_H w_H ln p(x|alpha)
with w_A = alpha / n_A and w_H = (1 - alpha) / n_H. Its statistical scale is
sigma_alpha(N) sqrt(N / n_pool) from the pool alone (the templates, built from
a separate split of the same size, add about as much again).

    python docs/pool_limit.py [jobs/paper-table1-small.yaml]
"""

from __future__ import annotations

import os
import sys

import numpy as np
from scipy.optimize import minimize_scalar

from hpcmix.orchestrate.jobs import load_job
from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.orchestrate.stages import POOL_FILE


def pool_limit(pool, alpha: float) -> float:
    """Weighted maximum-likelihood alpha on the whole pool (inside the templates' positivity limits)."""
    pa = np.concatenate([pool["pa_a"], pool["pa_h"]])
    ph = np.concatenate([pool["ph_a"], pool["ph_h"]])
    n_a, n_h = pool["pa_a"].size, pool["pa_h"].size
    w = np.concatenate([np.full(n_a, alpha / n_a), np.full(n_h, (1 - alpha) / n_h)])

    def nll(a):
        p = a * pa + (1 - a) * ph
        return np.inf if (p <= 0).any() else -np.sum(w * np.log(p))

    return float(minimize_scalar(nll, bounds=(alpha - 0.3, alpha + 0.3), method="bounded",
                                 options={"xatol": 1e-6}).x)


def main() -> None:
    plan = plan_study(load_job(sys.argv[1] if len(sys.argv) > 1 else "jobs/paper-table1-small.yaml"))
    print("| method, smearing | n_pool (A, H) | pool limit at alpha = " + " / ".join(
        f"{a:g}" for a in plan.job.toys["alpha"]) + " |")
    print("|---|---|---|")
    for (method, smearing), d in plan.templates.items():
        pool = np.load(os.path.join(d, POOL_FILE))
        limits = [pool_limit(pool, a) for a in plan.job.toys["alpha"]]
        print(f"| {method}, {smearing} | {pool['pa_a'].size}, {pool['pa_h'].size} | "
              + " / ".join(f"{x:.3f}" for x in limits) + " |")


if __name__ == "__main__":
    main()
