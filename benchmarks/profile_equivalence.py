"""Does the fast Pythia profile (MPI and hadronisation off) leave the selected events unchanged?

Generates the same number of selected events with each profile and compares
the selection efficiency and lepton-veto rate (from the cut flows), the phi*
amplitude, the visible-tau pT, m_vis and the missing transverse momentum
(means with errors, and two-sample Kolmogorov-Smirnov p-values). A process
that pins its profile in its data (ttbar) is run with each profile anyway.

    python benchmarks/profile_equivalence.py --events 4000 --sample A
    python benchmarks/profile_equivalence.py --events 1500 --sample ttbar --m-vis 150 500
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from scipy import stats

from hpcmix.generate.processes import load_catalogue
from hpcmix.generate.run import plan_generation, run_generation
from hpcmix.physics.features import FEATURE_NAMES
from hpcmix.physics.selection import visible_taus
from hpcmix.store import EventStore
from _study import generation_study, split_events  # benchmarks/_study.py (run as a script)


def observables(path: str, sample: str) -> dict[str, np.ndarray]:
    ds = EventStore(path).dataset(sample)
    p4, feats = ds["truth_p4"].values, ds["features"].values
    tau_p, tau_m = visible_taus(p4)
    col = FEATURE_NAMES.index
    return {
        "cos_phi_star": np.cos(feats[:, col("phi_star")].astype(float)),
        "tau_vis_pt": np.concatenate([np.hypot(tau_p[:, 0], tau_p[:, 1]), np.hypot(tau_m[:, 0], tau_m[:, 1])]),
        "m_vis": feats[:, col("m_vis")].astype(float),
        "met": np.hypot(feats[:, col("met_x")], feats[:, col("met_y")]).astype(float),
    }


def binomial(k: int, n: int) -> tuple[float, float]:
    p = k / n
    return p, np.sqrt(p * (1 - p) / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--sample", default="A")
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--m-vis", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="the studies' visible-mass window in GeV (default: none, the paper's text)")
    args = ap.parse_args()
    from hpcmix.orchestrate.executor import site_executor

    events = split_events(args.events, args.chunk_size)
    selection = {"m_vis_min": args.m_vis[0], "m_vis_max": args.m_vis[1]} if args.m_vis else None
    proc = load_catalogue().get(args.sample)
    executor = site_executor("local", cpu={"n_workers": args.workers, "dashboard_address": ":0"}, gpu=False)
    obs, rates, flows = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for profile in ("full", "fast"):
            # a process that pins its profile gets each one here, as a job-file copy of itself
            pinned = {args.sample: {**{k: v for k, v in proc.as_dict().items() if k != "name" and v is not None},
                                    "profile": profile}} if proc.profile else None
            plan = plan_generation(generation_study(args.sample, events, chunk_size=args.chunk_size,
                                                    profile=profile, seed=11, processes=pinned, selection=selection))
            report = run_generation(plan, f"{tmp}/{profile}.zarr", executor=executor, progress=False)
            rates[profile] = report.tried_per_task_second
            flows[profile] = report.cutflow[args.sample]
            obs[profile] = observables(f"{tmp}/{profile}.zarr", args.sample)
    executor.close()
    window = f", m_vis in [{args.m_vis[0]:g}, {args.m_vis[1]:g}] GeV" if args.m_vis else ""
    print(f"sample {args.sample}, {args.events} selected events per profile{window}")
    print(f"events tried per core-second: full {rates['full']:.0f}, fast {rates['fast']:.0f} "
          f"(fast/full = {rates['fast'] / rates['full']:.1f})")
    print(f"{'observable':<22}{'full':>22}{'fast':>22}{'diff/sigma':>12}{'KS p':>8}")
    rows = {}
    for profile, flow in flows.items():
        rows.setdefault("selection efficiency", []).append(binomial(flow["lepton_veto"], flow["tried"]))
        # events the veto removes, among those that reached it
        rows.setdefault("lepton-veto loss", []).append(
            binomial(flow["n_taus"] - flow["lepton_veto"], flow["n_taus"]))
    for label, ((ma, ea), (mb, eb)) in rows.items():
        print(f"{label:<22}{ma:>12.4f} +- {ea:<7.4f}{mb:>12.4f} +- {eb:<7.4f}{(ma - mb) / np.hypot(ea, eb):>12.2f}"
              f"{'':>8}")
    for name in ("cos_phi_star", "tau_vis_pt", "m_vis", "met"):
        a, b = obs["full"][name], obs["fast"][name]
        ma, ea = a.mean(), a.std() / np.sqrt(a.size)
        mb, eb = b.mean(), b.std() / np.sqrt(b.size)
        label = {"cos_phi_star": "a = <cos>/pi", "met": "MET (GeV)", "m_vis": "m_vis (GeV)",
                 "tau_vis_pt": "tau_vis_pt (GeV)"}[name]
        scale = 1 / np.pi if name == "cos_phi_star" else 1.0
        print(f"{label:<22}{ma * scale:>12.4f} +- {ea * scale:<7.4f}{mb * scale:>12.4f} +- {eb * scale:<7.4f}"
              f"{(ma - mb) / np.hypot(ea, eb):>12.2f}{stats.ks_2samp(a, b).pvalue:>8.2f}")


if __name__ == "__main__":
    main()
