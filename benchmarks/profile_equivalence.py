"""Does the fast Pythia profile (MPI and hadronisation off) leave the selected tau kinematics unchanged?

Generates the same number of selected events with each profile and compares
the phi* amplitude, the visible-tau pT and m_vis (means with errors, and
two-sample Kolmogorov-Smirnov p-values).

    python benchmarks/profile_equivalence.py --events 4000 --sample A
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from scipy import stats

from hpcmix.generate.run import plan_generation, run_generation
from hpcmix.physics.features import FEATURE_NAMES
from hpcmix.physics.selection import visible_taus
from hpcmix.store import EventStore
from _study import generation_study, split_events  # benchmarks/_study.py (run as a script)


def observables(path: str, sample: str) -> dict[str, np.ndarray]:
    ds = EventStore(path).dataset(sample)
    p4, feats = ds["truth_p4"].values, ds["features"].values
    tau_p, tau_m = visible_taus(p4)
    return {
        "cos_phi_star": np.cos(feats[:, FEATURE_NAMES.index("phi_star")].astype(float)),
        "tau_vis_pt": np.concatenate([np.hypot(tau_p[:, 0], tau_p[:, 1]), np.hypot(tau_m[:, 0], tau_m[:, 1])]),
        "m_vis": feats[:, FEATURE_NAMES.index("m_vis")].astype(float),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--sample", default="A")
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from hpcmix.orchestrate.executor import site_executor

    events = split_events(args.events, args.chunk_size)
    executor = site_executor("local", cpu={"n_workers": args.workers, "dashboard_address": ":0"}, gpu=False)
    obs, rates = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for profile in ("full", "fast"):
            plan = plan_generation(generation_study(args.sample, events, chunk_size=args.chunk_size,
                                                    profile=profile, seed=11))
            report = run_generation(plan, f"{tmp}/{profile}.zarr", executor=executor, progress=False)
            rates[profile] = report.tried_per_task_second
            obs[profile] = observables(f"{tmp}/{profile}.zarr", args.sample)
    executor.close()
    print(f"sample {args.sample}, {args.events} selected events per profile")
    print(f"events tried per core-second: full {rates['full']:.0f}, fast {rates['fast']:.0f} "
          f"(fast/full = {rates['fast'] / rates['full']:.1f})")
    print(f"{'observable':<14}{'full':>22}{'fast':>22}{'diff/sigma':>12}{'KS p':>8}")
    for name in ("cos_phi_star", "tau_vis_pt", "m_vis"):
        a, b = obs["full"][name], obs["fast"][name]
        ma, ea = a.mean(), a.std() / np.sqrt(a.size)
        mb, eb = b.mean(), b.std() / np.sqrt(b.size)
        label = "a = <cos>/pi" if name == "cos_phi_star" else name
        scale = 1 / np.pi if name == "cos_phi_star" else 1.0
        print(f"{label:<14}{ma * scale:>12.4f} +- {ea * scale:<7.4f}{mb * scale:>12.4f} +- {eb * scale:<7.4f}"
              f"{(ma - mb) / np.hypot(ea, eb):>12.2f}{stats.ks_2samp(a, b).pvalue:>8.2f}")


if __name__ == "__main__":
    main()
