"""Print the tables of docs/REPRODUCTION.md from a finished run of a paper job.

    python docs/reproduction_table.py [jobs/paper-table1-small.yaml] [--set KEY=VALUE ...]

Every path comes from the job's plan (the same settings hashes `hpcmix run`
uses), so the numbers are those of this job's stages and nothing else.
"""

from __future__ import annotations

import argparse

import numpy as np

from hpcmix.orchestrate.pipeline import plan_study
from hpcmix.orchestrate.record import RecordError, StageRecord
from hpcmix.results import open_results  # also registers the ds.mixture accessor
from hpcmix.store.artefacts import load_templates
from hpcmix.study import load_study

# PHYSICS.md section 7: mean +- sigma_alpha at N = 100
PAPER = {
    ("phi_star", "none"): {0.5: (0.50, 0.27), 0.7: (0.71, 0.27), 0.9: (0.90, 0.27)},
    ("phi_star", "detector"): {0.5: (0.50, 0.45), 0.7: (0.70, 0.46), 0.9: (0.90, 0.45)},
    ("nn", "none"): {0.5: (0.50, 0.21), 0.7: (0.70, 0.21), 0.9: (0.90, 0.21)},
    ("nn", "detector"): {0.5: (0.48, 0.37), 0.7: (0.68, 0.37), 0.9: (0.88, 0.37)},
}
LABEL = {"phi_star": "phi*", "nn": "NN"}


def cell(summary, estimator, smearing, alpha, n):
    return {k: float(v) for k, v in summary.sel(estimator=estimator, smearing=smearing, alpha=alpha,
                                                n_events=n).data_vars.items()}


def table1(summary) -> None:
    print("| estimator, smearing | alpha | paper | hpcmix mean | hpcmix sigma_alpha | Cramer-Rao | coverage "
          "| pull width | KS p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (m, sm), row in PAPER.items():
        for a, (pm, ps) in row.items():
            c = cell(summary, m, sm, a, 100)
            print(f"| {LABEL[m]}, {sm} | {a} | {pm:.2f} +- {ps:.2f} | {c['mean']:.3f} +- {c['gauss_mean_err']:.3f} "
                  f"| {c['gauss_sigma']:.3f} +- {c['gauss_sigma_err']:.3f} | {c['cramer_rao']:.3f} "
                  f"| {c['coverage']:.3f} +- {c['coverage_err']:.3f} | {c['pull_width']:.2f} | {c['ks_pvalue']:.2f} |")


def scaling(summary) -> None:
    print("\n| estimator, smearing | N = 20 | N = 100 | N = 500 | sigma x sqrt(N/100) at 20 / 100 / 500 |")
    print("|---|---|---|---|---|")
    for (m, sm) in PAPER:
        cs = [cell(summary, m, sm, 0.7, n) for n in (20, 100, 500)]
        print(f"| {LABEL[m]}, {sm} | " + " | ".join(f"{c['gauss_sigma']:.3f} (CR {c['cramer_rao']:.3f})" for c in cs)
              + " | " + " / ".join(f"{c['gauss_sigma'] * np.sqrt(n / 100):.3f}" for c, n in zip(cs, (20, 100, 500)))
              + " |")
    print()
    for sm in ("none", "detector"):
        gains = []
        for n in (20, 100, 500):
            p = cell(summary, "phi_star", sm, 0.7, n)["gauss_sigma"]
            q = cell(summary, "nn", sm, 0.7, n)["gauss_sigma"]
            gains.append(f"{1 - q / p:.1%}")
        print(f"gain of the NN over phi* at alpha = 0.7, smearing {sm}, N = 20 / 100 / 500: {' / '.join(gains)}")


def records(plan) -> None:
    print()
    for (estimator, sm), t in plan.templates.items():
        info = StageRecord.read(t.folder, stage="templates").info
        lo, hi = load_templates(t.folder).positivity_limits()
        extra = (f"a = {info['a']:.4f} +- {info['a_err']:.4f}, c = {info['c']:.4f}" if estimator == "phi_star"
                 else f"KDE bandwidths {info['bandwidths']}")
        pools = ", ".join(f"{c} {n}" for c, n in info["pool_sizes"].items())
        print(f"templates {estimator}/{sm}: {extra}; positivity limits [{lo:.3f}, {hi:.3f}]; test pools {pools}")
    for sm, m in plan.models.items():
        info = StageRecord.read(m.folder, stage="train").info
        print(f"classifier {sm}: ROC AUC {info['roc_auc']:.4f}, {info['epochs_run']} epochs, "
              f"{info['n_train']} training events")
    for label, m in plan.auc_models.items():
        try:
            info = StageRecord.read(m.folder, stage="train").info
        except RecordError:
            continue
        print(f"AUC study {label} ({len(m.inputs)} inputs): ROC AUC {info['roc_auc']:.4f}, "
              f"{info['epochs_run']} epochs")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default="jobs/paper-table1-small.yaml", help="the paper job's file")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, as with `hpcmix run --set` (repeatable)")
    args = parser.parse_args(argv)
    plan = plan_study(load_study(args.job, sets=args.sets))
    ds = open_results(plan.results)  # reads older stores too (method -> estimator, with a warning)
    summary = ds.mixture.summary()
    table1(summary)
    scaling(summary)
    records(plan)
    print("\n" + str(ds.attrs.get("pool_reuse_note", "")))


if __name__ == "__main__":
    main()
