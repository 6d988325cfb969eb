"""Benchmark: the K-fraction fitter against a loop of iminuit fits (K = 3, one floated nuisance).

    python benchmarks/bench_fitter_k.py [--toys 10000] [--n-events 100] [--minuit-toys 1000] [--rounds 3] [--quick]

Templates: three Beta densities on [0, 1], A = Beta(3, 9), H = Beta(6, 6) (alike: the two hypotheses)
and a background Beta(9, 3), true fractions (0.35, 0.35, 0.3); alpha = f_A / (f_A + f_H), the background
floated. ``fit_fractions`` gets the densities on 2001 grid nodes as its positivity support.

Each iminuit fit does per toy what the vectorised fitter does: MIGRAD on -2 ln L in (alpha, f_bkg)
(f_A = alpha (1 - f_bkg), f_H = (1 - alpha)(1 - f_bkg)), started at the truth, tol 1e-4 as in
bench_fitter.py, with the error from its covariance; MINOS for the Delta(-2 ln L) = 1 interval of alpha
(f_bkg profiled); and MIGRAD with alpha fixed at its true value for the profile LR statistic. The cost
function precomputes the per-event differences; no limits (no toy of this sample reaches the positivity
limits: the script checks). The iminuit loop runs on the first ``--minuit-toys`` of the same toys and its
per-toy time is scaled to all of them (it says so). Both sides run interleaved (``--rounds``, best of each)
on one thread (BLAS threads pinned to 1 before numpy loads), so both see the same machine load.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core against one core

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from hpcmix.stats.fractions import fit_fractions  # noqa: E402

BETAS = ((3, 9), (6, 6), (9, 3))
F_TRUE = np.array([0.35, 0.35, 0.3])
ALPHA_TRUE = F_TRUE[0] / (F_TRUE[0] + F_TRUE[1])


def pdfs(x):
    return np.stack([stats.beta(a, b).pdf(x) for a, b in BETAS], axis=-1)


def best_of(f, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _m2lnl(d_h, y, e_b):
    """-2 ln L(alpha, f_bkg) of one toy: m = p_H + alpha (1 - f_bkg)(p_A - p_H) + f_bkg (p_bkg - p_H)."""

    def m2lnl(alpha, f_bkg):
        with np.errstate(invalid="ignore", divide="ignore"):
            v = -2.0 * np.sum(np.log(d_h + alpha * (1.0 - f_bkg) * y + f_bkg * e_b))
        return v if np.isfinite(v) else 1e300

    return m2lnl


def minuit_loop(d):
    """One iminuit fit per toy: (alpha_hat, f_bkg, sigma, interval_lo, interval_hi, lr_stat) per toy."""
    from iminuit import Minuit

    res = np.full((6, d.shape[0]), np.nan)
    for i in range(d.shape[0]):
        m2lnl = _m2lnl(d[i, :, 1], d[i, :, 0] - d[i, :, 1], d[i, :, 2] - d[i, :, 1])
        m = Minuit(m2lnl, alpha=ALPHA_TRUE, f_bkg=F_TRUE[2])
        m.errordef = Minuit.LEAST_SQUARES
        m.tol = 1e-4
        m.migrad()
        m.minos("alpha")
        me = m.merrors["alpha"]
        a_hat = m.values["alpha"]
        res[:5, i] = a_hat, m.values["f_bkg"], m.errors["alpha"], a_hat + me.lower, a_hat + me.upper
        p = Minuit(m2lnl, alpha=ALPHA_TRUE, f_bkg=m.values["f_bkg"])
        p.errordef, p.tol = Minuit.LEAST_SQUARES, 1e-4
        p.fixed["alpha"] = True
        p.migrad()
        res[5, i] = p.fval - m.fval
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toys", type=int, default=10_000)
    ap.add_argument("--n-events", type=int, default=100)
    ap.add_argument("--minuit-toys", type=int, default=1_000, help="toys fitted by the iminuit loop (>= 1000 "
                    "for the issue's figure; its time is scaled to --toys)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1,000 toys, 200 iminuit toys, one round")
    args = ap.parse_args()
    if args.quick:
        args.toys, args.minuit_toys, args.rounds = 1_000, 200, 1
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{platform.processor() or 'cpu'}, load average {os.getloadavg()[0]:.1f}")

    rng = np.random.default_rng(1)
    k = (rng.uniform(size=(args.toys, args.n_events))[..., None] > np.cumsum(F_TRUE)[:-1]).sum(axis=-1)
    a, b = np.array(BETAS).T
    d = pdfs(rng.beta(a[k], b[k]))
    support = pdfs(np.linspace(0.0, 1.0, 2001))
    kw = dict(num=[0], den=[0, 1], f_true=F_TRUE, treatment={2: "floated"}, support=support)

    n_m = min(args.minuit_toys, args.toys)
    fit_fractions(d[:10], **kw)  # warm-up (imports, caches)
    t_vec = t_m = np.inf
    for _ in range(args.rounds):  # interleaved rounds: both sides see the same load
        tv, fit = best_of(lambda: fit_fractions(d, **kw), repeat=3)
        tm, ref = best_of(lambda: minuit_loop(d[:n_m]), repeat=1)
        t_vec, t_m = min(t_vec, tv), min(t_m, tm)
    scale = args.toys / n_m
    t_m_all = t_m * scale
    print(f"\nK = 3 fractions (alpha = f_A / (f_A + f_H), background floated): {args.toys} toys x N = {args.n_events}")
    print(f"  fit_fractions, vectorised (alpha_hat, fractions, sigma_hat, profile interval, profile LR): "
          f"{t_vec * 1e3:8.1f} ms ({t_vec / args.toys * 1e6:.1f} us/toy)")
    how = "all toys" if n_m == args.toys else f"timed on {n_m} toys, scaled to {args.toys}"
    print(f"  iminuit loop (MIGRAD tol 1e-4 + MINOS + MIGRAD at alpha_true), {how}: {t_m_all:8.2f} s "
          f"({t_m / n_m * 1e3:.3f} ms/toy)")
    print(f"  ratio: {t_m_all / t_vec:6.0f}x  (goal >= 100x)")
    print(f"  toys at a positivity limit: {int(fit.at_limit.sum())}, clipped intervals: "
          f"{int(fit.interval_clipped.sum())}, flat: {int(fit.flat.sum())}, converged: {fit.converged.mean():.4f}")
    dev = [np.abs(fit.alpha_hat[:n_m] - ref[0]), np.abs(fit.fractions[:n_m, 2] - ref[1]),
           np.abs(fit.interval_lo[:n_m] - ref[3]), np.abs(fit.interval_hi[:n_m] - ref[4]),
           np.abs(fit.lr_stat[:n_m] - ref[5]), np.abs(fit.sigma_hat[:n_m] / ref[2] - 1.0)]
    print("  on the timed toys, max |vectorised - iminuit|: " + ", ".join(
        f"{name} {v.max():.1e}" for name, v in zip(("alpha_hat", "f_bkg", "interval_lo", "interval_hi", "lr_stat",
                                                    "sigma (relative)"), dev)))


if __name__ == "__main__":
    main()
