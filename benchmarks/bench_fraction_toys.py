"""Benchmark: the K-fraction toys of a finished study, per estimator and treatment.

    python benchmarks/bench_fraction_toys.py jobs/backgrounds-small.yaml [--set KEY=VALUE ...] [--toys 500]

For every cell with nuisances, one batch of ``--toys`` test sets is drawn as the toys task draws
it (same seeds as batch 0) and fitted with each of the cell's treatments, on one thread (BLAS
pinned to 1 before numpy loads). Printed: seconds per 1,000 toys per (estimator, smearing,
treatment), the slowest cell, and the fitted events (toys x N) per core-second over all cells:
the fits alone. ``estimates.fraction_toy_events_per_core_second`` in hpcmix.yaml (the dry-run
estimate) is the whole toys stage's rate, loading and writing included (docs/PERFORMANCE.md).
Constrained treatments are skipped (their fits need the task's per-toy constraint centres).
The study must have run: its templates and test pools are read.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, as one toys task

import argparse  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402

from hpcmix.orchestrate.pipeline import plan_study  # noqa: E402
from hpcmix.orchestrate.stages.toys import draw_order  # noqa: E402
from hpcmix.stats.fractions import fit_fractions  # noqa: E402
from hpcmix.stats.toys import draw_mixture_toys, toy_seed  # noqa: E402
from hpcmix.store.artefacts import load_templates, load_test_pool  # noqa: E402
from hpcmix.study import load_study  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--toys", type=int, default=500)
    args = ap.parse_args()
    plan = plan_study(load_study(args.job, sets=args.overrides))
    cells = [c for c in plan.cells if c.has_nuisances]
    if not cells:
        raise SystemExit(f"{args.job}: no cell with nuisance components (toys.fractions)")
    per = defaultdict(lambda: [0.0, 0])     # (estimator, smearing, treatment) -> [seconds, toys]
    events = seconds = 0.0
    slowest = (0.0, "")
    for c in cells:
        pool = load_test_pool(c.template_dir)
        comps = pool.components
        support = load_templates(c.template_dir).support_nodes()
        truth = c.true_fractions(comps)
        rng = toy_seed(c.seed, c.estimator, c.smearing, c.alpha, c.n_events, 0, fractions=dict(c.fractions))
        draw = draw_mixture_toys({k: pool.size(k) for k in comps}, {k: truth[k] for k in draw_order(comps)},
                                 n_events=c.n_events, n_toys=args.toys, rng=rng)
        densities = draw.gather_densities(pool.density, comps)
        f_true = np.array([truth[k] for k in comps])
        for treatment in c.treatments:
            how, w = c.fit_treatment(treatment, comps)
            if w:
                continue
            t0 = time.perf_counter()
            fit_fractions(densities, num=[1], den=[0, 1], f_true=f_true, treatment=how, support=support)
            dt = time.perf_counter() - t0
            key = (c.estimator, c.smearing, treatment)
            per[key][0] += dt
            per[key][1] += args.toys
            events += args.toys * c.n_events
            seconds += dt
            label = f"{c.estimator}/{c.smearing}/{treatment} {dict(c.fractions)} N={c.n_events}"
            slowest = max(slowest, (dt, label))
    print(f"{len(cells)} cells x {args.toys} toys, {args.job}")
    print("| estimator, smearing, treatment | s per 1,000 toys (mean over the grid) |")
    print("|---|---|")
    for (m, sm, tr), (dt, n) in sorted(per.items()):
        print(f"| {m}, {sm}, {tr} | {1000 * dt / n:.2f} |")
    print(f"slowest cell: {slowest[1]}: {1000 * slowest[0] / args.toys:.2f} s per 1,000 toys")
    print(f"fitted events (toys x N) per core-second over all cells: {events / seconds:.3g}")


if __name__ == "__main__":
    main()
