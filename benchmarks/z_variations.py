"""Which Pythia change moves the Drell-Yan tau pair enough to reweight? (docs/REWEIGHTING.md)

The hard process alone (no shower, no decays: thousands of events a second) of the Z
background of hpcmix/processes.yaml (gamma*/Z, mHat > 150 GeV) under each variation:
the mean and the shape of mHat (which m_vis follows) and the spread of the pair's
rapidity, with their statistical errors. The ZMF features are blind to the pair's
boost, so a change that only moves the rapidity or the recoil (ISR, a PDF set) barely
reaches them; one that moves mHat does.

    python benchmarks/z_variations.py --events 20000
"""

from __future__ import annotations

import argparse

import numpy as np

# the Z process of hpcmix/processes.yaml at the hard-process level
Z = ["Beams:eCM = 13000.", "WeakSingleBoson:ffbar2gmZ = on", "PhaseSpace:mHatMin = 150.",
     "23:onMode = off", "23:onIfMatch = 15 -15"]
HARD_ONLY = ["PartonLevel:all = off", "HadronLevel:all = off", "ProcessLevel:resonanceDecays = off",
             "Print:quiet = on"]
VARIATIONS = {
    "nominal (NNPDF2.3 QCD+QED LO, pSet 13)": [],
    "PDF CTEQ6L1 (pSet 8)": ["PDF:pSet = 8"],
    "PDF CTEQ5L (pSet 2)": ["PDF:pSet = 2"],
    "factorisation scale x2": ["SigmaProcess:factorMultFac = 4."],
    "Z exchange alone (WeakZ0:gmZmode = 2)": ["WeakZ0:gmZmode = 2"],
}


def hard_process(settings: list[str], n: int, seed: int) -> dict[str, np.ndarray]:
    import pythia8mc

    py = pythia8mc.Pythia("", False)
    for s in [*Z, *HARD_ONLY, "Random:setSeed = on", f"Random:seed = {seed}", *settings]:
        py.readString(s)
    py.init()
    m, y = np.empty(n), np.empty(n)
    for i in range(n):
        while not py.next():
            pass
        info = py.infoPython()
        m[i], y[i] = info.mHat(), info.y()
    return {"m_hat": m, "y": y, "sigma_mb": py.infoPython().sigmaGen()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    n = args.events
    print(f"{n} hard-process events each; errors are statistical")
    print("| variation | sigma [pb] | mean mHat [GeV] | share mHat > 250 GeV | std y |")
    print("|---|---|---|---|---|")
    for label, settings in VARIATIONS.items():
        r = hard_process(settings, n, args.seed)
        m, y = r["m_hat"], r["y"]
        share = (m > 250).mean()
        print(f"| {label} | {r['sigma_mb'] * 1e9:.3f} | {m.mean():.1f} ± {m.std() / np.sqrt(n):.1f} | "
              f"{share:.3f} ± {np.sqrt(share * (1 - share) / n):.3f} | {y.std():.3f} ± {y.std() / np.sqrt(2 * n):.3f} |")


if __name__ == "__main__":
    main()
