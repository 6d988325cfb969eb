"""The tables of docs/REWEIGHTING.md from the three runs of jobs/reweight-z.yaml.

The reweighting checks of the named weight (the record of its summary task: two-sample AUC,
closure, blinded-region shares, effective size, spread between networks, chi2 / ndf per
feature), then sigma_alpha and the mean alpha_hat of the H/A/Z fit against the Z fraction for
three ways of modelling Z:

- nominal: Z templates and Z test pools of the nominal simulation (the study as it stands);
- mismodelled: the same templates, the Z pools drawn in proportion to the weights (pseudo-data
  whose Z looks like the target's), so the fit uses the wrong Z shape;
- reweighted: templates and pools both with the weights (and every network's, for the
  network-choice systematic).

mismodelled and reweighted fit the very same toys (same pools, weights and seeds): the
difference of their means is what the Z mismodelling does to alpha_hat.

    python docs/reweighting_tables.py jobs/reweight-z.yaml
    python docs/reweighting_tables.py jobs/reweight-z.yaml --weight gmz8 --all-features
"""

from __future__ import annotations

import argparse

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.orchestrate.record import StageRecord
from hpcmix.results import open_results
from hpcmix.study import load_study

def variants(weight: str) -> dict[str, list[str]]:
    """The --set options of the three runs, for the named weight of Z."""
    return {"nominal": [],
            "mismodelled": [f"toys.weights={{Z: {weight}}}"],
            "reweighted": [f"templates.weights={{Z: {weight}}}", f"toys.weights={{Z: {weight}}}",
                           "templates.weight_networks=all"]}


def pm(d, key, digits=3):
    return f"{d[key]:.{digits}f} ± {d[key + '_err']:.{digits}f}"


def checks(info) -> list[str]:
    """The held-out checks; without a blinded region the AUC is over all events, and the control-region
    closure and blinded shares do not exist."""
    ts, c = info["two_sample"], info["closure"]
    label = {"control": "control region", "blinded": "blinded region", "all": "all events"}
    rows = [(f"two-sample AUC, {label[r]}", f"{pm(ts['before'][r], 'auc')} -> {pm(ts['after'][r], 'auc')}")
            for r in label if r in ts["before"]]
    if "control_closure" in info:
        cc = info["control_closure"]
        rows.append(("closure in the control region (the networks' own ratio): <w> on source, <1/w> on target",
                     f"{pm(cc, 'mean_r_on_reference')}, {pm(cc, 'mean_inverse_r_on_component')}"))
    rows.append(("closure over all events" + (" (with the extrapolation into the blinded region)" if info["blind"] else ""),
                 f"{pm(c, 'mean_r_on_reference')}, {pm(c, 'mean_inverse_r_on_component')}"))
    if "blinded_fraction" in info:
        share = info["blinded_fraction"]
        rows.append(("blinded share: source / reweighted source / target",
                     f"{pm(share, 'source')} / {pm(share, 'reweighted_source')} / {pm(share, 'target')}"))
    rows += [("effective size of the weighted source (test split)", f"{info['weights']['test']['effective_fraction']:.0%}"),
             ("spread between the networks per event: median, 90 % quantile",
              f"{info['network_spread']['relative_std_median']:.1%}, {info['network_spread']['relative_std_q90']:.1%}"),
             (f"each network's {'control-region ' if info['blind'] else ''}closure <w> on source",
              ", ".join(f"{n['closure']['mean_r_on_reference']:.3f}" for n in info["networks"]))]
    return ["| check (held-out test split) | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]


def feature_rows(info) -> list[str]:
    """chi2 / ndf per feature before and after, in each region the record has (control and blinded, or all)."""
    present = {r for v in info["features"].values() for r in v}
    regions = [r for r in ("control", "blinded", "all") if r in present]   # the record's keys are sorted
    lines = ["| feature | " + " | ".join(f"{r}: before | after" for r in regions) + " |",
             "|---|" + "---|---|" * len(regions)]
    first = regions[0]
    feats = sorted(info["features"].items(), key=lambda kv: -kv[1].get(first, {}).get("before", {}).get("chi2_per_ndf", 0))
    for name, by in feats:
        cells = [f"{by[r][w]['chi2_per_ndf']:.2f}" if r in by else "-" for r in regions for w in ("before", "after")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ndf = {r: next(v[r]["after"]["ndf"] for v in info["features"].values() if r in v) for r in regions}
    where = " and ".join(f"{n} in the {r}" for r, n in ndf.items()) + " region" if "all" not in ndf else str(ndf["all"])
    lines.append(f"\n(chi2 / ndf with ndf = {where})")
    return lines


def all_feature_rows(plan, r) -> list[str]:
    """chi2 / ndf before and after for every network input of the study (not only the weight's own
    inputs, which its record holds): the stage's own per-feature checks, on all inputs, from the stored
    network-0 weights of the test split."""
    import dataclasses

    import numpy as np

    from hpcmix.orchestrate.stages.reweight import _feature_checks, blinded
    from hpcmix.store import EventStore

    w, store = r.settings, EventStore(plan.events)
    every = dataclasses.replace(w, inputs=tuple(plan.study.network_inputs))
    weights = store.weights(w.source, r.name, "test", address=r.weights_address)
    rows = _feature_checks(store, every, weights, blinded(store, w, w.source, "test"), blinded(store, w, w.target, "test"))
    rows = {n: rows[n] for n in every.inputs}     # the blinded feature is an input here
    regions = [reg for reg in ("control", "blinded", "all") if reg in next(iter(rows.values()))]
    lines = ["| feature | input | " + " | ".join(f"{reg}: before | after" for reg in regions) + " |",
             "|---|---|" + "---|---|" * len(regions)]
    for n, by in sorted(rows.items(), key=lambda kv: -kv[1][regions[0]]["before"]["chi2_per_ndf"]):
        cells = [f"{by[reg][k]['chi2_per_ndf']:.2f}" for reg in regions for k in ("before", "after")]
        lines.append(f"| {n} | {'yes' if n in w.inputs else 'no'} | " + " | ".join(cells) + " |")
    mean = {reg: (np.mean([by[reg]["before"]["chi2_per_ndf"] for by in rows.values()]),
                  np.mean([by[reg]["after"]["chi2_per_ndf"] for by in rows.values()])) for reg in regions}
    lines.append("\n(mean over the " + str(len(rows)) + " inputs: "
                 + "; ".join(f"{reg} {b:.2f} -> {a:.2f}" for reg, (b, a) in mean.items()) + ")")
    return lines


def fit_rows(summaries, alpha, n) -> list[str]:
    s0 = summaries["nominal"]
    zs = [float(z) for z in s0["fraction_Z"].values]
    head = "| estimator, treatment | Z modelling | " + " | ".join(f"Z = {z:g}" for z in zs) + " |"
    lines = [f"sigma_alpha (Gaussian-fit width) and mean alpha_hat at alpha = {alpha:g}, n = {n} expected signal "
             "events, detector smearing", head, "|---|---|" + "---|" * len(zs)]
    for est in s0["estimator"].values:
        for tr in s0["treatment"].values:
            for label, s in summaries.items():
                c = s.sel(estimator=est, smearing="detector", treatment=tr, alpha=alpha, n_events=n)
                cells = [f"{float(c['gauss_sigma'].sel(fraction_Z=z)):.3f}, {float(c['mean'].sel(fraction_Z=z)):.3f}"
                         for z in zs]
                lines.append(f"| {est}, Z {tr} | {label} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job")
    ap.add_argument("--weight", default="gmz")
    ap.add_argument("--all-features", action="store_true",
                    help="chi2 / ndf of every network input of the study, not only the weight's own inputs")
    ap.add_argument("--checks-only", action="store_true", help="the reweighting checks alone (no fit tables)")
    args = ap.parse_args()
    plans = {k: plan_study(load_study(args.job, sets=sets)) for k, sets in variants(args.weight).items()}
    r = plans["reweighted"].reweights[args.weight]
    info = StageRecord.read(r.folder, stage="reweight").info
    print(f"Reweighting {info['source']} -> {info['target']}, blinded {info['blind']}, inputs {list(r.settings.inputs)}\n")
    print("\n".join(checks(info)) + "\n")
    print("\n".join(feature_rows(info)) + "\n")
    if args.all_features:
        print("\n".join(all_feature_rows(plans["nominal"], r)) + "\n")
    if args.checks_only:
        return
    results = {k: open_results(p.results) for k, p in plans.items()}
    summaries = {k: ds.mixture.summary() for k, ds in results.items()}
    study = plans["nominal"].study
    alpha, n = study.toys.alpha[len(study.toys.alpha) // 2], study.toys.n_events[0]
    print("\n".join(fit_rows(summaries, alpha, n)) + "\n")
    print(results["reweighted"].mixture.network_table())


if __name__ == "__main__":
    main()
