"""Per-process selection efficiency, sigmaGen x efficiency, and the background fractions they imply.

Reads the event store of a study (its cut flows and Pythia's sigmaGen, in mb) and, for the
signal, takes the paper's sigma x B(tau tau) (section 2.1: 34 fb for H, 54 fb for A) instead
of Pythia's default couplings. Every process has both taus forced to pi pi0 nu, so
B(tau -> pi pi0 nu)^2 multiplies all of them and cancels in the fractions.

    python docs/background_fractions.py jobs/backgrounds-small.yaml [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.store import EventStore
from hpcmix.study import load_study

#: the paper's signal strengths sigma x B(tau tau) at 13 TeV, in pb (section 2.1)
PAPER_SIGNAL_PB = {"H": 0.034, "A": 0.054}
MB_TO_PB = 1e9


def process_table(store: EventStore) -> list[dict]:
    """One row per process: tried, selected, efficiency (with its binomial error), sigmaGen and the product."""
    rows = []
    for p in store.layout.samples:
        flow = store.cutflow(p)
        tried, sel = flow["tried"], flow["lepton_veto"]
        eff = sel / tried
        sig, err = store.cross_section(p)
        rows.append({"process": p, "tried": tried, "selected": sel, "efficiency": eff,
                     "efficiency_err": (eff * (1 - eff) / tried) ** 0.5, "sigma_gen_pb": sig * MB_TO_PB,
                     "sigma_gen_err_pb": err * MB_TO_PB, "veto_loss": 1 - sel / flow["n_taus"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    plan = plan_study(load_study(args.job, sets=args.overrides))
    rows = process_table(EventStore(plan.events))
    print(f"event store {plan.events}")
    print("| process | tried | selected | efficiency | lepton-veto loss | sigmaGen (pb) | sigma x B x eff (fb) |")
    print("|---|---|---|---|---|---|---|")
    after = {}
    for r in rows:
        # the signal's strength is the paper's; Pythia's default H/A couplings are not the benchmark's
        sigma = PAPER_SIGNAL_PB.get(r["process"], r["sigma_gen_pb"])
        after[r["process"]] = sigma * r["efficiency"] * 1e3
        note = " (paper's sigma x B)" if r["process"] in PAPER_SIGNAL_PB else ""
        print(f"| {r['process']} | {r['tried']:,} | {r['selected']:,} | {r['efficiency']:.4f} ± "
              f"{r['efficiency_err']:.4f} | {r['veto_loss']:.3f} | {r['sigma_gen_pb']:.4g} ± "
              f"{r['sigma_gen_err_pb']:.2g} | {after[r['process']]:.1f}{note} |")
    total = sum(after.values())
    print("\nfractions after the selection (B(tau -> pi pi0 nu)^2 is common to all processes and cancels):")
    for p, v in after.items():
        print(f"  {p}: {v / total:.3f}")
    nuisances = [p for p in after if p not in plan.study.poi.among]
    print(f"  backgrounds together ({', '.join(nuisances)}): {sum(after[p] for p in nuisances) / total:.3f}")


if __name__ == "__main__":
    main()
